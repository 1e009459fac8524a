"""General post-training on CPU with the tiny model and a few synthetic videos: prepare -> train
(it learns) -> checkpoints where NeMo puts them -> resume with the same loss curve, also after a
hard kill -> generate from the checkpoint with the subject prompt."""

import glob
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from nemo_cosmos import Text2WorldPipeline
from nemo_cosmos.checkpoint import find_dit_checkpoint, load_dit
from nemo_cosmos.models import CosmosDiT, tiny_config
from nemo_cosmos.recipes import posttrain, prepare_data
from nemo_cosmos.training import CachedVideoDataset

from helpers import experiment_losses, fixed_noise_loss, square_video, write_video

RUN = "cosmos_tiny_text2world_finetune"
CKPT = re.compile(r"nemo_experiments/" + RUN + r"/default/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d/checkpoints/epoch=\d+-step=(\d+)$")


def test_prepare_data_writes_the_documented_layout(dataset):
    ds = CachedVideoDataset(str(dataset))
    assert len(ds) == 4  # two clips from each usable video
    import json

    prompts = sorted(json.loads(open(f).read())["prompt"] for f in glob.glob(str(dataset / "*.info.json")))
    assert prompts == ["A video of sks teal robot."] * 2 + ["A video of sks teal robot. It slides to the right."] * 2
    latent = torch.load(dataset / "0.video_latent.pth", weights_only=True)
    assert latent.shape == (16, 2, 4, 6)
    text = torch.load(dataset / "0.t5_text_embeddings.pth", weights_only=True)
    assert text.shape == (512, 32) and text[20:].abs().sum() == 0 and text[:3].abs().sum() > 0
    info = json.loads((dataset / "0.info.json").read_text())
    assert (info["height"], info["width"], info["num_frames"], info["fps"]) == (40, 60, 9, 12.0)


def test_unusable_videos_are_reported_and_skipped(tmp_path, assets, caplog, capsys):
    videos = tmp_path / "v"
    videos.mkdir()
    write_video(videos / "short.mp4", square_video(5))
    (videos / "broken.mp4").write_bytes(b"junk")
    rc = prepare_data.main([
        "--input_video_dir", str(videos), "--subject_name", "x", "--output_dir", str(tmp_path / "out"),
        "--model", str(assets / "tiny"), "--device", "cpu",
    ])
    assert rc == 2
    assert "none of the 2 videos" in capsys.readouterr().err
    warnings = " ".join(r.getMessage() for r in caplog.records)
    assert "short.mp4 has 5 frames, fewer than the 9" in warnings and "cannot read broken.mp4" in warnings


def train(dataset, log_dir, base, *overrides):
    return posttrain.main(["--recipe", RUN, f"data.path={dataset}", f"log.log_dir={log_dir}", f"model.init_from={base}",
                           "trainer.checkpoint_every_n_steps=4", *overrides])


def checkpoints(log_dir):
    found = {}
    for d in glob.glob(str(log_dir / RUN / "default" / "*" / "checkpoints" / "*")):
        m = CKPT.search(d)
        assert m, d
        assert os.path.isfile(os.path.join(d, "weights", "metadata.json"))
        found.setdefault(int(m.group(1)), []).append(d)
    return found


def losses(log_dir):
    return experiment_losses(log_dir, RUN)


def eval_loss(state_dict, dataset):
    model = CosmosDiT(tiny_config()).eval()
    model.load_state_dict(state_dict)
    return fixed_noise_loss(model, dataset)


