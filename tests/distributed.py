"""Run a function in several CPU processes joined by a gloo process group (what torchrun does)."""

import os
import socket
import traceback

import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world_size, port, fn, args, errors):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        fn(rank, world_size, *args)
    except BaseException:
        errors.put((rank, traceback.format_exc()))
        raise
    finally:
        dist.destroy_process_group()


def run_ranks(fn, world_size: int, *args) -> None:
    """fn(rank, world_size, *args) in `world_size` processes; re-raises the first rank's failure."""
    ctx = mp.get_context("spawn")
    errors = ctx.SimpleQueue()
    procs = mp.start_processes(_entry, args=(world_size, free_port(), fn, args, errors), nprocs=world_size,
                               start_method="spawn", join=False)
    try:
        while not procs.join():
            pass
    except Exception:
        if not errors.empty():
            rank, tb = errors.get()
            raise AssertionError(f"rank {rank} failed:\n{tb}") from None
        raise
