"""What every command line shares: its parser style, logging (one line per stage, a rank prefix
under torchrun), quiet dependencies, and the exit codes:

    0 done · 1 a bug (the traceback is shown) · 2 bad input (one line) · 3 blocked by the guardrails

A command line imports its heavy modules inside its run function, after parsing, so ``--help``
answers at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from typing import Callable, Optional, Sequence

from ..errors import BlockedError, CosmosUserError, first_line

EXIT_OK, EXIT_BUG, EXIT_BAD_INPUT, EXIT_BLOCKED = 0, 1, 2, 3


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option; the description and epilog keep their line breaks."""


def parser(prog: str, doc: str, example: str, docs_page: Optional[str] = None) -> argparse.ArgumentParser:
    """A parser whose --help shows the first paragraph of `doc`, every default, an example and the
    documentation page."""
    epilog = f"example:\n  {example}"
    if docs_page:
        epilog += f"\n\ndocumentation: docs/{docs_page}"
    return argparse.ArgumentParser(prog=prog, description=doc.strip().split("\n\n")[0], epilog=epilog,
                                   formatter_class=_HelpFormatter)


def _rank() -> Optional[int]:
    return int(os.environ["RANK"]) if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ else None


class _DropNoise(logging.Filter):
    """Lightning's advertisements and accelerator inventory: nothing a user of ours acts on."""

    PREFIXES = ("💡 Tip", "TPU available", "HPU available", "GPU available", "You are using a CUDA device",
                "`Trainer.fit` stopped")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.PREFIXES)


def quiet_dependencies(progress: bool = True) -> None:
    """Keep our dependencies' deprecation notices and ads off the user's screen (they are about the
    dependencies' own APIs, not the user's input); `progress` False also hides their progress bars."""
    for pattern in (".*load_state_dict is deprecated.*", ".*LeafSpec.*", ".*is deprecated.*",
                    ".*Experiment logs directory.*exists and is not empty.*", ".*The dirpath has changed.*",
                    ".*does not have many workers.*", ".*torch.utils._pytree.*"):
        warnings.filterwarnings("ignore", message=pattern)
    warnings.filterwarnings("ignore", category=FutureWarning, module="megatron")
    for name in ("megatron", "torch.distributed", "httpx"):  # their INFO lines are for their own developers
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropNoise())
    if not progress:
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:
            pass
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"


def setup_logging() -> None:
    rank = _rank()
    prefix = f"[nemo_cosmos rank {rank}]" if rank is not None else "[nemo_cosmos]"
    logging.basicConfig(level=logging.INFO, format=f"{prefix} %(message)s")
    logging.getLogger("nemo_cosmos").setLevel(logging.INFO)
    if rank not in (None, 0):  # one copy of each stage line, from the first rank
        logging.getLogger("nemo_cosmos").setLevel(logging.WARNING)


def run_cli(p: argparse.ArgumentParser, run: Callable[[argparse.Namespace], Optional[int]],
            argv: Optional[Sequence[str]] = None, *, distributed: bool = False) -> int:
    """Parse, run, and map the outcome to an exit code (see the module docstring). User errors and
    guardrail refusals are one line on stderr; any other exception propagates with its traceback."""
    args = p.parse_args(argv)
    setup_logging()
    quiet_dependencies(progress=not getattr(args, "no_progress", False))
    rank = _rank()
    where = f"rank {rank}: " if rank is not None else ""
    try:
        return run(args) or EXIT_OK
    except BlockedError as e:
        print(f"blocked: {where}{first_line(e)}", file=sys.stderr)
        return EXIT_BLOCKED
    except CosmosUserError as e:
        # under torchrun, this rank's non-zero exit makes torchrun stop the others
        print(f"error: {where}{first_line(e, limit=2000)}", file=sys.stderr)
        if os.environ.get("NEMO_COSMOS_DEBUG"):
            raise
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: nothing was written for the unfinished work", file=sys.stderr)
        return 130
    finally:
        if distributed:
            from ..parallel import shutdown

            shutdown()
