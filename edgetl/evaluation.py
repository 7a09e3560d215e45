"""Metrics of a defect classifier, the decision threshold, and the plots a run folder keeps.

The defect score of an image is ``1 - sum(p(good classes))``; an image is called defective when
its score reaches the threshold. Missing a defect usually costs more than a false alarm, so the
threshold can be chosen to reach a target recall of the defect class on the validation data.

>>> import numpy as np
>>> m = compute_metrics(np.array([1, 0, 1, 0]), np.array([0.9, 0.2, 0.6, 0.4]), threshold=0.5)
>>> m["accuracy"], m["roc_auc"]
(1.0, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from edgetl_runtime.contract import ModelSpec


def defect_scores(probs: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Return the contract's defect score, ``1 - sum(p(good))``, for each row of ``probs`` (N, classes)."""
    from edgetl_runtime.model import defect_scores as scores

    return scores(probs, spec.good_indices)


def roc_curve(is_defect: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (false-positive rate, true-positive rate, thresholds), thresholds descending."""
    order = np.argsort(-score, kind="mergesort")
    score, truth = score[order], is_defect[order].astype(bool)
    distinct = np.r_[np.where(np.diff(score))[0], len(score) - 1]
    tps = np.cumsum(truth)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / max(truth.sum(), 1)]
    fpr = np.r_[0.0, fps / max((~truth).sum(), 1)]
    return fpr, tpr, np.r_[np.inf, score[distinct]]


def roc_auc(is_defect: np.ndarray, score: np.ndarray) -> float | None:
    """Return the area under the ROC curve, or None when only one class is present."""
    truth = is_defect.astype(bool)
    if truth.all() or not truth.any():
        return None
    fpr, tpr, _ = roc_curve(truth, score)
    return float(np.trapezoid(tpr, fpr))


def threshold_for_recall(is_defect: np.ndarray, score: np.ndarray, recall: float) -> float:
    """Return the highest threshold whose defect recall on these scores is at least ``recall``."""
    if not 0.0 < recall <= 1.0:
        raise ValueError(f"target recall must be in (0, 1], got {recall}")
    positives = np.sort(score[is_defect.astype(bool)])[::-1]
    if positives.size == 0:
        raise ValueError("no defective images in the validation data: cannot choose a threshold for recall")
    needed = int(np.ceil(recall * positives.size))
    return float(positives[needed - 1])


def compute_metrics(is_defect: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Return defect-vs-good metrics: accuracy, balanced accuracy, precision/recall/F1, ROC AUC."""
    truth = is_defect.astype(bool)
    pred = score >= threshold
    tp = int(np.sum(pred & truth))
    tn = int(np.sum(~pred & ~truth))
    fp = int(np.sum(pred & ~truth))
    fn = int(np.sum(~pred & truth))
    recall = tp / (tp + fn) if tp + fn else 0.0
    specificity = tn / (tn + fp) if tn + fp else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n": int(truth.size),
        "threshold": float(threshold),
        "accuracy": (tp + tn) / truth.size if truth.size else 0.0,
        "balanced_accuracy": (recall + specificity) / 2,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": roc_auc(truth, score),
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
    }


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Return the (true, predicted) count matrix of integer class labels."""
    matrix = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def predict_labels(probs: np.ndarray, spec: ModelSpec, threshold: float) -> np.ndarray:
    """Return class indices decided by the threshold rule (best defect class, else best good class)."""
    good = np.array([name in spec.good_labels for name in spec.labels])
    defect_best = np.where(good, -1.0, probs).argmax(axis=1)
    good_best = np.where(good, probs, -1.0).argmax(axis=1)
    is_defect = defect_scores(probs, spec) >= threshold
    return np.where(is_defect, defect_best, good_best)


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one model on one data set (``metrics`` is JSON-ready)."""

    metrics: dict[str, Any]
    probs: np.ndarray
    y_true: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return dict(self.metrics)


