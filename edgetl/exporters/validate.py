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

Besides agreement, the export must keep the **decision** (:mod:`edgetl.exporters.gate`): its
verdicts on the labelled validation images (all of them by default) are compared with the float
model's image by image, and the export fails when it loses images beyond chance (an exact
one-sided paired test, for decision accuracy and separately for defect recall, below ``alpha``,
default 0.01) or when either metric falls more than ``max_drop`` points (default 5), a hard limit
that no sample size excuses. Agreement alone can pass a collapse: an int8 model whose accuracy
fell from 100 % to 75 % still agreed on every "decisive" image.

The agreement floor of the lossy quantizations is applied to the *decisive* images: those where the
float model's top-1 score beats the runner-up by at least :data:`DECISIVE_MARGIN` (0.2, i.e. 0.6 vs 0.4 for two
classes). int8 rounding moves scores of small models by a few hundredths, so a near-tie flips under
any quantization and says nothing about the export; agreement over all images
is still reported. fp32 must agree on every image.

A drift beyond tolerance is a :class:`Failure` (kind, measured, limit) in the report, and
:func:`raise_for` raises the :class:`ValidationError` subclass of its kind
(:class:`AgreementError`, :class:`AtolError`, :class:`ShapeError`), carrying the full
:class:`ValidationReport`.

>>> TOLERANCES["fp32"].max_abs_diff, TOLERANCES["int8"].min_agreement, DEFAULT_MAX_DROP, DEFAULT_ALPHA
(0.001, 0.9, 5.0, 0.01)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgetl_runtime.contract import ModelSpec
from edgetl_runtime.decision import decision_metrics, defect_scores

from .gate import DEFAULT_ALPHA, DEFAULT_MAX_DROP, GATED_METRICS, PairedTest, failure_message, paired_tests, verdict
from .errors import ERROR_OF_KIND, AgreementError, AtolError, MetricDropError, ShapeError, ValidationError

__all__ = ["Tolerance", "TOLERANCES", "Failure", "ValidationReport", "compare", "validate", "raise_for",
           "rank_agreement", "first_output",
           "reference_scores", "ValidationError", "ShapeError", "AgreementError", "AtolError",
           "MetricDropError", "DEFAULT_MAX_DROP", "DEFAULT_ALPHA", "PairedTest"]


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

    kind: str  # shape | agreement | atol | drop (past the hard limit) | paired (worse beyond chance)
    measured: float
    limit: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ValidationReport:
    """How far an exported model is from the float model on ``n_images`` held-out images.

    ``exported_metrics`` and ``float_metrics`` are the decision metrics of each model on the labelled images
    (:func:`edgetl_runtime.decision.decision_metrics`; None without labelled images).
    """

    path: str
    quantization: str
    n_images: int
    agreement: float  # fraction of images whose top-1 class matches the float model
    max_abs_diff: float  # largest |exported - float| over all scores
    mean_abs_diff: float
    exported_metrics: dict[str, Any] | None
    float_metrics: dict[str, Any] | None
    tolerance: Tolerance
    failures: tuple[Failure, ...] = field(default_factory=tuple)
    engine: str = "edgetl_runtime"  # the engine that ran the exported file (litert, onnxruntime, edgetpu)
    device: str = "cpu"  # the device the exported file ran on
    provider: str = ""  # the kernels that ran it (xnnpack, CPUExecutionProvider, the Edge TPU delegate)
    note: str = ""  # e.g. which file was validated in place of a compiled artifact
    decisive_images: int = 0  # images where the float model's top-1 margin >= DECISIVE_MARGIN
    decisive_agreement: float | None = None  # agreement on those images (None: no decisive image)
    max_drop: float = DEFAULT_MAX_DROP
    rank_agreement: float | None = None  # Spearman's rho of the defect scores, exported vs float
    alpha: float = DEFAULT_ALPHA
    paired: tuple[PairedTest, ...] = ()  # the gate's paired tests, one per gated metric

    @property
    def passed(self) -> bool:
        return not self.failures

    def delta(self, metric: str) -> float | None:
        """Return exported minus float ``metric`` in points (None when either is unknown)."""
        a, b = (self.exported_metrics or {}).get(metric), (self.float_metrics or {}).get(metric)
        return None if a is None or b is None else (a - b) * 100

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "quantization": self.quantization,
            "n_images": self.n_images,
            "agreement": self.agreement,
            "decisive_images": self.decisive_images,
            "decisive_agreement": self.decisive_agreement,
            "rank_agreement": self.rank_agreement,
            "max_abs_diff": self.max_abs_diff,
            "mean_abs_diff": self.mean_abs_diff,
            "exported": self.exported_metrics,
            "float": self.float_metrics,
            "delta_points": {m: self.delta(m) for m in ("decision_accuracy", "defect_recall", "defect_precision",
                                                        "roc_auc", "class_accuracy")},  # fmt: skip
            "max_drop": self.max_drop,
            "alpha": self.alpha,
            "paired_tests": {t.metric: t.to_dict() for t in self.paired},
            "tolerance": {"max_abs_diff": self.tolerance.max_abs_diff, "min_agreement": self.tolerance.min_agreement},
            "passed": self.passed,
            "failures": [f.to_dict() for f in self.failures],
            "engine": self.engine,
            "provider": self.provider,
            "device": self.device,
            "note": self.note,
        }


