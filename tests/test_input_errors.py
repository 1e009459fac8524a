"""Shapes the network cannot take raise a ValueError that names the expected shape."""

import pytest
import torch

from nemo_cosmos.models import CosmosDiT, get_layer_spec, tiny_config


@pytest.fixture(scope="module")
def model():
    return CosmosDiT(tiny_config()).eval()


@pytest.mark.parametrize(
    "x_shape, text_shape, t_shape, match",
    [
        ((1, 16, 2, 7, 8), (1, 4, 32), (1,), r"H and W multiples of 2; got \[1, 16, 2, 7, 8\]"),
        ((1, 16, 2, 8, 5), (1, 4, 32), (1,), r"multiples of 2"),
        ((1, 17, 2, 8, 8), (1, 4, 32), (1,), r"\[B, 16, T, H, W\]"),
        ((16, 2, 8, 8), (1, 4, 32), (1,), r"\[B, 16, T, H, W\]"),
        ((1, 16, 2, 8, 8), (1, 4, 1024), (1,), r"crossattn_emb must have shape \[1, L, 32\]"),
        ((1, 16, 2, 8, 8), (2, 4, 32), (1,), r"crossattn_emb must have shape \[1, L, 32\]"),
        ((1, 16, 2, 8, 8), (1, 4, 32), (2,), r"timesteps must have shape \[1\]"),
        ((1, 16, 2, 8, 242), (1, 4, 32), (1,), r"exceeds the model's largest latent"),
    ],
)
def test_bad_shapes(model, x_shape, text_shape, t_shape, match):
    with pytest.raises(ValueError, match=match):
        model(torch.zeros(x_shape), torch.zeros(t_shape), torch.zeros(text_shape), fps=24)


def test_spec_selection():
    assert get_layer_spec("local").submodules.self_attention.submodules.core_attention.__name__ == "SDPAttention"
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        get_layer_spec("cuda")
    try:
        import transformer_engine  # noqa: F401
    except ImportError:
        assert get_layer_spec("auto").submodules.mlp.submodules.linear.__name__ == "LocalLinear"
        with pytest.raises(ImportError, match="nemo-cosmos\\[te\\]"):
            get_layer_spec("te")
