"""General post-training: continue training a Cosmos DiT on a prepared dataset of one subject.

    python -m nemo_cosmos.recipes.posttrain data.path=datasets/teal_robot trainer.max_steps=1000
    torchrun --nproc_per_node=8 -m nemo_cosmos.recipes.posttrain trainer.devices=8 data.path=...

``--recipe`` picks the defaults; any field is overridden as ``section.field=value`` (``--print_config``
shows them all; NeMo's ``optim.config.lr=...`` spelling and ``--yes`` are accepted). Checkpoints go to
``<log_dir>/<name>/default/<YYYY-MM-DD_HH-MM-SS>/checkpoints/epoch=E-step=S/`` in NeMo's format; a new
run of the same name resumes from the newest one. TensorBoard logs (and metrics.csv) go to the run
folder, and to Weights & Biases when WANDB_API_KEY is set. Then:

    python -m nemo_cosmos.recipes.infer --nemo_checkpoint <log_dir>/<name> --subject_name "teal robot" ...
"""

from __future__ import annotations

import os
import sys

if not __package__:  # run by path: make the package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from nemo_cosmos.training.config import RECIPES  # noqa: E402
from nemo_cosmos.utils import cli  # noqa: E402

PROG = "python -m nemo_cosmos.recipes.posttrain"


def build_parser():
    p = cli.parser(PROG, __doc__, f"{PROG} --recipe cosmos_demo_text2world_train data.path=data/demo "
                                  "trainer.max_steps=100", "post_training.md")
    p.add_argument("--recipe", "--factory", default=next(iter(RECIPES)), choices=list(RECIPES),
                   metavar="RECIPE", help=f"the defaults to start from, one of: {', '.join(RECIPES)} "
                                          "(--factory: NeMo's name for it)")
    p.add_argument("--yes", "-y", action="store_true", help="accepted for NeMo-Run's command lines; nothing to confirm")
    p.add_argument("--print_config", action="store_true", help="print the resolved config and stop")
    p.add_argument("overrides", nargs="*", help="section.field=value (see --print_config)")
    return p


def run(args) -> int:
    from nemo_cosmos.training import recipe, train

    cfg = recipe(args.recipe, args.overrides)
    if args.print_config:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(cfg))
        return cli.EXIT_OK
    train(cfg)
    return cli.EXIT_OK


def main(argv=None) -> int:
    return cli.run_cli(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
