"""Cosmos-1.0-Tokenizer-CV8x8x8: the continuous causal video autoencoder of the Text2World models
(8x in time, 8x8 in space, 16 latent channels; 121 frames -> 16 latent frames).

Module names follow NVIDIA's network (``encoder.down.0.block.1.conv1.0.conv3d.weight`` ...), so the
weights inside the published TorchScript files load as they are (see ``jit_weights.py``).
Frames are [B, 3, T, H, W] in [-1, 1]; T = 8k + 1 (the first frame is encoded on its own: causal).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import BadInputError, MissingFileError, first_line
from ..presets import TOKENIZER_REPO
from .jit_weights import read_torchscript_weights

_HAAR = 1.0 / math.sqrt(2.0)
WEIGHTS_FILE, CONFIG_FILE = "tokenizer.safetensors", "config.json"


@dataclass
class TokenizerConfig:
    in_channels: int = 3
    latent_channels: int = 16
    encoder_channels: Tuple[int, ...] = (128, 256, 512, 512)
    decoder_channels: Tuple[int, ...] = (256, 512, 512, 512)
    num_res_blocks: int = 2
    patch_size: int = 4
    spatial_compression: int = 8
    temporal_compression: int = 8
    pixel_chunk_frames: int = 121
    """The published tokenizer encodes 121-frame chunks independently (16 latent frames each)."""

    def to_dict(self) -> dict:
        return {f.name: list(v) if isinstance(v, tuple) else v
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    @classmethod
    def from_dict(cls, d: dict) -> "TokenizerConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise BadInputError(f"unknown tokenizer config field {unknown[0]!r}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    @property
    def latent_chunk_frames(self) -> int:
        return (self.pixel_chunk_frames - 1) // self.temporal_compression + 1

    @property
    def resampling_levels(self) -> int:
        """Levels that halve time and space: what the Haar patching (patch_size) does not."""
        levels = int(math.log2(self.spatial_compression)) - int(math.log2(self.patch_size))
        if levels != int(math.log2(self.temporal_compression)) - int(math.log2(self.patch_size)):
            raise ValueError("this tokenizer resamples time and space together; give equal compressions")
        return levels


def tiny_tokenizer_config(**overrides) -> TokenizerConfig:
    params = dict(encoder_channels=(8, 16, 16, 16), decoder_channels=(16, 16, 16, 16), pixel_chunk_frames=17)
    params.update(overrides)
    return TokenizerConfig(**params)


def check_num_frames(cfg: TokenizerConfig, num_frames: int) -> None:
    """BadInputError unless the tokenizer can take `num_frames` frames in one chunk: 8k+1."""
    if num_frames < 1 or (num_frames - 1) % cfg.temporal_compression or num_frames > cfg.pixel_chunk_frames:
        raise BadInputError(
            f"the tokenizer takes 8k+1 frames, at most {cfg.pixel_chunk_frames} (e.g. 1, 9, ..., "
            f"{cfg.pixel_chunk_frames}); got {num_frames}"
        )


def latent_shape(cfg: TokenizerConfig, num_frames: int, height: int, width: int) -> Tuple[int, int, int, int]:
    """(channels, T, H, W) of the latent of a num_frames x height x width video."""
    check_num_frames(cfg, num_frames)
    s = cfg.spatial_compression
    return cfg.latent_channels, (num_frames - 1) // cfg.temporal_compression + 1, height // s, width // s


# ----------------------------------------------------------------------------------------------
# Haar wavelet patching (two levels for patch size 4)


def _haar_split(x: torch.Tensor, dim: int) -> Tuple[torch.Tensor, torch.Tensor]:
    n = x.shape[dim] // 2 * 2  # the reflect-padded sample past an even length is never used
    even = x.narrow(dim, 0, n).unflatten(dim, (n // 2, 2))
    e, o = even.select(dim + 1, 0), even.select(dim + 1, 1)
    return _HAAR * (e + o), _HAAR * (e - o)


def haar_patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Repeat the first frame patch_size times (causality), then log2(patch_size) levels of a 3D
    Haar transform with stride 2; channels come out band-major (band = 4*t + 2*h + w, low first)."""
    x = torch.cat([x[:, :, :1].repeat_interleave(patch_size, dim=2), x[:, :, 1:]], dim=2)
    for _ in range(int(math.log2(patch_size))):
        x = F.pad(x, (0, 1, 0, 1, 0, 1), mode="reflect")
        bands = [x]
        for dim in (2, 3, 4):
            bands = [part for b in bands for part in _haar_split(b, dim)]
        x = torch.cat(bands, dim=1) / math.sqrt(8.0)
    return x


