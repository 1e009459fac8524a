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
    activation_offload: bool = False
    """With activation_checkpointing (and trainer.strategy=ddp): keep each layer's saved input in
    CPU memory until the backward pass (12 GiB of GPU memory less for the 7B at full size; a copy
    each way per step)."""
    cpu_offload: bool = False
    """With trainer.strategy=fsdp: keep the sharded float32 parameters, gradients and optimizer state
    in CPU memory (FSDP2's CPUOffloadPolicy; the optimizer step runs on the CPU). Lets one GPU
    fully fine-tune the 7B, at the cost of time per step."""


@dataclass
class LoraSection:
    """Low-rank adapters (peft's LoRA) on the DiT's projections; the base weights stay frozen."""

    enabled: bool = False
    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: List[str] = field(default_factory=lambda: list(LORA_TARGETS))
    """Names of the projections to adapt (the last part of the module name)."""


LORA_TARGETS = ("linear_qkv", "linear_proj", "linear_q", "linear_kv", "linear_fc1", "linear_fc2")
"""Every attention and MLP projection of a DiT layer (self- and cross-attention)."""


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
    max_condition_frames: int = 4
    """Video2World models: each sample gives its first 1 to this many latent frames (never all) as
    the condition, drawn per sample (NeMo's num_condition_t = randint(1, 4))."""


@dataclass
class TrainerSection:
    max_steps: int = 1000
    accelerator: str = "auto"
    devices: int = 0
    """Processes (start them with torchrun --nproc_per_node=N); 0: as many as torchrun started."""
    strategy: str = "ddp"
    """"ddp": every process holds the whole model (float32 weights and AdamW state: about 16 bytes
    per parameter); "fsdp": PyTorch FSDP2 shards weights, gradients and optimizer state across the
    processes (bf16 compute, float32 reduction and optimizer state)."""
    context_parallel_size: int = 1
    """With fsdp: split each sample's tokens across this many processes (Ulysses attention); the
    processes form devices / context_parallel_size data-parallel groups."""
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
    lora: LoraSection = field(default_factory=LoraSection)
    resume: bool = True
    """Continue from the newest checkpoint under log_dir/name when there is one."""


def cosmos_diffusion_7b_text2world_finetune() -> PostTrainConfig:
    """Full fine-tuning, sharded with FSDP2 (8 x 80 GB: about 14 GiB of weights, gradients and
    optimizer state per GPU plus activations; ``--print_config`` and the pre-flight check say more)."""
    cfg = PostTrainConfig()
    cfg.trainer.strategy = "fsdp"
    return cfg


def cosmos_diffusion_14b_text2world_finetune() -> PostTrainConfig:
    """As the 7B; the 14B's activations at the full size need the tokens split over 2 GPUs."""
    cfg = PostTrainConfig()
    cfg.model.name = "Cosmos-1.0-Diffusion-14B-Text2World"
    cfg.trainer.strategy = "fsdp"
    cfg.trainer.context_parallel_size = 2
    cfg.log.name = "cosmos_diffusion_14b_text2world_finetune"
    return cfg


def cosmos_diffusion_7b_text2world_lora() -> PostTrainConfig:
    """LoRA on one GPU: the 7B's weights frozen in bf16, rank-16 adapters on every attention and
    MLP projection, each layer recomputed in the backward pass."""
    cfg = PostTrainConfig()
    cfg.lora.enabled = True
    cfg.model.activation_offload = True
    cfg.optim.lr = 1e-4
    cfg.log.name = "cosmos_diffusion_7b_text2world_lora"
    return cfg


def cosmos_diffusion_14b_text2world_lora() -> PostTrainConfig:
    cfg = cosmos_diffusion_7b_text2world_lora()
    cfg.model.name = "Cosmos-1.0-Diffusion-14B-Text2World"
    cfg.log.name = "cosmos_diffusion_14b_text2world_lora"
    return cfg


