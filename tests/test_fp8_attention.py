"""The Triton FP8 self-attention kernel (GPU with Triton only): against SDPA in float32, and against
the same e4m3 quantisation emulated in PyTorch, so a kernel bug shows apart from FP8 rounding."""

import pytest
import torch

from nemo_cosmos.models import fp8_attention as fa

pytestmark = pytest.mark.skipif(not fa.available(), reason="needs Triton and an FP8-capable NVIDIA GPU")


def _emulated(q, k, v):
    """The kernel's arithmetic in PyTorch: dequantised e4m3 operands, probabilities cast to e4m3."""
    deq = []
    for x in (q, k, v):
        xq, scale = fa._quantise(x)
        deq.append((xq.float() * scale[:, None, :, None]).transpose(1, 2))
    qd, kd, vd = deq
    s = qd @ kd.transpose(-1, -2) * q.shape[-1] ** -0.5
    p = torch.exp(s - s.amax(-1, keepdim=True))
    p8 = (p * 256).to(torch.float8_e4m3fn).float() / 256
    return ((p8 @ vd) / p.sum(-1, keepdim=True)).transpose(1, 2)


@pytest.mark.parametrize("b, s, h, d", [(1, 1000, 4, 128), (2, 384, 2, 64), (1, 4096, 2, 128)])
def test_fp8_attention(b, s, h, d):
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(b, s, h, d, device="cuda", generator=g).to(torch.bfloat16) for _ in range(3))
    out = fa.fp8_attention(q, k, v).float()
    exact = torch.nn.functional.scaled_dot_product_attention(
        *(x.float().transpose(1, 2) for x in (q, k, v))).transpose(1, 2)
    rel = lambda a, ref: ((a - ref).norm() / ref.norm()).item()  # noqa: E731
    # measured on an H100: 0.019-0.025 against the emulation (whose softmax max is the row's final one,
    # not the kernel's running one, so probabilities round differently) and 0.052-0.054 against exact;
    # a wrong scale or a skipped block lands near 1
    assert rel(out, _emulated(q, k, v)) < 4e-2
    assert rel(out, exact) < 8e-2
