"""The imprinted-model artifact: a base model plus class means, and the head that turns embeddings into scores.

Weight imprinting (Qi et al., CVPR 2018) adds a class to a model from a handful of images: the
class's weight vector is the normalised mean of their L2-normalised embeddings, and an image's
score for the class is the cosine of its embedding with that vector. :func:`edgetl_runtime.imprint`
writes the result as one self-describing file (a ZIP archive, entries stored, not compressed):

- ``edgetl-imprint.json``: the format marker and version, the model contract (``task:
  imprinted``, every label, the good labels, the base's input), the base file's name, format and
  SHA-256, the embedding's size, the number of labels the base itself classifies, the scale of
  the cosines and the number of images behind each imprinted class;
- ``means.npy``: the running means (not yet renormalised) of the imprinted classes' normalised
  embeddings, float32 (classes, size): adding images updates them without the earlier images;
- the base model, byte for byte (``base.tflite`` or ``base.onnx``): the file runs on its own.

Scores. With a bare embedding extractor as the base every class is imprinted:
``softmax(scale * cos(e, m_c))``. With an edgetl classifier exported with ``--embedding`` as the
base, its trained head keeps deciding among its own labels, and the imprinted classes compete with
the export's *prototypes* (a few centres of each label's training embeddings; a label's cosine is
that of its nearest prototype): with ``s = softmax(scale * [cos to the trained labels, cos to the
imprinted means])`` and ``q`` the share of the imprinted classes, the
scores are ``[head probabilities * (1 - q), s of the imprinted classes]``. The defect score and
verdict follow the contract's one rule (1 - probability of the good labels).

A file someone hands over is read with bounds: the archive's directory is checked from its last
bytes before Python's ``zipfile`` parses it (exactly the three known entries, no ZIP64, no
encryption), only stored entries, sizes checked before reading, ``allow_pickle=False``, the
base's hash checked, and the contract checked against the base's own input.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .backends import Backend, TensorSpec
from .contract import MAX_EMBEDDING, ModelSpec, OutputSpec, _parse_json
from .errors import EdgetlRuntimeError, MetadataError, ModelFormatError
from .preprocess import from_model_output

FORMAT = "edgetl-imprint"
VERSION = 1
MANIFEST = "edgetl-imprint.json"
MEANS = "means.npy"
SUFFIX = ".imprint"
DEFAULT_SCALE = 10.0  # cosines in [-1, 1] times 10: a 0.1 lead in cosine is a factor e in the scores
ZIP_MAGIC = b"PK\x03\x04"
MAX_BASE_BYTES = 2**31
MAX_MEANS_BYTES = 256 * 2**20
MAX_COUNT = 2**31  # images behind one class mean
ENTRIES = 3  # manifest, means, base
EOCD, EOCD_SIZE = b"PK\x05\x06", 22  # the ZIP end-of-central-directory record and its fixed size
MAX_DIRECTORY = 4096  # bytes of central directory: three short names need a few hundred


def is_artifact(data: bytes) -> bool:
    """True when ``data`` is a ZIP archive (what an imprinted model is; no .tflite/.onnx starts like one)."""
    return data[:4] == ZIP_MAGIC


@dataclass(frozen=True)
class Artifact:
    """An imprinted model as read or about to be written (see the module docstring)."""

    spec: ModelSpec
    base_name: str  # the base file's name when it was imprinted on, for people
    base_format: str  # tflite | onnx
    base_bytes: bytes
    base_classes: int  # labels the base's head classifies (0: a bare embedding extractor)
    embedding: int  # the embedding's size
    means: np.ndarray  # (imprinted classes, embedding) float32 running means
    counts: tuple[int, ...]  # images behind each imprinted class
    scale: float = DEFAULT_SCALE

    @property
    def imprinted_labels(self) -> tuple[str, ...]:
        return self.spec.labels[self.base_classes:]

    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "contract": self.spec.to_dict(),
            "base": {"file": f"base.{self.base_format}", "name": self.base_name, "format": self.base_format,
                     "sha256": hashlib.sha256(self.base_bytes).hexdigest(), "classes": self.base_classes},
            "embedding": self.embedding, "scale": self.scale, "counts": list(self.counts),
        }  # fmt: skip

    def to_bytes(self) -> bytes:
        """Return the artifact's file bytes (a ZIP archive of stored entries)."""
        means = io.BytesIO()
        np.save(means, np.ascontiguousarray(self.means, dtype=np.float32), allow_pickle=False)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr(MANIFEST, json.dumps(self.manifest(), indent=2, sort_keys=True) + "\n")
            zf.writestr(MEANS, means.getvalue())
            zf.writestr(f"base.{self.base_format}", self.base_bytes)
        return out.getvalue()


