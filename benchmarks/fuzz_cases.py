"""The fuzz cases: seed files, the mutations that turn them into hostile ones, and what runs each case.

A case is ``(target, seed, index)``: the random generator is ``default_rng([seed, index])``, so any
case can be rebuilt from its three numbers. Targets and the operation each case runs (in the worker):

==================  ==================================================  ==================================
target              the hostile file                                    operation
==================  ==================================================  ==================================
tflite-bytes        a .tflite with bytes flipped, overwritten, cut      ``load(file).predict(image)``
onnx-bytes          the same for a .onnx
tflite-metadata     a valid .tflite whose embedded contract JSON is     ``load(file).predict(image)``
onnx-metadata       mutated (types, bounds, nesting, junk)
image               a PNG/JPEG/BMP/GIF mutated, or with a huge header   ``model.predict(file)``
labels              a labels file of odd bytes, lines, encodings        ``load(model, labels=file)`` + predict
profile             a device TOML with mutated values or bytes          ``load_profile`` + ``detect`` + load
weights             a .pth (legacy and zip) mutated                     ``load_state_dict(file)``
run-folder          a run folder whose config.json, model_spec.json     ``load_run(folder)`` + its splits
                    or split.json is mutated (bytes or JSON fields)
image-format        an image in a format edgetl does not read (EPS,     ``model.predict(file)`` + the
                    DDS, BLP, ICNS, PSD, GIF, PDF, JPEG 2000...), named eval gallery's thumbnail
                    .png or .jpg, sometimes mutated
jpeg-header         a progressive, 4:2:0 or 4:4:4 JPEG whose header     ``model.predict(file)`` and a
                    declares another size (up to 65535 x 65535)         full-size decode (data inspect)
allocating-graph    a tiny ONNX (ConstantOfShape, Expand, Resize) or    ``load(file).predict(image)``
                    TFLite (FILL) graph that allocates side² floats
                    when it runs, side up to 10⁵
numbers             a number of 1 to 1000 digits, or 1e±400, or deep    the target's operation: load,
                    nesting, in a contract, export facts, profile,      ``load_profile``, ``load_run``,
                    config.json, model_spec.json, split.json            the imprint reader
fifo                a FIFO where a file is expected: a model, an        the operation that reads it
                    image, labels, a profile (also in the profiles      (nothing may wait for a writer)
                    folder), a file named by split.json
==================  ==================================================  ==================================

Only the project's own errors may come out (``EdgetlRuntimeError``, ``WeightsFileError``, ``RunError``).

>>> data = bytes(range(64))
>>> mutate_bytes(data, np.random.default_rng([0, 1])) == mutate_bytes(data, np.random.default_rng([0, 1]))
True
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

TARGETS = ("tflite-bytes", "onnx-bytes", "tflite-metadata", "onnx-metadata", "image", "labels", "profile", "weights",
           "run-folder", "image-format", "jpeg-header", "allocating-graph", "numbers", "fifo")
RUN_FILES = ("config.json", "model_spec.json", "split.json")
INTERESTING_INT32 = (0, 1, -1, 2, 255, 256, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, -0x80000000, 60000, 1 << 20)


@dataclass
class Corpus:
    """Valid seed files of each kind; mutated copies of them are the fuzz cases."""

    tflite: list[Path]
    onnx: list[Path]
    images: list[Path]
    labels: Path  # fits the first tflite model
    profiles: list[Path]
    weights: list[Path] = field(default_factory=list)
    run: Path | None = None  # a run folder (its model.keras is never loaded by the fuzz)
    fill: Path | None = None  # a .tflite whose FILL allocates a square of side FILL_SIDE when it runs

    def to_json(self) -> str:
        return json.dumps({k: [str(p) for p in v] if isinstance(v, list) else str(v) for k, v in self.__dict__.items()})

    @classmethod
    def from_json(cls, text: str) -> Corpus:
        raw = json.loads(text)
        return cls(**{k: [Path(p) for p in v] if isinstance(v, list) else (Path(v) if v != "None" else None)
                      for k, v in raw.items()})

    def imprint(self) -> bytes:
        """An imprinted model's bytes (a ZIP with a JSON manifest): two classes imprinted on the first tflite's outputs."""
        from edgetl_runtime.contract import InputSpec, ModelSpec
        from edgetl_runtime.imprinted import Artifact

        spec = ModelSpec(labels=("ok", "scratch"), good_labels=("ok",), input=InputSpec(32, 32), task="imprinted")
        means = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
        return Artifact(spec, "seed.tflite", "tflite", self.tflite[0].read_bytes(), 0, 2, means, (3, 3)).to_bytes()


# --------------------------------------------------------------------------- byte mutations


def mutate_bytes(data: bytes, rng: np.random.Generator, rounds: int | None = None) -> bytes:
    """Return ``data`` after 1-4 random mutations: bit flips, interesting ints, cuts, splices, zeroed runs."""
    buf = bytearray(data)
    for _ in range(rounds or int(rng.integers(1, 5))):
        if not buf:
            buf = bytearray(rng.integers(0, 256, 16, dtype=np.uint8).tobytes())
        n = len(buf)
        kind = int(rng.integers(0, 8))
        at = int(rng.integers(0, n))
        if kind == 0:  # flip a few bits
            for _ in range(int(rng.integers(1, 9))):
                i = int(rng.integers(0, n))
                buf[i] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:  # an interesting int32 at an aligned offset (flatbuffer offsets, lengths, shapes)
            at -= at % 4
            if at + 4 <= n:
                buf[at : at + 4] = struct.pack("<i", int(rng.choice(INTERESTING_INT32)))
        elif kind == 2:  # truncate
            del buf[at:]
        elif kind == 3:  # random bytes over a short run
            run = min(int(rng.integers(1, 33)), n - at)
            buf[at : at + run] = rng.integers(0, 256, run, dtype=np.uint8).tobytes()
        elif kind == 4:  # zero a run
            run = min(int(rng.integers(1, 257)), n - at)
            buf[at : at + run] = bytes(run)
        elif kind == 5:  # duplicate a chunk somewhere else
            run = min(int(rng.integers(1, 513)), n - at)
            chunk = bytes(buf[at : at + run])
            dest = int(rng.integers(0, n))
            buf[dest:dest] = chunk
        elif kind == 6:  # delete a chunk
            del buf[at : at + int(rng.integers(1, 65))]
        else:  # one byte set to an extreme
            buf[at] = int(rng.choice([0x00, 0x7F, 0x80, 0xFF]))
    return bytes(buf)


# --------------------------------------------------------------------------- contract (metadata) mutations

_HOSTILE_VALUES: tuple[Callable[[np.random.Generator], Any], ...] = (
    lambda r: None,
    lambda r: True,
    lambda r: -1,
    lambda r: 0,
    lambda r: 60000,
    lambda r: 2**31,
    lambda r: 2**64,
    lambda r: -(10**30),
    lambda r: 10 ** int(r.integers(19, 1000)),  # beyond int64, up to 1000 digits
    lambda r: -(10 ** int(r.integers(19, 1000))),
    lambda r: 1e308,
    lambda r: float("nan"),
    lambda r: float("inf"),
    lambda r: 0.5,
    lambda r: "",
    lambda r: "x" * int(r.integers(1, 100_000)),
    lambda r: "bilinear\x00",
    lambda r: [],
    lambda r: {},
    lambda r: [["nested"]],
    lambda r: [0.5] * int(r.integers(0, 9)),
    lambda r: ["label"] * int(r.integers(0, 200_001)),
    lambda r: {"a": {"b": {"c": [1, 2]}}},
)


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:8]):
            out += _paths(v, (*prefix, i))
    return out


def mutate_contract(raw: bytes, rng: np.random.Generator) -> bytes:
    """Return contract JSON ``raw`` with a field retyped, removed, added or the text itself damaged."""
    kind = int(rng.integers(0, 10))
    if kind == 0:
        return mutate_bytes(raw, rng)
    if kind == 1:  # deep nesting, as text (json.dumps would recurse)
        depth = int(rng.choice([50, 1000, 100_000]))
        return b'{"schema_version": 2, "labels": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == 2:
        return rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8).tobytes()
    doc = json.loads(raw)
    for _ in range(int(rng.integers(1, 4))):
        paths = [p for p in _paths(doc) if p]
        path = paths[int(rng.integers(0, len(paths)))]
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = int(rng.integers(0, 6))
        if action == 0 and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == 1 and isinstance(parent, dict):
            parent["unknown_" + str(int(rng.integers(0, 99)))] = 1
        else:
            parent[path[-1]] = _HOSTILE_VALUES[int(rng.integers(0, len(_HOSTILE_VALUES)))](rng)
    return json.dumps(doc, allow_nan=True).encode()


def mutate_model_metadata(model: bytes, fmt: str, rng: np.random.Generator) -> bytes:
    """Return ``model`` bytes whose embedded contract (and sometimes export facts) are mutated."""
    from edgetl_runtime.metadata import EXPORT_KEY, METADATA_KEY, embed_onnx_entries, embed_tflite_entries, file_entries

    entries = {k: (v.encode() if isinstance(v, str) else bytes(v)) for k, v in file_entries(model, fmt).items()}
    key = EXPORT_KEY if rng.random() < 0.2 and EXPORT_KEY in entries else METADATA_KEY
    entries[key] = mutate_contract(entries[key], rng)
    if fmt == "tflite":
        return embed_tflite_entries(model, {key: entries[key]})
    import onnx

    proto = onnx.load_from_string(model)
    text = entries[key].decode("utf-8", errors="replace")
    return embed_onnx_entries(proto, {key: text}).SerializeToString()


# --------------------------------------------------------------------------- images, labels, profiles


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def huge_png(width: int, height: int) -> bytes:
    """A small valid-looking PNG whose header declares ``width`` x ``height`` (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(bytes(1024 * 64))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def mutate_image(data: bytes, rng: np.random.Generator) -> bytes:
    kind = int(rng.integers(0, 8))
    if kind == 0:
        side = [1, 65535, 60000, 2**31 - 1, 0]
        return huge_png(int(rng.choice(side)), int(rng.choice(side)))
    if kind == 1:
        return data[: int(rng.integers(0, len(data)))]
    return mutate_bytes(data, rng)


def mutate_labels(text: bytes, rng: np.random.Generator) -> bytes:
    kind = int(rng.integers(0, 10))
    if kind == 0:
        return b""
    if kind == 8:  # pycoral's numbered form, with a number anywhere from plausible to absurd
        return f"0 defect\n{int(rng.choice([1, 2, 99_999, 100_000, 10**9, 10**30]))} good\n".encode()
    if kind == 1:
        return "défaut\nbon\n".encode("latin-1")
    if kind == 2:
        return b"\xef\xbb\xbfdefect\r\ngood\r\n"
    if kind == 3:
        return b"\n".join([b"x"] * int(rng.integers(3, 300_000)))
    if kind == 4:
        return b"a" * int(rng.integers(300, 3_000_000)) + b"\ngood\n"
    if kind == 5:
        return b"defect\x00\ngood\n"
    if kind == 6:
        return b"  \n\t\ngood\n"
    if kind == 7:
        return b"background\n" + text
    return mutate_bytes(text, rng)


_TOML_VALUES = ("nan", "inf", "-inf", "-1", "0", "1e400", "99999999999999999999999", '"text"', "[]", "{}", "true",
                "[1e9, 1e9]", "[0, 0]", "[-5, 3]", '["a", 1]', "1000000", "0.0001", '"' + "z" * 5000 + '"',
                "9" * 400, "-" + "9" * 400, "1e-400", "[" * 500 + "]" * 500, "{ a = " * 300 + "1" + " }" * 300)


def mutate_profile(text: bytes, rng: np.random.Generator) -> bytes:
    if rng.random() < 0.15:
        return mutate_bytes(text, rng)
    lines = text.decode("utf-8").splitlines()
    for _ in range(int(rng.integers(1, 4))):
        values = [i for i, line in enumerate(lines) if "=" in line and not line.lstrip().startswith("#")]
        i = values[int(rng.integers(0, len(values)))]
        key = lines[i].split("=", 1)[0]
        action = int(rng.integers(0, 10))
        if action == 0:
            del lines[i]
        elif action == 1:
            lines.insert(i, lines[i])  # a duplicate key
        else:
            lines[i] = f"{key}= {_TOML_VALUES[int(rng.integers(0, len(_TOML_VALUES)))]}"
    return "\n".join(lines).encode("utf-8")


# --------------------------------------------------------------------------- formats, headers, graphs, numbers, FIFOs

FOREIGN_FORMATS = ("EPS", "PDF", "DDS", "BLP", "ICNS", "PSD", "GIF", "ICO", "JPEG2000", "QOI", "PCX", "TGA", "SGI",
                   "IM", "PPM", "XBM", "MSP", "SPIDER", "PALM")


def foreign_image(fmt: str, rgb: np.ndarray) -> bytes:
    """Return ``rgb`` (H, W, 3 uint8) written in Pillow format ``fmt``; ICNS and PSD, which Pillow cannot write small, by hand."""
    from PIL import Image

    img = Image.fromarray(rgb)
    buffer = io.BytesIO()
    if fmt == "ICNS":  # one ic07 (128 px) entry holding a PNG, as macOS writes them
        img.resize((128, 128)).save(buffer, format="PNG")
        entry = b"ic07" + struct.pack(">I", 8 + len(buffer.getvalue())) + buffer.getvalue()
        return b"icns" + struct.pack(">I", 8 + len(entry)) + entry
    if fmt == "PSD":  # version 1, 3 channels of 8 bits, RGB, raw (uncompressed) planes
        h, w = rgb.shape[:2]
        header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, h, w, 8, 3)
        return header + struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + rgb.transpose(2, 0, 1).tobytes()
    mode = {"MSP": "1", "XBM": "1", "PALM": "1", "SPIDER": "F", "BLP": "P", "GIF": "P"}.get(fmt, "RGB")
    img.convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def image_format_case(corpus: Corpus, rng: np.random.Generator) -> tuple[bytes, str]:
    from PIL import Image

    rgb = np.asarray(Image.open(corpus.images[0]).convert("RGB"))
    data = foreign_image(FOREIGN_FORMATS[int(rng.integers(0, len(FOREIGN_FORMATS)))], rgb)
    if rng.random() < 0.3:
        data = mutate_bytes(data, rng)
    return data, "case" + (".png", ".jpg", ".tif")[int(rng.integers(0, 3))]


