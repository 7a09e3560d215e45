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


def read_model_file(path: Path) -> tuple[str, bytes, Artifact | None]:
    """Return ``(format, bytes, imprinted artifact or None)`` of a regular model file; refuse FIFOs, devices,
    loops and giants first. For an imprinted model the format and bytes are its base's."""
    from .safefile import SpecialFile, TooLarge, read_regular

    try:
        data = read_regular(path, MAX_MODEL_BYTES)
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: no such model file") from None
    except IsADirectoryError:
        raise ModelFormatError(f"{path}: is a directory, expected a .tflite or .onnx file") from None
    except SpecialFile as exc:
        if path.is_dir():
            raise ModelFormatError(f"{path}: is a directory, expected a .tflite or .onnx file") from None
        raise ModelFormatError(f"{exc}; copy the model to a file") from None
    except TooLarge:
        raise ModelFormatError(f"{path}: is not an edge model (more than 2 GiB)") from None
    except (OSError, RuntimeError) as exc:  # ELOOP (a symlink loop), EACCES, ...
        raise ModelFormatError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    if is_artifact(data):
        artifact = read_artifact(path, data)
        return artifact.base_format, artifact.base_bytes, artifact
    return md.model_format(path, data[:16]), data, None


def read_spec(path: str | Path) -> ModelSpec | None:
    """Return the :class:`ModelSpec` of a ``.tflite``/``.onnx``/``.imprint`` file, or None if it has none."""
    fmt, data, artifact = read_model_file(Path(path))
    return artifact.spec if artifact is not None else md.parse_embedded(md.file_entries(data, fmt)).spec


def warm_up(backend: Backend, path: Path) -> None:
    """Run one inference on a blank input, so a corrupted model fails at load and not in the middle of a batch."""
    shape = [d if d > 0 else 1 for d in backend.input.shape]
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
