"""Text2World and Video2World generation from the command line: a thin shell over
Text2WorldPipeline and Video2WorldPipeline.

    python -m nemo_cosmos.recipes.infer --prompt "A robot arm stacks red cubes on a table."
    python -m nemo_cosmos.recipes.infer --model Cosmos-1.0-Diffusion-7B-Video2World \
        --input_image_or_video_path in.mp4 --num_input_frames 9 --prompt "..."
    torchrun --nproc_per_node=8 nemo_cosmos/recipes/infer.py --cp_size 8 --num_devices 8 --prompt "..."
    python -m nemo_cosmos.recipes.infer --batch_input_path prompts.jsonl --video_save_folder out/

Writes an H.264 mp4 (or a GIF, by the file name) and a JSON sidecar (every setting, the final
prompt, stage timings). Bad input exits with status 2 and a one-line error, before any model is
loaded, and writes nothing; a prompt or video the guardrails block exits with status 3 and writes
nothing. In a batch (one JSON object per line: "prompt", for Video2World "visual_input" (NVIDIA's key)
or "input_image_or_video_path", and optional per-line settings), a bad or
blocked line is reported and skipped, the others are written, and the exit status says whether any
line failed (2, or 3 when only the guardrails refused).
"""

from __future__ import annotations

import json
import logging
import os
import sys

if not __package__:  # run by path (torchrun nemo_cosmos/recipes/infer.py): make the package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from nemo_cosmos.errors import BadInputError, BlockedError, CosmosUserError, first_line, shorten  # noqa: E402
from nemo_cosmos.presets import (AEGIS_ADAPTER, AEGIS_BASE, DEFAULT_MODELS, DEMO_MODEL, DEMO_MODELS,  # noqa: E402
                                 MODELS, NUM_INPUT_FRAMES, SIGLIP, TEXT2WORLD, VIDEO2WORLD, GenerationDefaults)
from nemo_cosmos.utils import cli  # noqa: E402

log = logging.getLogger("nemo_cosmos")
PROG = "python -m nemo_cosmos.recipes.infer"
# per-line settings a batch file may give, and the flag each stands for
LINE_SETTINGS = ("prompt", "negative_prompt", "subject_name", "guidance", "num_steps", "seed", "fps", "height",
                 "width", "num_video_frames", "video_save_name", "input_image_or_video_path", "num_input_frames")
LINE_ALIASES = {"visual_input": "input_image_or_video_path"}  # NVIDIA's Video2World batch key


def _model_default(field: str) -> str:
    """The help text of a setting the model decides: the published models' value and the demo's."""
    published = getattr(GenerationDefaults(), field)
    demo = MODELS[DEMO_MODEL].generation_defaults()
    return f"the model's: {published!r} for the published models, {getattr(demo, field)!r} for {DEMO_MODEL}"


