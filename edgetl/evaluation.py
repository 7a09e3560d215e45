"""Metrics of a defect classifier, the decision threshold, the report of ``edgetl eval``.

The metrics are :func:`edgetl_runtime.decision.decision_metrics` - the same definitions and
names as the export validation, ``edgetl benchmark`` and ``edgetl-runtime bench --data``:
decision accuracy, defect recall and precision at the stored threshold, ROC AUC, and class
accuracy for models with more than two classes, and the two costs of a threshold on the line: the
false-reject rate (good parts rejected) and the escape rate (defects passed). The threshold can
be chosen on the validation data by what those cost (:mod:`edgetl.thresholds`): a target recall
of the defect class, or a maximum false-alarm rate (the scrap budget).

>>> import numpy as np
>>> from edgetl_runtime.contract import InputSpec
>>> spec = ModelSpec(labels=("defect", "good"), good_labels=("good",), input=InputSpec(32, 32))
>>> m = evaluate_probs(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.4, 0.6]]), np.array([0, 1, 0, 1]), spec).metrics
>>> m["decision_accuracy"], m["roc_auc"]
(1.0, 1.0)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from edgetl_runtime.contract import ModelSpec
from edgetl_runtime.decision import decided_classes, decision_metrics, roc_auc, roc_curve

from .thresholds import FEW_DEFECTS, choose_threshold, recall_interval, threshold_for_recall

__all__ = ["defect_scores", "roc_curve", "roc_auc", "threshold_for_recall", "recall_interval",
           "confusion_matrix", "predict_labels", "EvalResult", "evaluate_probs", "evaluate", "FEW_DEFECTS"]



def defect_scores(probs: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Return the contract's defect score, ``1 - sum(p(good))``, for each row of ``probs`` (N, classes)."""
    from edgetl_runtime.decision import defect_scores as scores

    return scores(probs, spec.good_indices)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Return the (true, predicted) count matrix of integer class labels."""
    matrix = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def predict_labels(probs: np.ndarray, spec: ModelSpec, threshold: float) -> np.ndarray:
    """Return class indices decided by the threshold rule (best defect class, else best good class)."""
    return decided_classes(probs, spec.good_indices, threshold)


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one model on one data set (``metrics`` is JSON-ready), and where its report went."""

    metrics: dict[str, Any]
    probs: np.ndarray
    y_true: np.ndarray
    report_dir: Path | None = None
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return dict(self.metrics)


def evaluate_probs(probs: np.ndarray, y_true: np.ndarray, spec: ModelSpec, threshold: float | None = None) -> EvalResult:
    """Return an :class:`EvalResult` for probabilities ``probs`` against label indices ``y_true``.

    ``threshold`` defaults to the contract's.
    """
    threshold = spec.threshold if threshold is None else threshold
    metrics = decision_metrics(probs, y_true, spec.labels, spec.good_labels, threshold)
    pred = predict_labels(probs, spec, threshold)
    metrics["labels"] = list(spec.labels)
    metrics["good_labels"] = list(spec.good_labels)
    metrics["confusion_matrix"] = confusion_matrix(np.asarray(y_true), pred, len(spec.labels)).tolist()
    return EvalResult(metrics=metrics, probs=probs, y_true=y_true)


# --------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path,
                   title: str = "confusion matrix") -> Path:
    """Write a confusion-matrix PNG (counts and the share of each true class, titled) to ``path`` and return it."""
    from .reports import write_matrix

    return write_matrix(path, np.asarray(matrix), labels, title)


