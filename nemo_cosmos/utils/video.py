"""Writing results so that a file either appears complete or not at all."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import numpy as np


def _temp_beside(path: str, suffix: str) -> str:
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix, dir=os.path.dirname(path) or ".")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would outlive the rename: give what open() would
    return tmp


def write_mp4(path: str, frames: np.ndarray, fps: float) -> None:
    """H.264 / yuv420p mp4 via imageio-ffmpeg (quality 5, as NVIDIA's save_video), written to a
    temporary file beside `path` and renamed into place only once complete."""
    import imageio

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3]; got {frames.dtype} {list(frames.shape)}")
    tmp = _temp_beside(path, ".mp4")
    try:
        h, w = frames.shape[1:3]
        imageio.mimsave(
            tmp, list(frames), format="FFMPEG", fps=fps, quality=5, macro_block_size=1, codec="libx264",
            pixelformat="yuv420p", ffmpeg_params=["-s", f"{w}x{h}"], output_params=["-f", "mp4"],
        )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, data: Any) -> None:
    tmp = _temp_beside(path, ".json")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_tensor(path: str, tensor) -> None:
    """torch.save, atomically (readable back with torch.load(weights_only=True))."""
    import torch

    tmp = _temp_beside(path, ".pt")
    try:
        torch.save(tensor, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