def evaluate_probs(probs: np.ndarray, y_true: np.ndarray, spec: ModelSpec, threshold: float | None = None) -> EvalResult:
    """Return an :class:`EvalResult` for probabilities ``probs`` against label indices ``y_true``.

    ``threshold`` defaults to the contract's.
    """
    threshold = spec.threshold if threshold is None else threshold
    labels = spec.labels
    score = defect_scores(probs, spec)
    truth_defect = np.array([labels[i] not in spec.good_labels for i in y_true])
    metrics = compute_metrics(truth_defect, score, threshold)
    pred = predict_labels(probs, spec, threshold)
    metrics["labels"] = list(labels)
    metrics["good_labels"] = list(spec.good_labels)
    metrics["class_accuracy"] = float(np.mean(pred == y_true)) if len(y_true) else 0.0
    metrics["confusion_matrix"] = confusion_matrix(y_true, pred, len(labels)).tolist()
    return EvalResult(metrics=metrics, probs=probs, y_true=y_true)


# --------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path) -> Path:
    """Write a confusion-matrix PNG to ``path`` and return it."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="black")
    fig.tight_layout()
    return _save(fig, plt, path)


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


def _scorer(model: Path, target_recall: float | None) -> tuple[ModelSpec, Callable[[np.ndarray], np.ndarray], Any]:
    """Return ``(contract, pixels -> probabilities, run or None)`` for a run folder or an exported file."""
    if model.suffix.lower() in (".tflite", ".onnx"):
        if target_recall is not None:
            raise ValueError("--target-recall needs a run folder (the threshold is chosen on its validation split)")
        import edgetl_runtime

        runtime_model = edgetl_runtime.load(model)
        if not runtime_model.info.embedded_metadata:
            raise ValueError(f"{model}: has no edgetl model contract (labels, threshold); evaluate the run folder instead")
        return runtime_model.info.spec, runtime_model.scores, None
    from .run import load_run

    run = load_run(model)
    keras_model = run.load_model()
    return run.spec, lambda x: np.asarray(keras_model(x.astype(np.float32), training=False)), run


def _probabilities(score: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray, batch_size: int) -> np.ndarray:
    parts = [score(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def evaluate(
    model: str | Path,
    data: str | Path,
    target_recall: float | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> EvalResult:
    """Evaluate a run folder, ``.keras`` model, or exported ``.tflite``/``.onnx`` on the data set ``data``.

    Images are prepared as the model contract says (size, colour mode, resize). With
    ``target_recall`` (run folders only) the decision threshold is first chosen on the run's
    validation split to reach that defect recall, stored in the run's contract (exports then
    carry it), and used here.
    """
    from .data import ImageDataset, Sample, load_images, scan_dataset

    spec, score, run = _scorer(Path(model), target_recall)
    if target_recall is not None:
        val = run.split("val")
        if not val:
            raise ValueError(f"{run.run_dir}: no validation split recorded; cannot choose a threshold")
        val_set = ImageDataset(tuple(Sample(Path(p), lab) for p, lab in val), spec.labels, None)
        val_images = load_images(val_set, spec.input, progress=progress)
        truth = np.array([spec.labels[i] not in spec.good_labels for i in val_images.y])
        val_scores = defect_scores(_probabilities(score, val_images.x, batch_size), spec)
        threshold = threshold_for_recall(truth, val_scores, target_recall)
        spec = run.with_spec(spec.with_threshold(threshold, f"target recall {target_recall} on the validation split")).spec
    dataset = scan_dataset(data)
    _check_labels(dataset.classes, spec.labels, data)
    images = load_images(dataset, spec.input, progress=progress)
    result = evaluate_probs(_probabilities(score, images.x, batch_size), images.label_indices(spec.labels), spec)
    if target_recall is not None:
        result.metrics["target_recall"] = target_recall
    return result


def _check_labels(found: Sequence[str], expected: Sequence[str], data: str | Path) -> None:
    unknown = sorted(set(found) - set(expected))
    if unknown:
        raise ValueError(f"{data}: classes {unknown} were not in the training data (model labels: {list(expected)})")
