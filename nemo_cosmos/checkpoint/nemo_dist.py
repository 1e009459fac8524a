"""NeMo distributed checkpoints of the Cosmos DiT: read and write them with
``megatron.core.dist_checkpointing`` (torch_dist backend); read Megatron's older zarr backend too
(``nemo_zarr``), through the same names and checks.

A NeMo 2 checkpoint folder holds ``weights/`` (``metadata.json``, ``.metadata``, ``*.distcp`` shards,
``common.pt``; or, zarr, one folder per tensor) and ``context/``. Tensor names are those of NeMo's Cosmos DiT
(``DiTCrossAttentionModel7B/14B`` on Megatron-Core's ``DiTLayerWithAdaLN``) under NeMo's
``module.`` prefix. Megatron stores the transformer layers stacked: ``module.decoder.layers.<name>``
has a leading axis of length num_layers, sharded however the saving run was parallelised; we always
read and write whole global tensors, so any tensor- or context-parallel layout loads anywhere.

Two tensors differ in layout from ours besides their names:
* Megatron's fused ``linear_qkv`` / ``linear_kv`` interleave per head ([q_h, k_h, v_h] for each head
  h); ours are [all q; all k; all v].
* Megatron's AdaLN is one D -> 3r -> 9D projection per layer; the reference (and our default) has
  three D -> r -> 3D ones, which is the block-diagonal case of the fused form (see
  ``CosmosDiTConfig.adaln_fused``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pickle
import shutil
from typing import Callable, Dict, Iterator, List, Mapping, Sequence, Tuple

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException

from ..models.config import CosmosDiTConfig, config_to_dict
from ..errors import BadInputError, MissingFileError, first_line
from . import nemo_zarr

log = logging.getLogger("nemo_cosmos")

PREFIX = "module."
LAYERS = PREFIX + "decoder.layers."
WEIGHTS_DIR, CONTEXT_DIR = "weights", "context"
CONFIG_FILE = "nemo_cosmos.json"
TORCH_DIST, ZARR = "torch_dist", "zarr"  # Megatron's sharded backends, as metadata.json names them

_GLOBAL_KEYS = {
    "patch_embed.weight": "x_embedder.proj.1.weight",
    "t_embedder.linear_1.weight": "t_embedder.1.linear_1.weight",
    "t_embedder.linear_2.weight": "t_embedder.1.linear_2.weight",
    "t_norm.weight": "affline_norm.weight",
    "final_layer.adaln.linear_1.weight": "final_layer.adaLN_modulation.1.weight",
    "final_layer.adaln.linear_2.weight": "final_layer.adaLN_modulation.2.weight",
    "final_layer.linear.weight": "final_layer.linear.weight",
}
_POS_EMB_KEYS = {f"extra_pos_emb.pos_emb_{a}": f"extra_pos_embedder.pos_emb_{a}" for a in "thw"}
_LAYER_KEYS = {
    "adaln.linear_1.weight": "adaLN.adaLN_modulation.1.weight",
    "adaln.linear_2.weight": "adaLN.adaLN_modulation.2.weight",
    "self_attention.linear_qkv.weight": "full_self_attention.linear_qkv.weight",
    "self_attention.q_layernorm.weight": "full_self_attention.q_layernorm.weight",
    "self_attention.k_layernorm.weight": "full_self_attention.k_layernorm.weight",
    "self_attention.linear_proj.weight": "full_self_attention.linear_proj.weight",
    "cross_attention.linear_q.weight": "cross_attention.linear_q.weight",
    "cross_attention.linear_kv.weight": "cross_attention.linear_kv.weight",
    "cross_attention.q_layernorm.weight": "cross_attention.q_layernorm.weight",
    "cross_attention.k_layernorm.weight": "cross_attention.k_layernorm.weight",
    "cross_attention.linear_proj.weight": "cross_attention.linear_proj.weight",
    "mlp.linear_fc1.weight": "mlp.linear_fc1.weight",
    "mlp.linear_fc2.weight": "mlp.linear_fc2.weight",
}
# Per-head interleaved projections: our key suffix -> number of fused projections.
_INTERLEAVED = {"self_attention.linear_qkv.weight": 3, "cross_attention.linear_kv.weight": 2}
_SPLIT_ADALN = ("adaln_self", "adaln_cross", "adaln_mlp")

# NeMo tensors our network does not use: the RoPE position buffer (recomputed) and the training-time
# log-variance head. Saved so that NeMo can load what we write; ignored when reading.
_NEMO_ONLY = {
    "pos_embedder.seq": lambda c: torch.arange(max(c.max_latent_size[0] // c.patch_temporal,
                                                   c.max_latent_size[1] // c.patch_spatial,
                                                   c.max_latent_size[2] // c.patch_spatial), dtype=torch.float32),
    "logvar.0.freqs": lambda c: 2 * torch.pi * torch.randn(128, generator=torch.Generator().manual_seed(0)),
    "logvar.0.phases": lambda c: 2 * torch.pi * torch.rand(128, generator=torch.Generator().manual_seed(1)),
    # zero: the log-variance term then leaves NeMo's loss weighting unchanged
    "logvar.1.weight": lambda c: torch.zeros(1, 128),
}


def nemo_key_map(config: CosmosDiTConfig) -> Tuple[Dict[str, str], Dict[str, str]]:
    """(global tensors: ours -> NeMo key, per-layer tensors: ours relative -> stacked NeMo key)."""
    glob = {ours: PREFIX + theirs for ours, theirs in _GLOBAL_KEYS.items()}
    if config.extra_pos_emb:
        glob.update({ours: PREFIX + theirs for ours, theirs in _POS_EMB_KEYS.items()})
    return glob, {ours: LAYERS + theirs for ours, theirs in _LAYER_KEYS.items()}


def _interleave(w: torch.Tensor, n: int, heads: int) -> torch.Tensor:
    """[n*H*hd, in] ours ([q; k; v]) -> Megatron's per-head [q_h; k_h; v_h] order."""
    return w.reshape(n, heads, -1, w.shape[-1]).transpose(0, 1).reshape(w.shape)


