"""Face pixelation, the guardrails' last step: RetinaFace (ResNet-50, the ``Resnet50_Final.pth``
weights of Cosmos-1.0-Guardrail's ``face_blur_filter/``) finds faces in every frame; each face box
of at least 20x20 pixels is shrunk to 5x5 blocks (bilinear) and blown back up (nearest).

Detection settings as NVIDIA's: BGR input minus (104, 117, 123); anchors of 16/32, 64/128, 256/512
pixels on strides 8/16/32; box variances (0.1, 0.2); score > 0.7; NMS at IoU 0.4 over the best
5000, at most 750 kept. The network is written here with the checkpoint's module names.
"""

from __future__ import annotations

import math
import os
from typing import List, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import BadInputError, MissingFileError, first_line

MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCES = (0.1, 0.2)
BGR_MEAN = (104.0, 117.0, 123.0)


# ---------------------------------------------------------------------------------------------
# Network: ResNet-50 body (torchvision's names), feature pyramid, SSH context modules, heads


class Bottleneck(nn.Module):
    def __init__(self, inplanes: int, width: int, stride: int = 1, downsample: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.downsample = (nn.Sequential(nn.Conv2d(inplanes, width * 4, 1, stride, bias=False), nn.BatchNorm2d(width * 4))
                           if downsample else None)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


class ResNet50Body(nn.Module):
    """Returns the outputs of layer2, layer3 and layer4 (strides 8, 16, 32)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        inplanes = 64
        for i, (width, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), start=1):
            layers = [Bottleneck(inplanes, width, stride, downsample=True)]
            layers += [Bottleneck(width * 4, width) for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*layers))
            inplanes = width * 4

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        c2 = self.layer2(self.layer1(x))
        c3 = self.layer3(c2)
        return c2, c3, self.layer4(c3)


def _conv_bn(cin: int, cout: int, kernel: int, relu: bool) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, 1, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


class FPN(nn.Module):
    def __init__(self, in_channels: Sequence[int] = (512, 1024, 2048), out: int = 256):
        super().__init__()
        self.output1, self.output2, self.output3 = (_conv_bn(c, out, 1, True) for c in in_channels)
        self.merge1, self.merge2 = _conv_bn(out, out, 3, True), _conv_bn(out, out, 3, True)

    def forward(self, c2, c3, c4):
        p4 = self.output3(c4)
        p3 = self.merge2(self.output2(c3) + F.interpolate(p4, size=c3.shape[-2:], mode="nearest"))
        p2 = self.merge1(self.output1(c2) + F.interpolate(p3, size=c2.shape[-2:], mode="nearest"))
        return p2, p3, p4


class SSH(nn.Module):
    """Context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) branches, concatenated."""

    def __init__(self, cin: int = 256, cout: int = 256):
        super().__init__()
        self.conv3X3 = _conv_bn(cin, cout // 2, 3, False)
        self.conv5X5_1 = _conv_bn(cin, cout // 4, 3, True)
        self.conv5X5_2 = _conv_bn(cout // 4, cout // 4, 3, False)
        self.conv7X7_2 = _conv_bn(cout // 4, cout // 4, 3, True)
        self.conv7x7_3 = _conv_bn(cout // 4, cout // 4, 3, False)

    def forward(self, x):
        c5_1 = self.conv5X5_1(x)
        c7_2 = self.conv7X7_2(c5_1)
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(c5_1), self.conv7x7_3(c7_2)], dim=1))


class _Head(nn.Module):
    def __init__(self, outputs: int, anchors: int = 2, cin: int = 256):
        super().__init__()
        self.conv1x1 = nn.Conv2d(cin, anchors * outputs, 1)
        self.outputs = outputs

    def forward(self, x):
        return self.conv1x1(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.outputs)


class RetinaFace(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = ResNet50Body()
        self.fpn = FPN()
        self.ssh1, self.ssh2, self.ssh3 = SSH(), SSH(), SSH()
        self.ClassHead = nn.ModuleList(_Head(2) for _ in range(3))
        self.BboxHead = nn.ModuleList(_Head(4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(_Head(10) for _ in range(3))

    def forward(self, x) -> Tuple[torch.Tensor, torch.Tensor]:
        """x: [B, 3, H, W] BGR minus the mean -> (box offsets [B, A, 4], face probability [B, A])."""
        feats = [ssh(f) for ssh, f in zip((self.ssh1, self.ssh2, self.ssh3), self.fpn(*self.body(x)))]
        loc = torch.cat([head(f) for head, f in zip(self.BboxHead, feats)], dim=1)
        conf = torch.cat([head(f) for head, f in zip(self.ClassHead, feats)], dim=1)
        return loc, conf.softmax(dim=-1)[..., 1]


# ---------------------------------------------------------------------------------------------
# Boxes


def priors(height: int, width: int) -> torch.Tensor:
    """Anchor boxes [A, 4] as (cx, cy, w, h) relative to the image, in the heads' output order."""
    out = []
    for sizes, step in zip(MIN_SIZES, STEPS):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        for i in range(fh):
            for j in range(fw):
                for s in sizes:
                    out.append(((j + 0.5) * step / width, (i + 0.5) * step / height, s / width, s / height))
    return torch.tensor(out, dtype=torch.float32)


