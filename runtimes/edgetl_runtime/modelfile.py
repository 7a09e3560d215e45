"""Reading a model file safely, and the one blank inference that proves it runs (also in the probe's child).

A file is checked with ``stat`` before it is opened (``open()`` on a FIFO blocks forever) and
bounded in size; an imprinted model (:mod:`edgetl_runtime.imprinted`) is unpacked to its base.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import metadata as md
from .backends import Backend, TensorSpec, open_backend
from .contract import ModelSpec
from .errors import ModelFormatError
from .imprinted import Artifact, is_artifact, read_artifact


def output_size(tensor: TensorSpec) -> int:
    return int(np.prod([d for d in tensor.shape[1:] if d > 0]) or 0)


MAX_MODEL_BYTES = 2**31  # 2 GiB: the FlatBuffer/protobuf limit, far above any edge model

_TO_ONNX = "then run the .onnx (or a .tflite converted from it) here"
# Files people hand a runtime that runs .tflite/.onnx: what each is, and how its own tool exports it.
_FOREIGN_MODELS = {
    "ultralytics": ("an Ultralytics YOLO checkpoint (PyTorch)",
                    "export it with Ultralytics: `yolo export model=FILE format=onnx` (a classifier: add imgsz=224), "
                    "then `edgetl-runtime adopt OUT.onnx --preset ultralytics-cls -o MODEL.onnx`"),
    "anomalib": ("an anomalib checkpoint (PyTorch Lightning)",
                 "export it with anomalib: `anomalib export --model MODEL --ckpt_path FILE --export_type onnx`; " + _TO_ONNX),
    "torch": ("a PyTorch checkpoint (pickled weights or a whole model), which only PyTorch can read (and reading it "
              "can run code)",
              "export it from PyTorch: `torch.onnx.export(model.eval(), torch.randn(1, 3, 224, 224), 'model.onnx')` "
              "(timm and torchvision models alike), then `edgetl-runtime adopt model.onnx --preset timm|torchvision "
              "-o OUT.onnx`"),
    "torchscript": ("a TorchScript program", "export the model it came from with `torch.onnx.export(...)`; " + _TO_ONNX),
    "hdf5": ("a Keras HDF5 model (.h5)",
             "convert it with TensorFlow: `tf.lite.TFLiteConverter.from_keras_model(keras.models.load_model(FILE))` "
             "or `python -m tf2onnx.convert --keras FILE --output model.onnx`; edgetl's own runs: `edgetl export`"),
    "keras": ("a Keras 3 model (.keras)",
              "convert it with TensorFlow: `tf.lite.TFLiteConverter.from_keras_model(keras.models.load_model(FILE))`, "
              "or `model.export(DIR)` then `python -m tf2onnx.convert --saved-model DIR --output model.onnx`"),
    "savedmodel": ("a TensorFlow SavedModel",
                   "convert it: `tf.lite.TFLiteConverter.from_saved_model(DIR)` or "
                   "`python -m tf2onnx.convert --saved-model DIR --output model.onnx`"),
    "pb": ("a TensorFlow graph (.pb: a frozen graph or a SavedModel's saved_model.pb)",
           "convert its SavedModel folder: `python -m tf2onnx.convert --saved-model DIR --output model.onnx` "
           "(a frozen graph: `--graphdef FILE --inputs IN:0 --outputs OUT:0`) or TFLiteConverter.from_saved_model"),
    "engine": ("a TensorRT engine, built for one GPU and one TensorRT version",
               "run the .onnx it was built from with `--device tensorrt` (the engine is built and cached on the device)"),
    "openvino": ("an OpenVINO IR model", "export the model it came from to ONNX instead (anomalib: --export_type onnx)"),
    "safetensors": ("a safetensors file: weights without a graph",
                    "load them into their model in PyTorch and export it with `torch.onnx.export(...)`"),
    "coreml": ("a Core ML model", "export the model it came from to ONNX or TFLite instead"),
    "paddle": ("a PaddlePaddle model", "convert it with paddle2onnx"),
}
_FOREIGN_SUFFIXES = {".pt": "torch", ".pth": "torch", ".ckpt": "torch", ".bin": "torch", ".h5": "hdf5",
                     ".hdf5": "hdf5", ".keras": "keras", ".pb": "pb", ".engine": "engine", ".plan": "engine",
                     ".trt": "engine", ".xml": "openvino", ".safetensors": "safetensors", ".mlmodel": "coreml",
                     ".mlpackage": "coreml", ".pdmodel": "paddle", ".torchscript": "torchscript"}  # fmt: skip


def foreign_model(path: Path, data: bytes | None) -> str | None:
    """Return what ``path`` is when it is a model this runtime cannot run (PyTorch, Keras, TensorFlow, TensorRT...),
    and how to export it to .onnx/.tflite with its own tool; None for anything else (a .tflite, .onnx, .imprint).

    Read by suffix and first bytes only: nothing is unpickled or parsed.
    """
    if data is None:  # a folder
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            kind = "savedmodel"
        elif path.suffix.lower() == ".mlpackage":
            kind = "coreml"
        else:
            return None
    elif data[4:8] == b"TFL3" or (data[:1] == b"\x08" and path.suffix.lower() == ".onnx"):
        return None  # a TFLite flatbuffer, an ONNX protobuf
    elif data[:8] == b"\x89HDF\r\n\x1a\n":
        kind = "hdf5"
    elif data[:4] == b"PK\x03\x04" and (b"config.json" in data[:4096] or b"model.weights.h5" in data[:4096]) \
            and path.suffix.lower() == ".keras":
        kind = "keras"
    elif data[:4] == b"PK\x03\x04" and (b"data.pkl" in data[:65536]
                                          or path.suffix.lower() in (".pt", ".pth", ".ckpt")):
        head = data[: 4 * 2**20]
        kind = ("ultralytics" if b"ultralytics" in head else "anomalib" if b"anomalib" in head
                else "torchscript" if b"constants.pkl" in head or b"code/" in head else "torch")  # fmt: skip
    elif data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):  # a pickle (legacy torch.save)
        kind = "torch"
    else:
        kind = _FOREIGN_SUFFIXES.get(path.suffix.lower())
        if kind is None or (kind == "torch" and path.suffix.lower() == ".bin" and data[:4] != b"PK\x03\x04"):
            return None
    what, how = _FOREIGN_MODELS[kind]
    return f"{path}: {what}, not a model this runtime runs (.tflite, .onnx, .imprint); {how.replace('FILE', str(path))}"


def read_model_file(path: Path) -> tuple[str, bytes, Artifact | None]:
    """Return ``(format, bytes, imprinted artifact or None)`` of a regular model file; refuse FIFOs, devices,
    loops and giants first. For an imprinted model the format and bytes are its base's."""
    from .safefile import SpecialFile, TooLarge, read_regular

    try:
        data = read_regular(path, MAX_MODEL_BYTES)
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: no such model file") from None
    except IsADirectoryError:
        raise ModelFormatError(foreign_model(path, None) or f"{path}: is a directory, expected a .tflite or .onnx file") from None
    except SpecialFile as exc:
        if path.is_dir():
            raise ModelFormatError(foreign_model(path, None) or f"{path}: is a directory, expected a .tflite or .onnx "
                                   "file") from None  # fmt: skip
        raise ModelFormatError(f"{exc}; copy the model to a file") from None
    except TooLarge:
        raise ModelFormatError(f"{path}: is not an edge model (more than 2 GiB)") from None
    except (OSError, RuntimeError) as exc:  # ELOOP (a symlink loop), EACCES, ...
        raise ModelFormatError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    foreign = foreign_model(path, data)
    if foreign is not None:
        raise ModelFormatError(foreign)
    if is_artifact(data):
        artifact = read_artifact(path, data)
        return artifact.base_format, artifact.base_bytes, artifact
    return md.model_format(path, data[:16]), data, None


