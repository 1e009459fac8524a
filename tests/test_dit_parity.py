"""Our Megatron-Core DiT against diffusers' CosmosTransformer3DModel with the same weights."""

import pytest
import torch
from helpers import randomize_, rel_err

from nemo_cosmos.checkpoint import from_ours, to_ours
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
