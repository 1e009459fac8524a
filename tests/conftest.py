import json
import os
import types
import warnings

import pytest
import torch
from helpers import make_tiny_t5, randomize_, save_tokenizer_files

from nemo_cosmos.checkpoint import from_ours, save_nemo_checkpoint
from nemo_cosmos.models import CosmosDiT, tiny_config
from nemo_cosmos.tokenizer import CV8x8x8Tokenizer, tiny_tokenizer_config

# Megatron-Core warns at import about missing Transformer Engine/Apex; the fallback is the point here.
warnings.filterwarnings("ignore", module="megatron")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def _nearest_resize(img, size, interpolation=None):
    return torch.nn.functional.interpolate(img, size=size, mode="nearest")


@pytest.fixture(scope="session")
def diffusers_cosmos():
    """diffusers' Cosmos transformer module, as the numerical oracle.

    It resizes the padding mask with torchvision, which cannot be installed beside this CPU torch;
    torchvision's NEAREST tensor resize is F.interpolate(mode="nearest"), so that stands in for it.
    """
    mod = pytest.importorskip("diffusers.models.transformers.transformer_cosmos")
    if not hasattr(mod, "transforms"):
        functional = types.SimpleNamespace(resize=_nearest_resize)
        mod.transforms = types.SimpleNamespace(
            functional=functional, InterpolationMode=types.SimpleNamespace(NEAREST="nearest")
        )
    return mod


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """A tiny DiT (as model.pt, as NeMo checkpoints and as a save_pretrained pipeline folder
    ``tiny``), tokenizer files as NVIDIA publishes them and T5, made once."""
    from nemo_cosmos.pipeline import Text2WorldPipeline
    from nemo_cosmos.presets import GenerationDefaults
    from nemo_cosmos.text import T5TextEncoder

    root = tmp_path_factory.mktemp("assets")
    cfg = tiny_config()
    dit = randomize_(CosmosDiT(cfg))
    (root / "dit").mkdir()
    torch.save(from_ours(dit.state_dict(), cfg, "original"), root / "dit" / "model.pt")
    (root / "tokenizer").mkdir()
    tok = randomize_(CV8x8x8Tokenizer(tiny_tokenizer_config()), std=0.3).eval()
    save_tokenizer_files(tok, root / "tokenizer")
    (root / "tokenizer" / "config.json").write_text(json.dumps(tok.cfg.to_dict()))
    make_tiny_t5(root / "t5", d_model=cfg.crossattn_dim)
    # the same three as one self-describing folder (what --nemo_checkpoint / from_pretrained take)
    pipe = Text2WorldPipeline(dit, CV8x8x8Tokenizer.from_pretrained(root / "tokenizer", dtype=torch.float32),
                              T5TextEncoder.from_pretrained(str(root / "t5")), guardrails=False, name="tiny",
                              defaults=GenerationDefaults(height=32, width=48, num_frames=9, fps=12))
    pipe.save_pretrained(str(root / "tiny"))
    # the same weights as a NeMo checkpoint in a post-training run's folder tree, beside an older one
    run = root / "nemo_experiments" / "tiny_finetune" / "default" / "2026-01-01_00-00-00" / "checkpoints"
    save_nemo_checkpoint(randomize_(CosmosDiT(cfg), std=0.5).state_dict(), cfg, str(run / "epoch=0-step=4"))
    save_nemo_checkpoint(dit.state_dict(), cfg, str(run / "epoch=1-step=9"))
    return root


@pytest.fixture(scope="session")
def dataset(assets, tmp_path_factory):
    """Four post-training samples of the tiny model (prepare_data on small synthetic videos, two of
    them unusable)."""
    from helpers import square_video, write_video
    from nemo_cosmos.recipes import prepare_data

    root = tmp_path_factory.mktemp("post")
    videos = root / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", square_video(12))
    write_video(videos / "b.mp4", square_video(10, offset=6))
    (videos / "b.txt").write_text("It slides to the right.")
    write_video(videos / "short.mp4", square_video(5))
    (videos / "broken.mp4").write_bytes(b"\x00\x01 not a video")
    rc = prepare_data.main([
        "--input_video_dir", str(videos), "--subject_name", "teal robot", "--output_dir", str(root / "data"),
        "--model", str(assets / "tiny"), "--height", "32", "--width", "48", "--num_frames", "9", "--num_chunks", "2",
        "--device", "cpu", "--no_progress",
    ])
    assert rc == 0
    return root / "data"