def read_spec(path: str | Path) -> ModelSpec | None:
    """Return the :class:`ModelSpec` of a ``.tflite``/``.onnx``/``.imprint`` file, or None if it has none."""
    fmt, data, artifact = read_model_file(Path(path))
    return artifact.spec if artifact is not None else md.parse_embedded(md.file_entries(data, fmt)).spec


def warm_up(backend: Backend, path: Path) -> None:
    """Run one inference on a blank input, so a corrupted model fails at load and not in the middle of a batch.

    A dynamic batch runs one image; a dynamic image side (an export with dynamic axes) 224 pixels, a size
    any image classifier takes (a 1-pixel image is too small for many).
    """
    shape = [d if d > 0 else 1 if i == 0 else 224 for i, d in enumerate(backend.input.shape)]
    try:
        out = np.asarray(backend.run(np.zeros(shape, np.dtype(backend.input.dtype))))
    except Exception as exc:  # the engines raise RuntimeError, ValueError or their own types
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ModelFormatError(f"{path}: the model does not run ({text}); the file is probably corrupted: "
                               "copy it again or export it again") from None  # fmt: skip
    declared, produced = output_size(backend.output), int(out.size // max(len(out), 1))
    if declared and produced != declared:  # found by the fuzz: a damaged shape made predict index past the labels
        raise ModelFormatError(f"{path}: the model declares {declared} outputs but produces {produced}; the file is "
                               "corrupted: copy it again or export it again")  # fmt: skip


def cpu_build(path: Path, data: bytes, fmt: str, threads: int | None, options: dict) -> None:
    """Build the model on the CPU and run one inference: what the probe checks, in a child or a fresh process."""
    warm_up(open_backend(path, data, fmt, "cpu", threads, options, False), path)


def probe_build(path: str, settings: str) -> None:
    """The probe's check in a fresh process: :func:`cpu_build` of the model at ``path``."""
    options = json.loads(settings)
    fmt, data, _ = read_model_file(Path(path))
    cpu_build(Path(path), data, fmt, options["threads"], options["options"])