def _haar_merge(low: torch.Tensor, high: torch.Tensor, dim: int) -> torch.Tensor:
    pair = torch.stack([_HAAR * (low + high), _HAAR * (low - high)], dim=dim + 1)
    return pair.flatten(dim, dim + 1)


def haar_unpatchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    for _ in range(int(math.log2(patch_size))):
        bands = list(x.chunk(8, dim=1))
        for dim in (4, 3, 2):  # undo w, then h, then t
            bands = [_haar_merge(bands[i], bands[i + 1], dim) for i in range(0, len(bands), 2)]
        x = bands[0] * math.sqrt(8.0)
    return x[:, :, patch_size - 1 :]


# ----------------------------------------------------------------------------------------------
# Causal building blocks


class CausalConv3d(nn.Module):
    """Conv3d that pads time by repeating the first frame (so frame t sees only frames <= t)."""

    def __init__(self, cin, cout, kernel=(3, 3, 3), stride=(1, 1, 1), spatial_pad: int = 1):
        super().__init__()
        kernel = (kernel,) * 3 if isinstance(kernel, int) else tuple(kernel)
        stride = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        self.conv3d = nn.Conv3d(cin, cout, kernel, stride=stride)
        self.time_pad = kernel[0] - 1 + 1 - stride[0]
        self.spatial_pad = spatial_pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_pad:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1), x], dim=2)
        if self.spatial_pad:
            p = self.spatial_pad
            x = F.pad(x, (p, p, p, p, 0, 0))
        return self.conv3d(x)


def factorized_conv(cin: int, cout: int) -> nn.Sequential:
    """A 1x3x3 spatial conv then a 3x1x1 causal temporal conv."""
    return nn.Sequential(CausalConv3d(cin, cout, (1, 3, 3), spatial_pad=1), CausalConv3d(cout, cout, (3, 1, 1), spatial_pad=0))


class CausalNormalize(nn.Module):
    """GroupNorm with one group, per frame (statistics never mix frames)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(1, channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(x.transpose(1, 2).reshape(b * t, c, h, w))
        return y.reshape(b, t, c, h, w).transpose(1, 2)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = CausalNormalize(cin)
        self.conv1 = factorized_conv(cin, cout)
        self.norm2 = CausalNormalize(cout)
        self.conv2 = factorized_conv(cout, cout)
        self.nin_shortcut = CausalConv3d(cin, cout, 1, spatial_pad=0) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head attention with a residual: over H*W within each frame (spatial), or over frames
    at each pixel with a causal mask (temporal)."""

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.norm = CausalNormalize(channels)
        self.q, self.k, self.v, self.proj_out = (CausalConv3d(channels, channels, 1, spatial_pad=0) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(x)
        if self.temporal:  # [B, C, T, H, W] -> [B*H*W, 1, T, C]
            seq = lambda z: z.permute(0, 3, 4, 2, 1).reshape(b * h * w, 1, t, c)  # noqa: E731
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        else:  # -> [B*T, 1, H*W, C]
            seq = lambda z: z.permute(0, 2, 3, 4, 1).reshape(b * t, 1, h * w, c)  # noqa: E731
            mask = None
        out = sliced_attention(seq(self.q(y)), seq(self.k(y)), seq(self.v(y)), mask)
        if self.temporal:
            out = out.reshape(b, h, w, t, c).permute(0, 4, 3, 1, 2)
        else:
            out = out.reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3)
        return x + self.proj_out(out)


