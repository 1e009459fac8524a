"""Text2World generation: prompt -> T5 -> RES sampling of the DiT with guidance -> tokenizer decode.

Follows NVIDIA's Cosmos-1.0 pipeline step for step (docs/generation.md lists the details): the prompt and the negative prompt are encoded separately, the noise is numpy's
RandomState(seed), guidance combines x0 predictions, and frames are truncated (not rounded) to uint8.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from .diffusion import SIGMA_DATA, EDMDenoiser, guided_x0, initial_noise, res_2ab_sample
from .models import CosmosDiT
from .text import MAX_TOKENS, T5TextEncoder
from .tokenizer import CV8x8x8Tokenizer, TokenizerConfig, latent_shape

log = logging.getLogger("nemo_cosmos")

DEFAULT_NEGATIVE_PROMPT = (
    "The video captures a series of frames showing ugly scenes, static with no motion, motion blur, "
    "over-saturation, shaky footage, low resolution, grainy texture, pixelated images, poorly lit areas, "
    "underexposed and overexposed scenes, poor color balance, washed out colors, choppy sequences, jerky "
    "movements, low frame rate, artifacting, color banding, unnatural transitions, outdated special effects, "
    "fake elements, unconvincing visuals, poorly edited content, jump cuts, visual noise, and flickering. "
    "Overall, the video is of poor quality."
)


def subject_prompt(prompt: str, subject_name: Optional[str]) -> str:
    """General post-training's prompt: "A video of sks {subject}. {prompt}" (or the prompt alone)."""
    return f"A video of sks {subject_name}. {prompt}" if subject_name else prompt


@dataclass
class Generation:
    frames: Optional[np.ndarray]  # [T, H, W, 3] uint8; None on context-parallel ranks other than 0
    latent: torch.Tensor  # [1, 16, T', H/8, W/8] float32, in the DiT's space (x sigma_data)
    timings: Dict[str, float] = field(default_factory=dict)


class Text2WorldPipeline:
    """With a context-parallel `group`, every rank runs the DiT on its share of the tokens; only the
    group's first rank needs (and is given) the text encoder and the tokenizer: it encodes the
    prompts, broadcasts the embeddings, and decodes the result."""

    def __init__(
        self,
        dit: CosmosDiT,
        tokenizer: Optional[CV8x8x8Tokenizer],
        text_encoder: Optional[T5TextEncoder],
        device="cpu",
        offload_text_encoder: bool = False,
        offload_tokenizer: bool = False,
        tokenizer_config: Optional[TokenizerConfig] = None,
        group=None,
        batch_guidance: bool = False,
    ):
        self.group = group if group is not None and dist.get_world_size(group) > 1 else None
        self.is_main = self.group is None or dist.get_rank(self.group) == 0
        if self.is_main and (tokenizer is None or text_encoder is None):
            raise ValueError("the first rank needs the tokenizer and the text encoder")
        self.dit, self.tokenizer, self.text_encoder = dit.eval(), tokenizer, text_encoder
        self.tok_cfg = tokenizer.cfg if tokenizer is not None else tokenizer_config
        self.device = torch.device(device)
        self.offload_text_encoder, self.offload_tokenizer = offload_text_encoder, offload_tokenizer
        # guidance's two predictions as one batch-2 forward: same result, twice the activations
        self.batch_guidance = batch_guidance
        self.dit.to(self.device)
        if self.tokenizer is not None:
            self.tokenizer.eval()
            if not offload_tokenizer:
                self.tokenizer.to(self.device)
        if self.text_encoder is not None and not offload_text_encoder:
            self.text_encoder.to(self.device)

    @contextmanager
    def _on_device(self, module, offloaded: bool):
        """Offloaded modules live on the CPU and visit the GPU only while they work."""
        if offloaded:
            module.to(self.device)
        try:
            yield module
        finally:
            if offloaded:
                module.to("cpu")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

    def _elapsed(self, t0: float) -> float:
        """Seconds since t0 once the GPU has finished what was queued (kernels run asynchronously)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0

    def encode_text(self, prompt: str, negative_prompt: str):
        if self.is_main:
            # offloaded, T5 stays on the CPU and its blocks visit the GPU one at a time
            device = self.device if self.offload_text_encoder else None
            cond = self.text_encoder.encode([prompt], device=device).to(self.device)
            # An empty negative prompt means "no text": the reference drops the embedding to zeros.
            uncond = (self.text_encoder.encode([negative_prompt], device=device).to(self.device)
                      if negative_prompt else torch.zeros_like(cond))
        else:
            cond = torch.empty(1, MAX_TOKENS, self.dit.config.crossattn_dim, device=self.device)
            uncond = torch.empty_like(cond)
        if self.group is not None:
            src = dist.get_global_rank(self.group, 0)
            for t in (cond, uncond):
                dist.broadcast(t, src=src, group=self.group)
        return cond, uncond

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
        guidance: float = 7.0,
        num_steps: int = 35,
        height: int = 704,
        width: int = 1280,
        num_frames: int = 121,
        fps: int = 24,
        seed: int = 1,
        progress: bool = True,
    ) -> Generation:
        timings: Dict[str, float] = {}
        t0 = time.perf_counter()
        cond, uncond = self.encode_text(prompt, negative_prompt)
        timings["text_encoding_s"] = self._elapsed(t0)
        log.info("text encoding: %.2f s", timings["text_encoding_s"])

        shape = (1, *latent_shape(self.tok_cfg, num_frames, height, width))
        x_init = initial_noise(shape, seed, device=self.device)
        denoiser = EDMDenoiser(self.dit, SIGMA_DATA)

        both_text = torch.cat([cond, uncond]) if self.batch_guidance else None
        evaluations = 0

        def x0_fn(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            nonlocal evaluations
            evaluations += 1
            if both_text is not None:
                return guided_x0(*denoiser(torch.cat([x, x]), sigma, both_text, fps=fps).chunk(2), guidance)
            return guided_x0(denoiser(x, sigma, cond, fps=fps), denoiser(x, sigma, uncond, fps=fps), guidance)

        t0 = time.perf_counter()
        bar = tqdm(total=num_steps, desc="sampling", disable=not progress, unit="step")
        latent = res_2ab_sample(x0_fn, x_init, num_steps=num_steps, on_step=lambda i: bar.update(1))
        bar.close()
        timings["sampling_s"] = self._elapsed(t0)
        timings["x0_evaluations"] = evaluations
        log.info("sampling (%d steps): %.2f s", num_steps, timings["sampling_s"])

        if not self.is_main:
            return Generation(frames=None, latent=latent.float().cpu(), timings=timings)
        t0 = time.perf_counter()
        with self._on_device(self.tokenizer, self.offload_tokenizer) as tok:
            video = tok.decode(latent / SIGMA_DATA)
        video = (1.0 + video.float()).clamp(0, 2) / 2
        frames = (video[0].permute(1, 2, 3, 0) * 255).to(torch.uint8).cpu().numpy()  # truncation
        timings["decoding_s"] = self._elapsed(t0)
        log.info("decoding: %.2f s", timings["decoding_s"])
        return Generation(frames=frames, latent=latent.float().cpu(), timings=timings)
