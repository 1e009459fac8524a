"""NeMo registration: optional. Without NeMo the library saves and loads its checkpoints as usual;
with nemo_toolkit 2.7 installed, NeMo's io restores a saved model from the checkpoint's context."""

import subprocess
import sys

import pytest
import torch
from helpers import randomize_

from nemo_cosmos.checkpoint import load_nemo_checkpoint, save_nemo_checkpoint
from nemo_cosmos.models import CosmosDiT, tiny_config

WITHOUT_NEMO = """
import sys, os, tempfile, torch
sys.modules["nemo"] = None  # as if nemo_toolkit were not installed
from nemo_cosmos import nemo_plugin
from nemo_cosmos.checkpoint import load_nemo_checkpoint, save_nemo_checkpoint
from nemo_cosmos.models import CosmosDiT, tiny_config
if True:
    cfg = tiny_config()
    sd = CosmosDiT(cfg).state_dict()
    path = os.path.join(tempfile.mkdtemp(), "ckpt")
    save_nemo_checkpoint(sd, cfg, path)
    loaded, _ = load_nemo_checkpoint(path, cfg)
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)
    print(nemo_plugin.HAVE_NEMO, sorted(os.listdir(os.path.join(path, "context"))))
"""


def test_library_works_without_nemo():
    proc = subprocess.run([sys.executable, "-c", WITHOUT_NEMO], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[-2] == "False ['nemo_cosmos.json']"


def test_nemo_io_restores_a_saved_model(tmp_path):
    io = pytest.importorskip("nemo.lightning.io", reason="nemo_toolkit 2.7 not installed")
    from nemo_cosmos.nemo_plugin import CosmosNeMoConfig, CosmosNeMoModel

    cfg = tiny_config()
    model = randomize_(CosmosDiT(cfg))
    save_nemo_checkpoint(model.state_dict(), cfg, str(tmp_path / "ckpt"))
    restored = io.load_context(str(tmp_path / "ckpt" / "context"), build=True)
    assert isinstance(restored, CosmosNeMoModel) and isinstance(restored.config, CosmosNeMoConfig)
    assert (restored.config.num_layers, restored.config.hidden_size) == (cfg.num_layers, cfg.hidden_size)
    full = CosmosNeMoModel.from_checkpoint(str(tmp_path / "ckpt"))
    for k, v in model.state_dict().items():
        assert torch.equal(full.module.state_dict()[k], v), k
    assert load_nemo_checkpoint(str(tmp_path / "ckpt"), full.config)[1].num_layers == cfg.num_layers
