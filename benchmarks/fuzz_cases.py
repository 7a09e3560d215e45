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
           "run-folder")
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

    def to_json(self) -> str:
        return json.dumps({k: [str(p) for p in v] if isinstance(v, list) else str(v) for k, v in self.__dict__.items()})

    @classmethod
    def from_json(cls, text: str) -> Corpus:
        raw = json.loads(text)
        return cls(**{k: [Path(p) for p in v] if isinstance(v, list) else (Path(v) if v != "None" else None)
                      for k, v in raw.items()})


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
                "[1e9, 1e9]", "[0, 0]", "[-5, 3]", '["a", 1]', "1000000", "0.0001", '"' + "z" * 5000 + '"')


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
