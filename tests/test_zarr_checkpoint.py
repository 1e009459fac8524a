"""NeMo checkpoints in Megatron's zarr backend (NeMo's diffusion recipe saves with
``save_ckpt_format='zarr'``): written here with zarr-python in the layout Megatron's
ZarrSaveShardedStrategy wrote, read back tensor for tensor through every entry point that takes a
NeMo checkpoint; damage is named in one line, and nothing pickled in the folder ever runs."""

import dataclasses
import io
import itertools
import json
import os
import pickle
import re
import shutil

import ml_dtypes
import numpy as np
import pytest
import torch
import zarr
from helpers import PUBLISHED_SIZES, published_state_dict, randomize_

from nemo_cosmos.checkpoint import inspect_checkpoint, load_dit
from nemo_cosmos.checkpoint import nemo_dist as nd
from nemo_cosmos.checkpoint.loading import resolve_config
from nemo_cosmos.checkpoint.locate import NEMO, experiment_checkpoints, find_dit_checkpoint
from nemo_cosmos.models import CosmosDiT
from nemo_cosmos.models.config import tiny_config

COLUMN_PARALLEL = ("linear_qkv.", "linear_q.", "linear_kv.", "linear_fc1.")
ROW_PARALLEL = ("linear_proj.", "linear_fc2.")
# what megatron.core.dist_checkpointing wrote for a zarr save (its CheckpointingConfig)
METADATA = {"sharded_backend": "zarr", "sharded_backend_version": 1, "common_backend": "torch", "common_backend_version": 1}
QKV = nd.LAYERS + "full_self_attention.linear_qkv.weight"
FINAL = nd.PREFIX + "final_layer.linear.weight"


class Payload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def shard_grid(key, shape, tp):
    """How a NeMo run with tensor-parallel size `tp` sharded `key`: every layer a shard of the stacked
    axis, column-parallel weights split on their output axis, row-parallel ones on their input axis."""
    grid = [1] * len(shape)
    if key.startswith(nd.LAYERS):
        grid[0] = shape[0]
        if any(c in key for c in COLUMN_PARALLEL):
            grid[1] = tp
        elif any(c in key for c in ROW_PARALLEL):
            grid[2] = tp
    return grid


def write_zarr_array(path, t, grid):
    """One global tensor as Megatron's zarr strategy wrote it: an uncompressed zarr v2 array whose
    chunk is one shard (global shape / shard grid), each shard written into its slice; bf16 as its
    2-byte words, the .zarray dtype then rewritten to "bfloat16". The .zarray holds the fields
    zarr-python 2 wrote (no dimension_separator: its default, "."). A meta tensor gives the .zarray
    alone (its shape, no chunk files)."""
    chunks = [s // g for s, g in zip(t.shape, grid)]
    bf16 = t.dtype == torch.bfloat16
    if t.is_meta:
        data = None
        dtype = np.dtype("<u2") if bf16 else torch.empty((), dtype=t.dtype).numpy().dtype
    else:
        data = t.float().numpy().astype(ml_dtypes.bfloat16).view("<u2") if bf16 else t.numpy()
        dtype = data.dtype
    arr = zarr.create_array(store=str(path), shape=t.shape, chunks=chunks, dtype=dtype, compressors=None,
                            filters=None, fill_value=None, zarr_format=2, config={"write_empty_chunks": True})
    for index in itertools.product(*(range(g) for g in grid)) if data is not None else ():
        shard = tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, chunks))
        arr[shard] = data[shard]
    meta = json.loads((path / ".zarray").read_text())
    assert (meta["compressor"], meta["filters"], meta["fill_value"], meta["order"]) == (None, None, None, "C")
    meta.pop("dimension_separator")
    if bf16:
        meta["dtype"] = "bfloat16"
    (path / ".zarray").write_text(json.dumps(meta, indent=4, sort_keys=True))
    (path / ".zattrs").unlink()  # zarr-python 2 wrote none


def write_zarr_checkpoint(tensors, weights_dir, tp=1, optimizer=False):
    """A NeMo ``weights/`` folder in the zarr backend: metadata.json, common.pt, one array per tensor,
    Transformer Engine's extra state as torch.save-d objects (``<key>/shard_<layer>_<layers>.pt``)."""
    os.makedirs(weights_dir)
    (weights_dir / "metadata.json").write_text(json.dumps(METADATA))
    torch.save({"epoch": 0, "global_step": 5}, weights_dir / "common.pt")
    for key, t in tensors.items():
        write_zarr_array(weights_dir / key, t, shard_grid(key, t.shape, tp))
        if key.startswith(nd.LAYERS) and ".linear_" in key:
            extra = weights_dir / (key[: -len("weight")] + "_extra_state")
            extra.mkdir()
            for i in range(t.shape[0]):
                torch.save(io.BytesIO(), extra / f"shard_{i}_{t.shape[0]}.pt")
    if optimizer:  # a distributed optimizer's state, with the lock folder its writes left
        write_zarr_array(weights_dir / ("optimizer.state.exp_avg." + FINAL), torch.zeros(tensors[FINAL].numel()), [1])
        (weights_dir / f"optimizer.state.exp_avg.{FINAL}.sync").mkdir()


