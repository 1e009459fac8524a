"""The post-training dataset (NVIDIA's cached layout): its writer (``write_sample``, used by
``recipes.prepare_data`` and the demo trainer), its reader, and a sampler that makes the sample order
a function of the training step, so a resumed run sees exactly the batches the interrupted one would
have seen."""

from __future__ import annotations

import glob
import json
import os
from typing import Callable, Dict, Iterator, Tuple, Union

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..diffusion import SIGMA_DATA
from ..errors import BadInputError, MissingFileError, first_line

LATENT, TEXT, TEXT_MASK, INFO = ".video_latent.pth", ".t5_text_embeddings.pth", ".t5_text_mask.pth", ".info.json"


def write_sample(base: str, latent: torch.Tensor, text: torch.Tensor, info: dict) -> None:
    """One sample at `base` (a path without suffix): the normalised tokenizer latent [16, T', H', W']
    (not yet x sigma_data), the T5 embedding [512, D] and its mask, then info.json, written last: it
    marks the sample complete."""
    from ..utils.io import write_json, write_tensor

    write_tensor(base + LATENT, latent)
    write_tensor(base + TEXT, text)
    write_tensor(base + TEXT_MASK, torch.ones(text.shape[0], dtype=text.dtype))
    write_json(base + INFO, info)


def sample_ids(path: str) -> list:
    """The complete samples in a dataset folder, in order."""
    ids = [os.path.basename(f)[: -len(INFO)] for f in glob.glob(os.path.join(path, "*" + INFO))]
    return sorted(ids, key=lambda s: (len(s), s))


class CachedVideoDataset(Dataset):
    """``{i}.video_latent.pth``, ``{i}.t5_text_embeddings.pth`` and ``{i}.info.json`` per sample
    (a sample without its info.json, the file written last, is incomplete and not used)."""

    def __init__(self, path: str):
        if not os.path.isdir(path):
            raise MissingFileError(f"dataset folder not found: {path}")
        self.ids = sample_ids(path)
        if not self.ids:
            raise MissingFileError(f"no prepared samples (*{INFO}) in {path}; run recipes.prepare_data first")
        self.path = path

    def __len__(self) -> int:
        return len(self.ids)

    def _load(self, i: int, suffix: str) -> torch.Tensor:
        f = os.path.join(self.path, self.ids[i] + suffix)
        try:
            t = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:
            raise BadInputError(f"cannot read {f}: {first_line(e)}") from None
        if not isinstance(t, torch.Tensor):
            raise BadInputError(f"{f} does not hold a tensor")
        return t

    def info(self, i: int) -> dict:
        f = os.path.join(self.path, self.ids[i] + INFO)
        try:
            with open(f, encoding="utf-8") as fh:
                return json.load(fh)
        except (OSError, ValueError) as e:
            raise BadInputError(f"cannot read {f}: {first_line(e)}") from None

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        return {
            # the DiT works on sigma_data-scaled latents (the tokenizer's output is unit variance)
            "x0": self._load(i, LATENT).float() * SIGMA_DATA,
            "text": self._load(i, TEXT).float(),
            "fps": torch.tensor(float(self.info(i).get("fps", 24.0))),
        }


class StepSampler(Sampler):
    """Dataset indices for training steps start..end-1 of this data-parallel rank. Position p of the
    global sample stream (step * global_batch + rank * micro_batch + j) is sample perm_e[p % n]
    with perm_e a permutation seeded by (seed, epoch e = p // n). `start_step` may be a function
    (the trainer's current step): each pass over the sampler then starts where training is, which is
    what a run resumed in the middle of Lightning's "epoch" needs when that epoch ends early and the
    loader is iterated again."""

    def __init__(self, num_samples: int, micro_batch: int, start_step: Union[int, Callable[[], int]], end_step: int,
                 rank: int = 0, world: int = 1, seed: int = 0):
        self.n, self.micro, self.rank, self.world, self.seed = num_samples, micro_batch, rank, world, seed
        self._start, self.end = start_step, end_step
        self._perms: Dict[int, torch.Tensor] = {}

    @property
    def start(self) -> int:
        return self._start() if callable(self._start) else self._start

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))}
        return self._perms[epoch]

    def __len__(self) -> int:
        return max(0, self.end - self.start) * self.micro

    def __iter__(self) -> Iterator[int]:
        global_batch = self.micro * self.world
        for step in range(self.start, self.end):
            for j in range(self.micro):
                p = step * global_batch + self.rank * self.micro + j
                yield int(self._perm(p // self.n)[p % self.n])


def data_parallel_position(trainer) -> Tuple[int, int]:
    """(data-parallel rank, data-parallel size): the processes' own, unless context parallelism
    groups several processes around one sample stream."""
    plan = getattr(trainer.strategy, "sharding", None)
    if plan is not None:
        return plan.dp_rank, plan.dp_size
    return trainer.global_rank, trainer.world_size


class CachedVideoDataModule(pl.LightningDataModule):
    """A prepared folder as a Lightning data module; batches follow the training step (StepSampler)."""

    def __init__(self, path: str, micro_batch_size: int = 1, num_workers: int = 2, seed: int = 0):
        super().__init__()
        self.micro, self.num_workers, self.seed = micro_batch_size, num_workers, seed
        self.dataset = CachedVideoDataset(path)

    def train_dataloader(self) -> DataLoader:
        t = self.trainer  # called after a resumed run's step counter is restored
        rank, size = data_parallel_position(t)
        sampler = StepSampler(len(self.dataset), self.micro, lambda: t.global_step, t.max_steps, rank, size, self.seed)
        return DataLoader(self.dataset, batch_size=self.micro, sampler=sampler, num_workers=self.num_workers)
