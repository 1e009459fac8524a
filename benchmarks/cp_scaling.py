"""Context-parallel scaling of one denoising step (guidance on: two DiT forwards) at the full
Text2World shape (121 x 704 x 1280 -> 56,320 tokens), random weights.

    torchrun --nproc_per_node=8 benchmarks/cp_scaling.py --model 7B [--sizes 1 2 4 8] [--runs 3]

For each context-parallel size N (up to the number of processes), the first N ranks run the step
together while the others wait; rank 0 prints the median step time and the scaling efficiency
t(1) / (N * t(N)). On one GPU it measures N = 1 only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import torch
import torch.distributed as dist

warnings.filterwarnings("ignore")

from common import fill_random_  # noqa: E402
from nemo_cosmos.models import CosmosDiT, cosmos_7b_config, cosmos_14b_config  # noqa: E402
from nemo_cosmos.parallel import apply_context_parallel  # noqa: E402

CONFIGS = {"7B": cosmos_7b_config, "14B": cosmos_14b_config}


def step_time(model, runs: int) -> float:
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(1, 16, 16, 88, 160, device="cuda", dtype=torch.bfloat16, generator=g)
    text = torch.randn(1, 512, 1024, device="cuda", dtype=torch.bfloat16, generator=g)
    t = torch.full((1,), 0.5, device="cuda")

    def step():
        with torch.no_grad():
            model(x, t, text, fps=24.0)  # conditional
            model(x, t, text, fps=24.0)  # unconditional: same cost

    step()
    times = []
    for _ in range(runs):
        torch.cuda.synchronize()
        dist.barrier()
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="7B", choices=list(CONFIGS))
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()

    if "MASTER_ADDR" not in os.environ:  # plain `python`: a job of one
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29511", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    sizes = [n for n in args.sizes if n <= world]
    results = {}
    for n in sizes:
        group = dist.new_group(list(range(n)))  # collective: every rank creates every group
        if rank < n:
            with torch.device("meta"):
                model = CosmosDiT(CONFIGS[args.model]())
            model = fill_random_(model.to_empty(device="cuda")).eval()
            apply_context_parallel(model, group)
            results[n] = step_time(model, args.runs)
            del model
            torch.cuda.empty_cache()
        dist.barrier()
    if rank == 0:
        print(f"{args.model} one denoising step (2 forwards), {torch.cuda.get_device_name()}:")
        for n, t in results.items():
            print(f"  CP={n}: {t:.3f} s/step, efficiency {results[1] / (n * t):.2f}" if 1 in results else f"  CP={n}: {t:.3f} s")
        if len(results) == 1:
            print("only one GPU: scaling not measured")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
