"""The demo model's world: one coloured circle or square sliding across a dark 64x64 frame for 17
frames, captioned "a red circle moving left". The same module renders training clips and judges
generated ones (colour, shape and direction of the largest coloured blob)."""

from __future__ import annotations

import itertools
from typing import Dict, List, Optional, Tuple

import numpy as np

SIZE, FRAMES, FPS = 64, 17, 8
BACKGROUND = (24, 24, 24)
COLORS: Dict[str, Tuple[int, int, int]] = {
    "red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 235), "yellow": (235, 215, 40),
}
SHAPES = ("circle", "square")
DIRECTIONS: Dict[str, Tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
VOCABULARY = ("a", "moving", "video", "of", "sks", *COLORS, *SHAPES, *DIRECTIONS)
"""Every word the demo's text encoder knows (the last three groups and the subject-prompt words)."""
RADIUS, TRAVEL = 12, 32  # half-size of the shape and how far it moves over the clip, in pixels


def caption(color: str, shape: str, direction: str) -> str:
    return f"a {color} {shape} moving {direction}"


def all_captions() -> List[Tuple[str, str, str]]:
    return list(itertools.product(COLORS, SHAPES, DIRECTIONS))


def _words(text: str) -> List[str]:
    return text.lower().replace(".", " ").replace(",", " ").split()


def parse_caption(text: str) -> Optional[Tuple[str, str, str]]:
    words = _words(text)
    found = [next((w for w in words if w in group), None) for group in (COLORS, SHAPES, DIRECTIONS)]
    return tuple(found) if all(found) else None


def check_prompt(text: str, subject_name: Optional[str] = None) -> None:
    """BadInputError unless `text` is a caption of this world in its own words, with one colour, one
    shape and one direction, and the post-training subject (if any) is made of its words too: the
    demo model cannot be asked for anything else, which is why it needs no guardrails."""
    from ..errors import BadInputError, shorten

    words = _words(text)
    unknown = [w for w in words + _words(subject_name or "") if w not in VOCABULARY]
    counts = [len({w for w in words if w in group}) for group in (COLORS, SHAPES, DIRECTIONS)]
    if unknown or counts != [1, 1, 1]:
        why = (f"unknown word {shorten(unknown[0], 40)}" if unknown else
               "it names " + ", ".join(f"{n} {kind}" for n, kind in zip(counts, ("colours", "shapes", "directions"))))
        raise BadInputError(
            f"cosmos-demo draws one shape: 'a <{'|'.join(COLORS)}> <{'|'.join(SHAPES)}> moving <{'|'.join(DIRECTIONS)}>'; "
            f"got {shorten(text)} ({why})")


def render(color: str, shape: str, direction: str, rng: np.random.Generator) -> np.ndarray:
    """[FRAMES, SIZE, SIZE, 3] uint8: the shape starts near one edge and moves TRAVEL pixels."""
    dx, dy = DIRECTIONS[direction]
    margin = RADIUS + 2
    start = [rng.uniform(margin, SIZE - margin), rng.uniform(margin, SIZE - margin)]
    for axis, d in ((0, dx), (1, dy)):  # leave room to travel along the motion axis
        if d > 0:
            start[axis] = rng.uniform(margin, SIZE - margin - TRAVEL)
        elif d < 0:
            start[axis] = rng.uniform(margin + TRAVEL, SIZE - margin)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    video = np.empty((FRAMES, SIZE, SIZE, 3), np.uint8)
    for t in range(FRAMES):
        cx = start[0] + dx * TRAVEL * t / (FRAMES - 1)
        cy = start[1] + dy * TRAVEL * t / (FRAMES - 1)
        if shape == "circle":
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= RADIUS**2
        else:
            inside = (np.abs(xx - cx) <= RADIUS * 0.89) & (np.abs(yy - cy) <= RADIUS * 0.89)  # same area
        video[t] = BACKGROUND
        video[t][inside] = COLORS[color]
    return video


def analyse(video: np.ndarray) -> Optional[Tuple[str, str, str]]:
    """(colour, shape, direction) of what a generated clip shows, or None if no object is found:
    pixels are assigned to the nearest palette colour (or the background), the most frequent colour
    is the object, its centroid track gives the direction. The shape is the template, a disc or an
    axis-aligned square of the blob's area at its centroid, that overlaps the blob more (median over
    frames): unlike a bounding box, this is not thrown off by blurred corners or stray pixels."""
    palette = np.array([BACKGROUND, *COLORS.values()], np.float32)
    names = list(COLORS)
    dist = ((video[..., None, :].astype(np.float32) - palette) ** 2).sum(-1)
    label = dist.argmin(-1)  # [T, H, W], 0 = background
    counts = np.bincount(label.ravel(), minlength=len(palette))[1:]
    if counts.max() < 0.02 * label.size:
        return None
    c = int(counts.argmax())
    yy, xx = np.mgrid[0 : video.shape[1], 0 : video.shape[2]]
    centroids, square_votes = [], []
    for m in label == c + 1:
        n = int(m.sum())
        if n < 10:
            continue
        cx, cy = xx[m].mean(), yy[m].mean()
        centroids.append((cx, cy))
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= n / np.pi
        half = np.sqrt(n) / 2
        square = (np.abs(xx - cx) <= half) & (np.abs(yy - cy) <= half)
        square_votes.append(_iou(m, square) - _iou(m, disc))
    if len(centroids) < 2:
        return None
    motion = np.array(centroids[-1]) - np.array(centroids[0])
    if np.abs(motion).max() < 4:
        return names[c], None, None
    direction = (("right" if motion[0] > 0 else "left") if abs(motion[0]) > abs(motion[1])
                 else ("down" if motion[1] > 0 else "up"))
    shape = "square" if np.median(square_votes) > 0 else "circle"
    return names[c], shape, direction


def object_centroids(video: np.ndarray) -> np.ndarray:
    """[T, 2] (x, y) centroid per frame of the pixels that are not background (NaN where none)."""
    far = (np.abs(video.astype(np.int16) - np.array(BACKGROUND, np.int16)).sum(-1) > 60)  # [T, H, W]
    yy, xx = np.mgrid[0 : video.shape[1], 0 : video.shape[2]]
    out = np.full((len(video), 2), np.nan)
    for t, m in enumerate(far):
        if m.sum() >= 10:
            out[t] = xx[m].mean(), yy[m].mean()
    return out


def continuation_error(generated: np.ndarray, truth: np.ndarray, start: int) -> float:
    """Mean distance in pixels between the object's centroids in the generated frames from `start`
    on and in the true clip's (inf when the object is lost in a frame): whether a Video2World
    continuation picks up where its input leaves off and keeps the speed."""
    a, b = object_centroids(generated[start:]), object_centroids(truth[start:])
    d = np.linalg.norm(a - b, axis=-1)
    return float("inf") if np.isnan(d).any() else float(d.mean())


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / max(1, int((a | b).sum()))