def _deinterleave(w: torch.Tensor, n: int, heads: int) -> torch.Tensor:
    return w.reshape(heads, n, -1, w.shape[-1]).transpose(0, 1).reshape(w.shape)


def fuse_adaln(layer_sd: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Three AdaLN-LoRA projections -> NeMo's fused one (block-diagonal second matrix)."""
    out = {k: v for k, v in layer_sd.items() if not k.startswith(_SPLIT_ADALN)}
    out["adaln.linear_1.weight"] = torch.cat([layer_sd[f"{n}.linear_1.weight"] for n in _SPLIT_ADALN])
    out["adaln.linear_2.weight"] = torch.block_diag(*[layer_sd[f"{n}.linear_2.weight"] for n in _SPLIT_ADALN])
    return out


def split_adaln(layer_sd: Mapping[str, torch.Tensor], where: str) -> Dict[str, torch.Tensor]:
    """Inverse of fuse_adaln; a ValueError when the fused matrix is not block-diagonal."""
    out = {k: v for k, v in layer_sd.items() if not k.startswith("adaln.")}
    w1, w2 = layer_sd["adaln.linear_1.weight"], layer_sd["adaln.linear_2.weight"]
    r, d3 = w1.shape[0] // 3, w2.shape[0] // 3
    for i, name in enumerate(_SPLIT_ADALN):
        block = w2[i * d3:(i + 1) * d3]
        off_diagonal = torch.cat([block[:, : i * r], block[:, (i + 1) * r:]], dim=1)
        if off_diagonal.count_nonzero():
            raise BadInputError(f"{where}: the fused AdaLN weight is not block-diagonal (trained in NeMo)")
        out[f"{name}.linear_1.weight"] = w1[i * r:(i + 1) * r]
        out[f"{name}.linear_2.weight"] = block[:, i * r:(i + 1) * r]
    return out


def nemo_layer(layer_sd: Mapping[str, torch.Tensor], config: CosmosDiTConfig) -> Dict[str, torch.Tensor]:
    """One layer of our state dict (keys relative to ``layers.<i>.``) -> NeMo's tensors of that layer,
    unstacked (the stacked key's slice i)."""
    sd = dict(layer_sd) if config.adaln_fused else fuse_adaln(layer_sd)
    for ours, n in _INTERLEAVED.items():
        sd[ours] = _interleave(sd[ours], n, config.num_attention_heads)
    return {theirs: sd[ours] for ours, theirs in nemo_key_map(config)[1].items()}


def nemo_globals(state_dict: Mapping[str, torch.Tensor], config: CosmosDiTConfig,
                 extras: Mapping[str, torch.Tensor] | None = None) -> Dict[str, torch.Tensor]:
    """NeMo's tensors outside the layers: the network's, then NeMo's own (``pos_embedder.seq``,
    ``logvar.*``), whose values `extras` may give (e.g. a trained ``logvar.*``)."""
    out = {theirs: state_dict[ours] for ours, theirs in nemo_key_map(config)[0].items()}
    dtype = state_dict["t_norm.weight"].dtype
    extras = dict(extras or {})
    unknown = sorted(extras.keys() - _NEMO_ONLY.keys())
    if unknown:
        raise KeyError(f"not a NeMo-only tensor: {unknown[0]!r}")
    out.update({PREFIX + k: extras.get(k, make(config)).to(dtype) for k, make in _NEMO_ONLY.items()})
    return out


def layer_items(state_dict: Mapping[str, torch.Tensor], i: int) -> Dict[str, torch.Tensor]:
    pre = f"layers.{i}."
    return {k[len(pre):]: v for k, v in state_dict.items() if k.startswith(pre)}


def to_nemo(state_dict: Mapping[str, torch.Tensor], config: CosmosDiTConfig,
            extras: Mapping[str, torch.Tensor] | None = None) -> Dict[str, torch.Tensor]:
    """Our state dict -> NeMo's tensors (global ones, and per-layer ones stacked on a leading axis).
    `extras` gives values for NeMo's tensors outside the network (e.g. a trained ``logvar.*``)."""
    out = nemo_globals(state_dict, config, extras)
    per_layer = [nemo_layer(layer_items(state_dict, i), config) for i in range(config.num_layers)]
    for theirs in per_layer[0]:
        out[theirs] = torch.stack([sd[theirs] for sd in per_layer])
    return out


def from_nemo(tensors: Mapping[str, torch.Tensor], config: CosmosDiTConfig) -> Dict[str, torch.Tensor]:
    """NeMo's tensors (as read by read_nemo_tensors) -> our state dict for `config`."""
    glob, layer = nemo_key_map(config)
    out = {ours: tensors[theirs] for ours, theirs in glob.items()}
    for i in range(config.num_layers):
        sd = {ours: tensors[theirs][i] for ours, theirs in layer.items()}
        for ours, n in _INTERLEAVED.items():
            sd[ours] = _deinterleave(sd[ours], n, config.num_attention_heads)
        if not config.adaln_fused:
            sd = split_adaln(sd, f"layer {i}")
        out.update({f"layers.{i}.{k}": v.contiguous() for k, v in sd.items()})
    return out


def needs_fused_adaln(tensors: Mapping[str, torch.Tensor], config: CosmosDiTConfig) -> bool:
    """True when a NeMo checkpoint's AdaLN weights cannot be split into the reference's three."""
    key = LAYERS + _LAYER_KEYS["adaln.linear_2.weight"]
    w2 = tensors[key]
    r, d3 = w2.shape[-1] // 3, w2.shape[-2] // 3
    mask = torch.block_diag(*[torch.ones(d3, r, dtype=torch.bool)] * 3)
    return bool(w2[:, ~mask].count_nonzero())


# ---------------------------------------------------------------------------------------------
# Reading and writing through megatron.core.dist_checkpointing
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _process_group() -> Iterator[None]:
    """dist_checkpointing is collective: outside torchrun, run it in a one-process gloo group."""
    if dist.is_initialized():
        yield
        return
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _die_with_parent(parent: int, exit_if_orphaned: bool = True) -> None:
    """Called in a child forked by `parent`: make it die when `parent` dies (Linux's
    PR_SET_PDEATHSIG). If `parent` is already gone (or is not its parent), exit at once, or with
    `exit_if_orphaned` False carry on as before."""
    import ctypes
    import signal

    if os.getppid() != parent:
        if exit_if_orphaned:
            os._exit(0)
        return
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    if os.getppid() != parent and exit_if_orphaned:  # it died before that took effect
        os._exit(0)


@contextlib.contextmanager
def _writer_results_queue() -> Iterator[None]:
    """Megatron's torch_dist writer forks one process per file and reports through the queue of a
    multiprocessing Manager that it starts on first use and never stops: a server process (with
    spawn's resource tracker) that outlives the run, and a killed run too, as can its writers. For
    the one save, give it the queue of a manager of our own (forked, so no re-import of __main__
    and user scripts need no main guard; shut down when the save is done), and make the manager
    and the writers die with this process."""
    from multiprocessing import get_context
    from multiprocessing.managers import SyncManager

    from megatron.core.dist_checkpointing.strategies import filesystem_async

    writers = getattr(filesystem_async, "FileSystemWriterAsync", None)
    write = vars(writers).get("write_preloaded_data") if writers is not None else None
    if not hasattr(filesystem_async, "_results_queue") or not isinstance(write, staticmethod):
        yield  # another Megatron-Core than the 0.16 these hooks were written for: its own way
        return
    me = os.getpid()

    def write_in_a_child_that_dies_with_us(*args, **kwargs):
        _die_with_parent(me, exit_if_orphaned=False)
        return write.__func__(*args, **kwargs)

    manager = SyncManager(ctx=get_context("fork"))
    manager.start(initializer=_die_with_parent, initargs=(me,))
    previous, filesystem_async._results_queue = filesystem_async._results_queue, manager.Queue()
    writers.write_preloaded_data = staticmethod(write_in_a_child_that_dies_with_us)
    try:
        yield
    finally:
        writers.write_preloaded_data = write
        filesystem_async._results_queue = previous
        manager.shutdown()


@contextlib.contextmanager
def _cpu_torch_cuda() -> Iterator[None]:
    """Megatron's torch_dist writer calls torch.cuda.synchronize() and current_device(), which a
    CPU-only torch cannot answer; make them no-ops there (and only there)."""
    if torch.cuda.is_available():
        yield
        return
    saved = torch.cuda.synchronize, torch.cuda.current_device
    torch.cuda.synchronize, torch.cuda.current_device = (lambda *a, **k: None), (lambda: "cpu")
    try:
        yield
    finally:
        torch.cuda.synchronize, torch.cuda.current_device = saved


class _MetadataUnpickler(pickle.Unpickler):
    """torch.distributed.checkpoint keeps its index (``.metadata``) as a pickle and loads it with
    plain pickle.load; we unpickle it first with this allow-list so a crafted file cannot run code."""

    _MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.planner",
                "torch.distributed.checkpoint.filesystem")

    def find_class(self, module: str, name: str):
        if module in self._MODULES:
            obj = getattr(__import__(module, fromlist=[name]), name, None)
            if isinstance(obj, type):
                return obj
        if module == "torch" and name == "Size":
            return torch.Size
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if (module, name) == ("torch.serialization", "_get_layout"):
            return torch.serialization._get_layout
        if (module, name) == ("collections", "OrderedDict"):
            import collections

            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def check_weights_dir(weights_dir: str) -> str:
    """The folder's sharded backend (TORCH_DIST or ZARR); a ValueError/FileNotFoundError naming the
    file when it is not a readable checkpoint: missing metadata, another backend, a torch_dist index
    that asks to run code."""
    meta_json = os.path.join(weights_dir, "metadata.json")
    if not os.path.isfile(meta_json):
        raise MissingFileError(f"not a distributed checkpoint (no metadata.json): {weights_dir}")
    try:
        with open(meta_json) as f:
            backend = json.load(f).get("sharded_backend")
    except (OSError, ValueError, AttributeError) as e:
        raise BadInputError(f"cannot read {meta_json}: {first_line(e)}") from None
    if backend == ZARR:
        return ZARR  # its tensors are checked as they are opened; nothing pickled is read
    if backend != TORCH_DIST:
        raise BadInputError(f"{weights_dir}: sharded backend {backend!r} is not supported (torch_dist or zarr)")
    index = os.path.join(weights_dir, ".metadata")
    if not os.path.isfile(index):
        raise MissingFileError(f"checkpoint index missing: {index}")
    _check_shard_files(weights_dir, _read_index(index))
    return TORCH_DIST


