"""Validation of an exported file against the float Keras model, run through the device runtime.

The exported file is executed by ``edgetl_runtime.load(path, device="cpu").scores`` (LiteRT or ONNX
Runtime, never TensorFlow) on held-out images prepared by the runtime's own preprocessing, and
compared with the float Keras model on the same pixels.

Tolerances (:data:`TOLERANCES`), per quantization:

========  ===================  ==================  =====================================
quant     max |score diff|     top-1 agreement     why
========  ===================  ==================  =====================================
fp32      <= 1e-3 (fails)      100 % (fails)       same arithmetic, only op-order rounding
fp16      reported only        >= 98 % (fails)     10-bit mantissa weights
dynamic   reported only        >= 95 % (fails)     int8 weights, float activations
int8      reported only        >= 90 % (fails)     int8 everywhere, calibrated ranges
qat       reported only        >= 90 % (fails)     as int8, after a QAT fine-tune
========  ===================  ==================  =====================================

The agreement floor of the lossy quantizations is applied to the *decisive* images: those where the
float model's top-1 score beats the runner-up by at least :data:`DECISIVE_MARGIN` (0.2, i.e. 0.6 vs 0.4 for two
classes). int8 rounding moves scores of small models by a few hundredths, so a near-tie flips under
any quantization and says nothing about the export; agreement over all images
is still reported. fp32 must agree on every image.

A drift beyond tolerance is a :class:`Failure` (kind, measured, limit) in the report, and
:func:`raise_for` raises the :class:`ValidationError` subclass of its kind
(:class:`AgreementError`, :class:`AtolError`, :class:`ShapeError`), carrying the full
:class:`ValidationReport`.

>>> TOLERANCES["fp32"].max_abs_diff, TOLERANCES["int8"].min_agreement
(0.001, 0.9)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import ERROR_OF_KIND, AgreementError, AtolError, ShapeError, ValidationError

__all__ = ["Tolerance", "TOLERANCES", "Failure", "ValidationReport", "compare", "validate", "raise_for",
           "reference_scores", "runtime_scores", "ValidationError", "ShapeError", "AgreementError", "AtolError"]


@dataclass(frozen=True)
class Tolerance:
    """Limits an export must meet: ``max_abs_diff`` (None: report only) and ``min_agreement`` (0..1)."""

    max_abs_diff: float | None
    min_agreement: float


DECISIVE_MARGIN = 0.2

TOLERANCES = {
    "fp32": Tolerance(1e-3, 1.0),
    "fp16": Tolerance(None, 0.98),
    "dynamic": Tolerance(None, 0.95),
    "int8": Tolerance(None, 0.90),
    "qat": Tolerance(None, 0.90),
}


@dataclass(frozen=True)
class Failure:
    """One limit an export missed: ``kind`` (shape, agreement or atol), the measured value, the limit."""

    kind: str
    measured: float
    limit: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ValidationReport:
    """How far an exported model is from the float model on ``n_images`` held-out images."""

    path: str
    quantization: str
    n_images: int
    agreement: float  # fraction of images whose top-1 class matches the float model
    max_abs_diff: float  # largest |exported - float| over all scores
    mean_abs_diff: float
    accuracy: float | None  # of the exported model, on images with a known label
    reference_accuracy: float | None  # of the float Keras model, same images
    tolerance: Tolerance
    failures: tuple[Failure, ...] = field(default_factory=tuple)
    engine: str = "edgetl_runtime"
    device: str = "cpu"  # the device string the exported file ran on
    note: str = ""  # e.g. which file was validated in place of a compiled artifact
    decisive_images: int = 0  # images where the float model's top-1 margin >= DECISIVE_MARGIN
    decisive_agreement: float | None = None  # agreement on those images (None: no decisive image)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def accuracy_delta(self) -> float | None:
        if self.accuracy is None or self.reference_accuracy is None:
            return None
        return self.accuracy - self.reference_accuracy

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "quantization": self.quantization,
            "n_images": self.n_images,
            "agreement": self.agreement,
            "decisive_images": self.decisive_images,
            "decisive_agreement": self.decisive_agreement,
            "max_abs_diff": self.max_abs_diff,
            "mean_abs_diff": self.mean_abs_diff,
            "accuracy": self.accuracy,
            "reference_accuracy": self.reference_accuracy,
            "accuracy_delta": self.accuracy_delta,
            "tolerance": {"max_abs_diff": self.tolerance.max_abs_diff, "min_agreement": self.tolerance.min_agreement},
            "passed": self.passed,
            "failures": [f.to_dict() for f in self.failures],
            "engine": self.engine,
            "device": self.device,
            "note": self.note,
        }


def runtime_scores(path: str | Path, device: str = "cpu", threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """Return a function: uint8 pixels (N, H, W, C) -> float32 probabilities, run by ``edgetl_runtime``."""
    import edgetl_runtime

    return edgetl_runtime.load(path, device=device, threads=threads).scores


def reference_scores(model: Any, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Return the float Keras model's probabilities for uint8 ``pixels`` (the model takes pixels 0..255)."""
    out = [np.asarray(model(pixels[i : i + batch_size].astype(np.float32), training=False)) for i in range(0, len(pixels), batch_size)]
    return np.concatenate(out).astype(np.float32)


