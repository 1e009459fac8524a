import os
import types
import warnings

import pytest
import torch

# Megatron-Core warns at import about missing Transformer Engine/Apex; the fallback is the point here.
warnings.filterwarnings("ignore", module="megatron")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def _nearest_resize(img, size, interpolation=None):
    return torch.nn.functional.interpolate(img, size=size, mode="nearest")


@pytest.fixture(scope="session")
def diffusers_cosmos():
    """diffusers' Cosmos transformer module, as the numerical oracle.

    It resizes the padding mask with torchvision, which cannot be installed beside this CPU torch;
    torchvision's NEAREST tensor resize is F.interpolate(mode="nearest"), so that stands in for it.
    """
    mod = pytest.importorskip("diffusers.models.transformers.transformer_cosmos")
    if not hasattr(mod, "transforms"):
        functional = types.SimpleNamespace(resize=_nearest_resize)
        mod.transforms = types.SimpleNamespace(
            functional=functional, InterpolationMode=types.SimpleNamespace(NEAREST="nearest")
        )
    return mod