def _video2world(text2world: PostTrainConfig, size: str, kind: str) -> PostTrainConfig:
    """A Text2World recipe's config for the Video2World model of the same size: same strategy,
    sharding and optimiser (NVIDIA's NeMo recipes differ only in the model)."""
    text2world.model.name = f"Cosmos-1.0-Diffusion-{size}-Video2World"
    text2world.log.name = f"cosmos_diffusion_{size.lower()}_video2world_{kind}"
    return text2world


def cosmos_diffusion_7b_video2world_finetune() -> PostTrainConfig:
    """As the Text2World 7B, from Cosmos-1.0-Diffusion-7B-Video2World (NVIDIA's NeMo recipe of the same name)."""
    return _video2world(cosmos_diffusion_7b_text2world_finetune(), "7B", "finetune")


def cosmos_diffusion_14b_video2world_finetune() -> PostTrainConfig:
    return _video2world(cosmos_diffusion_14b_text2world_finetune(), "14B", "finetune")


def cosmos_diffusion_7b_video2world_lora() -> PostTrainConfig:
    return _video2world(cosmos_diffusion_7b_text2world_lora(), "7B", "lora")


def cosmos_diffusion_14b_video2world_lora() -> PostTrainConfig:
    return _video2world(cosmos_diffusion_14b_text2world_lora(), "14B", "lora")


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


def cosmos_demo_video2world_train() -> PostTrainConfig:
    """The built-in Video2World demo model, from the Text2World demo's weights (nemo_cosmos.demo.train
    --family video2world)."""
    cfg = cosmos_demo_text2world_train()
    cfg.model = ModelSection(name="cosmos-demo-video2world", init_from="cosmos-demo", activation_checkpointing=False)
    cfg.optim.lr = 3e-4
    cfg.trainer.max_steps = 3000
    cfg.trainer.checkpoint_every_n_steps = 1500
    cfg.log.name = "cosmos_demo_video2world_train"
    return cfg


RECIPES = {
    "cosmos_diffusion_7b_text2world_finetune": cosmos_diffusion_7b_text2world_finetune,
    "cosmos_diffusion_14b_text2world_finetune": cosmos_diffusion_14b_text2world_finetune,
    "cosmos_diffusion_7b_text2world_lora": cosmos_diffusion_7b_text2world_lora,
    "cosmos_diffusion_14b_text2world_lora": cosmos_diffusion_14b_text2world_lora,
    "cosmos_tiny_text2world_finetune": cosmos_tiny_text2world_finetune,
    "cosmos_demo_text2world_train": cosmos_demo_text2world_train,
    "cosmos_diffusion_7b_video2world_finetune": cosmos_diffusion_7b_video2world_finetune,
    "cosmos_diffusion_14b_video2world_finetune": cosmos_diffusion_14b_video2world_finetune,
    "cosmos_diffusion_7b_video2world_lora": cosmos_diffusion_7b_video2world_lora,
    "cosmos_diffusion_14b_video2world_lora": cosmos_diffusion_14b_video2world_lora,
    "cosmos_demo_video2world_train": cosmos_demo_video2world_train,
}