def test_train_resume_and_generate(assets, dataset, tmp_path):
    base = str(assets / "tiny")
    continuous, interrupted = tmp_path / "a" / "nemo_experiments", tmp_path / "b" / "nemo_experiments"
    assert train(dataset, continuous, base, "trainer.max_steps=8") == 0
    assert sorted(checkpoints(continuous)) == [4, 8]

    # the same run in two parts: the second resumes from step 4 and sees what the first would have
    assert train(dataset, interrupted, base, "trainer.max_steps=4") == 0
    assert train(dataset, interrupted, base, "trainer.max_steps=8") == 0
    assert sorted(checkpoints(interrupted)) == [4, 8]
    a, b = losses(continuous), losses(interrupted)
    assert sorted(a) == sorted(b) == list(range(8))
    np.testing.assert_allclose([b[s] for s in range(4, 8)], [a[s] for s in range(4, 8)], rtol=1e-5)

    # it learned: the final weights denoise the training clips better than the base weights
    final = checkpoints(continuous)[8][0]
    from nemo_cosmos.checkpoint import load_nemo_checkpoint

    trained, _ = load_nemo_checkpoint(final, tiny_config())
    base_sd = load_dit(base).state_dict()
    assert eval_loss(trained, dataset) < 0.9 * eval_loss(base_sd, dataset)

    # inference takes the run folder (newest checkpoint) and the subject
    def latent(source, **parts):
        pipe = Text2WorldPipeline.from_pretrained(source, device="cpu", guardrails=False, **parts)
        return pipe("It slides.", subject_name="teal robot", output_type="latent", num_steps=3, height=32, width=48,
                    num_frames=9, fps=12, progress=False)[0].latent

    assert find_dit_checkpoint(str(continuous / RUN))[1] == os.path.join(final, "weights")
    tuned = latent(str(continuous / RUN), tokenizer=str(assets / "tokenizer"), text_encoder=str(assets / "t5"))
    assert (tuned - latent(base)).abs().max() > 1e-3


