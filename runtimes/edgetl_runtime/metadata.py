"""Reading and writing the model contract embedded in ``.tflite``/``.onnx`` files.

An exported ``.tflite`` carries the contract (:class:`~edgetl_runtime.contract.ModelSpec`, its
canonical JSON bytes) as a TFLite model-metadata entry named ``edgetl``, and the facts of that one
export (:class:`~edgetl_runtime.contract.ExportInfo`) as ``edgetl.export``; an ``.onnx`` carries
the same two strings in ``metadata_props``. Both are read here without TensorFlow or the ``onnx``
package (small hand-written flatbuffer/protobuf readers), so the device needs nothing beyond the
inference engine.

>>> from edgetl_runtime.contract import InputSpec, ModelSpec
>>> spec = ModelSpec(labels=("defect", "good"), good_labels=("good",), input=InputSpec(32, 32))
>>> parse_embedded({METADATA_KEY: spec.to_json().encode()}).spec == spec
True
"""

from __future__ import annotations

import importlib
import json
import struct
from pathlib import Path
from typing import Any, NamedTuple

from .contract import ExportInfo, ModelSpec, export_info_from_v1
from .safefile import loads_json
from .errors import MetadataError, ModelFormatError

METADATA_KEY = "edgetl"
EXPORT_KEY = "edgetl.export"
TFLITE_IDENTIFIER = b"TFL3"


class Embedded(NamedTuple):
    """What a model file carries: the contract, its exact JSON bytes, and the export facts."""

    spec: ModelSpec | None
    spec_json: bytes | None
    export: ExportInfo | None


def parse_embedded(entries: dict[str, Any]) -> Embedded:
    """Return the :class:`Embedded` contract of a file's metadata ``entries`` (name -> bytes or str)."""
    raw = entries.get(METADATA_KEY)
    if raw is None:
        return Embedded(None, None, None)
    raw = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    spec = ModelSpec.from_json(raw)
    export_raw = entries.get(EXPORT_KEY)
    if export_raw is not None:
        export = ExportInfo.from_json(export_raw)
    else:  # schema 1 kept format and quantization inside the one metadata object
        try:
            export = export_info_from_v1(loads_json(raw, "the model contract"))
        except (ValueError, MetadataError):
            export = None
    return Embedded(spec, raw, export)


def _entries_to_embed(spec: ModelSpec, export: ExportInfo | None) -> dict[str, bytes]:
    entries = {METADATA_KEY: spec.to_json().encode("utf-8")}
    if export is not None:
        entries[EXPORT_KEY] = export.to_json().encode("utf-8")
    return entries


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


# bytes per element of each TFLite TensorType (schema.fbs); unknown types count 16 bytes
_TFLITE_ITEMSIZE = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8, 15: 4, 16: 2, 17: 1, 18: 2}
MAX_TENSOR_BYTES = 512 * 2**20  # one tensor; the largest activation of Lite0 fp32 at 224 px is 4.6 MB
MAX_ACTIVATION_BYTES = 2**30  # all tensors without data, an upper bound of what the engine allocates (Lite0: 28 MB)


def check_tflite_tensor_sizes(model: bytes) -> None:
    """Raise :class:`ModelFormatError` when the tensors a TFLite flatbuffer declares would need too much memory.

    The engine allocates what the shapes declare: one damaged dimension (found by the fuzz suite:
    1x13x13x16,711,688 floats) makes it allocate 11 GB before it runs anything. The shapes are read
    here, before any engine sees the file: one tensor may declare up to 512 MiB, the tensors the
    engine allocates (those without data in the file) up to 1 GiB together.
    """
    fb = _FlatBuffer(model)
    activations = 0
    try:
        root = fb.indirect(0)
        subgraphs_pos, buffers_pos = fb.field(root, 2), fb.field(root, 4)
        if subgraphs_pos is None:
            return
        buffers_start, n_buffers = fb.vector(buffers_pos) if buffers_pos is not None else (0, 0)

        def has_data(index: int) -> bool:
            if not 0 < index < n_buffers:
                return False
            buffer = fb.indirect(buffers_start + 4 * index)
            data_pos, offset_pos = fb.field(buffer, 0), fb.field(buffer, 1)
            return (data_pos is not None and fb.vector(data_pos)[1] > 0) or offset_pos is not None

        sg_start, n_subgraphs = fb.vector(subgraphs_pos)
        for s in range(n_subgraphs):
            tensors_pos = fb.field(fb.indirect(sg_start + 4 * s), 0)
            if tensors_pos is None:
                continue
            t_start, n_tensors = fb.vector(tensors_pos)
            for t in range(n_tensors):
                tensor = fb.indirect(t_start + 4 * t)
                shape_pos, type_pos, buffer_pos = fb.field(tensor, 0), fb.field(tensor, 1), fb.field(tensor, 2)
                elements = 1
                if shape_pos is not None:
                    d_start, n_dims = fb.vector(shape_pos)
                    for d in range(min(n_dims, 64)):  # capped: 64 dims of 2**31 would be a 2,000-bit number
                        elements = min(elements * max(fb.i32(d_start + 4 * d), 1), MAX_ACTIVATION_BYTES + 1)
                size = elements * _TFLITE_ITEMSIZE.get(fb.buf[type_pos] if type_pos is not None else 0, 16)
                if buffer_pos is None or not has_data(fb.u32(buffer_pos)):
                    activations += size
                if size > MAX_TENSOR_BYTES or activations > MAX_ACTIVATION_BYTES:
                    what = f"{elements:,} elements" if elements <= MAX_ACTIVATION_BYTES else "over a billion elements"
                    raise ModelFormatError(
                        f"its tensors declare {max(size, activations) / 2**30:.1f} GiB or more (tensor {t} of subgraph "
                        f"{s}: {what}); the file is damaged (a corrupted shape) or not an edge model"
                    )
    except (struct.error, IndexError) as exc:
        raise ModelFormatError(f"truncated or corrupt TFLite flatbuffer ({exc})") from exc


