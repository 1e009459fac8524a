"""The Hugging Face Hub cache (``HF_HOME``): what is already on this machine, fetching what is not,
and one error that lists everything a run still lacks with the one command that fetches it."""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import WeightsMissingError, first_line
from ..presets import HubItem
from .locate import find_dit_checkpoint

log = logging.getLogger("nemo_cosmos")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in ("0", "", "false", "no", "off")


def cached_snapshot(item: HubItem) -> Optional[str]:
    """The local snapshot folder of `item` when the cache already holds it, else None."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(item.repo, allow_patterns=list(item.allow) if item.allow else None,
                                 ignore_patterns=list(item.ignore) if item.ignore else None, local_files_only=True)
    except Exception:  # not cached (huggingface_hub raises several types for that)
        return None


def fetch(item: HubItem, progress: bool = True) -> str:
    """Download `item` into the cache (files already there are skipped; a broken transfer resumes)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    (enable_progress_bars if progress else disable_progress_bars)()
    return snapshot_download(item.repo, allow_patterns=list(item.allow) if item.allow else None,
                             ignore_patterns=list(item.ignore) if item.ignore else None)


def explain(e: Exception, repo: str) -> str:
    """One line on why `repo` could not be fetched and what to do about it."""
    from huggingface_hub import errors

    url = f"https://huggingface.co/{repo}"
    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, errors.GatedRepoError) or (isinstance(e, errors.HfHubHTTPError) and status in (401, 403)):
        return (f"{repo}: access denied (gated, or no token); accept the license at {url} with your account and "
                "set HF_TOKEN to a token of that account")
    if isinstance(e, errors.RepositoryNotFoundError):
        return f"{repo}: repository not found or not visible to this token; check {url} and HF_TOKEN"
    if isinstance(e, errors.LocalEntryNotFoundError) or "offline" in str(e).lower():
        return f"{repo}: not in the cache and the Hub cannot be reached (offline); run again with network access"
    return f"{repo}: download failed ({type(e).__name__}: {first_line(e)}); run again to resume"


def download_command(model: Optional[str], guardrails: bool, upsampler: bool) -> str:
    """The download recipe's command line that fetches exactly what such a run needs."""
    cmd = "python -m nemo_cosmos.recipes.download"
    if model:
        cmd += f" --model {model}"
    if not upsampler:
        cmd += " --skip_upsampler"
    if not guardrails:
        cmd += " --skip_guardrail"
    return cmd


def ensure_local(items: Sequence[HubItem], command: str) -> Dict[str, str]:
    """{repo: local snapshot} for every item: from the cache, else downloaded (unless HF_HUB_OFFLINE).
    What cannot be had is collected, and one WeightsMissingError names all of it, says why (offline,
    gated or no token, not found) and gives `command` to fetch it."""
    paths: Dict[str, str] = {}
    missing: List[Tuple[HubItem, Optional[Exception]]] = []
    for item in items:
        found = cached_snapshot(item)
        if found is not None:
            paths[item.repo] = found
        else:
            missing.append((item, None))
    if not missing:
        return paths
    if hub_offline():
        names = ", ".join(f"{item.repo} ({item.what})" for item, _ in missing)
        raise WeightsMissingError(f"not in the Hugging Face cache and HF_HUB_OFFLINE is set: {names}; "
                                  f"fetch them on a machine with network access with: {command}")
    failed = []
    for item, _ in missing:
        log.info("downloading %s (%s)", item.repo, item.what)
        try:
            paths[item.repo] = fetch(item)
        except Exception as e:  # every Hub failure is reported together below
            failed.append(explain(e, item.repo))
    if failed:
        raise WeightsMissingError(f"{len(failed)} download(s) failed: {'; '.join(failed)}; then run: {command}")
    return paths


def cached_dit_checkpoint(repo: str) -> Optional[Tuple[str, str]]:
    """(kind, path) of a published DiT already in the cache: its NeMo checkpoint (``nemo/``, what the
    download recipe fetches) or else its ``model.pt``; None if neither is there."""
    for patterns in (("nemo/*",), ("model.pt",)):
        folder = cached_snapshot(HubItem("DiT", repo, allow=patterns))
        if folder is None:
            continue
        try:
            return find_dit_checkpoint(folder)
        except FileNotFoundError:
            continue
    return None
