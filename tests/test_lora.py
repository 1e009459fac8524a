"""LoRA post-training on CPU: only the adapters train and the loss falls; the adapters are saved in
peft's layout (plain peft loads them) inside the run's checkpoint folders; inference applies them,
merged or not, from Python and from the command line."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from nemo_cosmos import Text2WorldPipeline
from nemo_cosmos.checkpoint import latest_experiment_checkpoint, load_dit
from nemo_cosmos.diffusion import edm_loss
from nemo_cosmos.models.lora import load_lora
from nemo_cosmos.recipes import infer, posttrain
from nemo_cosmos.training import build, recipe

from helpers import experiment_losses, fixed_noise_loss

RUN = "cosmos_tiny_text2world_finetune"
LORA = ("lora.enabled=true", "lora.rank=4", "lora.alpha=8", "optim.lr=2e-2", "trainer.checkpoint_every_n_steps=5")


@pytest.fixture(scope="module")
def lora_run(assets, dataset, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("lora") / "nemo_experiments"
    cfg = recipe(RUN, [f"data.path={dataset}", f"log.log_dir={log_dir}", f"model.init_from={assets / 'tiny'}",
                       "trainer.max_steps=10", *LORA])
    trainer, module, datamodule, _ = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    return log_dir, module


def test_only_the_adapters_train_and_the_loss_falls(assets, dataset, lora_run):
    log_dir, module = lora_run
    base = load_dit(str(assets / "tiny")).state_dict()
    trained = dict(module.dit.named_parameters())
    for name, p in trained.items():
        if ".lora_" in name:
            assert p.requires_grad and p.dtype == torch.float32
        else:
            assert not p.requires_grad
            assert torch.equal(p.detach(), base[name.replace(".base_layer", "")]), name
    assert any(".lora_B" in n and p.abs().max() > 0 for n, p in trained.items())  # B starts at zero

    step = latest_experiment_checkpoint(str(log_dir / RUN), with_weights=False)
    assert step.endswith("step=10")
    assert sorted(os.listdir(step)) == ["context", "lora", "train_state"]  # no copy of the frozen base
    saved = load_file(os.path.join(step, "lora", "adapter_model.safetensors"))
    assert all(k.startswith("base_model.model.layers.") and ".lora_" in k for k in saved)
    config = json.load(open(os.path.join(step, "lora", "adapter_config.json")))
    assert (config["r"], config["lora_alpha"], config["peft_type"]) == (4, 8, "LORA")

    tuned = load_dit(str(assets / "tiny"))
    load_lora(tuned, os.path.join(step, "lora"))
    assert fixed_noise_loss(tuned, dataset) < 0.9 * fixed_noise_loss(load_dit(str(assets / "tiny")), dataset)


def test_plain_peft_loads_the_adapters(assets, lora_run):
    from peft import PeftModel

    log_dir, _ = lora_run
    adapter = os.path.join(latest_experiment_checkpoint(str(log_dir / RUN), with_weights=False), "lora")
    peft_model = PeftModel.from_pretrained(load_dit(str(assets / "tiny")), adapter).eval()
    ours = load_dit(str(assets / "tiny"))
    load_lora(ours, adapter, merge=False)
    g = torch.Generator().manual_seed(3)
    x, t, text = torch.randn(1, 16, 2, 4, 6, generator=g), torch.tensor([0.7]), torch.randn(1, 9, 32, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(peft_model(x, t, text), ours(x, t, text), rtol=0, atol=0)


def test_merged_and_unmerged_adapters_generate_the_same(assets, lora_run):
    log_dir, _ = lora_run

    def latent(**lora):
        pipe = Text2WorldPipeline.from_pretrained(str(assets / "tiny"), device="cpu", guardrails=False, **lora)
        return pipe("It slides.", output_type="latent", num_steps=3, progress=False)[0].latent

    merged = latent(lora=str(log_dir / RUN))
    unmerged = latent(lora=str(log_dir / RUN), lora_merge=False)
    assert ((merged - unmerged).norm() / merged.norm()).item() <= 1e-5
    assert (merged - latent()).abs().max() > 1e-3  # the adapters change the video


def test_infer_takes_the_adapters_and_finds_their_base(lora_run, tmp_path):
    log_dir, _ = lora_run
    out = tmp_path / "lora.mp4"
    rc = infer.main(["--lora", str(log_dir / RUN), "--prompt", "It slides.", "--video_save_path", str(out),
                     "--disable_guardrails", "--num_steps", "2", "--device", "cpu", "--no_progress"])
    assert rc == 0 and out.stat().st_size > 0
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["settings"]["lora"].endswith("lora") and sidecar["settings"]["model"] == "tiny"


def test_resuming_with_another_rank_is_refused(assets, dataset, lora_run, capsys):
    log_dir, _ = lora_run
    before = sorted(os.listdir(log_dir / RUN / "default"))
    rc = posttrain.main(["--recipe", RUN, f"data.path={dataset}", f"log.log_dir={log_dir}",
                         f"model.init_from={assets / 'tiny'}", "trainer.max_steps=12", *LORA, "lora.rank=8"])
    assert rc == 2 and "was written with LoRA rank 4" in capsys.readouterr().err
    assert sorted(os.listdir(log_dir / RUN / "default")) == before


def test_resumed_lora_run_continues_its_curve(assets, dataset, lora_run, tmp_path):
    log_dir, _ = lora_run
    split = tmp_path / "nemo_experiments"
    for steps in (5, 10):
        assert posttrain.main(["--recipe", RUN, f"data.path={dataset}", f"log.log_dir={split}",
                               f"model.init_from={assets / 'tiny'}", f"trainer.max_steps={steps}", *LORA]) == 0
    a, b = experiment_losses(log_dir, RUN), experiment_losses(split, RUN)
    assert sorted(b) == list(range(10))
    torch.testing.assert_close(torch.tensor([b[s] for s in range(10)]), torch.tensor([a[s] for s in range(10)]),
                               rtol=1e-5, atol=0)


def test_a_target_that_names_no_module_is_refused(assets, dataset, tmp_path, capsys):
    rc = posttrain.main(["--recipe", RUN, f"data.path={dataset}", f"log.log_dir={tmp_path}",
                         f"model.init_from={assets / 'tiny'}", *LORA, "lora.target_modules=[to_q,linear_fc1]"])
    assert rc == 2 and "LoRA target 'to_q' names no projection" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("lora", [False, True])
def test_recomputation_with_offloaded_inputs_gives_the_same_gradients(assets, lora):
    from nemo_cosmos.models.lora import LoraSettings, apply_lora
    from nemo_cosmos.parallel import apply_activation_checkpointing

    g = torch.Generator().manual_seed(5)
    x0, text = torch.randn(1, 16, 2, 4, 6, generator=g), torch.randn(1, 9, 32, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    grads = []
    for mode in ("plain", "recompute", "offload"):
        dit = load_dit(str(assets / "tiny"))
        if lora:
            apply_lora(dit, LoraSettings(rank=4), seed=1)
            for n, p in dit.named_parameters():
                if "lora_B" in n:
                    torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(len(n)))
        if mode != "plain":
            apply_activation_checkpointing(dit, offload=mode == "offload")
        edm_loss(dit, x0, text, torch.tensor([0.8]), noise, fps=12.0).backward()
        grads.append({n: p.grad for n, p in dit.named_parameters() if p.requires_grad})
    assert grads[0] and all(v is not None for v in grads[0].values())
    for other in grads[1:]:
        assert other.keys() == grads[0].keys()
        for n in grads[0]:
            torch.testing.assert_close(other[n], grads[0][n], rtol=1e-5, atol=1e-7)