def _read_index(index: str):
    try:
        with open(index, "rb") as f:
            return _MetadataUnpickler(f).load()
    except Exception as e:
        raise BadInputError(f"cannot read checkpoint index {index}: {first_line(e)}") from None


def _check_shard_files(weights_dir: str, metadata) -> None:
    """Every shard file the index names is there and long enough for what it should hold."""
    needed: Dict[str, int] = {}
    for info in getattr(metadata, "storage_data", {}).values():
        path = getattr(info, "relative_path", None)
        if isinstance(path, str):
            needed[path] = max(needed.get(path, 0), int(info.offset) + int(info.length))
    for name, size in sorted(needed.items()):
        path = os.path.join(weights_dir, name)
        if not os.path.isfile(path):
            raise MissingFileError(f"checkpoint shard missing: {path}")
        have = os.path.getsize(path)
        if have < size:
            raise BadInputError(f"checkpoint shard {path} is truncated: {have} of at least {size} bytes")


def _damaged_shard(weights_dir: str):
    """The first shard file one of whose items does not read back (after a failed load: this reads
    every item again, each as DCP stores it: a weights-only torch.save record)."""
    import io

    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = _read_index(os.path.join(weights_dir, ".metadata"))
    items: Dict[str, list] = {}
    for index, info in metadata.storage_data.items():  # tensors only: other objects are raw bytes
        if isinstance(metadata.state_dict_metadata.get(index.fqn), TensorStorageMetadata):
            items.setdefault(info.relative_path, []).append(info)
    for name in sorted(items):
        path = os.path.join(weights_dir, name)
        with open(path, "rb") as f:
            for info in sorted(items[name], key=lambda i: i.offset):
                f.seek(info.offset)
                try:
                    torch.load(io.BytesIO(f.read(info.length)), map_location="cpu", weights_only=True)
                except Exception:
                    return path
    return None


