"""The built-in cosmos-demo model: the shipped weights generate what the caption asks for, judged by
the synthetic world's own detector; the infer command uses it offline, and as the fallback."""

import os
import stat
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from nemo_cosmos import demo
from nemo_cosmos.demo.world import all_captions, analyse, caption, check_prompt, render
from nemo_cosmos.recipes.infer import main

pytestmark = pytest.mark.skipif(not demo.available(), reason="demo weights not shipped in this checkout")


@pytest.fixture(scope="module")
def pipe():
    from nemo_cosmos.checkpoint import load_ours_safetensors
    from nemo_cosmos.models import CosmosDiT
    from nemo_cosmos.pipeline import Text2WorldPipeline
    from nemo_cosmos.text import T5TextEncoder
    from nemo_cosmos.tokenizer import CV8x8x8Tokenizer

    dit = CosmosDiT(demo.demo_dit_config())
    dit.load_state_dict(load_ours_safetensors(demo.DIT_FILE))
    tok = CV8x8x8Tokenizer.from_pretrained(demo.TOKENIZER_DIR, demo.demo_tokenizer_config(), dtype=torch.float32)
    return Text2WorldPipeline(dit, tok, T5TextEncoder.from_pretrained(demo.T5_DIR, device="cpu"), device="cpu")


def test_detector_reads_clean_renders():
    rng = np.random.default_rng(7)
    assert all(analyse(render(*c, rng)) == c for c in all_captions())


def test_generated_clips_show_the_caption(pipe):
    """Half the captions (every colour, shape and direction), a new seed each: the detector must
    read colour, shape and direction right in at least 13 of 16."""
    hits, wrong = 0, []
    for i, want in enumerate(all_captions()[::2]):
        frames = pipe(caption(*want), negative_prompt="", guidance=3.0, num_steps=35, height=64, width=64,
                      num_frames=17, fps=8, seed=1000 + i, progress=False).frames
        got = analyse(frames)
        hits += got == want
        if got != want:
            wrong.append((want, got))
    assert hits >= 13, wrong


def test_shipped_tokenizer_keeps_colour_shape_and_motion(pipe):
    from nemo_cosmos.demo.train import round_trip_accuracy

    assert round_trip_accuracy(pipe.tokenizer, torch.device("cpu"), repeats=1)["all"] >= 0.9


def test_closed_vocabulary():
    check_prompt("A yellow circle moving down.")
    for bad in ("a cat moving left", "a red circle", "a red circle moving left and a person"):
        with pytest.raises(ValueError, match="cosmos-demo draws one shape"):
            check_prompt(bad)


def _offline_empty_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))


def test_infer_falls_back_to_the_demo_offline(tmp_path, monkeypatch, caplog):
    """No --model, no weights in the cache, no network: the demo model runs (without guardrail
    downloads), says so, and writes a readable mp4 that shows the caption."""
    _offline_empty_cache(monkeypatch, tmp_path)
    out = tmp_path / "demo.mp4"
    with caplog.at_level("INFO", logger="nemo_cosmos"):
        rc = main(["--prompt", "a blue square moving left", "--video_save_path", str(out), "--no_progress",
                   "--device", "cpu"])
    assert rc == 0
    assert "using the built-in cosmos-demo model" in caplog.text
    video = iio.imread(out)
    assert video.shape == (17, 64, 64, 3)
    assert analyse(video) == ("blue", "square", "left")
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_prompt_outside_the_demo_world_exits_2(tmp_path, monkeypatch, capsys):
    _offline_empty_cache(monkeypatch, tmp_path)
    out = tmp_path / "demo.mp4"
    rc = main(["--model", "cosmos-demo", "--prompt", "a robot arm picking up a cup", "--video_save_path", str(out)])
    assert rc == 2
    assert "unknown word 'robot'" in capsys.readouterr().err
    assert not list(tmp_path.glob("demo*"))


def test_readme_first_command(tmp_path):
    """The README's first command, as a user runs it: a fresh process, default model, CPU."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "nemo_cosmos.recipes.infer", "--prompt", "a red circle moving up"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert analyse(iio.imread(tmp_path / "cosmos-demo.mp4")) == ("red", "circle", "up")
