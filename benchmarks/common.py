"""Shared by the benchmark scripts (run as `python benchmarks/<name>.py`, so this folder is on sys.path)."""

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
