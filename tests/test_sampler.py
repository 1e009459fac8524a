"""EDM + RES-2ab against closed forms: for Gaussian data the exact x0 predictor and the exact
probability-flow solution are known, so the sampler's error and its order can be measured."""

import math

import numpy as np
import pytest
import torch

from nemo_cosmos.diffusion import edm_coefficients, guided_x0, initial_noise, karras_sigmas, res_2ab_sample

SD = 0.7  # data standard deviation (the x0 predictor below is exact for N(0, SD^2) data)


def _exact_x0(x, sigma):
    return x * SD**2 / (SD**2 + sigma.double() ** 2)


def _run(num_steps):
    x_init = initial_noise((1, 4, 2, 3, 3), seed=3)
    seen = []

    def x0_fn(x, sigma):
        assert x.dtype == torch.float32 and sigma.dtype == torch.float32
        seen.append((x.double().clone(), float(sigma)))
        return _exact_x0(x.double(), sigma).float()

    res_2ab_sample(x0_fn, x_init, num_steps=num_steps)
    x_last, sigma_last = seen[-1]
    # the probability-flow ODE maps x(sigma_max) to x(sigma) = x * sqrt((SD^2+sigma^2)/(SD^2+sigma_max^2))
    exact = x_init.double() * math.sqrt((SD**2 + sigma_last**2) / (SD**2 + 80.0**2))
    return len(seen), sigma_last, ((x_last - exact).norm() / exact.norm()).item()


def test_res_2ab_is_second_order_and_calls_x0_num_steps_plus_one_times():
    calls, sigma_last, err_35 = _run(35)
    assert calls == 36 and sigma_last == pytest.approx(0.002, rel=1e-6)
    _, _, err_70 = _run(70)
    _, _, err_140 = _run(140)
    assert err_35 < 5e-2
    # error falls about 4x per halving of the step (a first-order method gives 2x)
    assert err_70 / err_140 > 3.0


def test_karras_schedule_is_the_references():
    s = karras_sigmas(35)
    assert s.dtype == torch.float64 and len(s) == 36
    i = np.arange(36)
    want = (80 ** (1 / 7) + i / 35 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert np.allclose(s.numpy(), want, rtol=1e-12)
    assert s[1].item() == pytest.approx(68.3251, abs=1e-4)


def test_noise_is_numpy_randomstate():
    a = initial_noise((1, 16, 2, 4, 4), seed=7)
    want = np.random.RandomState(7).standard_normal((1, 16, 2, 4, 4)).astype(np.float32) * 80
    assert np.array_equal(a.numpy(), want)
    assert not torch.equal(a, initial_noise((1, 16, 2, 4, 4), seed=8))


def test_edm_coefficients_and_guidance():
    sigma = torch.tensor([0.5, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm_coefficients(sigma)
    assert torch.allclose(c_skip, 0.25 / (sigma**2 + 0.25))
    assert torch.allclose(c_out, sigma * 0.5 / (sigma**2 + 0.25).sqrt())
    assert torch.allclose(c_in, 1 / (sigma**2 + 0.25).sqrt())
    assert torch.allclose(c_noise, sigma.log() / 4)
    cond, uncond = torch.tensor([1.0]), torch.tensor([0.5])
    assert guided_x0(cond, uncond, 7.0).item() == pytest.approx(1.0 + 7 * 0.5)