def plot_roc(is_defect: np.ndarray, score: np.ndarray, path: Path) -> Path:
    """Write the defect-class ROC curve as a PNG to ``path`` and return it."""
    plt = _pyplot()
    fpr, tpr, _ = roc_curve(is_defect, score)
    auc = roc_auc(is_defect, score)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, label=f"AUC = {auc:.3f}" if auc is not None else "AUC undefined")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate (defect recall)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_history(history: dict[str, list[dict[str, float]]], path: Path) -> Path:
    """Write loss/accuracy curves of each training phase as a PNG to ``path`` and return it."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    offset = 0
    for phase, epochs in history.items():
        if not epochs:
            continue
        xs = np.arange(offset, offset + len(epochs)) + 1
        for ax, key in zip(axes, ("loss", "accuracy")):
            for prefix, style in (("", "-"), ("val_", "--")):
                values = [e.get(prefix + key) for e in epochs]
                if all(v is not None for v in values):
                    ax.plot(xs, values, style, label=f"{phase} {prefix or 'train_'}{key}")
        offset += len(epochs)
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig, plt, path: Path) -> Path:
    from edgetl_runtime.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)


# --------------------------------------------------------------------------- model on a data set


def _scorer(model: Path, rule: dict[str, float]) -> tuple[ModelSpec, Callable[[np.ndarray], np.ndarray], Any, Any]:
    """Return ``(contract, pixels -> probabilities, run or None, pixels -> heatmaps or None)`` for a run or a file."""
    if model.suffix.lower() in (".tflite", ".onnx", ".imprint"):
        if rule:
            flag = "--" + next(iter(rule)).replace("_", "-")
            raise ValueError(f"{flag} needs a run folder (the threshold is chosen on its validation split and stored "
                             "in its contract, which later exports carry)")  # fmt: skip
        import edgetl_runtime

        runtime_model = edgetl_runtime.load(model)
        if not runtime_model.info.embedded_metadata:
            raise ValueError(f"{model}: has no edgetl model contract (labels, threshold); evaluate the run folder instead")
        heat = (lambda x: runtime_model.scores_and_heatmaps(x)[1]) if runtime_model.has_heatmap else None
        return runtime_model.info.spec, runtime_model.scores, None, heat
    from .run import load_run

    run = load_run(model)
    keras_model = run.load_model()
    from .exporters.validate import first_output

    heat = None
    if run.spec.output.heatmap:
        heat = lambda x: np.asarray(keras_model(x.astype(np.float32), training=False)[1])  # noqa: E731
    return run.spec, lambda x: first_output(keras_model(x.astype(np.float32), training=False)), run, heat


def _probabilities(score: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray, batch_size: int) -> np.ndarray:
    parts = [score(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def default_report_dir(model: Path, data: str | Path) -> Path:
    """Return where ``edgetl eval`` writes its report: ``RUN/eval/<data folder>`` or ``<model file>.eval/<data>``."""
    name = Path(data).resolve().name or "data"
    if model.is_dir():
        base = model / "eval"
    elif model.suffix == ".keras":  # RUN/model.keras: the run folder's report
        base = model.parent / "eval"
    else:
        base = model.with_name(model.name + ".eval")
    return base / name


def _unused(folder: Path) -> Path:
    """Create and return ``folder``, or ``folder-2``, ``folder-3``...: the first that did not exist.

    No report overwrites another; ``mkdir`` claims the name, so two evaluations at once get two folders.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        candidate = folder if n == 1 else folder.with_name(f"{folder.name}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1


def _choose_threshold(run: Any, spec: ModelSpec, score: Callable, rule: dict[str, float], batch_size: int,
                      progress: bool) -> tuple[ModelSpec, dict[str, Any], list[str]]:  # fmt: skip
    """Choose the threshold by ``rule`` on the run's validation split, store it; return (spec, details, warnings)."""
    from .data import ImageDataset, Sample, load_images
    from .run import SPEC_FILE

    val = run.split("val")
    if not val:
        raise ValueError(f"{run.run_dir}: no validation split recorded; cannot choose a threshold")
    val_set = ImageDataset(tuple(Sample(Path(p), lab) for p, lab in val), spec.labels, None)
    val_images = load_images(val_set, spec.input, progress=progress)
    truth = np.array([spec.labels[i] not in spec.good_labels for i in val_images.y])
    val_scores = defect_scores(_probabilities(score, val_images.x, batch_size), spec)
    choice = choose_threshold(truth, val_scores, **rule)
    stored = run.with_spec(spec.with_threshold(choice.threshold, choice.source)).spec
    details = {**choice.details(), "threshold_stored": {"path": str(run.run_dir / SPEC_FILE),
                                                        "previous": spec.threshold,
                                                        "previous_source": spec.decision.threshold_source}}  # fmt: skip
    return stored, details, choice.warnings()


def evaluate(
    model: str | Path,
    data: str | Path,
    target_recall: float | None = None,
    batch_size: int = 32,
    progress: bool = True,
    threshold: float | None = None,
    report_dir: str | Path | None = None,
    write_report: bool = True,
    heatmap_dir: str | Path | None = None,
    max_false_alarm: float | None = None,
) -> EvalResult:
    """Evaluate a run folder, ``.keras`` model, or exported ``.tflite``/``.onnx`` on the data set ``data``.

    Images are prepared as the model contract says (size, colour mode, resize). With
    ``target_recall`` or ``max_false_alarm`` (run folders only) the decision threshold is first
    chosen on the run's validation split by that rule (:mod:`edgetl.thresholds`), stored in the
    run's contract (exports then carry it; ``metrics["threshold_stored"]`` says where and the
    previous value), and used here; a warning gives the rate's confidence interval when the
    validation split is too small to pin it. ``threshold`` evaluates at another threshold without
    storing it. The report (``metrics.json``, confusion matrices, ROC and precision-recall curves,
    a gallery of wrong verdicts) goes to ``report_dir`` (default :func:`default_report_dir`, a new
    folder for each evaluation). ``heatmap_dir``
    (anomaly detectors): each image with its heatmap drawn over it, as PNG files named
    ``NNNNN-<verdict>-<image name>.png``.
    """
    from .data import load_images, scan_dataset

    rule = {k: v for k, v in (("target_recall", target_recall), ("max_false_alarm", max_false_alarm)) if v is not None}
    if len(rule) + (threshold is not None) > 1:
        raise ValueError("choose the threshold one way: --threshold, --target-recall or --max-false-alarm")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within [0, 1], got {threshold}")
    if target_recall is not None and not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target recall must be in (0, 1], got {target_recall}")
    if max_false_alarm is not None and not 0.0 <= max_false_alarm < 1.0:
        raise ValueError(f"max false alarm is a share of the good images in [0, 1), got {max_false_alarm}")
    model = Path(model)
    spec, score, run, heat = _scorer(model, rule)
    if heatmap_dir is not None and heat is None:
        raise ValueError(f"--heatmap: {model} is a {spec.task} model and has no anomaly heatmap; it is for runs of "
                         "`edgetl train --task anomaly` and their exports")  # fmt: skip
    dataset = scan_dataset(data)
    _check_labels(dataset.classes, spec, data)
    notes: list[str] = []
    chosen: dict[str, Any] = {}
    if rule:
        spec, chosen, notes = _choose_threshold(run, spec, score, rule, batch_size, progress)
        for note in notes:
            warnings.warn(note, stacklevel=2)
    if run is not None:
        leak = _leak_warning([s.path for s in dataset.samples], run)
        if leak:
            notes.append(leak)
            warnings.warn(leak, stacklevel=2)
    images = load_images(dataset, spec.input, progress=progress)
    probs = _probabilities(score, images.x, batch_size)
    result = evaluate_probs(probs, images.truth(spec), spec, threshold)
    if heatmap_dir is not None:
        _write_overlays(Path(heatmap_dir), heat, images, probs, spec, threshold, batch_size)
    result.metrics.update(chosen)
    result.metrics["threshold_source"] = "given to eval" if threshold is not None else spec.decision.threshold_source
    info = getattr(getattr(score, "__self__", None), "info", None)  # an exported file: what ran it
    result.metrics["ran_on"] = ({"engine": info.engine, "provider": info.provider, "device": info.device}
                                if info is not None else {"engine": "tensorflow (Keras float model)", "provider": "", "device": ""})
    out = None
    if write_report:
        from edgetl_runtime.atomic import write_json

        from .reports import write_eval_report

        out = Path(report_dir) if report_dir is not None else _unused(default_report_dir(model, data))
        m = result.metrics
        report = write_eval_report(out, probs=probs, y_true=result.y_true, paths=[str(s.path) for s in images.samples],
                                   labels=spec.labels, good_labels=spec.good_labels, threshold=m["threshold"],
                                   defect_score=defect_scores(probs, spec),
                                   title=f"{model.name} on {Path(data).name}")  # fmt: skip
        write_json(out / "metrics.json", {**m, "model": str(model), "data": str(data), "warnings": notes,
                                          "files": [str(f) for f in report.files]})  # fmt: skip
        result.metrics["report_dir"] = str(out)
    return EvalResult(result.metrics, probs, result.y_true, out, tuple(notes))


def _write_overlays(folder: Path, heat: Callable[[np.ndarray], np.ndarray], images: Any, probs: np.ndarray,
                    spec: ModelSpec, threshold: float | None, batch_size: int) -> None:  # fmt: skip
    """Write each image with its anomaly heatmap over it to ``folder`` (the verdict in the file name)."""
    from edgetl_runtime.heatmap import overlay_name, write_overlay

    folder.mkdir(parents=True, exist_ok=True)
    verdicts = defect_scores(probs, spec) >= (spec.threshold if threshold is None else threshold)
    for start in range(0, len(images.x), batch_size):
        maps = heat(images.x[start : start + batch_size])
        for i, heatmap in enumerate(maps, start):
            name = overlay_name(images.samples[i].path, i, "defect" if verdicts[i] else "good")
            write_overlay(folder / name, images.x[i], heatmap)


def _leak_warning(test_paths: Sequence[Path], run: Any) -> str:
    """Return a warning when test images are byte-identical to the run's training/validation images, else ""."""
    from .data.dataset import file_digest

    seen = [Path(p) for p, _ in [*run.split("train"), *run.split("val")]]
    trained = {}
    for path in seen:
        try:
            trained.setdefault(file_digest(path), path)
        except OSError:
            continue  # moved since training: nothing to compare
    if not trained:
        return ""
    leaks = []
    for path in test_paths:
        try:
            twin = trained.get(file_digest(path))
        except OSError:
            continue
        if twin is not None:
            leaks.append((path, twin))
    if not leaks:
        return ""
    path, twin = leaks[0]
    return (f"{len(leaks)} of {len(test_paths)} test images are byte-identical to images the model was trained or "
            f"validated on (e.g. {path} = {twin}): these metrics are inflated; remove the duplicates from the test "
            "data (edgetl data inspect lists duplicates)")  # fmt: skip


def _check_labels(found: Sequence[str], spec: ModelSpec, data: str | Path) -> None:
    from .data.loading import unknown_classes

    unknown = unknown_classes(found, spec)
    if unknown:
        raise ValueError(f"{data}: classes {unknown} were not in the training data (model labels: {list(spec.labels)})")
