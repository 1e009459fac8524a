"""Writing outputs so that each appears whole or not at all, and related files change together.

Every file is written to a temporary name beside its final one (``.<name>.<pid>.<random>.tmp<suffix>``),
flushed to disk, checked, and renamed into place. Files that belong together (a video, its JSON
sidecar, its latent) are committed as one: a journal listing the renames is written first, the
renames follow, and the journal is removed. A process killed between two renames leaves the journal,
and the next write to that output (``recover``) finishes the renames, so a video never stays beside
another run's sidecar. Commits into one folder are serialised with a lock on the folder, so two runs
writing the same output end with one run's files, not a mix.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import tempfile
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import numpy as np

from ..errors import OutputError, first_line

VIDEO_SUFFIXES = (".mp4", ".gif")


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
"""Read once, at import: reading it means setting it for a moment, which other threads (a trainer's
data loaders, checkpoint writers) would see."""


def _umask() -> int:
    return _UMASK


def _temp_beside(path: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    try:
        # the real suffix last: writers (ffmpeg) pick the format by it
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmp" + os.path.splitext(name)[1],
                                   dir=folder)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {first_line(e)}") from None
    os.close(fd)
    return tmp


STAGING_PREFIX = ".tmp-"
"""Folders being written (a checkpoint before its rename); a folder of this name is never complete."""


def _staging_owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-"


def staging_folder(parent: str) -> str:
    """A new folder in `parent` to assemble a folder output in before renaming it into place, with
    the permissions the umask gives (mkdtemp's own are 0700). Folders that killed writers of this
    machine left in `parent` are removed first: each can hold a whole checkpoint."""
    os.makedirs(parent, exist_ok=True)
    remove_stale_staging(parent)
    tmp = tempfile.mkdtemp(prefix=STAGING_PREFIX + _staging_owner(), dir=parent)
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def remove_stale_staging(parent: str) -> List[str]:
    """Remove the staging folders in `parent` whose writer (a process of this machine, named in the
    folder's name) no longer runs; returns their paths. Other machines' folders are left alone."""
    import shutil

    host = socket.gethostname()
    removed = []
    for entry in os.listdir(parent):
        if not entry.startswith(STAGING_PREFIX + host + "-"):
            continue
        pid = entry[len(STAGING_PREFIX + host) + 1:].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
            removed.append(os.path.join(parent, entry))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def staged(path: str) -> Iterator[str]:
    """A temporary path beside `path` to write to; removed if the block fails. The caller renames it
    (commit / replace_atomically)."""
    tmp = _temp_beside(path)
    try:
        yield tmp
        if os.path.getsize(tmp) == 0:
            raise OutputError(f"cannot write {path}: nothing was written (disk full?)")
        # mkstemp's 0600 (or a writer's own) would outlive the rename: give what open() would
        os.chmod(tmp, 0o666 & ~_umask())
        _fsync(tmp)
    except OSError as e:
        _remove(tmp)
        if isinstance(e, OutputError):
            raise
        raise OutputError(f"cannot write {path}: {first_line(e)}") from None
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def replace_atomically(path: str) -> Iterator[str]:
    """Write one file: yields a temporary path; on success it replaces `path` in one rename."""
    with staged(path) as tmp:
        yield tmp
    commit([(tmp, path)])


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _journal(path: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.commit.json")


@contextlib.contextmanager
def _folder_lock(folder: str) -> Iterator[None]:
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def commit(renames: Sequence[Tuple[str, str]]) -> None:
    """Rename each staged file onto its final path, all or (after a crash, once `recover` has run)
    none visible as a mix: see the module docstring."""
    renames = [(os.path.abspath(t), os.path.abspath(f)) for t, f in renames]
    first = renames[0][1]
    with _folder_lock(os.path.dirname(first)):
        recover(first, locked=True)
        journal = _journal(first)
        if len(renames) > 1:
            with open(journal + ".tmp", "w") as f:
                json.dump({"renames": renames}, f)
            os.replace(journal + ".tmp", journal)  # the commit point
        for tmp, final in renames:
            os.replace(tmp, final)
        _remove(journal)


def recover(path: str, locked: bool = False) -> None:
    """Finish the renames of a commit to `path` that a killed process left half done, and remove
    temporary files of `path` whose writer process no longer runs."""
    path = os.path.abspath(path)
    folder, name = os.path.split(path)
    if not os.path.isdir(folder):
        return
    lock = contextlib.nullcontext() if locked else _folder_lock(folder)
    with lock:
        journal = _journal(path)
        if os.path.isfile(journal):
            try:
                with open(journal) as f:
                    renames = json.load(f)["renames"]
            except (OSError, ValueError, KeyError):
                renames = []
            for tmp, final in renames:
                if os.path.exists(tmp):
                    os.replace(tmp, final)
            _remove(journal)
        for entry in os.listdir(folder):
            if entry.startswith(f".{name}.") and ".tmp" in entry and not _writer_alive(entry, name):
                _remove(os.path.join(folder, entry))


def _writer_alive(entry: str, name: str) -> bool:
    pid = entry[len(name) + 2:].split(".", 1)[0]
    return _alive(int(pid)) if pid.isdigit() else True  # not one of ours: leave it


def check_writable(path: str, what: str = "output") -> None:
    """OutputError unless a file can be created at `path` (its folder exists and is writable, and
    `path` is not a folder): checked before any model is loaded."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise OutputError(f"{what} {path} is a folder; give a file name")
    if not os.path.isdir(folder):
        raise OutputError(f"{what}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{what}: folder {folder} is not writable")


def _write_mp4(tmp: str, frames: np.ndarray, fps: float) -> None:
    import imageio
    import imageio_ffmpeg

    h, w = frames.shape[1:3]
    try:
        # H.264 / yuv420p at quality 5, as NVIDIA's save_video
        imageio.mimsave(tmp, list(frames), format="FFMPEG", fps=fps, quality=5, macro_block_size=1, codec="libx264",
                        pixelformat="yuv420p", ffmpeg_params=["-s", f"{w}x{h}"], output_params=["-f", "mp4"])
        written = imageio_ffmpeg.count_frames_and_secs(tmp)[0]
    except (RuntimeError, BrokenPipeError) as e:  # ffmpeg failed, or its file does not read back (disk full)
        raise OSError(errno.EIO, "ffmpeg did not write a readable video (disk full?)") from e
    if written != len(frames):  # ffmpeg can stop early (disk full) without an error code
        raise OSError(errno.EIO, f"the encoder wrote {written} of {len(frames)} frames")


def _write_gif(tmp: str, frames: np.ndarray, fps: float) -> None:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)


def video_suffix(path: str) -> str:
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in VIDEO_SUFFIXES:
        raise OutputError(f"video path must end in {' or '.join(VIDEO_SUFFIXES)}; got {path!r}")
    return suffix


def write_video(path: str, frames: np.ndarray, fps: float) -> str:
    """Stage a video (mp4, H.264, or GIF by the suffix of `path`); returns the temporary file to commit."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3]; got {frames.dtype} {list(frames.shape)}")
    writer = _write_mp4 if video_suffix(path) == ".mp4" else _write_gif
    with staged(path) as tmp:
        writer(tmp, frames, fps)
    return tmp


def stage_json(path: str, data: Any) -> str:
    with staged(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
    return tmp


def stage_tensor(path: str, tensor) -> str:
    """torch.save (readable back with torch.load(weights_only=True))."""
    import torch

    with staged(path) as tmp:
        torch.save(tensor, tmp)
    return tmp


def write_json(path: str, data: Any) -> None:
    commit([(stage_json(path, data), path)])


def write_tensor(path: str, tensor) -> None:
    commit([(stage_tensor(path, tensor), path)])


def write_outputs(video_path: str, frames: np.ndarray, fps: float, sidecar: Dict[str, Any],
                  latent=None) -> List[str]:
    """A video, its JSON sidecar (``<stem>.json``) and optionally its latent (``<stem>.latent.pt``),
    committed together. Returns the paths written."""
    stem = os.path.splitext(video_path)[0]
    staged_files: List[Tuple[str, str]] = []
    try:
        staged_files.append((write_video(video_path, frames, fps), video_path))
        staged_files.append((stage_json(stem + ".json", sidecar), stem + ".json"))
        if latent is not None:
            staged_files.append((stage_tensor(stem + ".latent.pt", latent), stem + ".latent.pt"))
    except BaseException:
        for tmp, _ in staged_files:
            _remove(tmp)
        raise
    commit(staged_files)
    return [final for _, final in staged_files]


def sidecar_path(video_path: str) -> str:
    return os.path.splitext(video_path)[0] + ".json"


def latent_path(video_path: str) -> str:
    return os.path.splitext(video_path)[0] + ".latent.pt"