def nemo_tensors(cfg, dtype, seed=0):
    """(our state dict in `dtype`, NeMo's tensors of it with a trained log-variance head)."""
    torch.manual_seed(seed)
    sd = {k: v.to(dtype) for k, v in randomize_(CosmosDiT(cfg)).state_dict().items()}
    extras = {"logvar.1.weight": torch.randn(1, 128, dtype=dtype)}
    return sd, nd.to_nemo(sd, cfg, extras)


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("tp", [1, 2])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("video2world", [False, True], ids=["text2world", "video2world"])
def test_zarr_checkpoint_loads_exactly(tmp_path, video2world, dtype, tp):
    cfg = tiny_config(condition_mask_channel=video2world)
    sd, tensors = nemo_tensors(cfg, dtype)
    weights = tmp_path / "ckpt" / "weights"
    write_zarr_checkpoint(tensors, weights, tp)
    chunks = sorted(f for f in os.listdir(weights / QKV) if not f.startswith("."))
    assert len(chunks) == cfg.num_layers * tp  # one chunk file per shard, as the saving run wrote them
    if dtype == torch.bfloat16:
        assert json.loads((weights / QKV / ".zarray").read_text())["dtype"] == "bfloat16"

    read = nd.read_nemo_tensors(str(weights), cfg)
    assert_same(read, {k: v for k, v in tensors.items() if k[len(nd.PREFIX):] not in nd._NEMO_ONLY})
    for path in (weights.parent, weights):  # the weights folder or its parent
        loaded, loaded_cfg = nd.load_nemo_checkpoint(str(path), cfg)
        assert not loaded_cfg.adaln_fused
        assert_same(loaded, {k: v.to(cfg.params_dtype) for k, v in sd.items()})
        assert_same(nd.read_nemo_extras(str(path)),
                    {k: tensors[nd.PREFIX + k] for k in nd._NEMO_ONLY})
    CosmosDiT(cfg).load_state_dict(loaded, strict=True)


@pytest.mark.parametrize("video2world", [False, True], ids=["text2world", "video2world"])
def test_zarr_checkpoint_computes_the_source_models_forward(tmp_path, video2world):
    """A zarr checkpoint (bf16, tensor-parallel 2) through load_dit: the source's weights and forward,
    the condition mask included; the other family's config is refused, naming the tensor."""
    cfg = tiny_config(condition_mask_channel=video2world)
    source = randomize_(CosmosDiT(cfg)).to(torch.bfloat16).float().eval()  # values bf16 holds exactly
    write_zarr_checkpoint(nd.to_nemo({k: v.to(torch.bfloat16) for k, v in source.state_dict().items()}, cfg),
                          tmp_path / "ckpt" / "weights", tp=2)
    embed = tmp_path / "ckpt" / "weights" / (nd.PREFIX + "x_embedder.proj.1.weight") / ".zarray"
    assert json.loads(embed.read_text())["shape"] == [cfg.hidden_size, 72 if video2world else 68]

    dit = load_dit(str(tmp_path / "ckpt"), cfg, dtype=torch.float32).eval()
    assert dit.config.condition_mask_channel is video2world
    assert_same(dit.state_dict(), source.state_dict())
    x, t, text = torch.randn(2, 16, 3, 4, 6), torch.tensor([0.2, 1.5]), torch.randn(2, 5, cfg.crossattn_dim)
    mask = None
    if video2world:
        mask = torch.zeros(2, 1, 3, 4, 6)
        mask[0, :, :1] = 1
        mask[1, :, :2] = 1
    with torch.no_grad():
        want = source(x, t, text, fps=24, condition_mask=mask)
        assert torch.equal(dit(x, t, text, fps=24, condition_mask=mask), want)
        if video2world:
            assert not torch.allclose(dit(x, t, text, fps=24), want, atol=1e-3)

    have, expect = (72, 68) if video2world else (68, 72)
    refused = rf"x_embedder.proj.1.weight' has shape \[64, {have}\] .* expects \[64, {expect}\]"
    with pytest.raises(ValueError, match=refused):
        load_dit(str(tmp_path / "ckpt"), tiny_config(condition_mask_channel=not video2world))


