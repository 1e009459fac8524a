"""Text2World and Video2World generation: prompt -> guardrails (and the optional upsampler) -> T5
-> (Video2World: the input frames encoded) -> RES sampling of the DiT with guidance -> tokenizer
decode -> video guardrail.

    from nemo_cosmos import Text2WorldPipeline, Video2WorldPipeline
    pipe = Text2WorldPipeline.from_pretrained("cosmos-demo")
    pipe("a red circle moving up")[0].save("circle.mp4")
    Video2WorldPipeline.from_pretrained("cosmos-demo-video2world")("a red circle moving up", video="circle.mp4")

Follows NVIDIA's Cosmos-1.0 pipeline step for step (docs/generation.md lists the details): the prompt
and the negative prompt are encoded separately, the noise is numpy's RandomState(seed), guidance
combines x0 predictions, and frames are truncated (not rounded) to uint8. ("tokenizer" is NVIDIA's
name for the video autoencoder, diffusers' "vae"; T5's own tokenizer lives inside ``text_encoder``.)
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from .diffusion import (SIGMA_DATA, ConditionedDenoiser, EDMDenoiser, VideoCondition, guided_x0, res_2ab_sample,
                        seeded_normals)
from .diffusion.res_sampler import SIGMA_MAX
from .errors import BadInputError, shorten
from .models import CosmosDiT
from .models.config import CosmosDiTConfig, config_to_dict
from .parallel import is_main, parallelize_dit
from .presets import TEXT2WORLD, VIDEO2WORLD, GenerationDefaults, family_of, subject_prompt
from .text import MAX_TOKENS, T5TextEncoder
from .tokenizer import CV8x8x8Tokenizer, TokenizerConfig, check_num_frames, latent_shape

log = logging.getLogger("nemo_cosmos")

MAX_GUIDANCE = 100.0
MAX_FPS = 240
MAX_STEPS = 1000


@dataclass
class Generation:
    """One generated video and what made it."""

    frames: Optional[np.ndarray]
    """[T, H, W, 3] uint8; None for output_type="latent" and on context-parallel ranks other than 0."""
    latent: torch.Tensor
    """[1, 16, T', H/8, W/8] float32, in the DiT's space (x sigma_data)."""
    prompt: str = ""
    """The final prompt the DiT was given (after the upsampler and the subject prefix)."""
    upsampled_prompt: Optional[str] = None
    seed: Optional[int] = None
    settings: Dict[str, Any] = field(default_factory=dict)
    timings: Dict[str, float] = field(default_factory=dict)
    dit_config: Dict[str, Any] = field(default_factory=dict)

    def sidecar(self) -> Dict[str, Any]:
        return {"settings": self.settings, "final_prompt": self.prompt, "upsampled_prompt": self.upsampled_prompt,
                "timings": self.timings, "dit_config": self.dit_config}

    def save(self, path: str, save_latent: bool = False) -> List[str]:
        """Write the video (mp4, H.264; or GIF when `path` ends in .gif) and ``<stem>.json`` (every
        setting, the final prompt, stage timings), and with `save_latent` ``<stem>.latent.pt``: all
        replaced together or not at all. Returns the paths written."""
        from .utils.io import write_outputs

        if self.frames is None:
            raise ValueError("this result holds no frames (output_type='latent', or not the first rank)")
        t0 = time.perf_counter()
        written = write_outputs(path, self.frames, self.settings.get("fps", 24), self.sidecar(),
                                latent=self.latent if save_latent else None)
        self.timings["writing_s"] = time.perf_counter() - t0
        log.info("wrote %s (%d frames, %dx%d, %s fps)", path, len(self.frames), self.frames.shape[2],
                 self.frames.shape[1], self.settings.get("fps"))
        return written


def check_settings(dit: CosmosDiTConfig, tok: TokenizerConfig, *, height: int, width: int, num_frames: int,
                   num_steps: int, fps: float, guidance: float, seed: Optional[int] = None,
                   cp_size: int = 1) -> None:
    """BadInputError for a setting the model cannot take; needs configs only, no weights."""
    step = tok.spatial_compression * dit.patch_spatial
    max_h, max_w = (n * tok.spatial_compression for n in dit.max_latent_size[1:])
    for name, value, top in (("height", height, max_h), ("width", width, max_w)):
        if value % step or not step <= value <= top:
            raise BadInputError(f"--{name} {value} must be a multiple of {step} between {step} and {top}")
    check_num_frames(tok, num_frames)
    if not 1 <= num_steps <= MAX_STEPS:
        raise BadInputError(f"--num_steps must be between 1 and {MAX_STEPS}; got {num_steps}")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and 0 < fps <= MAX_FPS):
        raise BadInputError(f"--fps must be between 1 and {MAX_FPS}; got {fps}")
    if not (math.isfinite(guidance) and abs(guidance) <= MAX_GUIDANCE):
        raise BadInputError(f"--guidance must be a finite number of at most {MAX_GUIDANCE:g}; got {guidance}")
    if seed is not None and not 0 <= seed < 2**32:
        raise BadInputError(f"--seed must be between 0 and 2**32 - 1 (numpy's RandomState); got {seed}")
    if cp_size > 1:
        from .parallel.context_parallel import check_split

        _, t, h, w = latent_shape(tok, num_frames, height, width)
        pt, ph, pw = dit.patch_size
        check_split(dit.num_attention_heads, (t // pt) * (h // ph) * (w // pw), cp_size, "--cp_size", "this size")


def resolve_device(name: Optional[str], fp8: bool = False) -> torch.device:
    """The device to run on: `name` ("cuda", "cuda:N", "cpu"), or the GPU when there is one;
    BadInputError for a device this machine does not have, or FP8 without a capable GPU."""
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BadInputError(f"unknown device {name!r}; expected cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise BadInputError(f"device {name!r} is not supported; expected cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInputError(f"device {name!r}: this machine has no CUDA GPU (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BadInputError(f"device {name!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    if fp8 and not (device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)):
        raise BadInputError("--fp8 needs an NVIDIA GPU of compute capability 8.9 or newer (Ada, Hopper)")
    return device


_WARNED_NO_GUARDRAILS = False


def _warn_no_guardrails(why: str) -> None:
    global _WARNED_NO_GUARDRAILS
    if not _WARNED_NO_GUARDRAILS:
        _WARNED_NO_GUARDRAILS = True
        log.warning("guardrails off (%s): no prompt or video safety checks, no face blurring; research use only", why)


class Text2WorldPipeline:
    """The DiT, the video tokenizer and the T5 text encoder, with the guardrails and the prompt
    upsampler as optional components (``from_pretrained`` adds the guardrails by default, as NVIDIA's
    release does). With a context-parallel `group`, every rank runs the DiT on its share of the
    tokens; only the group's first rank needs the other components: it checks and encodes the
    prompts, broadcasts the embeddings, and decodes the result.

    The DiT reaches `device` at the first generation, after the prompt checks, with the run-time
    transforms (FP8, context parallel, compilation; ``parallelize_dit``) applied then."""

    def __init__(
        self,
        dit: CosmosDiT,
        tokenizer: Optional[CV8x8x8Tokenizer],
        text_encoder: Optional[T5TextEncoder],
        device="cpu",
        *,
        offload_text_encoder: bool = False,
        offload_tokenizer: bool = False,
        text_guardrail=None,
        video_guardrail=None,
        prompt_upsampler=None,
        check_prompt: Optional[Callable[[str, Optional[str]], None]] = None,
        guardrails: Optional[bool] = None,
        defaults: GenerationDefaults = GenerationDefaults(),
        name: str = "custom",
        tokenizer_config: Optional[TokenizerConfig] = None,
        group=None,
        fp8: bool = False,
        compile: bool = False,
        batch_guidance: bool = False,
    ):
        self.group = group if group is not None and dist.get_world_size(group) > 1 else None
        self.is_main = is_main(self.group)
        if self.is_main and (tokenizer is None or text_encoder is None):
            raise ValueError("the first rank needs the tokenizer and the text encoder")
        self.dit, self.tokenizer, self.text_encoder = dit.eval(), tokenizer, text_encoder
        self.tok_cfg = tokenizer.cfg if tokenizer is not None else (tokenizer_config or TokenizerConfig())
        self.device = torch.device(device)
        self.offload_text_encoder, self.offload_tokenizer = offload_text_encoder, offload_tokenizer
        self.text_guardrail, self.video_guardrail, self.prompt_upsampler = text_guardrail, video_guardrail, prompt_upsampler
        self.check_prompt = check_prompt
        self.defaults, self.name = defaults, name
        self.fp8, self.compile = fp8, compile
        # guidance's two predictions as one batch-2 forward: same result, twice the activations
        self.batch_guidance = batch_guidance
        self.timings: Dict[str, float] = {}
        self.source: Dict[str, Any] = {"model": name}
        self._dit_ready = False
        self._prepared: Dict[tuple, tuple] = {}
        if guardrails is None:
            guardrails = text_guardrail is not None or video_guardrail is not None
        if not guardrails and check_prompt is None and self.is_main:
            _warn_no_guardrails("no guardrail components")
        if self.tokenizer is not None:
            self.tokenizer.eval()
            if not offload_tokenizer:
                self.tokenizer.to(self.device)
        if self.text_encoder is not None and not offload_text_encoder:
            self.text_encoder.to(self.device)

    # -- building --------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path,
        *,
        model: Optional[str] = None,
        tokenizer: Optional[str] = None,
        text_encoder: Optional[str] = None,
        device=None,
        dtype: Optional[torch.dtype] = None,
        offload_text_encoder: bool = False,
        offload_tokenizer: bool = False,
        fp8: bool = False,
        compile: bool = False,
        guardrails: bool = True,
        guardrail_dir: Optional[str] = None,
        aegis_base: Optional[str] = None,
        aegis_adapter: Optional[str] = None,
        siglip: Optional[str] = None,
        prompt_upsampler: bool = False,
        prompt_upsampler_dir: Optional[str] = None,
        context_parallel_group=None,
        batch_guidance: bool = False,
        lora: Optional[str] = None,
        lora_merge: bool = True,
    ) -> "Text2WorldPipeline":
        """A pipeline from a model name ("Cosmos-1.0-Diffusion-7B-Text2World", its Hub id, or
        "cosmos-demo"), a local folder (a Hub snapshot, or one written by ``save_pretrained``), a
        NeMo checkpoint (its ``weights/``, the folder above, or a whole ``nemo_experiments`` tree,
        whose saved context names the model it was trained from), a ``model.pt``, or our
        ``.safetensors`` (or a ModelSource from ``resolve_source``). Weights missing from the Hugging
        Face cache are downloaded, or one error lists all of them with the command that fetches them.

        `model` names the model when the checkpoint does not say; `tokenizer` / `text_encoder` give
        their folders (or a T5 Hub name). `guardrails` (on by default, as NVIDIA's release) adds the
        blocklist, Aegis, the video safety filter and face blurring; `prompt_upsampler` the 12B
        prompt upsampler. `fp8` / `compile` are applied to the DiT at its first use. `lora`: LoRA
        adapters to add (a peft adapter folder, a LoRA post-training checkpoint, or its
        nemo_experiments tree), merged into the weights unless `lora_merge` is False."""
        from .checkpoint import load_dit
        from .checkpoint.hub import download_command, ensure_local
        from .guardrails import OnDemand, TextGuardrail, VideoGuardrail
        from .presets import AEGIS_ADAPTER, AEGIS_BASE, GUARDRAIL_REPO, SIGLIP, UPSAMPLER_ITEM, guardrail_items
        from .sources import ModelSource, resolve_source

        t0 = time.perf_counter()
        device = resolve_device(None if device is None else str(device), fp8=fp8)
        src = name_or_path if isinstance(name_or_path, ModelSource) else resolve_source(
            name_or_path, model=model, tokenizer=tokenizer, text_encoder=text_encoder)
        if lora:
            from .checkpoint.locate import find_lora_adapter

            if fp8 and not lora_merge:
                raise BadInputError("FP8 takes merged LoRA adapters only: leave lora_merge on (no --no_lora_merge)")
            lora = find_lora_adapter(lora)
        target = PIPELINES[src.family]
        if cls is not target:
            if not issubclass(target, cls):
                raise BadInputError(f"{src.name} is a {src.family.capitalize()} model: it takes no input image or "
                                    f"video (use {target.__name__})")
            cls = target  # Text2WorldPipeline.from_pretrained serves both families
        if prompt_upsampler and src.family == VIDEO2WORLD:
            raise BadInputError(VIDEO2WORLD_UPSAMPLER)
        check_prompt = src.preset.check_prompt() if src.preset is not None else None
        if check_prompt is not None:
            if prompt_upsampler:
                raise BadInputError(f"{src.name} takes its captions as they are: leave out the prompt upsampler")
            if guardrails:
                log.info("%s: prompts are held to its own vocabulary instead of the guardrails", src.name)
            guardrails = False
        elif not guardrails:
            _warn_no_guardrails("turned off")
        main = is_main(context_parallel_group)

        items = list(src.hub_items()) if main else ([src.dit_item] if src.dit_item else [])
        if main and guardrails and not guardrail_dir:
            items += [i for i in guardrail_items() if not (
                (i.repo == AEGIS_BASE and aegis_base) or (i.repo == AEGIS_ADAPTER and aegis_adapter)
                or (i.repo == SIGLIP and siglip))]
        if main and prompt_upsampler and not prompt_upsampler_dir:
            items.append(UPSAMPLER_ITEM)
        paths = ensure_local(items, download_command(src.preset.name if src.preset else None, guardrails,
                                                     prompt_upsampler))
        src.adopt_downloads(paths)

        dit = load_dit(src.checkpoint, src.preset.dit_config() if src.preset is not None else None, dtype=dtype)
        if lora:
            from .models.lora import load_lora

            load_lora(dit, lora, merge=lora_merge)
            log.info("LoRA adapters: %s (%s)", lora, "merged" if lora_merge else "unmerged")
        tok_cfg = src.tokenizer_config()
        tok = t5 = text_guard = video_guard = upsampler = None
        if main:
            tok = CV8x8x8Tokenizer.from_pretrained(src.tokenizer, tok_cfg, dtype=dit.config.params_dtype)
            t5 = T5TextEncoder.from_pretrained(src.text_encoder, device="cpu" if offload_text_encoder else device)
            if guardrails:
                gdir = guardrail_dir or paths[GUARDRAIL_REPO]
                text_guard = TextGuardrail.from_dir(gdir, aegis_base or paths.get(AEGIS_BASE, AEGIS_BASE),
                                                    aegis_adapter or paths.get(AEGIS_ADAPTER, AEGIS_ADAPTER))
                video_guard = VideoGuardrail.from_dir(gdir, siglip or paths.get(SIGLIP, SIGLIP))
            if prompt_upsampler:
                from .text.upsampler import PromptUpsampler

                folder = prompt_upsampler_dir or paths[UPSAMPLER_ITEM.repo]
                upsampler = OnDemand(lambda: PromptUpsampler.from_pretrained(folder, device="cpu"))
        pipe = cls(dit, tok, t5, device, offload_text_encoder=offload_text_encoder, offload_tokenizer=offload_tokenizer,
                   text_guardrail=text_guard, video_guardrail=video_guard, prompt_upsampler=upsampler,
                   check_prompt=check_prompt, guardrails=guardrails or check_prompt is not None,
                   defaults=src.defaults, name=src.name, tokenizer_config=tok_cfg, group=context_parallel_group,
                   fp8=fp8, compile=compile, batch_guidance=batch_guidance)
        pipe.source = {"model": src.name, "checkpoint": src.checkpoint.path, **({"lora": lora} if lora else {})}
        pipe.timings["model_loading_s"] = time.perf_counter() - t0
        log.info("model loading: %.2f s", pipe.timings["model_loading_s"])
        return pipe

    def save_pretrained(self, folder: str, dit_dtype: Optional[torch.dtype] = None) -> None:
        """A self-describing folder that from_pretrained reads back: ``model_index.json`` (configs,
        generation defaults, model name), ``dit.safetensors`` (stored in `dit_dtype`, default the
        model's), ``tokenizer/``, ``text_encoder/``."""
        import json
        import os

        from .checkpoint import save_dit_safetensors
        from .presets import DIT_WEIGHTS, MODEL_INDEX, TEXT_ENCODER_SUBDIR, TOKENIZER_SUBDIR

        os.makedirs(folder, exist_ok=True)
        save_dit_safetensors(self.dit.state_dict(), self.dit.config, os.path.join(folder, DIT_WEIGHTS), model=self.name,
                             dtype=dit_dtype)
        self.tokenizer.save_pretrained(os.path.join(folder, TOKENIZER_SUBDIR))
        self.text_encoder.save_pretrained(os.path.join(folder, TEXT_ENCODER_SUBDIR))
        index = {"format": "nemo_cosmos", "family": family_of(self.dit.config), "model": self.name,
                 "dit": config_to_dict(self.dit.config), "tokenizer_dir": TOKENIZER_SUBDIR,
                 "text_encoder": TEXT_ENCODER_SUBDIR, "defaults": self.defaults.to_dict()}
        with open(os.path.join(folder, MODEL_INDEX), "w") as f:
            json.dump(index, f, indent=2)

    # -- stages ------------------------------------------------------------------------------------
    def _elapsed(self, t0: float) -> float:
        """Seconds since t0 once the GPU has finished what was queued (kernels run asynchronously)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0

    @contextlib.contextmanager
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

    def prepare_prompt(self, prompt: str, subject_name: Optional[str] = None) -> tuple:
        """(final prompt, upsampled prompt or None): the model's vocabulary check or the guardrails,
        the upsampler (its output checked again), then the subject prefix. Results are remembered, so
        checking prompts early (a batch, before the DiT is loaded) costs nothing later."""
        key = (prompt, subject_name)
        if key in self._prepared:
            return self._prepared[key]
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadInputError(f"the prompt is empty: {shorten(str(prompt))}")
        prompt = prompt.strip()
        upsampled = None
        if self.check_prompt is not None:
            self.check_prompt(prompt, subject_name)
        if self.text_guardrail is not None:
            self.text_guardrail.check(prompt, self.device)
        if self.prompt_upsampler is not None:
            with self.prompt_upsampler.on(self.device) as upsampler:
                upsampled = upsampler.upsample(prompt) or None
            if upsampled:
                log.info("upsampled prompt: %s", upsampled)
                if self.text_guardrail is not None:
                    self.text_guardrail.check(upsampled, self.device)
        final = subject_prompt(upsampled or prompt, subject_name)
        self._prepared[key] = (final, upsampled)
        return final, upsampled

    def encode_text(self, prompt: str, negative_prompt: str):
        """(prompt embedding, negative embedding) [1, 512, D] on the device; broadcast from the
        first rank under context parallelism."""
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

    def _prepare_dit(self) -> None:
        """Move the DiT to the device, check its weights are finite, apply the run-time transforms."""
        if self._dit_ready:
            return
        self.dit.to(self.device)
        bad = next((n for n, p in self.dit.named_parameters() if not torch.isfinite(p).all()), None)
        if bad is not None:
            raise BadInputError(f"the DiT's weights are broken: {bad} holds NaN or Inf values")
        parallelize_dit(self.dit, fp8=self.fp8, cp_group=self.group, compile=self.compile)
        self._dit_ready = True

    def _normals(self, shape, seed: Optional[int], generator: Optional[torch.Generator]) -> torch.Tensor:
        """The standard normals of one video's noise: numpy's for a seed (NVIDIA's), else torch's."""
        if generator is not None:
            return torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32).to(self.device)
        return seeded_normals(shape, seed, device=self.device)

    def _sample(self, cond, uncond, fps, guidance, num_steps, noise, progress, callback,
                condition: Optional[VideoCondition] = None) -> tuple:
        denoiser = EDMDenoiser(self.dit, SIGMA_DATA)
        if condition is not None:
            denoiser = ConditionedDenoiser(denoiser, condition)
        # the same text for both (Video2World with no negative prompt): the guided x0 is the
        # conditional one exactly (cond + g * 0), so its twin evaluation is skipped
        same_text = uncond is cond
        both_text = torch.cat([cond, uncond]) if self.batch_guidance and not same_text else None
        evaluations = 0

        def x0_fn(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            nonlocal evaluations
            evaluations += 1
            if same_text:
                return denoiser(x, sigma, cond, fps=fps)
            if both_text is not None:
                return guided_x0(*denoiser(torch.cat([x, x]), sigma, both_text, fps=fps).chunk(2), guidance)
            return guided_x0(denoiser(x, sigma, cond, fps=fps), denoiser(x, sigma, uncond, fps=fps), guidance)

        bar = tqdm(total=num_steps, desc="sampling", disable=not progress or not self.is_main, unit="step")

        def on_step(i: int, sigma: float, x: torch.Tensor, x0: torch.Tensor):
            bar.update(1)
            if callback is not None:
                out = callback(self, i, sigma, {"latents": x, "denoised": x0})
                if isinstance(out, dict) and out.get("latents") is not None:
                    return out["latents"]
            return None

        latent = res_2ab_sample(x0_fn, noise, num_steps=num_steps, on_step=on_step)
        bar.close()
        return latent, evaluations

    @torch.no_grad()
    def __call__(
        self,
        prompt: Union[str, Sequence[str]],
        negative_prompt: Optional[str] = None,
        guidance: Optional[float] = None,
        num_steps: Optional[int] = None,
        height: Optional[int] = None,
        width: Optional[int] = None,
        num_frames: Optional[int] = None,
        fps: Optional[int] = None,
        seed: Union[int, Sequence[int], None] = None,
        generator: Optional[torch.Generator] = None,
        num_videos_per_prompt: int = 1,
        subject_name: Optional[str] = None,
        output_type: str = "np",
        callback_on_step_end: Optional[Callable] = None,
        progress: bool = True,
    ) -> List[Generation]:
        """One Generation per video: each prompt (a string or a list) `num_videos_per_prompt` times.
        Settings left out take the model's defaults (``self.defaults``). Video i gets seed `seed` + i
        (or `seed`[i]), and with one prompt and the default seed equals NVIDIA's output for that seed;
        a `generator` draws the noise from torch instead. `output_type` "latent" skips decoding (and
        with it the video guardrail). `callback_on_step_end(pipe, step, sigma, {"latents",
        "denoised"})` runs after every sampler step; a returned {"latents": tensor} replaces the
        state. A prompt or video the guardrails refuse raises BlockedError; nothing is returned."""
        prompts, s, seeds = self._resolve(prompt, num_videos_per_prompt, output_type, seed, generator, dict(
            negative_prompt=negative_prompt, guidance=guidance, num_steps=num_steps, height=height, width=width,
            num_frames=num_frames, fps=fps))
        if self.dit.config.condition_mask_channel:
            raise BadInputError(f"{self.name} is a Video2World model: give it an image or video to continue "
                                "(Video2WorldPipeline, --input_image_or_video_path)")
        return self._generate(prompts, num_videos_per_prompt, s, seeds, generator, subject_name, output_type,
                              callback_on_step_end, progress)

    def _resolve(self, prompt, num_videos_per_prompt: int, output_type: str, seed, generator, given: dict) -> tuple:
        """(prompts, settings, one seed per video) of a call, checked; settings left out (None) take
        the model's defaults."""
        d = self.defaults
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise BadInputError("no prompt given")
        if output_type not in ("np", "latent"):
            raise BadInputError(f"output_type must be 'np' or 'latent'; got {output_type!r}")
        if num_videos_per_prompt < 1:
            raise BadInputError(f"num_videos_per_prompt must be at least 1; got {num_videos_per_prompt}")
        cast = dict(guidance=float, num_steps=int, height=int, width=int, num_frames=int, num_input_frames=int)
        s = {k: getattr(d, k) if v is None else cast.get(k, lambda x: x)(v) for k, v in given.items()}
        count = len(prompts) * num_videos_per_prompt
        if generator is not None and seed is not None:
            raise BadInputError("give a seed or a generator, not both")
        if isinstance(seed, (list, tuple)):
            if len(seed) != count:
                raise BadInputError(f"{len(seed)} seeds for {count} videos")
            seeds = [int(x) for x in seed]
        else:
            base = d.seed if seed is None else int(seed)
            seeds = [base + i for i in range(count)]
        for x in seeds:
            check_settings(self.dit.config, self.tok_cfg, seed=x if generator is None else None, **{
                k: s[k] for k in ("height", "width", "num_frames", "num_steps", "fps", "guidance")})
        return prompts, s, seeds

    def _generate(self, prompts, num_videos_per_prompt, s, seeds, generator, subject_name, output_type, callback,
                  progress, inputs: Optional[list] = None) -> List[Generation]:
        """Every video of a checked call; `inputs` (Video2World): the input frames of each prompt."""
        # every prompt is checked (and upsampled) before any sampling: a refusal costs no GPU time
        prepared = [self.prepare_prompt(p, subject_name) if self.is_main else (p, None) for p in prompts]
        self._prepare_dit()
        shape = (1, *latent_shape(self.tok_cfg, s["num_frames"], s["height"], s["width"]))
        results = []
        for i in range(len(seeds)):
            final, upsampled = prepared[i // num_videos_per_prompt]
            timings: Dict[str, float] = {}
            t0 = time.perf_counter()
            cond, uncond = self.encode_text(final, s["negative_prompt"])
            timings["text_encoding_s"] = self._elapsed(t0)
            log.info("text encoding: %.2f s", timings["text_encoding_s"])

            normals = self._normals(shape, seeds[i], generator)
            condition = None
            if inputs is not None:
                condition = self.encode_condition(inputs[i // num_videos_per_prompt], s, normals, timings)
            t0 = time.perf_counter()
            latent, evaluations = self._sample(cond, uncond, s["fps"], s["guidance"], s["num_steps"],
                                               normals * SIGMA_MAX, progress, callback, condition)
            timings["sampling_s"] = self._elapsed(t0)
            timings["x0_evaluations"] = evaluations
            log.info("sampling (%d steps): %.2f s", s["num_steps"], timings["sampling_s"])
            if not torch.isfinite(latent).all():
                raise BadInputError("the sampled latent is not finite (NaN or Inf): the weights or settings are broken")
            settings = {"prompt": prompts[i // num_videos_per_prompt], "subject_name": subject_name, **s,
                        "seed": seeds[i] if generator is None else None, **self.source,
                        "fp8": self.fp8, "compile": self.compile}
            if inputs is not None:
                settings["input_image_or_video_path"] = inputs[i // num_videos_per_prompt].source
            result = Generation(None, latent.float().cpu(), final, upsampled, settings["seed"], settings, timings,
                                config_to_dict(self.dit.config))
            if self.is_main and output_type == "np":
                result.frames = self.decode(latent, timings)
                if self.video_guardrail is not None:
                    t0 = time.perf_counter()
                    result.frames = self.video_guardrail(result.frames, self.device)
                    timings["video_guardrail_s"] = self._elapsed(t0)
            results.append(result)
        return results

    def decode(self, latent: torch.Tensor, timings: Optional[Dict[str, float]] = None) -> np.ndarray:
        """[1, 16, T', H', W'] latent (x sigma_data) -> [T, H, W, 3] uint8 frames, truncated as NVIDIA's."""
        t0 = time.perf_counter()
        with self._on_device(self.tokenizer, self.offload_tokenizer) as tok:
            video = tok.decode(latent.to(self.device) / SIGMA_DATA)
        video = (1.0 + video.float()).clamp(0, 2) / 2
        frames = (video[0].permute(1, 2, 3, 0) * 255).to(torch.uint8).cpu().numpy()  # truncation
        if timings is not None:
            timings["decoding_s"] = self._elapsed(t0)
            log.info("decoding: %.2f s", timings["decoding_s"])
        return frames


@dataclass
class ConditionInput:
    """The frames one Video2World prompt continues, and where they came from."""

    frames: np.ndarray
    """[n, H, W, 3] uint8, n = the number of input frames."""
    source: str


def condition_input(video, num_input_frames: int) -> ConditionInput:
    """A ConditionInput from a path (image or video file: its last `num_input_frames` frames), an
    image array [H, W, 3] or a video array [T, H, W, 3] (uint8)."""
    import os

    from .utils.video_input import read_input_frames

    if isinstance(video, (str, os.PathLike)):
        return ConditionInput(read_input_frames(video, num_input_frames), os.fspath(video))
    frames = np.asarray(video)
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or frames.shape[-1] != 3:
        raise BadInputError(f"an input image or video must be a path or uint8 [H, W, 3] / [T, H, W, 3]; "
                            f"got {frames.dtype} {list(frames.shape)}")
    if frames.ndim == 3:
        frames = frames[None]
    if len(frames) < num_input_frames:
        raise BadInputError(f"the input has {len(frames)} frame(s); {num_input_frames} input frames were asked for")
    return ConditionInput(np.ascontiguousarray(frames[-num_input_frames:]), f"array {list(frames.shape)}")


def check_condition(num_input_frames, num_frames: int) -> None:
    """A Video2World call's input-frame count: one the published models were trained on, and fewer
    than the video's frames."""
    from .presets import NUM_INPUT_FRAMES

    if num_input_frames not in NUM_INPUT_FRAMES:
        raise BadInputError(f"num_input_frames must be one of {', '.join(map(str, NUM_INPUT_FRAMES))}; "
                            f"got {num_input_frames!r}")
    if num_input_frames >= num_frames:
        raise BadInputError(f"{num_input_frames} input frames leave nothing to generate in a {num_frames}-frame video")


class Video2WorldPipeline(Text2WorldPipeline):
    """Video2World generation: the Text2World pipeline, continuing the last 1 or 9 frames of an
    image or video as NVIDIA's Cosmos-1.0 does (diffusion.conditioning). The output starts with the
    tokenizer's reconstruction of the input frames and holds all `num_frames` frames.

        pipe = Video2WorldPipeline.from_pretrained("cosmos-demo-video2world")
        pipe("a red circle moving up", video="clip.mp4", num_input_frames=9)[0].save("more.mp4")

    ``Text2WorldPipeline.from_pretrained`` of a Video2World model returns one of these too.
    As NVIDIA's, an empty negative prompt gives the uncondition the prompt's own text (guidance then
    changes nothing, and the second DiT pass is skipped); the Video2World prompt upsampler
    (Pixtral-12B) is not supported."""

    def __init__(self, dit: CosmosDiT, *args, **kwargs):
        if not dit.config.condition_mask_channel:
            raise BadInputError("this DiT is a Text2World model (no condition-mask channel): it cannot continue an "
                                "image or video; use Text2WorldPipeline")
        if kwargs.get("prompt_upsampler") is not None:
            raise BadInputError(VIDEO2WORLD_UPSAMPLER)
        super().__init__(dit, *args, **kwargs)

    def encode_text(self, prompt: str, negative_prompt: str):
        if negative_prompt:
            return super().encode_text(prompt, negative_prompt)
        cond, _ = super().encode_text(prompt, "")
        return cond, cond  # the reference's uncondition without a negative prompt: the prompt itself

    def encode_condition(self, given: ConditionInput, s: dict, normals: torch.Tensor,
                         timings: Dict[str, float]) -> VideoCondition:
        """The conditioning latent of one video (encoded by the first rank, broadcast to the others)."""
        t0 = time.perf_counter()
        dtype = self.dit.config.params_dtype
        shape = normals.shape
        if self.is_main:
            from .utils.video_input import condition_video

            video = condition_video(given.frames, s["num_frames"], s["height"], s["width"], dtype)
            with self._on_device(self.tokenizer, self.offload_tokenizer) as tok:
                latent = (tok.encode(video.to(self.device)) * SIGMA_DATA).to(dtype)
        else:
            latent = torch.empty(shape, dtype=dtype, device=self.device)
        if self.group is not None:
            dist.broadcast(latent, src=dist.get_global_rank(self.group, 0), group=self.group)
        timings["input_encoding_s"] = self._elapsed(t0)
        log.info("input encoding (%d frames): %.2f s", len(given.frames), timings["input_encoding_s"])
        from .diffusion import conditioned_latent_frames

        k = conditioned_latent_frames(s["num_input_frames"], self.tok_cfg.temporal_compression)
        return VideoCondition(latent, k, normals)

    @torch.no_grad()
    def __call__(
        self,
        prompt: Union[str, Sequence[str]],
        negative_prompt: Optional[str] = None,
        guidance: Optional[float] = None,
        num_steps: Optional[int] = None,
        height: Optional[int] = None,
        width: Optional[int] = None,
        num_frames: Optional[int] = None,
        fps: Optional[int] = None,
        seed: Union[int, Sequence[int], None] = None,
        generator: Optional[torch.Generator] = None,
        num_videos_per_prompt: int = 1,
        subject_name: Optional[str] = None,
        output_type: str = "np",
        callback_on_step_end: Optional[Callable] = None,
        progress: bool = True,
        *,
        video=None,
        num_input_frames: Optional[int] = None,
    ) -> List[Generation]:
        """As Text2WorldPipeline.__call__ (the same arguments in the same order), continuing `video`
        (keyword only): an image or video file, a uint8 RGB image [H, W, 3] or video [T, H, W, 3],
        or a list of those, one per prompt (not a list of frames: stack them into one array). Its
        last `num_input_frames` frames (1 or 9; default the model's) are resized straight to the
        generation size and given as the first frames."""
        prompts, s, seeds = self._resolve(prompt, num_videos_per_prompt, output_type, seed, generator, dict(
            negative_prompt=negative_prompt, guidance=guidance, num_steps=num_steps, height=height, width=width,
            num_frames=num_frames, fps=fps, num_input_frames=num_input_frames))
        n = s["num_input_frames"]
        check_condition(n, s["num_frames"])
        if video is None:
            raise BadInputError(f"{self.name} is a Video2World model: give it an image or video to continue "
                                "(video=, --input_image_or_video_path)")
        many = isinstance(video, (list, tuple))
        videos = list(video) if many else [video] * len(prompts)
        if len(videos) != len(prompts):
            raise BadInputError(f"{len(videos)} input videos for {len(prompts)} prompts (give one per prompt; "
                                "the frames of one video as one [T, H, W, 3] array)")
        return self._generate(prompts, num_videos_per_prompt, s, seeds, generator, subject_name, output_type,
                              callback_on_step_end, progress, self._read_inputs(videos, n))

    def _read_inputs(self, videos: list, n: int) -> List[ConditionInput]:
        """Every prompt's input frames, read by the first rank only; under context parallelism a
        bad input fails every rank at once (they would otherwise wait for the first in a broadcast)."""
        if self.group is None:
            return [condition_input(v, n) for v in videos]
        from .parallel.distributed import on_rank0

        read = {}

        def first_rank():
            read["inputs"] = [condition_input(v, n) for v in videos]
            return True

        on_rank0(first_rank)
        return read.get("inputs") or [ConditionInput(np.zeros((n, 1, 1, 3), np.uint8), "") for _ in videos]


VIDEO2WORLD_UPSAMPLER = ("the Video2World prompt upsampler (Pixtral-12B, a vision-language model) is not supported: "
                         "write the prompt yourself (leave out --enable_prompt_upsampler)")
PIPELINES = {TEXT2WORLD: Text2WorldPipeline, VIDEO2WORLD: Video2WorldPipeline}
"""The pipeline class of each model family (what from_pretrained builds)."""
