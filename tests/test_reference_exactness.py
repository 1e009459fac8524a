"""Bit-exactness with NVIDIA's Cosmos-1.0 arithmetic where rounding order changes the output.

Each reference below is written from the fact sheet (shared/reference/cosmos1-reference-behaviour.md
§1.4, §2.3) and the op order of NVIDIA/Cosmos ca2cde0 (module/attention.py `normalize`,
diffusion/functional/runge_kutta.py `res_x0_rk2_step`), not from our code."""

import numpy as np
import pytest
import torch

from nemo_cosmos.diffusion import initial_noise, res_2ab_sample
from nemo_cosmos.models import cosmos_7b_config, cosmos_14b_config, tiny_config
from nemo_cosmos.models.embeddings import LearnablePosEmb


# ---------------------------------------------------------------- extra per-block position embedding


def _reference_extra_pos_emb(t_tab, h_tab, w_tab, grid):
    """LearnablePosEmbAxis.generate_embeddings ("crop") + normalize(emb, dim=-1, eps=1e-6), batch 1:
    tables summed t + h + w in their own dtype, the norm in float32 scaled by sqrt(numel ratio) with
    eps added outside, rounded to the tables' dtype, the division in that dtype."""
    t, h, w = grid
    d = t_tab.shape[-1]
    emb = (
        t_tab[:t][None, :, None, None, :].expand(1, t, h, w, d)
        + h_tab[:h][None, None, :, None, :].expand(1, t, h, w, d)
        + w_tab[:w][None, None, None, :, :].expand(1, t, h, w, d)
    )
    norm = torch.linalg.vector_norm(emb, dim=[-1], keepdim=True, dtype=torch.float32)
    norm = torch.add(1e-6, norm, alpha=np.sqrt(norm.numel() / emb.numel()))
    return emb / norm.to(emb.dtype)


@pytest.mark.parametrize("config", [cosmos_7b_config, cosmos_14b_config])
def test_extra_pos_emb_in_bf16_is_the_references_bit_for_bit(config):
    cfg = config(num_layers=1)  # only the table shapes are used
    pe = LearnablePosEmb(cfg).to(torch.bfloat16)  # trunc-normal(0.02) tables, as initialised
    grid = (3, 5, 7)
    got = pe(grid, torch.bfloat16)
    want = _reference_extra_pos_emb(pe.pos_emb_t, pe.pos_emb_h, pe.pos_emb_w, grid)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, want.reshape(got.shape))
    # the comparison can tell: dividing in float32 by the unrounded norm moves ~30% of the elements
    emb = (pe.pos_emb_t[:3, None, None] + pe.pos_emb_h[None, :5, None] + pe.pos_emb_w[None, None, :7]).reshape(got.shape)
    norm = torch.linalg.vector_norm(emb, dim=-1, keepdim=True, dtype=torch.float32)
    fp32_division = (emb.float() / (1e-6 + norm / cfg.hidden_size**0.5)).to(torch.bfloat16)
    assert (fp32_division != got).float().mean() > 0.1


def test_extra_pos_emb_in_float32_is_diffusers_bit_for_bit(diffusers_cosmos):
    """In float32 the reference's and diffusers' arithmetic coincide, so no option is needed."""
    cfg = tiny_config()
    ours = LearnablePosEmb(cfg)
    theirs = diffusers_cosmos.CosmosLearnablePositionalEmbed(cfg.hidden_size, cfg.max_latent_size, cfg.patch_size)
    theirs.load_state_dict(ours.state_dict())
    t, h, w = 3, 4, 5
    hidden = torch.zeros(1, cfg.in_channels, t, h * cfg.patch_spatial, w * cfg.patch_spatial)
    want = theirs(hidden)[0]
    assert torch.equal(ours((t, h, w), torch.float32), want)


# ---------------------------------------------------------------- RES-2ab sampler


def _reference_res_2ab(x0_fn, x_sigma_max, num_steps=35, sigma_min=0.002, sigma_max=80, rho=7):
    """Sampler.forward(solver_option="2ab") as executed: float64 state, x0_fn called in the input
    dtype with [B] sigmas, Euler first, then res_x0_rk2_step with b2 = 1.0 / c2 * phi2 in float64
    tensor ops, and one last x0 at sigma_min. The churn term (which adds 0 * noise) is left out."""
    in_dtype = x_sigma_max.dtype

    def x0_f64(x, sigma_b):
        return x0_fn(x.to(in_dtype), sigma_b.to(in_dtype)).to(torch.float64)

    def bmul(c, x):
        return c.reshape(c.shape + (1,) * (x.dim() - c.dim())) * x

    idx = torch.arange(num_steps + 1, dtype=torch.float64)
    sigmas = (sigma_max ** (1 / rho) + idx / num_steps * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    ones = torch.ones(x_sigma_max.shape[0], dtype=torch.float64)
    x, prev = x_sigma_max, None
    for i in range(num_steps):
        s, t = sigmas[i] * ones, sigmas[i + 1] * ones
        x0_s = x0_f64(x, s)
        if prev is None:
            x = bmul((s - t) / s, x0_s) + bmul(t / s, x)
        else:
            x0_s1, s1 = prev
            ls, lt, m = -torch.log(s), -torch.log(t), -torch.log(s1)
            dt = lt - ls
            c2 = (m - ls) / dt
            h = -dt
            phi1 = torch.expm1(h) / h
            phi2 = (phi1 - 1.0) / h
            b1 = torch.nan_to_num(phi1 - 1.0 / c2 * phi2, nan=0.0)
            b2 = torch.nan_to_num(1.0 / c2 * phi2, nan=0.0)
            x = bmul(torch.exp(-dt), x) + bmul(dt, bmul(b1, x0_s) + bmul(b2, x0_s1))
        prev = (x0_s, s)
    return x0_f64(x, sigmas[-1] * ones).to(in_dtype)


def _recording_x0_fn():
    """A fixed nonlinear x0 predictor that records every (x, sigma) it is called with."""
    seen = []

    def x0_fn(x, sigma):
        seen.append((x.clone(), sigma.clone()))
        xs, sd = x.double(), sigma.double().reshape(-1, *([1] * (x.dim() - 1)))
        return (0.8 * torch.tanh(xs / torch.sqrt(1.0 + sd**2)) + 0.05 * torch.sin(3.0 * xs)).to(x.dtype)

    return x0_fn, seen


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_res_2ab_trajectory_is_the_references_bit_for_bit(dtype):
    """With float64 input x0_fn sees the solver state itself, so every step is compared exactly."""
    x_init = initial_noise((1, 4, 3, 6, 6), seed=5).to(dtype)
    ours_fn, ours_seen = _recording_x0_fn()
    ref_fn, ref_seen = _recording_x0_fn()
    got = res_2ab_sample(ours_fn, x_init, num_steps=35)
    want = _reference_res_2ab(ref_fn, x_init, num_steps=35)
    assert len(ours_seen) == len(ref_seen) == 36
    for step, ((x, s), (x_ref, s_ref)) in enumerate(zip(ours_seen, ref_seen)):
        assert x.dtype == dtype and torch.equal(s, s_ref), step
        assert torch.equal(x, x_ref), f"state differs after step {step}"
    assert got.dtype == dtype and torch.equal(got, want)