@pytest.mark.parametrize("name", sorted(PUBLISHED_SIZES))
def test_published_size_zarr_checkpoint_is_matched_to_its_model(tmp_path, name):
    """A NeMo zarr checkpoint records no config of ours: the shapes in its .zarray files pick the
    published model, Video2World apart from its Text2World twin. (Each array here is its .zarray
    alone: the shapes are all a match reads.)"""
    layers, width, patch_in = PUBLISHED_SIZES[name]
    sd, cfg = published_state_dict(name)
    weights = tmp_path / "run" / "checkpoints" / "epoch=0-step=9" / "weights"
    write_zarr_checkpoint(nd.to_nemo(sd, cfg), weights, tp=2)
    assert json.loads((weights / (nd.PREFIX + "x_embedder.proj.1.weight") / ".zarray").read_text())["shape"] == [
        width, patch_in]
    assert json.loads((weights / QKV / ".zarray").read_text())["shape"] == [layers, 3 * width, width]
    assert not [f for f in os.listdir(weights / QKV) if not f.startswith(".")]  # no chunk files

    info = inspect_checkpoint(str(tmp_path / "run"))
    assert (info.kind, info.path, info.config, info.model) == (NEMO, str(weights), None, name)
    found = resolve_config(info, None)
    assert (found.num_layers, found.hidden_size) == (layers, width)
    assert found.condition_mask_channel is name.endswith("Video2World")


def test_nemo_trained_fused_adaln_loads_fused(tmp_path):
    cfg = tiny_config()
    fused_cfg = dataclasses.replace(cfg, adaln_fused=True)
    sd, tensors = nemo_tensors(fused_cfg, torch.bfloat16)  # dense fused AdaLN, as trained in NeMo
    write_zarr_checkpoint(tensors, tmp_path / "weights", tp=2)
    loaded, loaded_cfg = nd.load_nemo_checkpoint(str(tmp_path / "weights"), cfg)
    assert loaded_cfg.adaln_fused
    assert_same(loaded, {k: v.float() for k, v in sd.items()})


def test_experiment_tree_is_found_and_loads_everywhere(tmp_path):
    """A NeMo post-training run's nemo_experiments tree in zarr: found (newest step), and loaded by
    load_nemo_checkpoint, post-training's init_from and infer's --nemo_checkpoint."""
    from nemo_cosmos.checkpoint import load_dit
    from nemo_cosmos.training.module import CosmosDiffusionModule

    cfg = tiny_config()
    run = tmp_path / "nemo_experiments" / "cosmos_diffusion_7b_text2world_finetune" / "default" / "2025-01-06_10-00-00"
    old, _ = nemo_tensors(cfg, torch.bfloat16, seed=1)
    write_zarr_checkpoint(nd.to_nemo(old, cfg), run / "checkpoints" / "epoch=0-step=2" / "weights", optimizer=True)
    sd, tensors = nemo_tensors(cfg, torch.bfloat16)
    newest = run / "checkpoints" / "epoch=0-step=5"
    write_zarr_checkpoint(tensors, newest / "weights", tp=2, optimizer=True)

    root = tmp_path / "nemo_experiments"
    assert experiment_checkpoints(str(root)) == [str(run / "checkpoints" / "epoch=0-step=2"), str(newest)]
    assert find_dit_checkpoint(str(root)) == (NEMO, str(newest / "weights"))
    expected = {k: v.float() for k, v in sd.items()}
    assert_same(nd.load_nemo_checkpoint(find_dit_checkpoint(str(root))[1], cfg)[0], expected)

    module = CosmosDiffusionModule(cfg, init_from=str(root))
    assert_same(module.dit.state_dict(), expected)
    torch.testing.assert_close(module.logvar.linear.weight, tensors[nd.PREFIX + "logvar.1.weight"].float(), rtol=0, atol=0)

    assert_same(load_dit(str(newest), cfg, dtype=torch.float32).state_dict(), expected)


def _one_line_error(exc_info, *fragments):
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg


@pytest.fixture
def written(tmp_path):
    cfg = tiny_config()
    _, tensors = nemo_tensors(cfg, torch.bfloat16)
    weights = tmp_path / "weights"
    write_zarr_checkpoint(tensors, weights, tp=2)
    return weights, cfg


@pytest.mark.parametrize("damage", ["missing", "truncated", "too long"])
def test_damaged_chunk_is_named(written, damage):
    weights, cfg = written
    chunk = weights / QKV / "1.1.0"
    if damage == "missing":
        chunk.unlink()
    elif damage == "truncated":
        chunk.write_bytes(chunk.read_bytes()[:-7])
    else:
        chunk.write_bytes(chunk.read_bytes() + b"\0\0")
    with pytest.raises(ValueError) as e:
        nd.load_nemo_checkpoint(str(weights), cfg)
    _one_line_error(e, repr(QKV), str(chunk))


