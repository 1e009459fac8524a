"""The download recipe against a Hugging Face Hub stand-in on loopback: what one model needs lands
in HF_HOME's cache, with the token; interrupted files resume; gated or unreachable repositories give
one clear line naming them; infer then finds the weights in the cache."""

import os
import subprocess
import sys
import time

import pytest
from fake_hub import SHA, FakeHub
from helpers import randomize_

from nemo_cosmos.checkpoint import NEMO, save_nemo_checkpoint
from nemo_cosmos.models import CosmosDiT, tiny_config

M7, M14 = "nvidia/Cosmos-1.0-Diffusion-7B-Text2World", "nvidia/Cosmos-1.0-Diffusion-14B-Text2World"
V7 = "nvidia/Cosmos-1.0-Diffusion-7B-Video2World"
TOKEN = "hf_secret"


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("dit") / "ckpt"
    save_nemo_checkpoint(randomize_(CosmosDiT(tiny_config())).state_dict(), tiny_config(), str(ckpt))
    nemo = {f"nemo/{f}": (ckpt / "weights" / f).read_bytes() for f in os.listdir(ckpt / "weights")}
    big = os.urandom(12 << 20)  # more than huggingface_hub's 10 MiB read size
    return {
        M7: {**nemo, "model.pt": b"original weights", "README.md": b"7B"},
        M14: {**nemo, "model.pt": b"original weights 14B"},
        V7: {**nemo, "model.pt": b"original weights 7B Video2World"},
        "nvidia/Cosmos-1.0-Tokenizer-CV8x8x8": {"encoder.jit": b"e", "decoder.jit": b"d", "mean_std.pt": b"m"},
        "google-t5/t5-11b": {"config.json": b"{}", "model.safetensors": big, "tf_model.h5": b"tf"},
        "nvidia/Cosmos-1.0-Prompt-Upsampler-12B-Text2World": {"config.json": b"{}"},
        "nvidia/Cosmos-1.0-Guardrail": {"blocklist/custom/words": b"x"},
        "meta-llama/LlamaGuard-7b": {"config.json": b"{}"},
        "nvidia/Aegis-AI-Content-Safety-LlamaGuard-Defensive-1.0": {"adapter_config.json": b"{}"},
        "google/siglip-so400m-patch14-384": {"config.json": b"{}"},
    }


@pytest.fixture
def hub(repos):
    h = FakeHub(repos, gated={M7: TOKEN, "nvidia/Cosmos-1.0-Guardrail": TOKEN, "meta-llama/LlamaGuard-7b": TOKEN})
    yield h
    h.close()


