"""What each --model name means: DiT and tokenizer configs, and where their weights are published."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

from ..checkpoint import find_dit_checkpoint
from ..models.config import CosmosDiTConfig, cosmos_7b_config, cosmos_14b_config, tiny_config
from ..text import T5_NAME
from ..tokenizer import TOKENIZER_REPO, TokenizerConfig, tiny_tokenizer_config


@dataclass(frozen=True)
class ModelEntry:
    dit: Callable[[], CosmosDiTConfig]
    tokenizer: Callable[[], TokenizerConfig]
    repo: Optional[str]
    """Hugging Face repository of the DiT weights (nemo/ and model.pt); None for local-only models."""
    tokenizer_repo: Optional[str] = TOKENIZER_REPO
    t5: str = T5_NAME


MODELS = {
    "Cosmos-1.0-Diffusion-7B-Text2World": ModelEntry(
        cosmos_7b_config, TokenizerConfig, "nvidia/Cosmos-1.0-Diffusion-7B-Text2World"
    ),
    "Cosmos-1.0-Diffusion-14B-Text2World": ModelEntry(
        cosmos_14b_config, TokenizerConfig, "nvidia/Cosmos-1.0-Diffusion-14B-Text2World"
    ),
    # Same architecture at toy width: for CPU smoke tests with weights you make yourself.
    "cosmos-tiny": ModelEntry(tiny_config, tiny_tokenizer_config, None, tokenizer_repo=None, t5=""),
}


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


def published_dit_checkpoint(repo: str, what: str) -> Tuple[str, str]:
    """(kind, path) of a published DiT in the Hugging Face cache: its NeMo checkpoint (``nemo/``, what
    the download recipe fetches) or else its ``model.pt``; downloads ``nemo/`` when neither is there."""
    from huggingface_hub import snapshot_download

    for patterns in (["nemo/*"], ["model.pt"]):
        try:
            return find_dit_checkpoint(snapshot_download(repo, allow_patterns=patterns, local_files_only=True))
        except Exception:
            continue
    return find_dit_checkpoint(hub_snapshot(repo, ["nemo/*"], what))
