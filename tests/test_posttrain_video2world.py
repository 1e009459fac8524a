"""Video2World post-training on CPU: the loss against a from-the-formula oracle (conditioned latent
frames add nothing but count in the mean), a Text2World DiT widened for Video2World computing
exactly what it did, the demo recipe from the shipped Text2World cosmos-demo (it learns, checkpoints
a Video2World DiT, resumes, trains the same sharded over 2 processes), the starts that cannot work
refused, and subject ("sks") prompting through data preparation and inference."""

import json
import math
import os
import subprocess
import sys
import types

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from nemo_cosmos import demo
from nemo_cosmos.checkpoint import (from_ours, inspect_checkpoint, latest_experiment_checkpoint, load_dit,
                                    save_dit_safetensors, save_nemo_checkpoint)
from nemo_cosmos.diffusion import LogVarHead, edm_loss
from nemo_cosmos.errors import BadInputError
from nemo_cosmos.models import CosmosDiT, tiny_config
from nemo_cosmos.models.dit import with_condition_mask_channel
from nemo_cosmos.recipes import posttrain
from nemo_cosmos.training import CachedVideoDataset, CosmosDiffusionModule, build, recipe

from distributed import free_port
from helpers import experiment_losses, randomize_

pytestmark = pytest.mark.skipif(not demo.available(), reason="demo weights not shipped in this checkout")

RUN = "cosmos_demo_video2world_train"
V2W_DEMO = os.path.join(os.path.dirname(demo.DIT_FILE), "video2world")
# float32 on the CPU, every step logged, checkpoints at steps 2 and 4, two samples per step. A smaller
# learning rate than the recipe's: Adam's first steps at 3e-4 disturb the trained base more than 4 steps repair.
COMMON = ("data.num_workers=0", "data.micro_batch_size=2", "trainer.accelerator=cpu", "trainer.precision=32",
          "optim.lr=3e-5", "trainer.max_steps=4", "trainer.checkpoint_every_n_steps=2", "trainer.log_every_n_steps=1")
SD = 0.5  # sigma_data
AUG = 0.001  # the conditioning frames' noise level


# -- an independent computation of NeMo's Video2World loss ---------------------------------------------


def oracle_loss(net, x0, text, sigma, noise, frames, augment, fps, logvar=None):
    """mean over all elements of w(sigma) * (x0_pred - x0)^2 (/ e^u + u), written out: frame f of
    sample i is given (f < frames[i]) as (x0 + 0.001 * augment) * c_in(0.001) with the mask channel
    at 1, its prediction is the ground truth; every other frame is denoised from x0 + sigma * noise."""
    b, c, t, h, w = x0.shape
    x0, noise, augment, sigma = x0.double(), noise.double(), augment.double(), sigma.double()
    c_in = lambda s: 1.0 / math.sqrt(s * s + SD * SD)  # noqa: E731
    net_in = torch.empty_like(x0)
    mask = torch.zeros(b, 1, t, h, w, dtype=torch.float64)
    for i in range(b):
        s = float(sigma[i])
        for f in range(t):
            if f < int(frames[i]):
                net_in[i, :, f] = (x0[i, :, f] + AUG * augment[i, :, f]) * c_in(AUG)
                mask[i, :, f] = 1
            else:
                net_in[i, :, f] = (x0[i, :, f] + s * noise[i, :, f]) * c_in(s)
    with torch.no_grad():
        out = net(net_in.float(), (sigma.log() / 4).float(), text.float(), fps=fps, condition_mask=mask.float())
    out = out.double()
    total = torch.zeros((), dtype=torch.float64)
    for i in range(b):
        s = float(sigma[i])
        c_skip, c_out = SD**2 / (s * s + SD**2), s * SD / math.sqrt(s * s + SD**2)
        pred = c_skip * (x0[i] + s * noise[i]) + c_out * out[i]
        err = (pred - x0[i]) ** 2
        err[:, : int(frames[i])] = 0  # the given frames are predicted as themselves
        weight = (s * s + SD**2) / (s * SD) ** 2
        u = 0.0 if logvar is None else logvar(torch.tensor([math.log(s) / 4])).item()
        total += (weight * err / math.exp(u) + u).sum()
    return (total / x0.numel()).item()


