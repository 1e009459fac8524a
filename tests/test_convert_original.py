"""NVIDIA's original model.pt layout -> ours, on a small state dict written in that layout."""

import pytest
import torch
from helpers import randomize_, rel_err

from nemo_cosmos.checkpoint import from_ours, load_original_model_pt, load_state_dict_checked, to_ours
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


def test_model_pt_file_loads_into_our_model(tmp_path):
    cfg = tiny_config()
    source = randomize_(CosmosDiT(cfg)).eval()
    path = tmp_path / "model.pt"
    torch.save(_original_state_dict(cfg, source), path)

    ours = CosmosDiT(cfg).eval()
    load_state_dict_checked(ours, load_original_model_pt(path, cfg))
    x, t, text = torch.randn(1, 16, 2, 4, 6), torch.tensor([0.2]), torch.randn(1, 5, cfg.crossattn_dim)
    with torch.no_grad():
        assert rel_err(ours(x, t, text, fps=24), source(x, t, text, fps=24)) == 0.0


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
