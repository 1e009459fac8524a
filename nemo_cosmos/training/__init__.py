"""Post-training: recipes' configs (config.py, light to import), the Lightning module (EDM loss), the
dataset, pickle-free NeMo-format checkpoints, and a run assembled from a recipe (run.py). Names are
imported on first use, so a command line can list the recipes without importing Lightning."""

import importlib

_EXPORTS = {
    "RECIPES": "config", "PostTrainConfig": "config", "recipe": "config",
    "CosmosDDPStrategy": "checkpoint_io", "CosmosSingleDeviceStrategy": "checkpoint_io", "NeMoCheckpointIO": "checkpoint_io",
    "CachedVideoDataModule": "data", "CachedVideoDataset": "data", "StepSampler": "data", "write_sample": "data",
    "CosmosDiffusionModule": "module",
    "build": "run", "train": "run",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