def build_parser():
    p = cli.parser(PROG, __doc__, f'{PROG} --prompt "a red circle moving up"', "generation.md")
    p.add_argument("--model", default=None,
                   help=f"one of: {', '.join(MODELS)}. Default: the one a given checkpoint was trained from, else "
                        f"{DEFAULT_MODELS[TEXT2WORLD]} ({DEFAULT_MODELS[VIDEO2WORLD]} with an input image or video) "
                        f"when its weights are on this machine, else {DEMO_MODELS[TEXT2WORLD]} "
                        f"({DEMO_MODELS[VIDEO2WORLD]})")
    p.add_argument("--prompt", help="what the video shows (or give --batch_input_path)")
    p.add_argument("--input_image_or_video_path", default=None,
                   help="Video2World: an image (.jpg, .jpeg, .png) or a video whose last --num_input_frames frames "
                        "the generated video starts with")
    p.add_argument("--num_input_frames", type=int, default=None, choices=NUM_INPUT_FRAMES,
                   help="Video2World: how many frames of the input to continue; default "
                        f"{_model_default('num_input_frames')}")
    p.add_argument("--disable_prompt_upsampler", action="store_true",
                   help="accepted for NVIDIA's Video2World script; the upsampler is off unless "
                        "--enable_prompt_upsampler")
    p.add_argument("--negative_prompt", default=None,
                   help='"" for none: Text2World then guides against a zero text embedding, Video2World (as NVIDIA\'s) '
                        'against the prompt itself, so guidance does nothing. Default: NVIDIA\'s long one for the '
                        'published models')
    p.add_argument("--subject_name", default="", help='post-trained subject: the prompt becomes "A video of sks '
                                                      '{subject}. {prompt}"')
    p.add_argument("--guidance", type=float, default=None, help=f"classifier-free guidance; default {_model_default('guidance')}")
    p.add_argument("--num_steps", type=int, default=None, help=f"RES sampler steps; default {_model_default('num_steps')}")
    p.add_argument("--sampler", default="RES", choices=["RES"], help="accepted for NVIDIA's scripts; RES-2ab is the one")
    p.add_argument("--seed", type=int, default=None, help=f"noise seed; default {_model_default('seed')}")
    p.add_argument("--fps", type=int, default=None, help=f"default {_model_default('fps')}")
    p.add_argument("--height", type=int, default=None, help=f"default {_model_default('height')}")
    p.add_argument("--width", type=int, default=None, help=f"default {_model_default('width')}")
    p.add_argument("--num_video_frames", type=int, default=None, help=f"8k+1; default {_model_default('num_frames')}")
    p.add_argument("--video_save_path", default=None, help="an .mp4 or .gif file; default: <model>.mp4")
    p.add_argument("--batch_input_path", default=None,
                   help=f"a JSONL file, one generation per line: {{\"prompt\": ...}} and optionally "
                        f"{', '.join(LINE_SETTINGS[1:])}")
    p.add_argument("--video_save_folder", default=None, help="where a batch's videos go (<line>.mp4 or video_save_name)")
    p.add_argument("--num_devices", type=int, default=1, help="processes (as NVIDIA's script; must equal --cp_size)")
    p.add_argument("--cp_size", type=int, default=1, help="context-parallel size: start as many processes with torchrun")
    p.add_argument("--checkpoint_dir", default="", help="folder with the published model.pt (default: the Hugging Face cache)")
    p.add_argument("--nemo_checkpoint", default="",
                   help="a NeMo checkpoint (its weights/ folder or the folder above), a nemo_experiments tree "
                        "(newest checkpoint), a model.pt, our .safetensors or a save_pretrained folder")
    p.add_argument("--lora", default="",
                   help="LoRA adapters from post-training (lora.enabled=true): a checkpoint, its nemo_experiments "
                        "tree or a peft adapter folder; the base model is the one it was trained on unless "
                        "--model or --nemo_checkpoint says otherwise")
    p.add_argument("--no_lora_merge", action="store_true", help="keep the adapters apart instead of merging them")
    p.add_argument("--tokenizer_dir", default="", help="CV8x8x8 tokenizer folder (default: the model's)")
    p.add_argument("--t5_path", default="", help="T5 encoder folder or Hub name (default: the model's)")
    p.add_argument("--enable_prompt_upsampler", action="store_true",
                   help="rewrite the prompt with Cosmos-1.0-Prompt-Upsampler-12B-Text2World first")
    p.add_argument("--prompt_upsampler_dir", default="", help="upsampler files (default: the Hugging Face cache)")
    p.add_argument("--guardrail_dir", default="", help="Cosmos-1.0-Guardrail files (default: the Hugging Face cache)")
    p.add_argument("--aegis_base", default="", help=f"LlamaGuard-7b folder (default: {AEGIS_BASE} from the cache)")
    p.add_argument("--aegis_adapter", default="", help=f"Aegis adapter folder (default: {AEGIS_ADAPTER})")
    p.add_argument("--siglip", default="", help=f"SigLIP folder of the video safety filter (default: {SIGLIP})")
    p.add_argument("--disable_guardrails", action="store_true",
                   help="research use only: no prompt or video safety checks, no face blurring")
    p.add_argument("--offload_text_encoder", action="store_true", help="keep T5 on the CPU except while encoding")
    p.add_argument("--offload_tokenizer", action="store_true", help="keep the tokenizer on the CPU except while decoding")
    p.add_argument("--batch_guidance", action="store_true", help="guidance's two DiT passes as one batch of 2")
    p.add_argument("--compile", action="store_true", help="torch.compile each DiT layer (faster after a warm-up)")
    p.add_argument("--fp8", action="store_true",
                   help="FP8 projections (Ada, Hopper) and cuDNN FP8 self-attention (Hopper, pip install "
                        "'nemo-cosmos[gpu]'); slight quality cost")
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when there is a GPU)")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    p.add_argument("--save_latent", action="store_true", help="also save the final latent as <video>.latent.pt")
    return p


