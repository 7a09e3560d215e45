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

A weights file is also untrusted as to *size*: every declared size is checked against the bytes the
file really holds before anything is allocated. A tensor may not hold more elements than its storage
(a stride-0 tensor cannot declare gigabytes), the tensors together may not exceed
:data:`MAX_EXPANSION` times the storages, a zip member is read only up to its declared size and only
when that size is what the pickle declares (no deflate bombs), nesting is bounded
(:data:`MAX_DEPTH`), and every failure is a :class:`WeightsFileError` that names the file.

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
from .pickle_depth import check_nesting

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER

MAX_FILE_BYTES = 2 << 30  # the largest weights file read (EfficientNet-Lite2 is 40 MB)
MAX_PICKLE_BYTES = 64 << 20  # data.pkl of a zip checkpoint: names and shapes, never the tensors
MAX_COMPRESSION_RATIO = 50  # deflated weights shrink by ~10 %; a bomb by 1000x
MAX_EXPANSION = 4  # materialized tensors / storage bytes (views of one storage share it)
MAX_DEPTH = 64  # nesting of dicts, lists and tuples in a checkpoint (a state_dict has 1 or 2)
MAX_DIMS = 16

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

    def __init__(self, storage_type: _StorageType, key: str, numel: int, source: str):
        if numel < 0:
            raise WeightsFileError(f"{source}: storage {key} declares a negative size ({numel}); the file is corrupt or hostile")
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
        if len(self.size) > MAX_DIMS or len(self.stride) != len(self.size):
            raise WeightsFileError(f"{source}: a tensor has {len(self.size)} sizes and {len(self.stride)} strides; the file is corrupt")
        elements = int(np.prod(self.size, dtype=object)) if self.size else 1
        if elements > max(flat.size, 1):
            raise WeightsFileError(
                f"{source}: a tensor of shape {self.size} declares {elements:,} elements from storage {self.storage.key}, "
                f"which holds {flat.size:,} (strides {self.stride} repeat them); a weights file never does this, "
                "the file is corrupt or hostile"
            )
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


class _Resolver:
    """Replaces every pending tensor (in dicts, lists, tuples) by its array, within the size and depth bounds.

    A tensor referenced twice (pickle memo) is materialized once; the total bytes materialized may not
    exceed :data:`MAX_EXPANSION` times the storages' bytes.
    """

    def __init__(self, source: str, storage_bytes: int):
        self.source = source
        self.budget = MAX_EXPANSION * storage_bytes + (1 << 20)
        self.done: dict[int, np.ndarray] = {}

    def __call__(self, obj: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise WeightsFileError(
                f"{self.source}: containers nested deeper than {MAX_DEPTH} levels; a state_dict is a flat dict of tensors"
            )
        if isinstance(obj, _PendingTensor):
            if id(obj) not in self.done:
                array = obj.materialize(self.source)
                self.budget -= array.nbytes
                if self.budget < 0:
                    raise WeightsFileError(
                        f"{self.source}: its tensors add up to more than {MAX_EXPANSION}x the bytes the file holds "
                        "(views repeated over and over); the file is corrupt or hostile"
                    )
                self.done[id(obj)] = array
            return self.done[id(obj)]
        if isinstance(obj, dict):
            return type(obj)((k, self(v, depth + 1)) for k, v in obj.items())
        if isinstance(obj, (list, tuple)):
            return type(obj)(self(v, depth + 1) for v in obj)
        return obj



def _unpickle(stream: BinaryIO, source: str, load_storage: Callable[[tuple], _Storage]) -> Any:
    start = stream.tell()
    check_nesting(stream, source, MAX_DEPTH)
    stream.seek(start)
    return _SafeUnpickler(stream, source, load_storage).load()


def _storage_from_pid(pid: tuple, source: str) -> _Storage:
    _, storage_type, key, _location, numel = pid[:5]
    return _Storage(storage_type, str(key), int(numel), source)


def _read_member(archive: zipfile.ZipFile, name: str, size: int, source: str) -> bytes:
    """Read a zip member of ``size`` declared bytes, never decompressing more than that."""
    info = archive.getinfo(name)
    if info.file_size != size:
        raise WeightsFileError(
            f"{source}: {name} holds {info.file_size:,} bytes but the checkpoint declares {size:,}; the file is corrupt or hostile"
        )
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1024):
        raise WeightsFileError(
            f"{source}: {name} would expand {info.compress_size:,} compressed bytes to {info.file_size:,} "
            f"(over {MAX_COMPRESSION_RATIO}x); weights do not compress like that, the file is a decompression bomb"
        )
    with archive.open(info) as member:
        raw = member.read(size + 1)
    if len(raw) != size:
        raise WeightsFileError(f"{source}: {name} holds {len(raw):,} bytes, not the {size:,} it declares; the file is corrupt")
    return raw


