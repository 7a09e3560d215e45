"""The metadata embedded in every edgetl model file: the single source of truth.

An exported ``.tflite`` carries it as a TFLite model-metadata entry named ``edgetl`` (a UTF-8 JSON
buffer); an ``.onnx`` carries it in ``metadata_props`` under the key ``edgetl``. Both are read here
without TensorFlow or the ``onnx`` package (small hand-written flatbuffer/protobuf readers), so the
device needs nothing beyond the inference engine.

>>> meta = ModelMetadata(labels=("defect", "good"), input_size=(224, 224))
>>> ModelMetadata.from_json(meta.to_json()) == meta
True
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import MetadataError, ModelFormatError

METADATA_KEY = "edgetl"
SCHEMA_VERSION = 1
TFLITE_IDENTIFIER = b"TFL3"

# Labels treated as the "no defect" class when the user does not name one.
GOOD_LABEL_NAMES = ("good", "ok", "normal", "pass", "non_defective", "nondefective", "functional")


@dataclass(frozen=True)
class ModelMetadata:
    """What a device needs to run a model: labels, input geometry, pixel normalization, threshold.

    ``mean``/``std`` are in pixel units (0..255) and describe what the *model file* expects:
    ``x = (pixel - mean) / std``. edgetl models put the backbone's own normalization inside the
    graph, so theirs are ``mean=0, std=1`` (raw pixels), which lets an int8 model take raw uint8.
    ``threshold`` applies to the defect score, ``1 - sum(scores of good_labels)``.
    """

    labels: tuple[str, ...]
    input_size: tuple[int, int]  # (height, width) in pixels
    color_mode: str = "rgb"  # "rgb" or "grayscale": channels the model takes
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    resize: str = "bilinear"
    threshold: float = 0.5
    good_labels: tuple[str, ...] = ("good",)
    backbone: str | None = None
    quantization: str = "fp32"  # fp32 | fp16 | dynamic | int8 | qat
    format: str | None = None  # tflite | edgetpu | onnx
    sdk_version: str | None = None
    data_hash: str | None = None
    created: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not self.labels:
            raise MetadataError("metadata has no labels")
        if self.color_mode not in ("rgb", "grayscale"):
            raise MetadataError(f"color_mode must be 'rgb' or 'grayscale', got {self.color_mode!r}")
        if len(self.input_size) != 2 or min(self.input_size) <= 0:
            raise MetadataError(f"input_size must be (height, width) > 0, got {self.input_size!r}")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise MetadataError(f"threshold must be within [0, 1], got {self.threshold!r}")

    @property
    def channels(self) -> int:
        return 3 if self.color_mode == "rgb" else 1

    @property
    def good_indices(self) -> tuple[int, ...]:
        return tuple(i for i, name in enumerate(self.labels) if name in self.good_labels)

    def replace(self, **changes: Any) -> ModelMetadata:
        """Return a copy with ``changes`` applied (the metadata itself is immutable)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("labels", "input_size", "mean", "std", "good_labels"):
            out[key] = list(out[key])
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMetadata:
        if not isinstance(data, dict):
            raise MetadataError(f"edgetl metadata must be a JSON object, got {type(data).__name__}")
        version = int(data.get("schema_version", SCHEMA_VERSION))
        if version > SCHEMA_VERSION:
            raise MetadataError(
                f"model metadata has schema version {version}, this edgetl-runtime reads up to "
                f"{SCHEMA_VERSION}; upgrade edgetl-runtime"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        try:
            for key in ("labels", "mean", "std", "good_labels"):
                if key in kwargs:
                    kwargs[key] = tuple(kwargs[key])
            kwargs["input_size"] = tuple(int(v) for v in kwargs["input_size"])
            return cls(**kwargs)
        except (KeyError, TypeError) as exc:
            raise MetadataError(f"malformed edgetl metadata: {exc}") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelMetadata:
        try:
            data = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MetadataError(f"edgetl metadata is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def default_good_labels(labels: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Return the labels whose names mean "no defect" (``good``, ``ok``, ``normal``, ...)."""
    return tuple(name for name in labels if name.lower() in GOOD_LABEL_NAMES)


# --------------------------------------------------------------------------- format sniffing


def model_format(path: str | Path, head: bytes | None = None) -> str:
    """Return ``"tflite"`` or ``"onnx"`` for a model file, or raise :class:`ModelFormatError`."""
    path = Path(path)
    if head is None:
        try:
            with open(path, "rb") as fh:
                head = fh.read(16)
        except FileNotFoundError:
            raise ModelFormatError(f"{path}: no such model file") from None
        except IsADirectoryError:
            raise ModelFormatError(f"{path}: is a directory, expected a .tflite or .onnx file") from None
    if len(head) >= 8 and head[4:8] == TFLITE_IDENTIFIER:
        return "tflite"
    # An ONNX ModelProto starts with field 1 (ir_version, varint): tag byte 0x08.
    if len(head) >= 2 and head[0] == 0x08 and path.suffix.lower() == ".onnx":
        return "onnx"
    if len(head) >= 2 and head[0] == 0x08 and path.suffix.lower() not in (".tflite", ".lite"):
        return "onnx"
    raise ModelFormatError(
        f"{path}: not a TFLite or ONNX model (unrecognised header {head[:8]!r}); "
        "expected a file written by `edgetl export` or another TFLite/ONNX converter"
    )


# --------------------------------------------------------------------------- TFLite (flatbuffer)


class _FlatBuffer:
    """Just enough of the flatbuffer wire format to read ``Model.metadata`` without a schema."""

    def __init__(self, buf: bytes):
        self.buf = memoryview(buf)

    def u16(self, pos: int) -> int:
        return struct.unpack_from("<H", self.buf, pos)[0]

    def u32(self, pos: int) -> int:
        return struct.unpack_from("<I", self.buf, pos)[0]

    def i32(self, pos: int) -> int:
        return struct.unpack_from("<i", self.buf, pos)[0]

    def field(self, table: int, index: int) -> int | None:
        vtable = table - self.i32(table)
        offset = 4 + 2 * index
        if offset >= self.u16(vtable):
            return None
        rel = self.u16(vtable + offset)
        return table + rel if rel else None

    def indirect(self, pos: int) -> int:
        return pos + self.u32(pos)

    def vector(self, pos: int) -> tuple[int, int]:
        start = self.indirect(pos)
        return start + 4, self.u32(start)

    def string(self, pos: int) -> str:
        start, n = self.vector(pos)
        return bytes(self.buf[start : start + n]).decode("utf-8", "replace")


def tflite_metadata_entries(model: bytes) -> dict[str, bytes]:
    """Return every ``Model.metadata`` entry of a TFLite flatbuffer as ``{name: bytes}``."""
    if len(model) < 8 or model[4:8] != TFLITE_IDENTIFIER:
        raise ModelFormatError("not a TFLite flatbuffer (missing 'TFL3' identifier)")
    fb = _FlatBuffer(model)
    try:
        root = fb.indirect(0)
        buffers_pos = fb.field(root, 4)
        metadata_pos = fb.field(root, 6)
        if buffers_pos is None or metadata_pos is None:
            return {}
        buffers_start, n_buffers = fb.vector(buffers_pos)
        md_start, n_md = fb.vector(metadata_pos)
        entries: dict[str, bytes] = {}
        for i in range(n_md):
            entry = fb.indirect(md_start + 4 * i)
            name_pos, buffer_pos = fb.field(entry, 0), fb.field(entry, 1)
            if name_pos is None or buffer_pos is None:
                continue
            index = fb.u32(buffer_pos)
            if index >= n_buffers:
                raise ModelFormatError(f"metadata buffer index {index} out of range")
            buffer = fb.indirect(buffers_start + 4 * index)
            data_pos = fb.field(buffer, 0)
            if data_pos is None:  # large models keep data after the flatbuffer (offset/size)
                offset_pos, size_pos = fb.field(buffer, 1), fb.field(buffer, 2)
                if offset_pos is None or size_pos is None:
                    continue
                offset = struct.unpack_from("<Q", fb.buf, offset_pos)[0]
                size = struct.unpack_from("<Q", fb.buf, size_pos)[0]
                data = bytes(fb.buf[offset : offset + size])
            else:
                start, n = fb.vector(data_pos)
                data = bytes(fb.buf[start : start + n])
            entries[fb.string(name_pos)] = data
        return entries
    except (struct.error, IndexError) as exc:
        raise ModelFormatError(f"truncated or corrupt TFLite flatbuffer ({exc})") from exc


def embed_tflite_metadata(model: bytes, meta: ModelMetadata) -> bytes:
    """Return ``model`` (TFLite bytes) with ``meta`` stored as its ``edgetl`` metadata entry.

    Uses the TFLite schema's object API shipped with LiteRT (or TensorFlow); any existing
    ``edgetl`` entry is replaced, other entries are kept.
    """
    import flatbuffers
    import numpy as np

    schema = _tflite_schema()
    obj = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    payload = np.frombuffer(meta.to_json().encode("utf-8"), dtype=np.uint8)
    obj.metadata = list(obj.metadata or [])
    obj.buffers = list(obj.buffers or [])
    for entry in obj.metadata:
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if name == METADATA_KEY:
            obj.buffers[entry.buffer].data = payload
            break
    else:
        buffer = schema.BufferT()
        buffer.data = payload
        obj.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = METADATA_KEY
        entry.buffer = len(obj.buffers) - 1
        obj.metadata.append(entry)
    builder = flatbuffers.Builder(len(model) + 4096)
    builder.Finish(obj.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def _tflite_schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        try:  # writing happens on the workstation, which may have TensorFlow instead of LiteRT
            schema = importlib.import_module("tensorflow.lite.python.schema_py_generated")
        except ImportError:
            from .errors import EngineNotInstalled

            raise EngineNotInstalled(
                "writing TFLite metadata needs the TFLite schema: pip install 'edgetl-runtime[litert]'"
            ) from None
    return schema


# --------------------------------------------------------------------------- ONNX (protobuf)


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ModelFormatError("malformed protobuf varint")


def _proto_fields(buf: memoryview, start: int = 0, end: int | None = None):
    """Yield ``(field_number, wire_type, value)``; length-delimited values are memoryviews."""
    pos, end = start, len(buf) if end is None else end
    while pos < end:
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > end:
                raise ModelFormatError("truncated ONNX protobuf")
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ModelFormatError(f"not an ONNX model (protobuf wire type {wire})")
        yield number, wire, value


def onnx_metadata_props(model: bytes) -> dict[str, str]:
    """Return ``ModelProto.metadata_props`` (field 14) of a serialized ONNX model."""
    buf = memoryview(model)
    props: dict[str, str] = {}
    try:
        for number, wire, value in _proto_fields(buf):
            if number == 14 and wire == 2:
                entry = {n: bytes(v).decode("utf-8", "replace") for n, w, v in _proto_fields(value) if w == 2}
                props[entry.get(1, "")] = entry.get(2, "")
    except IndexError as exc:
        raise ModelFormatError(f"truncated ONNX protobuf ({exc})") from exc
    return props


def embed_onnx_metadata(model: Any, meta: ModelMetadata) -> Any:
    """Set ``meta`` as the ``edgetl`` entry of an ``onnx.ModelProto`` (returns a modified copy)."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept = [(p.key, p.value) for p in out.metadata_props if p.key != METADATA_KEY]
    del out.metadata_props[:]
    for key, value in [*kept, (METADATA_KEY, meta.to_json())]:
        prop = out.metadata_props.add()
        prop.key, prop.value = key, value
    return out


# --------------------------------------------------------------------------- public reader


def read_metadata(path: str | Path) -> ModelMetadata | None:
    """Return the edgetl metadata embedded in a ``.tflite``/``.onnx`` file, or None if it has none."""
    path = Path(path)
    fmt = model_format(path)
    data = path.read_bytes()
    if fmt == "tflite":
        raw = tflite_metadata_entries(data).get(METADATA_KEY)
    else:
        raw = onnx_metadata_props(data).get(METADATA_KEY)
    return None if raw is None else ModelMetadata.from_json(raw)
