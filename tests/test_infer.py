"""The whole Text2World path on CPU with a tiny model: the Python API (from_pretrained from every
checkpoint layout, prompt lists, seeds, callbacks) and the command line over it (mp4 + sidecar,
batches, bad input, exit codes)."""

import json
import os
import re
import subprocess
import sys

import imageio.v3 as iio
import pytest
import torch
from helpers import infer_args

from nemo_cosmos import Text2WorldPipeline
from nemo_cosmos.checkpoint import load_dit
from nemo_cosmos.errors import CosmosUserError
from nemo_cosmos.models import tiny_config
from nemo_cosmos.recipes.infer import main

KW = dict(height=32, width=48, num_frames=9, num_steps=3, fps=12, progress=False)
STEP9 = ("nemo_experiments", "tiny_finetune", "default", "2026-01-01_00-00-00", "checkpoints", "epoch=1-step=9")


@pytest.fixture(scope="module")
def pipe(assets):
    return Text2WorldPipeline.from_pretrained(str(assets / "tiny"), device="cpu", guardrails=False)


def _latent(pipe, prompt="a blue ball moves up", **kw):
    return pipe(prompt, output_type="latent", **{**KW, **kw})[0].latent


def test_cli_writes_playable_mp4_and_sidecar_with_the_api_latent(assets, pipe, tmp_path):
    out = tmp_path / "robot.mp4"
    cmd = [sys.executable, "-m", "nemo_cosmos.recipes.infer", *infer_args(
        assets, out, "--prompt", "a red cube moves left", "--subject_name", "teal robot", "--num_steps", "3",
        "--save_latent")]
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
    # the command line is the API: the same latent
    cli_latent = torch.load(tmp_path / "robot.latent.pt", weights_only=True)
    api_latent = _latent(pipe, "a red cube moves left", subject_name="teal robot")
    assert torch.equal(cli_latent, api_latent)


def test_seed_guidance_and_negative_prompt(pipe):
    base = _latent(pipe)
    assert base.shape == (1, 16, 2, 4, 6)
    assert torch.equal(base, _latent(pipe))
    for extra in (dict(seed=2), dict(guidance=3), dict(negative_prompt=""), dict(negative_prompt="red cube")):
        other = _latent(pipe, **extra)
        assert (other - base).abs().max() > 1e-3, extra
    # guidance's two passes as one batch: the same result
    pipe.batch_guidance = True
    try:
        torch.testing.assert_close(_latent(pipe), base, rtol=1e-5, atol=1e-5)
    finally:
        pipe.batch_guidance = False


def test_every_checkpoint_layout_gives_the_same_pipeline(assets, pipe, tmp_path):
    """from_pretrained from a pipeline folder, our safetensors file, a NeMo weights folder, the
    folder above it and a nemo_experiments tree (newest step); and load_dit of the model.pt."""
    reference = _latent(pipe)
    step9 = assets.joinpath(*STEP9)
    parts = dict(tokenizer=str(assets / "tokenizer"), text_encoder=str(assets / "t5"), device="cpu", guardrails=False)
    for source in (assets / "tiny" / "dit.safetensors", step9 / "weights", step9, assets / "nemo_experiments"):
        other = Text2WorldPipeline.from_pretrained(str(source), **parts)
        assert torch.equal(_latent(other), reference), source
    older = Text2WorldPipeline.from_pretrained(str(step9.parent / "epoch=0-step=4"), **parts)
    assert not torch.equal(_latent(older), reference)
    dit = load_dit(str(assets / "dit" / "model.pt"), tiny_config())
    from_pt = Text2WorldPipeline(dit, pipe.tokenizer, pipe.text_encoder, guardrails=False, defaults=pipe.defaults)
    assert torch.equal(_latent(from_pt), reference)


