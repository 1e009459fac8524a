"""LoRA adapters on the DiT through peft: added to the attention and MLP projections, saved in peft's
own layout (``adapter_config.json`` + ``adapter_model.safetensors``, loadable with plain
``peft.PeftModel.from_pretrained``), loaded back onto a base model, optionally merged into it.

The adapters are injected in place (``peft.inject_adapter_in_model``): the DiT keeps its class, its
config and its other parameter names, so checkpoint loaders, context parallelism and the pipeline
work on it unchanged.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from ..errors import BadInputError, MissingFileError, first_line

ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
LORA_DIR = "lora"
"""Where a LoRA post-training checkpoint keeps its adapters (instead of ``weights/``)."""
PEFT_PREFIX = "base_model.model."
"""What peft's PeftModel.save_pretrained puts before every module path."""
ADAPTER = "default"


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: Sequence[str] = field(default=("linear_qkv", "linear_proj", "linear_q", "linear_kv",
                                                   "linear_fc1", "linear_fc2"))

    def to_dict(self) -> dict:
        return {"rank": self.rank, "alpha": self.alpha, "dropout": self.dropout,
                "target_modules": list(self.target_modules)}


def _peft_config(settings: LoraSettings, base: Optional[str] = None):
    from peft import LoraConfig

    return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=list(settings.target_modules), base_model_name_or_path=base)


def _check_targets(model: nn.Module, targets: Sequence[str]) -> None:
    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    unknown = sorted(set(targets) - names)
    if unknown:
        raise BadInputError(f"LoRA target {unknown[0]!r} names no projection of the DiT; "
                            f"expected some of: {', '.join(sorted(names))}")


def apply_lora(model: nn.Module, settings: LoraSettings, base: Optional[str] = None, seed: int = 0) -> nn.Module:
    """Freeze `model` and add trainable float32 adapters (B starts at zero, so the output is
    unchanged until training moves it; A is drawn from `seed`, so a run is repeatable)."""
    from peft import inject_adapter_in_model

    _check_targets(model, settings.target_modules)
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(_peft_config(settings, base), model, adapter_name=ADAPTER)
    for name, p in model.named_parameters():
        if ".lora_" in name:
            p.data = p.data.float()
            p.requires_grad_(True)
    return model


def to_peft_name(name: str) -> str:
    """Our parameter name of an adapter (``layers.0.mlp.linear_fc1.lora_A.default.weight``) -> peft's
    saved name (``base_model.model.layers.0.mlp.linear_fc1.lora_A.weight``)."""
    return PEFT_PREFIX + name.replace(f".{ADAPTER}.", ".")


def from_peft_name(key: str) -> str:
    if not key.startswith(PEFT_PREFIX) or not key.endswith((".lora_A.weight", ".lora_B.weight")):
        raise BadInputError(f"{key!r} is not a LoRA tensor of peft's layout")
    head, tail = key[len(PEFT_PREFIX):].rsplit(".", 1)
    return f"{head}.{ADAPTER}.{tail}"


def lora_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The adapters' tensors under peft's saved names."""
    return {to_peft_name(n): p for n, p in model.named_parameters() if ".lora_" in n}


def save_lora(model: Optional[nn.Module], settings: LoraSettings, folder: str, base: Optional[str] = None,
              state_dict: Optional[Dict[str, torch.Tensor]] = None) -> None:
    """peft's layout in `folder` (which must not exist yet; the caller renames it into place): the
    adapters of `model`, or `state_dict` (peft's names)."""
    from safetensors.torch import save_file

    tensors = lora_state_dict(model) if state_dict is None else state_dict
    os.makedirs(folder)
    save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()},
              os.path.join(folder, ADAPTER_WEIGHTS), metadata={"format": "pt"})
    _peft_config(settings, base).save_pretrained(folder)


def read_lora_settings(folder: str) -> tuple:
    """(LoraSettings, the base model recorded, or None) from a peft adapter folder."""
    path = os.path.join(folder, ADAPTER_CONFIG)
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
        unsupported = [k for k in ("use_dora", "use_rslora", "rank_pattern", "alpha_pattern", "fan_in_fan_out",
                                   "layers_to_transform") if cfg.get(k)]
        if unsupported:
            raise BadInputError(f"{path}: {unsupported[0]} is not supported here (plain LoRA only)")
        targets = cfg["target_modules"]
        if not isinstance(targets, list):  # a regular expression: peft's, not a list of module names
            raise BadInputError(f"{path}: target_modules must be a list of module names; got {targets!r}")
        settings = LoraSettings(int(cfg["r"]), float(cfg["lora_alpha"]), float(cfg.get("lora_dropout") or 0.0),
                                tuple(sorted(targets)))
    except FileNotFoundError:
        raise MissingFileError(f"no LoRA adapter in {folder} (expected {ADAPTER_CONFIG})") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BadInputError(f"cannot read {path}: {first_line(e)}") from None
    return settings, cfg.get("base_model_name_or_path")


def load_lora(model: nn.Module, folder: str, merge: bool = True) -> LoraSettings:
    """Add the adapters saved in `folder` to `model`; with `merge`, fold them into its weights (no
    extra cost per step, same output within rounding)."""
    from safetensors.torch import load_file

    settings, _ = read_lora_settings(folder)
    weights = os.path.join(folder, ADAPTER_WEIGHTS)
    try:
        saved = load_file(weights)
    except Exception as e:  # missing, truncated, not safetensors
        raise BadInputError(f"cannot read {weights}: {first_line(e)}") from None
    apply_lora(model, settings)
    expected = set(lora_state_dict(model))
    if set(saved) != expected:
        odd = sorted(set(saved) ^ expected)[0]
        raise BadInputError(f"{weights} does not fit this model (tensor {odd!r}): another model's adapter?")
    dtype = next(p.dtype for n, p in model.named_parameters() if ".lora_" not in n)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, t in saved.items():
            p = params[from_peft_name(key)]
            if p.shape != t.shape:
                raise BadInputError(f"{weights}: {key} has shape {list(t.shape)}; this model needs {list(p.shape)}")
            p.copy_(t)
    if merge:
        merge_lora(model)
    else:
        for name, p in model.named_parameters():
            if ".lora_" in name:
                p.data = p.data.to(dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    return settings


def merge_lora(model: nn.Module) -> None:
    """Fold every adapter into its base projection and put the plain projection back in its place."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge(safe_merge=True, adapter_names=[ADAPTER])
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config


def has_lora(model: nn.Module) -> bool:
    return any(".lora_" in n for n, _ in model.named_parameters())


def trainable_names(model: nn.Module) -> List[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]
