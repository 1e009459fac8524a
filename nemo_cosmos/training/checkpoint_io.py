"""Lightning checkpoints as NeMo checkpoints: every save is a folder

    .../checkpoints/epoch=E-step=S/
        weights/        the DiT in NeMo's distributed format (inference and NeMo load this); a LoRA
                        run writes lora/ instead: its adapters in peft's layout
        context/        its config and the model it belongs to (ours, and NeMo's io.json when NeMo
                        is installed)
        train_state/    everything else Lightning needs to resume: state.json (loop counters, the
                        run's layout) with tensors.safetensors; optimizer moments and float32 master
                        weights, either in tensors.safetensors or, for a sharded run, each rank's
                        shards written by torch.distributed.checkpoint in safetensors files (sharded/)

written beside its final name and renamed into place, so a killed run never leaves a half
checkpoint that a resume would pick up. Nothing is pickled: loading cannot run code.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Dict, Optional

import torch
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..checkpoint import load_nemo_checkpoint, save_nemo_checkpoint
from ..checkpoint.nemo_dist import read_nemo_extras, write_context
from ..diffusion import LogVarHead
from ..errors import BadInputError, MissingFileError, OutputError, first_line
from ..models.config import CosmosDiTConfig
from ..models.lora import ADAPTER_WEIGHTS, LORA_DIR, LoraSettings, from_peft_name, save_lora, to_peft_name

TRAIN_STATE = "train_state"
_STATE_JSON, _TENSORS = "state.json", "tensors.safetensors"
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


def write_train_state(folder: str, rest: Dict[str, Any], layout: Dict[str, Any]) -> None:
    """`rest` of a Lightning checkpoint (everything not written elsewhere) as JSON + safetensors in
    `folder`/train_state; `layout` records how the run was set up (strategy, LoRA, batch), which a
    resume must match."""
    tensors: Dict[str, torch.Tensor] = {}
    skeleton = _encode(rest, tensors, "")
    os.makedirs(os.path.join(folder, TRAIN_STATE), exist_ok=True)
    save_file(tensors, os.path.join(folder, TRAIN_STATE, _TENSORS))
    with open(os.path.join(folder, TRAIN_STATE, _STATE_JSON), "w") as f:
        json.dump({"layout": layout, "checkpoint": skeleton}, f)


def read_train_state(folder: str) -> tuple:
    """(the checkpoint dict written by write_train_state, its layout record)."""
    train_state = os.path.join(folder, TRAIN_STATE)
    if not os.path.isfile(os.path.join(train_state, _STATE_JSON)):
        raise MissingFileError(f"{folder} has no {TRAIN_STATE}/ to resume from (weights-only checkpoint?)")
    try:
        tensors = load_file(os.path.join(train_state, _TENSORS))
        with open(os.path.join(train_state, _STATE_JSON), encoding="utf-8") as f:
            saved = json.load(f)
        return _decode(saved["checkpoint"], tensors), saved.get("layout", {})
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError) as e:  # truncated, corrupt, not ours
        raise BadInputError(f"cannot read {train_state}: {first_line(e)}") from None


def train_state_layout(folder: str) -> Dict[str, Any]:
    """How the run that wrote checkpoint `folder` was set up (read_train_state's record), without
    reading its tensors."""
    path = os.path.join(folder, TRAIN_STATE, _STATE_JSON)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("layout", {})
    except (OSError, ValueError, AttributeError) as e:
        raise BadInputError(f"cannot read {path}: {first_line(e)}") from None


class NeMoCheckpointIO(CheckpointIO):
    """`config`: the DiT's (stored with the weights; the strategies keep it current); `context`: what
    the checkpoint records beside it ("model": the model the run trains, so inference finds its
    tokenizer, text encoder and defaults without --model; for LoRA also "base", the weights the
    adapters belong to); `layout`: how the run is set up (strategy, LoRA settings, global batch),
    which a resume must match; `lora`: the adapters' settings, for a LoRA run."""

    def __init__(self, config: CosmosDiTConfig, model: Optional[str] = None, *, context: Optional[dict] = None,
                 layout: Optional[dict] = None, lora: Optional[LoraSettings] = None):
        self.config, self.lora = config, lora
        self.context = {"model": model, **(context or {})}
        self.layout = dict(layout or {})
        from .. import nemo_plugin  # noqa: F401  (with NeMo installed, saves also write NeMo's io.json)

    def save_checkpoint(self, checkpoint: Dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        """Called on every rank (the strategies' _CollectiveSave): the weights are written collectively."""
        final = checkpoint_folder(path)
        try:
            self._save(checkpoint, final)
        except OSError as e:  # disk full, a read-only folder: the run stops, earlier checkpoints stay whole
            raise OutputError(f"cannot write checkpoint {final}: {first_line(e)}; earlier checkpoints are intact, "
                              "a new run resumes from the newest") from e

    def _save(self, checkpoint: Dict[str, Any], final: str) -> None:
        import torch.distributed as dist

        from ..utils.io import staging_folder

        state = checkpoint["state_dict"]
        rank = dist.get_rank() if dist.is_initialized() else 0
        tmp = staging_folder(os.path.dirname(final)) if rank == 0 else None
        try:
            staged = os.path.join(tmp, "ckpt") if tmp else os.path.join(os.path.dirname(final), ".unused")
            if self.lora is None:
                dit = {k[len(_DIT):]: v for k, v in state.items() if k.startswith(_DIT)}
                extras = {theirs: state[_LOGVAR + ours] for ours, theirs in LogVarHead.NEMO_NAMES.items()
                          if _LOGVAR + ours in state}
                save_nemo_checkpoint({k: v.to(self.config.params_dtype) for k, v in dit.items()}, self.config,
                                     staged, extra_context=self.context, extras=extras)
            if rank != 0:
                return
            rest = {k: v for k, v in checkpoint.items() if k != "state_dict"}
            if self.lora is not None:
                adapters = {to_peft_name(k[len(_DIT):]): v for k, v in state.items() if ".lora_" in k}
                save_lora(None, self.lora, os.path.join(staged, LORA_DIR), base=self.context.get("base"),
                          state_dict=adapters)
                write_context(staged, self.config, {**self.context, "lora": self.lora.to_dict()})
                # everything trainable that is not an adapter (the log-variance head)
                rest["trained"] = {k: v for k, v in state.items() if k.startswith(_LOGVAR)}
            elif self.config.params_dtype != torch.float32:  # keep the float32 master weights exactly
                rest["master_weights"] = dict(state)
            write_train_state(staged, rest, self.layout)
            os.replace(staged, final)
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    def load_checkpoint(self, path, map_location: Optional[Any] = None, weights_only: Optional[bool] = None) -> Dict[str, Any]:
        folder = checkpoint_folder(path)
        checkpoint, _ = read_train_state(folder)
        master = checkpoint.pop("master_weights", None)
        trained = checkpoint.pop("trained", None)
        if self.lora is not None:
            weights = os.path.join(folder, LORA_DIR, ADAPTER_WEIGHTS)
            try:
                adapters = load_file(weights)
            except Exception as e:
                raise BadInputError(f"cannot read {weights}: {first_line(e)}") from None
            # the frozen base weights are the module's own (loaded from model.init_from)
            checkpoint["state_dict"] = {**{_DIT + from_peft_name(k): v for k, v in adapters.items()}, **(trained or {})}
        elif master is not None:
            checkpoint["state_dict"] = master
        else:
            dit, _ = load_nemo_checkpoint(folder, self.config)
            state = {_DIT + k: v for k, v in dit.items()}
            extras = read_nemo_extras(folder)
            state.update({_LOGVAR + ours: extras[theirs] for ours, theirs in LogVarHead.NEMO_NAMES.items()
                          if theirs in extras})
            checkpoint["state_dict"] = state
        return checkpoint

    def remove_checkpoint(self, path) -> None:
        shutil.rmtree(checkpoint_folder(path), ignore_errors=True)


class _CollectiveSave:
    """Lightning writes checkpoints from rank 0 only; distributed checkpoints are written by all.
    The IO takes the module's config at each save (loading base weights can change it)."""

    def save_checkpoint(self, checkpoint, filepath, storage_options=None) -> None:
        self.checkpoint_io.config = self.lightning_module.config
        self.checkpoint_io.save_checkpoint(checkpoint, filepath, storage_options=storage_options)
        self.barrier("checkpoint saved")


class CosmosDDPStrategy(_CollectiveSave, DDPStrategy):
    pass


class CosmosSingleDeviceStrategy(_CollectiveSave, SingleDeviceStrategy):
    pass