def _files_holding(weights_dir: str, key: str) -> List[str]:
    metadata = _read_index(os.path.join(weights_dir, ".metadata"))
    return sorted({os.path.join(weights_dir, info.relative_path) for index, info in metadata.storage_data.items()
                   if getattr(index, "fqn", None) == key})


def _check_tensors(weights_dir: str, shapes: Mapping[str, Tuple[int, ...]], config: CosmosDiTConfig) -> Dict[str, Tuple[int, ...]]:
    """The shapes of the tensors the DiT of `config` needs, after a ValueError naming the first one
    the checkpoint lacks, has and the DiT does not, or holds with another shape. `shapes`: the
    checkpoint's ``module.`` tensors."""
    expected = _expected_shapes(config)
    missing = sorted(expected.keys() - shapes.keys())
    if missing:
        raise BadInputError(f"{weights_dir}: checkpoint lacks tensor {missing[0]!r} ({len(missing)} missing)")
    unknown = sorted(k for k in shapes.keys() - expected.keys() if k[len(PREFIX):] not in _NEMO_ONLY)
    if unknown:
        raise BadInputError(f"{weights_dir}: checkpoint has tensor {unknown[0]!r} that this model does not have")
    for key, shape in expected.items():
        if tuple(shapes[key]) != shape:
            raise BadInputError(
                f"{weights_dir}: tensor {key!r} has shape {list(shapes[key])} but the "
                f"{config.num_layers}-layer, width-{config.hidden_size} config expects {list(shape)}"
            )
    return expected


