"""Post-training from your own script, the way NeMo 2 training scripts compose a model, data and a
trainer (recipes/posttrain.py does the same with defaults and overrides).

    python examples/nemo_style_training.py --data datasets/teal_robot --model Cosmos-1.0-Diffusion-7B-Text2World \
        --base <NeMo checkpoint or model.pt> --out nemo_experiments/my_run --steps 1000
"""

import argparse

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from nemo_cosmos.recipes.models import model_entry
from nemo_cosmos.training import (CachedVideoDataModule, CosmosDiffusionModule, CosmosSingleDeviceStrategy,
                                  NeMoCheckpointIO)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--model", default="Cosmos-1.0-Diffusion-7B-Text2World")
    p.add_argument("--base", default="", help="base weights (empty: random start)")
    p.add_argument("--out", required=True, help="where checkpoints go")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--precision", default="bf16-mixed")
    args = p.parse_args()

    config = model_entry(args.model).dit()
    model = CosmosDiffusionModule(config, lr=args.lr)
    if args.base:
        model.load_base_weights(args.base)
    checkpoints = ModelCheckpoint(dirpath=f"{args.out}/checkpoints", filename="{epoch}-{step}",
                                  every_n_train_steps=args.steps, save_top_k=-1)
    checkpoints.FILE_EXTENSION = ""
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    trainer = pl.Trainer(max_steps=args.steps, max_epochs=-1, precision=args.precision,
                         strategy=CosmosSingleDeviceStrategy(device=device), plugins=[NeMoCheckpointIO(config)],
                         callbacks=[checkpoints], logger=False, use_distributed_sampler=False,
                         limit_val_batches=0, num_sanity_val_steps=0, enable_model_summary=False)
    trainer.fit(model, datamodule=CachedVideoDataModule(args.data, num_workers=0))


if __name__ == "__main__":
    main()
