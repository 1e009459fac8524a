"""What each --model name means: DiT and tokenizer configs, and where their weights are published."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

from .. import demo
from ..demo import world as demo_world
from ..checkpoint import find_dit_checkpoint
from ..pipeline import DEFAULT_NEGATIVE_PROMPT
from ..models.config import CosmosDiTConfig, cosmos_7b_config, cosmos_14b_config, tiny_config
from ..text import T5_NAME
from ..tokenizer import TOKENIZER_REPO, TokenizerConfig, tiny_tokenizer_config


# NVIDIA's defaults for the published models
STANDARD_SETTINGS = dict(height=704, width=1280, num_video_frames=121, fps=24, guidance=7.0,
                         negative_prompt=DEFAULT_NEGATIVE_PROMPT)


@dataclass(frozen=True)
class ModelEntry:
    dit: Callable[[], CosmosDiTConfig]
    tokenizer: Callable[[], TokenizerConfig]
    repo: Optional[str]
    """Hugging Face repository of the DiT weights (nemo/ and model.pt); None for local-only models."""
    tokenizer_repo: Optional[str] = TOKENIZER_REPO
    t5: str = T5_NAME
    builtin: Optional[Tuple[str, str]] = None
    """(DiT weights file, tokenizer folder) shipped with the package; t5 is then a folder too."""
    defaults: Dict[str, object] = field(default_factory=lambda: dict(STANDARD_SETTINGS))
    """infer settings the user did not give."""
    check_prompt: Optional[Callable[[str], None]] = None
    """For a model with a closed vocabulary (the demo): raises ValueError for any prompt outside it.
    Such a model can draw nothing else, so it runs without the guardrails (and their downloads)."""


MODELS = {
    "Cosmos-1.0-Diffusion-7B-Text2World": ModelEntry(
        cosmos_7b_config, TokenizerConfig, "nvidia/Cosmos-1.0-Diffusion-7B-Text2World"
    ),
    "Cosmos-1.0-Diffusion-14B-Text2World": ModelEntry(
        cosmos_14b_config, TokenizerConfig, "nvidia/Cosmos-1.0-Diffusion-14B-Text2World"
    ),
    # Trained on a synthetic world of moving coloured shapes, shipped with the package (docs/demo.md).
    # It was trained with the empty (zero) text as the unconditional branch.
    "cosmos-demo": ModelEntry(demo.demo_dit_config, demo.demo_tokenizer_config, None, tokenizer_repo=None,
                              t5=demo.T5_DIR, builtin=(demo.DIT_FILE, demo.TOKENIZER_DIR),
                              defaults=dict(height=64, width=64, num_video_frames=17, fps=8, guidance=3.0,
                                            negative_prompt=""),
                              check_prompt=demo_world.check_prompt),
    # Same architecture at toy width: for CPU smoke tests with weights you make yourself.
    "cosmos-tiny": ModelEntry(tiny_config, tiny_tokenizer_config, None, tokenizer_repo=None, t5=""),
}
DEFAULT_MODEL = "Cosmos-1.0-Diffusion-7B-Text2World"
DEMO_MODEL = "cosmos-demo"


def model_entry(name: str) -> ModelEntry:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of: {', '.join(MODELS)}") from None


def hub_snapshot(repo: str, patterns: list, what: str) -> str:
    """A local snapshot of `repo` from the Hugging Face cache (HF_HOME), downloading it when the
    cache lacks it and the network is allowed. Errors name the repository and the command."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo, allow_patterns=patterns, local_files_only=True)
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise FileNotFoundError(
            f"{what} not found in the Hugging Face cache and HF_HUB_OFFLINE is set; "
            f"download it with: hf download {repo} {' '.join(patterns)}"
        )
    try:
        return snapshot_download(repo, allow_patterns=patterns)
    except Exception as e:
        raise FileNotFoundError(
            f"cannot download {what} from {repo} ({type(e).__name__}); accept its license on the Hub, "
            f"set HF_TOKEN, and run: hf download {repo} {' '.join(patterns)}"
        ) from None


def cached_dit_checkpoint(repo: str) -> Optional[Tuple[str, str]]:
    """(kind, path) of a published DiT already in the Hugging Face cache: its NeMo checkpoint
    (``nemo/``, what the download recipe fetches) or else its ``model.pt``; None if neither is there."""
    from huggingface_hub import snapshot_download

    for patterns in (["nemo/*"], ["model.pt"]):
        try:
            return find_dit_checkpoint(snapshot_download(repo, allow_patterns=patterns, local_files_only=True))
        except Exception:
            continue
    return None


def published_dit_checkpoint(repo: str, what: str) -> Tuple[str, str]:
    """The cached DiT of `repo` (cached_dit_checkpoint); downloads ``nemo/`` when there is none."""
    return cached_dit_checkpoint(repo) or find_dit_checkpoint(hub_snapshot(repo, ["nemo/*"], what))