def _torch_dist_metadata(weights_dir: str) -> Dict[str, object]:
    """{tensor name: DCP's TensorStorageMetadata} of a torch_dist folder, from the index as our
    allow-list unpickler reads it."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = _read_index(os.path.join(weights_dir, ".metadata"))
    return {k: v for k, v in metadata.state_dict_metadata.items() if isinstance(v, TensorStorageMetadata)}


def _read_torch_dist(weights_dir: str, keys) -> Dict[str, torch.Tensor]:
    """Whole global tensors of a torch_dist checkpoint, read by this process alone.

    Megatron's torch_dist folders are torch.distributed.checkpoint folders (Megatron adds
    ``metadata.json`` and a pickled ``common.pt``), so DCP reads the tensors directly, without a
    process group: one rank of a running job can read a base checkpoint while the others wait,
    ``common.pt`` is never opened (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 would make Megatron unpickle
    it), and the index is the one our allow-list unpickler read. Each stored item is a weights-only
    ``torch.save`` record."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader

    available = _torch_dist_metadata(weights_dir)
    request = {k: torch.empty(tuple(available[k].size), dtype=available[k].properties.dtype) for k in keys}
    if not request:
        return {}

    class Reader(FileSystemReader):
        def read_metadata(self):
            return _read_index(os.path.join(weights_dir, ".metadata"))

    try:
        dcp.load(request, storage_reader=Reader(weights_dir), no_dist=True)
    except (Exception, CheckpointException) as e:  # DCP's exception is not an Exception
        damaged = _damaged_shard(weights_dir)
        if damaged:
            raise BadInputError(f"checkpoint shard {damaged} is damaged: it does not hold the data its index "
                                "describes") from None
        raise BadInputError(f"cannot read checkpoint {weights_dir}: {_first_line(e)}") from None
    return request


