"""Context-parallel inference on CPU processes joined by gloo: the DiT split across ranks computes
what one process computes; torchrun runs of the CLI give the single-process latents; bad sizes are
refused before any model loads; a failing rank ends the whole run."""

import os
import subprocess
import sys

import pytest
import torch
from distributed import free_port, run_ranks
from helpers import infer_args, randomize_, rel_err

from nemo_cosmos.models import CosmosDiT, tiny_config
from nemo_cosmos.recipes.infer import main


def _forward_matches(rank, world):
    from nemo_cosmos.parallel import apply_context_parallel, context_parallel_group, init_distributed

    init_distributed(world)  # Megatron-Core parallel_state with context_parallel_size=world
    cfg = tiny_config()
    reference, split = randomize_(CosmosDiT(cfg)).eval(), randomize_(CosmosDiT(cfg)).eval()
    apply_context_parallel(split, context_parallel_group())
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 16, 4, 8, 12, generator=g)  # 4 x 4 x 6 = 96 tokens
    t, text = torch.rand(2, generator=g), torch.randn(2, 5, cfg.crossattn_dim, generator=g)
    with torch.no_grad():
        want = reference(x, t, text, fps=24.0)
        got = split(x, t, text, fps=24.0)
    assert rel_err(got, want) < 1e-5, rel_err(got, want)
    # and the split model learns the same: gradients flow through the all-to-alls; each rank holds
    # its tokens' share of a weight's gradient, summed across the group as data-parallel training does
    split.zero_grad()
    reference.zero_grad()
    split(x, t, text, fps=24.0).square().mean().backward()
    reference(x, t, text, fps=24.0).square().mean().backward()
    w = "layers.0.self_attention.linear_qkv.weight"
    got_g = dict(split.named_parameters())[w].grad
    torch.distributed.all_reduce(got_g, group=context_parallel_group())
    want_g = dict(reference.named_parameters())[w].grad
    assert rel_err(got_g, want_g) < 1e-4, rel_err(got_g, want_g)


@pytest.mark.parametrize("world", [2, 4])
def test_split_dit_computes_what_one_process_does(world):
    run_ranks(_forward_matches, world)


def torchrun(nproc, args, timeout=300):
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={free_port()}",
           "-m", "nemo_cosmos.recipes.infer", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_cli_under_torchrun_gives_the_single_process_latent(assets, tmp_path):
    single = tmp_path / "single.mp4"
    assert main(infer_args(assets, single, "--prompt", "a red cube moves left", "--save_latent")) == 0
    split = tmp_path / "cp2.mp4"
    proc = torchrun(2, infer_args(assets, split, "--prompt", "a red cube moves left", "--save_latent",
                                  "--cp_size", "2", "--num_devices", "2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = torch.load(tmp_path / "single.latent.pt", weights_only=True)
    got = torch.load(tmp_path / "cp2.latent.pt", weights_only=True)
    assert rel_err(got, want) < 1e-5, rel_err(got, want)
    assert split.exists() and "context parallel over 2 processes" in proc.stderr
    # one video, written by one rank: no stray temporary files from the other
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["single.mp4", "single.json", "single.latent.pt", "cp2.mp4", "cp2.json", "cp2.latent.pt"])


@pytest.mark.parametrize(
    "cp, message",
    [
        (3, "--cp_size 3 must divide the model's 4 attention heads"),
        (8, "--cp_size 8 must divide the 12 video tokens of this size"),
    ],
)
def test_sizes_that_cannot_split_are_refused_before_loading(assets, tmp_path, capsys, monkeypatch, cp, message):
    monkeypatch.setenv("WORLD_SIZE", str(cp))
    monkeypatch.setenv("RANK", "0")
    out = tmp_path / "v.mp4"
    rc = main(infer_args(assets, out, "--prompt", "a cube", "--cp_size", str(cp), "--num_devices", str(cp)))
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_failing_rank_ends_the_run(assets, tmp_path):
    """Rank 0 cannot load the tokenizer while rank 1 waits for the text embeddings: the run ends
    with rank 0's error instead of hanging."""
    out = tmp_path / "v.mp4"
    args = infer_args(assets, out, "--prompt", "a cube", "--cp_size", "2", "--num_devices", "2")
    (tmp_path / "empty").mkdir()  # a folder, so every rank gets past the checks; only rank 0 reads it
    args += ["--tokenizer_dir", str(tmp_path / "empty")]
    proc = torchrun(2, args, timeout=240)
    assert proc.returncode != 0
    assert "error: rank 0: tokenizer file missing" in proc.stderr
    assert not out.exists()
