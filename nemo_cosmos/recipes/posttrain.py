"""General post-training: continue training a Cosmos DiT on a prepared dataset of one subject.

    python -m nemo_cosmos.recipes.posttrain data.path=datasets/teal_robot trainer.max_steps=1000
    torchrun --nproc_per_node=8 -m nemo_cosmos.recipes.posttrain trainer.devices=8 data.path=...

``--recipe`` picks the defaults (``cosmos_diffusion_7b_text2world_finetune``, ``..._14b_...``,
``cosmos_tiny_text2world_finetune``); any field is overridden as ``section.field=value``
(nemo_cosmos/training/config.py lists them). Checkpoints go to
``<log_dir>/<name>/default/<YYYY-MM-DD_HH-MM-SS>/checkpoints/epoch=E-step=S/`` in NeMo's format; a
new run of the same name resumes from the newest one. TensorBoard logs (and metrics.csv) go to the
run folder, and to Weights & Biases when WANDB_API_KEY is set. Then:

    python -m nemo_cosmos.recipes.infer --nemo_checkpoint <log_dir>/<name> --subject_name "teal robot" ...
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import torch

from ..checkpoint import latest_experiment_checkpoint
from ..training import (CachedVideoDataModule, CosmosDDPStrategy, CosmosDiffusionModule, CosmosSingleDeviceStrategy,
                        NeMoCheckpointIO, recipe)
from .models import model_entry, published_dit_checkpoint

log = logging.getLogger("nemo_cosmos")
EXIT_BAD_INPUT = 2


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


def _strategy(cfg):
    if cfg.trainer.devices > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return CosmosDDPStrategy(process_group_backend="nccl" if torch.cuda.is_available() else "gloo")
    use_cuda = cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return CosmosSingleDeviceStrategy(device=torch.device("cuda", 0) if use_cuda else torch.device("cpu"))


def build(cfg):
    """(trainer, module, datamodule, checkpoint to resume from or None) for a post-training config."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    entry = model_entry(cfg.model.name)
    dit_cfg = entry.dit()
    if not cfg.data.path:
        raise ValueError("data.path is not set: give the folder written by recipes.prepare_data")
    datamodule = CachedVideoDataModule(cfg.data.path, cfg.data.micro_batch_size, cfg.data.num_workers,
                                       cfg.diffusion.seed)
    root = os.path.join(cfg.log.log_dir, cfg.log.name)
    resume_from = latest_experiment_checkpoint(root) if cfg.resume and os.path.isdir(root) else None

    module = CosmosDiffusionModule(
        dit_cfg, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
        text_dropout=cfg.diffusion.text_dropout, p_mean=cfg.diffusion.p_mean, p_std=cfg.diffusion.p_std,
        loss_add_logvar=cfg.diffusion.loss_add_logvar, activation_checkpointing=cfg.model.activation_checkpointing,
        seed=cfg.diffusion.seed,
    )
    if resume_from:
        log.info("resuming from %s", resume_from)
    elif cfg.model.init_from != "none":
        if cfg.model.init_from:
            base = cfg.model.init_from
        elif entry.repo is None:
            raise ValueError(f"model {cfg.model.name} has no published weights: set model.init_from")
        else:
            base = published_dit_checkpoint(entry.repo, f"{cfg.model.name} weights")[1]
        log.info("base weights: %s", base)
        module.load_base_weights(base)

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
        plugins=[NeMoCheckpointIO(dit_cfg)], callbacks=[checkpoints], logger=_loggers(run_dir, cfg),
        log_every_n_steps=cfg.trainer.log_every_n_steps, gradient_clip_val=cfg.optim.grad_clip,
        use_distributed_sampler=False, limit_val_batches=0, num_sanity_val_steps=0, enable_model_summary=False,
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


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="[nemo_cosmos] %(message)s")
    p = argparse.ArgumentParser(prog="python -m nemo_cosmos.recipes.posttrain", description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", "--factory", default="cosmos_diffusion_7b_text2world_finetune")
    p.add_argument("overrides", nargs="*", help="section.field=value")
    args = p.parse_args(argv)
    try:
        train(recipe(args.recipe, args.overrides))
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