def read_nemo_tensors(weights_dir: str, config: CosmosDiTConfig) -> Dict[str, torch.Tensor]:
    """The NeMo tensors the DiT of `config` needs, as whole global tensors on the CPU, after checking
    that the checkpoint holds each one with the shape the config implies."""
    if check_weights_dir(weights_dir) == ZARR:
        arrays = _zarr_arrays(weights_dir)
        expected = _check_tensors(weights_dir, {k: tuple(a.shape) for k, a in arrays.items()}, config)
        return {key: nemo_zarr.read_array(arrays[key], key) for key in expected}
    available = {k: tuple(v.size) for k, v in _torch_dist_metadata(weights_dir).items() if k.startswith(PREFIX)}
    loaded = _read_torch_dist(weights_dir, _check_tensors(weights_dir, available, config))
    for key, t in loaded.items():  # torch_dist has no checksums: a damaged shard shows as NaN or Inf
        if t.is_floating_point() and not torch.isfinite(t).all():
            files = ", ".join(_files_holding(weights_dir, key)) or weights_dir
            raise BadInputError(f"tensor {key!r} holds NaN or Inf values: a damaged shard? ({files})")
    return loaded


def _zarr_arrays(weights_dir: str) -> Dict[str, nemo_zarr.ts.TensorStore]:
    """The model's arrays of a zarr checkpoint (``module.`` keys; optimizer state is not opened)."""
    return {k: nemo_zarr.open_array(weights_dir, k) for k in nemo_zarr.array_keys(weights_dir) if k.startswith(PREFIX)}


