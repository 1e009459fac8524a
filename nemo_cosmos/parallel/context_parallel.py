"""Context parallelism for the DiT: the video token sequence is split across the ranks of a process
group, each rank runs every layer on its share, and self-attention exchanges what it must.

Applied by ``apply_context_parallel`` (from ``parallelize_dit``); the DiT's only part in it is one
hook, ``CosmosDiT.token_sharding``, which this sets:
* tokens: rank r holds the r-th contiguous 1/N of the T*H*W token sequence (RoPE and the extra
  position embedding are sliced to match). Self-attention is bidirectional and unmasked, so equal
  shares are equal work: no rank idles and no zig-zag reordering (Megatron's trick for causal
  masks) is needed;
* self-attention: with Transformer Engine, its ``DotProductAttention`` runs context-parallel itself;
  otherwise an all-to-all moves from "my tokens, all heads" to "all tokens, my heads", runs the
  plain attention kernel, and moves back (DeepSpeed-Ulysses style; needs heads % N == 0);
* cross-attention, MLP and AdaLN act token by token: no communication;
* the output tokens are gathered once, after the final layer.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from ..errors import BadInputError


def check_split(heads: int, tokens: int, size: int, flag: str, what: str) -> None:
    """BadInputError, before anything is loaded, for a context-parallel `size` (the `flag` that set
    it) that cannot split `tokens` video tokens (of `what`) or, without Transformer Engine's own
    context-parallel attention, the model's `heads`."""
    if size <= 1:
        return
    if tokens % size:
        raise BadInputError(f"{flag} {size} must divide the {tokens} video tokens of {what}")
    from ..models.specs import te_available

    if heads % size and not te_available():
        raise BadInputError(f"{flag} {size} must divide the model's {heads} attention heads")


class _AllToAll(torch.autograd.Function):
    """all_to_all_single over equal splits of dim 0; its own adjoint."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        x = x.contiguous()
        out = torch.empty_like(x)
        dist.all_to_all_single(out, x, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _AllToAll.apply(grad, ctx.group), None


class _GatherTokens(torch.autograd.Function):
    """Concatenate every rank's tokens along dim 1. The backward keeps this rank's slice: callers
    compute the same loss on every rank from the gathered output."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.rank, ctx.n = dist.get_rank(group), dist.get_world_size(group)
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(ctx.n)]
        dist.all_gather(parts, x, group=group)
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.chunk(ctx.n, dim=1)[ctx.rank], None


class UlyssesAttention(nn.Module):
    """Wraps a core attention taking q, k, v [B, S_local, H, D] -> [B, S_local, H*D]: all-to-all to
    [B, S, H/N, D], the wrapped kernel on full sequences, all-to-all back."""

    def __init__(self, inner: nn.Module, group):
        super().__init__()
        self.inner, self.group = inner, group
        self.n = dist.get_world_size(group)

    def _seq_to_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h, d = x.shape
        x = x.reshape(b, s, self.n, h // self.n, d).permute(2, 0, 1, 3, 4)  # [N(head group), B, s, h/N, D]
        x = _AllToAll.apply(x, self.group)  # now [N(sequence chunk), B, s, h/N, D]
        return x.permute(1, 0, 2, 3, 4).reshape(b, self.n * s, h // self.n, d)

    def _heads_to_seq(self, y: torch.Tensor, heads: int) -> torch.Tensor:
        b, s_full, _ = y.shape
        s = s_full // self.n
        y = y.reshape(b, self.n, s, heads // self.n, -1).permute(1, 0, 2, 3, 4)  # [N(sequence chunk), ...]
        y = _AllToAll.apply(y, self.group)  # now [N(head group), B, s, h/N, D]
        return y.permute(1, 2, 0, 3, 4).reshape(b, s, -1)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        heads = q.shape[2]
        out = self.inner(self._seq_to_heads(q), self._seq_to_heads(k), self._seq_to_heads(v))
        return self._heads_to_seq(out, heads)


class TokenSharding:
    """What the DiT asks of context parallelism: its share of the tokens, and the whole output."""

    def __init__(self, group):
        self.group = group
        self.rank, self.size = dist.get_rank(group), dist.get_world_size(group)

    def check(self, num_tokens: int) -> None:
        if num_tokens % self.size:
            raise BadInputError(
                f"context-parallel size {self.size} must divide the {num_tokens} video tokens of this latent"
            )

    def local_range(self, num_tokens: int) -> Tuple[int, int]:
        share = num_tokens // self.size
        return self.rank * share, (self.rank + 1) * share

    def shard(self, hidden: torch.Tensor, rope: Tuple[torch.Tensor, torch.Tensor], extra_pos: Optional[torch.Tensor]):
        """hidden [B, S, D], rope (cos, sin) [S, hd], extra_pos [S, D] -> this rank's slices."""
        self.check(hidden.shape[1])
        lo, hi = self.local_range(hidden.shape[1])
        rope = (rope[0][lo:hi], rope[1][lo:hi])
        return hidden[:, lo:hi], rope, extra_pos[lo:hi] if extra_pos is not None else None

    def gather(self, out: torch.Tensor) -> torch.Tensor:
        return _GatherTokens.apply(out, self.group)


def apply_context_parallel(model: nn.Module, group) -> nn.Module:
    """Make `model` (a CosmosDiT) run context-parallel over `group`. A group of one is a no-op."""
    size = dist.get_world_size(group)
    if size == 1:
        return model
    heads = model.config.num_attention_heads
    for layer in model.layers:
        attn = layer.self_attention
        core = attn.core_attention
        if hasattr(core, "set_context_parallel_group"):  # Transformer Engine's DotProductAttention
            ranks = dist.get_process_group_ranks(group)
            comm = "a2a" if heads % size == 0 else "p2p"
            core.set_context_parallel_group(group, ranks, torch.cuda.Stream(), comm)
        else:
            if heads % size:
                raise BadInputError(f"context-parallel size {size} must divide the {heads} attention heads")
            attn.core_attention = UlyssesAttention(core, group)
    model.token_sharding = TokenSharding(group)
    return model