JPEG_SIDES = (1, 7, 8, 9, 255, 1000, 4096, 8000, 9000, 20000, 30000, 65535)


def jpeg_seed(rgb: np.ndarray, kind: str) -> bytes:
    """Return ``rgb`` as a JPEG: ``progressive``, ``420`` (baseline, 4:2:0 chroma) or ``444``."""
    from PIL import Image

    buffer = io.BytesIO()
    options = {"progressive": {"progressive": True}, "420": {"subsampling": 2}, "444": {"subsampling": 0}}[kind]
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=90, **options)
    return buffer.getvalue()


def set_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """Return ``data`` with its start-of-frame header declaring ``width`` x ``height`` (the scan data unchanged)."""
    at = 2
    while at + 4 <= len(data):
        marker, length = data[at + 1], struct.unpack(">H", data[at + 2 : at + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):  # SOF0 baseline, SOF1 extended, SOF2 progressive
            return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]
        at += 2 + length
    raise ValueError("no start-of-frame marker")


def jpeg_header_case(corpus: Corpus, rng: np.random.Generator) -> tuple[bytes, str]:
    from PIL import Image

    rgb = np.asarray(Image.open(corpus.images[0]).convert("RGB"))
    data = jpeg_seed(rgb, ("progressive", "420", "444")[int(rng.integers(0, 3))])
    side = lambda: int(rng.choice(JPEG_SIDES))  # noqa: E731
    data = set_jpeg_size(data, side(), side())
    if rng.random() < 0.2:
        data = mutate_bytes(data, rng)
    return data, "case.jpg"