SCORE_BUDGET = 2**27
"""Most attention scores one SDPA call may hold (sequences x length^2)."""


def sliced_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """SDPA over slices of the leading dimension (independent sequences). No fused kernel takes the
    single 512-wide head, so the math kernel materialises every score: at 704x1280 the spatial
    attention of all 16 latent frames at once (16 x 14,080^2) would need ~29 GiB."""
    step = max(1, SCORE_BUDGET // (q.shape[2] * k.shape[2]))
    if step >= q.shape[0]:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out = q.new_empty(q.shape[:-1] + v.shape[-1:])
    for i in range(0, q.shape[0], step):
        out[i : i + step] = F.scaled_dot_product_attention(q[i : i + step], k[i : i + step], v[i : i + step], attn_mask=mask)
    return out


class Downsample(nn.Module):
    """Halve H, W and T: strided conv plus average pooling, then a 1x1x1 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = CausalConv3d(channels, channels, (1, 3, 3), stride=(1, 2, 2), spatial_pad=0)
        self.conv2 = CausalConv3d(channels, channels, (3, 1, 1), stride=(2, 1, 1), spatial_pad=0)
        self.conv3 = CausalConv3d(channels, channels, 1, spatial_pad=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 1, 0, 1, 0, 0))
        x = self.conv1(x) + F.avg_pool3d(x, (1, 2, 2), (1, 2, 2))
        x = torch.cat([x[:, :, :1], x], dim=2)
        x = self.conv2(x) + F.avg_pool3d(x, (2, 1, 1), (2, 1, 1))
        return self.conv3(x)


class Upsample(nn.Module):
    """Double T (2T - 1 frames: causal) and H, W by repetition, each followed by a residual conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = CausalConv3d(channels, channels, (3, 1, 1), spatial_pad=0)
        self.conv2 = CausalConv3d(channels, channels, (1, 3, 3), spatial_pad=1)
        self.conv3 = CausalConv3d(channels, channels, 1, spatial_pad=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] > 1:  # a single (first) frame stays single: causal
            x = x.repeat_interleave(2, dim=2)[:, :, 1:]
        x = self.conv1(x) + x
        x = x.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)
        x = self.conv2(x) + x
        return self.conv3(x)


class MidBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = nn.Sequential(AttnBlock(channels, temporal=False), AttnBlock(channels, temporal=True))
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Level(nn.Module):
    """One resolution level: res blocks, then (optionally) a resampler."""

    def __init__(self, cin: int, cout: int, num_blocks: int, resample: Optional[type]):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(cin if i == 0 else cout, cout) for i in range(num_blocks))
        if resample is Downsample:
            self.downsample = Downsample(cout)
        elif resample is Upsample:
            self.upsample = Upsample(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        for name in ("downsample", "upsample"):
            if hasattr(self, name):
                x = getattr(self, name)(x)
        return x


class Encoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        ch = cfg.encoder_channels
        self.patch_size = cfg.patch_size
        self.conv_in = factorized_conv(cfg.in_channels * cfg.patch_size**3, ch[0])
        n_resample = cfg.resampling_levels
        self.down = nn.ModuleList(
            Level(ch[i], ch[i + 1], cfg.num_res_blocks, Downsample if i < n_resample else None)
            for i in range(len(ch) - 1)
        )
        self.mid = MidBlock(ch[-1])
        self.norm_out = CausalNormalize(ch[-1])
        self.conv_out = factorized_conv(ch[-1], cfg.latent_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(haar_patchify(x, self.patch_size))
        for level in self.down:
            x = level(x)
        return self.conv_out(F.silu(self.norm_out(self.mid(x))))


class Decoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        ch = list(reversed(cfg.decoder_channels))
        self.patch_size = cfg.patch_size
        self.conv_in = factorized_conv(cfg.latent_channels, ch[0])
        self.mid = MidBlock(ch[0])
        n = len(ch) - 1
        n_resample = cfg.resampling_levels
        # NVIDIA stores the levels lowest-resolution last (up.N-1 runs first); the up-sampling
        # levels are those right after the first one.
        levels = [
            Level(ch[i], ch[i + 1], cfg.num_res_blocks + 1, Upsample if 0 < i <= n_resample else None)
            for i in range(n)
        ]
        self.up = nn.ModuleList(reversed(levels))
        self.norm_out = CausalNormalize(ch[-1])
        self.conv_out = factorized_conv(ch[-1], cfg.in_channels * cfg.patch_size**3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            x = level(x)
        return haar_unpatchify(self.conv_out(F.silu(self.norm_out(x))), self.patch_size)


class CV8x8x8Tokenizer(nn.Module):
    """Encoder/decoder plus the latent normalisation of the Text2World pipeline.

    ``encode`` returns normalised latents (z - mean) / std; ``decode`` takes them back to frames.
    (The diffusion model works on 0.5 times these: sigma_data; the pipeline applies that.)
    """

    def __init__(self, cfg: TokenizerConfig = TokenizerConfig()):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quant_conv = CausalConv3d(cfg.latent_channels, cfg.latent_channels, 1, spatial_pad=0)
        self.post_quant_conv = CausalConv3d(cfg.latent_channels, cfg.latent_channels, 1, spatial_pad=0)
        self.decoder = Decoder(cfg)
        stats = torch.zeros(1, cfg.latent_channels, cfg.latent_chunk_frames, 1, 1)
        self.register_buffer("latent_mean", stats.clone())
        self.register_buffer("latent_std", torch.ones_like(stats))

    def encode_raw(self, video: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(video))

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = video.shape
        s = self.cfg.spatial_compression
        if c != self.cfg.in_channels or h % s or w % s:
            raise ValueError(f"video must be [B, 3, T, H, W] with H and W multiples of {s}; got {list(video.shape)}")
        check_num_frames(self.cfg, t)
        dtype = self.quant_conv.conv3d.weight.dtype
        z = self.encode_raw(video.to(dtype)).to(video.dtype)
        n = z.shape[2]
        return (z - self.latent_mean[:, :, :n]) / self.latent_std[:, :, :n]

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        n = latent.shape[2]
        if latent.dim() != 5 or latent.shape[1] != self.cfg.latent_channels or n > self.cfg.latent_chunk_frames:
            raise ValueError(
                f"latent must be [B, {self.cfg.latent_channels}, T<={self.cfg.latent_chunk_frames}, H, W]; "
                f"got {list(latent.shape)}"
            )
        z = latent * self.latent_std[:, :, :n] + self.latent_mean[:, :, :n]
        dtype = self.quant_conv.conv3d.weight.dtype
        return self.decode_raw(z.to(dtype)).to(latent.dtype)

    def set_latent_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """From mean_std.pt: each a flat vector viewed as [channels, frames]; the first
        latent_chunk_frames columns are the per-channel, per-latent-frame statistics."""
        c, n = self.cfg.latent_channels, self.cfg.latent_chunk_frames
        for name, v in (("latent_mean", mean), ("latent_std", std)):
            v = v.reshape(c, -1)
            if v.shape[1] < n:
                raise BadInputError(f"mean_std.pt holds {v.shape[1]} frames of statistics; need {n}")
            getattr(self, name).copy_(v[:, :n].reshape(1, c, n, 1, 1))

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Our own format: ``tokenizer.safetensors`` (every tensor, latent statistics included) and
        ``config.json`` (the architecture), which from_pretrained reads back."""
        from safetensors.torch import save_file

        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                  os.path.join(directory, WEIGHTS_FILE))
        with open(os.path.join(directory, CONFIG_FILE), "w") as f:
            json.dump(self.cfg.to_dict(), f, indent=2)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, cfg: Optional[TokenizerConfig] = None,
                        dtype: torch.dtype = torch.bfloat16) -> "CV8x8x8Tokenizer":
        """Load a tokenizer folder: ours (tokenizer.safetensors + config.json, see save_pretrained),
        or the published one (mean_std.pt plus autoencoder.jit, or encoder.jit + decoder.jit; read
        as data only: no TorchScript or pickle code runs). The architecture is the folder's
        config.json, else `cfg`, else the published CV8x8x8's."""
        directory = os.fspath(directory)
        if not os.path.isdir(directory):
            raise MissingFileError(f"tokenizer folder not found: {directory}")
        config_file = os.path.join(directory, CONFIG_FILE)
        if os.path.isfile(config_file):
            try:
                with open(config_file, encoding="utf-8") as f:
                    cfg = TokenizerConfig.from_dict(json.load(f))
            except (OSError, ValueError, TypeError) as e:
                raise BadInputError(f"cannot read {config_file}: {first_line(e)}") from None
        cfg = cfg if cfg is not None else TokenizerConfig()
        ours = os.path.join(directory, WEIGHTS_FILE)
        if os.path.isfile(ours):
            from safetensors.torch import load_file

            model = cls(cfg)
            try:
                weights = load_file(ours)
            except Exception as e:  # truncated or not safetensors
                raise BadInputError(f"cannot read {ours} as safetensors: {first_line(e)}") from None
            _check_fits(model, weights, directory, required=model.state_dict().keys())
            model.load_state_dict(weights, strict=True)
            return model.to(dtype).eval()
        hint = f"download it with: python -m nemo_cosmos.recipes.download (it fetches {TOKENIZER_REPO})"
        jits = ["autoencoder.jit"] if os.path.isfile(os.path.join(directory, "autoencoder.jit")) else ["encoder.jit", "decoder.jit"]
        for name in jits + ["mean_std.pt"]:
            if not os.path.isfile(os.path.join(directory, name)):
                raise MissingFileError(f"tokenizer file missing: {os.path.join(directory, name)}; {hint}")
        weights = {}
        for name in jits:
            weights.update(read_torchscript_weights(os.path.join(directory, name)))
        model = cls(cfg)
        own = model.state_dict()
        weights = {k: v for k, v in weights.items() if k in own or not _is_buffer_name(k)}
        _check_fits(model, weights, directory, required=[k for k in own if not k.startswith("latent_")])
        model.load_state_dict(weights, strict=False)
        stats = os.path.join(directory, "mean_std.pt")
        try:
            mean, std = torch.load(stats, map_location="cpu", weights_only=True)
            if not (isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor)):
                raise TypeError("expected two tensors")
            model.set_latent_stats(mean.float(), std.float())
        except BadInputError:
            raise
        except Exception as e:
            raise BadInputError(f"cannot read {stats} as a (mean, std) pair of tensors: {first_line(e)}") from None
        return model.to(dtype).eval()


def _check_fits(model: nn.Module, weights: dict, directory: str, required) -> None:
    own = model.state_dict()
    missing = sorted(k for k in required if k not in weights)
    unexpected = sorted(k for k in weights if k not in own)
    if missing or unexpected:
        what = f"lacks {missing[0]!r}" if missing else f"has unexpected {unexpected[0]!r}"
        raise BadInputError(f"tokenizer weights in {directory} do not fit this CV8x8x8 config: the file {what}")
    for k, v in weights.items():
        if v.shape != own[k].shape:
            raise BadInputError(f"tokenizer tensor {k!r} in {directory} has shape {list(v.shape)}, "
                                f"expected {list(own[k].shape)}")


def _is_buffer_name(key: str) -> bool:
    """Buffers of NVIDIA's patcher/unpatcher: constants our code computes."""
    return key.rsplit(".", 1)[-1] in ("wavelets", "_arange", "patch_size_buffer")
