"""The one DiT loader: every caller (the pipeline, post-training's ``init_from``, the NeMo plugin,
the demo, benchmarks and examples) goes through ``load_dit``.

What a checkpoint says about itself wins over what the caller assumes: our NeMo checkpoints keep
their config (and the model they were trained from) in ``context/nemo_cosmos.json``, our safetensors
files in their metadata, a pipeline folder in ``model_index.json``. A checkpoint that says nothing
(NVIDIA's ``model.pt`` and NeMo checkpoints) is matched to a published model by its tensor shapes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from typing import Mapping, Optional

import torch

from ..errors import BadInputError, first_line
from ..models import CosmosDiT
from ..models.config import CosmosDiTConfig, config_from_dict, config_to_dict
from .convert import load_original_model_pt, load_state_dict_checked, read_model_pt
from .locate import NEMO, ORIGINAL, OURS, PIPELINE, find_dit_checkpoint
from .nemo_dist import load_nemo_checkpoint, nemo_tensor_shapes, read_saved_context

log = logging.getLogger("nemo_cosmos")

SAFETENSORS_KEY = "nemo_cosmos"
"""The safetensors metadata entry holding {"config": ..., "model": ...} as JSON."""


@dataclass(frozen=True)
class CheckpointInfo:
    kind: str
    """NEMO, ORIGINAL, OURS (a safetensors file of our state dict) or PIPELINE (a folder with model_index.json)."""
    path: str
    """The weights: the NeMo ``weights/`` folder, the .pt or .safetensors file, or the pipeline folder."""
    config: Optional[CosmosDiTConfig] = None
    """The config the checkpoint records for itself (None when it records none)."""
    model: Optional[str] = None
    """The published or built-in model it belongs to: recorded, or matched by shapes."""


def inspect_checkpoint(path: str) -> CheckpointInfo:
    """Find the weights under `path` (any layout find_dit_checkpoint knows) and what they say about
    themselves. Reads indexes and metadata only, not the weights."""
    from ..presets import MODEL_INDEX, read_model_index
    from .nemo_dist import CONFIG_FILE, CONTEXT_DIR

    kind, found = find_dit_checkpoint(os.fspath(path))
    context, where = None, found
    if kind == NEMO:
        context = read_saved_context(found)
        where = os.path.join(os.path.dirname(found), CONTEXT_DIR, CONFIG_FILE)
    elif kind == OURS:
        context = read_safetensors_context(found)
    elif kind == PIPELINE:
        index = read_model_index(found)
        context = {"config": index["dit"], "model": index.get("model")}
        where = os.path.join(found, MODEL_INDEX)
    config = _config_of(context, where)
    model = context.get("model") if context else None
    if model is None:
        model = _match_published(kind, found, config)
    return CheckpointInfo(kind, found, config, model)


def _config_of(context: Optional[dict], where: str) -> Optional[CosmosDiTConfig]:
    if not context or "config" not in context:
        return None
    try:
        return config_from_dict(context["config"])
    except (TypeError, ValueError, AttributeError) as e:
        raise BadInputError(f"{where}: the saved model config is not valid: {first_line(e)}") from None


def read_safetensors_context(path: str) -> Optional[dict]:
    """{"config": ..., "model": ...} from a safetensors file we wrote (None for a plain one)."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # a truncated header, or not a safetensors file at all
        raise BadInputError(f"cannot read {path} as safetensors: {first_line(e)}") from None
    if SAFETENSORS_KEY not in meta:
        return None
    try:
        return json.loads(meta[SAFETENSORS_KEY])
    except ValueError as e:
        raise BadInputError(f"{path}: its {SAFETENSORS_KEY} metadata is not JSON: {first_line(e)}") from None


def save_dit_safetensors(state_dict: Mapping[str, torch.Tensor], config: CosmosDiTConfig, path: str,
                         model: Optional[str] = None, dtype: Optional[torch.dtype] = None) -> None:
    """Our state dict as one safetensors file that records its config (and model name), written
    beside `path` and renamed into place."""
    from safetensors.torch import save_file

    from ..utils.io import replace_atomically

    meta = {SAFETENSORS_KEY: json.dumps({"config": config_to_dict(config), "model": model})}
    tensors = {k: (v.to(dtype) if dtype is not None else v).detach().cpu().contiguous() for k, v in state_dict.items()}
    with replace_atomically(path) as tmp:
        save_file(tensors, tmp, metadata=meta)


