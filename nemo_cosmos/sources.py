"""What a name or path given to ``from_pretrained`` (or ``--model`` / ``--nemo_checkpoint``) points
at: the DiT weights, the model they belong to, and where that model's tokenizer, text encoder and
generation defaults come from. Resolving reads names, indexes and metadata only; no weights.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .errors import BadInputError, MissingFileError
from .presets import (DEFAULT_MODELS, DEMO_MODELS, MODELS, TEXT2WORLD, TEXT_ENCODER_SUBDIR, TOKENIZER_SUBDIR, GenerationDefaults,
                      HubItem, ModelPreset, model_preset, read_model_index, text_encoder_item, tokenizer_item)

log = logging.getLogger("nemo_cosmos")


@dataclass
class ModelSource:
    """Everything a pipeline is built from, resolved but not loaded."""

    name: str
    """The model's name (a preset's, or the checkpoint's own)."""
    preset: Optional[ModelPreset]
    checkpoint: Optional[object] = None
    """The DiT weights (a CheckpointInfo); None while they still have to come from the Hub."""
    dit_item: Optional[HubItem] = None
    """The Hub download holding the DiT when it is not cached yet."""
    tokenizer: Optional[str] = None
    """A tokenizer folder, or None to take it from the preset's Hub repository."""
    text_encoder: Optional[str] = None
    """A T5 folder or Hub name."""
    defaults: GenerationDefaults = field(default_factory=GenerationDefaults)

    @property
    def family(self) -> str:
        """TEXT2WORLD or VIDEO2WORLD, as the DiT's config says (a post-trained checkpoint's own)."""
        from .presets import family_of

        return family_of(self.dit_config())

    def dit_config(self):
        """The DiT config the weights will be built with (needs the checkpoint resolved)."""
        from .checkpoint.loading import resolve_config

        if self.checkpoint is None:
            return self.preset.dit_config()
        return resolve_config(self.checkpoint, self.preset.dit_config() if self.preset is not None else None)

    def tokenizer_config(self):
        """The tokenizer's architecture: its folder's config.json, else the published CV8x8x8's."""
        import json

        from .tokenizer import TokenizerConfig
        from .tokenizer.cv8x8x8 import CONFIG_FILE

        if self.tokenizer is not None and os.path.isfile(os.path.join(self.tokenizer, CONFIG_FILE)):
            with open(os.path.join(self.tokenizer, CONFIG_FILE), encoding="utf-8") as f:
                return TokenizerConfig.from_dict(json.load(f))
        return TokenizerConfig()

    def hub_items(self) -> List[HubItem]:
        """What must still come from the Hub: the DiT (when not cached), the tokenizer (when no
        folder is given) and the text encoder (when it is a Hub name)."""
        items = [self.dit_item] if self.dit_item is not None else []
        if self.tokenizer is None:
            items.append(tokenizer_item(self.preset.tokenizer_repo))
        if not os.path.isdir(self.text_encoder):
            items.append(text_encoder_item(self.text_encoder))
        return items

    def adopt_downloads(self, paths: Dict[str, str]) -> None:
        """Point the source at the snapshots ensure_local returned for hub_items()."""
        from .checkpoint import find_dit_checkpoint, inspect_checkpoint

        if self.dit_item is not None:
            self.checkpoint = inspect_checkpoint(find_dit_checkpoint(paths[self.dit_item.repo])[1])
            self.dit_item = None
        if self.tokenizer is None:
            self.tokenizer = paths[self.preset.tokenizer_repo]
        if self.text_encoder in paths:
            self.text_encoder = paths[self.text_encoder]


def _folder_parts(folder: str) -> tuple:
    """(tokenizer folder, text encoder folder or Hub name, defaults) of a pipeline folder."""
    index = read_model_index(folder)
    tokenizer = os.path.join(folder, index.get("tokenizer_dir", TOKENIZER_SUBDIR))
    encoder = index.get("text_encoder", TEXT_ENCODER_SUBDIR)
    if os.path.isdir(os.path.join(folder, encoder)):
        encoder = os.path.join(folder, encoder)
    return tokenizer, encoder, GenerationDefaults.from_dict(index.get("defaults", {}))


