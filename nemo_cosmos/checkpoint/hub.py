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
    """Download `item` into the cache (files already there are skipped; a broken transfer resumes,
    within this process by huggingface_hub, and after a killed process by resume_partial_downloads)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    (enable_progress_bars if progress else disable_progress_bars)()
    saved = resume_partial_downloads(item)
    if saved:
        log.info("%s: continued interrupted downloads (%.1f MiB not fetched again)", item.repo, saved / 2**20)
    return snapshot_download(item.repo, allow_patterns=list(item.allow) if item.allow else None,
                             ignore_patterns=list(item.ignore) if item.ignore else None)


def resume_partial_downloads(item: HubItem) -> int:
    """Finish the files of `repo` that a killed download left half-written in the cache. Since
    version 1, huggingface_hub writes each download to a file of its own process
    (``blobs/<etag>.<random>.incomplete``) and starts from byte 0 in the next process, leaving the
    partial file behind. Here each such file whose download is not running (its cache lock is free)
    is continued with a range request, checked against the file's SHA-256, and put where
    huggingface_hub looks for it (``blobs/<etag>``), which it then links instead of fetching.
    Returns the bytes that did not have to be fetched again. Any failure here only means that
    huggingface_hub fetches those files whole."""
    try:
        return _resume_partial_downloads(item)
    except Exception as e:  # network, a vanished file: the download itself decides what to do
        log.debug("not continuing partial downloads of %s: %s", item.repo, first_line(e))
        return 0


RECENT_S = 5
"""A partial file written to in the last seconds may belong to a download that is still running
(where file locks are not honoured, as on some network filesystems; a running download writes
continuously): left alone."""


def _resume_partial_downloads(item: HubItem) -> int:
    import glob
    import hashlib
    import time

    from filelock import FileLock, Timeout
    from huggingface_hub import HfApi, constants, hf_hub_url
    from huggingface_hub.file_download import repo_folder_name
    from huggingface_hub.utils import build_hf_headers, filter_repo_objects, get_session

    repo = item.repo
    folder = repo_folder_name(repo_id=repo, repo_type="model")
    blobs = os.path.join(constants.HF_HUB_CACHE, folder, "blobs")
    partials = glob.glob(os.path.join(blobs, "*.incomplete"))
    if not partials or hub_offline():
        return 0
    entries = [e for e in HfApi().list_repo_tree(repo, recursive=True) if getattr(e, "lfs", None) is not None]
    wanted = set(filter_repo_objects([e.path for e in entries], allow_patterns=item.allow, ignore_patterns=item.ignore))
    # large files: the blob is named by the content's SHA-256
    by_etag = {e.lfs.sha256: e.path for e in entries if e.path in wanted}
    saved = 0
    for partial in partials:
        etag = os.path.basename(partial).split(".", 1)[0]
        blob = os.path.join(blobs, etag)
        if etag not in by_etag or not os.path.exists(partial) or time.time() - os.path.getmtime(partial) < RECENT_S:
            continue
        try:
            with FileLock(os.path.join(constants.HF_HUB_CACHE, ".locks", folder, f"{etag}.lock"), timeout=0):
                if os.path.exists(blob):  # finished meanwhile: the partial is of no use
                    os.remove(partial)
                    continue
                kept = os.path.getsize(partial)
                headers = {**build_hf_headers(), "Range": f"bytes={kept}-"}
                with get_session().stream("GET", hf_hub_url(repo, by_etag[etag]), headers=headers,
                                          follow_redirects=True) as response:
                    if response.status_code != 206:
                        continue  # no ranges served here: huggingface_hub fetches it whole
                    with open(partial, "ab") as f:
                        for chunk in response.iter_bytes(1 << 20):
                            f.write(chunk)
                digest = hashlib.sha256()
                with open(partial, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 24), b""):
                        digest.update(chunk)
                if digest.hexdigest() != etag:  # changed upstream, or damaged: start afresh
                    os.remove(partial)
                    continue
                os.chmod(partial, 0o644)
                os.replace(partial, blob)
                saved += kept
        except Timeout:
            continue  # another process is downloading this file now
    return saved


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