def _size_of(config: CosmosDiTConfig) -> tuple:
    """(layers, hidden size, inputs of the patch embedding): what tells the published models apart
    (a Video2World model has the condition-mask channel's inputs on top of its Text2World twin's)."""
    with torch.device("meta"):
        patch_in = CosmosDiT(dataclasses.replace(config, num_layers=1)).patch_embed.in_features
    return config.num_layers, config.hidden_size, patch_in


def _read_size(kind: str, path: str) -> Optional[tuple]:
    """_size_of's triple read from a checkpoint's index, without its weights."""
    if kind == NEMO:
        shapes = nemo_tensor_shapes(path)
        proj = shapes.get("module.decoder.layers.full_self_attention.linear_proj.weight")
        embed = shapes.get("module.x_embedder.proj.1.weight")
        return (proj[0], proj[-1], embed[-1]) if proj and embed else None
    if kind == ORIGINAL:
        sd = read_model_pt(path)
        w = sd.get("net.x_embedder.proj.1.weight")
        if w is None:
            return None
        layers = len({k.split(".")[2] for k in sd if k.startswith("net.blocks.block")})
        return layers, w.shape[0], w.shape[1]
    return None


def _match_published(kind: str, path: str, config: Optional[CosmosDiTConfig]) -> Optional[str]:
    from ..presets import MODELS

    size = _size_of(config) if config is not None else _read_size(kind, path)
    if size is None:
        return None
    for name, preset in MODELS.items():
        if preset.dit_factory is not None and _size_of(preset.dit_config()) == tuple(size):
            return name
    return None


def load_state_dict_from(info: CheckpointInfo, config: CosmosDiTConfig) -> tuple:
    """(our state dict, the config to build the model with) from any layout."""
    if info.kind == NEMO:
        return load_nemo_checkpoint(info.path, config)
    if info.kind == ORIGINAL:
        return load_original_model_pt(info.path, config), config
    from .convert import load_ours_safetensors
    from ..presets import DIT_WEIGHTS

    file = os.path.join(info.path, DIT_WEIGHTS) if info.kind == PIPELINE else info.path
    return load_ours_safetensors(file), config


def resolve_config(info: CheckpointInfo, config: Optional[CosmosDiTConfig]) -> CosmosDiTConfig:
    """The checkpoint's own config, else the caller's, else that of the published model it matches."""
    if info.config is not None:
        return info.config
    if config is not None:
        return config
    if info.model is not None:
        from ..presets import MODELS

        return MODELS[info.model].dit_config()
    raise BadInputError(f"{info.path} does not say which model it holds: name the model (--model / model=)")


def load_dit(source, config: Optional[CosmosDiTConfig] = None, *, device="cpu",
             dtype: Optional[torch.dtype] = None) -> CosmosDiT:
    """A CosmosDiT with the weights of `source`: a path in any layout (NeMo weights folder, its
    parent, a nemo_experiments tree, model.pt or its folder, our .safetensors, a pipeline folder) or
    a CheckpointInfo. `config` is used when the checkpoint records none; `dtype` defaults to the
    config's. The model is built on the meta device and adopts the loaded tensors (no second copy)."""
    info = source if isinstance(source, CheckpointInfo) else inspect_checkpoint(source)
    cfg = resolve_config(info, config)
    if dtype is not None:
        cfg = dataclasses.replace(cfg, params_dtype=dtype, bf16=dtype == torch.bfloat16)
    state_dict, cfg = load_state_dict_from(info, cfg)
    with torch.device("meta"):
        dit = CosmosDiT(cfg)
    load_state_dict_checked(dit, {k: v.to(cfg.params_dtype) for k, v in state_dict.items()}, assign=True)
    log.info("DiT weights: %s", info.path)
    return dit.to(device=device)


__all__ = ["CheckpointInfo", "inspect_checkpoint", "load_dit", "read_safetensors_context", "resolve_config",
           "save_dit_safetensors", "load_state_dict_from"]
