"""Every run-time transform of the DiT, applied in one place and in one order (as torchtitan's
``parallelize_*`` functions do):

1. FP8: the projections become FP8 matmuls and self-attention an FP8 kernel (inference only; needs
   the weights on the GPU, because they are quantised once, there);
2. context parallelism: each rank keeps its share of the tokens, self-attention is wrapped in the
   all-to-all exchange (it wraps whatever attention kernel step 1 chose);
3. activation checkpointing: each layer is recomputed in the backward pass (training);
4. compilation: each layer is compiled on its own (regional compilation: one graph, reused by all
   layers of the same shape), last, so that it sees the modules the steps above put in place.

Sharding the parameters for training (FSDP) comes after all of these, in the training strategy.
"""

from __future__ import annotations

from typing import Optional

from torch import nn
from torch.utils.checkpoint import checkpoint


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each transformer layer in the backward pass instead of keeping its activations
    (Megatron's "full" recompute). The layers keep their names: checkpoints are unchanged."""
    for layer in model.layers:
        forward = layer.forward
        layer.forward = lambda *args, _f=forward: checkpoint(_f, *args, use_reentrant=False)


def apply_compile(model: nn.Module) -> None:
    for layer in model.layers:
        layer.compile()


def parallelize_dit(model: nn.Module, *, fp8: bool = False, cp_group=None, activation_checkpointing: bool = False,
                    compile: bool = False) -> nn.Module:
    """Apply the transforms asked for, in the order of the module docstring; returns `model`."""
    if fp8:
        from ..models.fp8 import apply_fp8

        apply_fp8(model)
    if cp_group is not None:
        from .context_parallel import apply_context_parallel

        apply_context_parallel(model, cp_group)
    if activation_checkpointing:
        apply_activation_checkpointing(model)
    if compile:
        apply_compile(model)
    return model


def is_main(group: Optional[object] = None) -> bool:
    """Whether this process is the first of `group` (of the whole job when None, or when no process
    group is running): the one that encodes text, decodes and writes."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return True
    return dist.get_rank(group) == 0 if group is not None else dist.get_rank() == 0
