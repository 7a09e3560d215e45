"""Export: a trained run to TFLite, Edge TPU or ONNX, quantized, with its contract inside, validated.

Stage 4 of edgetl (data -> training -> evaluation -> export -> runtime -> devices). Targets live
in a registry (:mod:`.registry`): each declares what it supports and implements the same steps
(:mod:`.target`): convert, embed, finalize, validation plan. :func:`export` (:mod:`.pipeline`)
runs them in order and returns a typed :class:`ExportResult`; :mod:`.validate` checks the
artifact through the device runtime; :mod:`.qat` prepares a quantization-aware model.

>>> from edgetl.exporters import ExportOptions, export                       # doctest: +SKIP
>>> result = export("runs/elpv", ExportOptions.for_int8(), "model.tflite")  # doctest: +SKIP
>>> result.report.agreement                                                # doctest: +SKIP
0.99
"""

from __future__ import annotations

from edgetl_runtime.contract import FORMATS, QUANTIZATIONS

from .errors import (AgreementError, AtolError, CalibrationError, ExportError, MetricDropError, ShapeError,
                     ValidationError)
from .options import IO_TYPES, ExportOptions
from .pipeline import ExportResult, QatSummary, default_output, export, options_for_profile, report_path_for
from .registry import SUPPORTED, TARGETS, get_target
from .target import Target
from .validate import TOLERANCES, Failure, Tolerance, ValidationReport

__all__ = [
    "MetricDropError",
    "export",
    "ExportOptions",
    "ExportResult",
    "QatSummary",
    "ExportError",
    "CalibrationError",
    "ValidationError",
    "AgreementError",
    "AtolError",
    "ShapeError",
    "ValidationReport",
    "Failure",
    "Tolerance",
    "TOLERANCES",
    "FORMATS",
    "QUANTIZATIONS",
    "IO_TYPES",
    "SUPPORTED",
    "TARGETS",
    "Target",
    "get_target",
    "report_path_for",
    "default_output",
    "options_for_profile",
]
