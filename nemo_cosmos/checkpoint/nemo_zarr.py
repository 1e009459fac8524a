"""Read Megatron's *zarr* distributed-checkpoint backend (``"sharded_backend": "zarr"`` in
``metadata.json``), which NeMo wrote with ``save_ckpt_format='zarr'`` (NVIDIA's Cosmos post-training
recipe does). megatron-core 0.16 no longer reads it.

Each tensor is a zarr v2 array in the sub-folder named by its key: a ``.zarray`` (shape, chunk shape,
dtype, ``"compressor": null``) and one raw chunk file per shard the saving run wrote, named by its
index in the chunk grid (``0.1.0``); the chunk shape is the global shape divided by the shard grid
(``ShardedTensor.max_allowed_chunks``). bf16 is kept as 2-byte little-endian words under the
non-standard dtype ``"bfloat16"``: zarr-python 3 cannot parse it; TensorStore, which Megatron itself
read these checkpoints with, can. TensorStore also knows no object dtypes and no filters, so a
``.zarray`` cannot make it unpickle a chunk (zarr-python's object arrays would).

Nothing pickled in the folder is read: not ``common.pt`` and not the ``*_extra_state`` folders
(Transformer Engine's state, ``torch.save``-d objects).
"""

from __future__ import annotations

import os
import re
from typing import List

import ml_dtypes
import numpy as np
import tensorstore as ts
import torch

from ..errors import BadInputError

EXTRA_STATE = "_extra_state"

# what Megatron stored parameters as; anything else in a .zarray is refused
_TENSOR_DTYPES = {np.dtype(t) for t in (np.bool_, np.uint8, np.int8, np.int16, np.int32, np.int64,
                                        np.float16, np.float32, np.float64, ml_dtypes.bfloat16)}
# TensorStore's errors end with the JSON spec it was opened with or its source line; the path is named
_SPEC_SUFFIX = re.compile(r"\s*\[(?:tensorstore_spec|source locations)=.*$", re.S)
_STATUS_PREFIX = re.compile(r"^[A-Z_]+: ")


def array_keys(weights_dir: str) -> List[str]:
    """The tensor keys of a zarr checkpoint: its sub-folders, except Transformer Engine's
    ``*_extra_state`` objects and the ``*.sync`` lock folders of Megatron's optimizer-state writes."""
    return sorted(
        e.name for e in os.scandir(weights_dir)
        if e.is_dir() and not e.name.endswith(".sync") and EXTRA_STATE not in e.name
    )


def _message(e: Exception) -> str:
    return _STATUS_PREFIX.sub("", _SPEC_SUFFIX.sub("", str(e).strip()).splitlines()[0])


def open_array(weights_dir: str, key: str) -> ts.TensorStore:
    """The array of `key`, opened read-only (its ``.zarray`` parsed, no chunk read yet)."""
    path = os.path.join(weights_dir, key)
    spec = {
        "driver": "zarr",
        "kvstore": {"driver": "file", "path": path},
        # Megatron writes every chunk; a missing one is damage, not the fill value
        "fill_missing_data_reads": False,
    }
    try:
        array = ts.open(spec, open=True, read=True).result()
    except ValueError as e:
        raise BadInputError(f"cannot read tensor {key!r}: {_message(e)}") from None
    if array.dtype.numpy_dtype not in _TENSOR_DTYPES:
        raise BadInputError(f"cannot read tensor {key!r}: dtype {array.dtype.name} in {path}/.zarray is not a tensor type")
    return array


def read_array(array: ts.TensorStore, key: str) -> torch.Tensor:
    """The whole array as a CPU tensor of the stored dtype; a ValueError naming a missing or damaged
    chunk file."""
    try:
        x = array.read().result()
    except ValueError as e:
        raise BadInputError(f"cannot read tensor {key!r}: {_message(e)}") from None
    if x.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(x)
