"""Sharded post-training (FSDP2, context parallelism) on CPU with gloo: the same losses and weights
as one process, checkpoints written sharded that resume on another number of processes, and the
run layouts that cannot continue each other refused."""

import os
import subprocess
import sys

import numpy as np
import pytest

from nemo_cosmos.checkpoint import latest_experiment_checkpoint, load_nemo_checkpoint
from nemo_cosmos.models import tiny_config
from nemo_cosmos.recipes import posttrain

from distributed import free_port
from helpers import experiment_losses

RUN = "cosmos_tiny_text2world_finetune"
# float32, every step checkpointed at 2 and 4, two samples per step in every layout
COMMON = ("trainer.max_steps=4", "trainer.checkpoint_every_n_steps=2", "optim.lr=3e-3")


def torchrun(n, dataset, log_dir, base, *overrides):
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", f"--master_port={free_port()}",
         "-m", "nemo_cosmos.recipes.posttrain", "--recipe", RUN, f"data.path={dataset}", f"log.log_dir={log_dir}",
         f"model.init_from={base}", *COMMON, *overrides],
        capture_output=True, text=True, timeout=400, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def one_process(dataset, log_dir, base, *overrides):
    rc = posttrain.main(["--recipe", RUN, f"data.path={dataset}", f"log.log_dir={log_dir}", f"model.init_from={base}",
                         *COMMON, *overrides])
    assert rc == 0


def final_weights(log_dir):
    return load_nemo_checkpoint(latest_experiment_checkpoint(str(log_dir / RUN)), tiny_config())[0]


def assert_same_run(a, b, rtol=1e-5):
    la, lb = experiment_losses(a, RUN), experiment_losses(b, RUN)
    assert sorted(la) == sorted(lb) == [0, 1, 2, 3]
    np.testing.assert_allclose([lb[s] for s in range(4)], [la[s] for s in range(4)], rtol=rtol)
    wa, wb = final_weights(a), final_weights(b)
    for k in wa:
        err = ((wa[k] - wb[k]).norm() / wa[k].norm().clamp_min(1e-12)).item()
        assert err <= rtol, (k, err)


@pytest.fixture(scope="module")
def reference(assets, dataset, tmp_path_factory):
    """One process, plain (unsharded) training, micro-batch 2."""
    log_dir = tmp_path_factory.mktemp("single") / "nemo_experiments"
    one_process(dataset, log_dir, assets / "tiny", "data.micro_batch_size=2")
    return log_dir


def test_fsdp_on_two_processes_trains_as_one_process(assets, dataset, reference, tmp_path):
    log_dir = tmp_path / "nemo_experiments"
    torchrun(2, dataset, log_dir, assets / "tiny", "trainer.strategy=fsdp", "data.micro_batch_size=1")
    assert_same_run(reference, log_dir)
    # each rank wrote its own shards of the float32 state; the weights are NeMo's checkpoint
    step4 = latest_experiment_checkpoint(str(log_dir / RUN))
    shards = sorted(os.listdir(os.path.join(step4, "train_state", "sharded")))
    assert len(shards) == 2 and all(f.endswith(".safetensors") for f in shards)
    assert os.path.isfile(os.path.join(step4, "weights", "metadata.json"))

    # resumed on one process (micro-batch 2 keeps the global batch): the same curve onwards
    resumed = tmp_path / "resumed" / "nemo_experiments"
    torchrun(2, dataset, resumed, assets / "tiny", "trainer.strategy=fsdp", "data.micro_batch_size=1",
             "trainer.max_steps=2")
    one_process(dataset, resumed, assets / "tiny", "trainer.strategy=fsdp", "data.micro_batch_size=2")
    assert_same_run(reference, resumed)


def test_fsdp_with_context_parallelism_trains_as_one_process(assets, dataset, reference, tmp_path):
    log_dir = tmp_path / "nemo_experiments"
    # both processes split the tokens of the same two samples
    torchrun(2, dataset, log_dir, assets / "tiny", "trainer.strategy=fsdp", "trainer.context_parallel_size=2",
             "data.micro_batch_size=2")
    assert_same_run(reference, log_dir)