class Shifted(torch.nn.Module):
    """A network whose raw output is the DiT's plus `delta` on the latent frames where `where` [T] is
    True; records what it is given."""

    def __init__(self, dit, delta=0.0, where=None):
        super().__init__()
        self.dit, self.delta, self.where, self.calls = dit, delta, where, []

    def forward(self, x, t, text, fps=None, condition_mask=None):
        self.calls.append((x.detach().clone(), condition_mask.detach().clone()))
        out = self.dit(x, t, text, fps=fps, condition_mask=condition_mask)
        if self.where is not None:
            out = out + self.delta * self.where.view(1, 1, -1, 1, 1).to(out.dtype)
        return out


def tiny_v2w(seed=0):
    torch.manual_seed(seed)
    return randomize_(CosmosDiT(tiny_config(condition_mask_channel=True))).eval()


def tiny_batch(b=3, t=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(b, 16, t, 4, 6, generator=g) * SD
    return dict(x0=x0, text=torch.randn(b, 9, 32, generator=g), sigma=torch.tensor([0.3, 1.2, 4.0][:b]),
                noise=torch.randn(x0.shape, generator=g), frames=torch.tensor([1, 2, 3][:b]),
                augment=torch.randn(x0.shape, generator=g))


def library_loss(net, d, logvar=None):
    with torch.no_grad():
        return edm_loss(net, d["x0"], d["text"], d["sigma"], d["noise"], fps=12.0, logvar=logvar,
                        condition_frames=d["frames"], augment_noise=d["augment"]).item()


@pytest.mark.parametrize("with_logvar", [False, True])
def test_the_loss_is_the_formula(with_logvar):
    dit, d = tiny_v2w(), tiny_batch()
    logvar = None
    if with_logvar:  # a trained head: u(sigma) nonzero
        logvar = LogVarHead()
        torch.nn.init.normal_(logvar.linear.weight, std=0.3, generator=torch.Generator().manual_seed(2))
    expected = oracle_loss(dit, d["x0"], d["text"], d["sigma"], d["noise"], d["frames"], d["augment"], 12.0, logvar)
    assert library_loss(dit, d, logvar) == pytest.approx(expected, rel=1e-5)


def test_conditioned_frames_add_exactly_nothing():
    dit, d = tiny_v2w(), tiny_batch(b=2, t=4)
    d["frames"] = torch.tensor([2, 2])
    spy = Shifted(dit)
    base = library_loss(spy, d)
    # what the network reads: the mask on the given frames, those frames as at sigma 0.001 whatever sigma is
    (x, mask), = spy.calls
    assert torch.equal(mask[:, 0, :, 0, 0], torch.tensor([[1.0, 1, 0, 0], [1, 1, 0, 0]]))
    assert mask.shape == (2, 1, 4, 4, 6) and torch.equal(mask, mask[..., :1, :1].expand_as(mask))
    given = (d["x0"] + AUG * d["augment"]) / math.sqrt(AUG**2 + SD**2)
    torch.testing.assert_close(x[:, :, :2], given[:, :, :2], rtol=1e-5, atol=1e-6)
    sigma = d["sigma"].view(-1, 1, 1, 1, 1)
    noisy = (d["x0"] + sigma * d["noise"]) / (sigma**2 + SD**2).sqrt()
    torch.testing.assert_close(x[:, :, 2:], noisy[:, :, 2:], rtol=1e-5, atol=1e-6)

    given_frames = torch.tensor([True, True, False, False])
    assert library_loss(Shifted(dit, 5.0, given_frames), d) == base  # exactly: replaced by the ground truth
    assert library_loss(Shifted(dit, -3.0, given_frames), d) == base
    changed = library_loss(Shifted(dit, 0.05, ~given_frames), d)
    assert abs(changed - base) > 1e-4 * base


def _attach(module, step=0, rank=0, world=1):
    module.trainer = types.SimpleNamespace(strategy=types.SimpleNamespace(), global_rank=rank, world_size=world,
                                           global_step=step)
    module.log = lambda *a, **k: None
    return module


def test_each_sample_draws_its_conditioned_frames():
    module = CosmosDiffusionModule(tiny_config(condition_mask_channel=True), max_condition_frames=3, seed=5)
    many = _attach(module)._draws(torch.zeros(64, 16, 5, 4, 6))
    assert sorted(set(many["frames"].tolist())) == [1, 2, 3]  # 1..max_condition_frames
    assert many["augment"].shape == many["noise"].shape and not torch.equal(many["augment"], many["noise"])
    short = _attach(module)._draws(torch.zeros(64, 16, 3, 4, 6))
    assert sorted(set(short["frames"].tolist())) == [1, 2]  # never all of a 3-frame clip
    # a sample's draws are its own, whatever the processes and micro-batches: step 1 of rank 1 of 2 (micro
    # batch 2) holds global samples 6 and 7, the second half of step 1 of one process with micro batch 4
    two = _attach(module, step=1, rank=1, world=2)._draws(torch.zeros(2, 16, 5, 4, 6))
    one = _attach(module, step=1)._draws(torch.zeros(4, 16, 5, 4, 6))
    for k in ("sigma", "noise", "keep", "frames", "augment"):
        assert torch.equal(two[k], one[k][2:]), k
    with pytest.raises(BadInputError, match="at least 2 latent frames"):
        module._draws(torch.zeros(1, 16, 1, 4, 6))
    with pytest.raises(BadInputError, match="max_condition_frames must be at least 1"):
        CosmosDiffusionModule(tiny_config(condition_mask_channel=True), max_condition_frames=0)


def test_training_step_is_the_loss_of_its_draws():
    module = _attach(CosmosDiffusionModule(tiny_config(condition_mask_channel=True), text_dropout=0.5, seed=3), step=2)
    torch.nn.init.normal_(module.logvar.linear.weight, std=0.3, generator=torch.Generator().manual_seed(4))
    randomize_(module.dit)
    d = tiny_batch()
    batch = {"x0": d["x0"], "text": d["text"], "fps": torch.full((3,), 12.0)}
    draws = module._draws(d["x0"])
    assert not draws["keep"].all() and draws["keep"].any()  # both kinds of sample in this batch
    with torch.no_grad():
        got = module.training_step(batch, 0).item()
    text = d["text"] * draws["keep"].view(-1, 1, 1).float()
    with torch.no_grad():
        expected = oracle_loss(module.dit, d["x0"], text, draws["sigma"], draws["noise"], draws["frames"],
                               draws["augment"], 12.0, module.logvar)
    assert got == pytest.approx(expected, rel=1e-5)


# -- a Text2World DiT widened for Video2World ------------------------------------------------------------


def test_widened_text2world_dit_computes_the_text2world_output():
    t2w = randomize_(CosmosDiT(tiny_config())).eval()
    v2w = with_condition_mask_channel(t2w).eval()
    assert v2w.config.condition_mask_channel and v2w.patch_embed.weight.shape[1] == t2w.patch_embed.weight.shape[1] + 4
    g = torch.Generator().manual_seed(0)
    x, t, text = torch.randn(2, 16, 3, 4, 6, generator=g), torch.tensor([0.1, -0.4]), torch.randn(2, 9, 32, generator=g)
    anything = (torch.rand(2, 1, 3, 4, 6, generator=g) > 0.5).float()
    with torch.no_grad():
        want = t2w(x, t, text, fps=12.0)
        assert torch.equal(v2w(x, t, text, fps=12.0, condition_mask=torch.zeros(2, 1, 3, 4, 6)), want)
        assert torch.equal(v2w(x, t, text, fps=12.0), want)
        torch.testing.assert_close(v2w(x, t, text, fps=12.0, condition_mask=anything), want, rtol=0, atol=0)
        # the inserted columns are the mask channel's: once nonzero they act on the mask, and on nothing else
        at = 16 * 4
        v2w.patch_embed.weight[:, at:at + 4] = torch.randn(v2w.patch_embed.weight.shape[0], 4, generator=g)
        assert torch.equal(v2w(x, t, text, fps=12.0, condition_mask=torch.zeros(2, 1, 3, 4, 6)), want)
        assert (v2w(x, t, text, fps=12.0, condition_mask=torch.ones(2, 1, 3, 4, 6)) - want).abs().max() > 1e-3


@pytest.mark.parametrize("layout", ["nemo", "safetensors", "model.pt"])
def test_a_video2world_run_widens_a_text2world_start(tmp_path, layout):
    """What _load_base makes of a Text2World checkpoint, in each layout (model.pt records no config)."""
    t2w = randomize_(CosmosDiT(tiny_config()))
    if layout == "nemo":
        path = str(tmp_path / "ckpt")
        save_nemo_checkpoint(t2w.state_dict(), t2w.config, path)
    elif layout == "safetensors":
        path = str(tmp_path / "dit.safetensors")
        save_dit_safetensors(t2w.state_dict(), t2w.config, path)
    else:
        path = str(tmp_path / "model.pt")
        torch.save(from_ours(t2w.state_dict(), t2w.config, "original"), path)
    module = CosmosDiffusionModule(tiny_config(condition_mask_channel=True), init_from=path)
    got, want = module.dit.state_dict(), with_condition_mask_channel(t2w).state_dict()
    assert module.dit.config.condition_mask_channel and module.config.condition_mask_channel
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k
    assert got["patch_embed.weight"][:, 64:68].abs().sum() == 0


# -- the demo recipe, end to end --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def v2w_data(tmp_path_factory):
    """Two rendered clips of the demo world prepared for cosmos-demo-video2world, subject "green
    square" (one with a caption)."""
    from nemo_cosmos.demo.world import render
    from nemo_cosmos.recipes import prepare_data

    root = tmp_path_factory.mktemp("v2w")
    (root / "videos").mkdir()
    rng = np.random.default_rng(0)
    for i, want in enumerate((("green", "square", "right"), ("green", "square", "up"))):
        iio.imwrite(root / "videos" / f"{i}.mp4", render(*want, rng), fps=8, codec="libx264", macro_block_size=1)
    (root / "videos" / "1.txt").write_text("a green square moving up")
    assert prepare_data.main(["--input_video_dir", str(root / "videos"), "--subject_name", "green square",
                              "--output_dir", str(root / "data"), "--model", "cosmos-demo-video2world",
                              "--device", "cpu", "--no_progress"]) == 0
    return root


def fixed_draw_loss(model, data):
    """The Video2World loss of `model` on the prepared clips at fixed noise levels, conditioned frames
    and noise: lower means it continues the given frames better."""
    ds = CachedVideoDataset(str(data))
    g = torch.Generator().manual_seed(0)
    total = 0.0
    with torch.no_grad():
        for i in range(len(ds)):
            x0 = ds[i]["x0"][None]
            for sigma in (0.2, 0.5, 1.0, 2.0):
                for frames in (1, 2):
                    total += edm_loss(model, x0, ds[i]["text"][None], torch.tensor([sigma]),
                                      torch.randn(x0.shape, generator=g), fps=float(ds[i]["fps"]),
                                      condition_frames=torch.tensor([frames]),
                                      augment_noise=torch.randn(x0.shape, generator=g)).item()
    return total


@pytest.fixture(scope="module")
def reference(v2w_data):
    """The demo recipe from cosmos-demo's Text2World weights: 4 steps on one process, its starting
    weights and the inputs of each step kept."""
    log_dir = v2w_data / "reference" / "nemo_experiments"
    cfg = recipe(RUN, [f"data.path={v2w_data / 'data'}", f"log.log_dir={log_dir}", *COMMON])
    trainer, module, datamodule, _ = build(cfg)
    start = {k: v.detach().clone() for k, v in module.dit.state_dict().items()}
    logvar = LogVarHead()
    logvar.load_state_dict(module.logvar.state_dict())
    draws, real = [], module._draws

    def spy(x0):
        out = real(x0)
        draws.append((x0.clone(), {k: v.clone() for k, v in out.items()}))
        return out

    module._draws = spy
    trainer.fit(module, datamodule=datamodule)
    return types.SimpleNamespace(log_dir=log_dir, start=start, logvar=logvar, draws=draws)


def test_the_demo_recipe_trains_video2world_from_text2world(v2w_data, reference):
    # it started from the widened Text2World demo DiT
    t2w = load_dit(demo.DIT_FILE, dtype=torch.float32)
    assert not t2w.config.condition_mask_channel
    widened = with_condition_mask_channel(t2w).state_dict()
    assert reference.start.keys() == widened.keys()
    assert all(torch.equal(reference.start[k], widened[k]) for k in widened)

    # its checkpoints hold a Video2World DiT of the Video2World model
    runs = list((reference.log_dir / RUN / "default").iterdir())
    assert len(runs) == 1
    assert sorted(os.listdir(runs[0] / "checkpoints")) == ["epoch=0-step=2", "epoch=0-step=4"]
    final = latest_experiment_checkpoint(str(reference.log_dir / RUN))
    assert final.endswith("step=4")
    info = inspect_checkpoint(final)
    assert info.model == "cosmos-demo-video2world" and info.config.condition_mask_channel
    trained = load_dit(final, dtype=torch.float32).eval()
    assert trained.config.condition_mask_channel
    sd = trained.state_dict()
    assert sd.keys() == widened.keys()
    assert sd["patch_embed.weight"][:, 64:68].abs().min() > 0  # the mask channel's inputs learned from zero
    assert (sd["patch_embed.weight"][:, :64] != widened["patch_embed.weight"][:, :64]).all()  # the latent's
    assert torch.equal(sd["patch_embed.weight"][:, 68:], widened["patch_embed.weight"][:, 68:])  # padding mask: all 0
    moved = [k for k in sd if not torch.equal(sd[k], widened[k])]
    assert len(moved) > 0.8 * len(sd), sorted(set(sd) - set(moved))

    # step 0's logged loss is the Video2World loss of the widened start on step 0's draws
    losses = experiment_losses(reference.log_dir, RUN)
    assert sorted(losses) == [0, 1, 2, 3] and all(np.isfinite(list(losses.values())))
    x0, draws = reference.draws[0]
    ds = CachedVideoDataset(str(v2w_data / "data"))
    items = [next(ds[i] for i in range(len(ds)) if torch.equal(ds[i]["x0"], x)) for x in x0]
    text = torch.stack([it["text"] for it in items]) * draws["keep"].view(-1, 1, 1).float()
    start = with_condition_mask_channel(t2w).eval()
    expected = oracle_loss(start, x0, text, draws["sigma"], draws["noise"], draws["frames"], draws["augment"],
                           float(items[0]["fps"]), reference.logvar)
    assert losses[0] == pytest.approx(expected, rel=1e-5)

    # it learned to continue the given frames
    assert fixed_draw_loss(trained, v2w_data / "data") < 0.7 * fixed_draw_loss(start, v2w_data / "data")


def assert_same_run(reference, log_dir, rtol=1e-5):
    a, b = experiment_losses(reference.log_dir, RUN), experiment_losses(log_dir, RUN)
    assert sorted(b) == sorted(a) == [0, 1, 2, 3]
    np.testing.assert_allclose([b[s] for s in range(4)], [a[s] for s in range(4)], rtol=rtol)
    wa = load_dit(latest_experiment_checkpoint(str(reference.log_dir / RUN))).state_dict()
    wb = load_dit(latest_experiment_checkpoint(str(log_dir / RUN))).state_dict()
    assert wa.keys() == wb.keys()
    for k in wa:
        err = ((wa[k] - wb[k]).norm() / wa[k].norm().clamp_min(1e-12)).item()
        assert err <= rtol, (k, err)


def test_a_resumed_run_continues_the_curve(v2w_data, reference, tmp_path):
    log_dir = tmp_path / "nemo_experiments"
    for steps in (2, 4):
        assert posttrain.main(["--recipe", RUN, f"data.path={v2w_data / 'data'}", f"log.log_dir={log_dir}", *COMMON,
                               f"trainer.max_steps={steps}"]) == 0
    assert len(list((log_dir / RUN / "default").iterdir())) == 2  # the second part is a new run folder
    assert_same_run(reference, log_dir)


def test_fsdp_on_two_processes_trains_as_one_process(v2w_data, reference, tmp_path):
    log_dir = tmp_path / "nemo_experiments"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
         "-m", "nemo_cosmos.recipes.posttrain", "--recipe", RUN, f"data.path={v2w_data / 'data'}",
         f"log.log_dir={log_dir}", *COMMON, "data.micro_batch_size=1", "trainer.strategy=fsdp"],
        capture_output=True, text=True, timeout=400, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    shards = os.listdir(os.path.join(latest_experiment_checkpoint(str(log_dir / RUN)), "train_state", "sharded"))
    assert len(shards) == 2
    assert_same_run(reference, log_dir)


