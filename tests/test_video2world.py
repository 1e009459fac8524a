"""Video2World: the pipeline against an implementation of NVIDIA's conditioning written here from
the fact sheet (shared/reference/cosmos1-video2world-reference.md §2-§8, not from our code), the
input readers, from_pretrained's dispatch by model family, and the command line's Video2World
flags and refusals."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_
from test_reference_exactness import _reference_res_2ab

from nemo_cosmos import Text2WorldPipeline, Video2WorldPipeline
from nemo_cosmos.errors import BadInputError, CosmosUserError
from nemo_cosmos.models import CosmosDiT, tiny_config
from nemo_cosmos.presets import GenerationDefaults
from nemo_cosmos.recipes.infer import main
from nemo_cosmos.text import T5TextEncoder
from nemo_cosmos.tokenizer import CV8x8x8Tokenizer

H, W, T = 32, 48, 17  # 3 latent frames of 4 x 6


def _v2w_dit(dtype=torch.float32):
    cfg = tiny_config(condition_mask_channel=True, params_dtype=dtype, bf16=dtype == torch.bfloat16)
    return randomize_(CosmosDiT(cfg)).to(dtype).eval()


def _pipe(assets, dtype=torch.float32, **kw):
    tok = CV8x8x8Tokenizer.from_pretrained(assets / "tokenizer", dtype=torch.float32)
    t5 = T5TextEncoder.from_pretrained(str(assets / "t5"))
    return Video2WorldPipeline(_v2w_dit(dtype), tok, t5, guardrails=False, name="tiny-v2w",
                               defaults=GenerationDefaults(height=H, width=W, num_frames=T, fps=12, guidance=7.0,
                                                           num_steps=35, negative_prompt=""), **kw)


@pytest.fixture(scope="module")
def v2w_folder(assets, tmp_path_factory):
    folder = tmp_path_factory.mktemp("v2w") / "tiny-v2w"
    pipe = _pipe(assets)
    pipe.defaults = GenerationDefaults(height=H, width=W, num_frames=T, fps=12, num_steps=3, negative_prompt="")
    pipe.save_pretrained(str(folder))
    return folder


def _clip(n=12, h=40, w=56, seed=3):
    """A uint8 clip of a size the model does not take (resized), whose frames all differ."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h, w, 3))
    return np.stack([(base + 17 * t) % 256 for t in range(n)]).astype(np.uint8)


# ---------------------------------------------------------------- the reference, written from the sheet


def _reference_scaling(sigma, sigma_data=0.5):
    """EDMScaling: (c_skip, c_out, c_in, c_noise) in sigma's dtype."""
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = sigma * sigma_data / (sigma**2 + sigma_data**2) ** 0.5
    c_in = 1 / (sigma**2 + sigma_data**2) ** 0.5
    c_noise = 0.25 * sigma.log()
    return c_skip, c_out, c_in, c_noise


def _reference_condition_latent(tok, frames, n, dtype):
    """§2-§3: the last n frames, x / 128 - 1 (float64 -> model dtype), resized in float32 (bicubic,
    antialias) and cast back, then zero frames; encoded, x 0.5, in the model dtype."""
    x = torch.from_numpy(frames[-n:].astype(np.float64) / 128.0 - 1.0).to(dtype).permute(0, 3, 1, 2)  # TCHW
    if tuple(x.shape[-2:]) != (H, W):
        x = F.interpolate(x.to(torch.float32), size=(H, W), mode="bicubic", align_corners=False,
                          antialias=True).to(dtype)
    video = torch.cat([x, torch.zeros(T - n, 3, H, W, dtype=dtype)]).permute(1, 0, 2, 3)[None]
    return (tok.encode(video) * 0.5).to(dtype)


