"""The 7B/14B presets: exactly diffusers' parameter counts and tensor shapes (on the meta device)."""

import dataclasses

import pytest
import torch

from nemo_cosmos.checkpoint import from_ours
from nemo_cosmos.models import (CosmosDiT, cosmos_7b_config, cosmos_7b_video2world_config, cosmos_14b_config,
                                cosmos_14b_video2world_config)
from nemo_cosmos.models import tiny_config
from nemo_cosmos.models.config import config_to_dict
from nemo_cosmos.presets import MODELS, model_preset


@pytest.mark.parametrize(
    "factory, kwargs, millions",
    [
        (cosmos_7b_config, dict(), 7236),
        (cosmos_14b_config, dict(num_layers=36, num_attention_heads=40, rope_scale=(2.0, 2.0, 2.0)), 14267),
        (cosmos_7b_video2world_config, dict(in_channels=16 + 1), 7236),
        (cosmos_14b_video2world_config, dict(in_channels=16 + 1, num_layers=36, num_attention_heads=40,
                                             rope_scale=(2.0, 2.0, 2.0)), 14267),
    ],
)
def test_preset_matches_diffusers_parameter_count(diffusers_cosmos, factory, kwargs, millions):
    cfg = factory()
    with torch.device("meta"):
        ours = CosmosDiT(cfg)
        theirs = diffusers_cosmos.CosmosTransformer3DModel(**kwargs)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    assert n_ours == n_theirs
    assert round(n_ours / 1e6) == millions
    # every tensor lands on a diffusers tensor of the same shape
    converted = from_ours({k: v for k, v in ours.state_dict().items()}, cfg, "diffusers")
    theirs_sd = theirs.state_dict()
    assert converted.keys() == theirs_sd.keys()
    for k, v in converted.items():
        assert v.shape == theirs_sd[k].shape, k


def test_presets_hold_the_published_hyperparameters():
    c7, c14 = cosmos_7b_config(), cosmos_14b_config()
    assert (c7.num_layers, c7.hidden_size, c7.num_attention_heads, c7.kv_channels) == (28, 4096, 32, 128)
    assert (c14.num_layers, c14.hidden_size, c14.num_attention_heads, c14.kv_channels) == (36, 5120, 40, 128)
    assert c7.rope_scale == (2.0, 1.0, 1.0) and c14.rope_scale == (2.0, 2.0, 2.0)
    assert c7.ffn_hidden_size == 16384 and c14.ffn_hidden_size == 20480
    assert c7.params_dtype == torch.bfloat16
    v7, v14 = cosmos_7b_video2world_config(), cosmos_14b_video2world_config()
    assert v7.condition_mask_channel and v14.condition_mask_channel and not c7.condition_mask_channel
    # NVIDIA's VideoExtendGeneralDIT: (16 latent + 1 condition mask + 1 padding mask) x (1 x 2 x 2) inputs
    assert CosmosDiT(tiny_config(condition_mask_channel=True)).patch_embed.in_features == 72
    assert config_to_dict(dataclasses.replace(v14, condition_mask_channel=False)) == config_to_dict(c14)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'Cosmos-9B'.*Cosmos-1.0-Diffusion-7B-Text2World"):
        model_preset("Cosmos-9B")


def test_registry_names_and_hub_ids_give_the_presets():
    assert model_preset("nvidia/Cosmos-1.0-Diffusion-14B-Text2World").name == "Cosmos-1.0-Diffusion-14B-Text2World"
    assert model_preset("Cosmos-1.0-Diffusion-7B-Text2World").dit_config().num_layers == 28
    demo = model_preset("cosmos-demo")
    assert demo.dit_config().hidden_size == 192 and demo.generation_defaults().num_frames == 17
    assert "cosmos-tiny" not in MODELS


def test_unknown_attention_backend_is_refused():
    import pytest

    from nemo_cosmos.models import CosmosDiT, tiny_config

    with pytest.raises(ValueError, match="unknown attention_backend 'fastest'"):
        CosmosDiT(tiny_config(attention_backend="fastest"))