def run(hub, home, *args, token=TOKEN, **env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    e.update(HF_ENDPOINT=hub.url, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1", **env)
    if token:
        e["HF_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "nemo_cosmos.recipes.download", *args],
                          capture_output=True, text=True, env=e, timeout=300)


def snapshot(home, repo):
    return home / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / SHA


def test_fetches_what_one_model_needs(hub, repos, tmp_path):
    proc = run(hub, tmp_path, "--model", "Cosmos-1.0-Diffusion-7B-Text2World")
    assert proc.returncode == 0, proc.stderr
    assert sorted(hub.file_gets(M7)) == sorted(f for f in repos[M7] if f.startswith("nemo/"))
    assert hub.file_gets(M14) == []  # the other model is not fetched
    assert "tf_model.h5" not in hub.file_gets("google-t5/t5-11b")
    for repo in ("nvidia/Cosmos-1.0-Tokenizer-CV8x8x8", "nvidia/Cosmos-1.0-Prompt-Upsampler-12B-Text2World",
                 "nvidia/Cosmos-1.0-Guardrail", "meta-llama/LlamaGuard-7b",
                 "nvidia/Aegis-AI-Content-Safety-LlamaGuard-Defensive-1.0", "google/siglip-so400m-patch14-384"):
        for f, data in repos[repo].items():
            assert (snapshot(tmp_path, repo) / f).read_bytes() == data
    assert all(auth == f"Bearer {TOKEN}" for _, path, auth, _ in hub.log if "Cosmos-1.0-Diffusion-7B" in path)

    # infer's lookup finds the NeMo checkpoint in that cache, offline
    code = ("from nemo_cosmos.checkpoint.hub import cached_dit_checkpoint as f; "
            f"print(*f({M7!r}))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path), HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout.split()
    assert out == [NEMO, str(snapshot(tmp_path, M7) / "nemo")]

    # a second run fetches nothing again
    hub.log.clear()
    assert run(hub, tmp_path, "--model", "Cosmos-1.0-Diffusion-7B-Text2World").returncode == 0
    assert not any(hub.file_gets(repo) for repo in repos)


def test_broken_transfer_resumes_where_it_stopped(hub, repos, tmp_path):
    big = repos["google-t5/t5-11b"]["model.safetensors"]
    hub.cut_once["model.safetensors"] = 11 << 20
    proc = run(hub, tmp_path, "--model", "Cosmos-1.0-Diffusion-14B-Text2World", "--skip_upsampler", "--skip_guardrail")
    assert proc.returncode == 0, proc.stderr
    ranges = [r for m, p, _, r in hub.log if m == "GET" and p.endswith("model.safetensors")]
    assert ranges == [None, f"bytes={10 << 20}-"]  # the whole 10 MiB read before the break is kept
    assert (snapshot(tmp_path, "google-t5/t5-11b") / "model.safetensors").read_bytes() == big


def test_a_killed_download_resumes_where_it_stopped(hub, repos, tmp_path):
    import signal

    big = repos["google-t5/t5-11b"]["model.safetensors"]
    hub.stall_once["model.safetensors"] = 11 << 20
    e = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    e.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path), HF_HUB_DISABLE_TELEMETRY="1", HF_TOKEN=TOKEN)
    args = ["--model", "Cosmos-1.0-Diffusion-14B-Text2World", "--skip_upsampler", "--skip_guardrail"]
    proc = subprocess.Popen([sys.executable, "-m", "nemo_cosmos.recipes.download", *args], env=e,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert hub.stalled.wait(120)
        time.sleep(1.0)  # what was received is on its way to the disk
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    blobs = tmp_path / "hub" / "models--google-t5--t5-11b" / "blobs"
    partial = [f for f in os.listdir(blobs) if f.endswith(".incomplete")]
    assert len(partial) == 1
    kept = os.path.getsize(blobs / partial[0])
    os.utime(blobs / partial[0], (time.time() - 10, time.time() - 10))  # untouched since the kill

    done = run(hub, tmp_path, *args)
    assert done.returncode == 0, done.stderr
    ranges = [r for m, p, _, r in hub.log if m == "GET" and p.endswith("model.safetensors")]
    assert ranges[-1] == f"bytes={kept}-" and kept > 0
    assert (snapshot(tmp_path, "google-t5/t5-11b") / "model.safetensors").read_bytes() == big
    assert not [f for f in os.listdir(blobs) if f.endswith(".incomplete")]


def test_gated_repo_without_token_names_it_and_what_to_do(hub, tmp_path):
    proc = run(hub, tmp_path, "--model", "Cosmos-1.0-Diffusion-7B-Text2World", token=None)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert any(M7 in e and "accept the license at https://huggingface.co/" + M7 in e and "HF_TOKEN" in e for e in errors)
    assert any("nvidia/Cosmos-1.0-Guardrail" in e for e in errors)
    assert any("meta-llama/LlamaGuard-7b" in e for e in errors)
    assert errors[-1] == "error: 3 of 8 downloads failed (see above)"
    # what was not gated still arrived
    assert (snapshot(tmp_path, "nvidia/Cosmos-1.0-Tokenizer-CV8x8x8") / "mean_std.pt").exists()


def test_offline_names_the_repository(hub, tmp_path):
    proc = run(hub, tmp_path, "--model", "Cosmos-1.0-Diffusion-14B-Text2World", HF_HUB_OFFLINE="1")
    assert proc.returncode == 2
    assert f"error: {M14}: not in the cache and the Hub cannot be reached" in proc.stderr
    assert hub.file_gets(M14) == []


def test_fetches_a_video2world_model_without_the_text_upsampler(hub, repos, tmp_path):
    """Video2World's prompt upsampler (Pixtral-12B) is not supported, so the Text2World one is not
    fetched for it; its DiT, the tokenizer, T5 and the guardrails are."""
    proc = run(hub, tmp_path, "--model", "Cosmos-1.0-Diffusion-7B-Video2World", "--format", "original")
    assert proc.returncode == 0, proc.stderr
    assert hub.file_gets(V7) == ["model.pt"] and hub.file_gets(M7) == []
    assert hub.file_gets("nvidia/Cosmos-1.0-Prompt-Upsampler-12B-Text2World") == []
    assert (snapshot(tmp_path, V7) / "model.pt").read_bytes() == repos[V7]["model.pt"]
    for repo in ("nvidia/Cosmos-1.0-Tokenizer-CV8x8x8", "google-t5/t5-11b", "nvidia/Cosmos-1.0-Guardrail"):
        assert hub.file_gets(repo), repo


def test_unknown_model_is_refused(hub, tmp_path):
    proc = run(hub, tmp_path, "--model", "Cosmos-9B")
    assert proc.returncode == 2 and "invalid choice: 'Cosmos-9B'" in proc.stderr


def run_infer(hub, home, *args, token=TOKEN, **env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    e.update(HF_ENDPOINT=hub.url, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1", **env)
    if token:
        e["HF_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "nemo_cosmos.recipes.infer", "--prompt", "a robot", "--device", "cpu",
                           "--video_save_path", str(home / "v.mp4"), *args],
                          capture_output=True, text=True, env=e, timeout=300)


def test_missing_weights_are_listed_together_with_one_command(hub, tmp_path):
    """Offline: one line lists every repository the run lacks and the download command for it."""
    proc = run_infer(hub, tmp_path, "--model", "Cosmos-1.0-Diffusion-14B-Text2World", HF_HUB_OFFLINE="1")
    assert proc.returncode == 2
    line = [x for x in proc.stderr.splitlines() if x.startswith("error: ")][-1]
    assert "HF_HUB_OFFLINE is set" in line
    for repo in (M14, "nvidia/Cosmos-1.0-Tokenizer-CV8x8x8", "google-t5/t5-11b", "nvidia/Cosmos-1.0-Guardrail",
                 "meta-llama/LlamaGuard-7b", "google/siglip-so400m-patch14-384"):
        assert repo in line, repo
    assert "Upsampler" not in line  # not asked for
    assert line.endswith("python -m nemo_cosmos.recipes.download --model Cosmos-1.0-Diffusion-14B-Text2World "
                         "--skip_upsampler")
    assert hub.log == [] and not (tmp_path / "v.mp4").exists()


def test_gated_weights_are_told_apart_from_offline(hub, tmp_path):
    proc = run_infer(hub, tmp_path, "--model", "Cosmos-1.0-Diffusion-7B-Text2World", "--disable_guardrails",
                     token=None)
    assert proc.returncode == 2
    line = [x for x in proc.stderr.splitlines() if x.startswith("error: ")][-1]
    assert f"{M7}: access denied (gated, or no token)" in line and "HF_TOKEN" in line
    assert "Guardrail" not in line  # guardrails were turned off: not needed
    assert line.endswith("--skip_upsampler --skip_guardrail")
    # what was not gated arrived meanwhile
    assert (snapshot(tmp_path, "nvidia/Cosmos-1.0-Tokenizer-CV8x8x8") / "mean_std.pt").exists()
