"""Guardrails as NVIDIA's Cosmos-1.0 runs them (weights: nvidia/Cosmos-1.0-Guardrail plus the Aegis
and SigLIP models it points to). Before generation the prompt must pass the blocklist, then Aegis;
after generation every frame must pass the video safety filter, and faces are pixelated."""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from .aegis import AEGIS_ADAPTER, AEGIS_BASE, Aegis
from .blocklist import Blocklist
from .face_blur import FaceBlur
from .video_filter import SIGLIP, VideoSafetyFilter

GUARDRAIL_REPO = "nvidia/Cosmos-1.0-Guardrail"
EXIT_BLOCKED = 3


class BlockedError(Exception):
    """A guardrail refused the prompt or the video."""


class TextGuardrail:
    def __init__(self, blocklist: Blocklist, aegis: Optional[Aegis]):
        self.blocklist, self.aegis = blocklist, aegis

    @classmethod
    def from_dir(cls, guardrail_dir: str, device="cpu", aegis_base: str = AEGIS_BASE,
                 aegis_adapter: str = AEGIS_ADAPTER) -> "TextGuardrail":
        blocklist = Blocklist.from_dir(os.path.join(guardrail_dir, "blocklist"))
        return cls(blocklist, Aegis.from_pretrained(aegis_base, aegis_adapter, device=device))

    def check(self, prompt: str) -> None:
        """BlockedError naming the reason when the prompt may not be used."""
        for check in (self.blocklist, self.aegis):
            reason = check.blocked(prompt) if check is not None else None
            if reason:
                raise BlockedError(f"prompt blocked by the guardrails: {reason}")


class VideoGuardrail:
    def __init__(self, safety_filter: VideoSafetyFilter, face_blur: FaceBlur):
        self.safety_filter, self.face_blur = safety_filter, face_blur

    @classmethod
    def from_dir(cls, guardrail_dir: str, device="cpu", siglip: str = SIGLIP) -> "VideoGuardrail":
        return cls(
            VideoSafetyFilter.from_pretrained(os.path.join(guardrail_dir, "video_content_safety_filter"), siglip, device),
            FaceBlur.from_pretrained(os.path.join(guardrail_dir, "face_blur_filter", "Resnet50_Final.pth"), device),
        )

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """The frames with faces pixelated, or BlockedError when the safety filter refuses them."""
        reason = self.safety_filter.blocked(frames)
        if reason:
            raise BlockedError(f"video blocked by the guardrails: {reason}")
        return self.face_blur(frames)


__all__ = ["EXIT_BLOCKED", "GUARDRAIL_REPO", "BlockedError", "TextGuardrail", "VideoGuardrail"]
