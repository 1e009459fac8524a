"""Train the built-in demo models on one GPU and write them to nemo_cosmos/demo/assets.

    python -m nemo_cosmos.demo.train [--out nemo_cosmos/demo/assets] [--work /tmp/cosmos-demo]
    python -m nemo_cosmos.demo.train --family video2world [--out nemo_cosmos/demo/assets]

Text2World (cosmos-demo):

1. a small T5 encoder (random, fixed seed: the DiT learns to read its embeddings) and a word-level
   tokenizer over the world's vocabulary;
2. the CV8x8x8 tokenizer architecture at small widths, trained as an autoencoder (L1 + MSE) on
   rendered clips, then its per-channel latent statistics;
3. a dataset of rendered, encoded clips in the post-training layout (recipes.prepare_data's);
4. the DiT from scratch with the post-training recipe ``cosmos_demo_text2world_train``;
5. the weights exported (float16 safetensors), and the accuracy of generated clips measured with the
   world's own detector.

Video2World (cosmos-demo-video2world, written to ``--out``/video2world): cosmos-demo's tokenizer and
T5 (already in ``--out``), a new dataset of rendered clips, the DiT post-trained from cosmos-demo's
by the recipe ``cosmos_demo_video2world_train`` (the condition-mask channel's inputs start at zero),
then continuations of held-out clips judged by the detector and by where the object goes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time

import numpy as np
import torch

from . import demo_dit_config, demo_tokenizer_config
from .world import BACKGROUND, FPS, VOCABULARY, all_captions, analyse, caption, continuation_error, render

log = logging.getLogger("nemo_cosmos")


def make_t5(folder: str) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(VOCABULARY)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    model = T5EncoderModel(T5Config(vocab_size=len(vocab), d_model=demo_dit_config().crossattn_dim, d_kv=16, num_heads=4, num_layers=2,
                                    d_ff=128, dropout_rate=0.0))
    model.save_pretrained(folder)
    fast.save_pretrained(folder)


def random_clips(rng: np.random.Generator, n: int):
    combos = all_captions()
    picks = [combos[i] for i in rng.integers(0, len(combos), n)]
    videos = np.stack([render(c, s, d, rng) for c, s, d in picks])
    return picks, torch.from_numpy(videos).permute(0, 4, 1, 2, 3)  # uint8 [n, 3, T, H, W]


def to_unit(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 127.5 - 1.0


def train_tokenizer(device, steps: int, batch: int, seed: int, object_weight: float, lr: float):
    """Autoencoder training on a pool of rendered clips (kept on the device as uint8). The object
    covers ~10% of a frame: its pixels weigh `object_weight` times more, or the autoencoder settles
    for drawing the background."""
    from ..tokenizer import CV8x8x8Tokenizer

    rng = np.random.default_rng(seed)
    pool = random_clips(rng, 8192)[1].to(device)
    background = torch.tensor(BACKGROUND, dtype=torch.float32, device=device).view(1, 3, 1, 1, 1) / 127.5 - 1.0
    tok = CV8x8x8Tokenizer(demo_tokenizer_config()).to(device).train()
    opt = torch.optim.AdamW(tok.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.05)
    gen = torch.Generator(device).manual_seed(seed)
    t0 = time.perf_counter()
    for step in range(steps):
        x = to_unit(pool[torch.randint(0, len(pool), (batch,), device=device, generator=gen)])
        weight = 1.0 + (object_weight - 1) * ((x - background).abs().sum(1, keepdim=True) > 0.1)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            recon = tok.decode_raw(tok.encode_raw(x))
        err = recon.float() - x
        loss = (weight * (err.abs() + err**2)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tok.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 500 == 0 or step == steps - 1:
            log.info("tokenizer step %d: loss %.4f (%.0f s)", step, loss.item(), time.perf_counter() - t0)
    tok.eval()
    with torch.no_grad():  # latent statistics per channel and latent frame, as the published mean_std.pt
        zs = torch.cat([tok.encode_raw(to_unit(random_clips(rng, 64)[1].to(device))) for _ in range(8)])
        tok.set_latent_stats(zs.mean(dim=(0, 3, 4)).flatten(), zs.std(dim=(0, 3, 4)).flatten())
    return tok


def accuracy(pairs) -> dict:
    """Shares of (detected, wanted) caption triples that agree: entirely, and per attribute."""
    hits, total = dict.fromkeys(("all", "color", "shape", "direction"), 0), 0
    for found, want in pairs:
        found = found or (None, None, None)
        total += 1
        hits["all"] += found == want
        for i, key in enumerate(("color", "shape", "direction")):
            hits[key] += found[i] == want[i]
    return {k: v / total for k, v in hits.items()}


@torch.no_grad()
def round_trip_accuracy(tok, device, repeats: int = 4) -> dict:
    """Share of rendered clips (every caption, `repeats` positions each) whose encode-decode round
    trip the detector reads as the caption: an upper bound for what the DiT can reach."""
    rng = np.random.default_rng(123)
    combos = all_captions() * repeats
    x = torch.stack([torch.from_numpy(render(c, s, d, rng)).permute(3, 0, 1, 2) for c, s, d in combos])
    pairs = []
    for start in range(0, len(combos), 32):
        r = tok.decode(tok.encode(to_unit(x[start:start + 32]).to(device))).float().cpu()
        frames = ((1 + r).clamp(0, 2) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()
        pairs += [(analyse(f), want) for f, want in zip(frames, combos[start:start + 32])]
    return accuracy(pairs)


def build_dataset(folder: str, tok, t5, device, n: int, seed: int) -> None:
    from ..training.data import write_sample

    rng = np.random.default_rng(seed + 1)
    os.makedirs(folder, exist_ok=True)
    texts = {}
    with torch.no_grad():
        for start in range(0, n, 64):
            picks, x = random_clips(rng, min(64, n - start))
            latents = tok.encode(to_unit(x).to(device)).float().cpu()
            for j, (c, s, d) in enumerate(picks):
                prompt = caption(c, s, d)
                if prompt not in texts:
                    texts[prompt] = t5.encode([prompt])[0].cpu()
                write_sample(os.path.join(folder, str(start + j)), latents[j], texts[prompt],
                             {"fps": FPS, "num_frames": x.shape[2], "height": x.shape[3], "width": x.shape[4],
                              "prompt": prompt})


def evaluate(pipe, seeds=range(1)) -> dict:
    """One generation per caption and seed (the model's defaults: guidance 3, the empty negative
    prompt), judged by the detector."""
    def judged(seed, i, want):
        frames = pipe(caption(*want), seed=seed * 100 + i, progress=False)[0].frames
        return analyse(frames), want

    return accuracy(judged(seed, i, want) for seed in seeds for i, want in enumerate(all_captions()))


def evaluate_video2world(pipe, num_input_frames: int, seeds=range(1), captions=None) -> dict:
    """Continuations of held-out clips (positions drawn from seeds training never used): each
    caption's clip gives its first `num_input_frames` frames and its caption; the generated frames
    after them are judged by the detector, and by the distance (pixels) between the object's
    centroids there and in the true clip. Returns accuracy shares, the mean distance and the share
    of continuations within 4 pixels on average."""
    captions = all_captions() if captions is None else captions
    pairs, errors = [], []
    for seed in seeds:
        for i, want in enumerate(captions):
            truth = render(*want, np.random.default_rng(900_000 + 1000 * seed + i))
            frames = pipe(caption(*want), video=truth[:num_input_frames], num_input_frames=num_input_frames,
                          seed=seed * 100 + i, progress=False)[0].frames
            pairs.append((analyse(frames[num_input_frames:]), want))
            errors.append(continuation_error(frames, truth, num_input_frames))
    errors = np.array(errors)
    return {**accuracy(pairs), "mean_centroid_error_px": float(np.mean(np.minimum(errors, 64.0))),
            "within_4px": float((errors <= 4.0).mean())}


PROG = "python -m nemo_cosmos.demo.train"


def build_parser():
    from ..utils import cli

    p = cli.parser(PROG, __doc__, f"{PROG} --out my-demo --work /tmp/cosmos-demo", "demo.md")
    p.add_argument("--out", default="cosmos-demo-assets",
                   help="the pipeline folder to write (copy it over nemo_cosmos/demo/assets to ship it)")
    p.add_argument("--work", default="cosmos-demo-work", help="dataset, checkpoints and scores")
    p.add_argument("--tokenizer_steps", type=int, default=4000, help="0: keep the tokenizer already in --out")
    p.add_argument("--tokenizer_batch", type=int, default=32)
    p.add_argument("--tokenizer_lr", type=float, default=2e-3)
    p.add_argument("--object_weight", type=float, default=5.0)
    p.add_argument("--clips", type=int, default=4096)
    p.add_argument("--dit_steps", type=int, default=None, help="default: the recipe's; 0: stop after the tokenizer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--family", default="text2world", choices=["text2world", "video2world"],
                   help="video2world: post-train cosmos-demo-video2world from the cosmos-demo already in --out")
    p.add_argument("overrides", nargs="*", help="post-training recipe overrides for the DiT, e.g. data.num_workers=8")
    return p


def run(args) -> int:
    from ..checkpoint import load_dit
    from ..pipeline import Text2WorldPipeline
    from ..presets import DEMO_MODEL, MODELS, TEXT_ENCODER_SUBDIR, TOKENIZER_SUBDIR
    from ..text import T5TextEncoder
    from ..tokenizer import CV8x8x8Tokenizer
    from ..training import recipe, train

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    if args.family == "video2world":
        return run_video2world(args, device, t0)

    t5_dir = os.path.join(args.out, TEXT_ENCODER_SUBDIR)
    if not os.path.isdir(t5_dir):  # the DiT is trained against these exact (random) weights: keep them
        make_t5(t5_dir)
    t5 = T5TextEncoder.from_pretrained(t5_dir, device=device)

    tok_dir = os.path.join(args.out, TOKENIZER_SUBDIR)
    if args.tokenizer_steps:
        tok = train_tokenizer(device, args.tokenizer_steps, args.tokenizer_batch, args.seed, args.object_weight,
                              args.tokenizer_lr)
        tok.half().save_pretrained(tok_dir)
    tok = CV8x8x8Tokenizer.from_pretrained(tok_dir, dtype=torch.float32).to(device)
    round_trip = round_trip_accuracy(tok, device)
    log.info("tokenizer round trip, detector agreement: %s", json.dumps(round_trip))
    log.info("tokenizer done at %.0f s", time.perf_counter() - t0)
    os.makedirs(args.work, exist_ok=True)
    with open(os.path.join(args.work, "round_trip.json"), "w") as f:
        json.dump(round_trip, f)
    if args.dit_steps == 0:
        return 0

    data = os.path.join(args.work, "data")
    shutil.rmtree(data, ignore_errors=True)
    build_dataset(data, tok, t5, device, args.clips, args.seed)
    log.info("dataset done at %.0f s", time.perf_counter() - t0)

    cfg = recipe("cosmos_demo_text2world_train", [f"data.path={data}", f"log.log_dir={args.work}/nemo_experiments",
                                                   *([f"trainer.max_steps={args.dit_steps}"] if args.dit_steps else []), "resume=false",
                                                   *args.overrides])
    dit = load_dit(train(cfg), dtype=torch.float32)
    pipe = Text2WorldPipeline(dit, tok.cpu(), t5, device=device, check_prompt=MODELS[DEMO_MODEL].check_prompt(),
                              defaults=MODELS[DEMO_MODEL].generation_defaults(), name=DEMO_MODEL)
    pipe.save_pretrained(args.out, dit_dtype=torch.float16)
    log.info("DiT done at %.0f s; the model is in %s", time.perf_counter() - t0, args.out)
    scores = evaluate(Text2WorldPipeline.from_pretrained(args.out, device=device, guardrails=False))
    log.info("accuracy over the 32 captions: %s", json.dumps(scores))
    with open(os.path.join(args.work, "scores.json"), "w") as f:
        json.dump({**scores, "seconds": time.perf_counter() - t0}, f)
    return 0


def run_video2world(args, device, t0: float) -> int:
    from ..checkpoint import load_dit, save_dit_safetensors
    from ..models.config import config_to_dict
    from ..pipeline import Video2WorldPipeline
    from ..presets import DEMO_V2W_MODEL, DIT_WEIGHTS, MODEL_INDEX, TEXT_ENCODER_SUBDIR, TOKENIZER_SUBDIR, family_of
    from ..text import T5TextEncoder
    from ..tokenizer import CV8x8x8Tokenizer
    from ..training import recipe, train

    from ..errors import MissingFileError

    parts = {p: os.path.join(args.out, p) for p in (TOKENIZER_SUBDIR, TEXT_ENCODER_SUBDIR, DIT_WEIGHTS)}
    missing = [p for p in parts.values() if not os.path.exists(p)]
    if missing:
        raise MissingFileError(f"{missing[0]} not found: --out must hold cosmos-demo (train it first, or "
                               "give --out nemo_cosmos/demo/assets)")
    t5 = T5TextEncoder.from_pretrained(parts[TEXT_ENCODER_SUBDIR], device=device)
    tok = CV8x8x8Tokenizer.from_pretrained(parts[TOKENIZER_SUBDIR], dtype=torch.float32).to(device)
    os.makedirs(args.work, exist_ok=True)
    data = os.path.join(args.work, "data")
    shutil.rmtree(data, ignore_errors=True)
    build_dataset(data, tok, t5, device, args.clips, args.seed)
    log.info("dataset done at %.0f s", time.perf_counter() - t0)

    overrides = [f"data.path={data}", f"log.log_dir={args.work}/nemo_experiments", f"model.init_from={args.out}",
                 "resume=false", *([f"trainer.max_steps={args.dit_steps}"] if args.dit_steps else []), *args.overrides]
    dit = load_dit(train(recipe("cosmos_demo_video2world_train", overrides)), dtype=torch.float32)

    out = os.path.join(args.out, "video2world")
    os.makedirs(out, exist_ok=True)
    name = DEMO_V2W_MODEL
    save_dit_safetensors(dit.state_dict(), dit.config, os.path.join(out, DIT_WEIGHTS), model=name, dtype=torch.float16)
    with open(os.path.join(args.out, MODEL_INDEX), encoding="utf-8") as f:
        defaults = {**json.load(f)["defaults"], "num_input_frames": 1}
    index = {"format": "nemo_cosmos", "family": family_of(dit.config), "model": name, "dit": config_to_dict(dit.config),
             "tokenizer_dir": f"../{TOKENIZER_SUBDIR}", "text_encoder": f"../{TEXT_ENCODER_SUBDIR}", "defaults": defaults}
    with open(os.path.join(out, MODEL_INDEX), "w") as f:
        json.dump(index, f, indent=2)
    log.info("DiT done at %.0f s; the model is in %s", time.perf_counter() - t0, out)

    pipe = Video2WorldPipeline.from_pretrained(out, device=device, guardrails=False)
    scores = {f"{n}_input_frames": evaluate_video2world(pipe, n, seeds=range(2)) for n in (1, 9)}
    log.info("continuations of held-out clips: %s", json.dumps(scores))
    with open(os.path.join(args.work, "scores_video2world.json"), "w") as f:
        json.dump({**scores, "seconds": time.perf_counter() - t0}, f)
    return 0


def main(argv=None) -> int:
    from ..utils import cli

    return cli.run_cli(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())

