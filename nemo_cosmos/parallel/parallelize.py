"""Every run-time transform of the DiT, applied in one place and in one order (as torchtitan's
``parallelize_*`` functions do):

1. FP8: the projections become FP8 matmuls and self-attention an FP8 kernel (inference only; needs
   the weights on the GPU, because they are quantised once, there);
2. context parallelism: each rank keeps its share of the tokens, self-attention is wrapped in the
   all-to-all exchange (it wraps whatever attention kernel step 1 chose);
3. activation checkpointing: each layer is recomputed in the backward pass (training), its input
   optionally kept in CPU memory meanwhile;
4. compilation: each layer is compiled on its own (regional compilation: one graph, reused by all
   layers of the same shape), so that it sees the modules the steps above put in place;
5. sharding (training): FSDP2's ``fully_shard`` on each layer, then on the whole model, last, as
   torchtitan does: it wraps the modules as the steps above left them, and each layer's parameters
   are gathered just before it runs (again for its recomputation) and freed after.

Adding LoRA adapters (``models.lora``) changes the model itself and comes before all of these.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def apply_activation_checkpointing(model: nn.Module, offload: bool = False) -> None:
    """Recompute each transformer layer in the backward pass instead of keeping its activations
    (Megatron's "full" recompute). The layers keep their names: checkpoints are unchanged.

    With `offload`, what the forward pass still keeps (each layer's input: 12 GiB for the 7B at
    121x704x1280) waits in pinned CPU memory for the backward pass: torch's ``save_on_cpu`` over the
    forward, with reentrant checkpointing, which saves its inputs through it. Not with FSDP, which
    takes non-reentrant checkpointing only."""
    for layer in model.layers:
        forward = layer.forward
        if offload:
            def run(x, *rest, _f=forward):
                if torch.is_grad_enabled() and not x.requires_grad:
                    # a frozen input (LoRA): reentrant checkpointing needs an input to differentiate
                    x = x.detach().requires_grad_()
                return checkpoint(_f, x, *rest, use_reentrant=True)

            layer.forward = run
        else:
            layer.forward = lambda *args, _f=forward: checkpoint(_f, *args, use_reentrant=False)
    if offload:
        model_forward = model.forward

        def offloaded_forward(*args, **kwargs):
            with torch.autograd.graph.save_on_cpu(pin_memory=torch.cuda.is_available()):
                return model_forward(*args, **kwargs)

        model.forward = offloaded_forward


def apply_compile(model: nn.Module) -> None:
    for layer in model.layers:
        layer.compile()


def fsdp_policies(param_dtype: Optional[torch.dtype] = None, cpu_offload: bool = False) -> dict:
    """fully_shard's keyword arguments: compute in `param_dtype` (None: the stored float32) with
    gradients reduced in float32; with `cpu_offload` the shards (and so the optimizer step) stay in
    CPU memory."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy

    kwargs = {"mp_policy": MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)}
    if cpu_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=torch.cuda.is_available())
    return kwargs


def apply_fsdp(model: nn.Module, mesh, *, param_dtype: Optional[torch.dtype] = None, cpu_offload: bool = False,
               gradient_divide_factor: Optional[float] = None) -> nn.Module:
    """Shard `model` (a CosmosDiT) over `mesh` with FSDP2: one unit per layer, one for the rest.
    `gradient_divide_factor`: what the summed gradients are divided by (default: the mesh size);
    under context parallelism the data-parallel size, since the context-parallel ranks each hold a
    part of one sample's gradient."""
    from torch.distributed.fsdp import fully_shard

    kwargs = fsdp_policies(param_dtype, cpu_offload)
    units = [fully_shard(layer, mesh=mesh, **kwargs) for layer in model.layers]
    # the last layer's parameters are needed again at once by the backward pass: keep them gathered
    units[-1].set_reshard_after_forward(False)
    units.append(fully_shard(model, mesh=mesh, **kwargs))
    if gradient_divide_factor is not None:
        for unit in units:
            set_gradient_divide_factor(unit, gradient_divide_factor, mesh)
    return model


def set_gradient_divide_factor(unit, factor: float, mesh) -> None:
    unit.set_gradient_divide_factor(factor)
    if mesh.device_type == "cpu":  # gloo has no pre-multiplied sum: reduce with a sum, scale apart
        unit.set_force_sum_reduction_for_comms(True)


def parallelize_dit(model: nn.Module, *, fp8: bool = False, cp_group=None, activation_checkpointing: bool = False,
                    activation_offload: bool = False, compile: bool = False, fsdp_mesh=None, fsdp_param_dtype: Optional[torch.dtype] = None,
                    fsdp_cpu_offload: bool = False, gradient_divide_factor: Optional[float] = None) -> nn.Module:
    """Apply the transforms asked for, in the order of the module docstring; returns `model`."""
    if fp8:
        from ..models.fp8 import apply_fp8

        apply_fp8(model)
    if cp_group is not None:
        from .context_parallel import apply_context_parallel

        apply_context_parallel(model, cp_group)
    if activation_checkpointing:
        apply_activation_checkpointing(model, offload=activation_offload)
    if compile:
        apply_compile(model)
    if fsdp_mesh is not None:
        apply_fsdp(model, fsdp_mesh, param_dtype=fsdp_param_dtype, cpu_offload=fsdp_cpu_offload,
                   gradient_divide_factor=gradient_divide_factor)
    return model


def is_main(group: Optional[object] = None) -> bool:
    """Whether this process is the first of `group` (of the whole job when None, or when no process
    group is running): the one that encodes text, decodes and writes."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return True
    return dist.get_rank(group) == 0 if group is not None else dist.get_rank() == 0
