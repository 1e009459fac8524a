"""Position and timestep embeddings of the Cosmos DiT, and patchify/unpatchify.

Token order everywhere is T-major, then H, then W (the reference flattens "t h w").
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn

from .config import CosmosDiTConfig


def patchify(x: torch.Tensor, patch: Tuple[int, int, int]) -> torch.Tensor:
    """[B, C, T, H, W] -> [B, T'H'W', C*pt*ph*pw] with channel-major features (c, r, m, n)."""
    b, c, t, h, w = x.shape
    pt, ph, pw = patch
    x = x.reshape(b, c, t // pt, pt, h // ph, ph, w // pw, pw)
    x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)
    return x.reshape(b, (t // pt) * (h // ph) * (w // pw), c * pt * ph * pw)


def unpatchify(x: torch.Tensor, grid: Tuple[int, int, int], patch: Tuple[int, int, int]) -> torch.Tensor:
    """[B, T'H'W', ph*pw*pt*C] -> [B, C, T, H, W].

    The final layer's features are channel-minor, ordered (ph, pw, pt, C): not the inverse of
    `patchify`'s order, but what the published weights were trained with.
    """
    b = x.shape[0]
    t, h, w = grid
    pt, ph, pw = patch
    x = x.reshape(b, t, h, w, ph, pw, pt, -1)
    x = x.permute(0, 7, 1, 6, 2, 4, 3, 5)
    return x.reshape(b, -1, t * pt, h * ph, w * pw)


def timestep_sinusoid(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """[B] -> [B, dim] as [cos(t f_i), sin(t f_i)], f_i = 10000^(-i/(dim/2)), in float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    angles = timesteps.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TimestepEmbedding(nn.Module):
    """The timestep MLP of AdaLN-LoRA: its output is the 3D-wide LoRA term shared by every block."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear_1 = nn.Linear(hidden_size, hidden_size, bias=False)
        self.linear_2 = nn.Linear(hidden_size, 3 * hidden_size, bias=False)

    def forward(self, sinusoid: torch.Tensor) -> torch.Tensor:
        return self.linear_2(nn.functional.silu(self.linear_1(sinusoid)))


class RMSNorm(nn.Module):
    """RMSNorm over the last dim with a learnable scale; statistics in float32."""

    def __init__(self, dim: int, eps: float = 1e-6, dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        y = x.float() * torch.rsqrt(variance + self.eps)
        return (y * self.weight.float()).to(x.dtype)


class RoPE3D(nn.Module):
    """3D rotary embedding: head_dim split into t/h/w parts, each with NTK-scaled theta.

    Returns (cos, sin) of shape [T'H'W', head_dim] in float32, laid out [t | h | w | t | h | w]
    for the rotate-half convention.
    """

    def __init__(self, config: CosmosDiTConfig):
        super().__init__()
        head_dim = config.kv_channels
        self.dim_h = self.dim_w = head_dim // 6 * 2
        self.dim_t = head_dim - self.dim_h - self.dim_w
        scale_t, scale_h, scale_w = config.rope_scale
        self.theta_t = 10000.0 * scale_t ** (self.dim_t / (self.dim_t - 2))
        self.theta_h = 10000.0 * scale_h ** (self.dim_h / (self.dim_h - 2))
        self.theta_w = 10000.0 * scale_w ** (self.dim_w / (self.dim_w - 2))
        pt, ph, pw = config.patch_size
        mt, mh, mw = config.max_latent_size
        self.max_positions = max(mt // pt, mh // ph, mw // pw)
        self.base_fps = config.base_fps

    def _freqs(self, theta: float, dim: int, dtype: torch.dtype, device) -> torch.Tensor:
        exponent = (torch.arange(0, dim, 2, dtype=torch.float32, device=device)[: dim // 2] / dim).to(dtype)
        return 1.0 / (theta**exponent)

    def forward(
        self, grid: Tuple[int, int, int], fps: Optional[float], dtype: torch.dtype, device
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        t, h, w = grid
        seq = torch.arange(self.max_positions, dtype=dtype, device=device)
        if fps is None:
            pos_t = seq[:t]
        else:
            pos_t = seq[:t] / torch.as_tensor(fps, dtype=dtype, device=device) * self.base_fps
        ang_t = torch.outer(pos_t, self._freqs(self.theta_t, self.dim_t, dtype, device))
        ang_h = torch.outer(seq[:h], self._freqs(self.theta_h, self.dim_h, dtype, device))
        ang_w = torch.outer(seq[:w], self._freqs(self.theta_w, self.dim_w, dtype, device))
        ang = torch.cat(
            [
                ang_t[:, None, None, :].expand(t, h, w, -1),
                ang_h[None, :, None, :].expand(t, h, w, -1),
                ang_w[None, None, :, :].expand(t, h, w, -1),
            ],
            dim=-1,
        ).reshape(t * h * w, -1)
        ang = torch.cat([ang, ang], dim=-1).float()
        return torch.cos(ang), torch.sin(ang)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, S, heads, head_dim]; cos/sin: [S, head_dim]. Rotate-half (non-interleaved), in float32."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    rotated = torch.cat([-x2, x1], dim=-1)
    cos, sin = cos[:, None, :], sin[:, None, :]
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class LearnablePosEmb(nn.Module):
    """Per-axis learnable tables summed over the (t, h, w) grid and RMS-normalised without weight."""

    def __init__(self, config: CosmosDiTConfig):
        super().__init__()
        pt, ph, pw = config.patch_size
        mt, mh, mw = config.max_latent_size
        d = config.hidden_size
        self.pos_emb_t = nn.Parameter(torch.zeros(mt // pt, d))
        self.pos_emb_h = nn.Parameter(torch.zeros(mh // ph, d))
        self.pos_emb_w = nn.Parameter(torch.zeros(mw // pw, d))
        for p in (self.pos_emb_t, self.pos_emb_h, self.pos_emb_w):
            nn.init.trunc_normal_(p, std=0.02)
        self.eps = 1e-6

    def forward(self, grid: Tuple[int, int, int], dtype: torch.dtype) -> torch.Tensor:
        t, h, w = grid
        emb = (
            self.pos_emb_t[:t, None, None, :] + self.pos_emb_h[None, :h, None, :] + self.pos_emb_w[None, None, :w, :]
        ).reshape(t * h * w, -1)
        # NVIDIA's normalize(): emb / (eps + ||emb|| * sqrt(1/D)), eps outside the root. The norm is
        # taken in float32 but rounded to the tables' dtype before the division, so a bf16 model
        # divides in bf16 (a float32 division is a step off in ~30% of the bf16 elements). In float32
        # this is also diffusers' arithmetic, bit for bit.
        norm = torch.linalg.vector_norm(emb, dim=-1, keepdim=True, dtype=torch.float32)
        norm = torch.add(self.eps, norm, alpha=math.sqrt(1.0 / emb.shape[-1]))
        return (emb / norm.to(emb.dtype)).to(dtype)
