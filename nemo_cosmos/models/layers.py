"""The Cosmos DiT transformer layer: self-attention, cross-attention to text, and MLP, each wrapped
in AdaLN-LoRA modulation. Projections, norms and the attention kernel come from a ``ModuleSpec``
(see ``specs.py``), so the same layer runs on plain PyTorch or on Transformer Engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.spec_utils import ModuleSpec, build_module
from torch import nn
from torch.nn import functional as F

from .config import CosmosDiTConfig
from .embeddings import apply_rope

Rope = Tuple[torch.Tensor, torch.Tensor]


@dataclass
class AttentionSubmodules:
    linear: Union[ModuleSpec, type]
    """Built as linear(in_features, out_features, config=...) for every projection."""
    qk_norm: Union[ModuleSpec, type]
    """Built as qk_norm(head_dim, eps, config=...)."""
    core_attention: Union[ModuleSpec, type]
    """Built as core_attention(config=...); called on q, k, v of shape [B, S, heads, head_dim]."""


@dataclass
class MLPSubmodules:
    linear: Union[ModuleSpec, type]


@dataclass
class LayerSubmodules:
    self_attention: Union[ModuleSpec, type]
    cross_attention: Union[ModuleSpec, type]
    mlp: Union[ModuleSpec, type]


class AdaLNModulation(nn.Module):
    """silu -> D x r -> r x nD, plus the shared AdaLN-LoRA term (3D wide: shift, scale, gate; tiled
    when n > 3): returns n chunks of [B, D]."""

    def __init__(self, hidden_size: int, lora_dim: int, chunks: int):
        super().__init__()
        self.chunks = chunks
        self.linear_1 = nn.Linear(hidden_size, lora_dim, bias=False)
        self.linear_2 = nn.Linear(lora_dim, chunks * hidden_size, bias=False)

    def forward(self, emb: torch.Tensor, lora: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        out = self.linear_2(self.linear_1(F.silu(emb)))
        if out.shape[-1] > lora.shape[-1]:
            lora = lora.repeat(1, self.chunks // 3)
        out = out + lora[:, : out.shape[-1]]
        return out.chunk(self.chunks, dim=-1)


def modulated_norm(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    if torch.is_autocast_enabled(x.device.type):
        # bf16-mixed training: normalise in x's dtype, as the reference's bf16 model does; autocast
        # would make (and keep for the backward pass) a float32 copy of every normalised activation,
        # 2.6 GiB per layer of the 7B at full size
        with torch.autocast(x.device.type, enabled=False):
            return _modulated_norm(x, shift.to(x.dtype), scale.to(x.dtype), eps)
    return _modulated_norm(x, shift, scale, eps)


def _modulated_norm(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=eps) * (1 + scale[:, None, :]) + shift[:, None, :]


class SelfAttention(MegatronModule):
    """Full self-attention over all T*H*W tokens with per-head RMSNorm on q, k and 3D RoPE."""

    def __init__(self, config: CosmosDiTConfig, submodules: AttentionSubmodules, layer_number: int = 1):
        super().__init__(config)
        d, heads = config.hidden_size, config.num_attention_heads
        self.heads = heads
        self.linear_qkv = build_module(submodules.linear, d, 3 * d, config=config)
        self.q_layernorm = build_module(submodules.qk_norm, config.kv_channels, config.layernorm_epsilon, config=config)
        self.k_layernorm = build_module(submodules.qk_norm, config.kv_channels, config.layernorm_epsilon, config=config)
        self.core_attention = build_module(submodules.core_attention, config=config, layer_number=layer_number)
        self.linear_proj = build_module(submodules.linear, d, d, config=config)

    def forward(self, x: torch.Tensor, rope: Rope) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = self.linear_qkv(x).view(b, s, 3, self.heads, -1).unbind(2)
        q = apply_rope(self.q_layernorm(q), *rope)
        k = apply_rope(self.k_layernorm(k), *rope)
        return self.linear_proj(self.core_attention(q, k, v))


class CrossAttention(MegatronModule):
    """Attention from video tokens to all text tokens. No mask: the reference lets the zeroed
    padding positions of the T5 embedding take part (each adds e^0 to the softmax denominator)."""

    def __init__(self, config: CosmosDiTConfig, submodules: AttentionSubmodules, layer_number: int = 1):
        super().__init__(config)
        d, heads = config.hidden_size, config.num_attention_heads
        self.heads = heads
        self.linear_q = build_module(submodules.linear, d, d, config=config)
        self.linear_kv = build_module(submodules.linear, config.crossattn_dim, 2 * d, config=config)
        self.q_layernorm = build_module(submodules.qk_norm, config.kv_channels, config.layernorm_epsilon, config=config)
        self.k_layernorm = build_module(submodules.qk_norm, config.kv_channels, config.layernorm_epsilon, config=config)
        self.core_attention = build_module(submodules.core_attention, config=config, layer_number=layer_number)
        self.linear_proj = build_module(submodules.linear, d, d, config=config)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q_layernorm(self.linear_q(x).view(b, s, self.heads, -1))
        k, v = self.linear_kv(context).view(b, context.shape[1], 2, self.heads, -1).unbind(2)
        return self.linear_proj(self.core_attention(q, self.k_layernorm(k), v))


class MLP(MegatronModule):
    def __init__(self, config: CosmosDiTConfig, submodules: MLPSubmodules, layer_number: int = 1):
        super().__init__(config)
        self.linear_fc1 = build_module(submodules.linear, config.hidden_size, config.ffn_hidden_size, config=config)
        self.linear_fc2 = build_module(submodules.linear, config.ffn_hidden_size, config.hidden_size, config=config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # exact (erf) GELU, as the reference's nn.GELU()
        return self.linear_fc2(F.gelu(self.linear_fc1(x)))


class CosmosDiTLayer(MegatronModule):
    """x += gate * f(LN(x) * (1 + scale) + shift) for f in (self-attention, cross-attention, MLP)."""

    def __init__(self, config: CosmosDiTConfig, submodules: LayerSubmodules, layer_number: int = 1):
        super().__init__(config)
        d, r = config.hidden_size, config.adaln_lora_dim
        self.eps = config.layernorm_epsilon
        if config.adaln_fused:
            self.adaln = AdaLNModulation(d, 3 * r, 9)
        else:
            self.adaln_self = AdaLNModulation(d, r, 3)
            self.adaln_cross = AdaLNModulation(d, r, 3)
            self.adaln_mlp = AdaLNModulation(d, r, 3)
        self.self_attention = build_module(submodules.self_attention, config=config, layer_number=layer_number)
        self.cross_attention = build_module(submodules.cross_attention, config=config, layer_number=layer_number)
        self.mlp = build_module(submodules.mlp, config=config, layer_number=layer_number)

    def modulations(self, emb: torch.Tensor, lora: torch.Tensor) -> Tuple[Tuple[torch.Tensor, ...], ...]:
        """(shift, scale, gate) for self-attention, cross-attention and the MLP."""
        if hasattr(self, "adaln"):
            m = self.adaln(emb, lora)
            return m[0:3], m[3:6], m[6:9]
        return self.adaln_self(emb, lora), self.adaln_cross(emb, lora), self.adaln_mlp(emb, lora)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        emb: torch.Tensor,
        lora: torch.Tensor,
        rope: Rope,
        extra_pos: Optional[torch.Tensor],
    ) -> torch.Tensor:
        if extra_pos is not None:
            x = x + extra_pos
        mod_self, mod_cross, mod_mlp = self.modulations(emb, lora)
        shift, scale, gate = mod_self
        x = x + gate[:, None] * self.self_attention(modulated_norm(x, shift, scale, self.eps), rope)
        shift, scale, gate = mod_cross
        x = x + gate[:, None] * self.cross_attention(modulated_norm(x, shift, scale, self.eps), context)
        shift, scale, gate = mod_mlp
        return x + gate[:, None] * self.mlp(modulated_norm(x, shift, scale, self.eps))


class FinalLayer(nn.Module):
    def __init__(self, config: CosmosDiTConfig):
        super().__init__()
        d = config.hidden_size
        pt, ph, pw = config.patch_size
        self.eps = config.layernorm_epsilon
        self.adaln = AdaLNModulation(d, config.adaln_lora_dim, 2)
        self.linear = nn.Linear(d, pt * ph * pw * config.out_channels, bias=False)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, lora: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaln(emb, lora)
        return self.linear(modulated_norm(x, shift, scale, self.eps))
