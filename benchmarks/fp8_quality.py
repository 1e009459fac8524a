"""FP8's quality cost on trained weights: the shipped demo models (cosmos-demo, cosmos-demo-video2world)
in bf16 and in FP8, same prompts and seeds, side by side (GPU, compute capability 8.9+).

    python benchmarks/fp8_quality.py [--seeds 1] [--json out.json]   # about 6 minutes on an H200 at --seeds 1

For each model and precision: the detector's accuracy over every caption and seed (Video2World: the
continuation of held-out clips, 1 and 9 input frames, and how far the object is from the true
clip's); against bf16: the frames' PSNR and the final latents' relative difference. FP8 is measured
twice: projections only (one power-of-two scale per row of activations and of weights), and
projections plus cuDNN's FP8 self-attention (one scale per tensor for q, k and v: cuDNN builds no
per-head descale plan on Hopper). Random weights hide FP8's error (random attention is near uniform);
these weights attend sharply.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from nemo_cosmos import Text2WorldPipeline, Video2WorldPipeline
from nemo_cosmos.demo.train import accuracy
from nemo_cosmos.demo.world import all_captions, analyse, caption, continuation_error, render
from nemo_cosmos.models.fp8 import apply_fp8


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def jobs(video2world: bool, seeds: int):
    """(prompt, call kwargs, truth clip or None, input frames) for every caption and seed."""
    out = []
    for seed in range(seeds):
        for i, want in enumerate(all_captions()):
            if not video2world:
                out.append((want, dict(seed=1000 * seed + i), None, 0))
                continue
            truth = render(*want, np.random.default_rng(900_000 + 1000 * seed + i))
            for n in (1, 9):
                out.append((want, dict(seed=1000 * seed + i, video=truth[:n], num_input_frames=n), truth, n))
    return out


def run(pipe, work) -> list:
    results = []
    for want, kw, truth, n in work:
        g = pipe(caption(*want), progress=False, **kw)[0]
        results.append((g.frames, g.latent))
    return results


def score(work, results) -> dict:
    out = {}
    for n in sorted({j[3] for j in work}):
        picked = [(j, r) for j, r in zip(work, results) if j[3] == n]
        pairs = [(analyse(frames[n:]), j[0]) for j, (frames, _) in picked]
        key = f"{n}_input_frames" if n else "text2world"
        out[key] = accuracy(pairs)
        if n:
            errors = np.array([continuation_error(frames, j[2], n) for j, (frames, _) in picked])
            out[key]["mean_centroid_error_px"] = float(np.mean(np.minimum(errors, 64.0)))
    return out


def compare(base, other) -> dict:
    p = [psnr(a[0], b[0]) for a, b in zip(base, other)]
    rel = [((a[1] - b[1]).norm() / b[1].norm()).item() for a, b in zip(other, base)]
    finite = [x for x in p if math.isfinite(x)]
    return {"frames_psnr_db_mean": float(np.mean(finite)) if finite else float("inf"),
            "frames_psnr_db_min": float(min(p)), "identical_videos": sum(not math.isfinite(x) for x in p),
            "latent_reldiff_mean": float(np.mean(rel)), "latent_reldiff_max": float(max(rel))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args()
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}", flush=True)
    report = {}
    for name, cls in (("cosmos-demo", Text2WorldPipeline), ("cosmos-demo-video2world", Video2WorldPipeline)):
        work = jobs(cls is Video2WorldPipeline, args.seeds)
        rows, outputs = {}, {}
        for variant in ("bf16", "fp8_projections", "fp8_projections_and_attention"):
            pipe = cls.from_pretrained(name, device="cuda", dtype=torch.bfloat16)
            if variant != "bf16":
                apply_fp8(pipe.dit, attention=variant.endswith("attention"))
            attention_backends = sorted({getattr(m, "backend", "") for m in pipe.dit.modules()
                                         if type(m).__name__ == "SDPAttention"})
            outputs[variant] = run(pipe, work)
            rows[variant] = {"accuracy": score(work, outputs[variant]), "self_attention_backends": attention_backends}
            if variant != "bf16":
                rows[variant]["vs_bf16"] = compare(outputs["bf16"], outputs[variant])
            print(name, variant, json.dumps(rows[variant]), flush=True)
            report[name] = {"videos": len(work), **rows}
            if args.json:  # after every row: a run cut short keeps what it measured
                with open(args.json, "w") as f:
                    json.dump(report, f, indent=1)
            del pipe
            torch.cuda.empty_cache()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
