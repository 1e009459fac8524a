"""Post-training configuration (an OmegaConf structured config: override any field as
``section.field=value`` on the command line, Hydra-style) and the named recipes.

Defaults follow NVIDIA's Cosmos-1.0 general post-training (``cosmos_diffusion_7b_text2world_finetune``):
constant learning rate 1e-6, AdamW without weight decay, gradient clipping 1.0, 1000 steps, a global
batch of 1, bf16 mixed precision, full activation recompute, a checkpoint every 200 steps, log-normal
noise levels (P_mean 0, P_std 1), EDM loss weighting with the log-variance term, 20% text dropout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class ModelSection:
    name: str = "Cosmos-1.0-Diffusion-7B-Text2World"
    """A model name (see nemo_cosmos/presets.py); may be "" when init_from records its model."""
    init_from: str = ""
    """Base weights: "" = the published checkpoint of `name` (Hugging Face cache); a path (NeMo
    checkpoint, nemo_experiments tree, model.pt, our .safetensors, a pipeline folder); or "none" to
    start from random weights (drawn from diffusion.seed)."""
    activation_checkpointing: bool = True


@dataclass
class DataSection:
    path: str = ""
    """Folder written by recipes.prepare_data."""
    micro_batch_size: int = 1
    num_workers: int = 2


@dataclass
class OptimSection:
    lr: float = 1e-6
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    grad_clip: float = 1.0


@dataclass
class DiffusionSection:
    text_dropout: float = 0.2
    p_mean: float = 0.0
    p_std: float = 1.0
    loss_add_logvar: bool = True
    seed: int = 1234


@dataclass
class TrainerSection:
    max_steps: int = 1000
    accelerator: str = "auto"
    devices: int = 1
    """Data-parallel processes (start them with torchrun --nproc_per_node=N)."""
    precision: str = "bf16-mixed"
    log_every_n_steps: int = 1
    checkpoint_every_n_steps: int = 200
    save_top_k: int = -1
    """Checkpoints to keep; -1 keeps all."""


@dataclass
class LogSection:
    log_dir: str = "nemo_experiments"
    name: str = "cosmos_diffusion_7b_text2world_finetune"
    wandb_project: str = "cosmos_diffusion"
    """Used when WANDB_API_KEY is set."""


@dataclass
class PostTrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    diffusion: DiffusionSection = field(default_factory=DiffusionSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)
    log: LogSection = field(default_factory=LogSection)
    resume: bool = True
    """Continue from the newest checkpoint under log_dir/name when there is one."""


def cosmos_diffusion_7b_text2world_finetune() -> PostTrainConfig:
    return PostTrainConfig()


def cosmos_diffusion_14b_text2world_finetune() -> PostTrainConfig:
    cfg = PostTrainConfig()
    cfg.model.name = "Cosmos-1.0-Diffusion-14B-Text2World"
    cfg.log.name = "cosmos_diffusion_14b_text2world_finetune"
    return cfg


def cosmos_tiny_text2world_finetune() -> PostTrainConfig:
    """A small model of your own on a CPU (set model.init_from to its checkpoint or pipeline folder):
    float32, a larger learning rate, a few steps."""
    cfg = PostTrainConfig()
    cfg.model = ModelSection(name="", init_from="", activation_checkpointing=False)
    cfg.data.num_workers = 0
    cfg.optim.lr = 1e-3
    cfg.trainer = TrainerSection(max_steps=20, accelerator="cpu", precision="32", checkpoint_every_n_steps=10)
    cfg.log.name = "cosmos_tiny_text2world_finetune"
    return cfg


def cosmos_demo_text2world_train() -> PostTrainConfig:
    """The built-in demo model, from scratch on the synthetic world (nemo_cosmos.demo.train)."""
    cfg = PostTrainConfig()
    cfg.model = ModelSection(name="cosmos-demo", init_from="none", activation_checkpointing=False)
    cfg.data.micro_batch_size = 64
    cfg.data.num_workers = 4
    cfg.optim.lr = 5e-4
    cfg.diffusion.text_dropout = 0.1
    cfg.trainer = TrainerSection(max_steps=4000, checkpoint_every_n_steps=2000, log_every_n_steps=50)
    cfg.log.name = "cosmos_demo_text2world_train"
    return cfg


RECIPES = {
    "cosmos_diffusion_7b_text2world_finetune": cosmos_diffusion_7b_text2world_finetune,
    "cosmos_diffusion_14b_text2world_finetune": cosmos_diffusion_14b_text2world_finetune,
    "cosmos_tiny_text2world_finetune": cosmos_tiny_text2world_finetune,
    "cosmos_demo_text2world_train": cosmos_demo_text2world_train,
}


def recipe(name: str, overrides: Optional[List[str]] = None) -> PostTrainConfig:
    """A named recipe with ``section.field=value`` overrides applied (an OmegaConf DictConfig)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; expected one of: {', '.join(RECIPES)}")
    cfg = OmegaConf.structured(RECIPES[name]())
    try:
        for item in overrides or []:
            if "=" not in item:
                raise ValueError(f"override {item!r} is not of the form section.field=value")
            cfg.merge_with(OmegaConf.from_dotlist([item]))
    except OmegaConfBaseException as e:
        raise ValueError(f"bad override: {str(e).splitlines()[0]}") from None
    return cfg