def test_killed_run_resumes_from_its_last_checkpoint(assets, dataset, tmp_path):
    log_dir = tmp_path / "nemo_experiments"
    cmd = [sys.executable, "-m", "nemo_cosmos.recipes.posttrain", "--recipe", RUN, f"data.path={dataset}",
           f"log.log_dir={log_dir}", f"model.init_from={assets / 'tiny'}", "trainer.max_steps=100000",
           "trainer.checkpoint_every_n_steps=3"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not checkpoints(log_dir) and time.time() < deadline:
            time.sleep(0.5)
        time.sleep(1.0)  # possibly in the middle of the next save
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved = checkpoints(log_dir)
    assert saved, "no checkpoint before the kill"
    last = max(saved)
    # whatever the kill interrupted is not visible as a checkpoint; plant a stale one of a writer of this
    # machine that is gone (removed on resume) and a folder that is not ours (left alone)
    stale = glob.glob(str(log_dir / RUN / "default" / "*" / "checkpoints"))[0]
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    os.makedirs(os.path.join(stale, f".tmp-{socket.gethostname()}-{gone.stdout.strip()}-x", "ckpt", "weights"))
    os.makedirs(os.path.join(stale, ".tmp-half-written", "ckpt"))

    done = subprocess.run(cmd[:-2] + [f"trainer.max_steps={last + 2}", "trainer.checkpoint_every_n_steps=1000"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"step={last}" in done.stderr.split("resuming from")[1].splitlines()[0]
    assert max(checkpoints(log_dir)) == last + 2
    assert all(v for v in checkpoints(log_dir).values())
    assert not glob.glob(str(log_dir / RUN / "default" / "*" / "checkpoints" / f".tmp-{socket.gethostname()}-*"))
    assert os.path.isdir(os.path.join(stale, ".tmp-half-written"))
    # the same losses as a run that was never interrupted
    reference = tmp_path / "reference"
    assert train(dataset, reference, assets / "tiny", f"trainer.max_steps={last + 2}") == 0
    a, b = losses(reference), losses(log_dir)
    np.testing.assert_allclose([b[s] for s in (last, last + 1)], [a[s] for s in (last, last + 1)], rtol=1e-5)


def test_a_checkpoint_that_cannot_be_written_stops_the_run_and_loses_nothing(assets, dataset, tmp_path, capsys,
                                                                               monkeypatch):
    import errno

    from nemo_cosmos.training import checkpoint_io

    real, calls = checkpoint_io.save_file, []

    def disk_full_at_the_second_checkpoint(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint_io, "save_file", disk_full_at_the_second_checkpoint)
    log_dir = tmp_path / "nemo_experiments"
    assert train(dataset, log_dir, assets / "tiny", "trainer.max_steps=8", "trainer.checkpoint_every_n_steps=2") == 2
    err = capsys.readouterr().err
    assert "cannot write checkpoint" in err and "No space left on device" in err and err.count("\n") == 1
    assert sorted(checkpoints(log_dir)) == [2]  # step 4 never appeared, not even half
    assert not glob.glob(str(log_dir / RUN / "default" / "*" / "checkpoints" / ".tmp-*"))
    monkeypatch.setattr(checkpoint_io, "save_file", real)
    assert train(dataset, log_dir, assets / "tiny", "trainer.max_steps=6", "trainer.checkpoint_every_n_steps=2") == 0
    reference = tmp_path / "reference"
    assert train(dataset, reference, assets / "tiny", "trainer.max_steps=6", "trainer.checkpoint_every_n_steps=2") == 0
    a, b = losses(reference), losses(log_dir)
    np.testing.assert_allclose([b[s] for s in range(2, 6)], [a[s] for s in range(2, 6)], rtol=1e-5)


def test_plain_training_script_uses_the_module(assets, dataset, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "examples/nemo_style_training.py", "--data", str(dataset),
                           "--base", str(assets / "tiny"), "--out", str(out), "--steps", "2",
                           "--lr", "1e-3", "--precision", "32"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    kind, weights = find_dit_checkpoint(str(out))
    assert weights.endswith("epoch=0-step=2/weights")


@pytest.mark.parametrize("override, message", [
    ("trainer.max_stepz=3", "bad override"),
    ("data.path=''", "data.path is not set"),
    ("model.name=Cosmos-9B", "unknown model"),
    ("trainer.max_steps=-1", "trainer.max_steps must be at least 1"),
    ("trainer.devices=-1", "trainer.devices must be 0 (as many as torchrun started) or more"),
    ("trainer.checkpoint_every_n_steps=-1", "trainer.checkpoint_every_n_steps must be at least 1"),
    ("diffusion.text_dropout=5", "diffusion.text_dropout must be in [0, 1]"),
    ("optim.config.lr=-1", "optim.lr must be positive"),
])
def test_bad_configuration_exits_2(dataset, tmp_path, capsys, override, message):
    rc = posttrain.main(["--recipe", RUN, f"data.path={dataset}", f"log.log_dir={tmp_path}", override])
    assert rc == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing was started


def test_data_parallel_under_torchrun(assets, dataset, tmp_path):
    from distributed import free_port

    log_dir = tmp_path / "nemo_experiments"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
         "-m", "nemo_cosmos.recipes.posttrain", "--recipe", RUN, f"data.path={dataset}", f"log.log_dir={log_dir}",
         f"model.init_from={assets / 'tiny'}", "trainer.devices=2", "trainer.max_steps=4"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(checkpoints(log_dir)) == [4] and sorted(losses(log_dir)) == [0, 1, 2, 3]


def test_from_scratch_weights_follow_the_seed(tmp_path):
    from nemo_cosmos.training import CosmosDiffusionModule

    torch.manual_seed(123)  # whatever the global generator holds
    a = CosmosDiffusionModule(tiny_config(), seed=7).dit.state_dict()
    torch.rand(100)
    b = CosmosDiffusionModule(tiny_config(), seed=7).dit.state_dict()
    c = CosmosDiffusionModule(tiny_config(), seed=8).dit.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_checkpoint_folders_take_the_umask(assets, dataset, tmp_path):
    import stat

    old = os.umask(0o022)
    try:
        assert train(dataset, tmp_path / "nemo_experiments", assets / "tiny", "trainer.max_steps=2",
                     "trainer.checkpoint_every_n_steps=2") == 0
    finally:
        os.umask(old)
    (folder,) = checkpoints(tmp_path / "nemo_experiments")[2]
    for path in (folder, os.path.join(folder, "weights"), os.path.join(folder, "train_state")):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o755, path
