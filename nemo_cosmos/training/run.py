"""A post-training run from a recipe config (training/config.py): the Lightning module, data,
strategy, loggers and checkpoints assembled (``build``) and run (``train``). The command line
(recipes/posttrain.py) and the demo trainer are thin shells over these."""

from __future__ import annotations

import logging
import dataclasses
import os
import time
from typing import Optional

import torch

from ..checkpoint import latest_experiment_checkpoint
from ..errors import BadInputError
from ..parallel import world_size_from_env
from ..models.lora import LoraSettings
from .checkpoint_io import CosmosDDPStrategy, CosmosSingleDeviceStrategy, NeMoCheckpointIO, train_state_layout
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


def processes(cfg) -> int:
    """How many processes the run has: trainer.devices, or (0) as many as torchrun started."""
    world = world_size_from_env()
    devices = cfg.trainer.devices or world
    if world > 1 and devices != world:
        raise BadInputError(f"trainer.devices={devices} but torchrun started {world} processes: make them equal "
                            "(or leave trainer.devices out)")
    if devices % cfg.trainer.context_parallel_size:
        raise BadInputError(f"trainer.context_parallel_size {cfg.trainer.context_parallel_size} must divide the "
                            f"{devices} processes")
    return devices


def nodes(devices: int) -> tuple:
    """(processes per machine, machines) of a run over `devices` processes started by torchrun."""
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", devices))
    if devices % per_node:
        raise BadInputError(f"{devices} processes do not split evenly over machines of {per_node}")
    return per_node, devices // per_node


def _strategy(cfg, devices: int):
    """(Lightning strategy, Lightning precision) for the config."""
    use_cuda = cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    if cfg.trainer.strategy == "fsdp":
        from .fsdp import CosmosFSDPStrategy

        # FSDP2's own mixed precision (bf16 compute, float32 weights and reduction) instead of autocast
        bf16 = cfg.trainer.precision.startswith("bf16")
        if use_cuda and cfg.model.cpu_offload:  # offloaded gradients are CPU tensors: clipping reduces them with gloo
            backend = "cuda:nccl,cpu:gloo"
        return CosmosFSDPStrategy(cfg.trainer.context_parallel_size, torch.bfloat16 if bf16 else None,
                                  cfg.model.cpu_offload, process_group_backend=backend), "32-true"
    if devices > 1:
        return CosmosDDPStrategy(process_group_backend=backend), cfg.trainer.precision
    return (CosmosSingleDeviceStrategy(device=torch.device("cuda", 0) if use_cuda else torch.device("cpu")),
            cfg.trainer.precision)


