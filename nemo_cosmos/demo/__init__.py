"""cosmos-demo: a small Text2World model of the same architecture as the published ones, trained by
``python -m nemo_cosmos.demo.train`` on the synthetic world of ``world.py`` and shipped in
``assets/`` as a pipeline folder (``model_index.json`` with its configs and defaults, DiT and
tokenizer weights in safetensors, a small T5 encoder), so that the infer command does its job on any
machine without downloading anything. ``assets/video2world/`` holds cosmos-demo-video2world: the
same DiT with the condition-mask channel, post-trained from cosmos-demo to continue a clip, sharing
its tokenizer and text encoder."""

from __future__ import annotations

import json
import os

from ..presets import DEMO_DIR as ASSETS
from ..presets import DEMO_MODEL, DEMO_V2W_DIR, DIT_WEIGHTS, MODELS, TEXT_ENCODER_SUBDIR, TOKENIZER_SUBDIR

DIT_FILE = os.path.join(ASSETS, DIT_WEIGHTS)
TOKENIZER_DIR = os.path.join(ASSETS, TOKENIZER_SUBDIR)
T5_DIR = os.path.join(ASSETS, TEXT_ENCODER_SUBDIR)


def demo_dit_config(**overrides):
    """The shipped DiT's config (from assets/model_index.json)."""
    return MODELS[DEMO_MODEL].dit_config(**overrides)


def demo_tokenizer_config():
    """The shipped tokenizer's architecture (from assets/tokenizer/config.json)."""
    from ..tokenizer import TokenizerConfig
    from ..tokenizer.cv8x8x8 import CONFIG_FILE

    with open(os.path.join(TOKENIZER_DIR, CONFIG_FILE), encoding="utf-8") as f:
        return TokenizerConfig.from_dict(json.load(f))


def available() -> bool:
    """Whether the weights are shipped in this checkout (model_index.json always is)."""
    return all(os.path.exists(p) for p in (DIT_FILE, TOKENIZER_DIR, T5_DIR))


def video2world_available() -> bool:
    """Whether the Video2World demo's DiT is shipped too (it shares the tokenizer and T5)."""
    return available() and os.path.exists(os.path.join(DEMO_V2W_DIR, DIT_WEIGHTS))
