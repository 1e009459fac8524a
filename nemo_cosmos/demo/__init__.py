"""cosmos-demo: a small Text2World model of the same architecture as the published ones, trained by
``python -m nemo_cosmos.demo.train`` on the synthetic world of ``world.py`` and shipped in
``assets/`` (DiT and tokenizer weights in safetensors, a small T5 encoder), so that the infer
command does its job on any machine without downloading anything."""

from __future__ import annotations

import os

from ..models.config import CosmosDiTConfig, tiny_config
from ..tokenizer import TokenizerConfig

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
DIT_FILE = os.path.join(ASSETS, "dit.safetensors")
TOKENIZER_DIR = os.path.join(ASSETS, "tokenizer")
T5_DIR = os.path.join(ASSETS, "t5")
T5_WIDTH = 64


def demo_dit_config(**overrides) -> CosmosDiTConfig:
    params = dict(num_layers=6, hidden_size=192, num_attention_heads=3, kv_channels=64, adaln_lora_dim=64,
                  crossattn_dim=T5_WIDTH, max_latent_size=(8, 16, 16), base_fps=8)
    params.update(overrides)
    return tiny_config(**params)


def demo_tokenizer_config(**overrides) -> TokenizerConfig:
    params = dict(encoder_channels=(32, 64, 64, 64), decoder_channels=(64, 64, 64, 64), num_res_blocks=1,
                  pixel_chunk_frames=17)
    params.update(overrides)
    return TokenizerConfig(**params)


def available() -> bool:
    return all(os.path.exists(p) for p in (DIT_FILE, TOKENIZER_DIR, T5_DIR))
