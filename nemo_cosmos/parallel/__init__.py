from .context_parallel import TokenSharding, UlyssesAttention, apply_context_parallel
from .distributed import context_parallel_group, init_distributed, shutdown, world_size_from_env
from .parallelize import apply_activation_checkpointing, apply_compile, is_main, parallelize_dit

__all__ = [
    "TokenSharding", "UlyssesAttention", "apply_activation_checkpointing", "apply_compile", "apply_context_parallel",
    "context_parallel_group", "init_distributed", "is_main", "parallelize_dit", "shutdown", "world_size_from_env",
]
