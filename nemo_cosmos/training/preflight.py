"""Before any model is built: will this post-training run fit? An estimate of the memory each
process needs for the chosen strategy, against what its device has; a run that cannot fit is
refused in one line that names the setups that would.

The estimate counts bytes per parameter (P parameters, counted on the meta device) and per token
of activations:
* ddp: float32 weights, gradients and two AdamW moments (16 P), plus the bf16 copies autocast
  makes of the weights (2 P);
* fsdp: the same 16 P split over the processes (none of it on the GPU with model.cpu_offload), plus
  the layers being gathered in bf16 (this one, the next one prefetched, the last one kept for the
  backward pass) and their float32 gradients before the reduce-scatter;
* lora: the frozen base (2 P in bf16) and the adapters with their gradients and moments;
* activations: with per-layer recomputation, each layer's input (hidden size x tokens, bf16) plus
  one layer's working set during its recomputation and backward pass (ACT_WORKING bytes per token
  per hidden unit, measured on an H200: docs/post_training.md); without it, every layer's working set.
Tokens are one sample's latent tokens divided by the context-parallel size, times the micro-batch.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import List, Optional

import torch

from ..errors import BadInputError

GiB = 2**30
ACT_WORKING = 116
"""Bytes per token per hidden unit of one layer's recomputation + backward working set in bf16:
what the 7B's LoRA step at 121x704x1280 (56,320 tokens, width 4096) held on an H200 beyond its
weights and its offloaded layer inputs, 24.9 GiB (benchmarks/posttrain_step.py)."""
HEADROOM = 0.92
"""Share of the device memory a run may plan to use: the rest goes to the allocator's fragmentation,
CUDA's own context and kernels' scratch space."""


@dataclass
class Estimate:
    weights: float
    """Bytes per process of weights, gradients and optimizer state on the device."""
    activations: float
    total: float
    setup: str

    def describe(self) -> str:
        return (f"{self.setup}: about {self.total / GiB:.0f} GiB per process ({self.weights / GiB:.0f} GiB weights, "
                f"gradients and optimizer state, {self.activations / GiB:.0f} GiB activations)")


def parameter_count(config) -> int:
    from ..models import CosmosDiT

    with torch.device("meta"):
        return sum(p.numel() for p in CosmosDiT(config).parameters())


def lora_parameter_count(config, rank: int, targets) -> int:
    """Adapter parameters: rank x (in + out) for every targeted projection of every layer."""
    d, f, c = config.hidden_size, config.ffn_hidden_size, config.crossattn_dim
    per_layer = {"linear_qkv": d + 3 * d, "linear_proj": 2 * (d + d), "linear_q": d + d, "linear_kv": c + 2 * d,
                 "linear_fc1": d + f, "linear_fc2": f + d}
    return config.num_layers * rank * sum(per_layer.get(t, 0) for t in targets)


def estimate(config, *, strategy: str, processes: int, tokens: int, micro_batch: int = 1, cp_size: int = 1,
             activation_checkpointing: bool = True, activation_offload: bool = False, cpu_offload: bool = False, lora_rank: Optional[int] = None,
             lora_targets=(), bf16: bool = True) -> Estimate:
    p = parameter_count(config)
    d, layers = config.hidden_size, config.num_layers
    act_bytes = 2 if bf16 else 4
    local_tokens = micro_batch * math.ceil(tokens / cp_size)
    layer_params = p / layers
    if lora_rank is not None:
        a = lora_parameter_count(config, lora_rank, lora_targets)
        weights = act_bytes * p + 16 * a
        setup = f"LoRA rank {lora_rank}"
    elif strategy == "fsdp":
        sharded = 0 if cpu_offload else 16 * p / processes
        weights = sharded + 3 * act_bytes * layer_params + 4 * layer_params
        setup = f"fsdp over {processes} process(es)" + (" with model.cpu_offload" if cpu_offload else "")
    else:
        weights = 16 * p + (act_bytes * p if bf16 else 0)
        setup = "ddp"
    if cp_size > 1:
        setup += f", context parallel {cp_size}"
    working = ACT_WORKING * local_tokens * d * act_bytes / 2
    # each layer's input, kept for its recomputation (in CPU memory with activation_offload: a
    # couple in flight)
    saved = (2 if activation_offload else layers) * local_tokens * d * act_bytes
    activations = saved + working if activation_checkpointing else layers * working
    return Estimate(weights, activations, weights + activations, setup)


def device_memory(accelerator: str) -> tuple:
    """(bytes, what, on a GPU) of the memory one process may use: its GPU's, or the RAM on a CPU run."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        return props.total_memory, f"the {props.name}'s {props.total_memory / GiB:.0f} GiB", True
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return ram, f"this machine's {ram / GiB:.0f} GiB of RAM (no GPU)", False


REFERENCE_GPU = 80 * 10**9
"""What the suggestions assume on a machine without a GPU: an 80 GB card."""


def check_fits(cfg, config, tokens: int, processes: int) -> Estimate:
    """The estimate for `cfg`'s run; BadInputError, naming setups that fit, when it does not."""
    available, what, gpu = device_memory(cfg.trainer.accelerator)
    common = dict(tokens=tokens, micro_batch=cfg.data.micro_batch_size, bf16=cfg.trainer.precision.startswith("bf16"))
    mine = estimate(config, strategy=cfg.trainer.strategy, processes=processes, cp_size=cfg.trainer.context_parallel_size,
                    activation_checkpointing=cfg.model.activation_checkpointing,
                    activation_offload=cfg.model.activation_offload, cpu_offload=cfg.model.cpu_offload,
                    lora_rank=cfg.lora.rank if cfg.lora.enabled else None, lora_targets=cfg.lora.target_modules,
                    **common)
    if cfg.model.cpu_offload:  # the offloaded float32 state of all the machine's processes is in its RAM
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        host = 16 * parameter_count(config)
        if host > HEADROOM * ram:
            raise BadInputError(f"this run does not fit: model.cpu_offload keeps about {host / GiB:.0f} GiB of weights, "
                                f"gradients and optimizer state in RAM; this machine has {ram / GiB:.0f} GiB")
    if mine.total <= HEADROOM * available:
        return mine
    budget = HEADROOM * (available if gpu else REFERENCE_GPU)
    alternatives: List[str] = []
    for n in sorted({processes, 8}):
        cp = next((cp for cp in (1, 2, 4, 8) if cp <= n and n % cp == 0 and estimate(
            config, strategy="fsdp", processes=n, cp_size=cp, **common).total <= budget), None)
        if cp is not None:
            alternatives.append(f"trainer.strategy=fsdp trainer.context_parallel_size={cp} on {n} GPU(s)")
            break
    if estimate(config, strategy="fsdp", processes=processes, cpu_offload=True, **common).total <= budget:
        alternatives.append(f"trainer.strategy=fsdp model.cpu_offload=true on {processes} GPU(s) (slower)")
    if not cfg.lora.enabled and estimate(config, strategy="ddp", processes=processes, lora_rank=cfg.lora.rank,
                                         lora_targets=cfg.lora.target_modules, activation_offload=True,
                                         **common).total <= budget:
        size = "14b" if "14B" in (cfg.model.name or "") else "7b"
        alternatives.append(f"--recipe cosmos_diffusion_{size}_text2world_lora (LoRA: adapters only)")
    where = "" if gpu else " on 80 GB GPUs"
    hint = f"; would fit{where}: " + " | ".join(alternatives) if alternatives else "; nothing tried fits: use more or larger GPUs"
    raise BadInputError(f"this run does not fit: {mine.describe()}, more than {what}{hint}")