def _accuracy(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Return top-1 accuracy over the images with a known label (index >= 0), None when there is none."""
    known = np.asarray(labels) >= 0
    if not known.any():
        return None
    return float(np.mean(scores[known].argmax(axis=1) == np.asarray(labels)[known]))


def compare(
    path: str | Path,
    exported: np.ndarray,
    reference: np.ndarray,
    labels: np.ndarray,
    quantization: str,
    tolerance: Tolerance | None = None,
    device: str = "cpu",
) -> ValidationReport:
    """Return the :class:`ValidationReport` of ``exported`` scores against ``reference`` scores.

    ``labels``: each image's class index (-1 where unknown), for the accuracies.
    """
    tol = tolerance or TOLERANCES[quantization]
    failures: list[Failure] = []
    n = len(reference)
    if exported.shape != reference.shape:
        failures.append(Failure("shape", float(np.prod(exported.shape)), float(np.prod(reference.shape)),
                                f"output shape {exported.shape} != float model's {reference.shape}"))  # fmt: skip
        return ValidationReport(str(path), quantization, n, 0.0, float("inf"), float("inf"),
                                None, _accuracy(reference, labels), tol, tuple(failures), device=device)  # fmt: skip
    diff = np.abs(exported.astype(np.float64) - reference.astype(np.float64))
    same = exported.argmax(axis=1) == reference.argmax(axis=1)
    agreement = float(np.mean(same)) if len(same) else 1.0
    top2 = np.sort(reference, axis=1)[:, -2:] if reference.shape[1] > 1 else np.concatenate([1 - reference, reference], 1)
    decisive = (top2[:, 1] - top2[:, 0]) >= DECISIVE_MARGIN
    decisive_agreement = float(np.mean(same[decisive])) if decisive.any() else None
    max_diff = float(diff.max()) if diff.size else 0.0
    if quantization == "fp32" or tolerance is not None:
        checked, where = agreement, "all"
    else:
        checked, where = decisive_agreement, f"{int(decisive.sum())} decisive"
    if checked is not None and checked < tol.min_agreement:
        failures.append(Failure("agreement", checked, tol.min_agreement,
                                f"top-1 agreement {checked:.1%} with the float model on {where} images is below "
                                f"the {tol.min_agreement:.0%} floor for {quantization}"))  # fmt: skip
    if tol.max_abs_diff is not None and max_diff > tol.max_abs_diff:
        failures.append(Failure("atol", max_diff, tol.max_abs_diff,
                                f"max |score difference| {max_diff:.3g} exceeds {tol.max_abs_diff:g} for {quantization}"))
    return ValidationReport(
        path=str(path),
        quantization=quantization,
        n_images=n,
        agreement=agreement,
        max_abs_diff=max_diff,
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        accuracy=_accuracy(exported, labels),
        reference_accuracy=_accuracy(reference, labels),
        tolerance=tol,
        failures=tuple(failures),
        decisive_images=int(decisive.sum()),
        decisive_agreement=decisive_agreement,
        device=device,
    )


def validate(
    path: str | Path,
    reference_model: Any,
    pixels: np.ndarray,
    labels: np.ndarray,
    quantization: str,
    tolerance: Tolerance | None = None,
    device: str = "cpu",
) -> ValidationReport:
    """Run ``path`` through the runtime on uint8 ``pixels``, compare with ``reference_model``; return the report."""
    exported = runtime_scores(path, device)(pixels)
    return compare(path, exported, reference_scores(reference_model, pixels), labels, quantization, tolerance, device)


def raise_for(report: ValidationReport) -> None:
    """Raise the matching :class:`ValidationError` subclass when ``report`` failed; do nothing otherwise."""
    if report.passed:
        return
    message = (
        f"{report.path}: exported model failed validation on {report.n_images} held-out images: "
        + "; ".join(f.message for f in report.failures)
        + ". Check the calibration data (--calib) matches the deployment images, try --quant qat or a "
        "float format, or see the report for per-metric numbers."
    )
    raise ERROR_OF_KIND[report.failures[0].kind](message, report)