def _jobs(args) -> list:
    """[(line number or None, settings dict)]: the one generation of --prompt, or every line of the
    batch file; a bad line is reported and skipped."""
    if args.batch_input_path is None:
        if args.prompt is None:
            raise BadInputError("give --prompt (or --batch_input_path)")
        return [(None, {"prompt": args.prompt})]
    if args.prompt is not None:
        raise BadInputError("give --prompt or --batch_input_path, not both")
    if not args.video_save_folder:
        raise BadInputError("--batch_input_path needs --video_save_folder")
    try:
        with open(args.batch_input_path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"cannot read --batch_input_path {args.batch_input_path}: {first_line(e)}") from None
    jobs = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
                raise ValueError('expected a JSON object with a "prompt" string')
            for alias, key in LINE_ALIASES.items():
                if alias in item:
                    if key in item:
                        raise ValueError(f'give "{alias}" or "{key}", not both')
                    item[key] = item.pop(alias)
            unknown = sorted(set(item) - set(LINE_SETTINGS))
            if unknown:
                raise ValueError(f"unknown key {unknown[0]!r}")
        except ValueError as e:
            log.error("line %d of %s skipped: %s", n, args.batch_input_path, first_line(e))
            jobs.append((n, None))
            continue
        jobs.append((n, item))
    if not any(item for _, item in jobs):
        raise BadInputError(f"no usable line in {args.batch_input_path}")
    return jobs


def _settings(args, item: dict, defaults: GenerationDefaults) -> dict:
    """The pipeline-call settings of one job: the line's, else the flags', else the model's."""
    def pick(key, flag, default):
        value = item.get(key, getattr(args, flag))
        return default if value is None else value

    return dict(
        prompt=item["prompt"], negative_prompt=pick("negative_prompt", "negative_prompt", defaults.negative_prompt),
        subject_name=item.get("subject_name", args.subject_name) or None,
        guidance=float(pick("guidance", "guidance", defaults.guidance)),
        num_steps=int(pick("num_steps", "num_steps", defaults.num_steps)),
        seed=int(pick("seed", "seed", defaults.seed)), fps=pick("fps", "fps", defaults.fps),
        height=int(pick("height", "height", defaults.height)), width=int(pick("width", "width", defaults.width)),
        num_frames=int(pick("num_video_frames", "num_video_frames", defaults.num_frames)),
        video=pick("input_image_or_video_path", "input_image_or_video_path", None),
        num_input_frames=pick("num_input_frames", "num_input_frames", None),  # None: the model's
    )


def _output_path(args, n, item: dict, model: str) -> str:
    if n is None:
        return args.video_save_path or f"{model}.mp4"
    name = item.get("video_save_name") or f"{n}.mp4"
    if os.path.basename(name) != name:
        raise BadInputError(f'line {n}: "video_save_name" must be a file name, not a path: {shorten(name)}')
    return os.path.join(args.video_save_folder, name if os.path.splitext(name)[1] else name + ".mp4")


