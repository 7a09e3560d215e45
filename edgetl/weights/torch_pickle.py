"""Read a PyTorch ``state_dict`` file into numpy arrays, without torch and without running its code.

A ``.pth`` file is a pickle, and unpickling runs whatever callable the file names. This reader
accepts only what a ``state_dict`` needs (tensors rebuilt by ``torch._utils._rebuild_tensor_v2``,
typed storages, ``OrderedDict`` and plain containers) and refuses any other global with
:class:`UnsafeWeightsFile` *before* it is called, so a hostile weights file cannot execute code.

Both formats that ``torch.save`` writes are supported:

* zip (torch >= 1.6): ``<root>/data.pkl`` plus one raw file per storage in ``<root>/data/``;
* legacy (torch < 1.6): magic number, protocol, system info, the pickled object, the storage keys,
  then each storage as an int64 element count followed by its raw little-endian bytes.

The pre-1.0 tar format is refused with a message that says how to convert the file.

>>> from edgetl.weights.torch_pickle import ALLOWED_GLOBALS
>>> ("torch._utils", "_rebuild_tensor_v2") in ALLOWED_GLOBALS
True
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from . import UnsafeWeightsFile, WeightsFileError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER

# storage class name -> numpy dtype (little-endian, as torch.save writes on every platform we know)
STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


@dataclass(frozen=True)
class _StorageType:
    """Stands in for ``torch.FloatStorage`` & co.: carries the dtype, cannot be called."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STORAGE_DTYPES[self.name])


class _Storage:
    """A storage referenced by a persistent id; its bytes are attached once they are read."""

    def __init__(self, storage_type: _StorageType, key: str, numel: int):
        self.dtype = storage_type.dtype
        self.key = key
        self.numel = numel
        self.array: np.ndarray | None = None


