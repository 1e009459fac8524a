"""Guardrails as NVIDIA's Cosmos-1.0 runs them (weights: nvidia/Cosmos-1.0-Guardrail plus the Aegis
and SigLIP models it points to), as pipeline components. Before generation the prompt must pass the
blocklist, then Aegis; after generation every frame must pass the video safety filter, and faces are
pixelated. A refusal raises ``BlockedError``.

The neural models are loaded on first use, kept on the CPU between uses, and visit the pipeline's
device only while they work (``on``), so they never sit on the GPU beside the DiT's activations.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Dict, Iterator, Optional

import numpy as np

from ..errors import BlockedError
from ..presets import AEGIS_ADAPTER, AEGIS_BASE, SIGLIP
from .blocklist import Blocklist


class OnDemand:
    """A model built on first use (by `make`, on the CPU) and moved to a device only while in use."""

    def __init__(self, make: Callable[[], object]):
        self._make, self._obj = make, None

    def get(self):
        if self._obj is None:
            self._obj = self._make()
        return self._obj

    @contextlib.contextmanager
    def on(self, device) -> Iterator[object]:
        obj = self.get()
        obj.to(device)
        try:
            yield obj
        finally:
            obj.to("cpu")
            _empty_cache(device)


def _empty_cache(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


class TextGuardrail:
    """The blocklist (always in memory, it is small) and Aegis (on demand). Verdicts are remembered
    per prompt, so a prompt checked before the models were loaded is not checked again."""

    def __init__(self, blocklist: Optional[Blocklist], aegis: Optional[OnDemand]):
        self.blocklist, self.aegis = blocklist, aegis
        self._verdicts: Dict[str, Optional[str]] = {}

    @classmethod
    def from_dir(cls, guardrail_dir: str, aegis_base: str = AEGIS_BASE,
                 aegis_adapter: str = AEGIS_ADAPTER) -> "TextGuardrail":
        from .aegis import Aegis

        blocklist = Blocklist.from_dir(os.path.join(guardrail_dir, "blocklist"))
        return cls(blocklist, OnDemand(lambda: Aegis.from_pretrained(aegis_base, aegis_adapter, device="cpu")))

    def reason(self, prompt: str, device="cpu") -> Optional[str]:
        if prompt not in self._verdicts:
            reason = self.blocklist.blocked(prompt) if self.blocklist is not None else None
            if reason is None and self.aegis is not None:
                with self.aegis.on(device) as aegis:
                    reason = aegis.blocked(prompt)
            self._verdicts[prompt] = reason
        return self._verdicts[prompt]

    def check(self, prompt: str, device="cpu") -> None:
        """BlockedError naming the reason when the prompt may not be used."""
        reason = self.reason(prompt, device)
        if reason:
            raise BlockedError(f"prompt blocked by the guardrails: {reason}")


class VideoGuardrail:
    """The SigLIP safety filter, then RetinaFace face pixelation; both on demand."""

    def __init__(self, safety_filter: OnDemand, face_blur: OnDemand):
        self.safety_filter, self.face_blur = safety_filter, face_blur

    @classmethod
    def from_dir(cls, guardrail_dir: str, siglip: str = SIGLIP) -> "VideoGuardrail":
        from .face_blur import FaceBlur
        from .video_filter import VideoSafetyFilter

        return cls(
            OnDemand(lambda: VideoSafetyFilter.from_pretrained(
                os.path.join(guardrail_dir, "video_content_safety_filter"), siglip, "cpu")),
            OnDemand(lambda: FaceBlur.from_pretrained(
                os.path.join(guardrail_dir, "face_blur_filter", "Resnet50_Final.pth"), "cpu")),
        )

    def __call__(self, frames: np.ndarray, device="cpu") -> np.ndarray:
        """The frames with faces pixelated, or BlockedError when the safety filter refuses them."""
        with self.safety_filter.on(device) as safety_filter:
            reason = safety_filter.blocked(frames)
        if reason:
            raise BlockedError(f"video blocked by the guardrails: {reason}")
        with self.face_blur.on(device) as face_blur:
            return face_blur(frames)


__all__ = ["BlockedError", "OnDemand", "TextGuardrail", "VideoGuardrail"]
