"""NVIDIA's original model.pt layout -> ours, on a small state dict written in that layout."""

import pytest
import torch
from helpers import PUBLISHED_SIZES, published_state_dict, randomize_, rel_err, stored_as_one_element

from nemo_cosmos.checkpoint import (ORIGINAL, from_ours, inspect_checkpoint, load_dit, load_original_model_pt,
                                    load_state_dict_checked, to_ours)
from nemo_cosmos.checkpoint.loading import resolve_config
from nemo_cosmos.models import CosmosDiT, tiny_config


def _original_state_dict(cfg, model):
    """What NVIDIA's model.pt holds for this network: `net.`-prefixed weights plus buffers and the
    training-time logvar head, keyed as in Cosmos-1.0's GeneralDIT."""
    sd = from_ours(model.state_dict(), cfg, "original")
    sd["net.pos_embedder.seq"] = torch.arange(128, dtype=torch.float32)
    sd["logvar.0.freqs"] = torch.randn(128)
    sd["logvar.0.phases"] = torch.randn(128)
    sd["logvar.1.weight"] = torch.randn(1, 128)
    return sd


def test_original_key_names_are_the_published_ones():
    cfg = tiny_config()
    sd = from_ours(CosmosDiT(cfg).state_dict(), cfg, "original")
    d = cfg.hidden_size
    expect = {
        "net.x_embedder.proj.1.weight": (d, 68),
        "net.extra_pos_embedder.pos_emb_t": (128, d),
        "net.t_embedder.1.linear_2.weight": (3 * d, d),
        "net.affline_norm.weight": (d,),
        "net.final_layer.adaLN_modulation.2.weight": (2 * d, cfg.adaln_lora_dim),
        "net.final_layer.linear.weight": (64, d),
        "net.blocks.block1.blocks.0.block.attn.to_q.1.weight": (cfg.kv_channels,),
        "net.blocks.block1.blocks.1.block.attn.to_k.0.weight": (d, cfg.crossattn_dim),
        "net.blocks.block1.blocks.2.block.layer1.weight": (4 * d, d),
        "net.blocks.block0.blocks.2.adaLN_modulation.2.weight": (3 * d, cfg.adaln_lora_dim),
    }
    for k, shape in expect.items():
        assert tuple(sd[k].shape) == shape, k
    assert not any(k.startswith("net.blocks.block0.blocks.0.block.attn.to_v.1") for k in sd)


@pytest.mark.parametrize("video2world", [False, True], ids=["text2world", "video2world"])
def test_model_pt_file_loads_into_our_model(tmp_path, video2world):
    cfg = tiny_config(condition_mask_channel=video2world)
    source = randomize_(CosmosDiT(cfg)).eval()
    path = tmp_path / "model.pt"
    torch.save(_original_state_dict(cfg, source), path)
    # NVIDIA's VideoExtendGeneralDIT: one more input channel, (16 + 1 + 1) x 2 x 2 patch inputs
    written = torch.load(path, weights_only=True)["net.x_embedder.proj.1.weight"]
    assert tuple(written.shape) == (cfg.hidden_size, 72 if video2world else 68)

    ours = CosmosDiT(cfg).eval()
    load_state_dict_checked(ours, load_original_model_pt(path, cfg))
    loaded = load_dit(path, cfg).eval()  # the loader every caller goes through
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x, t, text = torch.randn(1, 16, 2, 4, 6), torch.tensor([0.2]), torch.randn(1, 5, cfg.crossattn_dim)
    mask = None
    if video2world:
        mask = torch.zeros(1, 1, 2, 4, 6)
        mask[:, :, :1] = 1  # the first latent frame given as condition
    with torch.no_grad():
        want = source(x, t, text, fps=24, condition_mask=mask)
        assert rel_err(ours(x, t, text, fps=24, condition_mask=mask), want) == 0.0
        assert rel_err(loaded(x, t, text, fps=24, condition_mask=mask), want) == 0.0
        if video2world:  # the mask's weights were loaded and are read
            assert rel_err(loaded(x, t, text, fps=24), want) > 1e-3

    # the other family's config is refused, naming the tensor (not loaded partially)
    other = tiny_config(condition_mask_channel=not video2world)
    have, expect = (72, 68) if video2world else (68, 72)
    with pytest.raises(ValueError, match=rf"'patch_embed.weight' has shape \[64, {have}\].*expects \[64, {expect}\]"):
        load_dit(path, other)


