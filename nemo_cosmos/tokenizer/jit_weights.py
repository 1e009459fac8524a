"""Read the tensors of a TorchScript archive (NVIDIA ships the tokenizer as ``*.jit``) as plain
data: no TorchScript is compiled and no pickle code runs.

A TorchScript archive is a zip holding ``<name>/data.pkl`` (the module tree: objects of classes
named ``__torch__.*`` whose state dicts hold sub-modules and tensors) and ``<name>/data/<key>``
(raw storages). A restricted unpickler turns every ``__torch__`` object into a plain record and
allows nothing else but tensor rebuilding, so a malicious file fails instead of running code.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from typing import Dict

import torch

from ..errors import BadInputError, first_line

_TENSOR_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("collections", "OrderedDict"): __import__("collections").OrderedDict,
}
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _Record:
    """Stand-in for a scripted module object: keeps whatever state the archive gives it."""

    def __init__(self, *args):
        self.state = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {}


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


class _WeightsUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__"):
            return type(name, (_Record,), {})
        if (module, name) in _TENSOR_GLOBALS:
            return _TENSOR_GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {kind!r}")
        dtype = storage_type.dtype
        raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
        untyped = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
        return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)


def _collect(obj, prefix: str, out: Dict[str, torch.Tensor], seen: set) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    for name, value in obj.state.items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, _Record):
            _collect(value, f"{prefix}{name}.", out, seen)


def read_torchscript_weights(path: str | os.PathLike) -> Dict[str, torch.Tensor]:
    """{dotted name: tensor} for every parameter and buffer in a TorchScript archive."""
    path = os.fspath(path)
    try:
        with zipfile.ZipFile(path) as archive:
            pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if not pkl:
                raise ValueError("no data.pkl: not a TorchScript archive")
            prefix = pkl[0][: -len("data.pkl")]
            root = _WeightsUnpickler(archive.read(pkl[0]), archive, prefix).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, KeyError, EOFError, ValueError) as e:
        raise BadInputError(f"cannot read weights from {path}: {first_line(e)}") from None
    if not isinstance(root, _Record):
        raise BadInputError(f"cannot read weights from {path}: the archive holds no module")
    out: Dict[str, torch.Tensor] = {}
    _collect(root, "", out, set())
    return out