ALLOCATING_SIDES = (1, 64, 1024, 4096, 8192, 12000, 16384, 32768, 100_000)
FILL_SIDE = 7.0  # the seed's magic constant: the side of its FILL, replaced by each case


def allocating_onnx(side: int, op: str = "ConstantOfShape") -> bytes:
    """A valid 8x8 RGB classifier (2 outputs) whose graph also makes a ``side`` x ``side`` float tensor when it runs.

    The declared shapes are small; only running the graph tells the size. ``op``: ConstantOfShape,
    Expand (a scalar broadcast to the shape) or Resize (the input scaled by ``side / 8``).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    inits = [numpy_helper.from_array(np.array([[1, -1], [0.5, 0.5], [-1, 1]], np.float32), "W"),
             numpy_helper.from_array(np.array([side, side], np.int64), "shape"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array([1.0, side / 8, side / 8, 1.0], np.float32), "scales")]
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2], keepdims=0),
             helper.make_node("MatMul", ["m", "W"], ["l"])]
    if op == "ConstantOfShape":
        nodes.append(helper.make_node("ConstantOfShape", ["shape"], ["big"],
                                      value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])))
    elif op == "Expand":
        nodes.append(helper.make_node("Expand", ["one", "shape"], ["big"]))
    else:
        nodes.append(helper.make_node("Resize", ["x", "", "scales"], ["big"], mode="nearest"))
    nodes += [helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
              helper.make_node("Mul", ["s", "zero"], ["z"]),
              helper.make_node("Add", ["l", "z"], ["l2"]),
              helper.make_node("Softmax", ["l2"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "allocates", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def write_fill_tflite(path: Path) -> Path:
    """Write (with TensorFlow) an 8x8 RGB classifier whose FILL makes a FILL_SIDE² float tensor from a run-time shape."""
    import os

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])
    def classify(x):
        # Products with tiny constants, not zeros: the converter folds x * 0 (and the whole FILL with it) away.
        n = tf.cast(tf.reduce_max(x) * 1e-9 + FILL_SIDE, tf.int32)  # depends on the input: computed when it runs
        big = tf.fill(tf.stack([n, n]), 1.0)
        return tf.nn.softmax(tf.reduce_mean(x, axis=[1, 2])[:, :2] + tf.reduce_sum(big) * 1e-30)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([classify.get_concrete_function()], classify)
    path.write_bytes(converter.convert())
    return path


def set_fill_side(data: bytes, side: float) -> bytes:
    """Return the FILL seed with its side constant (FILL_SIDE) set to ``side``."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    obj = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    magic = struct.pack("<f", FILL_SIDE)
    found = [b for b in obj.buffers if b.data is not None and bytes(np.asarray(b.data, np.uint8)) == magic]
    if len(found) != 1:
        raise ValueError(f"the FILL seed holds {len(found)} constants equal to {FILL_SIDE}; expected one")
    found[0].data = np.frombuffer(struct.pack("<f", side), np.uint8)
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(obj.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def allocating_case(corpus: Corpus, rng: np.random.Generator) -> tuple[bytes, str]:
    side = int(rng.choice(ALLOCATING_SIDES))
    kind = int(rng.integers(0, 4))
    if kind == 3 and corpus.fill is not None:
        return set_fill_side(corpus.fill.read_bytes(), float(side)), "case.tflite"
    return allocating_onnx(side, ("ConstantOfShape", "Expand", "Resize")[kind % 3]), "case.onnx"


NUMBER_HOMES = ("tflite-contract", "onnx-contract", "export-facts", "profile", "config.json", "model_spec.json",
                "split.json", "imprint")


def hostile_number(rng: np.random.Generator) -> str:
    """Return the JSON text of a number from 1 to 1000 digits, an exponent up to ±400, or a deeply nested list."""
    kind = int(rng.integers(0, 5))
    digits = int(rng.choice([1, 5, 10, 18, 19, 20, 40, 400, 1000]))
    if kind == 0:
        return "9" * digits
    if kind == 1:
        return "-" + "9" * digits
    if kind == 2:
        return f"1e{int(rng.choice([38, 39, 308, 309, 400, -400, -46]))}"
    if kind == 3:
        return "0." + "0" * digits + "1"
    depth = int(rng.choice([10, 65, 1000, 50_000]))
    return "[" * depth + "1" + "]" * depth


def _with_number(raw: bytes, rng: np.random.Generator) -> bytes:
    """Return JSON ``raw`` with one of its values (anywhere) replaced by :func:`hostile_number`, as text."""
    doc = json.loads(raw)
    paths = [p for p in _paths(doc) if p]
    path = paths[int(rng.integers(0, len(paths)))]
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    marker = "@@number@@"
    parent[path[-1]] = marker
    return json.dumps(doc).replace(f'"{marker}"', hostile_number(rng)).encode()


def numbers_case(corpus: Corpus, rng: np.random.Generator) -> tuple[bytes, str]:
    """A JSON or TOML file of the project with one hostile number; the name tells the worker what to run."""
    from edgetl_runtime.metadata import EXPORT_KEY, METADATA_KEY, embed_onnx_entries, embed_tflite_entries, file_entries

    home = NUMBER_HOMES[int(rng.integers(0, len(NUMBER_HOMES)))]
    if home in ("tflite-contract", "onnx-contract", "export-facts"):
        fmt = "onnx" if home == "onnx-contract" else "tflite"
        model = (corpus.onnx if fmt == "onnx" else corpus.tflite)[0].read_bytes()
        entries = {k: (v.encode() if isinstance(v, str) else bytes(v)) for k, v in file_entries(model, fmt).items()}
        key = EXPORT_KEY if home == "export-facts" else METADATA_KEY
        raw = _with_number(entries[key], rng)
        if fmt == "tflite":
            return embed_tflite_entries(model, {key: raw}), "case.tflite"
        import onnx

        return embed_onnx_entries(onnx.load_from_string(model), {key: raw.decode()}).SerializeToString(), "case.onnx"
    if home == "profile":
        seed = corpus.profiles[int(rng.integers(0, len(corpus.profiles)))]
        lines = seed.read_text().splitlines()
        values = [i for i, line in enumerate(lines) if "=" in line and not line.lstrip().startswith("#")]
        i = values[int(rng.integers(0, len(values)))]
        number = hostile_number(rng)
        lines[i] = f"{lines[i].split('=', 1)[0]}= {number}"
        return "\n".join(lines).encode(), seed.name
    if home == "imprint":
        import zipfile as zf

        with zf.ZipFile(io.BytesIO(corpus.imprint())) as archive:
            entries = {name: archive.read(name) for name in archive.namelist()}
        from edgetl_runtime.imprinted import MANIFEST

        entries[MANIFEST] = _with_number(entries[MANIFEST], rng)
        buffer = io.BytesIO()
        with zf.ZipFile(buffer, "w", zf.ZIP_STORED) as archive:
            for name, data in entries.items():
                archive.writestr(name, data)
        return buffer.getvalue(), "case.imprint"
    return _with_number((corpus.run / home).read_bytes(), rng), home


FIFO_HOMES = ("model.tflite", "model.onnx", "image.png", "labels.txt", "profile.toml", "devices", "split.json")


def fifo_case(corpus: Corpus, rng: np.random.Generator) -> tuple[bytes, str]:
    """The name of a FIFO the harness makes in place of a file: the worker reads it as that kind of file."""
    return b"", "fifo-" + FIFO_HOMES[int(rng.integers(0, len(FIFO_HOMES)))]


def make_case(target: str, corpus: Corpus, rng: np.random.Generator) -> tuple[bytes, str]:
    """Return ``(file bytes, file name)`` of one hostile file for ``target``."""
    pick = lambda files: files[int(rng.integers(0, len(files)))]  # noqa: E731
    if target in ("tflite-bytes", "onnx-bytes"):
        seed = pick(corpus.tflite if target.startswith("tflite") else corpus.onnx)
        return mutate_bytes(seed.read_bytes(), rng), "case" + seed.suffix
    if target in ("tflite-metadata", "onnx-metadata"):
        fmt = target.split("-")[0]
        seed = pick(corpus.tflite if fmt == "tflite" else corpus.onnx)
        return mutate_model_metadata(seed.read_bytes(), fmt, rng), "case" + seed.suffix
    if target == "image":
        seed = pick(corpus.images)
        return mutate_image(seed.read_bytes(), rng), "case" + seed.suffix
    if target == "labels":
        return mutate_labels(corpus.labels.read_bytes(), rng), "labels.txt"
    if target == "profile":  # named as its seed: a profile's name must match its file name
        seed = pick(corpus.profiles)
        return mutate_profile(seed.read_bytes(), rng), seed.name
    if target == "weights":
        return mutate_bytes(pick(corpus.weights).read_bytes(), rng), "case.pth"
    if target == "run-folder":  # the mutated file; the worker copies the rest of the seed run beside it
        name = RUN_FILES[int(rng.integers(0, len(RUN_FILES)))]
        raw = (corpus.run / name).read_bytes()
        return (mutate_contract(raw, rng) if rng.random() < 0.7 else mutate_bytes(raw, rng)), name
    if target == "image-format":
        return image_format_case(corpus, rng)
    if target == "jpeg-header":
        return jpeg_header_case(corpus, rng)
    if target == "allocating-graph":
        return allocating_case(corpus, rng)
    if target == "numbers":
        return numbers_case(corpus, rng)
    if target == "fifo":
        return fifo_case(corpus, rng)
    raise ValueError(f"unknown fuzz target {target!r}; one of {', '.join(TARGETS)}")


# --------------------------------------------------------------------------- seed files written without TensorFlow


def write_run_seed(folder: Path, images: list[Path]) -> Path:
    """Write a run folder as ``edgetl train`` leaves it, minus a loadable model (the fuzz never loads it)."""
    from edgetl_runtime.contract import InputSpec, ModelSpec

    run = folder / "seed-run"
    run.mkdir(parents=True, exist_ok=True)
    (run / "model.keras").write_bytes(b"PK\x03\x04 not loaded by the fuzz")
    spec = ModelSpec(labels=("defect", "good"), good_labels=("good",), input=InputSpec(32, 32))
    (run / "model_spec.json").write_text(spec.to_json())
    config = {"backbone": "efficientnet_lite0", "input_size": [32, 32], "labels": ["defect", "good"], "epochs": 3,
              "data": str(folder), "counts": {"train": {"defect": 1, "good": 1}, "val": {"defect": 1, "good": 1}}}
    (run / "config.json").write_text(json.dumps(config, indent=2))
    split = {"train": [[str(images[0]), "defect"], [str(images[1]), "good"]], "val": [[str(images[2]), "good"]]}
    (run / "split.json").write_text(json.dumps(split, indent=2))
    return run


def write_weights_seeds(folder: Path) -> list[Path]:
    """Write a small state dict as torch.save would, in the legacy and the zip format; return both paths.

    The pickles name ``torch._utils._rebuild_tensor_v2`` and ``torch.FloatStorage`` like torch's own
    (hand-assembled opcodes, so torch is not needed to write them).
    """
    tensors = expected_weights()
    storages = {str(i): a for i, a in enumerate(tensors.values())}

    def rebuild(key: str, shape: tuple[int, ...]) -> bytes:
        strides = tuple(int(np.prod(shape[i + 1 :])) for i in range(len(shape)))
        numel = int(np.prod(shape))
        pid = pickle.dumps(("storage", None, key, "cpu", numel), protocol=2)[2:-1].replace(b"N", b"ctorch\nFloatStorage\n", 1)
        return (b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid + b"Q" + pickle.dumps(0, protocol=2)[2:-1]
                + pickle.dumps(shape, protocol=2)[2:-1] + pickle.dumps(strides, protocol=2)[2:-1] + b"\x89" + b"tR")

    body = b"\x80\x02}(" + b"".join(
        pickle.dumps(name, protocol=2)[2:-1] + rebuild(key, a.shape) for (name, a), key in zip(tensors.items(), storages)
    ) + b"u."
    folder.mkdir(parents=True, exist_ok=True)
    legacy = folder / "seed_legacy.pth"
    with legacy.open("wb") as f:
        from edgetl.weights.torch_pickle import LEGACY_MAGIC

        for header in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
            f.write(pickle.dumps(header, protocol=2))
        f.write(body)
        f.write(pickle.dumps(list(storages), protocol=2))
        for array in storages.values():
            f.write(struct.pack("<q", array.size) + array.tobytes())
    packed = folder / "seed_zip.pth"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("archive/data.pkl", body)
        z.writestr("archive/byteorder", "little")
        for key, array in storages.items():
            z.writestr(f"archive/data/{key}", array.tobytes())
    packed.write_bytes(buffer.getvalue())
    return [legacy, packed]


def expected_weights() -> dict[str, np.ndarray]:
    """What :func:`write_weights_seeds` stores (to check that the seeds themselves read back)."""
    rng = np.random.default_rng(0)
    tensors = {"conv.weight": rng.normal(size=(4, 3, 3, 3)), "bn.running_var": rng.uniform(0.5, 2, 4), "fc.bias": rng.normal(size=2)}
    return {k: v.astype("<f4") for k, v in tensors.items()}
