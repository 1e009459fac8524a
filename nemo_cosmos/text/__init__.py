from .t5 import MAX_TOKENS, T5_NAME, T5TextEncoder

__all__ = ["MAX_TOKENS", "T5_NAME", "T5TextEncoder"]
