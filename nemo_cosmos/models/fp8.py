"""FP8 inference for the DiT: its large projections, and self-attention through cuDNN.

Projections: activations and weights quantised to float8 e4m3 with one power-of-two scale per row
(per token / per output channel), multiplied by torch's scaled matmul, results in bf16; Ada or
Hopper GPUs. Self-attention: cuDNN's FP8 flash attention (``fp8_attention.py``; Hopper, with
nvidia-cudnn-frontend installed). With Transformer Engine installed its own FP8 recipe is the
better tool; this path needs nothing beyond torch and, for attention, cudnn-frontend.

Applied in one place: ``apply_fp8(model)`` swaps the attention and MLP projections of every layer
(AdaLN and embeddings, which see one row per sample, stay bf16) and turns on FP8 self-attention
where it can run. The weights are quantised once.
"""

from __future__ import annotations

import functools
import logging

import torch
from torch import nn

from . import fp8_attention
from .fp8_attention import pow2_scale

logger = logging.getLogger(__name__)


def _quantise_rows(x: torch.Tensor):
    """Powers of two as scales: an input that is already e4m3 times a power of two (the FP8
    attention's dequantised output) comes back bit for bit."""
    inv = pow2_scale(x.abs().amax(dim=-1, keepdim=True))
    return (x * inv.to(x.dtype)).to(torch.float8_e4m3fn), 1.0 / inv


class FP8Linear(nn.Module):
    """y = x W^T with x and W in float8 (row-wise scales); W is quantised when the module is made.

    `fast_accum`: the tensor cores' own FP8 accumulation, without the kernel's periodic promotion
    to float32: 20-30% faster at the DiT's shapes on an H100; Transformer Engine and torchao run
    forward FP8 GEMMs this way too. docs/performance.md gives its cost in accuracy."""

    def __init__(self, linear: nn.Linear, fast_accum: bool = True):
        super().__init__()
        self.fast_accum = fast_accum
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
                             out_dtype=self.out_dtype, use_fast_accum=self.fast_accum)
        return y.reshape(*x.shape[:-1], self.out_features)


_PROJECTIONS = ("self_attention.linear_qkv", "self_attention.linear_proj", "cross_attention.linear_q",
                "cross_attention.linear_kv", "cross_attention.linear_proj", "mlp.linear_fc1", "mlp.linear_fc2")


def apply_fp8(model: nn.Module, attention: bool = True, fast_accum: bool = True) -> nn.Module:
    """Swap every layer's projections for FP8Linear (inference only: the bf16 weights are dropped),
    and with `attention` run self-attention in FP8 through cuDNN where it can; where it cannot
    (no cudnn-frontend, a pre-Hopper GPU) self-attention stays bf16 and the reason is logged once."""
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9):
        raise RuntimeError("FP8 needs an NVIDIA GPU of compute capability 8.9 or newer (Ada, Hopper)")
    for layer in model.layers:
        for path in _PROJECTIONS:
            parent_name, name = path.split(".")
            parent = getattr(layer, parent_name)
            setattr(parent, name, FP8Linear(getattr(parent, name), fast_accum))
    if attention:
        reason = fp8_attention.unavailable_reason()
        if reason is None:
            enable_fp8_attention(model)
        else:
            _log_attention_fallback(reason)
    return model


@functools.cache
def _log_attention_fallback(reason: str) -> None:
    logger.warning("FP8 attention is off: %s. Self-attention runs in bf16 (torch's SDPA, cuDNN on Hopper); "
                   "the projections are FP8.", reason)


def enable_fp8_attention(model: nn.Module) -> None:
    """Self-attention through cuDNN's FP8 kernel (found inside any context-parallel wrapper); a
    RuntimeError says why when it cannot run here."""
    from .specs import SDPAttention

    fp8_attention.require()
    for layer in model.layers:
        for m in layer.self_attention.modules():
            if isinstance(m, SDPAttention):
                m.backend = "fp8"
