"""Video2World conditioning as NVIDIA's Cosmos-1.0 applies it at inference (``DiffusionV2WModel``:
``add_condition_video_indicator_and_video_input_mask``, ``augment_conditional_latent_frames``,
``get_x0_fn_from_batch_with_condition_latent``).

The first latent frames of the sample are given: the tokenizer's encoding of the input frames.
At every x0 evaluation, for the condition and the uncondition alike:
1. those frames of the network's input are replaced by the given latent plus a little noise (the
   seeded initial normals times the augment sigma 0.001), scaled as if at that sigma;
2. the network also reads a mask channel marking them;
3. those frames of the x0 prediction are replaced by the given latent.
Guidance then leaves them exactly equal to it, and so does the sampler's final x0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .edm import AUGMENT_SIGMA, EDMDenoiser, edm_coefficients


def conditioned_latent_frames(num_input_frames: int, temporal_compression: int = 8) -> int:
    """Latent frames a causal tokenizer makes of the first `num_input_frames` frames: 1 -> 1, 9 -> 2
    (latent 0 is frame 0, each next one 8 frames)."""
    return (num_input_frames - 1) // temporal_compression + 1


def frame_indicator(num_latent_frames: torch.Tensor, t: int, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, t, 1, 1]: 1 on each sample's first `num_latent_frames` [B] latent frames, else 0."""
    frames = torch.arange(t, device=num_latent_frames.device)
    return (frames[None] < num_latent_frames[:, None]).to(dtype).view(-1, 1, t, 1, 1)


def augmented_condition(gt: torch.Tensor, normals: torch.Tensor, sigma: torch.Tensor, augment_sigma: torch.Tensor,
                        sigma_data: float) -> torch.Tensor:
    """The conditioning frames' network input before the EDM input scaling at `sigma`: the given
    latent plus `augment_sigma` times the normals, scaled by c_in(augment_sigma) / c_in(sigma), so
    that the network sees them as at the augment sigma. In the reference's order and dtypes: the
    augment sigma and its c_in in the model dtype, sigma's c_in in float32, multiplied by its
    reciprocal."""
    augmented = gt + normals * augment_sigma.view(-1, 1, 1, 1, 1)
    augmented = augmented * edm_coefficients(augment_sigma, sigma_data)[2].view(-1, 1, 1, 1, 1)
    c_in = edm_coefficients(sigma, sigma_data)[2].view(-1, 1, 1, 1, 1)
    return augmented * (1 / c_in)


@dataclass
class VideoCondition:
    """What one Video2World sample is conditioned on."""

    latent: torch.Tensor
    """[1, C, T, H, W]: the encoded conditioning video (x sigma_data), in the DiT's dtype; only its
    first `num_latent_frames` frames are used."""
    num_latent_frames: int
    normals: torch.Tensor
    """[1, C, T, H, W] float32 standard normals of the augmentation noise: the same numbers as the
    initial noise (before x sigma_max), as the reference draws them."""
    augment_sigma: float = AUGMENT_SIGMA


class ConditionedDenoiser:
    """x0 = D(x_t, sigma; text) of a Video2World DiT with the conditioning frames in place. Keeps
    the reference's one piece of state: once an x0 evaluation is asked for at a sigma no larger than
    the augment sigma, the frames are no longer replaced (never with the published schedule,
    whose smallest sigma is 0.002)."""

    def __init__(self, denoiser: EDMDenoiser, condition: VideoCondition):
        dtype = denoiser.dtype
        latent = condition.latent
        t = latent.shape[2]
        if not 1 <= condition.num_latent_frames < t:
            raise ValueError(f"{condition.num_latent_frames} conditioned latent frames of {t}")
        self.denoiser = denoiser
        self.gt = latent.to(dtype)
        self.normals = condition.normals.to(latent.device, torch.float32)
        self.indicator = frame_indicator(torch.tensor([condition.num_latent_frames], device=latent.device), t, dtype)
        # the network's mask channel is made once, before any evaluation, from the indicator
        self.mask = self.indicator.expand(1, 1, t, *latent.shape[3:]).contiguous()
        self.augment_sigma_value = condition.augment_sigma
        self.augment_sigma = torch.tensor([condition.augment_sigma], dtype=dtype, device=latent.device)

    def network_input(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x (float32) with the conditioning frames replaced by their augmented_condition."""
        if self.augment_sigma_value >= float(sigma.flatten()[0]):
            self.indicator = self.indicator * 0
        augmented = augmented_condition(self.gt, self.normals, sigma, self.augment_sigma, self.denoiser.sigma_data)
        return self.indicator * augmented + (1 - self.indicator) * x

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor, fps=None) -> torch.Tensor:
        b = x.shape[0]
        x0 = self.denoiser(self.network_input(x, sigma), sigma, text, fps=fps,
                           condition_mask=self.mask.expand(b, *self.mask.shape[1:]))
        return self.indicator * self.gt + (1 - self.indicator) * x0