def test_a_list_of_prompts_gives_one_video_each(pipe):
    prompts = ["a red cube moves left", "a blue ball moves up", "the robot"]
    results = pipe(prompts, num_videos_per_prompt=2, seed=5, **KW)
    assert len(results) == 6 and all(r.frames.shape == (9, 32, 48, 3) for r in results)
    assert [r.seed for r in results] == [5, 6, 7, 8, 9, 10]
    assert [r.prompt for r in results] == [p for p in prompts for _ in range(2)]
    # each equals the single call with its prompt and seed
    for r in (results[0], results[3], results[5]):
        assert torch.equal(r.latent, _latent(pipe, r.prompt, seed=r.seed))
    assert not torch.equal(results[0].latent, results[2].latent)


def test_generator_callback_and_latent_output(pipe):
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(_latent(pipe, generator=g1), _latent(pipe, generator=g2))
    assert not torch.equal(_latent(pipe, generator=torch.Generator().manual_seed(4)), _latent(pipe, generator=g2))
    seen = []

    def record(p, step, sigma, state):
        seen.append((step, sigma, state["latents"].shape))

    out = pipe("a red cube", callback_on_step_end=record, output_type="latent", **KW)[0]
    assert out.frames is None
    assert [s for s, _, _ in seen] == [0, 1, 2] and seen[0][1] > seen[-1][1] > 0
    # a callback's latents replace the sampler's state
    zeroed = _latent(pipe, "a red cube", callback_on_step_end=lambda p, i, s, st: {"latents": st["latents"] * 0})
    assert not torch.equal(zeroed, out.latent)


def test_result_saves_mp4_or_gif_with_its_sidecar(pipe, tmp_path):
    r = pipe("a red cube", **KW)[0]
    assert r.save(str(tmp_path / "a.gif")) == [str(tmp_path / "a.gif"), str(tmp_path / "a.json")]
    assert iio.imread(tmp_path / "a.gif").shape[0] == 9
    assert json.loads((tmp_path / "a.json").read_text())["settings"]["seed"] == 1
    with pytest.raises(CosmosUserError, match="must end in .mp4 or .gif"):
        r.save(str(tmp_path / "a.avi"))
    assert sorted(os.listdir(tmp_path)) == ["a.gif", "a.json"]