# -- refused -------------------------------------------------------------------------------------------------


def _one_latent_frame_data(root):
    from nemo_cosmos.training.data import write_sample

    g = torch.Generator().manual_seed(0)
    for i in range(2):
        write_sample(str(root / str(i)), torch.randn(16, 1, 8, 8, generator=g), torch.randn(512, 64, generator=g),
                     {"fps": 8, "prompt": "a red circle moving up"})
    return root


@pytest.mark.parametrize("recipe_name, overrides, message", [
    ("cosmos_demo_text2world_train", [f"model.init_from={V2W_DEMO}"],
     "model.name cosmos-demo is a Text2World model but " + V2W_DEMO + " holds a Video2World DiT"),
    ("cosmos_demo_text2world_train", ["model.init_from=cosmos-demo-video2world"],
     "model.name cosmos-demo is a Text2World model but model.init_from cosmos-demo-video2world is a Video2World model"),
    (RUN, ["diffusion.max_condition_frames=0"], "diffusion.max_condition_frames must be at least 1; got 0"),
    (RUN, ["diffusion.max_condition_frames=-3"], "diffusion.max_condition_frames must be at least 1; got -3"),
    (RUN, ["diffusion.max_condition_frames=two"], "bad override"),
    (RUN, ["ONE_FRAME"], "Video2World post-training needs clips of at least 2 latent frames"),
    (RUN, ["lora.enabled=true", "model.init_from=cosmos-demo"], "a Video2World LoRA run needs a Video2World base"),
])
def test_a_run_that_cannot_work_is_refused(v2w_data, tmp_path, capsys, recipe_name, overrides, message):
    data = v2w_data / "data"
    if overrides == ["ONE_FRAME"]:
        (tmp_path / "one").mkdir()
        data, overrides = _one_latent_frame_data(tmp_path / "one"), []
    log_dir = tmp_path / "runs"
    rc = posttrain.main(["--recipe", recipe_name, f"data.path={data}", f"log.log_dir={log_dir}", *COMMON, *overrides])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1, err
    assert not log_dir.exists()  # refused before anything was started


