"""Our Megatron-Core DiT against diffusers' CosmosTransformer3DModel with the same weights."""

import json

import pytest
import torch
from helpers import randomize_, rel_err

from nemo_cosmos.checkpoint import from_ours, load_state_dict_checked, to_ours
from nemo_cosmos.models import CosmosDiT, tiny_config


def _diffusers_model(mod, cfg):
    return mod.CosmosTransformer3DModel(
        in_channels=cfg.in_channels + int(cfg.condition_mask_channel),
        out_channels=cfg.out_channels,
        num_attention_heads=cfg.num_attention_heads,
        attention_head_dim=cfg.kv_channels,
        num_layers=cfg.num_layers,
        text_embed_dim=cfg.crossattn_dim,
        adaln_lora_dim=cfg.adaln_lora_dim,
        max_size=cfg.max_latent_size,
        patch_size=cfg.patch_size,
        rope_scale=cfg.rope_scale,
    ).eval()


@pytest.mark.parametrize(
    "rope_scale, shape, fps, sigma, text_len",
    [
        ((2.0, 1.0, 1.0), (1, 16, 3, 8, 8), 24, 80.0, 7),  # 7B-style RoPE, first step of sampling
        ((2.0, 2.0, 2.0), (2, 16, 4, 6, 10), 30, 1.3, 12),  # 14B-style RoPE, non-square, fps != 24
        ((2.0, 1.0, 1.0), (1, 16, 2, 12, 4), 12, 0.002, 5),  # tall frame, last step
        ((2.0, 1.0, 1.0), (1, 16, 1, 4, 6), None, 5.0, 3),  # image case: fps None
    ],
)
def test_forward_matches_diffusers(diffusers_cosmos, rope_scale, shape, fps, sigma, text_len):
    cfg = tiny_config(rope_scale=rope_scale)
    theirs = randomize_(_diffusers_model(diffusers_cosmos, cfg))
    ours = CosmosDiT(cfg).eval()
    ours.load_state_dict(to_ours(theirs.state_dict(), cfg, "diffusers"), strict=True)

    b = shape[0]
    x = torch.randn(shape)
    c_noise = torch.full((b,), 0.25 * torch.log(torch.tensor(sigma)).item())
    text = torch.randn(b, text_len, cfg.crossattn_dim)
    text[:, text_len // 2 :] = 0  # zeroed T5 padding takes part in cross-attention, unmasked
    pad = torch.zeros(1, 1, shape[3], shape[4])
    with torch.no_grad():
        want = theirs(x, c_noise, text, fps=fps, padding_mask=pad, return_dict=False)[0]
        got = ours(x, c_noise, text, fps=fps)
    assert got.shape == want.shape == x.shape
    assert rel_err(got, want) <= 1e-5


def test_padding_mask_channel_matches_diffusers(diffusers_cosmos):
    """A non-zero padding mask given at pixel size is resized to the latent like the reference."""
    cfg = tiny_config()
    theirs = randomize_(_diffusers_model(diffusers_cosmos, cfg))
    ours = CosmosDiT(cfg).eval()
    ours.load_state_dict(to_ours(theirs.state_dict(), cfg, "diffusers"))
    x, text = torch.randn(1, 16, 2, 8, 8), torch.randn(1, 4, cfg.crossattn_dim)
    pad = (torch.rand(1, 1, 64, 64) > 0.5).float()
    t = torch.tensor([0.1])
    with torch.no_grad():
        want = theirs(x, t, text, fps=24, padding_mask=pad, return_dict=False)[0]
        got = ours(x, t, text, fps=24, padding_mask=pad)
        zero = ours(x, t, text, fps=24)
    assert rel_err(got, want) <= 1e-5
    assert rel_err(zero, want) > 1e-3  # the mask channel really is read


def test_state_dict_round_trip_through_diffusers_layout(diffusers_cosmos):
    cfg = tiny_config()
    ours = randomize_(CosmosDiT(cfg))
    theirs = _diffusers_model(diffusers_cosmos, cfg)
    theirs.load_state_dict(from_ours(ours.state_dict(), cfg, "diffusers"), strict=True)
    back = to_ours(theirs.state_dict(), cfg, "diffusers")
    for k, v in ours.state_dict().items():
        assert torch.equal(back[k], v), k


def test_bf16_rope_rounds_like_the_reference():
    """A bf16 model computes RoPE angles in bf16 (NVIDIA casts the buffers); float32 on request."""
    cfg = tiny_config(params_dtype=torch.bfloat16, bf16=True)
    rope = CosmosDiT(cfg).rope
    cos_bf16, _ = rope((4, 4, 4), 30, torch.bfloat16, "cpu")
    cos_fp32, _ = rope((4, 4, 4), 30, torch.float32, "cpu")
    # at fps 30, temporal positions are seq/30*24: 0.8 in float32, 0.8047 after bf16 rounding
    t_cols = slice(0, rope.dim_t // 2)
    assert not torch.allclose(cos_bf16[:, t_cols], cos_fp32[:, t_cols], atol=1e-4)
    pos = torch.arange(4, dtype=torch.bfloat16) / torch.tensor(30, dtype=torch.bfloat16) * 24
    assert torch.allclose(torch.acos(cos_bf16[16::16, 0]), pos[1:].float(), atol=1e-3)


@pytest.mark.parametrize("shape, conditioned", [((1, 16, 3, 8, 8), 1), ((2, 16, 4, 6, 10), 2)])
def test_video2world_forward_matches_diffusers(diffusers_cosmos, shape, conditioned):
    """The condition-mask channel sits after the latent's and before the padding mask's, as in
    diffusers' CosmosTransformer3DModel(in_channels=16 + 1)."""
    cfg = tiny_config(condition_mask_channel=True, rope_scale=(2.0, 2.0, 2.0))
    theirs = randomize_(_diffusers_model(diffusers_cosmos, cfg))
    ours = CosmosDiT(cfg).eval()
    ours.load_state_dict(to_ours(theirs.state_dict(), cfg, "diffusers"), strict=True)
    b, _, t, h, w = shape
    x, text = torch.randn(shape), torch.randn(b, 6, cfg.crossattn_dim)
    mask = torch.zeros(b, 1, t, h, w)
    mask[:, :, :conditioned] = 1
    c_noise = torch.full((b,), 0.25 * torch.log(torch.tensor(3.0)).item())
    pad = torch.zeros(1, 1, h, w)
    with torch.no_grad():
        want = theirs(x, c_noise, text, fps=24, condition_mask=mask, padding_mask=pad, return_dict=False)[0]
        got = ours(x, c_noise, text, fps=24, condition_mask=mask)
        unconditioned = ours(x, c_noise, text, fps=24)
    assert rel_err(got, want) <= 1e-5
    assert rel_err(unconditioned, want) > 1e-3  # the mask channel really is read
    with pytest.raises(ValueError, match="condition_mask must have shape"):
        ours(x, c_noise, text, condition_mask=mask[:, :, :1])
    with pytest.raises(ValueError, match="condition_mask is for Video2World models"):
        CosmosDiT(tiny_config())(x, c_noise, torch.randn(b, 6, 32), condition_mask=mask)


@pytest.mark.parametrize("video2world", [False, True], ids=["text2world", "video2world"])
def test_diffusers_checkpoint_folder_loads(diffusers_cosmos, tmp_path, video2world):
    """A transformer folder as diffusers' save_pretrained writes it (config.json, safetensors weights)
    loads into our DiT of the same family and computes diffusers' forward; the other family's config
    is refused; converting back gives the file's tensors."""
    from safetensors.torch import load_file

    cfg = tiny_config(condition_mask_channel=video2world)
    theirs = randomize_(_diffusers_model(diffusers_cosmos, cfg))
    folder = tmp_path / "transformer"
    theirs.save_pretrained(str(folder))
    assert json.loads((folder / "config.json").read_text())["in_channels"] == (17 if video2world else 16)
    written = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    assert tuple(written["patch_embed.proj.weight"].shape) == (cfg.hidden_size, 72 if video2world else 68)

    ours = CosmosDiT(cfg).eval()
    load_state_dict_checked(ours, to_ours(written, cfg, "diffusers"))
    b, t, h, w = 2, 3, 8, 6
    x, text = torch.randn(b, 16, t, h, w), torch.randn(b, 5, cfg.crossattn_dim)
    c_noise = torch.full((b,), 0.25 * torch.log(torch.tensor(2.0)).item())
    mask = None
    if video2world:
        mask = torch.zeros(b, 1, t, h, w)
        mask[0, :, :1] = 1
        mask[1, :, :2] = 1  # one and two latent frames given as condition
    pad = torch.zeros(1, 1, h, w)
    with torch.no_grad():
        want = theirs(x, c_noise, text, fps=24, condition_mask=mask, padding_mask=pad, return_dict=False)[0]
        got = ours(x, c_noise, text, fps=24, condition_mask=mask)
        assert rel_err(got, want) <= 1e-5
        if video2world:
            assert rel_err(ours(x, c_noise, text, fps=24), want) > 1e-3  # the mask's weights are read

    other = tiny_config(condition_mask_channel=not video2world)
    with pytest.raises(ValueError, match="'patch_embed.weight' has shape"):
        load_state_dict_checked(CosmosDiT(other), to_ours(written, other, "diffusers"))

    back = from_ours(ours.state_dict(), cfg, "diffusers")
    assert back.keys() == written.keys()
    for k, v in written.items():
        assert torch.equal(back[k], v), k
