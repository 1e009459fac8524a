"""The whole Text2World path on CPU with a tiny model: CLI -> mp4 + sidecar, determinism, guidance."""

import json
import re
import subprocess
import sys

import imageio.v3 as iio
import pytest
import torch
from helpers import infer_args as _args

from nemo_cosmos.recipes.infer import build_parser, generate, load_pipeline, main, resolve_model
from nemo_cosmos.recipes.models import model_entry


def test_cli_writes_playable_mp4_and_sidecar(assets, tmp_path):
    out = tmp_path / "robot.mp4"
    cmd = [sys.executable, "-m", "nemo_cosmos.recipes.infer", *_args(assets, out, "--prompt", "a red cube moves left",
                                                                      "--subject_name", "teal robot")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    frames = iio.imread(out)
    assert frames.shape == (9, 32, 48, 3) and frames.dtype.name == "uint8"
    meta = iio.immeta(out)
    assert meta["fps"] == 12
    assert "h264" in meta["codec"]
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["final_prompt"] == "A video of sks teal robot. a red cube moves left"
    assert side["settings"]["guidance"] == 7.0 and side["settings"]["seed"] == 1
    assert set(side["timings"]) >= {"model_loading_s", "text_encoding_s", "sampling_s", "decoding_s"}
    for stage in ("text encoding", "sampling (3 steps)", "decoding", "wrote"):
        assert stage in proc.stderr


def _latent(assets, tmp_path, *extra):
    args = build_parser().parse_args(_args(assets, tmp_path / "x.mp4", "--prompt", "a blue ball moves up", *extra))
    resolve_model(args)
    entry = model_entry("cosmos-tiny")
    pipe = load_pipeline(args, entry, entry.dit(), entry.tokenizer())
    return generate(pipe, args, args.prompt).latent


def test_seed_guidance_and_negative_prompt(assets, tmp_path):
    base = _latent(assets, tmp_path)
    assert base.shape == (1, 16, 2, 4, 6)
    assert torch.equal(base, _latent(assets, tmp_path))
    for extra in (["--seed", "2"], ["--guidance", "3"], ["--negative_prompt", ""], ["--negative_prompt", "red cube"]):
        other = _latent(assets, tmp_path, *extra)
        assert (other - base).abs().max() > 1e-3, extra
    # guidance's two passes as one batch: the same result
    torch.testing.assert_close(_latent(assets, tmp_path, "--batch_guidance"), base, rtol=1e-5, atol=1e-5)


def test_nemo_checkpoint_paths_load_the_same_weights(assets, tmp_path):
    """--nemo_checkpoint takes the weights folder, the folder above it, or a nemo_experiments tree
    (newest step); each gives what the same weights as model.pt give."""
    reference = _latent(assets, tmp_path)
    step9 = assets / "nemo_experiments" / "tiny_finetune" / "default" / "2026-01-01_00-00-00" / "checkpoints" / "epoch=1-step=9"
    for path in (step9 / "weights", step9, assets / "nemo_experiments"):
        assert torch.equal(_latent(assets, tmp_path, "--nemo_checkpoint", str(path)), reference), path
    older = step9.parent / "epoch=0-step=4"
    assert not torch.equal(_latent(assets, tmp_path, "--nemo_checkpoint", str(older)), reference)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--height", "40"], "--height 40 must be a multiple of 16"),
        (["--width", "4096"], "--width 4096 must be a multiple of 16 between 16 and 1920"),
        (["--num_video_frames", "10"], "8k\\+1 frames"),
        (["--model", "Cosmos-9B"], "unknown model 'Cosmos-9B'"),
        (["--prompt", "   "], "--prompt is empty"),
        (["--cp_size", "2"], "must equal --num_devices"),
        (["--fp8"], "--fp8 needs an NVIDIA GPU"),
        (["--checkpoint_dir", "/nonexistent"], "checkpoint not found: /nonexistent"),
        (["--tokenizer_dir", "/nonexistent"], "tokenizer file missing: .*hf download nvidia/Cosmos-1.0-Tokenizer-CV8x8x8"),
    ],
)
def test_bad_input_exits_2_without_a_video(assets, tmp_path, capsys, extra, message):
    out = tmp_path / "bad.mp4"
    rc = main(_args(assets, out, "--prompt", "a cube", *extra))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("error: ")
    assert re.search(message, err[-1]), err[-1]
    assert not out.exists() and not list(tmp_path.iterdir())


def test_published_model_missing_from_cache_names_the_download(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    out = tmp_path / "v.mp4"
    rc = main(["--model", "Cosmos-1.0-Diffusion-7B-Text2World", "--prompt", "a robot", "--video_save_path", str(out),
               "--disable_guardrails"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "hf download nvidia/Cosmos-1.0-Diffusion-7B-Text2World nemo/*" in err
    assert not out.exists()


def test_corrupt_checkpoint_is_a_clear_error(assets, tmp_path, capsys):
    bad = tmp_path / "dit"
    bad.mkdir()
    (bad / "model.pt").write_bytes((assets / "dit" / "model.pt").read_bytes()[:1000])
    rc = main(_args(assets, tmp_path / "o.mp4", "--prompt", "a cube", "--checkpoint_dir", str(bad)))
    assert rc == 2 and "cannot read" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()
