from .checkpoint_io import CosmosDDPStrategy, CosmosSingleDeviceStrategy, NeMoCheckpointIO
from .config import RECIPES, PostTrainConfig, recipe
from .data import CachedVideoDataModule, CachedVideoDataset, StepSampler, write_sample
from .module import CosmosDiffusionModule
from .run import build, train

__all__ = [
    "RECIPES", "CachedVideoDataModule", "CachedVideoDataset", "CosmosDDPStrategy", "CosmosDiffusionModule",
    "CosmosSingleDeviceStrategy", "NeMoCheckpointIO", "PostTrainConfig", "StepSampler", "build", "recipe", "train",
    "write_sample",
]
