"""nemo_cosmos: NVIDIA Cosmos-1.0 diffusion world models on Megatron-Core.

    from nemo_cosmos import Text2WorldPipeline
    pipe = Text2WorldPipeline.from_pretrained("cosmos-demo")
    pipe("a red circle moving up")[0].save("circle.mp4")

    from nemo_cosmos import Video2WorldPipeline
    pipe = Video2WorldPipeline.from_pretrained("cosmos-demo-video2world")
    pipe("a red circle moving up", video="circle.mp4", num_input_frames=9)[0].save("more.mp4")

The names below are imported on first use, so ``import nemo_cosmos`` (and every command line's
``--help``) stays fast.
"""

import importlib
import warnings

# Megatron-Core warns at import when Transformer Engine/Apex are absent; falling back to plain
# PyTorch is a supported configuration here, not something a user must act on.
warnings.filterwarnings("ignore", message="Transformer Engine and Apex are not installed")
warnings.filterwarnings("ignore", message="full scope is deprecated")

__version__ = "0.1.0"

_EXPORTS = {
    "Text2WorldPipeline": "nemo_cosmos.pipeline",
    "Video2WorldPipeline": "nemo_cosmos.pipeline",
    "Generation": "nemo_cosmos.pipeline",
    "load_dit": "nemo_cosmos.checkpoint",
    "resolve_source": "nemo_cosmos.sources",
    "MODELS": "nemo_cosmos.presets",
    "BlockedError": "nemo_cosmos.errors",
    "CosmosUserError": "nemo_cosmos.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'nemo_cosmos' has no attribute {name!r}")
