"""Lightning checkpoints as NeMo checkpoints: every save is a folder

    .../checkpoints/epoch=E-step=S/
        weights/        the DiT in NeMo's distributed format (inference and NeMo load this)
        context/        its config (ours, and NeMo's io.json when NeMo is installed)
        train_state/    everything else Lightning needs to resume: optimizer moments, float32 master
                        weights when the stored ones are bf16, loop counters (safetensors + JSON)

written beside its final name and renamed into place, so a killed run never leaves a half
checkpoint that a resume would pick up. Nothing is pickled: loading cannot run code.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Dict, Optional

import torch
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from safetensors.torch import load_file, save_file

from ..checkpoint import load_nemo_checkpoint, save_nemo_checkpoint
from ..checkpoint.nemo_dist import read_nemo_extras
from ..diffusion import LogVarHead
from ..models.config import CosmosDiTConfig
from ..errors import BadInputError, MissingFileError, first_line

TRAIN_STATE = "train_state"
_DIT, _LOGVAR = "dit.", "logvar."


def _encode(obj: Any, tensors: Dict[str, torch.Tensor], where: str) -> Any:
    """JSON skeleton of a Lightning checkpoint entry; tensors go to `tensors` by a path key."""
    if isinstance(obj, torch.Tensor):
        tensors[where] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": where}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v, tensors, f"{where}/{k}") for k, v in obj.items()}
        return {"__items__": [[k, _encode(v, tensors, f"{where}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{where}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{where}/{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {where} in a checkpoint")


def _decode(obj: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__items__" in obj:
            return {k: _decode(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        return {k: _decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj


def checkpoint_folder(path) -> str:
    path = os.fspath(path)
    return path[: -len(".ckpt")] if path.endswith(".ckpt") else path


class NeMoCheckpointIO(CheckpointIO):
    """`config`: the DiT's (stored with the weights); `model`: the model the run trains (recorded in
    the context, so inference finds its tokenizer, text encoder and defaults without --model)."""

    def __init__(self, config: CosmosDiTConfig, model: Optional[str] = None):
        self.config, self.model = config, model
        from .. import nemo_plugin  # noqa: F401  (with NeMo installed, saves also write NeMo's io.json)

    def save_checkpoint(self, checkpoint: Dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        """Called on every rank (the strategies' _CollectiveSave): the weights are written collectively."""
        import torch.distributed as dist

        final = checkpoint_folder(path)
        state = checkpoint["state_dict"]
        dit = {k[len(_DIT):]: v for k, v in state.items() if k.startswith(_DIT)}
        extras = {theirs: state[_LOGVAR + ours] for ours, theirs in LogVarHead.NEMO_NAMES.items() if _LOGVAR + ours in state}
        rank = dist.get_rank() if dist.is_initialized() else 0
        parent = os.path.dirname(final)
        tmp = None
        if rank == 0:
            os.makedirs(parent, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
        try:
            staged = os.path.join(tmp, "ckpt") if tmp else os.path.join(parent, ".unused")
            save_nemo_checkpoint({k: v.to(self.config.params_dtype) for k, v in dit.items()}, self.config,
                                 staged, extra_context={"model": self.model}, extras=extras)
            if rank != 0:
                return
            rest = {k: v for k, v in checkpoint.items() if k != "state_dict"}
            if self.config.params_dtype != torch.float32:  # keep the float32 master weights exactly
                rest["master_weights"] = {k: v for k, v in state.items()}
            tensors: Dict[str, torch.Tensor] = {}
            skeleton = _encode(rest, tensors, "")
            os.makedirs(os.path.join(staged, TRAIN_STATE))
            save_file(tensors, os.path.join(staged, TRAIN_STATE, "tensors.safetensors"))
            with open(os.path.join(staged, TRAIN_STATE, "state.json"), "w") as f:
                json.dump(skeleton, f)
            os.replace(staged, final)
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    def load_checkpoint(self, path, map_location: Optional[Any] = None, weights_only: Optional[bool] = None) -> Dict[str, Any]:
        folder = checkpoint_folder(path)
        train_state = os.path.join(folder, TRAIN_STATE)
        if not os.path.isfile(os.path.join(train_state, "state.json")):
            raise MissingFileError(f"{folder} has no {TRAIN_STATE}/ to resume from (weights-only checkpoint?)")
        try:
            tensors = load_file(os.path.join(train_state, "tensors.safetensors"))
            with open(os.path.join(train_state, "state.json")) as f:
                checkpoint = _decode(json.load(f), tensors)
        except Exception as e:
            raise BadInputError(f"cannot read {train_state}: {first_line(e)}") from None
        master = checkpoint.pop("master_weights", None)
        if master is not None:
            checkpoint["state_dict"] = master
        else:
            dit, _ = load_nemo_checkpoint(folder, self.config)
            state = {_DIT + k: v for k, v in dit.items()}
            extras = read_nemo_extras(folder)
            state.update({_LOGVAR + ours: extras[theirs] for ours, theirs in LogVarHead.NEMO_NAMES.items() if theirs in extras})
            checkpoint["state_dict"] = state
        return checkpoint

    def remove_checkpoint(self, path) -> None:
        shutil.rmtree(checkpoint_folder(path), ignore_errors=True)


class _CollectiveSave:
    """Lightning writes checkpoints from rank 0 only; distributed checkpoints are written by all."""

    def save_checkpoint(self, checkpoint, filepath, storage_options=None) -> None:
        self.checkpoint_io.save_checkpoint(checkpoint, filepath, storage_options=storage_options)
        self.barrier("checkpoint saved")


class CosmosDDPStrategy(_CollectiveSave, DDPStrategy):
    pass


class CosmosSingleDeviceStrategy(_CollectiveSave, SingleDeviceStrategy):
    pass