def test_a_resume_with_another_strategy_is_refused(assets, dataset, tmp_path, capsys):
    log_dir = tmp_path / "nemo_experiments"
    one_process(dataset, log_dir, assets / "tiny", "trainer.strategy=fsdp", "trainer.max_steps=2")
    before = sorted(os.listdir(log_dir / RUN / "default"))
    rc = posttrain.main(["--recipe", RUN, f"data.path={dataset}", f"log.log_dir={log_dir}",
                         f"model.init_from={assets / 'tiny'}", *COMMON, "trainer.strategy=ddp"])
    assert rc == 2 and "was written by a trainer.strategy=fsdp run" in capsys.readouterr().err
    assert sorted(os.listdir(log_dir / RUN / "default")) == before  # nothing started, nothing lost


@pytest.mark.parametrize("overrides, message", [
    (["trainer.devices=2", "trainer.context_parallel_size=4"], "must divide the 2 processes"),
    (["trainer.devices=3", "trainer.context_parallel_size=3"], "must divide the model's 4 attention heads"),
    (["trainer.strategy=ddp", "trainer.context_parallel_size=2"], "needs trainer.strategy=fsdp"),
])
def test_a_context_parallel_size_that_cannot_work_is_refused(assets, dataset, tmp_path, capsys, overrides, message):
    rc = posttrain.main(["--recipe", RUN, f"data.path={dataset}", f"log.log_dir={tmp_path}",
                         f"model.init_from={assets / 'tiny'}", "trainer.strategy=fsdp", *overrides])
    assert rc == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_run_that_cannot_fit_is_refused_before_anything_is_loaded(dataset, tmp_path, capsys, monkeypatch):
    # the README's 7B command on this machine (no GPU): refused at once, nothing downloaded or built
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    rc = posttrain.main([f"data.path={dataset}", f"log.log_dir={tmp_path / 'runs'}", "trainer.max_steps=1000"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert "this run does not fit: fsdp over 1 process(es): about 110 GiB" in err and "GiB of RAM (no GPU)" in err
    assert "would fit on 80 GB GPUs: trainer.strategy=fsdp trainer.context_parallel_size=1 on 8 GPU(s)" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "hf").exists()


def test_memory_estimate_follows_the_strategy():
    from nemo_cosmos.models.config import cosmos_7b_config
    from nemo_cosmos.training.preflight import GiB, estimate, parameter_count

    cfg = cosmos_7b_config()
    p = parameter_count(cfg)
    assert 7.0e9 < p < 7.5e9
    full = dict(tokens=56320)
    ddp = estimate(cfg, strategy="ddp", processes=1, **full)
    fsdp8 = estimate(cfg, strategy="fsdp", processes=8, **full)
    offload = estimate(cfg, strategy="fsdp", processes=1, cpu_offload=True, **full)
    lora = estimate(cfg, strategy="ddp", processes=1, lora_rank=16, lora_targets=("linear_qkv",), **full)
    assert ddp.weights == 18 * p  # float32 weights, gradients, two moments, bf16 copies
    assert fsdp8.weights < ddp.weights / 7 and offload.weights < 3 * GiB and lora.weights < 2.1 * p
    cp2 = estimate(cfg, strategy="fsdp", processes=8, cp_size=2, **full)
    assert cp2.activations == pytest.approx(fsdp8.activations / 2)


def test_fsdp_starts_from_a_nemo_checkpoint(assets, dataset, tmp_path):
    # rank 0 alone reads the base (a torch_dist checkpoint) while the other rank waits for it
    base = assets / "nemo_experiments" / "tiny_finetune"
    log_dir = tmp_path / "nemo_experiments"
    torchrun(2, dataset, log_dir, base, "trainer.strategy=fsdp", "data.micro_batch_size=1", "trainer.max_steps=2")
    assert sorted(experiment_losses(log_dir, RUN)) == [0, 1]