def _check_directory(data: bytes, where: str) -> None:
    """Refuse an archive whose directory (read from its end record) is not that of three small entries.

    ``zipfile`` reads the whole central directory into objects when it opens an archive: a file of
    millions of entries would take gigabytes before any check could run.
    """
    at = data.rfind(EOCD, max(0, len(data) - EOCD_SIZE - 65535))
    if at < 0 or len(data) - at < EOCD_SIZE:
        raise ModelFormatError(f"{where}: a damaged imprinted model (no ZIP end record); the file is truncated: copy it "
                               "again or imprint again")  # fmt: skip
    entries, directory = int.from_bytes(data[at + 10:at + 12], "little"), int.from_bytes(data[at + 12:at + 16], "little")
    zip64 = at >= 20 and data[at - 20:at - 16] == b"PK\x06\x07"  # a ZIP64 locator overrides the end record
    if entries != ENTRIES or directory > MAX_DIRECTORY or zip64:
        raise ModelFormatError(f"{where}: an archive of {entries} entries ({directory} bytes of directory); an imprinted "
                               f"model holds exactly {ENTRIES}: the file was not written by edgetl-runtime imprint")  # fmt: skip


def _entry(zf: zipfile.ZipFile, name: str, limit: int, where: str) -> bytes:
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise ModelFormatError(f"{where}: an imprinted model without its {name}; the file is incomplete: "
                               "imprint again (edgetl-runtime imprint)") from None  # fmt: skip
    if info.flag_bits & 0x61:  # encrypted (0x1), patched data (0x20), strong encryption (0x40): never written by us
        raise ModelFormatError(f"{where}: entry {name} is encrypted or patched; the file was not written by "
                               "edgetl-runtime imprint")  # fmt: skip
    if info.compress_type != zipfile.ZIP_STORED or info.file_size > limit:
        raise ModelFormatError(f"{where}: entry {name} is compressed or {info.file_size} bytes (limit {limit}); "
                               "edgetl writes neither: the file was not written by edgetl-runtime imprint")  # fmt: skip
    return zf.read(info)


def read_artifact(path: Path, data: bytes) -> Artifact:
    """Return the :class:`Artifact` in file bytes ``data``, or raise a clear error naming ``path``."""
    where = str(path)
    _check_directory(data, where)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
            if MANIFEST not in names:
                raise ModelFormatError(f"{where}: a ZIP archive but not an imprinted model (no {MANIFEST}); pass a "
                                       ".tflite, .onnx or .imprint file")  # fmt: skip
            manifest = _parse_json(_entry(zf, MANIFEST, 2**24, where), f"{where}: {MANIFEST}")
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise MetadataError(f"{where}: {MANIFEST} does not describe an imprinted model")
            version = manifest.get("version")
            if version != VERSION:
                raise MetadataError(f"{where}: imprinted-model version {version!r}; this edgetl-runtime reads version "
                                    f"{VERSION}: upgrade edgetl-runtime (pip install -U edgetl-runtime)")  # fmt: skip
            base, spec = manifest.get("base"), ModelSpec.from_dict(manifest.get("contract"))
            if not isinstance(base, dict) or base.get("format") not in ("tflite", "onnx"):
                raise MetadataError(f"{where}: {MANIFEST} does not say the base model's format (tflite or onnx)")
            expected = {MANIFEST, MEANS, f"base.{base['format']}"}
            if len(names) != ENTRIES or set(names) != expected:
                raise ModelFormatError(f"{where}: entries {sorted(names)}; an imprinted model holds exactly "
                                       f"{sorted(expected)}: the file was not written by edgetl-runtime imprint")  # fmt: skip
            base_bytes = _entry(zf, f"base.{base['format']}", MAX_BASE_BYTES, where)
            raw_means = _entry(zf, MEANS, MAX_MEANS_BYTES, where)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, NotImplementedError, ValueError, EOFError,
            OSError) as exc:  # what zipfile raises for damaged, encrypted or unsupported archives
        if isinstance(exc, EdgetlRuntimeError):
            raise
        raise ModelFormatError(f"{where}: a damaged imprinted model ({exc}); the file is truncated or altered: copy it "
                               "again or imprint again") from None  # fmt: skip
    if hashlib.sha256(base_bytes).hexdigest() != base.get("sha256"):
        raise ModelFormatError(f"{where}: its base model does not match the SHA-256 recorded when it was imprinted; "
                               "the file was altered: copy it again or imprint again")  # fmt: skip
    return _checked(where, spec, base, base_bytes, _means(raw_means, where), manifest)


