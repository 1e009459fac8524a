from .config import (
    CosmosDiTConfig,
    cosmos_7b_config,
    cosmos_14b_config,
    cosmos_7b_video2world_config,
    cosmos_14b_video2world_config,
    tiny_config,
)
from .dit import CosmosDiT
from .specs import get_layer_spec, get_local_layer_spec, get_te_layer_spec

__all__ = [
    "CosmosDiT",
    "CosmosDiTConfig",
    "cosmos_7b_config",
    "cosmos_14b_config",
    "cosmos_7b_video2world_config",
    "cosmos_14b_video2world_config",
    "get_layer_spec",
    "get_local_layer_spec",
    "get_te_layer_spec",
    "tiny_config",
]
