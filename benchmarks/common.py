"""Shared by the benchmark scripts (run as `python benchmarks/<name>.py`, so this folder is on sys.path)."""

import statistics
import time

import torch


def fill_random_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights on the GPU at a sane scale: norm scales near 1, others ~ N(0, 0.25 / fan_in)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g, device="cuda"))
            else:
                p.copy_(torch.randn(p.shape, generator=g, device="cuda") * (0.5 / p[0].numel() ** 0.5))
    return model


def timed(fn, runs):
    """Median seconds, and the peak memory the calls allocate beyond what was held before them
    (both models' weights share the GPU here, so whole-process peaks would mix them up). Without a
    GPU (the scripts' CPU smoke runs) the peak is None."""
    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    fn()  # warm-up (and compilation)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        held = torch.cuda.memory_allocated()
    times, out = [], None
    for _ in range(runs):
        out = None  # the previous call's output is not part of the next call's peak
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() - held) / 2**30 if cuda else None
    return out, statistics.median(times), peak
