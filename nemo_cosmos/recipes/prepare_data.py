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
An output folder that already holds samples is refused unless ``--overwrite`` is given, which replaces
it as a whole once the new dataset is complete.
"""

from __future__ import annotations

import glob
import logging
import os
import random
import shutil
import sys
import tempfile
from typing import Iterator, List, Optional, Tuple

if not __package__:  # run by path: make the package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402

from nemo_cosmos.errors import BadInputError, MissingFileError, OutputError, first_line, shorten  # noqa: E402
from nemo_cosmos.presets import DEFAULT_MODEL, MODELS, subject_prompt  # noqa: E402
from nemo_cosmos.utils import cli  # noqa: E402

log = logging.getLogger("nemo_cosmos")
PROG = "python -m nemo_cosmos.recipes.prepare_data"


def read_video(path: str) -> Tuple[List[np.ndarray], float]:
    """All frames (uint8 [H, W, 3]) and the frame rate; BadInputError if the file is not a readable video."""
    import imageio.v2 as imageio

    try:
        reader = imageio.get_reader(path, format="FFMPEG")
        fps = float(reader.get_meta_data().get("fps") or 0)
        frames = [np.asarray(f)[..., :3] for f in reader]
        reader.close()
    except Exception as e:
        raise BadInputError(f"cannot read {os.path.basename(path)} as a video ({first_line(e)})") from None
    if not frames:
        raise BadInputError(f"{os.path.basename(path)} has no frames")
    return frames, fps


def resize_crop(frames: List[np.ndarray], height: int, width: int):
    """[T, H, W, 3] uint8 -> [3, T, height, width] in [-1, 1]: scaled to cover, centre-cropped."""
    import torch
    from torch.nn import functional as F

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
    if not os.path.isfile(txt):
        return None
    try:
        with open(txt, encoding="utf-8") as f:
            return f.read().strip() or None
    except UnicodeDecodeError:
        raise BadInputError(f"caption {txt} is not UTF-8 text") from None


def samples(videos: List[str], num_frames: int, num_chunks: int, height: int, width: int,
            seed: int) -> Iterator[Tuple[str, object, dict]]:
    """(video path, clip [3, T, H, W], info) for every usable clip; reports what it skips."""
    rng = random.Random(seed)
    for path in videos:
        try:
            frames, fps = read_video(path)
        except BadInputError as e:
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


def build_parser():
    p = cli.parser(PROG, __doc__, f'{PROG} --input_video_dir videos/ --subject_name "teal robot" --output_dir data/teal_robot',
                   "post_training.md")
    p.add_argument("--input_video_dir", required=True, help="folder of *.mp4 (optional <name>.txt captions beside them)")
    p.add_argument("--subject_name", required=True, help='what the videos show, e.g. "teal robot"')
    p.add_argument("--output_dir", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace an output folder that already holds samples")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"one of: {', '.join(MODELS)} (its tokenizer, T5 and size)")
    p.add_argument("--height", type=int, default=None, help="default: the model's (704; 64 for cosmos-demo)")
    p.add_argument("--width", type=int, default=None, help="default: the model's (1280; 64 for cosmos-demo)")
    p.add_argument("--num_frames", type=int, default=None, help="8k+1; default: the model's (121; 17 for cosmos-demo)")
    p.add_argument("--num_chunks", type=int, default=1, help="clips per video (the first starts at frame 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer_dir", default="", help="CV8x8x8 tokenizer folder (default: the model's)")
    p.add_argument("--t5_path", default="", help="T5 encoder folder or Hub name (default: the model's)")
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when there is a GPU)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def _check_output(path: str, overwrite: bool) -> None:
    from nemo_cosmos.training.data import sample_ids

    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f"--output_dir {path} is a file")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        held = f"{len(sample_ids(path))} samples" if sample_ids(path) else "other files"
        raise OutputError(f"--output_dir {path} already holds {held}; give another folder, or --overwrite to "
                          "replace it")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"--output_dir: folder {parent} does not exist or is not writable")


def run(args) -> int:
    import torch
    from tqdm import tqdm

    from nemo_cosmos.checkpoint.hub import download_command, ensure_local
    from nemo_cosmos.pipeline import check_settings, resolve_device
    from nemo_cosmos.sources import resolve_source
    from nemo_cosmos.text import T5TextEncoder
    from nemo_cosmos.tokenizer import CV8x8x8Tokenizer
    from nemo_cosmos.training.data import write_sample

    if args.num_chunks < 1:
        raise BadInputError(f"--num_chunks must be at least 1; got {args.num_chunks}")
    if not os.path.isdir(args.input_video_dir):
        raise MissingFileError(f"--input_video_dir {args.input_video_dir} is not a folder")
    videos = sorted(glob.glob(os.path.join(args.input_video_dir, "*.mp4")))
    if not videos:
        raise MissingFileError(f"no .mp4 files in {args.input_video_dir}")
    _check_output(args.output_dir, args.overwrite)
    device = resolve_device(args.device)
    src = resolve_source(args.model, tokenizer=args.tokenizer_dir or None, text_encoder=args.t5_path or None)
    height = args.height or src.defaults.height
    width = args.width or src.defaults.width
    num_frames = args.num_frames or src.defaults.num_frames
    dit_cfg, tok_cfg = src.dit_config(), src.tokenizer_config()
    check_settings(dit_cfg, tok_cfg, height=height, width=width, num_frames=num_frames, num_steps=1,
                   fps=src.defaults.fps, guidance=0.0)
    check_prompt = src.preset.check_prompt() if src.preset is not None else None
    if check_prompt is not None:
        try:
            check_prompt("a red circle moving up", args.subject_name)
        except BadInputError:
            log.warning("%s's text encoder knows only its own words: %s reaches it as unknown tokens",
                        src.name, shorten(args.subject_name))
    src.adopt_downloads(ensure_local([i for i in src.hub_items() if i is not src.dit_item],
                                     download_command(src.name, False, False)))

    tokenizer = CV8x8x8Tokenizer.from_pretrained(src.tokenizer, tok_cfg, dtype=dit_cfg.params_dtype).to(device).eval()
    t5 = T5TextEncoder.from_pretrained(src.text_encoder, device=device)
    parent = os.path.dirname(os.path.abspath(args.output_dir))
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(args.output_dir))}.", dir=parent)
    embeddings = {}
    count, used = 0, set()
    try:
        total = len(videos) * args.num_chunks
        bar = tqdm(total=total, desc="clips", unit="clip", disable=args.no_progress)
        with torch.no_grad():
            for path, clip, info in samples(videos, num_frames, args.num_chunks, height, width, args.seed):
                prompt = subject_prompt(caption_for(path) or "", args.subject_name).strip()
                if prompt not in embeddings:
                    embeddings[prompt] = t5.encode([prompt])[0].to(dit_cfg.params_dtype).cpu()
                latent = tokenizer.encode(clip[None].to(device, dit_cfg.params_dtype))[0].cpu()
                write_sample(os.path.join(staging, str(count)), latent, embeddings[prompt], {**info, "prompt": prompt})
                count += 1
                used.add(path)
                bar.update(1)
        bar.close()
        if count == 0:
            raise BadInputError(f"none of the {len(videos)} videos in {args.input_video_dir} was usable "
                                "(see the warnings above)")
        os.chmod(staging, 0o777 & ~_umask())
        # the new dataset replaces the old folder only once complete
        old = None
        if os.path.isdir(args.output_dir):
            old = tempfile.mkdtemp(prefix=".old.", dir=parent)
            os.rmdir(old)
            os.replace(args.output_dir, old)
        os.replace(staging, args.output_dir)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("prepared %d samples from %d videos in %s (%d skipped)", count, len(used), args.output_dir,
             len(videos) - len(used))
    return cli.EXIT_OK


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def main(argv=None) -> int:
    return cli.run_cli(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
