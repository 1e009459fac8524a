"""FP8 attention through cuDNN (nemo_cosmos/models/fp8_attention.py) and its wiring.

On the CPU: the errors and the fallback when it cannot run, the custom op's fake implementation
under FakeTensorMode and torch.compile (fake CUDA tensors), and the power-of-two scales that make
the attention output's trip into the FP8 projection lossless. On a Hopper GPU with
nvidia-cudnn-frontend: the numbers against a float32 attention and under torch.compile."""

import logging

import pytest
import torch
from helpers import randomize_, rel_err
from torch._subclasses.fake_tensor import FakeTensorMode

from nemo_cosmos.models import CosmosDiT, tiny_config
from nemo_cosmos.models import fp8 as fp8_mod
from nemo_cosmos.models import fp8_attention as fa
from nemo_cosmos.models.specs import SDPAttention

gpu = pytest.mark.skipif(not fa.available(), reason=f"needs cuDNN FP8 attention: {fa.unavailable_reason()}")


@pytest.fixture
def no_cudnn_frontend(monkeypatch):
    real = fa.importlib.util.find_spec
    monkeypatch.setattr(fa.importlib.util, "find_spec", lambda name, *a: None if name == "cudnn" else real(name, *a))


@pytest.fixture
def fake_hopper(monkeypatch):
    """A machine where FP8 projections may be built (their checks pass; nothing runs on a GPU)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))


def test_fp8_backend_without_cudnn_frontend_is_a_clear_error(no_cudnn_frontend):
    assert "pip install 'nemo-cosmos[gpu]'" in fa.unavailable_reason()
    with pytest.raises(RuntimeError, match=r"FP8 attention \(cuDNN\) is unavailable: nvidia-cudnn-frontend is not installed"):
        CosmosDiT(tiny_config(attention_backend="fp8"))
    with pytest.raises(RuntimeError, match="nvidia-cudnn-frontend is not installed"):
        fp8_mod.enable_fp8_attention(CosmosDiT(tiny_config()))


def test_fp8_backend_before_hopper_is_a_clear_error(monkeypatch):
    real = fa.importlib.util.find_spec
    monkeypatch.setattr(fa.importlib.util, "find_spec", lambda name, *a: object() if name == "cudnn" else real(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 9))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA L40S")
    with pytest.raises(RuntimeError, match=r"Hopper-class GPU \(compute capability 9.0\+\); NVIDIA L40S is 8.9"):
        SDPAttention(tiny_config(attention_backend="fp8"))


def test_apply_fp8_without_cudnn_frontend_keeps_bf16_attention_and_logs_once(no_cudnn_frontend, fake_hopper, caplog):
    fp8_mod._log_attention_fallback.cache_clear()
    cfg = tiny_config()
    with caplog.at_level(logging.WARNING, logger=fp8_mod.__name__):
        models = [fp8_mod.apply_fp8(CosmosDiT(cfg)) for _ in range(2)]
    for model in models:
        for layer in model.layers:
            assert isinstance(layer.self_attention.linear_proj, fp8_mod.FP8Linear)
            assert isinstance(layer.mlp.linear_fc1, fp8_mod.FP8Linear)
            assert layer.self_attention.core_attention.backend == "auto"
    warnings = [r.getMessage() for r in caplog.records if "FP8 attention is off" in r.getMessage()]
    assert len(warnings) == 1 and "nvidia-cudnn-frontend is not installed" in warnings[0]


def test_fp8_attention_is_set_on_self_attention_only(monkeypatch):
    """The switch reaches every self-attention and no cross-attention (whose keys are the text). Off
    the GPU the "fp8" backend is torch's SDPA, so the output is unchanged there."""
    monkeypatch.setattr(fa, "unavailable_reason", lambda: None)
    cfg = tiny_config()
    plain = randomize_(CosmosDiT(cfg)).eval()
    marked = randomize_(CosmosDiT(cfg)).eval()
    fp8_mod.enable_fp8_attention(marked)
    assert all(layer.self_attention.core_attention.backend == "fp8" for layer in marked.layers)
    assert all(layer.cross_attention.core_attention.backend == "auto" for layer in marked.layers)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, cfg.in_channels, 3, 8, 8, generator=g)
    t, text = torch.rand(1, generator=g), torch.randn(1, 5, cfg.crossattn_dim, generator=g)
    with torch.no_grad():
        assert torch.equal(plain(x, t, text, fps=24.0), marked(x, t, text, fps=24.0))


@pytest.mark.parametrize("s_q, s_kv, d", [(40, 40, 64), (40, 7, 128)])
def test_fake_implementation_shapes(s_q, s_kv, d):
    with FakeTensorMode():
        q = torch.empty(2, s_q, 4, d, device="cuda", dtype=torch.bfloat16)
        k = torch.empty(2, s_kv, 4, d, device="cuda", dtype=torch.bfloat16)
        out = fa.fp8_attention(q, k, k)
        (q8, dq), (k8, dk) = fa.quantise(q), fa.quantise(k)
        raw = torch.ops.nemo_cosmos.cudnn_sdpa_fp8(q8, k8, k8, dq, dk, dk, dk)
    assert (out.shape, out.dtype, out.device.type) == ((2, s_q, 4, d), torch.bfloat16, "cuda")
    assert (raw.shape, raw.dtype, raw.is_contiguous()) == ((2, s_q, 4, d), torch.float8_e4m3fn, True)
    assert (q8.dtype, dq.shape, dq.dtype) == (torch.float8_e4m3fn, (1,), torch.float32)


