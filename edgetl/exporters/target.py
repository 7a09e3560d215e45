"""What every export target is: declared capabilities plus the same small steps.

A target (``tflite``, ``edgetpu``, ``onnx``; a new one is a subclass registered in
:mod:`edgetl.exporters.registry`) declares what it supports and implements:

1. ``convert(model, options, calibration) -> bytes``: the model file, without the contract;
2. ``embed(data, spec, info) -> bytes``: the contract and export facts put inside it;
3. ``finalize(path, options, spec, info) -> Finalized``: post-steps (e.g. Edge TPU compile) and
   the artifact that actually ships;
4. ``validation_plan(finalized)``: which file is run, on which device, to validate the export.

:func:`edgetl.exporters.export` calls them in this order; a target never writes files itself
except in ``finalize``.

>>> full_range(np.full((1, 2, 2, 1), 7, np.uint8))[0, 0, :, 0].tolist()
[0, 255]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from edgetl_runtime.contract import ExportInfo, ModelSpec


class Finalized(NamedTuple):
    """The result of a target's post-steps: the artifact that ships, and target-specific findings."""

    artifact: Path
    written: tuple[Path, ...]  # every file the export wrote, artifact included
    details: Any = None  # e.g. the Edge TPU compatibility report
    note: str = ""  # what a user should know (e.g. "not compiled: install edgetpu_compiler")


class ValidationPlan(NamedTuple):
    """Which file validation runs, on which device string, and why that one (empty when the artifact)."""

    path: Path
    device: str
    note: str = ""


@dataclass(frozen=True)
class Target:
    """An export target: its name, file suffix and what it supports (see the module docstring)."""

    name: str
    suffix: str
    quantizations: tuple[str, ...]
    io_types: tuple[str, ...]  # tensor types of int8/qat models' input and output
    devices: tuple[str, ...]  # device kinds of edgetl_runtime that run its artifacts

    def convert(self, model: Any, options: Any, calibration: np.ndarray | None) -> bytes:
        raise NotImplementedError

    def embed(self, data: bytes, spec: ModelSpec, info: ExportInfo) -> bytes:
        raise NotImplementedError

    def finalize(self, path: Path, options: Any, spec: ModelSpec, info: ExportInfo) -> Finalized:
        """Return the written file as the artifact: most targets have no post-step."""
        return Finalized(path, (path,))

    def validation_plan(self, finalized: Finalized) -> ValidationPlan:
        """Validate the artifact itself, on the CPU."""
        return ValidationPlan(finalized.artifact, "cpu")

    def unsupported_hint(self, quantization: str) -> str:
        """Return advice for a quantization this target does not offer ("" when none)."""
        return ""


def full_range(pixels: np.ndarray) -> np.ndarray:
    """Return a copy of calibration ``pixels`` whose first image holds one 0 and one 255 pixel.

    The converter derives the input tensor's quantization from the range it saw during calibration;
    one black and one white pixel make that range exactly 0..255, so uint8 input has scale 1 and
    zero point 0 and the device feeds raw pixels without any arithmetic.
    """
    out = pixels.copy()
    out[0, 0, 0, :] = 0
    out[0, 0, -1, :] = 255
    return out
