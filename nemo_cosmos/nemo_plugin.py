"""Registration with NeMo 2 (nemo_toolkit 2.7; optional: ``pip install nemo-cosmos[nemo]``).

With NeMo installed, importing this module gives NeMo:
* ``CosmosNeMoConfig`` / ``CosmosNeMoModel``: our config and DiT as NeMo ``io`` objects, so a NeMo
  training script can import and configure them like NeMo's own;
* every checkpoint we save (once this module is imported; post-training imports it) carries a
  ``context/io.json`` that ``nemo.lightning.io.load_context`` restores, and
  ``CosmosNeMoModel.from_checkpoint(path)`` rebuilds the model with its weights.

Without NeMo the module imports fine; ``HAVE_NEMO`` is False and nothing is registered.
"""

from __future__ import annotations

import dataclasses
import os

from .checkpoint.nemo_dist import CONTEXT_WRITERS
from .models import CosmosDiT
from .models.config import CosmosDiTConfig

try:
    import lightning.pytorch as pl
    from nemo.lightning import io

    HAVE_NEMO = True
except ImportError:  # NeMo is an optional extra
    HAVE_NEMO = False


def to_io_config(config: CosmosDiTConfig):
    """The same config as a NeMo io object (one NeMo can serialise and rebuild)."""
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(CosmosDiTConfig) if f.init}
    return CosmosNeMoConfig(**fields)


if HAVE_NEMO:

    @dataclasses.dataclass
    class CosmosNeMoConfig(CosmosDiTConfig, io.IOMixin):
        """CosmosDiTConfig that NeMo's io can capture; ``configure_model`` as NeMo's configs have."""

        def configure_model(self) -> CosmosDiT:
            return CosmosDiT(self)

    class CosmosNeMoModel(pl.LightningModule, io.IOMixin, io.ConnectorMixin):
        """The Cosmos DiT as a NeMo model: holds the config; the network is built lazily."""

        def __init__(self, config: CosmosNeMoConfig):
            super().__init__()
            self.config = config
            self.module = None

        def configure_model(self) -> None:
            if self.module is None:
                self.module = self.config.configure_model()

        def forward(self, *args, **kwargs):
            return self.module(*args, **kwargs)

        @classmethod
        def from_checkpoint(cls, path: str) -> "CosmosNeMoModel":
            """Rebuild a saved model from its NeMo context and load its weights."""
            from .checkpoint import load_dit
            from .checkpoint.nemo_dist import CONTEXT_DIR, weights_dir_of

            weights = weights_dir_of(path)
            model = io.load_context(os.path.join(os.path.dirname(weights), CONTEXT_DIR), build=True)
            model.module = load_dit(weights, model.config)
            model.config = to_io_config(model.module.config)
            return model

    def write_io_context(config: CosmosDiTConfig, context_dir: str) -> None:
        """NeMo's own context file (io.json), so that NeMo's io can restore the model we saved."""
        # what IOMixin.io_dump writes, minus its YAML side files, which need nemo_run
        from fiddle._src.experimental import serialization

        model = CosmosNeMoModel(to_io_config(config))
        with open(os.path.join(context_dir, "io.json"), "w") as f:
            f.write(serialization.dump_json(model.__io__))

    if write_io_context not in CONTEXT_WRITERS:
        CONTEXT_WRITERS.append(write_io_context)