def test_missing_tensor_or_array_metadata_is_named(written):
    weights, cfg = written
    (weights / FINAL / ".zarray").unlink()
    with pytest.raises(ValueError) as e:
        nd.load_nemo_checkpoint(str(weights), cfg)
    _one_line_error(e, repr(FINAL), str(weights / FINAL / ".zarray"))
    shutil.rmtree(weights / FINAL)
    with pytest.raises(ValueError) as e:
        nd.load_nemo_checkpoint(str(weights), cfg)
    _one_line_error(e, f"checkpoint lacks tensor {FINAL!r}")


def test_config_that_does_not_match_names_the_tensor(written):
    weights, _ = written
    with pytest.raises(ValueError, match=r"adaLN_modulation.1.weight' has shape \[2, 48, 64\] .* expects \[3, 48, 64\]"):
        nd.load_nemo_checkpoint(str(weights), tiny_config(num_layers=3))
    with pytest.raises(ValueError, match="has tensor .*extra_pos_embedder.* this model does not have"):
        nd.load_nemo_checkpoint(str(weights), tiny_config(extra_pos_emb=False))


def test_unknown_backend_is_refused(written):
    weights, cfg = written
    (weights / "metadata.json").write_text(json.dumps({**METADATA, "sharded_backend": "h5py"}))
    with pytest.raises(ValueError, match=re.escape("sharded backend 'h5py' is not supported (torch_dist or zarr)")):
        nd.load_nemo_checkpoint(str(weights), cfg)


def test_pickles_in_the_folder_never_run(written, tmp_path):
    """common.pt and the *_extra_state objects are pickles (Megatron loaded them with torch.load):
    each carries a payload here, also as a zarr byte array (how a uint8 extra-state tensor would be
    stored); loading reads none of them. Afterwards each payload is shown to be live."""
    weights, cfg = written
    markers = {name: tmp_path / f"ran-{name}" for name in ("common", "extra_pt", "extra_zarr")}
    torch.save({"epoch": 0, "payload": Payload(markers["common"])}, weights / "common.pt")
    proj_extra = weights / (nd.LAYERS + "full_self_attention.linear_proj._extra_state")
    torch.save(Payload(markers["extra_pt"]), proj_extra / "shard_0_2.pt")
    zarr_extra = weights / (nd.LAYERS + "mlp.linear_fc1._extra_state")
    shutil.rmtree(zarr_extra)
    pickled = np.frombuffer(pickle.dumps(Payload(markers["extra_zarr"])), dtype=np.uint8)
    write_zarr_array(zarr_extra, torch.from_numpy(pickled.copy()), [1])

    loaded, _ = nd.load_nemo_checkpoint(str(weights), cfg)
    nd.read_nemo_extras(str(weights))
    CosmosDiT(cfg).load_state_dict(loaded, strict=True)
    assert not any(m.exists() for m in markers.values())

    torch.load(weights / "common.pt", weights_only=False)
    torch.load(proj_extra / "shard_0_2.pt", weights_only=False)
    pickle.loads(zarr.open_array(str(zarr_extra), mode="r")[:].tobytes())
    assert all(m.exists() for m in markers.values())


def test_object_array_cannot_unpickle(written, tmp_path):
    """zarr v2 object arrays decode chunks with a pickle filter; the reader knows no such dtype or filter."""
    weights, cfg = written
    marker = tmp_path / "ran"
    meta = json.loads((weights / FINAL / ".zarray").read_text())
    meta.update(dtype="|O", filters=[{"id": "pickle", "protocol": 4}], chunks=[1], shape=[1])
    shutil.rmtree(weights / FINAL)
    (weights / FINAL).mkdir()
    (weights / FINAL / ".zarray").write_text(json.dumps(meta))
    (weights / FINAL / "0").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ValueError) as e:
        nd.load_nemo_checkpoint(str(weights), cfg)
    _one_line_error(e, repr(FINAL), ".zarray")
    assert not marker.exists()


def test_array_of_no_tensor_type_is_refused(written):
    weights, cfg = written
    zarray = weights / FINAL / ".zarray"
    meta = json.loads(zarray.read_text())
    meta["dtype"] = "|V2"  # raw 2-byte records: TensorStore opens them, they are no tensor type
    zarray.write_text(json.dumps(meta))
    with pytest.raises(ValueError) as e:
        nd.load_nemo_checkpoint(str(weights), cfg)
    _one_line_error(e, repr(FINAL), "is not a tensor type")
