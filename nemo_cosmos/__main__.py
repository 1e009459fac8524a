"""``python -m nemo_cosmos <command> ...``: the command lines by name (also installed as console
scripts: cosmos-infer, cosmos-download, cosmos-prepare-data, cosmos-posttrain)."""

import importlib
import sys

COMMANDS = {
    "infer": "nemo_cosmos.recipes.infer",
    "download": "nemo_cosmos.recipes.download",
    "prepare_data": "nemo_cosmos.recipes.prepare_data",
    "posttrain": "nemo_cosmos.recipes.posttrain",
    "train_demo": "nemo_cosmos.demo.train",
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m nemo_cosmos {{{','.join(COMMANDS)}}} [options]\n"
              "  (python -m nemo_cosmos <command> --help for its options)", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