def _first_line(e: BaseException) -> str:
    """DCP buries a missing shard's name deep in a multi-line message: prefer that line."""
    for line in str(e).strip().splitlines():
        if "No such file" in line or "Errno" in line:
            return line.strip()
    return first_line(e)


def _expected_shapes(config: CosmosDiTConfig) -> Dict[str, Tuple[int, ...]]:
    from ..models import CosmosDiT

    with torch.device("meta"):
        model = CosmosDiT(dataclasses.replace(config, adaln_fused=True))
    sd = model.state_dict()
    glob, layer = nemo_key_map(config)
    shapes = {theirs: tuple(sd[ours].shape) for ours, theirs in glob.items()}
    shapes.update({theirs: (config.num_layers, *sd[f"layers.0.{ours}"].shape) for ours, theirs in layer.items()})
    return shapes


def load_nemo_checkpoint(path: str, config: CosmosDiTConfig) -> Tuple[Dict[str, torch.Tensor], CosmosDiTConfig]:
    """Our state dict from a NeMo checkpoint (``weights/`` or its parent) and the config to build
    the model with: `config`, switched to the fused AdaLN when the checkpoint needs it."""
    weights_dir = weights_dir_of(path)
    tensors = read_nemo_tensors(weights_dir, config)
    if not config.adaln_fused and needs_fused_adaln(tensors, config):
        log.info("%s was trained with NeMo's fused AdaLN; loading it in that form", weights_dir)
        config = dataclasses.replace(config, adaln_fused=True)
    sd = from_nemo(tensors, config)
    return {k: v.to(config.params_dtype) for k, v in sd.items()}, config


def weights_dir_of(path: str) -> str:
    """`path` itself when it is a distributed-checkpoint folder, else its ``weights/`` sub-folder."""
    if os.path.isfile(os.path.join(path, "metadata.json")):
        return path
    sub = os.path.join(path, WEIGHTS_DIR)
    if os.path.isfile(os.path.join(sub, "metadata.json")):
        return sub
    raise MissingFileError(f"no NeMo distributed checkpoint in {path} (expected metadata.json there or in {sub})")


def read_saved_context(path: str) -> dict | None:
    """What we store in ``context/`` beside ``weights/``: {"config": the DiT config dict, "model": the
    model it was trained from, ...}; None for checkpoints NeMo itself wrote."""
    return read_context(os.path.dirname(weights_dir_of(path)))


def read_context(folder: str) -> dict | None:
    """`folder`/context/nemo_cosmos.json (a checkpoint's, with weights/ or lora/ beside it), or None."""
    f = os.path.join(folder, CONTEXT_DIR, CONFIG_FILE)
    if not os.path.isfile(f):
        return None
    try:
        with open(f, encoding="utf-8") as fh:
            context = json.load(fh)
    except (OSError, ValueError) as e:
        raise BadInputError(f"cannot read {f}: {first_line(e)}") from None
    if not isinstance(context, dict):
        raise BadInputError(f"{f} is not a JSON object")
    return context


def nemo_tensor_shapes(path: str) -> Dict[str, Tuple[int, ...]]:
    """{NeMo tensor name: global shape} from a checkpoint's index, without reading the weights."""
    weights_dir = weights_dir_of(path)
    if check_weights_dir(weights_dir) == ZARR:
        return {k: tuple(a.shape) for k, a in _zarr_arrays(weights_dir).items()}
    return {k: tuple(v.size) for k, v in _torch_dist_metadata(weights_dir).items()}


CONTEXT_WRITERS: List[Callable[[CosmosDiTConfig, str], None]] = []
"""Called with (config, context folder) on every save; nemo_plugin adds NeMo's io.json writer here."""


def write_context(folder: str, config: CosmosDiTConfig, context: dict | None = None) -> None:
    """`folder`/context: our config file ({"config": ..., and `context`}) and the CONTEXT_WRITERS'."""
    os.makedirs(os.path.join(folder, CONTEXT_DIR), exist_ok=True)
    with open(os.path.join(folder, CONTEXT_DIR, CONFIG_FILE), "w") as f:
        json.dump({"config": config_to_dict(config), **(context or {})}, f, indent=2)
    for write in CONTEXT_WRITERS:
        write(config, os.path.join(folder, CONTEXT_DIR))