@dataclass
class _PendingTensor:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def materialize(self, source: str) -> np.ndarray:
        flat = self.storage.array
        if flat is None:
            raise WeightsFileError(f"{source}: storage {self.storage.key} is referenced but missing; the file is truncated")
        if self.offset < 0 or any(s < 0 for s in self.stride) or any(n < 0 for n in self.size):
            raise WeightsFileError(f"{source}: a tensor has a negative offset, size or stride; the file is corrupt or hostile")
        if self.offset >= max(flat.size, 1) and self.size and min(self.size) > 0:
            raise WeightsFileError(f"{source}: a tensor starts past the end of storage {self.storage.key}; the file is corrupt")
        if not self.size:
            if self.offset >= flat.size:
                raise WeightsFileError(f"{source}: a scalar lies past the end of storage {self.storage.key}; the file is corrupt")
            return np.array(flat[self.offset])
        needed = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1
        if min(self.size) > 0 and needed > flat.size:
            raise WeightsFileError(f"{source}: a tensor reaches past the end of storage {self.storage.key}; the file is corrupt")
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :], shape=self.size, strides=[s * flat.itemsize for s in self.stride], writeable=False
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise WeightsFileError("a tensor was built from something that is not a storage; the file is not a state_dict")
    return _PendingTensor(storage, int(storage_offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, source: str, load_storage: Callable[[tuple], _Storage]):
        super().__init__(file)
        self._source = source
        self._load_storage = load_storage

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeWeightsFile(
                f"{self._source}: refused to load '{module}.{name}'. A weights file should hold only tensors, "
                "and this one asks to import and call other code, which can run arbitrary commands. "
                "Do not use this file; get the weights from their original publisher."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise UnsafeWeightsFile(f"{self._source}: unexpected persistent id {pid!r:.80}; only tensor storages are allowed")
        return self._load_storage(pid)


def _resolve(obj: Any, source: str) -> Any:
    """Replace every pending tensor in ``obj`` (dicts, lists, tuples) by its numpy array."""
    if isinstance(obj, _PendingTensor):
        return obj.materialize(source)
    if isinstance(obj, dict):
        return type(obj)((k, _resolve(v, source)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v, source) for v in obj)
    return obj


def _load_zip(path: Path) -> Any:
    source = str(path)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise WeightsFileError(f"{source}: a zip file without data.pkl is not a PyTorch checkpoint")
        root = pkl[: -len("data.pkl")]
        byteorder = root + "byteorder"
        if byteorder in names and archive.read(byteorder).strip() != b"little":
            raise WeightsFileError(f"{source}: big-endian checkpoints are not supported; re-save it on a little-endian machine")

        def load_storage(pid: tuple) -> _Storage:
            _, storage_type, key, _location, numel = pid[:5]
            storage = _Storage(storage_type, str(key), int(numel))
            try:
                raw = archive.read(f"{root}data/{key}")
            except KeyError:
                raise WeightsFileError(f"{source}: storage data/{key} is missing from the archive; the file is truncated") from None
            storage.array = np.frombuffer(raw, dtype=storage.dtype)
            return storage

        try:
            obj = _SafeUnpickler(io.BytesIO(archive.read(pkl)), source, load_storage).load()
        except WeightsFileError:
            raise
        except Exception as exc:  # a damaged pickle fails in many ways
            raise WeightsFileError(f"{source}: data.pkl is not a readable PyTorch checkpoint ({exc})") from exc
    return _resolve(obj, source)


def _load_legacy(path: Path) -> Any:
    source = str(path)
    data = path.read_bytes()
    stream = io.BytesIO(data)
    storages: dict[str, _Storage] = {}

    def load_storage(pid: tuple) -> _Storage:
        _, storage_type, key, _location, numel = pid[:5]
        key = str(key)
        if key not in storages:
            storages[key] = _Storage(storage_type, key, int(numel))
        return storages[key]

    def header() -> Any:
        return _SafeUnpickler(stream, source, load_storage).load()

    try:
        if header() != LEGACY_MAGIC:
            raise WeightsFileError(f"{source}: not a PyTorch checkpoint (wrong magic number)")
        header()  # protocol version
        sys_info = header()
        if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
            raise WeightsFileError(f"{source}: big-endian checkpoints are not supported; re-save it on a little-endian machine")
        obj = header()
        keys = header()
    except WeightsFileError:
        raise
    except Exception as exc:  # a damaged pickle fails in many ways (EOFError, UnpicklingError, TypeError...)
        raise WeightsFileError(f"{source}: not a readable PyTorch checkpoint ({exc}); is the file complete?") from exc
    offset = stream.tell()
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise WeightsFileError(f"{source}: storage {key} is listed but never used; the file is corrupt")
        if offset + 8 > len(data):
            raise WeightsFileError(f"{source}: the file ends before storage {key}; it is truncated, download it again")
        (numel,) = struct.unpack_from("<q", data, offset)
        offset += 8
        nbytes = numel * storage.dtype.itemsize
        if offset + nbytes > len(data):
            raise WeightsFileError(f"{source}: the file ends inside storage {key}; it is truncated, download it again")
        storage.array = np.frombuffer(data, dtype=storage.dtype, count=numel, offset=offset)
        offset += nbytes
    return _resolve(obj, source)


def load_torch_file(path: str | Path) -> Any:
    """Return the object stored in a ``torch.save`` file, tensors as numpy arrays, torch not needed.

    Raises :class:`UnsafeWeightsFile` when the file asks for anything but tensors and containers,
    and :class:`WeightsFileError` when it is missing, truncated or in an unsupported format.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"{path}: no such weights file")
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    with path.open("rb") as f:
        is_pickle = f.read(1) == b"\x80"  # the PROTO opcode that starts every legacy checkpoint
    if not is_pickle and tarfile.is_tarfile(path):
        raise WeightsFileError(
            f"{path}: this is a pre-1.0 PyTorch tar checkpoint, which edgetl does not read; "
            "load it with torch and re-save it with torch.save(state_dict, 'weights.pth')"
        )
    return _load_legacy(path)


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return the ``name -> array`` state dict in a ``.pth`` file (unwrapping ``{"state_dict": ...}``)."""
    obj = load_torch_file(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsFileError(f"{path}: holds a {type(obj).__name__}, not a state_dict (a dict of tensors)")
    return {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
