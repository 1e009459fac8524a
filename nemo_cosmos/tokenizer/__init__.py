from .cv8x8x8 import (TOKENIZER_REPO, CV8x8x8Tokenizer, TokenizerConfig, check_num_frames, latent_shape,
                      tiny_tokenizer_config)
from .jit_weights import read_torchscript_weights

__all__ = [
    "TOKENIZER_REPO", "CV8x8x8Tokenizer", "TokenizerConfig", "check_num_frames", "latent_shape",
    "read_torchscript_weights", "tiny_tokenizer_config",
]
