"""FP8 attention on Hopper GPUs: cuDNN's flash-attention kernel on float8 e4m3 q, k and v, driven
through cudnn-frontend (``pip install 'nemo-cosmos[gpu]'``; the cuDNN library it loads is torch's).

softmax(q k^T / sqrt(d)) v with q, k and v quantised to e4m3, one power-of-two scale per tensor
from its amax (cuDNN builds no plan with per-head descales on Hopper). cuDNN keeps the softmax
statistics in float32, casts the probabilities (times 2^8) to e4m3 for the P.V product and writes
an e4m3 output: on Hopper it has no bf16 output for e4m3 inputs. The output is a convex combination
of v's rows, so |o| <= amax(v) and its scale follows from v's without another pass over the data;
every scale is a power of two, so the bf16 dequantisation is exact, and so is the FP8 projection's
re-quantisation that follows (``fp8.FP8Linear`` also scales by powers of two).

The cuDNN call is a torch custom op with a fake implementation, so torch.compile traces through it
(one opaque node) and fuses the quantisation with the layer's other elementwise work. Graphs are
built once per shape, layout and device. Inference only: there is no backward.
"""

from __future__ import annotations

import importlib.util
import threading
from typing import Optional, Tuple

import torch

E4M3_MAX = torch.finfo(torch.float8_e4m3fn).max
_P_SCALE = 256.0  # probabilities (<= 1) times 2^8 before their e4m3 cast: small ones stay above e4m3's floor


def unavailable_reason() -> Optional[str]:
    """Why cuDNN's FP8 attention cannot run here, or None when it can."""
    if importlib.util.find_spec("cudnn") is None:
        return "nvidia-cudnn-frontend is not installed (pip install 'nemo-cosmos[gpu]')"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    major, minor = torch.cuda.get_device_capability()
    if major < 9:
        return f"it needs a Hopper-class GPU (compute capability 9.0+); {torch.cuda.get_device_name()} is {major}.{minor}"
    return None


def available() -> bool:
    return unavailable_reason() is None


def require() -> None:
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"FP8 attention (cuDNN) is unavailable: {reason}")


def pow2_scale(amax: torch.Tensor) -> torch.Tensor:
    """The power of two s with amax * s in (E4M3_MAX / 2, E4M3_MAX], in float32: x * s is exact in
    bf16 and 1 / s undoes it exactly, so a scale costs no rounding of its own."""
    return torch.exp2(torch.floor(torch.log2(E4M3_MAX / amax.float().clamp(min=1e-12))))


def quantise(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """x -> (e4m3 tensor, float32 descale of shape [1]) with x ~ e4m3 * descale."""
    inv = pow2_scale(x.abs().amax()).reshape(1)
    return (x * inv.to(x.dtype)).to(torch.float8_e4m3fn), 1.0 / inv


def fp8_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q [B, S_q, H, D], k and v [B, S_kv, H, D] (CUDA) -> softmax(q k^T / sqrt(D)) v as
    [B, S_q, H, D] in q's dtype."""
    if q.device.type != "cuda":
        raise ValueError(f"FP8 attention (cuDNN) takes CUDA tensors; got {q.device}")
    if q.dim() != 4 or k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"FP8 attention takes q [B, S_q, H, D] and k, v [B, S_kv, H, D]; got {q.shape}, {k.shape}, {v.shape}")
    (q8, descale_q), (k8, descale_k), (v8, descale_v) = quantise(q), quantise(k), quantise(v)
    # |o| <= amax(v) <= E4M3_MAX * descale_v; the half leaves room for the probabilities' rounding
    scale_o = 0.5 / descale_v
    o8 = torch.ops.nemo_cosmos.cudnn_sdpa_fp8(q8, k8, v8, descale_q, descale_k, descale_v, scale_o)
    return o8.to(q.dtype) * (1.0 / scale_o).to(q.dtype)


# ---------------------------------------------------------------------------------------------
# The cuDNN graph and the custom op
# ---------------------------------------------------------------------------------------------

_UID = dict(q=1, k=2, v=3, o=4, descale_q=5, descale_k=6, descale_v=7, descale_s=8, scale_s=9, scale_o=10,
            amax_s=11, amax_o=12)
_graphs: dict = {}
_graphs_lock = threading.Lock()
_local = threading.local()  # cuDNN handles are per thread
_p_scales: dict = {}


def _handle(device: torch.device):
    import cudnn

    handles = _local.__dict__.setdefault("handles", {})
    if device not in handles:
        with torch.cuda.device(device):
            handles[device] = cudnn.create_handle()
    cudnn.set_stream(handles[device], torch.cuda.current_stream(device).cuda_stream)
    return handles[device]


def _bhsd(x: torch.Tensor) -> torch.Tensor:
    """[B, S, H, D] -> the [B, H, S, D] view cuDNN's dims name (no copy)."""
    return x.permute(0, 2, 1, 3)


