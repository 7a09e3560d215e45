"""Export errors, typed: what went wrong is a class (and, for validation, a kind), never a message search.

>>> issubclass(CalibrationError, ExportError), issubclass(MetricDropError, ValidationError)
(True, True)
"""

from __future__ import annotations

from typing import Any


class ExportError(ValueError):
    """An export cannot be done as asked (bad option combination, missing data, unwritable output)."""


class CalibrationError(ExportError):
    """No usable images for calibration or validation."""


class ValidationError(ExportError):
    """The exported model drifted from the float model beyond tolerance (``.report`` has the numbers)."""

    def __init__(self, message: str, report: Any):
        super().__init__(message)
        self.report = report


class ShapeError(ValidationError):
    """The exported model's output shape differs from the float model's."""


class AgreementError(ValidationError):
    """Too few images get the same top-1 class as from the float model."""


class AtolError(ValidationError):
    """Scores differ from the float model's by more than the absolute tolerance."""


class MetricDropError(ValidationError):
    """Decision accuracy or defect recall fell past the hard limit (``max_drop``) or beyond chance (``alpha``)."""


# Failure kind (ValidationReport.failures[i].kind) -> the error raised for it.
ERROR_OF_KIND = {"shape": ShapeError, "agreement": AgreementError, "atol": AtolError, "drop": MetricDropError,
                 "paired": MetricDropError}