def _means(raw: bytes, where: str) -> np.ndarray:
    """Return the float32 matrix in ``.npy`` bytes, its header checked before any allocation."""
    fmt = np.lib.format
    stream = io.BytesIO(raw)
    try:
        version = fmt.read_magic(stream)
        shape, _, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(stream)
        if dtype != np.float32 or len(shape) != 2 or 4 * int(np.prod(shape)) != len(raw) - stream.tell():
            raise ValueError(f"a {dtype} array of shape {shape} in {len(raw)} bytes")
        stream.seek(0)
        return np.load(stream, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ModelFormatError(f"{where}: unreadable class means ({exc}); imprint again") from None


def _checked(where: str, spec: ModelSpec, base: dict, base_bytes: bytes, means: np.ndarray, manifest: dict) -> Artifact:
    size, classes, counts, scale = (manifest.get("embedding"), base.get("classes"), manifest.get("counts"),
                                    manifest.get("scale"))  # fmt: skip
    ints = lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_COUNT  # noqa: E731
    if not ints(size) or not 0 < size <= MAX_EMBEDDING or not ints(classes) or classes >= len(spec.labels):
        raise MetadataError(f"{where}: embedding size {size!r} or base classes {classes!r} do not fit its "
                            f"{len(spec.labels)} labels")  # fmt: skip
    n = len(spec.labels) - classes
    if not isinstance(counts, list) or len(counts) != n or not all(ints(c) and c > 0 for c in counts):
        raise MetadataError(f"{where}: 'counts' must give the number of images (> 0) of each of the {n} imprinted classes")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1000:
        raise MetadataError(f"{where}: 'scale' must be a number in (0, 1000], got {scale!r}")
    if means.dtype != np.float32 or means.shape != (n, size) or not np.isfinite(means).all():
        raise MetadataError(f"{where}: class means of shape {means.shape} ({means.dtype}); expected ({n}, {size}) "
                            "finite float32: imprint again")  # fmt: skip
    if spec.task != "imprinted" or spec.output != OutputSpec():
        raise MetadataError(f"{where}: the contract of an imprinted model says task {spec.task!r} and output "
                            f"{spec.output}; imprint again")  # fmt: skip
    name = base.get("name", "")
    if not isinstance(name, str) or len(name) > 255 or not name.isprintable():
        raise MetadataError(f"{where}: the base's name must be a short printable file name, got {str(name)[:40]!r}")
    return Artifact(spec, name, base["format"], base_bytes, classes, size, means, tuple(counts), float(scale))


def normalized(x: np.ndarray) -> np.ndarray:
    """Return the rows of ``x`` scaled to unit L2 norm (a zero row stays zero)."""
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class ImprintBackend:
    """A :class:`~edgetl_runtime.backends.Backend` whose one output is the imprinted model's class scores.

    It runs the base (on its device: the CPU, an Edge TPU, a GPU) for the embedding, and the
    cosines with the class means on the CPU in numpy.
    """

    def __init__(self, base: Backend, artifact: Artifact, embedding_output: int, head: Any = None,
                 prototypes: np.ndarray | None = None, owners: np.ndarray | None = None):
        self._base, self._emb = base, embedding_output
        self._head = head  # base scores (N, C_b) from the base's raw outputs, for an extension
        self._prototypes = None if prototypes is None else normalized(prototypes)
        # one boolean row per trained label: which prototypes are its
        self._owners = None if owners is None else np.stack([owners == c for c in range(artifact.base_classes)])
        self._means = normalized(artifact.means)
        self._scale = artifact.scale
        self.engine, self.device, self.provider = base.engine, base.device, getattr(base, "provider", base.engine)
        self.threads = getattr(base, "threads", None)
        self.input = base.input
        self.output = TensorSpec("imprinted_scores", (1, len(artifact.spec.labels)), np.dtype(np.float32), None)
        self.outputs = (self.output,)

    def _embeddings(self, outputs: list[np.ndarray]) -> np.ndarray:
        tensor = self._base.outputs[self._emb]
        raw = outputs[self._emb]
        return normalized(from_model_output(raw.reshape(len(raw), -1), tensor.quantization))

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Return the base's normalised embeddings (N, size) of a model-input batch."""
        if not len(batch):
            return np.zeros((0, self._means.shape[1]), np.float32)
        return self._embeddings(self._base.run_all(batch))

    def run(self, batch: np.ndarray) -> np.ndarray:
        outputs = self._base.run_all(batch)
        e = self._embeddings(outputs)
        new = e @ self._means.T
        if self._head is None:
            return _softmax(self._scale * new).astype(np.float32)
        cos = e @ self._prototypes.T  # a trained label's cosine: that of its nearest prototype
        old = np.stack([cos[:, mine].max(axis=1) for mine in self._owners], axis=1)
        s = _softmax(self._scale * np.concatenate([old, new], axis=1))
        q = s[:, old.shape[1]:].sum(axis=1, keepdims=True)
        return np.concatenate([self._head(outputs) * (1.0 - q), s[:, old.shape[1]:]], axis=1).astype(np.float32)

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        return [self.run(batch)]
