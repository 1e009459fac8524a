"""EDM preconditioning (Karras et al. 2022) as Cosmos-1.0 uses it, sigma_data = 0.5.

x0 = c_skip * x + c_out * F(c_in * x, c_noise), c_noise = ln(sigma) / 4. As in NVIDIA's code, x and
sigma are cast to the network's dtype before the coefficients are computed, so a bf16 network sees a
bf16-rounded sigma and returns a bf16 x0.
"""

from __future__ import annotations

from typing import Optional

import torch

SIGMA_DATA = 0.5


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
        self, x: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor, fps: Optional[float] = None
    ) -> torch.Tensor:
        dtype = self.dtype
        x = x.to(dtype)
        sigma = sigma.to(dtype).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(x.shape[0])
        c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, self.sigma_data)
        view = (-1, 1, 1, 1, 1)
        out = self.net(x * c_in.view(view), c_noise, text.to(dtype), fps=fps)
        return c_skip.view(view) * x + c_out.view(view) * out


def guided_x0(cond_x0: torch.Tensor, uncond_x0: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance exactly as Cosmos-1.0 combines the two x0 predictions:
    cond + guidance * (cond - uncond) (so guidance 7 is a scale of 8 in the uncond + w*(cond-uncond) form)."""
    return cond_x0 + guidance * (cond_x0 - uncond_x0)
