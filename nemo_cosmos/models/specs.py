"""ModuleSpecs of the Cosmos DiT layer: plain PyTorch (runs anywhere) and Transformer Engine.

`get_layer_spec()` picks Transformer Engine when it imports and plain PyTorch otherwise; the model
never needs to know which it got. Parameter names are the same in both (``weight``), so a
checkpoint loads into either.
"""

from __future__ import annotations

import importlib.util

import torch
from megatron.core.transformer.spec_utils import ModuleSpec
from torch import nn
from torch.nn import functional as F

from .config import CosmosDiTConfig
from .embeddings import RMSNorm
from .layers import MLP, AttentionSubmodules, CosmosDiTLayer, CrossAttention, LayerSubmodules, MLPSubmodules, SelfAttention


class LocalLinear(nn.Linear):
    """A bias-free nn.Linear; device and dtype follow the config, or the ambient device context."""

    def __init__(self, in_features: int, out_features: int, config: CosmosDiTConfig):
        super().__init__(in_features, out_features, bias=False, dtype=config.params_dtype)


class LocalQKNorm(RMSNorm):
    def __init__(self, dim: int, eps: float, config: CosmosDiTConfig):
        super().__init__(dim, eps, dtype=config.params_dtype)


_SDPA_BACKENDS = {
    "flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "math": "MATH",
}


class SDPAttention(nn.Module):
    """softmax(q k^T / sqrt(d)) v through torch's scaled_dot_product_attention. The kernel is torch's
    choice unless ``config.attention_backend`` names one (e.g. "cudnn", faster than flash on H100).
    "fp8" is cuDNN's FP8 flash attention (``fp8_attention.py``: Hopper, nvidia-cudnn-frontend) for
    self-attention; cross-attention, and tensors off the GPU, keep torch's choice."""

    def __init__(self, config: CosmosDiTConfig, layer_number: int = 1):
        super().__init__()
        backend = getattr(config, "attention_backend", "auto") if config is not None else "auto"
        if backend not in ("auto", "fp8") and backend not in _SDPA_BACKENDS:
            raise ValueError(f"unknown attention_backend {backend!r}; expected auto, fp8 or one of {list(_SDPA_BACKENDS)}")
        if backend == "fp8":
            from .fp8_attention import require

            require()
        self.backend = backend

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, s, h, d = q.shape
        if self.backend == "fp8" and q.shape == k.shape and q.device.type == "cuda":
            from .fp8_attention import fp8_attention

            return fp8_attention(q, k, v).reshape(b, s, h * d)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if self.backend in ("auto", "fp8") or q.device.type != "cuda":
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel(getattr(SDPBackend, _SDPA_BACKENDS[self.backend])):
                out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(b, s, h * d)


def _layer_spec(linear, qk_norm, core_attention) -> ModuleSpec:
    attn = AttentionSubmodules(linear=linear, qk_norm=qk_norm, core_attention=core_attention)
    return ModuleSpec(
        module=CosmosDiTLayer,
        submodules=LayerSubmodules(
            self_attention=ModuleSpec(module=SelfAttention, submodules=attn),
            cross_attention=ModuleSpec(module=CrossAttention, submodules=attn),
            mlp=ModuleSpec(module=MLP, submodules=MLPSubmodules(linear=linear)),
        ),
    )


def get_local_layer_spec() -> ModuleSpec:
    """Plain PyTorch: nn.Linear, float32-statistics RMSNorm, SDPA."""
    return _layer_spec(LocalLinear, LocalQKNorm, SDPAttention)


def te_available() -> bool:
    return importlib.util.find_spec("transformer_engine") is not None


def get_te_layer_spec() -> ModuleSpec:
    """Transformer Engine: te.pytorch.Linear, te.pytorch.RMSNorm and DotProductAttention (bshd)."""
    if not te_available():
        raise ImportError("the Transformer Engine spec needs transformer_engine: pip install 'nemo-cosmos[te]'")
    import transformer_engine.pytorch as te

    class TELinear(te.Linear):
        def __init__(self, in_features: int, out_features: int, config: CosmosDiTConfig):
            super().__init__(in_features, out_features, bias=False, params_dtype=config.params_dtype)

    class TEQKNorm(te.RMSNorm):
        def __init__(self, dim: int, eps: float, config: CosmosDiTConfig):
            super().__init__(dim, eps=eps, params_dtype=config.params_dtype)

    class TEAttention(te.DotProductAttention):
        def __init__(self, config: CosmosDiTConfig, layer_number: int = 1):
            super().__init__(
                config.num_attention_heads,
                config.kv_channels,
                attention_dropout=0.0,
                qkv_format="bshd",
                attn_mask_type="no_mask",
                layer_number=layer_number,
            )

    return _layer_spec(TELinear, TEQKNorm, TEAttention)


def get_layer_spec(backend: str = "auto") -> ModuleSpec:
    """backend: "auto" (TE when it imports), "te" or "local"."""
    if backend == "local" or (backend == "auto" and not te_available()):
        return get_local_layer_spec()
    if backend in ("te", "auto"):
        return get_te_layer_spec()
    raise ValueError(f"unknown backend {backend!r}; expected 'auto', 'te' or 'local'")