def test_batch_file_writes_every_good_line(assets, tmp_path, caplog):
    lines = [{"prompt": "a red cube moves left"}, "not json", {"prompt": "a blue ball", "seed": 7, "guidance": 2},
             {"prompt": "the robot", "height": 40}, {"prompt": "a red cube", "video_save_name": "named.gif"}]
    batch = tmp_path / "prompts.jsonl"
    batch.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    args = [a for a in infer_args(assets, "unused.mp4") if a not in ("--video_save_path", "unused.mp4")]
    rc = main([*args, "--num_steps", "2", "--batch_input_path", str(batch), "--video_save_folder", str(out)])
    assert rc == 2  # two lines were bad
    assert sorted(os.listdir(out)) == ["1.json", "1.mp4", "3.json", "3.mp4", "named.gif", "named.json"]
    side = json.loads((out / "3.json").read_text())
    assert (side["settings"]["seed"], side["settings"]["guidance"]) == (7, 2.0)
    log = caplog.text
    assert "line 2 of" in log and "line 4 skipped: --height 40 must be a multiple of 16" in log


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--height", "40"], "--height 40 must be a multiple of 16"),
        (["--width", "4096"], "--width 4096 must be a multiple of 16 between 16 and 1920"),
        (["--num_video_frames", "10"], "8k\\+1 frames"),
        (["--model", "Cosmos-9B"], "unknown model 'Cosmos-9B'"),
        (["--prompt", "   "], "the prompt is empty"),
        (["--cp_size", "2"], "must equal --num_devices"),
        (["--fp8"], "--fp8 needs an NVIDIA GPU"),
        (["--guidance", "nan"], "--guidance must be a finite number"),
        (["--guidance", "1e30"], "--guidance must be a finite number"),
        (["--fps", "100000"], "--fps must be between 1 and 240"),
        (["--seed", "-1"], "--seed must be between 0"),
        (["--num_steps", "1000000000000"], "--num_steps must be between 1 and 1000"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--device", "cuda"], "this machine has no CUDA GPU"),
        (["--video_save_path", "/nonexistent/x.mp4"], "folder /nonexistent does not exist"),
        (["--video_save_path", "x.avi"], "must end in .mp4 or .gif"),
        (["--nemo_checkpoint", "/nonexistent"], "neither a model .* nor an existing path"),
        (["--tokenizer_dir", "/nonexistent"], "tokenizer folder not found: /nonexistent"),
    ],
)
def test_bad_input_exits_2_without_a_file(assets, tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bad.mp4"
    args = infer_args(assets, out, "--prompt", "a cube")
    if "--nemo_checkpoint" in extra:
        args = args[2:]
    rc = main([*args, *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("error: ")
    assert re.search(message, err[-1]), err[-1]
    assert not out.exists() and not list(tmp_path.iterdir())


def test_output_folder_that_is_read_only_or_a_folder_is_refused(assets, tmp_path, capsys):
    folder = tmp_path / "folder.mp4"
    folder.mkdir()
    assert main(infer_args(assets, folder, "--prompt", "a cube")) == 2
    assert "is a folder" in capsys.readouterr().err
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        assert main(infer_args(assets, ro / "v.mp4", "--prompt", "a cube")) == 2
        assert "is not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


def test_corrupt_checkpoint_is_a_clear_error(assets, tmp_path, capsys):
    bad = tmp_path / "dit"
    bad.mkdir()
    (bad / "model.pt").write_bytes((assets / "dit" / "model.pt").read_bytes()[:1000])
    rc = main([*infer_args(assets, tmp_path / "o.mp4", "--prompt", "a cube")[2:], "--checkpoint_dir", str(bad),
               "--tokenizer_dir", str(assets / "tokenizer"), "--t5_path", str(assets / "t5")])
    assert rc == 2 and "cannot read" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


def test_nan_weights_are_refused_before_sampling(assets, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "nan"
    shutil.copytree(assets / "tiny", folder)
    sd = load_file(folder / "dit.safetensors")
    sd["final_layer.linear.weight"][0, 0] = float("nan")
    from safetensors import safe_open

    with safe_open(str(assets / "tiny" / "dit.safetensors"), "pt") as f:
        meta = f.metadata()
    save_file(sd, folder / "dit.safetensors", metadata=meta)
    pipe = Text2WorldPipeline.from_pretrained(str(folder), device="cpu", guardrails=False)
    with pytest.raises(ValueError, match="final_layer.linear.weight holds NaN"):
        pipe("a cube", **KW)


INTERNAL_ERROR = """
import sys
import nemo_cosmos.pipeline as p
def broken(self, *a, **k):
    raise KeyError("a bug, not bad input")
p.Text2WorldPipeline.__call__ = broken
from nemo_cosmos.recipes.infer import main
sys.exit(main(sys.argv[1:]))
"""


def test_an_internal_error_keeps_its_traceback(assets, tmp_path):
    proc = subprocess.run([sys.executable, "-c", INTERNAL_ERROR, *infer_args(assets, tmp_path / "v.mp4", "--prompt", "x")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "KeyError: 'a bug, not bad input'" in proc.stderr
    assert not (tmp_path / "v.mp4").exists()


def test_runs_by_path_as_nvidias_scripts_are_run(assets, tmp_path):
    script = os.path.join(os.path.dirname(__file__), "..", "nemo_cosmos", "recipes", "infer.py")
    out = tmp_path / "v.mp4"
    proc = subprocess.run([sys.executable, script, *infer_args(assets, out, "--prompt", "a cube", "--num_steps", "1")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert out.exists()


def test_help_shows_defaults_and_an_example():
    proc = subprocess.run([sys.executable, "-m", "nemo_cosmos.recipes.infer", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "704 for the published models, 64 for cosmos-demo" in text
    assert "example:" in text and "cosmos-tiny" not in text
