"""Download the published Cosmos-1.0 Text2World weights into the Hugging Face cache.

    export HF_TOKEN=...        # a token whose account accepted the models' licenses
    export HF_HOME=/data/hf    # where the cache lives (default ~/.cache/huggingface)
    python -m nemo_cosmos.recipes.download --model Cosmos-1.0-Diffusion-7B-Text2World

Fetches what NVIDIA's download_diffusion_nemo.py fetches: the DiT's NeMo checkpoint (``nemo/``; or
``model.pt`` with ``--format original``), the CV8x8x8 tokenizer, T5-11B, the prompt upsampler and
the guardrail models (with the Aegis base model and adapter and the SigLIP encoder they use). Interrupted downloads resume where they stopped; files already in the cache
are not fetched again. ``infer`` then finds everything in the cache without any path argument.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import List, Optional, Tuple

from ..guardrails import GUARDRAIL_REPO
from ..guardrails.aegis import AEGIS_ADAPTER, AEGIS_BASE
from ..guardrails.video_filter import SIGLIP
from ..text import T5_NAME
from ..text.upsampler import UPSAMPLER_REPO
from ..tokenizer import TOKENIZER_REPO
from .models import MODELS

DIT_PATTERNS = {"nemo": ["nemo/*"], "original": ["model.pt", "config.json"]}
# T5-11B also ships TensorFlow, Flax and Rust weights, which nothing here reads
T5_IGNORE = ["*.h5", "*.msgpack", "*.ot"]
EXIT_FAILED = 2


@dataclass(frozen=True)
class Download:
    what: str
    repo: str
    allow: Optional[Tuple[str, ...]] = None
    ignore: Optional[Tuple[str, ...]] = None


def plan(models: List[str], dit_format: str = "nemo", upsampler: bool = True, guardrail: bool = True) -> List[Download]:
    """The repositories (and file patterns) the given models need, each once."""
    items = []
    for name in models:
        entry = MODELS.get(name)
        if entry is None or entry.repo is None:
            published = [m for m, e in MODELS.items() if e.repo]
            raise ValueError(f"no published weights for {name!r}; expected one of: {', '.join(published)}")
        formats = ["nemo", "original"] if dit_format == "both" else [dit_format]
        patterns = tuple(p for f in formats for p in DIT_PATTERNS[f])
        items.append(Download(f"{name} DiT ({'+'.join(formats)})", entry.repo, allow=patterns))
    items.append(Download("CV8x8x8 video tokenizer", TOKENIZER_REPO))
    items.append(Download("T5-11B text encoder", T5_NAME, ignore=tuple(T5_IGNORE)))
    if upsampler:
        items.append(Download("prompt upsampler", UPSAMPLER_REPO))
    if guardrail:
        items.append(Download("guardrail blocklist, video safety filter, face detector", GUARDRAIL_REPO))
        items.append(Download("Aegis base model (LlamaGuard-7b)", AEGIS_BASE))
        items.append(Download("Aegis adapter", AEGIS_ADAPTER))
        items.append(Download("SigLIP image encoder of the video safety filter", SIGLIP))
    return items


def explain(e: Exception, repo: str) -> str:
    """One line on why `repo` could not be fetched and what to do about it."""
    from huggingface_hub import errors

    url = f"https://huggingface.co/{repo}"
    if isinstance(e, errors.GatedRepoError) or (
        isinstance(e, errors.HfHubHTTPError) and getattr(e.response, "status_code", None) in (401, 403)
    ):
        return (f"{repo}: access denied; accept the license at {url} with your account and set HF_TOKEN "
                "to a token of that account")
    if isinstance(e, errors.RepositoryNotFoundError):
        return f"{repo}: repository not found or not visible to this token; check {url} and HF_TOKEN"
    if isinstance(e, errors.LocalEntryNotFoundError) or "offline" in str(e).lower():
        return (f"{repo}: not in the cache and the Hub cannot be reached (offline or HF_HUB_OFFLINE=1); "
                "run this again with network access")
    return f"{repo}: download failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); run again to resume"


def fetch(item: Download) -> str:
    from huggingface_hub import snapshot_download

    return snapshot_download(
        item.repo,
        allow_patterns=list(item.allow) if item.allow else None,
        ignore_patterns=list(item.ignore) if item.ignore else None,
    )


def build_parser() -> argparse.ArgumentParser:
    published = [m for m, e in MODELS.items() if e.repo]
    p = argparse.ArgumentParser(prog="python -m nemo_cosmos.recipes.download", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", choices=published + ["all"],
                   help="fetch only what this model needs (repeatable; default: all)")
    p.add_argument("--format", default="nemo", choices=["nemo", "original", "both"],
                   help="DiT checkpoint: NeMo distributed (nemo/), NVIDIA's model.pt, or both")
    p.add_argument("--skip_upsampler", action="store_true", help="do not fetch the 12B prompt upsampler")
    p.add_argument("--skip_guardrail", action="store_true",
                   help="do not fetch the guardrail models (infer then needs --disable_guardrails)")
    p.add_argument("--dry_run", action="store_true", help="list what would be fetched and stop")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    models = args.model or ["all"]
    if "all" in models:
        models = [m for m, e in MODELS.items() if e.repo]
    items = plan(models, args.format, upsampler=not args.skip_upsampler, guardrail=not args.skip_guardrail)
    from huggingface_hub import constants

    print(f"Hugging Face cache: {constants.HF_HUB_CACHE}" + ("" if os.environ.get("HF_TOKEN") else " (HF_TOKEN not set)"))
    failures = []
    for item in items:
        patterns = f" [{', '.join(item.allow)}]" if item.allow else ""
        if args.dry_run:
            print(f"would fetch {item.repo}{patterns}: {item.what}")
            continue
        print(f"fetching {item.repo}{patterns}: {item.what}")
        try:
            print(f"  -> {fetch(item)}")
        except Exception as e:  # every Hub failure: report it, go on with the others
            failures.append(explain(e, item.repo))
            print(f"error: {failures[-1]}", file=sys.stderr)
    if failures:
        print(f"error: {len(failures)} of {len(items)} downloads failed (see above)", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
