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
from ..models.dit import with_condition_mask_channel
from ..models.lora import LoraSettings, apply_lora
from ..parallel import parallelize_dit
from .data import data_parallel_position


def scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    """`x` itself, with the gradient that flows back through it multiplied by `factor`."""
    return x.detach() + (x - x.detach()) * factor


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
        activation_offload: bool = False,
        seed: int = 1234,
        max_condition_frames: int = 4,
        init_from: Optional[str] = None,
        lora: Optional[LoraSettings] = None,
        base_dtype: torch.dtype = torch.float32,
        build: bool = True,
    ):
        """`init_from`: base weights (any checkpoint layout load_dit reads); None starts from random
        weights drawn from `seed`. `lora`: train adapters only, on a frozen base held in
        `base_dtype`. `build` False leaves the DiT to ``configure_model`` (a sharded run builds it
        there, on the meta device, and rank 0 alone reads the base weights). A Video2World `config`
        gives each sample's first 1 to `max_condition_frames` latent frames (never all) as the
        condition; it may start from a Text2World checkpoint (the mask channel's inputs start at zero)."""
        super().__init__()
        self.config = config  # what checkpoints record (and store the weights in)
        # float32 parameters: Lightning's bf16-mixed precision computes in bf16 under autocast while
        # the optimizer updates float32 weights, as Megatron's float32 main parameters do (a sharded
        # run does the same through FSDP2's mixed precision)
        self.logvar = LogVarHead() if loss_add_logvar else None
        self.init_from, self.lora, self.base_dtype = init_from, lora, base_dtype
        self.activation_checkpointing, self.activation_offload = activation_checkpointing, activation_offload
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, tuple(betas), eps
        self.text_dropout, self.p_mean, self.p_std, self.seed = text_dropout, p_mean, p_std, seed
        if max_condition_frames < 1:
            raise BadInputError(f"diffusion.max_condition_frames must be at least 1; got {max_condition_frames}")
        self.max_condition_frames = max_condition_frames
        self._t_last: Optional[float] = None
        self._cp_size = 1
        if lora is not None:
            self.strict_loading = False  # a checkpoint holds the adapters; the base comes from init_from
        self.dit: Optional[CosmosDiT] = None
        if build:
            self.dit = self._build()

    # -- weights -------------------------------------------------------------------------------
    def _base_dit(self) -> CosmosDiT:
        """The DiT with its starting weights (float32, or `base_dtype` under LoRA), on the CPU."""
        dtype = self.base_dtype if self.lora is not None else torch.float32
        if self.init_from:
            return self._load_base(self.init_from, dtype)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)  # from-scratch runs start from the same weights every time
            return CosmosDiT(dataclasses.replace(self.config, params_dtype=dtype, bf16=dtype == torch.bfloat16))

    def _build(self) -> CosmosDiT:
        dit = self._base_dit()
        if self.lora is not None:
            apply_lora(dit, self.lora, base=self.init_from, seed=self.seed)
        return parallelize_dit(dit, activation_checkpointing=self.activation_checkpointing,
                               activation_offload=self.activation_offload)

    def _load_base(self, path: str, dtype: torch.dtype) -> CosmosDiT:
        """The DiT from a checkpoint, and a NeMo checkpoint's trained log-variance head."""
        info = inspect_checkpoint(path)
        base_config = self.config
        if self.config.condition_mask_channel:
            from ..presets import MODELS

            recorded = info.config or (MODELS[info.model].dit_config() if info.model in MODELS else None)
            if recorded is not None and not recorded.condition_mask_channel:
                base_config = None  # a Text2World start for a Video2World run: widened below
            elif recorded is None:  # the checkpoint does not say: its weights may be Text2World's too
                try:
                    return self._load_base_as(info, base_config, dtype)
                except BadInputError as e:
                    try:
                        return self._load_base_as(info, dataclasses.replace(base_config, condition_mask_channel=False),
                                                  dtype)
                    except BadInputError:
                        raise e from None
        return self._load_base_as(info, base_config, dtype)

    def _load_base_as(self, info, base_config: Optional[CosmosDiTConfig], dtype: torch.dtype) -> CosmosDiT:
        dit = load_dit(info, base_config, dtype=dtype)
        if self.config.condition_mask_channel and not dit.config.condition_mask_channel:
            if self.lora is not None:  # LoRA freezes the patch embedding: the mask would stay unread
                raise BadInputError(f"{info.path} holds a Text2World DiT: a Video2World LoRA run needs a "
                                    "Video2World base (full fine-tuning can start from Text2World weights)")
            dit = with_condition_mask_channel(dit)
        c = dit.config
        if c.condition_mask_channel and not self.config.condition_mask_channel:
            raise BadInputError(f"{info.path} holds a Video2World DiT; this run's model is Text2World")
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

    def configure_model(self) -> None:
        """Lightning's hook, run once the processes are up: a sharded run (CosmosFSDPStrategy) builds
        the DiT here, shards it, and fills the shards from rank 0's copy of the starting weights."""
        plan = getattr(self.trainer.strategy, "sharding", None)
        if plan is None:
            if self.dit is None:
                self.dit = self._build()
            return
        if self.dit is not None:
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
        from torch.distributed.fsdp import fully_shard

        from ..parallel.distributed import on_rank0
        from ..parallel.parallelize import fsdp_policies, set_gradient_divide_factor

        if self.lora is not None or self.activation_offload:
            raise BadInputError("a sharded run trains the whole model, without activation offload: LoRA and "
                                "activation_offload take a data-parallel strategy")
        # a resumed run takes every value from its checkpoint: nothing to read or draw here
        resuming = self.trainer.ckpt_path is not None
        full: Dict[str, torch.Tensor] = {}

        def starting_weights():
            dit = self._base_dit()
            full.update({f"dit.{k}": v for k, v in dit.state_dict().items()})
            if self.logvar is not None:
                full.update({f"logvar.{k}": v for k, v in self.logvar.state_dict().items()})
            return self.config  # loading may have switched it to the fused AdaLN

        if not resuming:
            self.config = on_rank0(starting_weights)
        with torch.device("meta"):
            self.dit = CosmosDiT(dataclasses.replace(self.config, params_dtype=torch.float32, bf16=False))
        parallelize_dit(self.dit, cp_group=plan.cp_group, activation_checkpointing=self.activation_checkpointing,
                        fsdp_mesh=plan.mesh, fsdp_param_dtype=plan.param_dtype, fsdp_cpu_offload=plan.cpu_offload,
                        gradient_divide_factor=plan.dp_size)
        if self.logvar is not None:  # float32 throughout; tiny. On meta too: all of it materialises at once, below
            with torch.device("meta"):
                self.logvar = LogVarHead()
            fully_shard(self.logvar, mesh=plan.mesh, **fsdp_policies(None, plan.cpu_offload))
            set_gradient_divide_factor(self.logvar, plan.dp_size, plan.mesh)
        self.to_empty(device=plan.device)
        if not resuming:
            set_model_state_dict(self, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
        self._cp_size = plan.cp_size

    # -- training ------------------------------------------------------------------------------
    def _draws(self, x0: torch.Tensor) -> Dict[str, torch.Tensor]:
        """This step's micro-batch draws: "sigma" [B], "noise" like x0, "keep" (the text) [B]; for
        Video2World also "frames" (conditioned latent frames) [B] and "augment" (their noise) like
        x0. Each sample's draws depend on (seed, its place in the global sample stream) only: a
        resumed run draws exactly what the interrupted one would have, on any number of processes,
        and the context-parallel ranks of one sample draw the same."""
        rank, size = data_parallel_position(self.trainer)
        b, t = x0.shape[0], x0.shape[2]
        first = (self.global_step * size + rank) * b
        video2world = self.config.condition_mask_channel
        if video2world and t < 2:
            raise BadInputError(f"Video2World post-training needs clips of at least 2 latent frames; got {t}")
        draws = {k: [] for k in ("sigma", "noise", "keep", *(("frames", "augment") if video2world else ()))}
        for j in range(b):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + first + j)
            draws["sigma"].append(training_sigma(1, g, self.p_mean, self.p_std))
            draws["noise"].append(torch.randn(x0.shape[1:], generator=g))
            draws["keep"].append(torch.rand(1, generator=g) >= self.text_dropout)
            if video2world:  # NeMo's num_condition_t = randint(1, 4), here also below the clip's length
                top = min(self.max_condition_frames, t - 1)
                draws["frames"].append(torch.randint(1, top + 1, (1,), generator=g))
                draws["augment"].append(torch.randn(x0.shape[1:], generator=g))
        return {k: torch.cat(v) if v[0].dim() == 1 else torch.stack(v) for k, v in draws.items()}

    def training_step(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x0, text, fps = batch["x0"], batch["text"], batch["fps"]
        b = x0.shape[0]
        draws = {k: v.to(x0.device) for k, v in self._draws(x0).items()}
        sigma, noise, keep = draws["sigma"], draws["noise"], draws["keep"]
        frames, augment = draws.get("frames"), draws.get("augment")
        text = text * keep.view(-1, 1, 1).to(text.dtype)  # dropped text is the zero embedding, as at sampling
        logvar = self.logvar
        if logvar is not None and self._cp_size > 1:
            # every context-parallel rank computes the whole loss; the DiT's gradient is split among
            # them by the token exchange, the log-variance head's must be too
            head, factor = self.logvar, 1.0 / self._cp_size
            logvar = lambda c: scale_grad(head(c), factor)  # noqa: E731
        # RoPE takes one frame rate per forward: samples at different rates go one by one
        groups = [torch.arange(b)] if bool((fps == fps[0]).all()) else [torch.tensor([i]) for i in range(b)]
        loss = sum(
            edm_loss(self.dit, x0[i], text[i], sigma[i], noise[i], fps=float(fps[i[0]]), logvar=logvar,
                     sigma_data=SIGMA_DATA, condition_frames=None if frames is None else frames[i],
                     augment_noise=None if augment is None else augment[i]) * len(i)
            for i in groups
        ) / b
        self.log("loss", loss, prog_bar=True, on_step=True, batch_size=b, sync_dist=self.trainer.world_size > 1)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._t_last is not None:
            samples = batch["x0"].shape[0] * data_parallel_position(self.trainer)[1]
            self.log("samples/s", samples / (now - self._t_last), prog_bar=True, on_step=True, batch_size=1)
        self._t_last = now

    def configure_optimizers(self):
        trainable = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(trainable, lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay)
