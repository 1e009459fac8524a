"""Turn a folder of mp4 videos of one subject into a post-training dataset.

    python -m nemo_cosmos.recipes.prepare_data --input_video_dir videos/ --subject_name "teal robot" \\
        --output_dir datasets/teal_robot

For each video (and ``--num_chunks`` clips of ``--num_frames`` frames from it), the frames are
resized to cover ``--height`` x ``--width`` and centre-cropped (aspect ratio kept), encoded with the
CV8x8x8 tokenizer, and stored beside the T5 embedding of the prompt "A video of sks {subject}." (or,
when ``<video>.txt`` exists, "A video of sks {subject}. {caption}"). The files are NVIDIA's cached
dataset layout, so NeMo's loader reads them too (docs/post_training.md):

    {i}.video_latent.pth        [16, T', H/8, W/8]  normalised tokenizer latent (not yet x sigma_data)
    {i}.t5_text_embeddings.pth  [512, 1024]          zero past the prompt's tokens
    {i}.t5_text_mask.pth        [512]                ones (the DiT attends to all 512 positions)
    {i}.info.json               source size, fps, clip start, prompt

Videos that cannot be read or are too short are reported and skipped; the run fails if none is usable.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import random
import sys
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch.nn import functional as F

from ..pipeline import subject_prompt
from ..text import T5TextEncoder
from ..tokenizer import CV8x8x8Tokenizer, check_num_frames
from ..utils.video import write_json, write_tensor
from .models import MODELS, hub_snapshot, model_entry
from ..errors import first_line

log = logging.getLogger("nemo_cosmos")
EXIT_BAD_INPUT = 2


def read_video(path: str) -> Tuple[List[np.ndarray], float]:
    """All frames (uint8 [H, W, 3]) and the frame rate; ValueError if the file is not a readable video."""
    import imageio.v2 as imageio

    try:
        reader = imageio.get_reader(path, format="FFMPEG")
        fps = float(reader.get_meta_data().get("fps") or 0)
        frames = [np.asarray(f)[..., :3] for f in reader]
        reader.close()
    except Exception as e:
        raise ValueError(f"cannot read {os.path.basename(path)} as a video ({first_line(e)})") from None
    if not frames:
        raise ValueError(f"{os.path.basename(path)} has no frames")
    return frames, fps


def resize_crop(frames: List[np.ndarray], height: int, width: int) -> torch.Tensor:
    """[T, H, W, 3] uint8 -> [3, T, height, width] in [-1, 1]: scaled to cover, centre-cropped."""
    video = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()  # [T, 3, h, w]
    h, w = video.shape[-2:]
    scale = max(height / h, width / w)
    size = (max(height, round(h * scale)), max(width, round(w * scale)))
    video = F.interpolate(video, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    video = video[:, :, top:top + height, left:left + width].clamp(0, 255)
    return (video / 127.5 - 1.0).permute(1, 0, 2, 3)


def clip_starts(total: int, length: int, num_chunks: int, rng: random.Random) -> List[int]:
    """Start frames of up to num_chunks clips: the first clip starts at 0, the others at random."""
    last = total - length
    if num_chunks <= 1 or last == 0:
        return [0]
    starts = {0}
    while len(starts) < min(num_chunks, last + 1):
        starts.add(rng.randint(0, last))
    return sorted(starts)


def caption_for(video_path: str) -> Optional[str]:
    txt = os.path.splitext(video_path)[0] + ".txt"
    if os.path.isfile(txt):
        with open(txt) as f:
            return f.read().strip() or None
    return None


def samples(videos: List[str], num_frames: int, num_chunks: int, height: int, width: int,
            seed: int) -> Iterator[Tuple[str, torch.Tensor, dict]]:
    """(video path, clip [3, T, H, W], info) for every usable clip; reports what it skips."""
    rng = random.Random(seed)
    for path in videos:
        try:
            frames, fps = read_video(path)
        except ValueError as e:
            log.warning("skipped: %s", e)
            continue
        if len(frames) < num_frames:
            log.warning("skipped: %s has %d frames, fewer than the %d a clip needs",
                        os.path.basename(path), len(frames), num_frames)
            continue
        h, w = frames[0].shape[:2]
        for start in clip_starts(len(frames), num_frames, num_chunks, rng):
            clip = resize_crop(frames[start:start + num_frames], height, width)
            yield path, clip, {"height": h, "width": w, "fps": fps or 24.0, "num_frames": num_frames,
                               "video_path": os.path.basename(path), "start_frame": start}


def write_sample(base: str, latent: torch.Tensor, text: torch.Tensor, info: dict) -> None:
    """One sample of the dataset layout; info.json is written last and marks it complete."""
    write_tensor(base + ".video_latent.pth", latent)
    write_tensor(base + ".t5_text_embeddings.pth", text)
    write_tensor(base + ".t5_text_mask.pth", torch.ones(text.shape[0], dtype=text.dtype))
    write_json(base + ".info.json", info)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nemo_cosmos.recipes.prepare_data", description=__doc__.split("\n\n")[0])
    p.add_argument("--input_video_dir", required=True, help="folder of *.mp4 (optional <name>.txt captions beside them)")
    p.add_argument("--subject_name", required=True, help='what the videos show, e.g. "teal robot"')
    p.add_argument("--output_dir", required=True)
    p.add_argument("--model", default="Cosmos-1.0-Diffusion-7B-Text2World", help=f"one of: {', '.join(MODELS)}")
    p.add_argument("--height", type=int, default=704)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--num_frames", type=int, default=121)
    p.add_argument("--num_chunks", type=int, default=1, help="clips per video (the first starts at frame 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer_dir", default="", help="CV8x8x8 tokenizer files (default: Hugging Face cache)")
    p.add_argument("--t5_path", default="", help="T5 encoder (default: google-t5/t5-11b from the cache)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def run(args) -> int:
    entry = model_entry(args.model)
    tok_cfg = entry.tokenizer()
    check_num_frames(tok_cfg, args.num_frames)
    step = tok_cfg.spatial_compression * 2
    for name, value in (("height", args.height), ("width", args.width)):
        if value <= 0 or value % step:
            raise ValueError(f"--{name} {value} must be a positive multiple of {step}")
    if not os.path.isdir(args.input_video_dir):
        raise FileNotFoundError(f"--input_video_dir {args.input_video_dir} is not a folder")
    videos = sorted(glob.glob(os.path.join(args.input_video_dir, "*.mp4")))
    if not videos:
        raise FileNotFoundError(f"no .mp4 files in {args.input_video_dir}")

    tok_dir = args.tokenizer_dir or (entry.tokenizer_repo and hub_snapshot(entry.tokenizer_repo, ["*.jit", "mean_std.pt"], "the CV8x8x8 tokenizer"))
    if not tok_dir:
        raise ValueError(f"--model {args.model} needs --tokenizer_dir")
    t5_path = args.t5_path or entry.t5
    if not t5_path:
        raise ValueError(f"--model {args.model} needs --t5_path")
    dtype = entry.dit().params_dtype
    tokenizer = CV8x8x8Tokenizer.from_pretrained(tok_dir, tok_cfg, dtype=dtype).to(args.device).eval()
    t5 = T5TextEncoder.from_pretrained(t5_path, device=args.device)

    os.makedirs(args.output_dir, exist_ok=True)
    embeddings = {}
    count, used = 0, set()
    with torch.no_grad():
        for path, clip, info in samples(videos, args.num_frames, args.num_chunks, args.height, args.width, args.seed):
            prompt = subject_prompt(caption_for(path) or "", args.subject_name).strip()
            if prompt not in embeddings:
                embeddings[prompt] = t5.encode([prompt])[0].to(dtype).cpu()
            latent = tokenizer.encode(clip[None].to(args.device, dtype))[0].cpu()
            write_sample(os.path.join(args.output_dir, str(count)), latent, embeddings[prompt], {**info, "prompt": prompt})
            count += 1
            used.add(path)
    skipped = len(videos) - len(used)
    log.info("prepared %d samples from %d videos in %s (%d skipped)", count, len(used), args.output_dir, skipped)
    if count == 0:
        raise ValueError(f"none of the {len(videos)} videos in {args.input_video_dir} was usable (see the warnings above)")
    return count


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="[nemo_cosmos] %(message)s")
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