def resolve_source(name_or_path: str, model: Optional[str] = None, tokenizer: Optional[str] = None,
                   text_encoder: Optional[str] = None) -> ModelSource:
    """Resolve a model name, Hub repository id, or checkpoint path (any layout: a NeMo weights folder,
    its parent, a nemo_experiments tree, model.pt or its folder, our .safetensors, a pipeline
    folder). `model` names the model when the checkpoint does not say; `tokenizer` / `text_encoder`
    override where those come from."""
    from .checkpoint import inspect_checkpoint
    from .checkpoint.hub import cached_dit_checkpoint

    name_or_path = os.fspath(name_or_path)
    is_name = name_or_path in MODELS or any(p.repo == name_or_path for p in MODELS.values())
    if is_name and not os.path.exists(name_or_path):
        if model is not None and model_preset(model).name != model_preset(name_or_path).name:
            raise BadInputError(f"two different models named: {name_or_path} and --model {model}")
        preset = model_preset(name_or_path)
        src = ModelSource(preset.name, preset, text_encoder=preset.text_encoder,
                          defaults=preset.generation_defaults())
        if preset.builtin_dir is not None:
            src.checkpoint = inspect_checkpoint(preset.builtin_dir)
            src.tokenizer, src.text_encoder, src.defaults = _folder_parts(preset.builtin_dir)
        else:
            cached = cached_dit_checkpoint(preset.repo)
            if cached is not None:
                src.checkpoint = inspect_checkpoint(cached[1])
            else:
                src.dit_item = preset.dit_item()
    elif os.path.exists(name_or_path):
        info = inspect_checkpoint(name_or_path)
        preset_name = model or info.model
        preset = model_preset(preset_name) if preset_name in MODELS or (model is not None) else None
        if model is not None and info.model is not None and info.model in MODELS and info.model != preset.name:
            log.warning("%s was saved from %s; using it as %s, as --model says", name_or_path, info.model, preset.name)
        name = preset.name if preset is not None else (info.model or os.path.basename(os.path.normpath(name_or_path)))
        src = ModelSource(name, preset, checkpoint=info)
        if info.kind == "pipeline":
            src.tokenizer, src.text_encoder, src.defaults = _folder_parts(info.path)
        elif preset is not None:
            src.text_encoder = preset.text_encoder
            src.defaults = preset.generation_defaults()
            if preset.builtin_dir is not None:
                src.tokenizer, src.text_encoder, src.defaults = _folder_parts(preset.builtin_dir)
    else:
        raise MissingFileError(f"{name_or_path!r} is neither a model ({', '.join(MODELS)}) nor an existing path")
    if tokenizer:
        if not os.path.isdir(tokenizer):
            raise MissingFileError(f"tokenizer folder not found: {tokenizer}")
        src.tokenizer = tokenizer
    if text_encoder:
        if _looks_like_path(text_encoder) and not os.path.isdir(text_encoder):
            raise MissingFileError(f"T5 text encoder not found: {text_encoder} (a folder, or a Hub name such as "
                                   "google-t5/t5-11b)")
        src.text_encoder = text_encoder
    if src.tokenizer is None and (src.preset is None or src.preset.tokenizer_repo is None):
        raise BadInputError(f"{src.name} does not say which tokenizer it needs: give its folder (--tokenizer_dir)")
    if not src.text_encoder:
        raise BadInputError(f"{src.name} does not say which text encoder it needs: give it (--t5_path)")
    return src


def _looks_like_path(name: str) -> bool:
    """A folder rather than a Hub name ("owner/name"): absolute, relative to ., ~, or deeper."""
    return os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1


def default_model(family: str = TEXT2WORLD, log_fallback: bool = True) -> str:
    """The family's 7B model when its weights are on this machine, else its built-in demo model."""
    from .checkpoint.hub import cached_dit_checkpoint

    published, demo = DEFAULT_MODELS[family], DEMO_MODELS[family]
    if os.path.isdir(MODELS[demo].builtin_dir or "") and cached_dit_checkpoint(MODELS[published].repo) is None:
        if log_fallback:
            log.warning("%s weights are not on this machine: using the built-in %s model (coloured shapes; "
                        "python -m nemo_cosmos.recipes.download --model %s fetches the real one)", published, demo,
                        published)
        return demo
    return published
