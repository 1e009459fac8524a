"""EDM preconditioning (Karras et al. 2022) as Cosmos-1.0 uses it, sigma_data = 0.5.

x0 = c_skip * x + c_out * F(c_in * x, c_noise), c_noise = ln(sigma) / 4. As in NVIDIA's code, x and
sigma are cast to the network's dtype before the coefficients are computed, so a bf16 network sees a
bf16-rounded sigma and returns a bf16 x0.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

SIGMA_DATA = 0.5
AUGMENT_SIGMA = 0.001
"""Video2World: the noise level of the conditioning frames, in training and at inference (NVIDIA's
DEFAULT_AUGMENT_SIGMA)."""


def edm_coefficients(sigma: torch.Tensor, sigma_data: float = SIGMA_DATA):
    """(c_skip, c_out, c_in, c_noise) for a sigma tensor, in sigma's dtype."""
    total = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / total
    c_out = sigma * sigma_data / total.sqrt()
    c_in = 1.0 / total.sqrt()
    c_noise = 0.25 * sigma.log()
    return c_skip, c_out, c_in, c_noise


class EDMDenoiser:
    """Wraps a DiT into x0 = D(x_t, sigma; text), for one conditioning at a time."""

    def __init__(self, net: torch.nn.Module, sigma_data: float = SIGMA_DATA):
        self.net = net
        self.sigma_data = sigma_data

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    def __call__(
        self, x: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor, fps: Optional[float] = None,
        condition_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """condition_mask: a Video2World DiT's mask channel (see diffusion.conditioning)."""
        dtype = self.dtype
        x = x.to(dtype)
        sigma = sigma.to(dtype).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(x.shape[0])
        c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, self.sigma_data)
        view = (-1, 1, 1, 1, 1)
        extra = {} if condition_mask is None else {"condition_mask": condition_mask}
        out = self.net(x * c_in.view(view), c_noise, text.to(dtype), fps=fps, **extra)
        return c_skip.view(view) * x + c_out.view(view) * out


def guided_x0(cond_x0: torch.Tensor, uncond_x0: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance exactly as Cosmos-1.0 combines the two x0 predictions:
    cond + guidance * (cond - uncond) (so guidance 7 is a scale of 8 in the uncond + w*(cond-uncond) form)."""
    return cond_x0 + guidance * (cond_x0 - uncond_x0)


# ---------------------------------------------------------------------------------------------
# Training: the reference's denoising loss (NeMo's Cosmos diffusion pipeline)


class LogVarHead(nn.Module):
    """Per-noise-level log-variance u(sigma) for Kendall's uncertainty weighting: random Fourier
    features of c_noise (128, normalised) and a linear map to one value. Names follow NeMo's
    ``logvar.0.freqs / logvar.0.phases / logvar.1.weight``."""

    def __init__(self, channels: int = 128, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", 2 * math.pi * torch.randn(channels, generator=g))
        self.register_buffer("phases", 2 * math.pi * torch.rand(channels, generator=g))
        self.linear = nn.Linear(channels, 1, bias=False)
        nn.init.zeros_(self.linear.weight)  # starts as plain EDM weighting

    # our tensor name -> NeMo's
    NEMO_NAMES = {"freqs": "logvar.0.freqs", "phases": "logvar.0.phases", "linear.weight": "logvar.1.weight"}

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        features = torch.cos(torch.outer(c_noise.float(), self.freqs.float()) + self.phases.float()) * math.sqrt(2)
        # a copy, not a view: FSDP2 hooks a sharded module's output and in-place ops on views lose the hook
        return self.linear(features).squeeze(-1).clone()


def training_sigma(batch: int, generator: torch.Generator, p_mean: float = 0.0, p_std: float = 1.0) -> torch.Tensor:
    """Noise levels for training: ln(sigma) ~ N(p_mean, p_std^2)."""
    return torch.exp(p_mean + p_std * torch.randn(batch, generator=generator))


def edm_loss(
    net: nn.Module,
    x0: torch.Tensor,
    text: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor,
    fps: Optional[float] = None,
    logvar: Optional[LogVarHead] = None,
    sigma_data: float = SIGMA_DATA,
    condition_frames: Optional[torch.Tensor] = None,
    augment_noise: Optional[torch.Tensor] = None,
    augment_sigma: float = AUGMENT_SIGMA,
) -> torch.Tensor:
    """Mean over elements of w(sigma) * (D(x0 + sigma * noise) - x0)^2 with the EDM weight
    w = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2; with a log-variance head u, each sample's
    term becomes w * mse / e^u + u (Kendall et al.).

    Video2World (`condition_frames` [B], `augment_noise` like x0): each sample's first
    condition_frames latent frames are given as at sampling (diffusion.conditioning): the network
    reads them at `augment_sigma` with the mask channel, and its prediction there is replaced by
    them, so they add zero error (still counted in the mean, as NeMo's loss does)."""
    view = (-1,) + (1,) * (x0.dim() - 1)
    x0 = x0.float()
    xt = x0 + sigma.view(view) * noise
    denoiser = EDMDenoiser(net, sigma_data)
    if condition_frames is None:
        x0_pred = denoiser(xt, sigma, text, fps=fps).float()
    else:
        from .conditioning import augmented_condition, frame_indicator

        b, _, t, h, w = x0.shape
        ind = frame_indicator(condition_frames, t, x0.dtype)
        aug = torch.full((b,), augment_sigma, dtype=x0.dtype, device=x0.device)
        xt = ind * augmented_condition(x0, augment_noise.float(), sigma, aug, sigma_data) + (1 - ind) * xt
        x0_pred = denoiser(xt, sigma, text, fps=fps, condition_mask=ind.expand(b, 1, t, h, w)).float()
        x0_pred = ind * x0 + (1 - ind) * x0_pred
    weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    loss = weight.view(view) * (x0_pred - x0) ** 2
    if logvar is not None:
        u = logvar(edm_coefficients(sigma, sigma_data)[3])
        loss = loss * torch.exp(-u).view(view) + u.view(view)
    return loss.mean()
