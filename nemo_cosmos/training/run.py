"""A post-training run from a recipe config (training/config.py): the Lightning module, data,
strategy, loggers and checkpoints assembled (``build``) and run (``train``). The command line
(recipes/posttrain.py) and the demo trainer are thin shells over these."""

from __future__ import annotations

import logging
import os
import time

import torch

from ..checkpoint import latest_experiment_checkpoint
from ..errors import BadInputError
from ..parallel import world_size_from_env
from .checkpoint_io import CosmosDDPStrategy, CosmosSingleDeviceStrategy, NeMoCheckpointIO
from .data import CachedVideoDataModule
from .module import CosmosDiffusionModule

log = logging.getLogger("nemo_cosmos")


def _loggers(run_dir: str, cfg):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    loggers = [TensorBoardLogger(save_dir=run_dir, name="", version=""), CSVLogger(save_dir=run_dir, name="", version="")]
    if os.environ.get("WANDB_API_KEY"):
        try:
            from lightning.pytorch.loggers import WandbLogger

            loggers.append(WandbLogger(project=cfg.log.wandb_project, name=cfg.log.name, save_dir=run_dir))
        except (ImportError, ModuleNotFoundError):
            log.warning("WANDB_API_KEY is set but wandb is not installed (pip install wandb): TensorBoard only")
    return loggers


def _step_bar():
    """A progress bar over training steps. The run is step-based (StepSampler) and Lightning's
    "epoch" counter does not count passes over the data, so the bar shows step / max_steps."""
    from lightning.pytorch.callbacks import TQDMProgressBar

    class StepProgressBar(TQDMProgressBar):
        def on_train_epoch_start(self, trainer, *_):
            bar = self.train_progress_bar
            if bar.total != trainer.max_steps:
                bar.reset(total=trainer.max_steps)
                bar.n = trainer.global_step
                bar.set_description("training steps")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            bar = self.train_progress_bar
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()

        def on_train_epoch_end(self, trainer, pl_module):
            pass

        def get_metrics(self, trainer, pl_module):
            metrics = super().get_metrics(trainer, pl_module)
            metrics.pop("v_num", None)
            return metrics

    return StepProgressBar()


def _strategy(cfg):
    if cfg.trainer.devices > 1 or world_size_from_env() > 1:
        return CosmosDDPStrategy(process_group_backend="nccl" if torch.cuda.is_available() else "gloo")
    use_cuda = cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return CosmosSingleDeviceStrategy(device=torch.device("cuda", 0) if use_cuda else torch.device("cpu"))


def base_weights(cfg) -> str:
    """The checkpoint a run starts from: model.init_from (a path, or a model name for its published
    or built-in weights), else the weights of model.name (from the Hugging Face cache, downloaded if
    needed); "" for a random start."""
    from ..checkpoint.hub import download_command, ensure_local
    from ..presets import model_preset
    from ..sources import resolve_source

    from ..presets import MODELS

    if cfg.model.init_from == "none":
        return ""
    if cfg.model.init_from and cfg.model.init_from not in MODELS:
        return cfg.model.init_from
    name = cfg.model.init_from or cfg.model.name
    if not name:
        raise BadInputError("set model.name (a published model) or model.init_from (a checkpoint)")
    preset = model_preset(name)
    if preset.repo is None and preset.builtin_dir is None:
        raise BadInputError(f"model {cfg.model.name} has no published weights: set model.init_from")
    src = resolve_source(name)
    if src.dit_item is not None:
        src.adopt_downloads(ensure_local([src.dit_item], download_command(preset.name, False, False)))
    return src.checkpoint.path


def build(cfg):
    """(trainer, module, datamodule, checkpoint to resume from or None) for a post-training config."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from ..checkpoint import inspect_checkpoint
    from ..presets import model_preset

    if not cfg.data.path:
        raise BadInputError("data.path is not set: give the folder written by recipes.prepare_data")
    datamodule = CachedVideoDataModule(cfg.data.path, cfg.data.micro_batch_size, cfg.data.num_workers,
                                       cfg.diffusion.seed)
    root = os.path.join(cfg.log.log_dir, cfg.log.name)
    resume_from = latest_experiment_checkpoint(root) if cfg.resume and os.path.isdir(root) else None
    base = "" if resume_from else base_weights(cfg)
    if resume_from:
        log.info("resuming from %s", resume_from)
    elif base:
        log.info("base weights: %s", base)
    # the model: what the checkpoint records, else the named preset's
    info = inspect_checkpoint(resume_from or base) if (resume_from or base) else None
    name = cfg.model.name or (info.model if info else None)
    if info is not None and info.config is not None:
        dit_config = info.config
    elif name:
        dit_config = model_preset(name).dit_config()
    else:
        raise BadInputError("model.name is empty and model.init_from does not record its model: set one of them")

    module = CosmosDiffusionModule(
        dit_config, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, betas=tuple(cfg.optim.betas),
        eps=cfg.optim.eps, text_dropout=cfg.diffusion.text_dropout, p_mean=cfg.diffusion.p_mean,
        p_std=cfg.diffusion.p_std, loss_add_logvar=cfg.diffusion.loss_add_logvar,
        activation_checkpointing=cfg.model.activation_checkpointing, seed=cfg.diffusion.seed, init_from=base or None,
    )

    run_dir = os.path.join(root, "default", time.strftime("%Y-%m-%d_%H-%M-%S"))
    while os.path.exists(run_dir):  # a run in the same second: never write into another run's folder
        time.sleep(0.25)
        run_dir = os.path.join(root, "default", time.strftime("%Y-%m-%d_%H-%M-%S"))
    checkpoints = ModelCheckpoint(
        dirpath=os.path.join(run_dir, "checkpoints"), filename="{epoch}-{step}", monitor=None,
        every_n_train_steps=cfg.trainer.checkpoint_every_n_steps, save_top_k=cfg.trainer.save_top_k,
    )
    checkpoints.FILE_EXTENSION = ""  # a checkpoint is a folder
    trainer = pl.Trainer(
        max_steps=cfg.trainer.max_steps, max_epochs=-1, accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices, strategy=_strategy(cfg), precision=cfg.trainer.precision,
        plugins=[NeMoCheckpointIO(module.config, model=name)], callbacks=[checkpoints, _step_bar()],
        logger=_loggers(run_dir, cfg), log_every_n_steps=min(cfg.trainer.log_every_n_steps, cfg.trainer.max_steps),
        gradient_clip_val=cfg.optim.grad_clip, use_distributed_sampler=False, limit_val_batches=0,
        num_sanity_val_steps=0, enable_model_summary=False,
    )
    return trainer, module, datamodule, resume_from


def train(cfg) -> str:
    """Run post-training; returns the folder of the final checkpoint."""
    trainer, module, datamodule, resume_from = build(cfg)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
    folder = trainer.checkpoint_callback.dirpath
    saved = os.listdir(folder) if os.path.isdir(folder) else []
    if not any(name.endswith(f"-step={trainer.global_step}") for name in saved):
        # keep the steps after the last periodic checkpoint too
        trainer.save_checkpoint(os.path.join(folder, f"epoch={trainer.current_epoch}-step={trainer.global_step}"),
                                weights_only=False)
    latest = latest_experiment_checkpoint(os.path.join(cfg.log.log_dir, cfg.log.name))
    log.info("final checkpoint: %s", latest)
    return latest