def _condition(s: dict, src, video2world: bool) -> None:
    """Video2World: the input checked now, by reading it (a bad file fails before any model loads);
    the frames are dropped again, so a batch holds paths only, and the pipeline reads them on the
    first rank when the job runs. Text2World: no input allowed."""
    from nemo_cosmos.pipeline import check_condition, condition_input

    video, n = s.pop("video"), s.pop("num_input_frames")
    if not video2world:
        if video is not None or n is not None:
            raise BadInputError(f"{src.name} is a Text2World model: it cannot continue an image or video; give a "
                                f"Video2World model (--model {DEFAULT_MODELS[VIDEO2WORLD]} or "
                                f"{DEMO_MODELS[VIDEO2WORLD]})")
        return
    if video is None:
        raise BadInputError(f"{src.name} is a Video2World model: give --input_image_or_video_path (an image or a "
                            "video to continue)")
    n = src.defaults.num_input_frames if n is None else n
    check_condition(n, s["num_frames"])
    condition_input(video, n)
    s["video"], s["num_input_frames"] = video, n


def _check_flags(args) -> None:
    """What needs no model: process counts, device, FP8, output places."""
    from nemo_cosmos.parallel import world_size_from_env

    world = world_size_from_env()
    if not args.cp_size == args.num_devices == world:
        raise BadInputError(
            f"--cp_size ({args.cp_size}) must equal --num_devices ({args.num_devices}) and the number of processes "
            f"({world}; start N processes with torchrun --nproc_per_node=N)")
    if args.batch_input_path is not None and args.video_save_path:
        raise BadInputError("a batch writes into --video_save_folder; leave out --video_save_path")
    if args.video_save_folder is not None and not os.path.isdir(args.video_save_folder):
        raise BadInputError(f"--video_save_folder {args.video_save_folder} is not a folder")
    for name in ("prompt", "negative_prompt", "subject_name"):
        value = getattr(args, name)
        if isinstance(value, str) and any("\udc80" <= c <= "\udcff" for c in value):  # undecodable argv bytes
            raise BadInputError(f"--{name} is not valid UTF-8 text")


