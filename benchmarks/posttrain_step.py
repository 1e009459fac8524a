"""One post-training step of the 7B at the full 121x704x1280 shape, through the library's own
post-training path (recipes, Lightning, per-layer recomputation), on one GPU:

    python benchmarks/posttrain_step.py            # every case below, each in its own process
    python benchmarks/posttrain_step.py --tiny     # the same on the CPU with a tiny model (a smoke run)

cases:
  bare     one forward + backward of the bare DiT (bf16 weights, all of them trained, recomputed per
           layer): what a step costs before any training machinery
  lora     the cosmos_diffusion_7b_text2world_lora recipe: bf16 base frozen, rank-16 adapters
  offload  full fine-tuning with FSDP2 on one GPU, weights, gradients and AdamW state in CPU memory

Random weights and one synthetic sample (the time does not depend on the values). Peak memory is
torch's allocator peak over the timed steps; the first step is a warm-up. The 8-GPU FSDP2 figure is
derived from these measurements: 16 bytes of sharded state per parameter / 8, the gathered layers,
and the activations the LoRA step measured beyond its weights.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

GiB = 2**30
T, H, W = 16, 88, 160  # the latent of 121 x 704 x 1280


def _dataset(folder: str, latent_shape, text_dim: int) -> None:
    from nemo_cosmos.training.data import write_sample

    g = torch.Generator().manual_seed(0)
    write_sample(os.path.join(folder, "0"), torch.randn(latent_shape, generator=g),
                 torch.randn(512, text_dim, generator=g), {"fps": 24.0, "prompt": "synthetic"})


class _StepTimer:
    def __init__(self):
        import lightning.pytorch as pl

        timer = self

        class Callback(pl.Callback):
            def on_train_batch_start(self, trainer, *_):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                timer.t0 = time.perf_counter()

            def on_train_batch_end(self, trainer, *_):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                timer.times.append(time.perf_counter() - timer.t0)
                if len(timer.times) == 1 and torch.cuda.is_available():  # peaks of the timed steps only
                    torch.cuda.reset_peak_memory_stats()

        self.times, self.t0, self.callback = [], 0.0, Callback()


def run_training(recipe: str, overrides, steps: int, tiny: bool) -> dict:
    from nemo_cosmos.models import tiny_config
    from nemo_cosmos.models.config import cosmos_7b_config
    from nemo_cosmos.training import build, recipe as make_recipe
    from nemo_cosmos.training.preflight import parameter_count

    config = tiny_config() if tiny else cosmos_7b_config()
    with tempfile.TemporaryDirectory() as tmp:
        _dataset(tmp, (16, 2, 4, 6) if tiny else (16, T, H, W), config.crossattn_dim)
        extra = ["model.init_from=none"]
        if tiny:  # a tiny model of our own to start from (a tiny config is no published model)
            from nemo_cosmos.checkpoint import save_dit_safetensors
            from nemo_cosmos.models import CosmosDiT

            save_dit_safetensors(CosmosDiT(config).state_dict(), config, f"{tmp}/tiny.safetensors")
            extra = ["model.name=''", f"model.init_from={tmp}/tiny.safetensors"]
        cfg = make_recipe(recipe, [f"data.path={tmp}", f"log.log_dir={tmp}/runs", f"trainer.max_steps={steps}",
                                   "trainer.checkpoint_every_n_steps=1000000", "data.num_workers=0", *extra,
                                   *(["trainer.accelerator=cpu", "trainer.precision=32"] if tiny else []), *overrides])
        t0 = time.perf_counter()
        trainer, module, datamodule, _ = build(cfg)
        timer = _StepTimer()
        trainer.callbacks.append(timer.callback)
        trainer.fit(module, datamodule=datamodule)
        total = time.perf_counter() - t0
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {
        "step_s": statistics.median(timer.times[1:]), "steps_s": timer.times,
        "peak_gib": torch.cuda.max_memory_allocated() / GiB if torch.cuda.is_available() else None,
        "host_peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GiB,
        "parameters": parameter_count(config), "trainable": trainable, "wall_s": total,
    }


def run_bare(steps: int, tiny: bool) -> dict:
    """Forward + backward of the bare DiT, the same recomputation, every weight trained (bf16)."""
    from nemo_cosmos.diffusion import edm_loss
    from nemo_cosmos.models import CosmosDiT, tiny_config
    from nemo_cosmos.models.config import cosmos_7b_config
    from nemo_cosmos.parallel import apply_activation_checkpointing

    device = "cpu" if tiny else "cuda"
    config = tiny_config() if tiny else cosmos_7b_config()
    with torch.device(device):
        dit = CosmosDiT(config)
    apply_activation_checkpointing(dit)
    g = torch.Generator(device).manual_seed(0)
    x0 = torch.randn(1, 16, *((2, 4, 6) if tiny else (T, H, W)), generator=g, device=device)
    text = torch.randn(1, 512, config.crossattn_dim, generator=g, device=device)
    noise = torch.randn(x0.shape, generator=g, device=device)
    times = []
    for i in range(steps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):  # as bf16-mixed training
            loss = edm_loss(dit, x0, text, torch.tensor([1.0], device=device), noise, fps=24.0)
        loss.backward()
        dit.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if i == 0 and device == "cuda":
            torch.cuda.reset_peak_memory_stats()
    return {"step_s": statistics.median(times[1:]), "steps_s": times,
            "peak_gib": torch.cuda.max_memory_allocated() / GiB if device == "cuda" else None}


CASES = {
    "bare": lambda steps, tiny: run_bare(steps, tiny),
    "lora": lambda steps, tiny: run_training("cosmos_diffusion_7b_text2world_lora", [], steps, tiny),
    "offload": lambda steps, tiny: run_training("cosmos_diffusion_7b_text2world_finetune",
                                                ["trainer.strategy=fsdp", "model.cpu_offload=true"], steps, tiny),
}


def derived_fsdp8(results: dict) -> dict:
    """Per-GPU memory of 8-way FSDP2 at this shape, from the measured parts (see the docstring)."""
    from nemo_cosmos.models.config import cosmos_7b_config

    lora = results["lora"]
    p, layers = lora["parameters"], cosmos_7b_config().num_layers
    activations = lora["peak_gib"] * GiB - 2 * p - 16 * lora["trainable"]
    sharded = 16 * p / 8
    gathered = 3 * 2 * p / layers + 4 * p / layers  # three bf16 layers, one layer's float32 gradients
    return {"sharded_state_gib": sharded / GiB, "gathered_layers_gib": gathered / GiB,
            "activations_gib": activations / GiB, "per_gpu_gib": (sharded + gathered + activations) / GiB}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", choices=list(CASES), help="one case in this process")
    p.add_argument("--cases", default=",".join(CASES), help="the cases to run, one process each")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--tiny", action="store_true", help="a tiny model on the CPU: checks the script runs")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    if args.case:
        print("RESULT " + json.dumps(CASES[args.case](args.steps, args.tiny)), flush=True)
        return
    results = {}
    for case in args.cases.split(","):
        cmd = [sys.executable, __file__, "--case", case, "--steps", str(args.steps)] + (["--tiny"] if args.tiny else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        results[case] = json.loads(line[7:]) if line else {"failed": proc.returncode, "stderr": proc.stderr[-1500:]}
        print(case, json.dumps(results[case]), flush=True)
    if not args.tiny and "peak_gib" in results.get("lora", {}):
        results["fsdp8_derived"] = derived_fsdp8(results)
        if "step_s" in results.get("bare", {}):
            results["lora_over_bare"] = results["lora"]["step_s"] / results["bare"]["step_s"]
    print(json.dumps({k: v for k, v in results.items() if k not in CASES}, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
