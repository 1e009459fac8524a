"""Sharded post-training: PyTorch FSDP2 across all processes, with context parallelism inside each
data-parallel replica, under Lightning's ``ModelParallelStrategy``.

The processes form a (data parallel x context parallel) grid; rank = dp * cp_size + cp, so the ranks
that split one sample's tokens are neighbours (one NVLink island). FSDP2 shards over all of them:
each holds 1/N of the float32 weights, gradients and AdamW moments, computes in bf16, and reduces
gradients in float32. Context-parallel ranks see the same samples and noise; each back-propagates
its share of the tokens, so the gradients are summed over them and averaged over data parallelism.

Checkpoints keep the NeMo folder layout (checkpoint_io.py) without gathering the model anywhere:
``weights/`` is written layer by layer, each layer by one rank (Megatron's dist_checkpointing, NeMo's
stacked names); ``train_state/sharded/`` holds each rank's shards of the float32 weights and the
optimizer state, written by torch.distributed.checkpoint as safetensors, so a run resumes on any
number of processes.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from lightning.pytorch.strategies import ModelParallelStrategy

from ..checkpoint import save_nemo_checkpoint
from ..diffusion import LogVarHead
from ..errors import BadInputError, OutputError, first_line
from ..parallel.distributed import on_rank0
from .checkpoint_io import _DIT, _LOGVAR, TRAIN_STATE, checkpoint_folder, read_train_state, write_train_state

SHARDED = "sharded"


@dataclass
class ShardingPlan:
    """What the module needs to shard itself (CosmosDiffusionModule.configure_model)."""

    mesh: Any
    """1-D device mesh over every process: FSDP's."""
    cp_group: Any
    """This process's context-parallel group (None without context parallelism)."""
    dp_rank: int
    dp_size: int
    cp_size: int
    device: torch.device
    """Where the shards live: this process's GPU, or the CPU with offloading."""
    param_dtype: Optional[torch.dtype]
    cpu_offload: bool