def _reference_generation(pipe, frames, n, prompt, negative, seed, dtype, guidance=7.0, fps=12, augment_seed=None):
    """§4-§7: one whole sampling run as DiffusionV2WModel runs it; returns (latent, gt latent).
    `augment_seed`: draw the augmentation normals from another seed (not the reference: a check
    that the comparison notices)."""
    net = pipe.dit
    gt = _reference_condition_latent(pipe.tokenizer, frames, n, dtype)
    k = (n - 1) // 8 + 1
    t = gt.shape[2]
    indicator = torch.zeros(1, 1, t, 1, 1, dtype=dtype)
    indicator[:, :, :k] = 1
    mask = indicator.expand(1, 1, t, *gt.shape[-2:]).clone()  # the same for condition and uncondition
    normals = torch.from_numpy(np.random.RandomState(seed).standard_normal(tuple(gt.shape)).astype(np.float32))
    augment_normals = normals if augment_seed is None else torch.from_numpy(
        np.random.RandomState(augment_seed).standard_normal(tuple(gt.shape)).astype(np.float32))
    state = {"indicator": indicator}
    aug_sigma = torch.tensor([0.001], dtype=dtype)
    cond = pipe.text_encoder.encode([prompt])
    uncond = pipe.text_encoder.encode([negative]) if negative else cond  # no negative: the prompt's own text

    def denoise(noise_x, sigma, text):
        if 0.001 >= sigma.flatten()[0]:
            state["indicator"] = state["indicator"] * 0
        ind = state["indicator"]
        augment = gt + augment_normals * aug_sigma
        augment = augment * _reference_scaling(aug_sigma)[2]
        augment = augment * (1 / _reference_scaling(sigma)[2])
        xt = ind * augment + (1 - ind) * noise_x
        xt, s = xt.to(dtype), sigma.to(dtype)
        c_skip, c_out, c_in, c_noise = _reference_scaling(s)
        x0 = c_skip * xt + c_out * net(xt * c_in, c_noise, text.to(dtype), fps=fps, condition_mask=mask)
        return ind * gt + (1 - ind) * x0

    def x0_fn(x, sigma):
        c, u = denoise(x, sigma, cond), denoise(x, sigma, uncond)
        return c + guidance * (c - u)

    with torch.no_grad():
        return _reference_res_2ab(x0_fn, normals * 80), gt


