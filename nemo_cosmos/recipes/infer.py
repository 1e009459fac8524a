"""Text2World generation from the command line.

    python -m nemo_cosmos.recipes.infer --prompt "A robot arm stacks red cubes on a table."

Writes an H.264 mp4 and a JSON sidecar (every setting, the final prompt, stage timings). Bad input
exits with status 2 and a one-line error, before any model is loaded, and writes no video; a prompt
or video the guardrails block exits with status 3 and writes nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import torch
import torch.distributed as dist

from .. import demo
from ..checkpoint import (NEMO, OURS, find_dit_checkpoint, load_nemo_checkpoint, load_original_model_pt,
                          load_ours_safetensors, load_state_dict_checked, read_saved_config)
from ..diffusion import DEFAULT_STEPS
from ..guardrails import EXIT_BLOCKED, GUARDRAIL_REPO, BlockedError, TextGuardrail, VideoGuardrail
from ..guardrails.aegis import AEGIS_ADAPTER, AEGIS_BASE
from ..guardrails.video_filter import SIGLIP
from ..models import CosmosDiT
from ..models.fp8 import apply_fp8
from ..models.specs import te_available
from ..parallel import (apply_context_parallel, context_parallel_group, init_distributed, is_main_rank, shutdown,
                        world_size_from_env)
from ..models.config import CosmosDiTConfig, config_from_dict, config_to_dict
from ..pipeline import Generation, Text2WorldPipeline, subject_prompt
from ..text import T5TextEncoder
from ..text.upsampler import UPSAMPLER_REPO, PromptUpsampler
from ..tokenizer import CV8x8x8Tokenizer, TokenizerConfig, check_num_frames, latent_shape
from ..utils.video import write_json, write_mp4, write_tensor
from .models import (DEFAULT_MODEL, DEMO_MODEL, MODELS, ModelEntry, hub_snapshot, model_entry,
                     published_dit_checkpoint, cached_dit_checkpoint)

log = logging.getLogger("nemo_cosmos")
EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nemo_cosmos.recipes.infer", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None,
                   help=f"one of: {', '.join(MODELS)} (default: {DEFAULT_MODEL}, or {DEMO_MODEL} when its weights "
                        "are not on this machine and no checkpoint is given)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative_prompt", default=None, help='"" for none (zero text embedding); default: NVIDIA\'s')
    p.add_argument("--subject_name", default="", help='post-trained subject: prompt becomes "A video of sks {subject}. {prompt}"')
    p.add_argument("--guidance", type=float, default=None, help="default 7")
    p.add_argument("--sampler", default="RES", choices=["RES"])
    p.add_argument("--num_steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--video_save_path", default=None, help="default: <model>.mp4")
    p.add_argument("--fps", type=int, default=None, help="default 24")
    p.add_argument("--height", type=int, default=None, help="default 704")
    p.add_argument("--width", type=int, default=None, help="default 1280")
    p.add_argument("--num_video_frames", type=int, default=None, help="default 121")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--num_devices", type=int, default=1)
    p.add_argument("--cp_size", type=int, default=1)
    p.add_argument("--checkpoint_dir", default="", help="folder with the published model.pt (default: Hugging Face cache)")
    p.add_argument("--nemo_checkpoint", default="",
                   help="a NeMo checkpoint (its weights/ folder or the folder above), a nemo_experiments "
                        "tree (newest checkpoint), or a model.pt file")
    p.add_argument("--tokenizer_dir", default="", help="folder with the CV8x8x8 tokenizer files (default: Hugging Face cache)")
    p.add_argument("--t5_path", default="", help="T5 encoder folder or Hub name (default: google-t5/t5-11b from the cache)")
    p.add_argument("--enable_prompt_upsampler", action="store_true",
                   help="rewrite the prompt with Cosmos-1.0-Prompt-Upsampler-12B-Text2World first")
    p.add_argument("--prompt_upsampler_dir", default="", help="upsampler files (default: Hugging Face cache)")
    p.add_argument("--guardrail_dir", default="", help="Cosmos-1.0-Guardrail files (default: Hugging Face cache)")
    p.add_argument("--aegis_base", default=AEGIS_BASE, help="LlamaGuard-7b folder or Hub name")
    p.add_argument("--aegis_adapter", default=AEGIS_ADAPTER, help="Aegis PEFT adapter folder or Hub name")
    p.add_argument("--siglip", default=SIGLIP, help="SigLIP folder or Hub name (video safety filter)")
    p.add_argument("--disable_guardrails", action="store_true",
                   help="research use only: no prompt or video safety checks, no face blurring")
    p.add_argument("--offload_text_encoder", action="store_true", help="keep T5 on the CPU except while encoding")
    p.add_argument("--offload_tokenizer", action="store_true", help="keep the tokenizer on the CPU except while decoding")
    p.add_argument("--batch_guidance", action="store_true", help="guidance's two DiT passes as one batch of 2")
    p.add_argument("--compile", action="store_true", help="torch.compile each DiT layer (faster after a warm-up)")
    p.add_argument("--fp8", action="store_true", help="FP8 projections and self-attention in the DiT (Hopper/Ada GPUs; slight quality cost)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no_progress", action="store_true")
    p.add_argument("--save_latent", action="store_true", help="also save the final latent as <video>.latent.pt")
    return p


def validate(args, dit: CosmosDiTConfig, tok: TokenizerConfig) -> None:
    """Everything that can be checked without loading a model; ValueError otherwise."""
    if not args.prompt.strip():
        raise ValueError("--prompt is empty")
    step = tok.spatial_compression * dit.patch_spatial
    max_h, max_w = (n * tok.spatial_compression for n in dit.max_latent_size[1:])
    for name, value, top in (("height", args.height, max_h), ("width", args.width, max_w)):
        if value % step or not step <= value <= top:
            raise ValueError(f"--{name} {value} must be a multiple of {step} between {step} and {top}")
    check_num_frames(tok, args.num_video_frames)
    if args.num_steps < 1:
        raise ValueError(f"--num_steps must be at least 1; got {args.num_steps}")
    if args.fps <= 0:
        raise ValueError(f"--fps must be positive; got {args.fps}")
    world = world_size_from_env()
    if not args.cp_size == args.num_devices == world:
        raise ValueError(
            f"--cp_size ({args.cp_size}) must equal --num_devices ({args.num_devices}) and the number of processes "
            f"({world}; start N processes with torchrun --nproc_per_node=N)"
        )
    if args.cp_size > 1:
        _, t, h, w = latent_shape(tok, args.num_video_frames, args.height, args.width)
        pt, ph, pw = dit.patch_size
        tokens = (t // pt) * (h // ph) * (w // pw)
        if tokens % args.cp_size:
            raise ValueError(f"--cp_size {args.cp_size} must divide the {tokens} video tokens of this size")
        if dit.num_attention_heads % args.cp_size and not te_available():
            raise ValueError(f"--cp_size {args.cp_size} must divide the model's {dit.num_attention_heads} attention heads")
    if args.fp8 and not (args.device.startswith("cuda") and torch.cuda.is_available()
                         and torch.cuda.get_device_capability() >= (8, 9)):
        raise ValueError("--fp8 needs an NVIDIA GPU of compute capability 8.9 or newer (Ada, Hopper)")
    out = args.video_save_path
    if not out.endswith(".mp4"):
        raise ValueError(f"--video_save_path must end in .mp4; got {out!r}")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise ValueError(f"--video_save_path: folder {parent} does not exist")


def load_dit(args, entry: ModelEntry, cfg: CosmosDiTConfig) -> CosmosDiT:
    """The DiT from --nemo_checkpoint / --checkpoint_dir (any layout find_dit_checkpoint knows), or
    from the Hugging Face cache. A checkpoint we saved carries its config, which then wins."""
    path = args.nemo_checkpoint or args.checkpoint_dir
    if path:
        kind, path = find_dit_checkpoint(path)
    elif entry.builtin is not None:
        kind, path = find_dit_checkpoint(entry.builtin[0])
    elif entry.repo is None:
        raise ValueError(f"--model {args.model} has no published weights; give --checkpoint_dir or --nemo_checkpoint")
    else:
        kind, path = published_dit_checkpoint(entry.repo, f"{args.model} weights")
    log.info("DiT weights: %s", path)
    if kind == NEMO:
        saved = read_saved_config(path)
        if saved is not None:
            cfg = config_from_dict(saved["config"])
        state_dict, cfg = load_nemo_checkpoint(path, cfg)
    elif kind == OURS:
        state_dict = load_ours_safetensors(path)
    else:
        state_dict = load_original_model_pt(path, cfg)
    with torch.device("meta"):
        dit = CosmosDiT(cfg)
    load_state_dict_checked(dit, state_dict, assign=True)
    return dit.to(device=args.device, dtype=cfg.params_dtype)


def load_pipeline(args, entry: ModelEntry, cfg: CosmosDiTConfig, tok_cfg: TokenizerConfig, group=None) -> Text2WorldPipeline:
    """The pipeline; with a context-parallel `group`, the DiT is split across it and only its first
    rank loads the tokenizer and T5."""
    dit = load_dit(args, entry, cfg)
    if args.fp8:
        apply_fp8(dit)
    if args.compile:
        for layer in dit.layers:
            layer.compile()
    if group is not None:
        apply_context_parallel(dit, group)
        if dist.get_rank(group) != 0:
            return Text2WorldPipeline(dit, None, None, device=args.device, tokenizer_config=tok_cfg, group=group,
                                      batch_guidance=args.batch_guidance)

    tok_dir = args.tokenizer_dir or (entry.builtin[1] if entry.builtin else "")
    if not tok_dir:
        if entry.tokenizer_repo is None:
            raise ValueError(f"--model {args.model} needs --tokenizer_dir")
        tok_dir = hub_snapshot(entry.tokenizer_repo, ["*.jit", "mean_std.pt"], "the CV8x8x8 tokenizer")
    tokenizer = CV8x8x8Tokenizer.from_pretrained(tok_dir, tok_cfg, dtype=cfg.params_dtype)

    t5_path = args.t5_path or entry.t5
    if not t5_path:
        raise ValueError(f"--model {args.model} needs --t5_path")
    t5_device = "cpu" if args.offload_text_encoder else args.device
    text_encoder = T5TextEncoder.from_pretrained(t5_path, device=t5_device)
    return Text2WorldPipeline(
        dit, tokenizer, text_encoder, device=args.device,
        offload_text_encoder=args.offload_text_encoder, offload_tokenizer=args.offload_tokenizer, group=group,
        batch_guidance=args.batch_guidance,
    )


def generate(pipe: Text2WorldPipeline, args, prompt: str) -> Generation:
    return pipe(
        prompt, negative_prompt=args.negative_prompt, guidance=args.guidance, num_steps=args.num_steps,
        height=args.height, width=args.width, num_frames=args.num_video_frames, fps=args.fps, seed=args.seed,
        progress=not args.no_progress,
    )


def _guardrail_dir(args) -> str:
    return args.guardrail_dir or hub_snapshot(GUARDRAIL_REPO, ["*"], "the guardrail models")


def prepare_prompt(args):
    """(final prompt, upsampled prompt or None): guardrail check, optional upsampling (checked
    again), then the subject prefix. Each model leaves the GPU before the next one (and the DiT) comes."""
    prompt = args.prompt.strip()
    upsampled = None
    text_guard = None
    if not args.disable_guardrails:
        text_guard = TextGuardrail.from_dir(_guardrail_dir(args), args.device, args.aegis_base, args.aegis_adapter)
        text_guard.check(prompt)
    if args.enable_prompt_upsampler:
        folder = args.prompt_upsampler_dir or hub_snapshot(UPSAMPLER_REPO, ["*"], "the prompt upsampler")
        upsampler = PromptUpsampler.from_pretrained(folder, device=args.device)
        upsampled = upsampler.upsample(prompt) or None
        upsampler.release()
        prompt = upsampled or prompt
        log.info("upsampled prompt: %s", prompt)
        if text_guard is not None:
            text_guard.check(prompt)
    del text_guard
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return subject_prompt(prompt, args.subject_name), upsampled


def resolve_model(args) -> None:
    """Fill in --model and the settings left unset from the model's defaults. Without --model and
    without any checkpoint path, the 7B model is used when its weights are in the Hugging Face
    cache, and otherwise the built-in demo model (with a line that says so)."""
    if args.model is None:
        args.model = DEFAULT_MODEL
        if (not (args.checkpoint_dir or args.nemo_checkpoint) and demo.available()
                and cached_dit_checkpoint(MODELS[DEFAULT_MODEL].repo) is None):
            log.warning("%s weights are not on this machine: using the built-in %s model (coloured shapes; "
                        "python -m nemo_cosmos.recipes.download fetches the real one)", DEFAULT_MODEL, DEMO_MODEL)
            args.model = DEMO_MODEL
    entry = model_entry(args.model)
    for name, value in entry.defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if entry.check_prompt is not None and not args.disable_guardrails:
        log.info("%s: prompts are held to its own vocabulary instead of the guardrails", args.model)
        args.disable_guardrails = True


def run(args) -> str:
    resolve_model(args)
    entry = model_entry(args.model)
    dit_cfg, tok_cfg = entry.dit(), entry.tokenizer()
    args.video_save_path = args.video_save_path or f"{args.model}.mp4"
    validate(args, dit_cfg, tok_cfg)
    if entry.check_prompt is not None:
        if args.enable_prompt_upsampler:
            raise ValueError(f"{args.model} takes its captions as they are: leave out --enable_prompt_upsampler")
        entry.check_prompt(args.prompt)
    elif args.disable_guardrails:
        log.warning("guardrails disabled: no prompt or video safety checks, no face blurring (research use only)")
    group = None
    if args.cp_size > 1:
        args.device = str(init_distributed(args.cp_size))
        group = context_parallel_group()
        if not is_main_rank():
            log.setLevel(logging.WARNING)
        log.info("context parallel over %d processes", args.cp_size)
    # the first rank encodes the text: only it needs the guardrails and the upsampler
    prompt, upsampled_prompt = prepare_prompt(args) if is_main_rank() else (args.prompt, None)

    t0 = time.perf_counter()
    pipe = load_pipeline(args, entry, dit_cfg, tok_cfg, group)
    load_s = time.perf_counter() - t0
    log.info("model loading: %.2f s", load_s)

    result = generate(pipe, args, prompt)
    if not is_main_rank():
        return args.video_save_path
    frames = result.frames
    if not args.disable_guardrails:
        t0 = time.perf_counter()
        frames = VideoGuardrail.from_dir(_guardrail_dir(args), args.device, args.siglip)(frames)
        result.timings["video_guardrail_s"] = time.perf_counter() - t0
    if args.save_latent:
        write_tensor(os.path.splitext(args.video_save_path)[0] + ".latent.pt", result.latent)
    t0 = time.perf_counter()
    write_mp4(args.video_save_path, frames, args.fps)
    timings = {"model_loading_s": load_s, **result.timings, "writing_s": time.perf_counter() - t0}
    settings = {k: v for k, v in vars(args).items() if k not in ("no_progress", "save_latent")}
    write_json(
        os.path.splitext(args.video_save_path)[0] + ".json",
        {"settings": settings, "final_prompt": prompt, "upsampled_prompt": upsampled_prompt, "timings": timings,
         "dit_config": config_to_dict(pipe.dit.config)},
    )
    log.info("wrote %s (%d frames, %dx%d, %d fps)", args.video_save_path, len(result.frames), args.width, args.height, args.fps)
    return args.video_save_path


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="[nemo_cosmos] %(message)s")
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except BlockedError as e:
        print(f"blocked: {e}", file=sys.stderr)
        return EXIT_BLOCKED
    except (ValueError, FileNotFoundError, KeyError) as e:
        message = e.args[0] if e.args else str(e)
        # under torchrun, this rank's non-zero exit makes torchrun stop the others
        rank = f"rank {os.environ['RANK']}: " if world_size_from_env() > 1 else ""
        print(f"error: {rank}{message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