def read_nemo_extras(path: str) -> Dict[str, torch.Tensor]:
    """NeMo's tensors outside the network (``logvar.*``, ...) that the checkpoint holds, by name."""
    weights_dir = weights_dir_of(path)
    if check_weights_dir(weights_dir) == ZARR:
        keys = set(nemo_zarr.array_keys(weights_dir))
        return {k: nemo_zarr.read_array(nemo_zarr.open_array(weights_dir, PREFIX + k), PREFIX + k)
                for k in _NEMO_ONLY if PREFIX + k in keys}
    available = _torch_dist_metadata(weights_dir)
    loaded = _read_torch_dist(weights_dir, [PREFIX + k for k in _NEMO_ONLY if PREFIX + k in available])
    return {k[len(PREFIX):]: v for k, v in loaded.items()}


def save_nemo_checkpoint(state_dict: Mapping[str, torch.Tensor], config: CosmosDiTConfig, ckpt_dir: str,
                         extra_context: dict | None = None, extras: Mapping[str, torch.Tensor] | None = None,
                         layers: Sequence[int] | None = None) -> str:
    """Write `ckpt_dir`/weights (NeMo's tensor names, torch_dist) and `ckpt_dir`/context. All ranks
    of a running process group call this. With `layers` None every rank passes the whole
    (replicated) state dict and rank 0 writes it; otherwise each rank passes only the layers it
    writes (`layers`, each layer on exactly one rank; a sharded run need not gather the model
    anywhere) and rank 0 also the tensors outside the layers. The folder appears only when
    complete: it is written beside it and renamed into place."""
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing import ShardedTensor

    from ..utils.io import staging_folder

    ckpt_dir = os.path.abspath(ckpt_dir)
    if os.path.exists(ckpt_dir):
        raise FileExistsError(f"checkpoint folder already exists: {ckpt_dir}")
    sd = {k: v.detach().cpu() for k, v in state_dict.items()}
    with _process_group():
        rank = dist.get_rank()
        if layers is None:  # replicated: every rank offers everything, replica 0 (rank 0) writes it
            tensors = to_nemo(sd, config, {k: v.detach().cpu() for k, v in (extras or {}).items()})
            sharded = {k: ShardedTensor.from_rank_offsets(k, t.contiguous(), replica_id=rank) for k, t in tensors.items()}
        else:
            sharded = {}
            if rank == 0:
                for k, t in nemo_globals(sd, config, {k: v.detach().cpu() for k, v in (extras or {}).items()}).items():
                    sharded[k] = ShardedTensor.from_rank_offsets(k, t.contiguous(), replica_id=0)
            for i in layers:  # slice i of each stacked tensor
                for k, t in nemo_layer(layer_items(sd, i), config).items():
                    sharded[f"{k}#{i}"] = ShardedTensor.from_rank_offsets(
                        k, t.contiguous()[None], (0, i, config.num_layers), replica_id=0)
        tmp = [staging_folder(os.path.dirname(ckpt_dir))] if rank == 0 else [None]
        if dist.get_world_size() > 1:
            dist.broadcast_object_list(tmp, src=0)
        tmp = tmp[0]
        try:
            if rank == 0:
                os.makedirs(os.path.join(tmp, WEIGHTS_DIR))
            if dist.get_world_size() > 1:
                dist.barrier()
            with _cpu_torch_cuda(), _writer_results_queue():
                dist_checkpointing.save(sharded, os.path.join(tmp, WEIGHTS_DIR))
            if rank == 0:
                write_context(tmp, config, extra_context)
                os.replace(tmp, ckpt_dir)
        except BaseException:
            if rank == 0:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        if dist.get_world_size() > 1:
            dist.barrier()
    return ckpt_dir
