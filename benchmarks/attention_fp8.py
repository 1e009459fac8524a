"""Attention alone at the 7B shapes: cuDNN's FP8 flash attention (through cudnn-frontend) against
torch's bf16 SDPA, same inputs.

    python benchmarks/attention_fp8.py [--runs 20] [--json out.json]

Shapes: self-attention over 56,320 tokens (32 heads of 128) and cross-attention from those tokens
to 512 text tokens. Per variant: median milliseconds, TFLOP/s (4 * S_q * S_kv * D * H), and the
relative L2 error against a float32 attention of the same bf16 inputs, for inputs whose scores
have standard deviation 1 (q, k ~ N(0, 1)) and 4 (sharper softmax). "FP8 kernel" is the cuDNN
call alone on quantised inputs; "FP8" adds the amax, quantisation and dequantisation the model
runs, eager and under torch.compile. Last: the output projection fed by the attention's e4m3
output, dequantised then re-quantised by FP8Linear (what the model does, compiled) or passed
straight to torch._scaled_mm with its per-tensor scale expanded to rows.
"""

from __future__ import annotations

import argparse
import json

import torch
from common import timed

from nemo_cosmos.models import fp8_attention as fa
from nemo_cosmos.models.fp8 import FP8Linear

TOKENS, TEXT, HEADS, HEAD_DIM = 56320, 512, 32, 128


def bench_ms(fn, runs: int) -> float:
    return timed(fn, runs)[1] * 1e3


def rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.float() - ref).norm() / ref.norm()).item()


@torch.no_grad()
def reference(q, k, v, rows: int = 8192) -> torch.Tensor:
    """float32 attention, one head and a block of query rows at a time (TF32 off)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    out = torch.empty(q.shape, dtype=torch.float32, device=q.device)
    scale = q.shape[-1] ** -0.5
    for h in range(q.shape[2]):
        kh, vh = k[0, :, h].float(), v[0, :, h].float()
        for r in range(0, q.shape[1], rows):
            p = torch.softmax(q[0, r:r + rows, h].float() @ kh.T * scale, dim=-1)
            out[0, r:r + rows, h] = p @ vh
    return out


def sdpa_bf16(q, k, v, backend: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(getattr(SDPBackend, backend)):
        return torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def attention_rows(s_kv: int, runs: int) -> dict:
    g = torch.Generator(device="cuda").manual_seed(0)
    flops = 4 * TOKENS * s_kv * HEAD_DIM * HEADS
    res = {"shape": f"q 1x{TOKENS}x{HEADS}x{HEAD_DIM}, k/v 1x{s_kv}x{HEADS}x{HEAD_DIM}"}
    compiled = torch.compile(fa.fp8_attention)
    for sharpness in (1.0, 4.0):
        q = (torch.randn(1, TOKENS, HEADS, HEAD_DIM, device="cuda", generator=g) * sharpness).to(torch.bfloat16)
        k, v = (torch.randn(1, s_kv, HEADS, HEAD_DIM, device="cuda", generator=g).to(torch.bfloat16) for _ in range(2))
        ref = reference(q, k, v)
        row = {}
        for label, fn in [("bf16 cuDNN SDPA", lambda: sdpa_bf16(q, k, v, "CUDNN_ATTENTION")),
                          ("FP8 cuDNN, eager", lambda: fa.fp8_attention(q, k, v)),
                          ("FP8 cuDNN, compiled", lambda: compiled(q, k, v))]:
            out = fn()
            row[label] = {"err_vs_fp32": rel(out, ref), "nan": bool(out.isnan().any())}
            if sharpness == 1.0:
                ms = bench_ms(fn, runs)
                row[label].update(ms=ms, tflops=flops / ms / 1e9)
            del out
        if sharpness == 1.0:
            (q8, dq), (k8, dk), (v8, dv) = fa.quantise(q), fa.quantise(k), fa.quantise(v)
            so = 0.5 / dv
            ms = bench_ms(lambda: torch.ops.nemo_cosmos.cudnn_sdpa_fp8(q8, k8, v8, dq, dk, dv, so), runs)
            row["FP8 cuDNN kernel alone"] = {"ms": ms, "tflops": flops / ms / 1e9}
        res[f"score_std_{sharpness:g}"] = row
        del q, k, v, ref
    return res


def projection_rows(runs: int) -> dict:
    """linear_proj at the 7B shape fed by an e4m3 attention output with a power-of-two scale."""
    g = torch.Generator(device="cuda").manual_seed(1)
    d = HEADS * HEAD_DIM
    lin = torch.nn.Linear(d, d, bias=False, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        lin.weight.normal_(0, d**-0.5, generator=g)
    proj = FP8Linear(lin)
    o8, descale = fa.quantise(torch.randn(TOKENS, d, device="cuda", generator=g).to(torch.bfloat16))

    @torch.compile
    def via_bf16(o8, descale):
        return proj(o8.to(torch.bfloat16) * descale.to(torch.bfloat16))

    @torch.compile
    def direct(o8, descale):
        return torch._scaled_mm(o8, proj.weight_fp8.t(), scale_a=descale.expand(o8.shape[0], 1).contiguous(),
                                scale_b=proj.weight_scale, out_dtype=torch.bfloat16,
                                use_fast_accum=proj.fast_accum)

    a, b = via_bf16(o8, descale), direct(o8, descale)
    return {"dequantise + FP8Linear, compiled, ms": bench_ms(lambda: via_bf16(o8, descale), runs),
            "e4m3 straight into _scaled_mm, compiled, ms": bench_ms(lambda: direct(o8, descale), runs),
            "outputs equal": bool(torch.equal(a, b)), "max abs diff": (a.float() - b.float()).abs().max().item()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    fa.require()
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}", flush=True)
    results = {"self_attention": attention_rows(TOKENS, args.runs)}
    print(json.dumps(results["self_attention"], indent=1), flush=True)
    results["cross_attention"] = attention_rows(TEXT, args.runs)
    print(json.dumps(results["cross_attention"], indent=1), flush=True)
    results["output_projection"] = projection_rows(args.runs)
    print(json.dumps(results["output_projection"], indent=1), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    for kind in ("self_attention", "cross_attention"):
        row = results[kind]["score_std_1"]
        bf16, fp8 = row["bf16 cuDNN SDPA"], row["FP8 cuDNN, compiled"]
        print(f"{kind}: bf16 cuDNN {bf16['ms']:.2f} ms ({bf16['tflops']:.0f} TFLOP/s, err {bf16['err_vs_fp32']:.2e}); "
              f"FP8 cuDNN kernel {row['FP8 cuDNN kernel alone']['tflops']:.0f} TFLOP/s; FP8 compiled with quantisation "
              f"{fp8['ms']:.2f} ms ({fp8['tflops']:.0f} TFLOP/s, err {fp8['err_vs_fp32']:.2e}): "
              f"{bf16['ms'] / fp8['ms']:.2f}x bf16")


if __name__ == "__main__":
    main()