# -- the subject ------------------------------------------------------------------------------------------------


def test_subject_prompting_is_unchanged_for_video2world(v2w_data, reference, tmp_path):
    from nemo_cosmos.recipes import infer
    from nemo_cosmos.text import T5TextEncoder

    ds = CachedVideoDataset(str(v2w_data / "data"))
    prompts = [ds.info(i)["prompt"] for i in range(len(ds))]
    assert sorted(prompts) == ["A video of sks green square.", "A video of sks green square. a green square moving up"]
    t5 = T5TextEncoder.from_pretrained(demo.T5_DIR, device="cpu")
    for i, prompt in enumerate(prompts):
        torch.testing.assert_close(ds[i]["text"], t5.encode([prompt])[0].float(), rtol=1e-5, atol=1e-6)

    # generation from the run folder continues an input and prompts with the subject
    out = tmp_path / "more.mp4"
    assert infer.main(["--nemo_checkpoint", str(reference.log_dir / RUN), "--subject_name", "green square",
                       "--prompt", "a green square moving right", "--input_image_or_video_path",
                       str(v2w_data / "videos" / "0.mp4"), "--num_input_frames", "1", "--video_save_path", str(out),
                       "--num_steps", "2", "--no_progress", "--device", "cpu"]) == 0
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["final_prompt"] == "A video of sks green square. a green square moving right"
    assert side["settings"]["model"] == "cosmos-demo-video2world"
    assert iio.imread(out).shape == (17, 64, 64, 3)
