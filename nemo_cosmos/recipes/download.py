"""Download the published Cosmos-1.0 weights into the Hugging Face cache.

    export HF_TOKEN=...        # a token whose account accepted the models' licenses
    export HF_HOME=/data/hf    # where the cache lives (default ~/.cache/huggingface)
    python -m nemo_cosmos.recipes.download --model Cosmos-1.0-Diffusion-7B-Text2World

Fetches what NVIDIA's download_diffusion_nemo.py fetches: the DiT's NeMo checkpoint (``nemo/``; or
``model.pt`` with ``--format original``), the CV8x8x8 tokenizer, T5-11B, the prompt upsampler and the
guardrail models (with the Aegis base model and adapter and the SigLIP encoder they use). Interrupted
downloads resume where they stopped; files already in the cache are not fetched again. ``infer``
then finds everything in the cache without any path argument.
"""

from __future__ import annotations

import os
import sys
from typing import List

if not __package__:  # run by path: make the package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from nemo_cosmos.errors import BadInputError  # noqa: E402
from nemo_cosmos.presets import MODELS, TEXT2WORLD, UPSAMPLER_ITEM, HubItem, guardrail_items  # noqa: E402
from nemo_cosmos.utils import cli  # noqa: E402

PROG = "python -m nemo_cosmos.recipes.download"
PUBLISHED = [name for name, preset in MODELS.items() if preset.repo is not None]


def plan(models: List[str], dit_format: str = "nemo", upsampler: bool = True, guardrail: bool = True) -> List[HubItem]:
    """The downloads the given models need, each repository once."""
    items: List[HubItem] = []
    for name in models:
        if name not in PUBLISHED:
            raise BadInputError(f"no published weights for {name!r}; expected one of: {', '.join(PUBLISHED)}")
        items += MODELS[name].downloads(dit_format)
    if upsampler and any(MODELS[name].family == TEXT2WORLD for name in models):  # Video2World's is not supported
        items.append(UPSAMPLER_ITEM)
    if guardrail:
        items += guardrail_items()
    unique = {}
    for item in items:
        unique.setdefault((item.repo, item.allow, item.ignore), item)
    return list(unique.values())


def build_parser():
    p = cli.parser(PROG, __doc__, f"{PROG} --model Cosmos-1.0-Diffusion-7B-Text2World --skip_upsampler", "checkpoints.md")
    p.add_argument("--model", action="append", choices=PUBLISHED + ["all"],
                   help="fetch only what this model needs (repeatable; default: all)")
    p.add_argument("--format", default="nemo", choices=["nemo", "original", "both"],
                   help="DiT checkpoint: NeMo distributed (nemo/), NVIDIA's model.pt, or both")
    p.add_argument("--skip_upsampler", action="store_true", help="do not fetch the 12B prompt upsampler")
    p.add_argument("--skip_guardrail", action="store_true",
                   help="do not fetch the guardrail models (infer then needs --disable_guardrails)")
    p.add_argument("--dry_run", action="store_true", help="list what would be fetched (with sizes) and stop")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    return p


def _size(item: HubItem) -> str:
    """The download's size from the Hub's file list, or '' when the Hub cannot be asked."""
    import fnmatch

    from huggingface_hub import HfApi

    try:
        info = HfApi().model_info(item.repo, files_metadata=True)
    except Exception:  # offline, gated: the size is a nicety
        return ""
    total = sum(s.size or 0 for s in info.siblings
                if (not item.allow or any(fnmatch.fnmatch(s.rfilename, p) for p in item.allow))
                and not (item.ignore and any(fnmatch.fnmatch(s.rfilename, p) for p in item.ignore)))
    return f", {total / 2**30:.1f} GiB"


def run(args) -> int:
    from huggingface_hub import constants

    from nemo_cosmos.checkpoint.hub import explain, fetch, hub_offline

    models = args.model or ["all"]
    if "all" in models:
        models = PUBLISHED
    items = plan(models, args.format, upsampler=not args.skip_upsampler, guardrail=not args.skip_guardrail)
    print(f"Hugging Face cache: {constants.HF_HUB_CACHE}" + ("" if os.environ.get("HF_TOKEN") else " (HF_TOKEN not set)"))
    failures = []
    for item in items:
        patterns = f" [{', '.join(item.allow)}]" if item.allow else ""
        if args.dry_run:
            size = "" if hub_offline() else _size(item)
            print(f"would fetch {item.repo}{patterns}: {item.what}{size}")
            continue
        print(f"fetching {item.repo}{patterns}: {item.what}")
        try:
            print(f"  -> {fetch(item, progress=not args.no_progress)}")
        except Exception as e:  # every Hub failure: report it, go on with the others
            failures.append(explain(e, item.repo))
            print(f"error: {failures[-1]}", file=sys.stderr)
    if failures:
        print(f"error: {len(failures)} of {len(items)} downloads failed (see above)", file=sys.stderr)
        return cli.EXIT_BAD_INPUT
    return cli.EXIT_OK


def main(argv=None) -> int:
    return cli.run_cli(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
