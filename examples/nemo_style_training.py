"""Post-training from your own script, the way NeMo 2 training scripts compose a model, data and a
trainer (nemo_cosmos.training.build does the same from a recipe with defaults and overrides).

    python examples/nemo_style_training.py --data datasets/teal_robot --base Cosmos-1.0-Diffusion-7B-Text2World \
        --out nemo_experiments/my_run --steps 1000

--base is a model name (its published or built-in weights) or any checkpoint: a NeMo checkpoint or
nemo_experiments tree, a model.pt, our .safetensors, a save_pretrained folder.
"""

import argparse

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from nemo_cosmos.checkpoint import inspect_checkpoint
from nemo_cosmos.sources import resolve_source
from nemo_cosmos.training import (CachedVideoDataModule, CosmosDiffusionModule, CosmosSingleDeviceStrategy,
                                  NeMoCheckpointIO)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True, help="a folder written by recipes.prepare_data")
    p.add_argument("--base", default="cosmos-demo", help="model name or checkpoint to start from")
    p.add_argument("--out", required=True, help="where checkpoints go")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--precision", default="bf16-mixed")
    args = p.parse_args()

    source = resolve_source(args.base)  # a name or a path; reads metadata only
    info = source.checkpoint or inspect_checkpoint(args.base)
    model = CosmosDiffusionModule(source.dit_config(), lr=args.lr, init_from=info.path)
    checkpoints = ModelCheckpoint(dirpath=f"{args.out}/checkpoints", filename="{epoch}-{step}",
                                  every_n_train_steps=args.steps, save_top_k=-1)
    checkpoints.FILE_EXTENSION = ""  # a checkpoint is a folder
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    trainer = pl.Trainer(max_steps=args.steps, max_epochs=-1, precision=args.precision,
                         strategy=CosmosSingleDeviceStrategy(device=device),
                         plugins=[NeMoCheckpointIO(model.config, model=source.name)], callbacks=[checkpoints],
                         logger=False, use_distributed_sampler=False, limit_val_batches=0, num_sanity_val_steps=0,
                         enable_model_summary=False)
    trainer.fit(model, datamodule=CachedVideoDataModule(args.data, num_workers=0))


if __name__ == "__main__":
    main()
