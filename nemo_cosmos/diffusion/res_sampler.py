"""The RES sampler (Zhang et al., arXiv 2308.02157) with the "2ab" solver Cosmos-1.0 samples with:
a second-order Adams-Bashforth step in log-sigma on the x0 (data) prediction, the first step a plain
Euler step, then one last x0 evaluation at sigma_min, which is what is returned.

The solver state is kept in float64, as in NVIDIA's code; x0_fn receives x_init's dtype (float32).
The step coefficients are float64 tensor operations on x's device in NVIDIA's order (e.g. b2 =
(1/c2) * phi2, not phi2 / c2), so a float64 trajectory is the reference's bit for bit.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch

SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0
DEFAULT_STEPS = 35


def karras_sigmas(num_steps: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO):
    """num_steps + 1 noise levels from sigma_max down to sigma_min (float64)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1; got {num_steps}")
    i = torch.arange(num_steps + 1, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + i / num_steps * (lo - hi)) ** rho


def _phi1(h: torch.Tensor) -> torch.Tensor:
    return torch.expm1(h) / h


def _phi2(h: torch.Tensor) -> torch.Tensor:
    return (_phi1(h) - 1.0) / h


def res_2ab_sample(
    x0_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x_init: torch.Tensor,
    num_steps: int = DEFAULT_STEPS,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    rho: float = RHO,
    on_step: Optional[Callable[[int, float, torch.Tensor, torch.Tensor], Optional[torch.Tensor]]] = None,
) -> torch.Tensor:
    """Integrate from x_init (noise * sigma_max) to a clean sample; num_steps + 1 calls of x0_fn.
    `on_step(i, sigma, x, x0)` is called after step i with the new state and that step's x0
    prediction; a tensor it returns replaces the state."""
    # as the reference: the schedule is computed on the CPU, the step arithmetic runs where x is
    sigmas = karras_sigmas(num_steps, sigma_min, sigma_max, rho).to(x_init.device)
    in_dtype = x_init.dtype

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x0_fn(x.to(in_dtype), sigma.reshape(1).to(in_dtype)).to(torch.float64)

    x = x_init.to(torch.float64)
    prev = None  # (x0, sigma) of the previous step
    for i in range(num_steps):
        s, t = sigmas[i], sigmas[i + 1]
        x0 = denoise(x, s)
        if prev is None:
            x = ((s - t) / s) * x0 + (t / s) * x
        else:
            x0_prev, s_prev = prev
            lam_s, lam_t, lam_prev = -torch.log(s), -torch.log(t), -torch.log(s_prev)  # lambda = -ln(sigma)
            dt = lam_t - lam_s  # > 0
            c2 = (lam_prev - lam_s) / dt  # < 0
            b2 = (1.0 / c2) * _phi2(-dt)
            b1 = _phi1(-dt) - b2
            x = torch.exp(-dt) * x + dt * (b1 * x0 + b2 * x0_prev)
        prev = (x0, s)
        if on_step is not None:
            replaced = on_step(i, float(t), x, x0)
            if replaced is not None:
                x = replaced.to(x.device, torch.float64)
    return denoise(x, sigmas[-1]).to(in_dtype)


def seeded_normals(shape, seed: int, device="cpu") -> torch.Tensor:
    """numpy RandomState(seed) standard normals in C order, float32: the same numbers on every
    device and GPU architecture, as NVIDIA's pipeline draws them (``arch_invariant_rand``)."""
    return torch.from_numpy(np.random.RandomState(seed).standard_normal(tuple(shape)).astype(np.float32)).to(device)


def initial_noise(shape, seed: int, sigma_max: float = SIGMA_MAX, device="cpu") -> torch.Tensor:
    """The sampler's starting point: seeded_normals times sigma_max."""
    return seeded_normals(shape, seed, device) * sigma_max
