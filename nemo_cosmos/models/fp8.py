"""FP8 inference for the DiT's large projections: activations and weights quantised to float8 e4m3
with one scale per row (per token / per output channel), multiplied by torch's scaled matmul on
Hopper-class GPUs, results in bf16. With Transformer Engine installed its own FP8 recipe is the
better tool; this path needs nothing beyond torch.

Applied in one place: ``apply_fp8(model)`` swaps the attention and MLP projections of every layer
(AdaLN and embeddings, which see one row per sample, stay bf16) and, where Triton runs, the
self-attention itself (``fp8_attention.py``). The weights are quantised once.
"""

from __future__ import annotations

import torch
from torch import nn

from . import fp8_attention
from .fp8_attention import E4M3_MAX


def _quantise_rows(x: torch.Tensor):
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / E4M3_MAX
    return (x.float() / scale).to(torch.float8_e4m3fn), scale


class FP8Linear(nn.Module):
    """y = x W^T with x and W in float8 (row-wise scales); W is quantised when the module is made."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        if linear.bias is not None:
            raise ValueError("FP8Linear takes bias-free projections")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        if self.in_features % 16 or self.out_features % 16:
            raise ValueError(f"FP8 matmuls need sizes divisible by 16; got {self.in_features}x{self.out_features}")
        w, scale = _quantise_rows(linear.weight.detach())
        self.register_buffer("weight_fp8", w)  # [out, in]
        self.register_buffer("weight_scale", scale.reshape(1, -1))  # [1, out]
        self.out_dtype = linear.weight.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        xq, x_scale = _quantise_rows(rows)
        y = torch._scaled_mm(xq, self.weight_fp8.t(), scale_a=x_scale, scale_b=self.weight_scale,
                             out_dtype=self.out_dtype)
        return y.reshape(*x.shape[:-1], self.out_features)


_PROJECTIONS = ("self_attention.linear_qkv", "self_attention.linear_proj", "cross_attention.linear_q",
                "cross_attention.linear_kv", "cross_attention.linear_proj", "mlp.linear_fc1", "mlp.linear_fc2")


def apply_fp8(model: nn.Module, attention: bool = True) -> nn.Module:
    """Swap every layer's projections for FP8Linear (inference only: the bf16 weights are dropped),
    and with `attention` (and Triton installed) run self-attention in FP8 too."""
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9):
        raise RuntimeError("FP8 needs an NVIDIA GPU of compute capability 8.9 or newer (Ada, Hopper)")
    for layer in model.layers:
        for path in _PROJECTIONS:
            parent_name, name = path.split(".")
            parent = getattr(layer, parent_name)
            setattr(parent, name, FP8Linear(getattr(parent, name)))
    if attention and fp8_attention.available() and model.config.kv_channels in fp8_attention.HEAD_DIMS:
        enable_fp8_attention(model)
    return model


def enable_fp8_attention(model: nn.Module) -> None:
    """Self-attention through the Triton FP8 kernel (found inside any context-parallel wrapper)."""
    from .specs import SDPAttention

    for layer in model.layers:
        for m in layer.self_attention.modules():
            if isinstance(m, SDPAttention):
                m.backend = "fp8"