def _load_zip(path: Path) -> Any:
    source = str(path)
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        pkl = next((n for n in sorted(names) if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise WeightsFileError(f"{source}: a zip file without data.pkl is not a PyTorch checkpoint")
        root = pkl[: -len("data.pkl")]
        byteorder = root + "byteorder"
        if byteorder in names and _read_member(archive, byteorder, archive.getinfo(byteorder).file_size, source)[:16].strip() != b"little":
            raise WeightsFileError(f"{source}: big-endian checkpoints are not supported; re-save it on a little-endian machine")
        pkl_size = archive.getinfo(pkl).file_size
        if pkl_size > MAX_PICKLE_BYTES:
            raise WeightsFileError(f"{source}: data.pkl declares {pkl_size:,} bytes; a checkpoint's pickle holds names and shapes only")
        storages: dict[str, _Storage] = {}
        total = 0

        def load_storage(pid: tuple) -> _Storage:
            nonlocal total
            storage = _storage_from_pid(pid, source)
            if storage.key in storages:
                return storages[storage.key]
            member = f"{root}data/{storage.key}"
            if member not in names:
                raise WeightsFileError(f"{source}: storage data/{storage.key} is missing from the archive; the file is truncated")
            nbytes = storage.numel * storage.dtype.itemsize
            total += nbytes
            if total > MAX_FILE_BYTES:
                raise WeightsFileError(f"{source}: its storages declare over {MAX_FILE_BYTES >> 30} GiB; edgetl reads smaller weights")
            storage.array = np.frombuffer(_read_member(archive, member, nbytes, source), dtype=storage.dtype)
            storages[storage.key] = storage
            return storage

        obj = _unpickle(io.BytesIO(_read_member(archive, pkl, pkl_size, source)), source, load_storage)
    return _Resolver(source, total)(obj)


def _load_legacy(path: Path) -> Any:
    source = str(path)
    data = path.read_bytes()
    stream = io.BytesIO(data)
    storages: dict[str, _Storage] = {}

    def load_storage(pid: tuple) -> _Storage:
        storage = _storage_from_pid(pid, source)
        return storages.setdefault(storage.key, storage)

    def header() -> Any:
        return _unpickle(stream, source, load_storage)

    if header() != LEGACY_MAGIC:
        raise WeightsFileError(f"{source}: not a PyTorch checkpoint (wrong magic number)")
    header()  # protocol version
    sys_info = header()
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise WeightsFileError(f"{source}: big-endian checkpoints are not supported; re-save it on a little-endian machine")
    obj = header()
    keys = header()
    if not isinstance(keys, list):
        raise WeightsFileError(f"{source}: the storage list is a {type(keys).__name__}; the file is corrupt")
    offset = stream.tell()
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise WeightsFileError(f"{source}: storage {key} is listed but never used; the file is corrupt")
        if offset + 8 > len(data):
            raise WeightsFileError(f"{source}: the file ends before storage {key}; it is truncated, download it again")
        (numel,) = struct.unpack_from("<q", data, offset)
        offset += 8
        if numel != storage.numel:
            raise WeightsFileError(
                f"{source}: storage {key} holds {numel:,} elements but the checkpoint declares {storage.numel:,}; the file is corrupt"
            )
        nbytes = numel * storage.dtype.itemsize
        if offset + nbytes > len(data):
            raise WeightsFileError(f"{source}: the file ends inside storage {key}; it is truncated, download it again")
        storage.array = np.frombuffer(data, dtype=storage.dtype, count=numel, offset=offset)
        offset += nbytes
    return _Resolver(source, len(data))(obj)


def load_torch_file(path: str | Path) -> Any:
    """Return the object stored in a ``torch.save`` file, tensors as numpy arrays, torch not needed.

    Raises :class:`UnsafeWeightsFile` when the file asks for anything but tensors and containers,
    and :class:`WeightsFileError` (naming the file) when it is missing, truncated, in an unsupported
    format, or declares more than it holds.
    """
    path = Path(path)
    if not path.exists():
        raise WeightsFileError(f"{path}: no such weights file")
    if not path.is_file():
        raise WeightsFileError(f"{path}: not a regular file; give the path of a .pth weights file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise WeightsFileError(f"{path}: {size:,} bytes; edgetl reads weights files up to {MAX_FILE_BYTES >> 30} GiB")
    try:
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
    except WeightsFileError:
        raise
    except (MemoryError, RecursionError) as exc:  # a bound above was missed: still name the file, keep the process
        raise WeightsFileError(f"{path}: too large or too deeply nested to read ({type(exc).__name__}); the file is corrupt or hostile") from None
    except Exception as exc:  # a damaged pickle or zip fails in many ways (EOFError, UnpicklingError, BadZipFile, zlib.error...)
        raise WeightsFileError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc!s:.200}); is the file complete?") from exc


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return the ``name -> array`` state dict in a ``.pth`` file (unwrapping ``{"state_dict": ...}``)."""
    obj = load_torch_file(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsFileError(f"{path}: holds a {type(obj).__name__}, not a state_dict (a dict of tensors)")
    return {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