def _published_model_pt(name, path, **overrides):
    """A model.pt with every tensor of the published model `name` at its published shape (each stored
    as one element), and the buffers NVIDIA's file holds besides."""
    sd, cfg = published_state_dict(name, **overrides)
    tensors = from_ours(sd, cfg, "original")
    tensors.update({"net.pos_embedder.seq": torch.arange(128.0), "logvar.0.freqs": torch.randn(128),
                    "logvar.0.phases": torch.randn(128), "logvar.1.weight": torch.randn(1, 128)})
    torch.save(stored_as_one_element(tensors), path)
    return path


@pytest.mark.parametrize("name", sorted(PUBLISHED_SIZES))
def test_published_model_pt_is_matched_to_its_model_by_shapes(tmp_path, name):
    """model.pt says nothing about itself: its shapes pick the published model, Video2World
    (the condition-mask channel's patch inputs) apart from its Text2World twin."""
    layers, width, patch_in = PUBLISHED_SIZES[name]
    path = _published_model_pt(name, tmp_path / "model.pt")
    written = torch.load(path, weights_only=True, mmap=True)
    assert tuple(written["net.x_embedder.proj.1.weight"].shape) == (width, patch_in)
    assert {int(k.split(".")[2][len("block"):]) for k in written if k.startswith("net.blocks.")} == set(range(layers))

    info = inspect_checkpoint(str(tmp_path))  # the folder, as downloaded
    assert (info.kind, info.path, info.config, info.model) == (ORIGINAL, str(path), None, name)
    cfg = resolve_config(info, None)
    assert (cfg.num_layers, cfg.hidden_size) == (layers, width)
    assert cfg.condition_mask_channel is name.endswith("Video2World")


def test_model_pt_of_no_published_size_needs_a_model_name(tmp_path):
    # the 7B network with a second extra input channel: no published model has 76 patch inputs
    path = _published_model_pt("Cosmos-1.0-Diffusion-7B-Video2World", tmp_path / "model.pt", in_channels=17)
    assert tuple(torch.load(path, weights_only=True)["net.x_embedder.proj.1.weight"].shape) == (4096, 76)
    info = inspect_checkpoint(str(path))
    assert info.model is None
    with pytest.raises(ValueError, match="does not say which model it holds"):
        resolve_config(info, None)


def test_model_pt_errors_name_the_problem(tmp_path):
    cfg = tiny_config()
    sd = _original_state_dict(cfg, CosmosDiT(cfg))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_original_model_pt(tmp_path / "missing.pt", cfg)

    trunc = tmp_path / "trunc.pt"
    torch.save(sd, trunc)
    trunc.write_bytes(trunc.read_bytes()[:500])
    with pytest.raises(ValueError, match="cannot read .*trunc.pt"):
        load_original_model_pt(trunc, cfg)

    partial = dict(sd)
    del partial["net.blocks.block1.blocks.1.block.attn.to_k.0.weight"]
    with pytest.raises(ValueError, match="block1.blocks.1.block.attn.to_k.0.weight"):
        to_ours(partial, cfg, "original")

    with pytest.raises(ValueError, match="does not use, first: 'net.blocks.block1"):
        to_ours(sd, tiny_config(num_layers=1), "original")

    wide = to_ours(sd, cfg, "original")
    with pytest.raises(ValueError, match="'patch_embed.weight' has shape \\[64, 68\\].*\\[96, 68\\]"):
        load_state_dict_checked(CosmosDiT(tiny_config(hidden_size=96, num_attention_heads=6)), wide)


def test_legacy_format_model_pt_loads(tmp_path):
    cfg = tiny_config()
    source = randomize_(CosmosDiT(cfg))
    path = tmp_path / "model.pt"
    torch.save(_original_state_dict(cfg, source), path, _use_new_zipfile_serialization=False)
    loaded = load_original_model_pt(path, cfg)
    assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items())


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"net.x": Evil()}, path)
    with pytest.raises(ValueError, match="weights-only"):
        load_original_model_pt(path, tiny_config())
