"""CV8x8x8 tokenizer: parity with diffusers' AutoencoderKLCosmos, and loading the published files."""

import pytest
import torch
from helpers import randomize_, rel_err, save_tokenizer_files

from nemo_cosmos.tokenizer import CV8x8x8Tokenizer, read_torchscript_weights, tiny_tokenizer_config

# NVIDIA's module names -> diffusers' (diffusers' conversion script renames the same way).
_RENAMES = [
    ("down.", "down_blocks."), (".block.", ".resnets."), ("downsample", "downsamplers.0"),
    ("upsample", "upsamplers.0"), ("mid.block_1", "mid_block.resnets.0"),
    ("mid.attn_1.0", "mid_block.attentions.0"), ("mid.attn_1.1", "mid_block.temp_attentions.0"),
    ("mid.block_2", "mid_block.resnets.1"), (".q.conv3d", ".to_q"), (".k.conv3d", ".to_k"),
    (".v.conv3d", ".to_v"), (".proj_out.conv3d", ".to_out.0"), (".0.conv3d", ".conv_s"),
    (".1.conv3d", ".conv_t"), ("conv1.conv3d", "conv1"), ("conv2.conv3d", "conv2"),
    ("conv3.conv3d", "conv3"), ("nin_shortcut.conv3d", "conv_shortcut"),
    ("quant_conv.conv3d", "quant_conv"),
]


def _to_diffusers(sd, n_up):
    out = {}
    for k, v in sd.items():
        if k.startswith("latent_"):
            continue
        if k.startswith("decoder.up."):
            i = int(k.split(".")[2])
            k = f"decoder.up_blocks.{n_up - 1 - i}." + k.split(".", 3)[3]
        for old, new in _RENAMES:
            k = k.replace(old, new)
        out[k] = v
    return out


@pytest.fixture(scope="module")
def pair():
    from diffusers import AutoencoderKLCosmos

    cfg = tiny_tokenizer_config()
    ours = randomize_(CV8x8x8Tokenizer(cfg), std=0.5).eval()
    theirs = AutoencoderKLCosmos(
        encoder_block_out_channels=cfg.encoder_channels, decode_block_out_channels=cfg.decoder_channels
    ).eval()
    theirs.load_state_dict(_to_diffusers(ours.state_dict(), len(cfg.decoder_channels) - 1), strict=True)
    return ours, theirs


@pytest.mark.parametrize("frames, h, w", [(9, 32, 32), (17, 16, 40), (1, 24, 16)])
def test_encode_decode_match_diffusers(pair, frames, h, w):
    ours, theirs = pair
    video = torch.rand(1, 3, frames, h, w) * 2 - 1
    with torch.no_grad():
        z_ours = ours.encode_raw(video)
        z_theirs = theirs.encode(video).latent_dist.mode()
        assert z_ours.shape == (1, 16, (frames - 1) // 8 + 1, h // 8, w // 8)
        assert rel_err(z_ours, z_theirs) <= 1e-5
        x_ours = ours.decode_raw(z_theirs)
        x_theirs = theirs.decode(z_theirs).sample
        assert x_ours.shape == video.shape
        assert rel_err(x_ours, x_theirs) <= 1e-5


def test_attention_in_slices_matches_diffusers_and_trains(pair, monkeypatch):
    """One sequence per SDPA call (the slicing that keeps a 704x1280 decode small) changes nothing,
    gradients included."""
    from nemo_cosmos.tokenizer import cv8x8x8

    ours, theirs = pair
    video = torch.rand(1, 3, 17, 16, 40) * 2 - 1

    def run():
        ours.zero_grad()
        x = ours.decode_raw(ours.encode_raw(video))
        x.square().mean().backward()
        return x.detach(), ours.encoder.mid.attn_1[0].q.conv3d.weight.grad.clone()

    whole, whole_grad = run()
    monkeypatch.setattr(cv8x8x8, "SCORE_BUDGET", 1)
    sliced, sliced_grad = run()
    ours.zero_grad()
    with torch.no_grad():
        reference = theirs.decode(theirs.encode(video).latent_dist.mode()).sample
    assert rel_err(sliced, reference) <= 1e-5
    assert rel_err(sliced, whole) <= 1e-6
    assert rel_err(sliced_grad, whole_grad) <= 1e-5


def test_latent_normalisation_uses_per_frame_statistics():
    cfg = tiny_tokenizer_config()
    tok = randomize_(CV8x8x8Tokenizer(cfg)).eval()
    mean, std = torch.randn(16 * 16), torch.rand(16 * 16) + 0.5  # published files hold 16 frames
    tok.set_latent_stats(mean, std)
    video = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    with torch.no_grad():
        raw = tok.encode_raw(video)
        z = tok.encode(video)
        m, s = mean.reshape(16, 16)[:, :2], std.reshape(16, 16)[:, :2]
        assert torch.allclose(z, (raw - m[None, :, :, None, None]) / s[None, :, :, None, None], atol=1e-6)
        assert rel_err(tok.decode(z), tok.decode_raw(raw)) <= 1e-6


def test_from_pretrained_reads_published_files_without_running_them(tmp_path):
    cfg = tiny_tokenizer_config()
    source = randomize_(CV8x8x8Tokenizer(cfg)).eval()
    save_tokenizer_files(source, tmp_path)
    weights = read_torchscript_weights(tmp_path / "encoder.jit")
    assert "encoder.down.0.block.0.conv1.0.conv3d.weight" in weights
    assert "encoder.patcher3d.wavelets" in weights

    tok = CV8x8x8Tokenizer.from_pretrained(tmp_path, cfg, dtype=torch.float32)
    mean, std = torch.load(tmp_path / "mean_std.pt")
    source.set_latent_stats(mean, std)
    video = torch.rand(1, 3, 17, 16, 24) * 2 - 1
    with torch.no_grad():
        assert torch.equal(tok.encode(video), source.encode(video))
        z = source.encode(video)
        assert torch.equal(tok.decode(z), source.decode(z))


def test_from_pretrained_errors(tmp_path):
    cfg = tiny_tokenizer_config()
    with pytest.raises(FileNotFoundError, match="encoder.jit.*nemo_cosmos.recipes.download.*nvidia/Cosmos-1.0-Tokenizer-CV8x8x8"):
        CV8x8x8Tokenizer.from_pretrained(tmp_path, cfg)
    save_tokenizer_files(randomize_(CV8x8x8Tokenizer(cfg)), tmp_path)
    with pytest.raises(ValueError, match="do not fit this CV8x8x8"):
        CV8x8x8Tokenizer.from_pretrained(tmp_path, tiny_tokenizer_config(num_res_blocks=3))
    (tmp_path / "decoder.jit").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read weights from .*decoder.jit"):
        CV8x8x8Tokenizer.from_pretrained(tmp_path, cfg)


def test_malicious_archive_is_refused(tmp_path):
    import pickle
    import zipfile

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "encoder.jit"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(Evil(), protocol=2))
    with pytest.raises(ValueError, match="refusing to load .*print"):
        read_torchscript_weights(path)


@pytest.mark.parametrize("frames", [0, 8, 10, 25])
def test_bad_frame_counts(frames):
    tok = CV8x8x8Tokenizer(tiny_tokenizer_config())
    with pytest.raises(ValueError, match="8k\\+1 frames, at most 17"):
        tok.encode(torch.zeros(1, 3, frames, 16, 16))
