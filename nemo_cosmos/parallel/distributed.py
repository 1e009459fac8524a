"""Process groups for a run started by torchrun: torch.distributed from its environment, and
Megatron-Core's parallel_state with the requested context-parallel size."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(context_parallel_size: int) -> torch.device:
    """Join the torchrun job (NCCL on GPUs, gloo on CPUs) and set up Megatron-Core's groups; returns
    this rank's device. A single process without torchrun is a job of one."""
    use_cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if "MASTER_ADDR" in os.environ:
            dist.init_process_group("nccl" if use_cuda else "gloo")
        else:
            dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(context_parallel_size=context_parallel_size)
    return device


def context_parallel_group():
    from megatron.core import parallel_state

    return parallel_state.get_context_parallel_group()


def shutdown() -> None:
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


def on_rank0(work):
    """`work()` on rank 0 of the job, its (picklable, small) result on every rank. If it fails,
    every rank fails at once instead of waiting for rank 0 in its next collective: rank 0 with its
    own exception, the others with one of the same kind (a user error stays a user error, an OSError
    an OSError), naming rank 0's."""
    from ..errors import BadInputError, CosmosUserError, first_line

    result, failure = None, None
    if dist.get_rank() == 0:
        try:
            result = work()
        except Exception as e:
            failure = e
    kind = None if failure is None else ("user" if isinstance(failure, CosmosUserError)
                                         else "os" if isinstance(failure, OSError) else "bug")
    shared = [result, kind, None if failure is None else first_line(failure)]
    dist.broadcast_object_list(shared, src=0)
    if failure is not None:
        raise failure
    if shared[1] is not None:
        raise {"user": BadInputError, "os": OSError, "bug": RuntimeError}[shared[1]](f"rank 0: {shared[2]}")
    return shared[0]