def run(args) -> int:
    import torch

    from nemo_cosmos.pipeline import VIDEO2WORLD_UPSAMPLER, Text2WorldPipeline, check_settings, resolve_device
    from nemo_cosmos.parallel import context_parallel_group, init_distributed, is_main
    from nemo_cosmos.sources import default_model, resolve_source
    from nemo_cosmos.utils.io import check_writable, recover, video_suffix

    _check_flags(args)
    jobs = _jobs(args)
    device = resolve_device(args.device, fp8=args.fp8)
    checkpoint = args.nemo_checkpoint or args.checkpoint_dir
    if checkpoint and args.checkpoint_dir and args.nemo_checkpoint:
        raise BadInputError("give --checkpoint_dir or --nemo_checkpoint, not both")
    model, lora = args.model, None
    if args.lora:
        from nemo_cosmos.checkpoint.locate import find_lora_adapter, lora_base

        lora = find_lora_adapter(args.lora)
        if not checkpoint and model is None:  # the base the adapters were trained on
            base = lora_base(lora)
            if base is None:
                raise BadInputError(f"{lora} does not say which model it adapts: give --model or --nemo_checkpoint")
            model, checkpoint = (base, "") if base in MODELS else (None, base)
    given_input = args.input_image_or_video_path is not None or any(
        item and "input_image_or_video_path" in item for _, item in jobs)
    if not checkpoint and model is None:
        model = default_model(VIDEO2WORLD if given_input else TEXT2WORLD)
    src = resolve_source(checkpoint or model, model=model if checkpoint else None,
                         tokenizer=args.tokenizer_dir or None, text_encoder=args.t5_path or None)
    dit_cfg, tok_cfg = src.dit_config(), src.tokenizer_config()
    video2world = src.family == VIDEO2WORLD
    if video2world and args.enable_prompt_upsampler:
        raise BadInputError(VIDEO2WORLD_UPSAMPLER)

    # every generation's settings and output, checked before any model is loaded
    planned, failures = [], []
    for n, item in jobs:
        if item is None:
            failures.append(cli.EXIT_BAD_INPUT)
            continue
        try:
            s = _settings(args, item, src.defaults)
            check_settings(dit_cfg, tok_cfg, cp_size=args.cp_size, **{
                k: s[k] for k in ("height", "width", "num_frames", "num_steps", "fps", "guidance", "seed")})
            out = _output_path(args, n, item, src.name)
            video_suffix(out)
            check_writable(out, "--video_save_path" if n is None else f"line {n}: output")
            if not s["prompt"].strip():
                raise BadInputError("the prompt is empty")
            _condition(s, src, video2world)
        except (CosmosUserError, TypeError, ValueError) as e:
            if n is None:
                raise
            log.error("line %d skipped: %s", n, first_line(e))
            failures.append(cli.EXIT_BAD_INPUT)
            continue
        planned.append((n, s, out))

    group = None
    if args.cp_size > 1:
        device = init_distributed(args.cp_size)
        group = context_parallel_group()
        log.info("context parallel over %d processes", args.cp_size)
    pipe = Text2WorldPipeline.from_pretrained(
        src, device=device, offload_text_encoder=args.offload_text_encoder, offload_tokenizer=args.offload_tokenizer,
        fp8=args.fp8, compile=args.compile, guardrails=not args.disable_guardrails,
        guardrail_dir=args.guardrail_dir or None, aegis_base=args.aegis_base or None,
        aegis_adapter=args.aegis_adapter or None, siglip=args.siglip or None,
        prompt_upsampler=args.enable_prompt_upsampler, prompt_upsampler_dir=args.prompt_upsampler_dir or None,
        context_parallel_group=group, batch_guidance=args.batch_guidance, lora=lora, lora_merge=not args.no_lora_merge)

    # the prompt stage for every job first: refusals cost no sampling, and the guardrail models
    # visit the GPU before the DiT does
    ready = []
    for n, s, out in planned:
        try:
            if is_main(group):
                pipe.prepare_prompt(s["prompt"], s["subject_name"])
        except (BlockedError, CosmosUserError) as e:
            if n is None:
                raise
            log.error("line %d skipped: %s", n, first_line(e))
            failures.append(cli.EXIT_BLOCKED if isinstance(e, BlockedError) else cli.EXIT_BAD_INPUT)
            continue
        ready.append((n, s, out))
    for n, s, out in ready:
        try:
            result = pipe(**s, progress=not args.no_progress)[0]
            if result.frames is None:  # a context-parallel rank other than the first
                continue
            recover(out)
            result.timings["model_loading_s"] = pipe.timings["model_loading_s"]
            result.settings.update(disable_guardrails=args.disable_guardrails,
                                   enable_prompt_upsampler=args.enable_prompt_upsampler)
            result.save(out, save_latent=args.save_latent)
        except (BlockedError, CosmosUserError) as e:
            if n is None:
                raise
            log.error("line %d not written: %s", n, first_line(e))
            failures.append(cli.EXIT_BLOCKED if isinstance(e, BlockedError) else cli.EXIT_BAD_INPUT)
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    if failures:
        log.error("%d of %d lines failed", len(failures), len(jobs))
        return cli.EXIT_BAD_INPUT if cli.EXIT_BAD_INPUT in failures else cli.EXIT_BLOCKED
    return cli.EXIT_OK


def main(argv=None) -> int:
    return cli.run_cli(build_parser(), run, argv, distributed=True)


if __name__ == "__main__":
    sys.exit(main())
