"""nemo_cosmos: NVIDIA Cosmos-1.0 diffusion world models on Megatron-Core."""

import warnings

# Megatron-Core warns at import when Transformer Engine/Apex are absent; falling back to plain
# PyTorch is a supported configuration here, not something a user must act on.
warnings.filterwarnings("ignore", message="Transformer Engine and Apex are not installed")
warnings.filterwarnings("ignore", message="full scope is deprecated")

__version__ = "0.1.0"