@pytest.mark.parametrize("negative", ["blurry, static", ""])
@pytest.mark.parametrize("n", [1, 9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sampling_is_the_references_bit_for_bit(assets, dtype, n, negative):
    pipe = _pipe(assets, dtype)
    frames, seed = _clip(), 11
    forwards = []
    hook = pipe.dit.register_forward_hook(lambda *_: forwards.append(1))
    got = pipe("a cube slides left", video=frames, num_input_frames=n, negative_prompt=negative, seed=seed,
               output_type="latent", progress=False)[0]
    hook.remove()
    want, gt = _reference_generation(pipe, frames, n, "a cube slides left", negative, seed, dtype)
    assert got.latent.dtype == torch.float32 and want.dtype == torch.float32
    assert torch.equal(got.latent, want)
    # the conditioned latent frames are the input's latent exactly; the others were generated
    k = (n - 1) // 8 + 1
    assert torch.equal(got.latent[:, :, :k], gt[:, :, :k].float())
    assert not torch.allclose(got.latent[:, :, k:], gt[:, :, k:].float(), atol=0.1)
    # no negative prompt: guidance is a no-op, so one DiT pass per x0 evaluation gives the same
    assert got.timings["x0_evaluations"] == 36 and len(forwards) == (36 if not negative else 72)


def test_the_reference_comparison_can_tell(assets):
    """Augment noise other than the seeded initial normals (NeMo draws it fresh), or the input's
    first frames instead of its last, change the result: the bit-exact comparison above would
    catch either."""
    pipe = _pipe(assets)
    frames = _clip()
    got = pipe("a cube", video=frames, num_input_frames=9, seed=11, output_type="latent", progress=False)[0].latent
    other_augment, _ = _reference_generation(pipe, frames, 9, "a cube", "", 11, torch.float32, augment_seed=99)
    same, _ = _reference_generation(pipe, frames, 9, "a cube", "", 11, torch.float32)
    # the augment noise is 0.001 x the normals: a small change, but the comparison is exact
    assert torch.equal(same, got) and not torch.equal(other_augment, got)
    first = pipe("a cube", video=frames[:9], num_input_frames=9, seed=11, output_type="latent", progress=False)[0]
    assert not torch.allclose(first.latent, got, atol=1e-3)


def test_output_frames_start_with_the_inputs_reconstruction(assets):
    pipe = _pipe(assets)
    frames = _clip(n=9, h=H, w=W)
    out = pipe("a cube", video=frames, num_input_frames=9, num_steps=3, seed=2, progress=False)[0]
    assert out.frames.shape == (T, H, W, 3) and out.settings["num_input_frames"] == 9
    # all frames decoded from the latent, the conditioned part included (as NVIDIA's): the causal
    # decoder's first 9 frames depend on the 2 conditioned latent frames only, so they are the
    # decoding of the input's own latent, i.e. the tokenizer's reconstruction of the input
    _, gt = _reference_generation(pipe, frames, 9, "a cube", "", 2, torch.float32)
    np.testing.assert_array_equal(out.frames[:9], pipe.decode(gt)[:9])
    assert not np.array_equal(out.frames[9:], pipe.decode(gt)[9:])


def test_one_input_per_prompt_several_videos_each(assets):
    """A list of inputs, one per prompt, with two videos per prompt from a torch generator: each
    video starts from its own prompt's input latent; a video array and its file path agree."""
    pipe = _pipe(assets)
    a, b = _clip(seed=1), _clip(seed=2)
    g = torch.Generator().manual_seed(5)
    out = pipe(["a cube", "a ball"], video=[a, b], num_input_frames=9, num_steps=2, generator=g,
               num_videos_per_prompt=2, output_type="latent", progress=False)
    assert len(out) == 4
    want = [_reference_condition_latent(pipe.tokenizer, x, 9, torch.float32) for x in (a, b)]
    for i, g_ in enumerate(out):
        assert torch.equal(g_.latent[:, :, :2], want[i // 2][:, :, :2])
    assert not torch.equal(out[0].latent, out[1].latent)  # the generator draws new noise per video


# ---------------------------------------------------------------- input files


def test_video_input_gives_its_last_frames(assets, tmp_path):
    from nemo_cosmos.utils.video_input import read_input_frames

    path = tmp_path / "clip.mp4"
    iio.imwrite(path, _clip(n=14, h=H, w=W), fps=12, codec="libx264")
    decoded = iio.imread(path)  # what the file holds after compression
    assert decoded.shape[0] == 14
    np.testing.assert_array_equal(read_input_frames(str(path), 9), decoded[-9:])
    np.testing.assert_array_equal(read_input_frames(str(path), 1), decoded[-1:])
    with pytest.raises(BadInputError, match="14 frame"):
        read_input_frames(str(path), 15)


def test_image_input_rgba_on_white_and_any_case_suffix(tmp_path):
    from nemo_cosmos.utils.video_input import read_input_frames

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (H, W, 4)).astype(np.uint8)
    path = tmp_path / "frame.PNG"
    iio.imwrite(path, rgba, extension=".png")
    a = rgba[..., 3:].astype(np.float64) / 255.0
    want = (rgba[..., :3] * a + 255 * (1 - a)).astype(np.uint8)  # truncation, as NVIDIA's
    got = read_input_frames(str(path), 1)
    assert got.shape == (1, H, W, 3)
    np.testing.assert_array_equal(got[0], want)
    with pytest.raises(BadInputError, match="image"):
        read_input_frames(str(path), 9)
    (tmp_path / "junk.mp4").write_bytes(b"\x00 not a video")
    with pytest.raises(BadInputError):
        read_input_frames(str(tmp_path / "junk.mp4"), 1)
    with pytest.raises(CosmosUserError, match="not found"):
        read_input_frames(str(tmp_path / "none.png"), 1)


def test_bad_calls_are_refused(assets):
    pipe = _pipe(assets)
    with pytest.raises(BadInputError, match="Video2World model"):
        pipe("a cube", num_steps=1)
    with pytest.raises(BadInputError, match="num_input_frames"):
        pipe("a cube", video=_clip(), num_input_frames=5, num_steps=1)
    with pytest.raises(BadInputError, match="2 frame"):
        pipe("a cube", video=_clip(n=2), num_input_frames=9, num_steps=1)
    with pytest.raises(BadInputError, match="2 input videos for 1 prompts"):
        pipe("a cube", video=[_clip(), _clip()], num_steps=1)
    with pytest.raises(BadInputError, match="Pixtral"):
        _pipe(assets, prompt_upsampler=object())
    t2w = CosmosDiT(tiny_config())
    with pytest.raises(BadInputError, match="Text2World model"):
        Video2WorldPipeline(t2w, pipe.tokenizer, pipe.text_encoder, guardrails=False)


# ---------------------------------------------------------------- from_pretrained and the command line


def test_from_pretrained_builds_the_models_pipeline(assets, v2w_folder):
    index = json.loads((v2w_folder / "model_index.json").read_text())
    assert index["family"] == "video2world" and index["dit"]["condition_mask_channel"] is True
    pipe = Text2WorldPipeline.from_pretrained(str(v2w_folder), guardrails=False)
    assert type(pipe) is Video2WorldPipeline and pipe.dit.config.condition_mask_channel
    want = _pipe(assets).dit.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in pipe.dit.state_dict().items())
    with pytest.raises(BadInputError, match="Text2World"):
        Video2WorldPipeline.from_pretrained(str(assets / "tiny"), guardrails=False)
    with pytest.raises(BadInputError, match="Pixtral"):
        Text2WorldPipeline.from_pretrained(str(v2w_folder), guardrails=False, prompt_upsampler=True)


def _args(folder, *extra):
    return ["--nemo_checkpoint", str(folder), "--no_progress", "--device", "cpu", "--disable_guardrails",
            "--height", str(H), "--width", str(W), "--fps", "12", "--num_video_frames", str(T), "--num_steps", "3", *extra]


def test_cli_continues_an_image_and_a_video(v2w_folder, tmp_path):
    clip = _clip(n=12, h=H, w=W)
    iio.imwrite(tmp_path / "in.mp4", clip, fps=12, codec="libx264")
    iio.imwrite(tmp_path / "in.png", clip[0])
    for name, extra in (("img", ["--input_image_or_video_path", str(tmp_path / "in.png")]),
                        ("vid", ["--input_image_or_video_path", str(tmp_path / "in.mp4"), "--num_input_frames", "9"])):
        out = tmp_path / f"{name}.mp4"
        assert main(_args(v2w_folder, "--prompt", "a cube", "--video_save_path", str(out), "--save_latent",
                          *extra)) == 0
        assert iio.imread(out).shape == (T, H, W, 3)
        side = json.loads((tmp_path / f"{name}.json").read_text())["settings"]
        assert side["input_image_or_video_path"] == extra[1]
        assert side["num_input_frames"] == (9 if name == "vid" else 1)
    # the command line gives what the library gives for the same input
    pipe = Text2WorldPipeline.from_pretrained(str(v2w_folder), guardrails=False)
    want = pipe("a cube", video=str(tmp_path / "in.mp4"), num_input_frames=9, num_steps=3, height=H, width=W,
                num_frames=T, fps=12, output_type="latent", progress=False)[0].latent
    assert torch.equal(torch.load(tmp_path / "vid.latent.pt", weights_only=True), want)


def test_cli_batch_with_a_per_line_input(v2w_folder, tmp_path, caplog):
    clip = _clip(n=12, h=H, w=W)
    iio.imwrite(tmp_path / "a.png", clip[0])
    iio.imwrite(tmp_path / "b.mp4", clip, fps=12, codec="libx264")
    out = tmp_path / "out"
    out.mkdir()
    lines = [{"prompt": "a cube", "visual_input": str(tmp_path / "a.png")},
             {"prompt": "a cube", "input_image_or_video_path": str(tmp_path / "b.mp4"), "num_input_frames": 9},
             {"prompt": "a cube", "visual_input": str(tmp_path / "missing.mp4")},
             {"prompt": "a cube", "visual_input": str(tmp_path / "a.png"), "num_input_frames": 9},
             {"prompt": "a cube"}]
    (tmp_path / "jobs.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    rc = main(_args(v2w_folder, "--batch_input_path", str(tmp_path / "jobs.jsonl"), "--video_save_folder", str(out)))
    assert rc == 2
    assert sorted(p.name for p in out.iterdir()) == ["1.json", "1.mp4", "2.json", "2.mp4"]
    assert json.loads((out / "2.json").read_text())["settings"]["num_input_frames"] == 9
    text = caplog.text
    assert "line 3 skipped" in text and "not found" in text
    assert "line 4 skipped" in text and "line 5 skipped" in text and "3 of 5 lines failed" in text


@pytest.mark.parametrize("case, message", [
    ("missing", "not found"),
    ("unreadable", "cannot read"),
    ("too_few", "short.mp4 has 4 frame(s); 9 input frames were asked for"),
    ("text2world_model", "Text2World model: it cannot continue"),
    ("text2world_frames", "Text2World model: it cannot continue"),
    ("no_input", "give --input_image_or_video_path"),
    ("upsampler", "Pixtral"),
])
def test_cli_bad_input_exits_2_and_writes_nothing(assets, v2w_folder, tmp_path, capsys, monkeypatch, case, message):
    iio.imwrite(tmp_path / "short.mp4", _clip(n=4, h=H, w=W), fps=12, codec="libx264")
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x01 not a video")
    path = {"missing": "none.mp4", "unreadable": "junk.mp4", "too_few": "short.mp4"}.get(case, "short.mp4")
    extra = [] if case in ("no_input", "text2world_frames") else ["--input_image_or_video_path", str(tmp_path / path)]
    if case in ("too_few", "text2world_frames"):
        extra += ["--num_input_frames", "9"]
    if case == "upsampler":
        extra += ["--enable_prompt_upsampler"]
    folder = assets / "tiny" if case.startswith("text2world") else v2w_folder
    before = sorted(p.name for p in tmp_path.iterdir())

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(Text2WorldPipeline, "from_pretrained", no_loading)  # refused before any model loads
    rc = main(_args(folder, "--prompt", "a cube", "--video_save_path", str(tmp_path / "out.mp4"), *extra))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert message in err[-1] and err[-1].startswith("error:")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_cli_under_torchrun_gives_the_single_process_latent(v2w_folder, tmp_path):
    """Context parallel: the first rank reads and encodes the input, the others get its latent."""
    from test_context_parallel import torchrun

    iio.imwrite(tmp_path / "in.mp4", _clip(n=12, h=H, w=W), fps=12, codec="libx264")
    flags = ["--prompt", "a cube", "--save_latent", "--input_image_or_video_path", str(tmp_path / "in.mp4"),
             "--num_input_frames", "9", "--negative_prompt", "blurry"]
    assert main(_args(v2w_folder, "--video_save_path", str(tmp_path / "one.mp4"), *flags)) == 0
    proc = torchrun(2, _args(v2w_folder, "--video_save_path", str(tmp_path / "cp2.mp4"), "--cp_size", "2",
                             "--num_devices", "2", *flags))
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = torch.load(tmp_path / "one.latent.pt", weights_only=True)
    got = torch.load(tmp_path / "cp2.latent.pt", weights_only=True)
    assert torch.equal(got[:, :, :2], want[:, :, :2])
    assert ((got - want).norm() / want.norm()).item() < 1e-5
