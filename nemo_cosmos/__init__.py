"""nemo_cosmos: NVIDIA Cosmos-1.0 diffusion world models on Megatron-Core."""

__version__ = "0.1.0"