@pytest.mark.parametrize("backend", ["capture", "aot_eager"])
def test_compiles_into_one_graph_with_the_cudnn_op(monkeypatch, backend):
    """torch.compile(fullgraph=True) of the self-attention module on fake CUDA tensors: no graph
    break, and the cuDNN call is one node of the graph (aot_eager runs the fake implementation)."""
    monkeypatch.setattr(fa, "unavailable_reason", lambda: None)
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    attn = SDPAttention(tiny_config(attention_backend="fp8"))
    with FakeTensorMode():
        q = torch.empty(1, 48, 4, 64, device="cuda", dtype=torch.bfloat16)
        out = torch.compile(attn, backend=capture if backend == "capture" else backend, fullgraph=True)(q, q, q)
    assert (out.shape, out.dtype) == ((1, 48, 256), torch.bfloat16)
    if backend == "capture":
        targets = [str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"]
        assert sum("nemo_cosmos.cudnn_sdpa_fp8" in t for t in targets) == 1


def test_fp8_attention_refuses_cpu_tensors_and_mismatched_shapes():
    q = torch.randn(1, 8, 2, 16)
    with pytest.raises(ValueError, match="takes CUDA tensors; got cpu"):
        fa.fp8_attention(q, q, q)
    with FakeTensorMode():
        q, k = torch.empty(1, 8, 2, 16, device="cuda"), torch.empty(1, 8, 1, 16, device="cuda")
        with pytest.raises(ValueError, match=r"q \[B, S_q, H, D\] and k, v \[B, S_kv, H, D\]"):
            fa.fp8_attention(q, k, k)


def test_pow2_scales():
    amax = torch.tensor([1e-3, 0.3, 1.0, 7.5, 448.0, 1e4])
    s = fa.pow2_scale(amax)
    assert torch.equal(s, torch.exp2(torch.log2(s).round()))  # powers of two
    assert ((amax * s > fa.E4M3_MAX / 2) & (amax * s <= fa.E4M3_MAX)).all()
    x = torch.randn(64, 48, dtype=torch.bfloat16) * 3
    x8, descale = fa.quantise(x)
    assert x8.float().abs().max() > fa.E4M3_MAX / 2 and descale.shape == (1,)
    assert rel_err(x8.float() * descale, x.float()) < 0.04  # e4m3: 3 mantissa bits


def test_attention_output_enters_the_fp8_projection_unchanged():
    """The FP8 attention hands linear_proj e4m3 values times a power of two (in bf16); the
    projection's per-row re-quantisation gives back exactly those values, so the dequantise /
    re-quantise pass between them costs no accuracy."""
    g = torch.Generator().manual_seed(0)
    o8, descale = fa.quantise(torch.randn(96, 64, generator=g).to(torch.bfloat16) * torch.logspace(-3, 2, 96).reshape(-1, 1))
    o = o8.to(torch.bfloat16) * (descale * 2).to(torch.bfloat16)  # as fp8_attention returns it (scale_o = 0.5/descale)
    rows8, row_scale = fp8_mod._quantise_rows(o)
    assert torch.equal(rows8.float() * row_scale, o.float())


# ------------------------------------------------------------------------------------- GPU ---

def _reference(q, k, v):
    return torch.nn.functional.scaled_dot_product_attention(
        *(x.double().transpose(1, 2) for x in (q, k, v))).transpose(1, 2)


def _emulated(q, k, v):
    """FP8 rounding of q, k, v alone (exact softmax and products): what no FP8 kernel can beat."""
    deq = [(x8.double() * s.double()) for x8, s in (fa.quantise(x) for x in (q, k, v))]
    return _reference(*deq)


@gpu
@pytest.mark.parametrize("b, s_q, s_kv, h, d", [(1, 1000, 1000, 4, 128), (2, 384, 384, 2, 64), (1, 4096, 4096, 2, 128),
                                                (1, 1024, 77, 4, 128)])
def test_cudnn_fp8_attention_against_float64(b, s_q, s_kv, h, d):
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(b, s_q, h, d, device="cuda", generator=g).to(torch.bfloat16)
    k, v = (torch.randn(b, s_kv, h, d, device="cuda", generator=g).to(torch.bfloat16) for _ in range(2))
    out = fa.fp8_attention(q, k, v)
    assert out.dtype == torch.bfloat16 and out.shape == q.shape and not out.isnan().any()
    exact = _reference(q, k, v)
    # measured on an H100: 5-6e-2 on such inputs (bf16 SDPA: 2e-3; e4m3 keeps 3 mantissa bits of q,
    # k, v, the probabilities and the output); a wrong scale, layout or skipped block lands near 1
    assert rel_err(out, exact) < 0.1
    assert rel_err(out, _emulated(q, k, v)) < 0.1


@gpu
def test_cudnn_fp8_attention_compiled_matches_eager_and_caches_graphs():
    g = torch.Generator(device="cuda").manual_seed(1)
    q, k, v = (torch.randn(1, 2048, 4, 128, device="cuda", generator=g).to(torch.bfloat16) for _ in range(3))
    eager = fa.fp8_attention(q, k, v)
    built = len(fa._graphs)
    compiled = torch.compile(fa.fp8_attention, fullgraph=True)(q, k, v)
    assert len(fa._graphs) == built  # same shape and layout: no new cuDNN graph
    assert rel_err(compiled, eager) < 1e-2
