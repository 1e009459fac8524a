"""One DiT forward at the full 121 x 704 x 1280 shape: ours vs diffusers, same weights, same inputs.

    python benchmarks/dit_forward.py --model 7B [7B-Video2World] [--compile] [--attention cudnn] [--fp8] [--runs 3] [--json out.json]

Prints, per model: median time and peak GPU memory of each implementation, the relative difference
of the outputs (ours with float32 RoPE angles, as diffusers computes them, and with the reference's
bf16 angles), and, on a quarter-size latent, each bf16 output's error against a float32 forward.
With --fp8 (after the bf16 runs): ours with FP8 projections, then with cuDNN's FP8 self-attention
too (what --fp8 does; needs nvidia-cudnn-frontend), then that once more with the FP8 matmuls
accumulating in float32; each against compiled diffusers under --compile.
The last line is the speed ratio diffusers / ours. Weights are random (the published ones cannot
be downloaded here); the arithmetic is the same.
"""

from __future__ import annotations

import argparse
import json
import warnings

import torch

warnings.filterwarnings("ignore")
torch._dynamo.config.cache_size_limit = 64  # per-layer compiles, re-specialised per attention kernel / FP8

from common import fill_random_, timed  # noqa: E402
from nemo_cosmos.checkpoint import to_ours  # noqa: E402
from nemo_cosmos.models import (CosmosDiT, cosmos_7b_config, cosmos_7b_video2world_config,  # noqa: E402
                                cosmos_14b_config, cosmos_14b_video2world_config)

_14B = dict(num_layers=36, num_attention_heads=40, rope_scale=(2.0, 2.0, 2.0))
PRESETS = {
    "7B": (cosmos_7b_config, dict()),
    "14B": (cosmos_14b_config, _14B),
    # Video2World: the condition-mask channel (here the first 2 latent frames, 9 input frames)
    "7B-Video2World": (cosmos_7b_video2world_config, dict(in_channels=17)),
    "14B-Video2World": (cosmos_14b_video2world_config, dict(in_channels=17, **_14B)),
}


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def weights_gib(model: torch.nn.Module) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30