def layout(cfg, devices: int) -> dict:
    """What a resumed run must share with the run it continues."""
    return {"strategy": cfg.trainer.strategy,
            "lora": lora_settings(cfg).to_dict() if cfg.lora.enabled else None,
            "global_batch": cfg.data.micro_batch_size * devices // cfg.trainer.context_parallel_size}


def lora_settings(cfg) -> LoraSettings:
    return LoraSettings(cfg.lora.rank, float(cfg.lora.alpha), float(cfg.lora.dropout), tuple(cfg.lora.target_modules))


def _check_resumable(checkpoint: str, mine: dict) -> None:
    saved = train_state_layout(checkpoint)
    if saved.get("strategy", "ddp") != mine["strategy"]:
        raise BadInputError(f"{checkpoint} was written by a trainer.strategy={saved.get('strategy', 'ddp')} run; this one "
                            f"is {mine['strategy']}: use the same strategy, or another log.name for a new run")
    if saved.get("lora") != mine["lora"]:
        def says(lora):
            return "no LoRA" if not lora else f"LoRA rank {lora['rank']}, alpha {lora['alpha']}, targets {lora['target_modules']}"
        raise BadInputError(f"{checkpoint} was written with {says(saved.get('lora'))}; this run has {says(mine['lora'])}: "
                            "use the same settings, or another log.name for a new run")
    if saved.get("global_batch", mine["global_batch"]) != mine["global_batch"]:
        log.warning("the global batch changes from %s to %s samples per step: the run continues, but not the curve "
                    "the old layout would have drawn (set data.micro_batch_size to keep it)", saved["global_batch"],
                    mine["global_batch"])


def _tokens(datamodule, config) -> int:
    """Latent tokens of one training sample (the first), for the memory estimate."""
    x0 = datamodule.dataset[0]["x0"]
    pt, ph, pw = config.patch_size
    return (x0.shape[1] // pt) * (x0.shape[2] // ph) * (x0.shape[3] // pw)


def base_weights(cfg) -> str:
    """The checkpoint a run starts from: model.init_from (a path, or a model name for its published
    or built-in weights), else the weights of model.name (from the Hugging Face cache, downloaded if
    needed); "" for a random start."""
    from ..checkpoint.hub import download_command, ensure_local
    from ..presets import MODELS, model_preset
    from ..sources import resolve_source

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
    """(trainer, module, datamodule, checkpoint to resume from or None) for a post-training config.
    Everything that needs no model is checked first: the data, a resume's layout, whether the run
    fits its GPUs (preflight.py); then the weights are fetched and the model is built."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from ..parallel.context_parallel import check_split
    from .preflight import check_fits

    if not cfg.data.path:
        raise BadInputError("data.path is not set: give the folder written by recipes.prepare_data")
    devices = processes(cfg)
    if os.path.exists(cfg.log.log_dir) and not os.path.isdir(cfg.log.log_dir):
        raise BadInputError(f"log.log_dir {cfg.log.log_dir} is a file, not a folder")
    datamodule = CachedVideoDataModule(cfg.data.path, cfg.data.micro_batch_size, cfg.data.num_workers,
                                       cfg.diffusion.seed)
    root = os.path.join(cfg.log.log_dir, cfg.log.name)
    resume_from = latest_experiment_checkpoint(root, with_weights=False) if cfg.resume and os.path.isdir(root) else None
    run_layout = layout(cfg, devices)
    if resume_from:
        _check_resumable(resume_from, run_layout)
        log.info("resuming from %s", resume_from)
        _remove_unfinished(root)
    name, dit_config = _model_config(cfg, resume_from)
    frames = datamodule.dataset[0]["x0"].shape[1]
    if dit_config.condition_mask_channel and frames < 2:
        raise BadInputError(f"Video2World post-training needs clips of at least 2 latent frames (9 or more video "
                            f"frames); the clips in {cfg.data.path} have {frames}")
    tokens = _tokens(datamodule, dit_config)
    check_split(dit_config.num_attention_heads, tokens, cfg.trainer.context_parallel_size,
                "trainer.context_parallel_size", "a training sample")
    estimate = check_fits(cfg, dit_config, tokens, devices)
    log.info("memory per process: %s", estimate.describe())

    # a resumed full run takes its weights from the checkpoint; LoRA keeps its frozen base
    base = base_weights(cfg) if (not resume_from or cfg.lora.enabled) else ""
    if base and not resume_from:
        log.info("base weights: %s", base)
    lora = lora_settings(cfg) if cfg.lora.enabled else None
    sharded = cfg.trainer.strategy == "fsdp"
    module = CosmosDiffusionModule(
        dit_config, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, betas=tuple(cfg.optim.betas),
        eps=cfg.optim.eps, text_dropout=cfg.diffusion.text_dropout, p_mean=cfg.diffusion.p_mean,
        p_std=cfg.diffusion.p_std, loss_add_logvar=cfg.diffusion.loss_add_logvar,
        activation_checkpointing=cfg.model.activation_checkpointing, activation_offload=cfg.model.activation_offload,
        seed=cfg.diffusion.seed, max_condition_frames=cfg.diffusion.max_condition_frames, init_from=base or None,
        lora=lora, base_dtype=torch.bfloat16 if cfg.trainer.precision.startswith("bf16") else torch.float32,
        build=not sharded,
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
    strategy, precision = _strategy(cfg, devices)
    context = {"base": base or None} if lora is not None else {}
    per_node, machines = nodes(devices)
    trainer = pl.Trainer(
        max_steps=cfg.trainer.max_steps, max_epochs=-1, accelerator=cfg.trainer.accelerator,
        devices=per_node, num_nodes=machines, strategy=strategy, precision=precision,
        plugins=[NeMoCheckpointIO(module.config, model=name, context=context, layout=run_layout, lora=lora)],
        callbacks=[checkpoints, _step_bar()],
        logger=_loggers(run_dir, cfg), log_every_n_steps=min(cfg.trainer.log_every_n_steps, cfg.trainer.max_steps),
        gradient_clip_val=cfg.optim.grad_clip or None, use_distributed_sampler=False, limit_val_batches=0,
        num_sanity_val_steps=0, enable_model_summary=False,
    )
    return trainer, module, datamodule, resume_from


def _remove_unfinished(root: str) -> None:
    """Remove the half-written checkpoints that killed runs of this name left (each can be a whole
    model's worth of disk)."""
    import glob

    from ..utils.io import remove_stale_staging

    removed = [p for d in glob.glob(os.path.join(root, "default", "*", "checkpoints")) for p in remove_stale_staging(d)]
    if removed:
        log.info("removed %d unfinished checkpoint(s) of killed runs", len(removed))


def _model_config(cfg, resume_from: Optional[str]) -> tuple:
    """(model name, DiT config) of the run: what a checkpoint records (the one resumed, or the base
    weights), else the preset of model.name. Reads metadata only."""
    from ..checkpoint import inspect_checkpoint
    from ..presets import MODELS, model_preset

    init = cfg.model.init_from
    source = resume_from if resume_from and not cfg.lora.enabled else (init if init not in ("", "none", *MODELS) else None)
    info = inspect_checkpoint(source) if source else None
    name = cfg.model.name or (info.model if info else None) or (init if init in MODELS else None)
    if info is None and init in MODELS and name in MODELS and init != name:
        # base weights named by model: what that model is, from its preset
        if (model_preset(init).dit_config().condition_mask_channel
                and not model_preset(name).dit_config().condition_mask_channel):
            raise BadInputError(f"model.name {name} is a Text2World model but model.init_from {init} is a "
                                "Video2World model")
    if info is not None and info.config is not None:
        wanted = model_preset(name).dit_config().condition_mask_channel if name in MODELS else None
        if wanted and not info.config.condition_mask_channel:  # a Video2World run from Text2World weights
            return name, dataclasses.replace(info.config, condition_mask_channel=True)
        if wanted is False and info.config.condition_mask_channel:
            raise BadInputError(f"model.name {name} is a Text2World model but {source} holds a Video2World DiT")
        return name, info.config
    if name:
        return name, model_preset(name).dit_config()
    raise BadInputError("model.name is empty and model.init_from does not record its model: set one of them")


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
    latest = latest_experiment_checkpoint(os.path.join(cfg.log.log_dir, cfg.log.name), with_weights=False)
    log.info("final checkpoint: %s", latest)
    return latest
