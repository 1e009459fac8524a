"""What each model name means: its DiT and tokenizer, its text encoder, where its weights are
published, and the generation settings it was made for. The one registry below the pipeline and every
command line; ``--help`` shows these defaults.

This module stays light (no torch import): the command lines build their parsers from it before
anything heavy is imported.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

DEFAULT_NEGATIVE_PROMPT = (
    "The video captures a series of frames showing ugly scenes, static with no motion, motion blur, "
    "over-saturation, shaky footage, low resolution, grainy texture, pixelated images, poorly lit areas, "
    "underexposed and overexposed scenes, poor color balance, washed out colors, choppy sequences, jerky "
    "movements, low frame rate, artifacting, color banding, unnatural transitions, outdated special effects, "
    "fake elements, unconvincing visuals, poorly edited content, jump cuts, visual noise, and flickering. "
    "Overall, the video is of poor quality."
)
"""NVIDIA's default negative prompt (identical in the native and NeMo scripts)."""

TEXT2WORLD, VIDEO2WORLD = "text2world", "video2world"
"""The model families: a video from a prompt; a prompt and an image or video to continue."""

# Where the models beside the DiT are published (what NVIDIA's download script fetches).
T5_NAME = "google-t5/t5-11b"
T5_IGNORE = ("*.h5", "*.msgpack", "*.ot")  # T5-11B's TensorFlow, Flax and Rust weights: nothing here reads them
TOKENIZER_REPO = "nvidia/Cosmos-1.0-Tokenizer-CV8x8x8"
UPSAMPLER_REPO = "nvidia/Cosmos-1.0-Prompt-Upsampler-12B-Text2World"
GUARDRAIL_REPO = "nvidia/Cosmos-1.0-Guardrail"
AEGIS_BASE = "meta-llama/LlamaGuard-7b"
AEGIS_ADAPTER = "nvidia/Aegis-AI-Content-Safety-LlamaGuard-Defensive-1.0"
SIGLIP = "google/siglip-so400m-patch14-384"
NUM_INPUT_FRAMES = (1, 9)
"""What NVIDIA's Video2World takes (--num_input_frames): 1 or 9 frames, one or two latent frames."""
DIT_PATTERNS = {"nemo": ("nemo/*",), "original": ("model.pt", "config.json")}


@dataclass(frozen=True)
class HubItem:
    """One thing to fetch from the Hugging Face Hub: a repository, or the files of it that match."""

    what: str
    repo: str
    allow: Optional[Tuple[str, ...]] = None
    ignore: Optional[Tuple[str, ...]] = None


def guardrail_items() -> List[HubItem]:
    return [HubItem("guardrail blocklist, video safety filter, face detector", GUARDRAIL_REPO),
            HubItem("Aegis base model (LlamaGuard-7b)", AEGIS_BASE),
            HubItem("Aegis adapter", AEGIS_ADAPTER),
            HubItem("SigLIP image encoder of the video safety filter", SIGLIP)]


UPSAMPLER_ITEM = HubItem("prompt upsampler", UPSAMPLER_REPO)


def tokenizer_item(repo: str = TOKENIZER_REPO) -> HubItem:
    return HubItem("CV8x8x8 video tokenizer", repo, allow=("*.jit", "mean_std.pt"))


def text_encoder_item(name: str = T5_NAME) -> HubItem:
    return HubItem("T5 text encoder", name, ignore=T5_IGNORE)


def subject_prompt(prompt: str, subject_name: Optional[str]) -> str:
    """General post-training's prompt: "A video of sks {subject}. {prompt}" (or the prompt alone)."""
    return f"A video of sks {subject_name}. {prompt}" if subject_name else prompt


@dataclass(frozen=True)
class GenerationDefaults:
    """Settings of one generation that a call leaves out (NVIDIA's for the published models)."""

    height: int = 704
    width: int = 1280
    num_frames: int = 121
    fps: int = 24
    guidance: float = 7.0
    num_steps: int = 35
    seed: int = 1
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    num_input_frames: int = 1
    """Video2World: the frames of the input video (its last ones) given as condition: 1 or 9."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GenerationDefaults":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _attr(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def family_of(dit_config) -> str:
    """TEXT2WORLD or VIDEO2WORLD: what a DiT config is (Video2World DiTs read a condition-mask channel)."""
    return VIDEO2WORLD if dit_config.condition_mask_channel else TEXT2WORLD


@dataclass(frozen=True)
class ModelPreset:
    name: str
    dit_factory: Optional[str] = None
    """"module:function" returning the CosmosDiTConfig (imported on use)."""
    repo: Optional[str] = None
    """Hugging Face repository of the DiT weights (``nemo/`` and ``model.pt``)."""
    tokenizer_repo: Optional[str] = TOKENIZER_REPO
    text_encoder: str = T5_NAME
    """Hub name of the T5 encoder (or, for a built-in model, a folder)."""
    builtin_dir: Optional[str] = None
    """A pipeline folder shipped in the package (``model_index.json`` and weights): the model needs
    no download, and its configs and defaults are the folder's."""
    defaults: GenerationDefaults = field(default_factory=GenerationDefaults)
    closed_vocabulary: Optional[str] = None
    """"module:function" that raises BadInputError for any prompt outside the model's own words. Such
    a model can draw nothing else, so it runs without the guardrails (and their downloads)."""

    def dit_config(self, **overrides):
        if self.builtin_dir is not None:
            from .models.config import config_from_dict

            return config_from_dict({**read_model_index(self.builtin_dir)["dit"], **overrides})
        return _attr(self.dit_factory)(**overrides)

    @property
    def family(self) -> str:
        return family_of(self.dit_config())

    def check_prompt(self) -> Optional[Callable[[str], None]]:
        return _attr(self.closed_vocabulary) if self.closed_vocabulary else None

    def dit_item(self, dit_format: str = "nemo") -> HubItem:
        """The DiT's download: ``nemo/`` (NeMo distributed checkpoint), ``model.pt``, or both."""
        formats = ["nemo", "original"] if dit_format == "both" else [dit_format]
        return HubItem(f"{self.name} DiT ({'+'.join(formats)})", self.repo,
                       allow=tuple(p for f in formats for p in DIT_PATTERNS[f]))

    def downloads(self, dit_format: str = "nemo") -> List[HubItem]:
        """What the model itself needs from the Hub: its DiT, the tokenizer and T5. Guardrails and
        the upsampler come on top (guardrail_items, UPSAMPLER_ITEM)."""
        items = [self.dit_item(dit_format)] if self.repo is not None else []
        if self.tokenizer_repo is not None:
            items.append(tokenizer_item(self.tokenizer_repo))
        if self.text_encoder:
            items.append(text_encoder_item(self.text_encoder))
        return items

    def generation_defaults(self) -> GenerationDefaults:
        if self.builtin_dir is not None:
            return GenerationDefaults.from_dict(read_model_index(self.builtin_dir).get("defaults", {}))
        return self.defaults


