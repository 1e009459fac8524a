"""The full Text2World pipeline at 121 x 704 x 1280 on one GPU, stage by stage, with peak memory.

    python benchmarks/pipeline.py [--steps 2] [--offload both|none ...]
    python benchmarks/pipeline.py --variants [--steps 2]
    python benchmarks/pipeline.py --video2world [--steps 35] [--fp8] [--compile]

Random weights at the published sizes (T5-11B encoder in float32, the 7B DiT and the CV8x8x8
tokenizer in bf16): the published weights cannot be downloaded here, and time and memory do not
depend on the values. Sampling runs --steps steps (each: two DiT forwards, guidance on); the
35-step time is projected from the per-step time.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch

warnings.filterwarnings("ignore")

from common import fill_random_  # noqa: E402
from nemo_cosmos.models import CosmosDiT, cosmos_7b_config, cosmos_7b_video2world_config  # noqa: E402
from nemo_cosmos.pipeline import Text2WorldPipeline, Video2WorldPipeline  # noqa: E402
from nemo_cosmos.text import T5TextEncoder  # noqa: E402
from nemo_cosmos.tokenizer import CV8x8x8Tokenizer, TokenizerConfig  # noqa: E402


def on_gpu_then(model: torch.nn.Module, dtype, device: str) -> torch.nn.Module:
    model = fill_random_(model.to_empty(device="cuda").to(dtype))
    return model.to(device)


def t5_11b(device: str) -> T5TextEncoder:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    words = "a robot arm picks up red cubes in a bright warehouse and the camera follows it slowly".split()
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(dict.fromkeys(words))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    cfg = T5Config(vocab_size=32128, d_model=1024, d_kv=128, d_ff=65536, num_layers=24, num_heads=128)
    with torch.device("meta"):
        enc = T5EncoderModel(cfg)
    return T5TextEncoder(fast, on_gpu_then(enc, torch.float32, device))


def run(offload: bool, steps: int) -> dict:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with torch.device("meta"):
        dit = CosmosDiT(cosmos_7b_config())
        tok = CV8x8x8Tokenizer(TokenizerConfig())
    dit = on_gpu_then(dit, torch.bfloat16, "cuda")
    tok = on_gpu_then(tok, torch.bfloat16, "cpu" if offload else "cuda")
    tok.latent_std.fill_(1.0)
    tok.latent_mean.zero_()
    t5 = t5_11b("cpu" if offload else "cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    pipe = Text2WorldPipeline(dit, tok, t5, device="cuda", offload_text_encoder=offload, offload_tokenizer=offload,
                              guardrails=False)
    t0 = time.perf_counter()
    out = pipe("a robot arm picks up red cubes in a bright warehouse", num_steps=steps, progress=False)[0]
    torch.cuda.synchronize()
    res = {
        "offload": offload,
        "steps": steps,
        "frames_shape": list(out.frames.shape),
        **out.timings,
        "total_s": time.perf_counter() - t0,
        "peak_gib": (torch.cuda.max_memory_allocated() - base) / 2**30,
        "per_step_s": out.timings["sampling_s"] / out.timings["x0_evaluations"],
    }
    res["projected_35_step_total_s"] = (
        res["text_encoding_s"] + res["per_step_s"] * 36 + res["decoding_s"]
    )
    del pipe, dit, tok, t5, out
    torch.cuda.empty_cache()
    return res


def models_on_gpu(dit_config):
    """The DiT (bf16), the tokenizer (bf16, identity latent statistics) and T5-11B, random, on the GPU."""
    with torch.device("meta"):
        dit = CosmosDiT(dit_config)
        tok = CV8x8x8Tokenizer(TokenizerConfig())
    dit = on_gpu_then(dit, torch.bfloat16, "cuda")
    tok = on_gpu_then(tok, torch.bfloat16, "cuda")
    tok.latent_std.fill_(1.0)
    tok.latent_mean.zero_()
    return dit, tok, t5_11b("cuda")


def psnr(a, b) -> float:
    mse = ((a.astype("float64") - b.astype("float64")) ** 2).mean()
    return float("inf") if mse == 0 else float(10 * __import__("math").log10(255.0**2 / mse))


def variants(steps: int) -> dict:
    """One set of models, several ways to run them (same prompt and seed): compiled bf16, batched
    guidance, FP8 (PSNR of its frames against the bf16 ones), then T5 and tokenizer offloaded."""
    from nemo_cosmos.models.fp8 import apply_fp8

    dit, tok, t5 = models_on_gpu(cosmos_7b_config())
    for layer in dit.layers:
        layer.compile()
    pipe = Text2WorldPipeline(dit, tok, t5, device="cuda", guardrails=False)
    prompt = "a robot arm picks up red cubes in a bright warehouse"
    res = {}

    def timed_call(name):
        pipe(prompt, num_steps=1, progress=False)  # warm-up: compilation for this variant
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        out = pipe(prompt, num_steps=steps, progress=False)[0]
        res[name] = {"per_x0_evaluation_s": out.timings["sampling_s"] / out.timings["x0_evaluations"], **out.timings,
                     "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
        print(name, json.dumps(res[name]), flush=True)
        return out

    bf16 = timed_call("bf16_compiled")
    pipe.batch_guidance = True
    batched = timed_call("bf16_compiled_batched_guidance")
    res["batched_vs_two_passes_latent_reldiff"] = ((batched.latent - bf16.latent).norm() / bf16.latent.norm()).item()
    pipe.batch_guidance = False
    apply_fp8(dit)
    fp8 = timed_call("fp8_compiled")
    res["fp8_latent_reldiff"] = ((fp8.latent - bf16.latent).norm() / bf16.latent.norm()).item()
    res["fp8_frames_psnr_db"] = psnr(fp8.frames, bf16.frames)
    res["fp8_speedup_per_step"] = res["bf16_compiled"]["per_x0_evaluation_s"] / res["fp8_compiled"]["per_x0_evaluation_s"]
    print("fp8 vs bf16:", {k: res[k] for k in ("fp8_latent_reldiff", "fp8_frames_psnr_db", "fp8_speedup_per_step")}, flush=True)

    resident = t5.encode([prompt])
    t5.to("cpu")
    tok.to("cpu")
    torch.cuda.empty_cache()
    res["t5_streamed_vs_resident_max_abs_diff"] = (t5.encode([prompt], device="cuda").cpu() - resident.cpu()).abs().max().item()
    pipe = Text2WorldPipeline(dit, tok, t5, device="cuda", offload_text_encoder=True, offload_tokenizer=True,
                              guardrails=False)
    timed_call("fp8_compiled_offloaded")
    return res


def video2world(steps: int, fp8: bool, compile_: bool) -> dict:
    """One whole 7B Video2World generation (9 input frames of a 720 x 1280 clip, resized to
    704 x 1280; NVIDIA's negative prompt, so two DiT passes per x0 evaluation), stage by stage."""
    import numpy as np

    dit, tok, t5 = models_on_gpu(cosmos_7b_video2world_config())
    pipe = Video2WorldPipeline(dit, tok, t5, device="cuda", guardrails=False, fp8=fp8, compile=compile_)
    yy, xx = np.mgrid[0:720, 0:1280]
    clip = np.stack([np.stack([(xx + 8 * t) % 256, yy % 256, (xx + yy) % 256], -1) for t in range(12)]).astype(np.uint8)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = pipe("a robot arm picks up red cubes in a bright warehouse", video=clip, num_input_frames=9,
               num_steps=steps, progress=False)[0]
    torch.cuda.synchronize()
    res = {"model": "7B-Video2World", "fp8": fp8, "compile": compile_, "steps": steps,
           "frames_shape": list(out.frames.shape), **out.timings, "total_s": time.perf_counter() - t0,
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
           "per_x0_evaluation_s": out.timings["sampling_s"] / out.timings["x0_evaluations"]}
    res["projected_35_step_total_s"] = res["total_s"] - res["sampling_s"] + res["per_x0_evaluation_s"] * 36
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--offload", nargs="+", default=["none", "both"], choices=["none", "both"])
    ap.add_argument("--variants", action="store_true",
                    help="instead: compiled bf16, batched guidance, FP8 (+ PSNR), offloaded, on one set of models")
    ap.add_argument("--video2world", action="store_true", help="instead: one whole 7B Video2World generation")
    ap.add_argument("--fp8", action="store_true", help="with --video2world")
    ap.add_argument("--compile", action="store_true", help="with --video2world")
    ap.add_argument("--json")
    args = ap.parse_args()
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}", flush=True)
    if args.video2world:
        res = video2world(args.steps, args.fp8, args.compile)
        print(json.dumps(res), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=1)
        return
    if args.variants:
        res = variants(args.steps)
        print(json.dumps(res, indent=1))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=1)
        return
    results = [run(mode == "both", args.steps) for mode in args.offload]
    for r in results:
        print(json.dumps(r), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    for r in results:
        print(
            f"offload={'T5+tokenizer' if r['offload'] else 'none'}: peak {r['peak_gib']:.1f} GiB; text {r['text_encoding_s']:.1f} s, "
            f"{r['per_step_s']:.2f} s per x0 evaluation (2 DiT forwards), decode {r['decoding_s']:.1f} s; "
            f"35-step video projected {r['projected_35_step_total_s']:.0f} s"
        )


if __name__ == "__main__":
    main()