def reference_scores(model: Any, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Return the float Keras model's probabilities for uint8 ``pixels`` (the model takes pixels 0..255)."""
    out = [first_output(model(pixels[i : i + batch_size].astype(np.float32), training=False))
           for i in range(0, len(pixels), batch_size)]  # fmt: skip
    return np.concatenate(out).astype(np.float32)


def first_output(outputs: Any) -> np.ndarray:
    """Return a Keras model's scores: its output, or the first of several (an anomaly detector's heatmap follows)."""
    return np.asarray(outputs[0] if isinstance(outputs, (list, tuple)) else outputs)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Return the ranks of ``values`` (1..n), ties sharing their average rank."""
    _, inverse, counts = np.unique(np.asarray(values, np.float64), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - (counts - 1) / 2.0)[inverse]).astype(np.float64)


def rank_agreement(a: np.ndarray, b: np.ndarray) -> float | None:
    """Return Spearman's rank correlation of ``a`` and ``b`` (ties averaged); None when either is constant.

    How well an export keeps the *order* of the float model's defect scores: what a threshold and
    the ROC AUC depend on, when the values themselves move under quantization.

    >>> rank_agreement(np.array([0.1, 0.2, 0.2, 0.9]), np.array([0.0, 0.3, 0.3, 0.5]))
    1.0
    """
    ra, rb = _ranks(a), _ranks(b)
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _metrics(scores: np.ndarray, labels: np.ndarray, spec: ModelSpec) -> dict[str, Any] | None:
    """Return the decision metrics over the images with a known label (index >= 0), None when none has."""
    if not (np.asarray(labels) >= 0).any():
        return None
    return decision_metrics(scores, labels, spec.labels, spec.good_labels, spec.threshold)


def _gate(exported: np.ndarray, reference: np.ndarray, labels: np.ndarray, spec: ModelSpec, exported_spec: ModelSpec,
          alpha: float, max_drop: float) -> tuple[tuple[PairedTest, ...], list[Failure]]:  # fmt: skip
    """Return the paired tests of the gated metrics on the labelled images, and the failures among them."""
    known = np.asarray(labels) >= 0
    good = spec.good_indices
    if not good or not known.any():
        return (), []
    is_defect = ~np.isin(np.asarray(labels)[known], good)
    called = [defect_scores(scores[known], good) >= s.threshold for scores, s in ((reference, spec), (exported, exported_spec))]
    tests = tuple(paired_tests(called[0], called[1], is_defect).values())
    failures = []
    for test in tests:
        kind = verdict(test, alpha, max_drop)
        if kind is not None:
            limit = max_drop if kind == "drop" else alpha
            measured = test.drop if kind == "drop" else test.p_value
            failures.append(Failure(kind, measured, limit, failure_message(test, kind, alpha, max_drop)))
    return tests, failures


def _gate_note(exported: dict[str, Any] | None) -> str:
    """Say when the decision gate could not run (nothing to compare), so a pass is not over-read."""
    if exported is None:
        return "no labelled validation images: decision accuracy and defect recall were not compared (pass --data)"
    if exported.get("decision_accuracy") is None:
        return "the model names no good class: there is no verdict to compare"
    if exported.get("defect_recall") is None:
        return "no defective validation images: defect recall was not compared"
    return ""


def compare(
    path: str | Path,
    exported: np.ndarray,
    reference: np.ndarray,
    labels: np.ndarray,
    quantization: str,
    tolerance: Tolerance | None = None,
    device: str = "cpu",
    *,
    spec: ModelSpec,
    max_drop: float = DEFAULT_MAX_DROP,
    alpha: float = DEFAULT_ALPHA,
    exported_threshold: float | None = None,
) -> ValidationReport:
    """Return the :class:`ValidationReport` of ``exported`` scores against ``reference`` scores.

    ``labels``: each image's class index (-1 where unknown), for the decision metrics of both
    models under ``spec`` (good labels, threshold). ``exported_threshold``: the threshold the
    exported file decides at when its export re-set it (default: the contract's). The gate
    (:mod:`edgetl.exporters.gate`) fails a metric that falls more than ``max_drop`` points, or
    whose paired test is below ``alpha``.
    """
    exported_spec = spec if exported_threshold is None else spec.with_threshold(exported_threshold, "export")
    tol = tolerance or TOLERANCES[quantization]
    failures: list[Failure] = []
    n = len(reference)
    if exported.shape != reference.shape:
        failures.append(Failure("shape", float(np.prod(exported.shape)), float(np.prod(reference.shape)),
                                f"output shape {exported.shape} != float model's {reference.shape}"))  # fmt: skip
        return ValidationReport(str(path), quantization, n, 0.0, float("inf"), float("inf"), None,
                                _metrics(reference, labels, spec), tol, tuple(failures), device=device,
                                max_drop=max_drop, alpha=alpha)  # fmt: skip
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
    exported_metrics, float_metrics = _metrics(exported, labels, exported_spec), _metrics(reference, labels, spec)
    good = spec.good_indices
    ranks = rank_agreement(defect_scores(exported, good), defect_scores(reference, good)) if good else None
    paired, gate_failures = _gate(exported, reference, labels, spec, exported_spec, alpha, max_drop)
    failures += gate_failures
    note = _gate_note(exported_metrics)
    return ValidationReport(
        path=str(path),
        quantization=quantization,
        n_images=n,
        agreement=agreement,
        max_abs_diff=max_diff,
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        exported_metrics=exported_metrics,
        float_metrics=float_metrics,
        tolerance=tol,
        failures=tuple(failures),
        decisive_images=int(decisive.sum()),
        decisive_agreement=decisive_agreement,
        device=device,
        note=note,
        max_drop=max_drop,
        rank_agreement=ranks,
        alpha=alpha,
        paired=paired,
    )


def validate(
    path: str | Path,
    reference_model: Any,
    pixels: np.ndarray,
    labels: np.ndarray,
    quantization: str,
    tolerance: Tolerance | None = None,
    device: str = "cpu",
    *,
    spec: ModelSpec,
    max_drop: float = DEFAULT_MAX_DROP,
    alpha: float = DEFAULT_ALPHA,
    float_scores: np.ndarray | None = None,
    on: str = "host",
    emulated: tuple[np.ndarray, dict] | None = None,
) -> ValidationReport:
    """Run ``path`` through the runtime on uint8 ``pixels``, compare with ``reference_model``; return the report.

    ``float_scores``: the reference model's scores on ``pixels`` when the caller has them already.
    ``on``: ``host``, or ``aarch64``: the file runs in the emulated aarch64 root
    (:mod:`edgetl.exporters.emulated`), and the report says so. ``emulated``: ``(scores, what ran
    them)`` of this file's graph on ``pixels`` in that root, when the export has them already (its
    threshold pass: the file differs from what was scored only in its metadata), saving a pass.
    The report names the engine, device and provider that actually ran the exported file.
    """
    if float_scores is None:
        float_scores = reference_scores(reference_model, pixels)
    import edgetl_runtime

    model = edgetl_runtime.load(path, device=device)
    own = model.info.spec.threshold  # the file's own threshold, when its export re-set it
    if on == "aarch64":
        from . import emulated as emulated_run

        if emulated is None or len(emulated[0]) != len(pixels):
            emulated = emulated_run.scores(Path(path).read_bytes(), "onnx" if str(path).endswith(".onnx") else "tflite",
                                           pixels)  # fmt: skip
        exported, ran = emulated
        emulator = f", {ran['emulated']}" if ran.get("emulated") else ""
        ran_on = f"{device} ({ran['machine']}{emulator}; edgetl-runtime {ran['runtime']} in {emulated_run.default_root()})"
        info = {"engine": ran["engine"], "device": ran_on, "provider": ran["provider"]}
    else:
        exported = model.scores(pixels)
        info = {"engine": model.info.engine, "device": model.info.device, "provider": model.info.provider}
    report = compare(path, exported, float_scores, labels, quantization,
                     tolerance, device, spec=spec, max_drop=max_drop, alpha=alpha,
                     exported_threshold=None if own == spec.threshold else own)  # fmt: skip
    return replace(report, **info)


def next_levers(report: ValidationReport, options: Any = None, calibrated_on: int | None = None) -> str:
    """Return what to try after a failed validation, never an option ``options`` already holds.

    ``options``: the :class:`~edgetl.exporters.options.ExportOptions` of the export (None: the
    defaults); ``calibrated_on``: how many calibration images the export actually had (a ``--calib``
    folder may hold fewer than ``calib_samples``). The levers, in order: a float head for an int8
    file without one, more calibration images, calibration images closer to the line,
    quantization-aware training, a float format; then accepting the loss explicitly.
    """
    kinds = {f.kind for f in report.failures}
    calib_samples = getattr(options, "calib_samples", 200)
    used = calib_samples if calibrated_on is None else min(calibrated_on, calib_samples)
    quant, fmt = getattr(options, "quantization", report.quantization), getattr(options, "format", "tflite")
    steps = []
    if quant == "int8" and fmt in ("tflite", "onnx") and not getattr(options, "float_head", True):
        steps.append("the default float head (drop --full-int8: an int8 head clips the scores to the range its "
                     "calibration saw, and a threshold outside it cannot be held)")  # fmt: skip
    if quant in ("int8", "qat") and used < calib_samples:
        where = "the --calib folder" if getattr(options, "calib_data", None) is not None else "the run's train split"
        steps.append(f"more calibration images, of every class ({where} gave {used}; --calib-samples "
                     f"{calib_samples} asks for more)")  # fmt: skip
    elif quant in ("int8", "qat") and calib_samples < MORE_CALIBRATION:
        steps.append(f"more calibration images (--calib-samples {MORE_CALIBRATION}; this export used {used})")
    if quant in ("int8", "qat") and getattr(options, "calib_data", None) is None:
        steps.append("calibration images closer to the line's (--calib DIR)")
    if quant == "int8" and fmt in ("tflite", "edgetpu"):
        steps.append("a quantization-aware fine-tune (--quant qat)")
    if quant != "fp32" and fmt != "edgetpu":
        steps.append("a float format (--quant fp16, half the size of fp32)")
    advice = f"Try {'; or '.join(steps)}." if steps else "The float model itself may be at fault: check it with `edgetl eval`."
    if kinds & {"drop", "paired"}:
        accept = []
        if "drop" in kinds:
            accept.append("--max-drop POINTS")
        if "paired" in kinds:
            accept.append("a smaller --alpha")
        advice += (f" To ship it anyway, accept the loss explicitly with {' and '.join(accept)} (the report beside "
                   "the output path has every count).")  # fmt: skip
    return advice


MORE_CALIBRATION = 500  # the calibration images the advice suggests


def raise_for(report: ValidationReport, options: Any = None, calibrated_on: int | None = None) -> None:
    """Raise the matching :class:`ValidationError` subclass when ``report`` failed; do nothing otherwise.

    ``options``: the export's options, so that the advice names only levers not yet pulled;
    ``calibrated_on``: the calibration images the export had (see :func:`next_levers`).
    """
    if report.passed:
        return
    message = (
        f"{report.path}: exported model failed validation on {report.n_images} held-out images: "
        + "; ".join(f.message for f in report.failures)
        + ". Nothing was written at the output path. "
        + next_levers(report, options, calibrated_on)
    )
    raise ERROR_OF_KIND[report.failures[0].kind](message, report)