DEMO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo", "assets")
DEMO_V2W_DIR = os.path.join(DEMO_DIR, "video2world")
DEMO_V2W_MODEL = "cosmos-demo-video2world"

MODELS: Dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset("Cosmos-1.0-Diffusion-7B-Text2World", dit_factory="nemo_cosmos.models.config:cosmos_7b_config",
                    repo="nvidia/Cosmos-1.0-Diffusion-7B-Text2World"),
        ModelPreset("Cosmos-1.0-Diffusion-14B-Text2World", dit_factory="nemo_cosmos.models.config:cosmos_14b_config",
                    repo="nvidia/Cosmos-1.0-Diffusion-14B-Text2World"),
        ModelPreset("Cosmos-1.0-Diffusion-7B-Video2World",
                    dit_factory="nemo_cosmos.models.config:cosmos_7b_video2world_config",
                    repo="nvidia/Cosmos-1.0-Diffusion-7B-Video2World"),
        ModelPreset("Cosmos-1.0-Diffusion-14B-Video2World",
                    dit_factory="nemo_cosmos.models.config:cosmos_14b_video2world_config",
                    repo="nvidia/Cosmos-1.0-Diffusion-14B-Video2World"),
        # Trained by our own recipes on a synthetic world of moving coloured shapes (docs/demo.md).
        ModelPreset("cosmos-demo", tokenizer_repo=None, text_encoder="", builtin_dir=DEMO_DIR,
                    closed_vocabulary="nemo_cosmos.demo.world:check_prompt"),
        ModelPreset(DEMO_V2W_MODEL, tokenizer_repo=None, text_encoder="",
                    builtin_dir=DEMO_V2W_DIR, closed_vocabulary="nemo_cosmos.demo.world:check_prompt"),
    )
}
DEFAULT_MODEL = "Cosmos-1.0-Diffusion-7B-Text2World"
DEMO_MODEL = "cosmos-demo"
DEFAULT_MODELS = {TEXT2WORLD: DEFAULT_MODEL, VIDEO2WORLD: "Cosmos-1.0-Diffusion-7B-Video2World"}
DEMO_MODELS = {TEXT2WORLD: DEMO_MODEL, VIDEO2WORLD: DEMO_V2W_MODEL}
"""Per family: the model infer uses by default, and the built-in one it falls back to without weights."""


def model_preset(name: str) -> ModelPreset:
    """The preset of a model name or of its Hugging Face repository id."""
    from .errors import BadInputError

    if name in MODELS:
        return MODELS[name]
    for preset in MODELS.values():
        if preset.repo is not None and preset.repo == name:
            return preset
    raise BadInputError(f"unknown model {name!r}; expected one of: {', '.join(MODELS)}")


# -- the pipeline folder: what save_pretrained writes and the demo ships ---------------------------

MODEL_INDEX = "model_index.json"
DIT_WEIGHTS = "dit.safetensors"
TOKENIZER_SUBDIR = "tokenizer"
TEXT_ENCODER_SUBDIR = "text_encoder"


def read_model_index(folder: str) -> dict:
    """The description of a pipeline folder: {"family", "dit": config dict, "tokenizer": config dict,
    "text_encoder": a subfolder or Hub name, "defaults": GenerationDefaults fields, "model": name}."""
    import json

    from .errors import BadInputError

    path = os.path.join(folder, MODEL_INDEX)
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        raise BadInputError(f"cannot read {path}: {e}") from None
    if not isinstance(index, dict) or not isinstance(index.get("dit"), dict):
        raise BadInputError(f"{path} does not describe a nemo_cosmos pipeline (no 'dit' config)")
    return index


def is_pipeline_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MODEL_INDEX))