def embed_tflite_metadata(model: bytes, spec: ModelSpec, export: ExportInfo | None = None) -> bytes:
    """Return ``model`` (TFLite bytes) with ``spec`` (and ``export``) stored as metadata entries.

    Uses the TFLite schema's object API shipped with LiteRT (or TensorFlow); existing edgetl
    entries are replaced, other entries are kept.
    """
    return embed_tflite_entries(model, _entries_to_embed(spec, export))


def embed_tflite_entries(model: bytes, entries: dict[str, bytes]) -> bytes:
    """Return ``model`` (TFLite bytes) with metadata ``entries`` (name -> raw bytes) set, others kept.

    Raw bytes, unchecked: :func:`embed_tflite_metadata` writes valid contracts; the fuzz tests write
    hostile ones with this.
    """
    import flatbuffers
    import numpy as np

    schema = _tflite_schema()
    obj = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    obj.metadata = list(obj.metadata or [])
    obj.buffers = list(obj.buffers or [])
    for key, payload in entries.items():
        data = np.frombuffer(payload, dtype=np.uint8)
        for entry in obj.metadata:
            name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
            if name == key:
                obj.buffers[entry.buffer].data = data
                break
        else:
            buffer = schema.BufferT()
            buffer.data = data
            obj.buffers.append(buffer)
            entry = schema.MetadataT()
            entry.name = key
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


def embed_onnx_metadata(model: Any, spec: ModelSpec, export: ExportInfo | None = None) -> Any:
    """Return a copy of ``onnx.ModelProto`` ``model`` with ``spec`` (and ``export``) in ``metadata_props``."""
    entries = {k: v.decode("utf-8") for k, v in _entries_to_embed(spec, export).items()}
    return embed_onnx_entries(model, entries, replace=(METADATA_KEY, EXPORT_KEY))


def embed_onnx_entries(model: Any, entries: dict[str, str], replace: tuple[str, ...] = ()) -> Any:
    """Return a copy of ``onnx.ModelProto`` ``model`` with ``entries`` in ``metadata_props`` (raw, unchecked).

    Existing props named in ``entries`` or ``replace`` are dropped first; the others are kept.
    """
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept = [(p.key, p.value) for p in out.metadata_props if p.key not in entries and p.key not in replace]
    del out.metadata_props[:]
    for key, value in [*kept, *entries.items()]:
        prop = out.metadata_props.add()
        prop.key, prop.value = key, value
    return out


# --------------------------------------------------------------------------- public reader


def file_entries(data: bytes, fmt: str) -> dict[str, Any]:
    """Return the metadata entries of model bytes ``data`` of format ``fmt`` (tflite or onnx)."""
    return tflite_metadata_entries(data) if fmt == "tflite" else onnx_metadata_props(data)


def read_embedded(path: str | Path) -> Embedded:
    """Return the contract and export facts embedded in a ``.tflite``/``.onnx`` file (Nones if bare)."""
    path = Path(path)
    fmt = model_format(path)
    return parse_embedded(file_entries(path.read_bytes(), fmt))


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def set_onnx_props(model: bytes, entries: dict[str, str], drop: tuple[str, ...] = ()) -> bytes:
    """Return serialized ONNX ``model`` with ``entries`` as its ``metadata_props`` of those names, without the ``onnx`` package.

    Every other byte of the file is kept as it was (the graph, its weights, other props): the
    top-level fields are copied as they are, the props named in ``entries`` or ``drop`` left out,
    and the new ones appended (protobuf readers accept fields in any order).
    """
    buf = memoryview(model)
    parts: list[bytes] = []
    pos = 0
    try:
        while pos < len(buf):
            start = pos
            tag, pos = _varint(buf, pos)
            number, wire = tag >> 3, tag & 7
            if wire == 0:
                _, pos = _varint(buf, pos)
            elif wire == 1:
                pos += 8
            elif wire == 2:
                n, pos = _varint(buf, pos)
                if number == 14:
                    entry = {k: bytes(v).decode("utf-8", "replace") for k, w, v in _proto_fields(buf, pos, pos + n) if w == 2}
                    if entry.get(1, "") in entries or entry.get(1, "") in drop:
                        pos += n
                        continue
                pos += n
            elif wire == 5:
                pos += 4
            else:
                raise ModelFormatError(f"not an ONNX model (protobuf wire type {wire})")
            if pos > len(buf):
                raise ModelFormatError("truncated ONNX protobuf")
            parts.append(bytes(buf[start:pos]))
    except IndexError as exc:
        raise ModelFormatError(f"truncated ONNX protobuf ({exc})") from exc
    for key, value in entries.items():
        parts.append(_length_field(14, _length_field(1, key.encode("utf-8")) + _length_field(2, value.encode("utf-8"))))
    return b"".join(parts)
