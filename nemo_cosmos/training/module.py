"""The Cosmos DiT as a Lightning module trained with the reference's EDM denoising loss.

Usable from any Lightning (or NeMo-style) training script:

    module = CosmosDiffusionModule(cosmos_7b_config(), lr=1e-6, init_from="nemo_experiments/...")
    trainer = lightning.Trainer(..., plugins=[NeMoCheckpointIO(config, model="...")],
                                strategy=CosmosSingleDeviceStrategy(device))
    trainer.fit(module, datamodule=CachedVideoDataModule(path))

(``nemo_cosmos.training.build`` assembles exactly this from a recipe; examples/nemo_style_training.py
does it by hand.)
"""

from __future__ import annotations

import dataclasses
import time
from typing import Dict, Optional, Tuple

import lightning.pytorch as pl
import torch

from ..checkpoint import inspect_checkpoint, load_dit
from ..checkpoint.locate import NEMO
from ..checkpoint.nemo_dist import read_nemo_extras
from ..diffusion import SIGMA_DATA, LogVarHead, edm_loss, training_sigma
from ..errors import BadInputError
from ..models import CosmosDiT
from ..models.config import CosmosDiTConfig
from ..parallel import parallelize_dit


class CosmosDiffusionModule(pl.LightningModule):
    def __init__(
        self,
        config: CosmosDiTConfig,
        lr: float = 1e-6,
        weight_decay: float = 0.0,
        betas: Tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        text_dropout: float = 0.2,
        p_mean: float = 0.0,
        p_std: float = 1.0,
        loss_add_logvar: bool = True,
        activation_checkpointing: bool = False,
        seed: int = 1234,
        init_from: Optional[str] = None,
    ):
        """`init_from`: base weights (any checkpoint layout load_dit reads); None starts from random
        weights drawn from `seed`."""
        super().__init__()
        self.config = config  # what checkpoints record (and store the weights in)
        # float32 parameters: Lightning's bf16-mixed precision computes in bf16 under autocast while
        # the optimizer updates float32 weights, as Megatron's float32 main parameters do
        self.logvar = LogVarHead() if loss_add_logvar else None
        if init_from:
            self.dit = self._load_base(init_from)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)  # from-scratch runs start from the same weights every time
                self.dit = CosmosDiT(dataclasses.replace(config, params_dtype=torch.float32, bf16=False))
        parallelize_dit(self.dit, activation_checkpointing=activation_checkpointing)
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, tuple(betas), eps
        self.text_dropout, self.p_mean, self.p_std, self.seed = text_dropout, p_mean, p_std, seed
        self._t_last: Optional[float] = None

    # -- weights -------------------------------------------------------------------------------
    def _load_base(self, path: str) -> CosmosDiT:
        """The DiT from a checkpoint (float32), and a NeMo checkpoint's trained log-variance head."""
        info = inspect_checkpoint(path)
        dit = load_dit(info, self.config, dtype=torch.float32)
        c = dit.config
        if (c.num_layers, c.hidden_size) != (self.config.num_layers, self.config.hidden_size):
            raise BadInputError(
                f"{info.path} holds a {c.num_layers}-layer, width-{c.hidden_size} DiT; this run's model is "
                f"{self.config.num_layers} layers of width {self.config.hidden_size}")
        # a NeMo-trained checkpoint may need the fused AdaLN: train (and save) in its form
        self.config = dataclasses.replace(self.config, adaln_fused=c.adaln_fused)
        if info.kind == NEMO and self.logvar is not None:
            extras = read_nemo_extras(info.path)
            if all(n in extras for n in LogVarHead.NEMO_NAMES.values()):
                self.logvar.load_state_dict({ours: extras[theirs] for ours, theirs in LogVarHead.NEMO_NAMES.items()})
        return dit

    # -- training ------------------------------------------------------------------------------
    def _generator(self) -> torch.Generator:
        # noise levels, noise and text dropout depend on (seed, step, rank) only: a resumed run
        # draws exactly what the interrupted one would have drawn
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.global_step * 1009 + self.global_rank)

    def training_step(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x0, text, fps = batch["x0"], batch["text"], batch["fps"]
        b = x0.shape[0]
        g = self._generator()
        sigma = training_sigma(b, g, self.p_mean, self.p_std).to(x0.device)
        noise = torch.randn(x0.shape, generator=g).to(x0.device)
        keep = (torch.rand(b, generator=g) >= self.text_dropout).to(text.device)
        text = text * keep.view(-1, 1, 1)  # dropped text is the zero embedding, as at sampling
        # RoPE takes one frame rate per forward: samples at different rates go one by one
        groups = [torch.arange(b)] if bool((fps == fps[0]).all()) else [torch.tensor([i]) for i in range(b)]
        loss = sum(
            edm_loss(self.dit, x0[i], text[i], sigma[i], noise[i], fps=float(fps[i[0]]), logvar=self.logvar,
                     sigma_data=SIGMA_DATA) * len(i)
            for i in groups
        ) / b
        self.log("loss", loss, prog_bar=True, on_step=True, batch_size=b)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._t_last is not None:
            samples = batch["x0"].shape[0] * self.trainer.world_size
            self.log("samples/s", samples / (now - self._t_last), prog_bar=True, on_step=True, batch_size=1)
        self._t_last = now

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr, betas=self.betas, eps=self.eps,
                                 weight_decay=self.weight_decay)
