"""Helpers shared by the tests (tests/ is on sys.path under pytest's default import mode)."""

import torch


SMALL = ["--height", "32", "--width", "48", "--num_video_frames", "9", "--num_steps", "3", "--fps", "12"]


def infer_args(assets, out, *extra):
    """Command-line arguments of a tiny CPU generation with the `assets` fixture's pipeline folder."""
    return [
        "--nemo_checkpoint", str(assets / "tiny"), "--video_save_path", str(out), "--no_progress", "--device", "cpu",
        "--disable_guardrails", *SMALL, *extra,
    ]


def randomize_(module: torch.nn.Module, std: float = 0.2) -> torch.nn.Module:
    """Give every parameter non-trivial values (norm scales near 1), so a swapped tensor shows."""
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if p.dim() == 1:
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(noise * std / max(1.0, p.shape[-1] ** 0.5 / 4))
    return module


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


PUBLISHED_SIZES = {
    "Cosmos-1.0-Diffusion-7B-Text2World": (28, 4096, 68),
    "Cosmos-1.0-Diffusion-14B-Text2World": (36, 5120, 68),
    "Cosmos-1.0-Diffusion-7B-Video2World": (28, 4096, 72),
    "Cosmos-1.0-Diffusion-14B-Video2World": (36, 5120, 72),
}
"""(layers, width, patch-embedding inputs) of each published DiT: a Video2World one takes the
condition mask's (1 x 2 x 2) inputs on top of (16 latent + 1 padding mask) x (1 x 2 x 2)."""


def published_state_dict(name: str, **overrides):
    """(our state dict of the published model `name` on the meta device: shapes only, no memory,
    its config). `overrides` change the config (e.g. a size no published model has)."""
    import dataclasses

    from nemo_cosmos.models import CosmosDiT
    from nemo_cosmos.presets import MODELS

    cfg = dataclasses.replace(MODELS[name].dit_config(), **overrides)
    with torch.device("meta"):
        return CosmosDiT(cfg).state_dict(), cfg


def stored_as_one_element(tensors):
    """Each tensor as one zero broadcast to its shape: torch.save stores one element per tensor, and
    the file still says every shape (a published-size index in a few hundred kilobytes)."""
    return {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in tensors.items()}



def save_tokenizer_files(tok, directory):
    """encoder.jit / decoder.jit / autoencoder.jit / mean_std.pt as the tokenizer repo ships them:
    TorchScript modules whose tensors carry NVIDIA's names, plus the patcher's buffers."""
    import torch.nn as nn

    class EncoderPart(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.quant_conv = tok.encoder, tok.quant_conv
            # NVIDIA's Haar patcher keeps its filter taps as buffers
            self.encoder.patcher3d = nn.Module()
            self.encoder.patcher3d.register_buffer("wavelets", torch.tensor([0.7071, 0.7071]))
            self.encoder.patcher3d.register_buffer("_arange", torch.arange(2))

        def forward(self, x):
            return self.quant_conv(self.encoder(x))

    class DecoderPart(nn.Module):
        def __init__(self):
            super().__init__()
            self.post_quant_conv, self.decoder = tok.post_quant_conv, tok.decoder

        def forward(self, z):
            return self.decoder(self.post_quant_conv(z))

    video = torch.rand(1, 3, 9, 16, 16)
    enc = torch.jit.trace(EncoderPart(), video, check_trace=False)
    enc.save(str(directory / "encoder.jit"))
    torch.jit.trace(DecoderPart(), enc(video), check_trace=False).save(str(directory / "decoder.jit"))
    del tok.encoder.patcher3d
    torch.save((torch.randn(16 * 16), torch.rand(16 * 16) + 0.5), directory / "mean_std.pt")


def make_tiny_t5(directory, d_model: int = 32):
    """A T5 encoder with random weights and a word-level tokenizer, saved as a Hub-style folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    words = "a an the video of sks teal robot red blue green cube ball table moves left right up down".split()
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(directory)
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=len(vocab), d_model=d_model, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
    T5EncoderModel(cfg).save_pretrained(directory)


def write_video(path, frames, fps=12):
    import imageio.v2 as imageio

    imageio.mimsave(path, list(frames), fps=fps, macro_block_size=1)


def square_video(n_frames, offset=0):
    import numpy as np

    frames = np.full((n_frames, 40, 60, 3), 30, np.uint8)
    for t in range(n_frames):
        x = 4 + 3 * t + offset
        frames[t, 12:24, x:x + 12] = (0, 200, 200)
    return frames


def experiment_losses(log_dir, run):
    """{step: logged loss} from every metrics.csv of a post-training run."""
    import csv
    import glob

    out = {}
    for f in glob.glob(str(log_dir / run / "default" / "*" / "metrics.csv")):
        for row in csv.DictReader(open(f)):
            if row.get("loss"):
                out[int(row["step"])] = float(row["loss"])
    return out


def fixed_noise_loss(model, dataset):
    """The denoising loss of `model` on a prepared dataset at fixed noise levels and noise: lower
    means the model learned the data."""
    from nemo_cosmos.diffusion import edm_loss
    from nemo_cosmos.training import CachedVideoDataset

    ds = CachedVideoDataset(str(dataset))
    g = torch.Generator().manual_seed(0)
    total = 0.0
    with torch.no_grad():
        for i in range(len(ds)):
            item = ds[i]
            for sigma in (0.2, 0.5, 1.0, 2.0):
                x0 = item["x0"][None]
                total += edm_loss(model, x0, item["text"][None], torch.tensor([sigma]),
                                  torch.randn(x0.shape, generator=g), fps=float(item["fps"])).item()
    return total