def recipe(name: str, overrides: Optional[List[str]] = None) -> PostTrainConfig:
    """A named recipe with ``section.field=value`` overrides applied (an OmegaConf DictConfig),
    checked (``validate``)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from ..errors import BadInputError, first_line

    if name not in RECIPES:
        raise BadInputError(f"unknown recipe {name!r}; expected one of: {', '.join(RECIPES)}")
    cfg = OmegaConf.structured(RECIPES[name]())
    try:
        for item in overrides or []:
            if "=" not in item:
                raise BadInputError(f"override {item!r} is not of the form section.field=value")
            if item.startswith("optim.config."):
                item = "optim." + item[len("optim.config."):]
            cfg.merge_with(OmegaConf.from_dotlist([item]))
    except OmegaConfBaseException as e:
        raise BadInputError(f"bad override: {first_line(e)}") from None
    validate(cfg)
    return cfg


def validate(cfg) -> None:
    """BadInputError for a value no run can use (checked before anything is built)."""
    from ..errors import BadInputError

    checks = [
        (cfg.trainer.max_steps >= 1, f"trainer.max_steps must be at least 1; got {cfg.trainer.max_steps}"),
        (cfg.trainer.devices >= 0, f"trainer.devices must be 0 (as many as torchrun started) or more; got {cfg.trainer.devices}"),
        (cfg.trainer.strategy in ("ddp", "fsdp"), f"trainer.strategy must be ddp or fsdp; got {cfg.trainer.strategy!r}"),
        (cfg.trainer.strategy != "fsdp" or cfg.trainer.precision in ("32", "32-true", "bf16-mixed"),
         f"trainer.strategy=fsdp trains in trainer.precision=bf16-mixed or 32; got {cfg.trainer.precision!r}"),
        (cfg.trainer.context_parallel_size >= 1,
         f"trainer.context_parallel_size must be at least 1; got {cfg.trainer.context_parallel_size}"),
        (cfg.trainer.context_parallel_size == 1 or cfg.trainer.strategy == "fsdp",
         "trainer.context_parallel_size > 1 needs trainer.strategy=fsdp"),
        (not cfg.model.cpu_offload or cfg.trainer.strategy == "fsdp", "model.cpu_offload needs trainer.strategy=fsdp"),
        (not cfg.model.activation_offload or (cfg.model.activation_checkpointing and cfg.trainer.strategy == "ddp"),
         "model.activation_offload needs model.activation_checkpointing=true and trainer.strategy=ddp"),
        (not cfg.lora.enabled or cfg.trainer.strategy == "ddp",
         "LoRA trains with trainer.strategy=ddp (its frozen base fits where full fine-tuning does not)"),
        (not cfg.lora.enabled or cfg.lora.rank >= 1, f"lora.rank must be at least 1; got {cfg.lora.rank}"),
        (not cfg.lora.enabled or cfg.lora.alpha > 0, f"lora.alpha must be positive; got {cfg.lora.alpha}"),
        (not cfg.lora.enabled or 0.0 <= cfg.lora.dropout < 1.0, f"lora.dropout must be in [0, 1); got {cfg.lora.dropout}"),
        (not cfg.lora.enabled or len(cfg.lora.target_modules) > 0, "lora.target_modules names no module"),
        (cfg.trainer.checkpoint_every_n_steps >= 1,
         f"trainer.checkpoint_every_n_steps must be at least 1; got {cfg.trainer.checkpoint_every_n_steps}"),
        (cfg.trainer.log_every_n_steps >= 1, f"trainer.log_every_n_steps must be at least 1; got {cfg.trainer.log_every_n_steps}"),
        (cfg.trainer.save_top_k == -1 or cfg.trainer.save_top_k >= 1,
         f"trainer.save_top_k must be -1 (keep all) or at least 1; got {cfg.trainer.save_top_k}"),
        (0.0 <= cfg.diffusion.text_dropout <= 1.0, f"diffusion.text_dropout must be in [0, 1]; got {cfg.diffusion.text_dropout}"),
        (cfg.diffusion.p_std > 0, f"diffusion.p_std must be positive; got {cfg.diffusion.p_std}"),
        (cfg.diffusion.max_condition_frames >= 1,
         f"diffusion.max_condition_frames must be at least 1; got {cfg.diffusion.max_condition_frames}"),
        (cfg.optim.lr > 0, f"optim.lr must be positive; got {cfg.optim.lr}"),
        (cfg.optim.grad_clip >= 0, f"optim.grad_clip must be 0 (off) or positive; got {cfg.optim.grad_clip}"),
        (len(cfg.optim.betas) == 2 and all(0 <= b < 1 for b in cfg.optim.betas),
         f"optim.betas must be two numbers in [0, 1); got {list(cfg.optim.betas)}"),
        (cfg.data.micro_batch_size >= 1, f"data.micro_batch_size must be at least 1; got {cfg.data.micro_batch_size}"),
        (cfg.data.num_workers >= 0, f"data.num_workers must be 0 or more; got {cfg.data.num_workers}"),
        (cfg.trainer.precision in ("32", "32-true", "bf16-mixed", "bf16-true", "16-mixed"),
         f"trainer.precision must be 32, bf16-mixed or 16-mixed; got {cfg.trainer.precision!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise BadInputError(message)
