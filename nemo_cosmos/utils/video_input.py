"""Reading the image or video a Video2World generation continues, and turning its frames into the
conditioning video as NVIDIA's Cosmos-1.0 does (``read_video_or_image_into_frames_BCTHW``,
``create_condition_latent_from_input_frames``):

* ``.jpg`` / ``.jpeg`` / ``.png``: the first frame of the image; RGBA is blended on white and
  truncated to uint8. Anything else is read as a video (ffmpeg); only its **last** frames are kept.
* values ``x / 128 - 1`` (the reference's, not ``/127.5``), in the model's dtype;
* a straight resize to the generation size (no crop, no padding; bicubic with antialiasing, in
  float32 and back, not clamped), skipped when the size already matches;
* the frames at t = 0..n-1 of a video of the generation's length, the rest zeros (mid-grey).
"""

from __future__ import annotations

import collections
import os
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BadInputError, MissingFileError, first_line

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def is_image_path(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_SUFFIXES


def _rgb(frame: np.ndarray, path: str) -> np.ndarray:
    """[H, W, 3] uint8 from whatever an image or video reader returned (grey, RGB or RGBA)."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise BadInputError(f"{path}: {frame.dtype} pixels; expected 8-bit images")
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=-1)
    if frame.ndim != 3 or frame.shape[-1] not in (1, 3, 4):
        raise BadInputError(f"{path}: frames of shape {list(frame.shape)}; expected H x W x 3 (RGB)")
    if frame.shape[-1] == 1:
        frame = np.repeat(frame, 3, axis=-1)
    if frame.shape[-1] == 4:  # on white, truncated, as the reference
        alpha = frame[..., 3:].astype(np.float64) / 255.0
        frame = (frame[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return frame


def read_input_frames(path: str, num_frames: int) -> np.ndarray:
    """The last `num_frames` frames of a video, or an image as one frame: [n, H, W, 3] uint8.
    MissingFileError / BadInputError (one line) for a missing or unreadable file, an image given
    more than one frame to take, or a video shorter than `num_frames`. A video is streamed: only the
    frames kept are held in memory."""
    import imageio.v3 as iio

    if not isinstance(path, (str, os.PathLike)):
        raise BadInputError(f"the input image or video must be a file path; got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"input image or video not found: {path}")
    if num_frames < 1:
        raise BadInputError(f"the number of input frames must be at least 1; got {num_frames}")
    try:
        if is_image_path(path):
            if num_frames > 1:
                raise BadInputError(f"{path} is an image: it gives one input frame, not {num_frames} "
                                    "(use --num_input_frames 1, or give a video)")
            return _rgb(iio.imread(path, index=0), path)[None]
        kept, total = collections.deque(maxlen=num_frames), 0
        for frame in iio.imiter(path):  # imageio picks PyAV, ffmpeg (imageio-ffmpeg) or Pillow
            kept.append(_rgb(frame, path))
            total += 1
    except BadInputError:
        raise
    except Exception as e:  # not a picture or a video, truncated, an unknown codec
        raise BadInputError(f"cannot read {path} as an image or a video: {first_line(e)}") from None
    if total < num_frames:
        raise BadInputError(f"{path} has {total} frame(s); {num_frames} input frames were asked for")
    shapes = {f.shape for f in kept}
    if len(shapes) > 1:
        raise BadInputError(f"{path}: its frames change size ({sorted(shapes)[:2]})")
    return np.stack(kept)


def condition_video(frames: Union[np.ndarray, torch.Tensor], num_frames: int, height: int, width: int,
                    dtype: torch.dtype) -> torch.Tensor:
    """[1, 3, num_frames, height, width] in `dtype`: the input frames ([n, H, W, 3] uint8) as the
    reference prepares them, at t = 0..n-1, followed by zero frames."""
    frames = torch.as_tensor(np.asarray(frames))
    if frames.dim() != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise BadInputError(f"input frames must be uint8 [n, H, W, 3]; got {frames.dtype} {list(frames.shape)}")
    n = frames.shape[0]
    if n >= num_frames:
        raise BadInputError(f"{n} input frames leave nothing to generate in a {num_frames}-frame video")
    # float64 then the model's dtype, as the reference's numpy arithmetic: exact for x/128 - 1
    x = (frames.permute(0, 3, 1, 2).to(torch.float64) / 128.0 - 1.0).to(dtype)  # [n, 3, H, W]
    if tuple(x.shape[-2:]) != (height, width):
        x = F.interpolate(x.float(), size=(height, width), mode="bicubic", align_corners=False,
                          antialias=True).to(dtype)
    video = torch.zeros(1, 3, num_frames, height, width, dtype=dtype)
    video[0, :, :n] = x.permute(1, 0, 2, 3)
    return video
