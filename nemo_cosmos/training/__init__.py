from .checkpoint_io import CosmosDDPStrategy, CosmosSingleDeviceStrategy, NeMoCheckpointIO
from .config import RECIPES, PostTrainConfig, recipe
from .data import CachedVideoDataModule, CachedVideoDataset, StepSampler
from .module import CosmosDiffusionModule, apply_activation_checkpointing

__all__ = [
    "RECIPES", "CachedVideoDataModule", "CachedVideoDataset", "CosmosDDPStrategy", "CosmosDiffusionModule",
    "CosmosSingleDeviceStrategy", "NeMoCheckpointIO", "PostTrainConfig", "StepSampler",
    "apply_activation_checkpointing", "recipe",
]
