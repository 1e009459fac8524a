from .context_parallel import TokenSharding, UlyssesAttention, apply_context_parallel
from .distributed import context_parallel_group, init_distributed, is_main_rank, shutdown, world_size_from_env

__all__ = [
    "TokenSharding", "UlyssesAttention", "apply_context_parallel", "context_parallel_group", "init_distributed",
    "is_main_rank", "shutdown", "world_size_from_env",
]
