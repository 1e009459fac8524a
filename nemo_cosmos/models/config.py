"""Configuration of the Cosmos-1.0 diffusion transformer ("GeneralDIT") as a Megatron-Core config.

The field names Megatron-Core already has and the DiT reads (``num_layers``, ``hidden_size``,
``num_attention_heads``, ``kv_channels``, ``ffn_hidden_size``, ``layernorm_epsilon``, ``params_dtype``)
keep their Megatron meaning; the Cosmos-specific ones are added below. Parallel sizes are not read from
here: ``parallelize_dit`` and the training strategy apply them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Tuple

import torch
from megatron.core.transformer import TransformerConfig


@dataclass
class CosmosDiTConfig(TransformerConfig):
    """Megatron-Core ``TransformerConfig`` plus the Cosmos DiT's own hyper-parameters."""

    in_channels: int = 16
    """Latent channels of the video tokenizer (the condition-mask and padding-mask channels are added
    on top)."""
    condition_mask_channel: bool = False
    """Video2World: one more input channel after the latent's, the mask of the latent frames given as
    condition (NVIDIA's VideoExtendGeneralDIT, diffusers' ``in_channels = 16 + 1``)."""
    out_channels: int = 16
    patch_spatial: int = 2
    patch_temporal: int = 1
    crossattn_dim: int = 1024
    """Width of the text embeddings (T5-11B d_model)."""
    adaln_lora_dim: int = 256
    adaln_fused: bool = False
    """One AdaLN projection per layer (D -> 3r -> 9D, as NeMo/Megatron's DiT layer) instead of the
    reference's three (D -> r -> 3D each). The published weights are block-diagonal in the fused
    form, so both compute the same; a model trained in NeMo fills the off-diagonal blocks and needs
    the fused form to be loaded exactly. Split is the default: a third of the parameters."""
    concat_padding_mask: bool = True
    max_latent_size: Tuple[int, int, int] = (128, 240, 240)
    """Largest latent (T, H, W) the position tables cover: 128 frames, 240x240 (before patching)."""
    rope_scale: Tuple[float, float, float] = (2.0, 1.0, 1.0)
    """NTK extrapolation ratio of RoPE per axis (t, h, w)."""
    base_fps: int = 24
    extra_pos_emb: bool = True
    """The learnable absolute position embedding added at the start of every block."""
    attention_backend: str = "auto"
    """torch SDPA kernel for the local spec: "auto" (torch decides), "flash", "cudnn", "efficient", "math";
    or "fp8" for cuDNN's FP8 self-attention (Hopper, cudnn-frontend; set by apply_fp8)."""
    rope_in_model_dtype: bool = True
    """NVIDIA's code casts the RoPE buffers with the model, so a bf16 model computes the angles in
    bf16. Keeping that rounding reproduces the reference; set False for float32 angles (diffusers)."""

    @property
    def patch_size(self) -> Tuple[int, int, int]:
        return (self.patch_temporal, self.patch_spatial, self.patch_spatial)


def _cosmos_config(**overrides) -> CosmosDiTConfig:
    base = dict(
        num_layers=28,
        hidden_size=4096,
        num_attention_heads=32,
        kv_channels=128,
        ffn_hidden_size=4 * 4096,
        layernorm_epsilon=1e-6,
        normalization="RMSNorm",
        add_bias_linear=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        params_dtype=torch.bfloat16,
        bf16=True,
    )
    base.update(overrides)
    if "hidden_size" in overrides and "ffn_hidden_size" not in overrides:
        base["ffn_hidden_size"] = 4 * base["hidden_size"]
    return CosmosDiTConfig(**base)


def cosmos_7b_config(**overrides) -> CosmosDiTConfig:
    """Cosmos-1.0-Diffusion-7B-Text2World: 28 layers of width 4096, RoPE scale (t, h, w) = (2, 1, 1)."""
    return _cosmos_config(**overrides)


def cosmos_14b_config(**overrides) -> CosmosDiTConfig:
    """Cosmos-1.0-Diffusion-14B-Text2World: 36 layers of width 5120, RoPE scale (2, 2, 2)."""
    params = dict(num_layers=36, hidden_size=5120, num_attention_heads=40, rope_scale=(2.0, 2.0, 2.0))
    params.update(overrides)
    return _cosmos_config(**params)


def cosmos_7b_video2world_config(**overrides) -> CosmosDiTConfig:
    """Cosmos-1.0-Diffusion-7B-Video2World: the 7B Text2World network with the condition-mask channel."""
    return cosmos_7b_config(**{"condition_mask_channel": True, **overrides})


def cosmos_14b_video2world_config(**overrides) -> CosmosDiTConfig:
    """Cosmos-1.0-Diffusion-14B-Video2World: the 14B Text2World network with the condition-mask channel."""
    return cosmos_14b_config(**{"condition_mask_channel": True, **overrides})


def tiny_config(**overrides) -> CosmosDiTConfig:
    """A few-kilobyte model of the same architecture, for tests and CPU smoke runs."""
    params = dict(
        num_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        kv_channels=16,
        adaln_lora_dim=16,
        crossattn_dim=32,
        params_dtype=torch.float32,
        bf16=False,
    )
    params.update(overrides)
    return _cosmos_config(**params)


def config_to_dict(config: CosmosDiTConfig) -> dict:
    """The Cosmos-specific and size fields of a config, JSON-serialisable (for sidecars and checkpoints)."""
    keys = [
        "num_layers", "hidden_size", "num_attention_heads", "kv_channels", "ffn_hidden_size",
        "in_channels", "condition_mask_channel", "out_channels", "patch_spatial", "patch_temporal", "crossattn_dim",
        "adaln_lora_dim", "adaln_fused", "concat_padding_mask", "max_latent_size", "rope_scale", "base_fps",
        "extra_pos_emb", "rope_in_model_dtype", "layernorm_epsilon",
    ]
    out = {k: getattr(config, k) for k in keys}
    out["max_latent_size"] = list(out["max_latent_size"])
    out["rope_scale"] = list(out["rope_scale"])
    out["params_dtype"] = str(config.params_dtype).removeprefix("torch.")
    return out



def config_from_dict(d: dict) -> CosmosDiTConfig:
    """Inverse of config_to_dict (a checkpoint's ``context/`` holds that dict)."""
    known = {f.name for f in dataclasses.fields(CosmosDiTConfig)}
    unknown = sorted(d.keys() - known)
    if unknown:
        raise ValueError(f"unknown config field {unknown[0]!r}")
    params = dict(d)
    for k in ("max_latent_size", "rope_scale"):
        if k in params:
            params[k] = tuple(params[k])
    dtype = getattr(torch, params.pop("params_dtype", "bfloat16"))
    return _cosmos_config(**params, params_dtype=dtype, bf16=dtype == torch.bfloat16)
