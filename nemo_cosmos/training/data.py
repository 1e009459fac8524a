"""The post-training dataset that ``recipes.prepare_data`` writes (NVIDIA's cached layout), and a
sampler that makes the sample order a function of the training step, so a resumed run sees
exactly the batches the interrupted one would have seen."""

from __future__ import annotations

import glob
import json
import os
from typing import Dict, Iterator

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..diffusion import SIGMA_DATA
from ..utils.errors import first_line


class CachedVideoDataset(Dataset):
    """``{i}.video_latent.pth``, ``{i}.t5_text_embeddings.pth`` and ``{i}.info.json`` per sample
    (a sample without its info.json, the file written last, is incomplete and not used)."""

    def __init__(self, path: str):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"dataset folder not found: {path}")
        ids = [os.path.basename(f)[: -len(".info.json")] for f in glob.glob(os.path.join(path, "*.info.json"))]
        self.ids = sorted(ids, key=lambda s: (len(s), s))
        if not self.ids:
            raise FileNotFoundError(f"no prepared samples (*.info.json) in {path}; run recipes.prepare_data first")
        self.path = path

    def __len__(self) -> int:
        return len(self.ids)

    def _load(self, i: int, name: str) -> torch.Tensor:
        f = os.path.join(self.path, f"{self.ids[i]}.{name}.pth")
        try:
            return torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"cannot read {f}: {first_line(e)}") from None

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        with open(os.path.join(self.path, f"{self.ids[i]}.info.json")) as f:
            info = json.load(f)
        return {
            # the DiT works on sigma_data-scaled latents (the tokenizer's output is unit variance)
            "x0": self._load(i, "video_latent").float() * SIGMA_DATA,
            "text": self._load(i, "t5_text_embeddings").float(),
            "fps": torch.tensor(float(info.get("fps", 24.0))),
        }


class StepSampler(Sampler):
    """Dataset indices for training steps start..end-1 of this data-parallel rank. Position p of the
    global sample stream (step * global_batch + rank * micro_batch + j) is sample perm_e[p % n]
    with perm_e a permutation seeded by (seed, epoch e = p // n)."""

    def __init__(self, num_samples: int, micro_batch: int, start_step: int, end_step: int,
                 rank: int = 0, world: int = 1, seed: int = 0):
        self.n, self.micro, self.rank, self.world, self.seed = num_samples, micro_batch, rank, world, seed
        self.start, self.end = start_step, end_step
        self._perms: Dict[int, torch.Tensor] = {}

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


class CachedVideoDataModule(pl.LightningDataModule):
    """A prepared folder as a Lightning data module; batches follow the training step (StepSampler)."""

    def __init__(self, path: str, micro_batch_size: int = 1, num_workers: int = 2, seed: int = 0):
        super().__init__()
        self.micro, self.num_workers, self.seed = micro_batch_size, num_workers, seed
        self.dataset = CachedVideoDataset(path)

    def train_dataloader(self) -> DataLoader:
        t = self.trainer  # called after a resumed run's step counter is restored
        sampler = StepSampler(len(self.dataset), self.micro, t.global_step, t.max_steps, t.global_rank, t.world_size,
                              self.seed)
        return DataLoader(self.dataset, batch_size=self.micro, sampler=sampler, num_workers=self.num_workers)