def _full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a DTensor shard (collective: every rank calls it in the same order)."""
    from torch.distributed.tensor import DTensor

    if not isinstance(t, DTensor):
        return t
    mesh_device = t.device_mesh.device_type
    if t.to_local().device.type != mesh_device:  # CPU-offloaded shards: gather them on the GPU
        t = DTensor.from_local(t.to_local().to(mesh_device), t.device_mesh, t.placements, shape=t.shape,
                               stride=t.stride())
    return t.full_tensor()


def _layer_of(name: str) -> Optional[int]:
    parts = name.split(".")
    return int(parts[1]) if parts[0] == "layers" else None


class CosmosFSDPStrategy(ModelParallelStrategy):
    """FSDP2 (+ context parallelism) for CosmosDiffusionModule, with checkpoints through its
    NeMoCheckpointIO's folder layout. `param_dtype`: the compute dtype (bf16 for bf16-mixed; the
    stored weights stay float32)."""

    def __init__(self, context_parallel_size: int = 1, param_dtype: Optional[torch.dtype] = None,
                 cpu_offload: bool = False, **kwargs):
        super().__init__(save_distributed_checkpoint=True, **kwargs)
        self.cp_size, self.param_dtype, self.cpu_offload = context_parallel_size, param_dtype, cpu_offload
        self.sharding: Optional[ShardingPlan] = None

    def setup_environment(self) -> None:
        from torch.distributed.device_mesh import init_device_mesh

        self._setup_distributed()
        world, cp = self.world_size, self.cp_size
        if world % cp:
            raise BadInputError(f"trainer.context_parallel_size {cp} must divide the {world} processes")
        device_type = self.root_device.type
        grid = init_device_mesh(device_type, (world // cp, cp), mesh_dim_names=("data_parallel", "context_parallel"))
        mesh = init_device_mesh(device_type, (world,), mesh_dim_names=("shard",))
        self._device_mesh = grid
        self.lightning_module._device_mesh = grid
        self.sharding = ShardingPlan(
            mesh=mesh, cp_group=grid["context_parallel"].get_group() if cp > 1 else None,
            dp_rank=self.global_rank // cp, dp_size=world // cp, cp_size=cp,
            device=torch.device("cpu") if self.cpu_offload else self.root_device,
            param_dtype=self.param_dtype, cpu_offload=self.cpu_offload)

    def model_to_device(self) -> None:
        # the parameters are where FSDP put them (offloaded ones on the CPU); buffers go to the GPU
        for module in self.model.modules():
            for name, buf in module._buffers.items():
                if buf is not None:
                    module._buffers[name] = buf.to(self.root_device)

    def lightning_module_state_dict(self) -> Dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(self.model)  # this rank's shards

    def optimizer_state(self, optimizer) -> Dict[str, Any]:
        from lightning.pytorch.core.optimizer import LightningOptimizer
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        if isinstance(optimizer, LightningOptimizer):
            optimizer = optimizer._optimizer
        return get_optimizer_state_dict(self.model, optimizer)

    # -- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self, checkpoint: Dict[str, Any], filepath, storage_options: Optional[Any] = None) -> None:
        from torch.distributed.checkpoint.api import CheckpointException

        final = checkpoint_folder(self.broadcast(os.fspath(filepath)))
        try:
            self._save_sharded(checkpoint, final)
        except (OSError, CheckpointException) as e:  # disk full, read-only: the run stops, earlier checkpoints stay
            raise OutputError(f"cannot write checkpoint {final}: {first_line(e)}; earlier checkpoints are intact, "
                              "a new run resumes from the newest") from e

    def _save_sharded(self, checkpoint: Dict[str, Any], final: str) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint import HuggingFaceStorageWriter

        from ..utils.io import staging_folder

        io = self.checkpoint_io
        config = self.lightning_module.config
        state = checkpoint.pop("state_dict")
        optimizers = checkpoint.pop("optimizer_states", [])
        rank, world = self.global_rank, self.world_size
        # weights/: layer i is gathered by all and kept by rank i % world; the rest by rank 0
        mine: Dict[str, torch.Tensor] = {}
        extras: Dict[str, torch.Tensor] = {}
        for key in sorted(state):
            full = _full(state[key])
            if key.startswith(_DIT):
                name = key[len(_DIT):]
                layer = _layer_of(name)
                if (layer is None and rank == 0) or (layer is not None and layer % world == rank):
                    mine[name] = full.detach().to(config.params_dtype).cpu()
            elif key.startswith(_LOGVAR) and rank == 0:
                ours = key[len(_LOGVAR):]
                if ours in LogVarHead.NEMO_NAMES:
                    extras[LogVarHead.NEMO_NAMES[ours]] = full.detach().cpu()
            del full
        tmp = on_rank0(lambda: staging_folder(os.path.dirname(final)))
        staged = os.path.join(tmp, "ckpt")
        try:
            save_nemo_checkpoint(mine, config, staged, extra_context=io.context, extras=extras,
                                 layers=[i for i in range(config.num_layers) if i % world == rank])
            del mine
            dcp.save({"model": state, "optim": [o["state"] for o in optimizers]},
                     storage_writer=HuggingFaceStorageWriter(os.path.join(staged, TRAIN_STATE, SHARDED),
                                                             save_distributed=True))

            def finish():
                write_train_state(staged, dict(checkpoint, param_groups=[o["param_groups"] for o in optimizers]),
                                  io.layout)
                os.replace(staged, final)

            on_rank0(finish)
        finally:
            if rank == 0:
                shutil.rmtree(tmp, ignore_errors=True)

    def load_checkpoint(self, checkpoint_path, weights_only: Optional[bool] = None) -> Dict[str, Any]:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint import HuggingFaceStorageReader
        from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                             set_model_state_dict, set_optimizer_state_dict)

        folder = checkpoint_folder(self.broadcast(os.fspath(checkpoint_path)))
        checkpoint, _ = read_train_state(folder)
        groups = checkpoint.pop("param_groups")
        model_sd = get_model_state_dict(self.model)
        optim_sds = [get_optimizer_state_dict(self.model, o) for o in self.optimizers]
        state = {"model": model_sd, "optim": [o["state"] for o in optim_sds]}
        sharded = os.path.join(folder, TRAIN_STATE, SHARDED)
        from torch.distributed.checkpoint.api import CheckpointException

        try:
            dcp.load(state, storage_reader=HuggingFaceStorageReader(sharded))
        except (OSError, ValueError, RuntimeError, CheckpointException) as e:  # missing or damaged shard files
            raise BadInputError(f"cannot read {sharded}: {first_line(e)}") from None
        set_model_state_dict(self.model, state["model"])
        for optimizer, sd, loaded, saved_groups in zip(self.optimizers, optim_sds, state["optim"], groups):
            sd["state"] = loaded
            for group, saved in zip(sd["param_groups"], saved_groups):
                group.update({k: v for k, v in saved.items() if k != "params"})
            set_optimizer_state_dict(self.model, optimizer, sd)
        return checkpoint