def _build(key, handle):
    import cudnn

    _, (b, s_q, h, d), (s_kv, d_v), q_stride, k_stride, v_stride = key
    fp8, f32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
    g = cudnn.pygraph(handle=handle, io_data_type=fp8, intermediate_data_type=f32, compute_data_type=f32)

    def operand(name, dims, stride):
        return g.tensor(name=name, dim=list(dims), stride=list(stride), data_type=fp8, uid=_UID[name])

    def scalar(name):
        return g.tensor(name=name, dim=[1, 1, 1, 1], stride=[1, 1, 1, 1], data_type=f32, uid=_UID[name])

    o, _, amax_s, amax_o = g.sdpa_fp8(
        q=operand("q", (b, h, s_q, d), q_stride), k=operand("k", (b, h, s_kv, d), k_stride),
        v=operand("v", (b, h, s_kv, d_v), v_stride),
        descale_q=scalar("descale_q"), descale_k=scalar("descale_k"), descale_v=scalar("descale_v"),
        descale_s=scalar("descale_s"), scale_s=scalar("scale_s"), scale_o=scalar("scale_o"),
        attn_scale=d**-0.5, generate_stats=False, use_causal_mask=False, name="sdpa_fp8",
    )
    o.set_uid(_UID["o"]).set_output(True).set_dim([b, h, s_q, d_v]).set_stride(
        [s_q * h * d_v, d_v, h * d_v, 1]).set_data_type(fp8)
    for t, name in ((amax_s, "amax_s"), (amax_o, "amax_o")):
        t.set_uid(_UID[name]).set_output(True).set_dim([1, 1, 1, 1]).set_stride([1, 1, 1, 1]).set_data_type(f32)
    try:
        g.validate()
        g.build_operation_graph()
        g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        g.check_support()
        g.build_plans()  # the heuristics' first plan: on an H100 the fastest of the three it offers
    except cudnn.cudnnGraphNotSupportedError as e:
        raise RuntimeError(f"cuDNN has no FP8 attention for q [B={b}, H={h}, S={s_q}, D={d}], "
                           f"k/v S={s_kv}: {str(e).splitlines()[0]}") from e
    return g, g.get_workspace_size()


def _graph(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, handle):
    key = (q.device, tuple(q.shape), (k.shape[1], v.shape[3]),
           *(tuple(_bhsd(x).stride()) for x in (q, k, v)))
    hit = _graphs.get(key)
    if hit is None:
        with _graphs_lock:
            hit = _graphs.get(key)
            if hit is None:
                hit = _graphs[key] = _build(key, handle)
    return hit


def _probability_scales(device: torch.device) -> torch.Tensor:
    if device not in _p_scales:
        _p_scales[device] = torch.tensor([_P_SCALE, 1.0 / _P_SCALE], dtype=torch.float32, device=device)
    return _p_scales[device]


@torch.library.custom_op("nemo_cosmos::cudnn_sdpa_fp8", mutates_args=(), device_types="cuda")
def cudnn_sdpa_fp8(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, descale_q: torch.Tensor,
                   descale_k: torch.Tensor, descale_v: torch.Tensor, scale_o: torch.Tensor) -> torch.Tensor:
    """e4m3 q [B, S_q, H, D], k and v [B, S_kv, H, D], float32 scales of one element -> e4m3 o
    [B, S_q, H, D] with o * scale_o^-1 ~ softmax(q k^T / sqrt(D)) v (q, k, v descaled)."""
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    handle = _handle(q.device)
    graph, workspace_size = _graph(q, k, v, handle)
    b, s_q, h, _ = q.shape
    o = torch.empty(b, s_q, h, v.shape[3], dtype=torch.float8_e4m3fn, device=q.device)
    amax = torch.empty(2, dtype=torch.float32, device=q.device)  # written by cuDNN, unused
    p_scales = _probability_scales(q.device)
    one = lambda t: t.reshape(1, 1, 1, 1)  # noqa: E731
    pack = {
        _UID["q"]: _bhsd(q), _UID["k"]: _bhsd(k), _UID["v"]: _bhsd(v), _UID["o"]: _bhsd(o),
        _UID["descale_q"]: one(descale_q), _UID["descale_k"]: one(descale_k), _UID["descale_v"]: one(descale_v),
        _UID["scale_s"]: one(p_scales[0:1]), _UID["descale_s"]: one(p_scales[1:2]), _UID["scale_o"]: one(scale_o),
        _UID["amax_s"]: one(amax[0:1]), _UID["amax_o"]: one(amax[1:2]),
    }
    workspace = torch.empty(max(workspace_size, 1), dtype=torch.uint8, device=q.device)
    graph.execute(pack, workspace, handle=handle)
    return o


@cudnn_sdpa_fp8.register_fake
def _(q, k, v, descale_q, descale_k, descale_v, scale_o):
    return q.new_empty((q.shape[0], q.shape[1], q.shape[2], v.shape[3]))