def decode(loc: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Box offsets -> (x1, y1, x2, y2) relative to the image."""
    centre = anchors[:, :2] + loc[..., :2] * VARIANCES[0] * anchors[:, 2:]
    size = anchors[:, 2:] * torch.exp(loc[..., 2:] * VARIANCES[1])
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> List[int]:
    """Greedy non-maximum suppression (areas counted with the +1 pixel convention of the reference)."""
    order = scores.argsort(descending=True)
    areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    keep = []
    while order.numel():
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        lt = torch.maximum(boxes[rest, :2], boxes[i, :2])
        rb = torch.minimum(boxes[rest, 2:], boxes[i, 2:])
        wh = (rb - lt + 1).clamp(min=0)
        inter = wh[:, 0] * wh[:, 1]
        order = rest[inter / (areas[i] + areas[rest] - inter) <= iou]
    return keep


def pixelate(region: np.ndarray, blocks: int = 5) -> np.ndarray:
    """[h, w, 3] uint8 -> the same size in blocks x blocks cells."""
    h, w = region.shape[:2]
    x = torch.from_numpy(region).permute(2, 0, 1)[None].float()
    small = F.interpolate(x, size=(blocks, blocks), mode="bilinear", align_corners=False)
    big = F.interpolate(small, size=(h, w), mode="nearest")
    return big[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


class FaceBlur:
    def __init__(self, net: RetinaFace, device="cpu", threshold: float = 0.7, nms_iou: float = 0.4,
                 top_k: int = 5000, keep_top_k: int = 750, min_size: int = 20):
        self.net, self.device = net.eval().to(device), torch.device(device)
        self.threshold, self.nms_iou, self.top_k, self.keep_top_k, self.min_size = threshold, nms_iou, top_k, keep_top_k, min_size

    @classmethod
    def from_pretrained(cls, path: str, device="cpu") -> "FaceBlur":
        """``path``: Resnet50_Final.pth (a state dict, possibly under ``state_dict`` and ``module.``)."""
        if not os.path.isfile(path):
            raise MissingFileError(f"face detector weights missing: {path}")
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise BadInputError(f"cannot read {path} as weights: {first_line(e)}") from None
        sd = sd.get("state_dict", sd)
        sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
        net = RetinaFace()
        missing, unexpected = net.load_state_dict(sd, strict=False)
        unexpected = [k for k in unexpected if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise BadInputError(f"{path} does not fit RetinaFace-ResNet50: missing {missing[:1]}, unexpected {unexpected[:1]}")
        return cls(net, device)

    def to(self, device) -> "FaceBlur":
        self.device = torch.device(device)
        self.net.to(self.device)
        return self

    @torch.no_grad()
    def detect(self, frame: np.ndarray) -> List[Tuple[int, int, int, int]]:
        """Face boxes (x1, y1, x2, y2) in pixels in one RGB uint8 frame [H, W, 3]."""
        h, w = frame.shape[:2]
        x = torch.from_numpy(frame[..., ::-1].copy()).permute(2, 0, 1)[None].float()
        x = (x - torch.tensor(BGR_MEAN).view(1, 3, 1, 1)).to(self.device)
        loc, score = self.net(x)
        boxes = decode(loc[0].float().cpu(), priors(h, w)) * torch.tensor([w, h, w, h])
        score = score[0].float().cpu()
        keep = score > self.threshold
        boxes, score = boxes[keep], score[keep]
        top = score.argsort(descending=True)[: self.top_k]
        boxes, score = boxes[top], score[top]
        kept = nms(boxes, score, self.nms_iou)[: self.keep_top_k]
        return [tuple(int(v) for v in boxes[i].tolist()) for i in kept]

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """[T, H, W, 3] uint8 with every face of at least min_size pixels pixelated (a copy)."""
        out = frames.copy()
        for frame in out:
            hh, ww = frame.shape[:2]
            for x1, y1, x2, y2 in self.detect(frame):
                if x2 - x1 < self.min_size or y2 - y1 < self.min_size:
                    continue
                ys, xs = slice(max(y1, 0), min(y2, hh)), slice(max(x1, 0), min(x2, ww))
                if frame[ys, xs].size:
                    frame[ys, xs] = pixelate(frame[ys, xs])
        return out
