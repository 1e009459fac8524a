"""Video content safety filter: every frame's SigLIP image embedding (google/siglip-so400m-patch14-384,
float32, L2-normalised) goes through a small classifier (``safety_filter.pt`` of
Cosmos-1.0-Guardrail's ``video_content_safety_filter/``: Linear-BN-ReLU x2, then 7 classes); the
video is unsafe if any frame's most likely class is not "Safe"."""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..errors import BadInputError, MissingFileError, first_line
from ..presets import SIGLIP

CLASSES = ("Safe", "Sexual_Content", "Violence", "Drugs", "Child_Abuse", "Hate_and_Harassment", "Self-Harm")


class SafetyClassifier(nn.Module):
    """Module names as in safety_filter.pt (``network.layers.N``)."""

    def __init__(self, input_size: int = 1152, num_classes: int = len(CLASSES)):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 512), nn.BatchNorm1d(512), nn.ReLU(),
            nn.Linear(512, 256), nn.BatchNorm1d(256), nn.ReLU(),
            nn.Linear(256, num_classes),
        )

    def forward(self, x):
        return self.layers(x)


class VideoSafetyFilter:
    def __init__(self, encoder, processor, classifier: SafetyClassifier, device="cpu"):
        self.device = torch.device(device)
        self.encoder, self.processor = encoder.eval().to(self.device), processor
        self.classifier = classifier.eval().to(self.device)

    @classmethod
    def from_pretrained(cls, folder: str, siglip: str = SIGLIP, device="cpu") -> "VideoSafetyFilter":
        """``folder`` holds safety_filter.pt; ``siglip`` is a folder or Hub name of the SigLIP model."""
        from transformers import AutoImageProcessor, SiglipModel

        path = os.path.join(folder, "safety_filter.pt")
        if not os.path.isfile(path):
            raise MissingFileError(f"video safety classifier missing: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)["model"]
        except Exception as e:
            raise BadInputError(f"cannot read {path}: {first_line(e)}") from None
        state = {k[len("network."):]: v for k, v in state.items() if k.startswith("network.")}
        try:
            model = SiglipModel.from_pretrained(siglip, dtype=torch.float32)
            processor = AutoImageProcessor.from_pretrained(siglip)
        except (OSError, ValueError) as e:
            raise MissingFileError(f"cannot load SigLIP from {siglip}: {first_line(e)}") from None
        classifier = SafetyClassifier(state["layers.0.weight"].shape[1], state["layers.6.weight"].shape[0])
        classifier.load_state_dict(state)
        return cls(model, processor, classifier, device)

    def to(self, device) -> "VideoSafetyFilter":
        self.device = torch.device(device)
        self.encoder.to(self.device)
        self.classifier.to(self.device)
        return self

    @torch.no_grad()
    def frame_classes(self, frames: np.ndarray) -> list:
        out = []
        for frame in frames:
            inputs = self.processor(images=[frame], return_tensors="pt").to(self.device)
            emb = self.encoder.get_image_features(pixel_values=inputs["pixel_values"].float())
            emb = getattr(emb, "pooler_output", emb)  # transformers 5 returns an output object
            emb = emb / emb.norm(dim=-1, keepdim=True)
            out.append(int(self.classifier(emb).argmax(dim=-1)))
        return out

    def blocked(self, frames: np.ndarray) -> Optional[str]:
        for i, c in enumerate(self.frame_classes(frames)):
            if c != 0:
                return f"frame {i} classified as {CLASSES[c] if c < len(CLASSES) else c}"
        return None