def attention_tflops(backends, runs: int = 5) -> dict:
    """SDPA alone at the 7B self-attention shape (56,320 tokens, 32 heads of 128)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (torch.randn(1, 32, 56320, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    flops = 4 * 56320**2 * 128 * 32
    out = {}
    for name in backends:
        backend = getattr(SDPBackend, {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION"}[name])
        with sdpa_kernel(backend):
            try:
                _, t, _ = timed(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v), runs)
            except RuntimeError as e:
                out[name] = f"unavailable: {str(e).splitlines()[0]}"
                continue
        out[name] = {"ms": t * 1e3, "tflops": flops / t / 1e12}
    return out


def set_attention_backend(model, backend: str) -> None:
    for layer in model.layers:
        layer.self_attention.core_attention.backend = backend
        layer.cross_attention.core_attention.backend = backend


def set_fast_accum(model, on: bool) -> None:
    from nemo_cosmos.models.fp8 import FP8Linear

    for m in model.modules():
        if isinstance(m, FP8Linear):
            m.fast_accum = on


def bench(name: str, runs: int, compile_: bool, attention=(), fp8: bool = False, fp32_check: bool = True) -> dict:
    from diffusers import CosmosTransformer3DModel

    factory, diffusers_kwargs = PRESETS[name]
    cfg = factory()
    with torch.device("meta"):
        theirs = CosmosTransformer3DModel(**diffusers_kwargs)
    theirs = theirs.to_empty(device="cuda").to(torch.bfloat16).eval()
    fill_random_(theirs)

    g = torch.Generator(device="cuda").manual_seed(1)
    full = (1, 16, 16, 88, 160)  # 121 x 704 x 1280 video
    x = torch.randn(full, generator=g, device="cuda").to(torch.bfloat16) * 2
    text = torch.randn(1, 512, 1024, generator=g, device="cuda").to(torch.bfloat16)
    text[:, 40:] = 0  # T5 padding is zeroed, as the reference does
    c_noise = torch.tensor([0.25 * torch.log(torch.tensor(20.0)).item()], device="cuda")
    pad = torch.zeros(1, 1, 88, 160, device="cuda", dtype=torch.bfloat16)
    mask = None
    if cfg.condition_mask_channel:
        mask = torch.zeros(1, 1, 16, 88, 160, device="cuda", dtype=torch.bfloat16)
        mask[:, :, :2] = 1

    def cond(xx):
        return {} if mask is None else {"condition_mask": mask[..., : xx.shape[-2], : xx.shape[-1]]}

    def run_theirs(xx=x):
        return theirs(xx, c_noise, text, fps=24, padding_mask=pad[..., : xx.shape[-2], : xx.shape[-1]], return_dict=False,
                      **cond(xx))[0]

    res = {"model": name, "tokens": 16 * 44 * 80}
    with torch.inference_mode():
        y_theirs, res["diffusers_s"], res["diffusers_activation_peak_gib"] = timed(run_theirs, runs)
        res["diffusers_weights_gib"] = weights_gib(theirs)

        with torch.device("meta"):
            ours = CosmosDiT(cfg)
        ours.load_state_dict(to_ours(theirs.state_dict(), cfg, "diffusers"), assign=True)
        ours.eval()

        def run_ours(xx=x):
            return ours(xx, c_noise, text, fps=24, **cond(xx))

        y_ours, res["ours_s"], res["ours_activation_peak_gib"] = timed(run_ours, runs)
        res["ours_weights_gib"] = weights_gib(ours)
        res["reldiff_ours_vs_diffusers"] = rel(y_ours, y_theirs)
        cfg.rope_in_model_dtype = False
        res["reldiff_ours_fp32rope_vs_diffusers"] = rel(run_ours(), y_theirs)
        cfg.rope_in_model_dtype = True

        if compile_:
            for blk in theirs.transformer_blocks:
                blk.compile()
            _, res["diffusers_compiled_s"], _ = timed(run_theirs, runs)
            for layer in ours.layers:
                layer.compile()
            y_c, res["ours_compiled_s"], res["ours_compiled_activation_peak_gib"] = timed(run_ours, runs)
            res["reldiff_ours_compiled_vs_eager"] = rel(y_c, y_ours)
            res["reldiff_ours_compiled_vs_diffusers"] = rel(y_c, y_theirs)
            for backend in attention:
                set_attention_backend(ours, backend)
                y_b, res[f"ours_compiled_{backend}_s"], _ = timed(run_ours, runs)
                res[f"reldiff_ours_compiled_{backend}_vs_diffusers"] = rel(y_b, y_theirs)
                res[f"reldiff_ours_compiled_{backend}_vs_eager"] = rel(y_b, y_ours)
            best = min(["auto", *attention], key=lambda b: res["ours_compiled_s" if b == "auto" else f"ours_compiled_{b}_s"])
            set_attention_backend(ours, best)
            res["best_attention_backend"] = best

        if fp8:
            from nemo_cosmos.models import fp8_attention
            from nemo_cosmos.models.fp8 import apply_fp8, enable_fp8_attention

            apply_fp8(ours, attention=False)  # FP8 projections, bf16 attention
            y_8, res["ours_fp8_s"], res["ours_fp8_activation_peak_gib"] = timed(run_ours, runs)
            res["ours_fp8_weights_gib"] = weights_gib(ours) + sum(
                b.numel() * b.element_size() for b in ours.buffers()) / 2**30
            res["reldiff_ours_fp8_vs_bf16"] = rel(y_8, y_ours)
            res["reldiff_ours_fp8_vs_diffusers"] = rel(y_8, y_theirs)
            reason = fp8_attention.unavailable_reason()
            if reason is None:  # and self-attention through cuDNN's FP8 kernel too (what --fp8 does)
                enable_fp8_attention(ours)
                y_a, res["ours_fp8_attention_s"], res["ours_fp8_attention_activation_peak_gib"] = timed(run_ours, runs)
                res["reldiff_ours_fp8_attention_vs_bf16"] = rel(y_a, y_ours)
                res["reldiff_ours_fp8_attention_vs_diffusers"] = rel(y_a, y_theirs)
                # the same with the matmuls accumulating in float32 (FP8Linear(fast_accum=False))
                set_fast_accum(ours, False)
                y_f, res["ours_fp8_attention_fp32_accum_s"], _ = timed(run_ours, runs)
                res["reldiff_ours_fp8_attention_fp32_accum_vs_bf16"] = rel(y_f, y_ours)
                set_fast_accum(ours, True)
            else:
                res["fp8_attention_unavailable"] = reason
            if not fp32_check:
                res["speedup_eager"] = res["diffusers_s"] / res["ours_s"]
                return res

        if not fp32_check:
            res["speedup_eager"] = res["diffusers_s"] / res["ours_s"]
            return res
        # Error of each bf16 forward against float32, on a quarter-size latent (16 x 44 x 80).
        small = x[..., :44, :80].contiguous()
        y_s_theirs, y_s_ours = run_theirs(small).float(), run_ours(small).float()
        # diffusers' copy goes first: a float32 14B model alone takes 53 GiB
        del theirs
        torch.cuda.empty_cache()
        torch.backends.cuda.matmul.allow_tf32 = False
        ours.float()
        y_ref = ours(small.float(), c_noise, text.float(), fps=24, **{k: v.float() for k, v in cond(small).items()})
        res["quarter_err_diffusers_bf16_vs_fp32"] = rel(y_s_theirs, y_ref)
        res["quarter_err_ours_bf16_vs_fp32"] = rel(y_s_ours, y_ref)
        del y_ref

    res["speedup_eager"] = res["diffusers_s"] / res["ours_s"]
    del ours
    torch.cuda.empty_cache()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="+", default=["7B"], choices=sorted(PRESETS))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time per-layer torch.compile of both")
    ap.add_argument("--attention", nargs="*", default=[], choices=["flash", "cudnn"],
                    help="also time ours (compiled) with these SDPA kernels")
    ap.add_argument("--fp8", action="store_true",
                    help="also time ours with FP8 projections, then with cuDNN FP8 self-attention too (after the bf16 runs)")
    ap.add_argument("--no_fp32_check", action="store_true", help="skip the float32 reference forward")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}", flush=True)
    if args.attention:
        print("SDPA alone, 7B shape:", json.dumps(attention_tflops(args.attention)), flush=True)
    results = []
    for name in args.model:
        r = bench(name, args.runs, args.compile, args.attention, args.fp8, not args.no_fp32_check)
        results.append(r)
        print(json.dumps(r, indent=1), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    for r in results:
        line = f"{r['model']}: diffusers {r['diffusers_s']:.3f} s, ours {r['ours_s']:.3f} s, ratio {r['speedup_eager']:.3f}x"
        if "ours_compiled_s" in r:
            line += (
                f"; compiled: diffusers {r['diffusers_compiled_s']:.3f} s, ours {r['ours_compiled_s']:.3f} s, "
                f"ratio {r['diffusers_compiled_s'] / r['ours_compiled_s']:.3f}x"
            )
            best = r.get("best_attention_backend", "auto")
            t = r["ours_compiled_s" if best == "auto" else f"ours_compiled_{best}_s"]
            line += f"; ours compiled with {best} attention {t:.3f} s: {r['diffusers_compiled_s'] / t:.3f}x compiled diffusers, {r['diffusers_s'] / t:.3f}x eager diffusers"
        peer = "compiled" if "diffusers_compiled_s" in r else "eager"
        peer_s = r.get("diffusers_compiled_s", r["diffusers_s"])
        if "ours_fp8_s" in r:
            line += f"; ours FP8 projections {r['ours_fp8_s']:.3f} s ({peer_s / r['ours_fp8_s']:.3f}x {peer} diffusers)"
        if "ours_fp8_attention_s" in r:
            line += (f"; ours FP8 projections + cuDNN FP8 attention {r['ours_fp8_attention_s']:.3f} s "
                     f"({peer_s / r['ours_fp8_attention_s']:.3f}x {peer} diffusers; "
                     f"{r['ours_fp8_attention_fp32_accum_s']:.3f} s with float32 accumulation)")
        elif "fp8_attention_unavailable" in r:
            line += f"; no FP8 attention: {r['fp8_attention_unavailable']}"
        print(line)


if __name__ == "__main__":
    main()
