"""Find DiT weights where users keep them: a NeMo distributed checkpoint (its ``weights/`` folder,
the folder above it, a Hugging Face snapshot's ``nemo/``, or a whole ``nemo_experiments`` tree, where
the newest checkpoint wins), NVIDIA's original ``model.pt`` (the file or its folder), a safetensors file
of our own, or a pipeline folder (``model_index.json``, what ``save_pretrained`` writes)."""

from __future__ import annotations

import os
import re
from typing import List, Optional, Tuple

from ..errors import MissingFileError

NEMO, ORIGINAL, OURS, PIPELINE = "nemo", "original", "ours", "pipeline"
_STEP = re.compile(r"step=(\d+)")


def _is_weights_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "metadata.json"))


def _is_checkpoint(path: str, with_weights: bool) -> bool:
    from ..models.lora import ADAPTER_CONFIG, LORA_DIR

    if _is_weights_dir(os.path.join(path, "weights")):
        return True
    # a LoRA run's checkpoint holds its adapters instead of the whole DiT
    return not with_weights and os.path.isfile(os.path.join(path, LORA_DIR, ADAPTER_CONFIG))


def experiment_checkpoints(root: str, max_depth: int = 6, with_weights: bool = True) -> List[str]:
    """Every complete ``.../checkpoints/epoch=E-step=S`` folder under `root` (one with
    ``weights/metadata.json``, or with `with_weights` False also a LoRA run's ``lora/``; a save in
    progress is written elsewhere and renamed into place), oldest step first."""
    found = []
    root = os.path.abspath(root)
    for dirpath, dirnames, _ in os.walk(root):
        depth = dirpath[len(root):].count(os.sep)
        if depth >= max_depth:
            dirnames[:] = []
        if os.path.basename(dirpath) == "checkpoints":
            for name in dirnames:
                m = _STEP.search(name)
                full = os.path.join(dirpath, name)
                if m and _is_checkpoint(full, with_weights):
                    found.append((int(m.group(1)), os.path.getmtime(full), full))
            dirnames[:] = []
    return [path for _, _, path in sorted(found)]


def latest_experiment_checkpoint(root: str, with_weights: bool = True) -> Optional[str]:
    found = experiment_checkpoints(root, with_weights=with_weights)
    return found[-1] if found else None


def find_dit_checkpoint(path: str) -> Tuple[str, str]:
    """(kind, path): (NEMO, the weights folder), (ORIGINAL, the model.pt file), (OURS, a
    safetensors file of our own state dict) or (PIPELINE, a folder with model_index.json)."""
    from ..presets import is_pipeline_folder

    if os.path.isfile(path):
        return (OURS if path.endswith(".safetensors") else ORIGINAL), path
    if not os.path.isdir(path):
        raise MissingFileError(f"checkpoint not found: {path}")
    if is_pipeline_folder(path):
        return PIPELINE, path
    for candidate in (path, os.path.join(path, "weights"), os.path.join(path, "nemo")):
        if _is_weights_dir(candidate):
            return NEMO, candidate
    if os.path.isfile(os.path.join(path, "model.pt")):
        return ORIGINAL, os.path.join(path, "model.pt")
    latest = latest_experiment_checkpoint(path)
    if latest:
        return NEMO, os.path.join(latest, "weights")
    raise MissingFileError(
        f"no checkpoint in {path}: expected a NeMo checkpoint (weights/metadata.json), "
        "a nemo_experiments/<name>/default/<time>/checkpoints/epoch=E-step=S folder tree, or model.pt"
    )


def find_lora_adapter(path: str) -> str:
    """The peft adapter folder (``adapter_config.json``) at `path`: the folder itself, a post-training
    checkpoint's ``lora/``, or the newest LoRA checkpoint of a nemo_experiments tree."""
    from ..models.lora import ADAPTER_CONFIG, LORA_DIR

    path = os.fspath(path)
    for candidate in (path, os.path.join(path, LORA_DIR)):
        if os.path.isfile(os.path.join(candidate, ADAPTER_CONFIG)):
            return candidate
    if os.path.isdir(path):
        latest = latest_experiment_checkpoint(path, with_weights=False)
        if latest and os.path.isfile(os.path.join(latest, LORA_DIR, ADAPTER_CONFIG)):
            return os.path.join(latest, LORA_DIR)
    raise MissingFileError(f"no LoRA adapter at {path}: expected a folder with adapter_config.json, a checkpoint with "
                           "lora/, or a nemo_experiments tree of a LoRA run")


def lora_base(adapter: str) -> Optional[str]:
    """What a LoRA adapter was trained on: the base checkpoint our post-training recorded beside it
    (when it is still there), else the model it names, else peft's base_model_name_or_path."""
    import json

    from ..models.lora import ADAPTER_CONFIG
    from .nemo_dist import read_context

    context = read_context(os.path.dirname(os.path.abspath(adapter))) or {}
    names = [context.get(k) for k in ("base", "model") if context.get(k)]
    try:
        with open(os.path.join(adapter, ADAPTER_CONFIG), encoding="utf-8") as f:
            peft_config = json.load(f)
    except (OSError, ValueError):
        peft_config = None
    if isinstance(peft_config, dict) and peft_config.get("base_model_name_or_path"):
        names.append(peft_config["base_model_name_or_path"])
    from ..presets import MODELS

    return next((n for n in names if os.path.exists(n) or n in MODELS), None)
