"""The one decision and the one set of metrics, shared by every command that judges a model.

A prediction's **defect score** is ``1 - sum(p(good classes))``; its **verdict** is ``"defect"``
when the defect score reaches the contract's threshold, else ``"good"``; its **top class** is the
most probable class, with its probability. The verdict and the top class can disagree (a defect
class at 0.45 with threshold 0.4 is a "defect" verdict with top class "good"): the verdict is the
decision, the top class is a detail.

:func:`decision_metrics` is the one definition of the figures that ``edgetl eval``, the export
validation, ``edgetl benchmark`` and ``edgetl-runtime bench --data`` report, under these names:

``decision_accuracy``
    share of images whose verdict matches the truth (defect or good);
``defect_recall``, ``defect_precision``
    of the defect verdict, at the stored threshold;
``roc_auc``
    area under the ROC curve of the defect score (None when only one truth class is present);
``false_reject_rate``, ``escape_rate``
    what the threshold costs on the line: the share of good images called defect (scrapped good
    parts) and the share of defective images called good (defects passed, ``1 - defect_recall``);
``class_accuracy``
    share of images whose decided class (the best defect class for a defect verdict, the best good
    class otherwise) is the true class; for models with more than two classes only (None otherwise).
    A model that names no good class (a generic third-party classifier) has no verdict: its
    decision metrics are None and ``class_accuracy`` is the top-1 accuracy.

>>> import numpy as np
>>> probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])    # good, defect
>>> m = decision_metrics(probs, np.array([0, 1, 1, 1]), ("good", "defect"), ("good",), 0.5)
>>> (m["decision_accuracy"], m["defect_recall"], m["defect_precision"], m["roc_auc"])
(0.75, 0.6666666666666666, 1.0, 1.0)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

METRIC_NAMES = ("decision_accuracy", "defect_recall", "defect_precision", "roc_auc", "class_accuracy")


def defect_scores(probs: np.ndarray, good: Sequence[int]) -> np.ndarray:
    """Return ``1 - sum(p(good classes))`` for each row of ``probs`` (N, classes), as float64.

    The runtime's verdict and the workstation's metrics and threshold choice all call this, so a
    threshold set at an image's exact score classifies that image the same way everywhere.
    float64: many small good-class scores must not lose precision.
    """
    probs = np.asarray(probs)
    return np.clip(1.0 - probs[:, list(good)].astype(np.float64).sum(axis=1), 0.0, 1.0)


def decided_classes(probs: np.ndarray, good: Sequence[int], threshold: float) -> np.ndarray:
    """Return each row's decided class: the best defect class for a defect verdict, else the best good class."""
    probs = np.asarray(probs, dtype=np.float64)
    is_good = np.zeros(probs.shape[1], bool)
    is_good[list(good)] = True
    defect_best = np.where(is_good, -1.0, probs).argmax(axis=1)
    good_best = np.where(is_good, probs, -1.0).argmax(axis=1)
    return np.where(defect_scores(probs, good) >= threshold, defect_best, good_best)


def roc_curve(is_defect: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (false-positive rate, true-positive rate, thresholds), thresholds descending."""
    order = np.argsort(-np.asarray(score), kind="mergesort")
    score, truth = np.asarray(score)[order], np.asarray(is_defect)[order].astype(bool)
    distinct = np.r_[np.where(np.diff(score))[0], len(score) - 1]
    tps = np.cumsum(truth)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / max(truth.sum(), 1)]
    fpr = np.r_[0.0, fps / max((~truth).sum(), 1)]
    return fpr, tpr, np.r_[np.inf, score[distinct]]


def roc_auc(is_defect: np.ndarray, score: np.ndarray) -> float | None:
    """Return the area under the ROC curve, or None when only one class is present."""
    truth = np.asarray(is_defect).astype(bool)
    if truth.size == 0 or truth.all() or not truth.any():
        return None
    fpr, tpr, _ = roc_curve(truth, score)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def verdict_counts(truth: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, int]:
    """Return the verdict confusion counts ``tp fp tn fn`` (positive = defect)."""
    truth, pred = np.asarray(truth).astype(bool), np.asarray(score) >= threshold
    return {"tp": int(np.sum(pred & truth)), "fp": int(np.sum(pred & ~truth)),
            "tn": int(np.sum(~pred & ~truth)), "fn": int(np.sum(~pred & truth))}  # fmt: skip


def decision_metrics(
    probs: np.ndarray,
    y_true: np.ndarray,
    labels: Sequence[str],
    good_labels: Sequence[str],
    threshold: float,
) -> dict[str, Any]:
    """Return the decision metrics (see the module docstring) of ``probs`` (N, C) against ``y_true``.

    ``y_true``: each image's class index into ``labels``; images with index -1 (unknown) are left
    out. The result also holds ``n``, ``threshold``, ``balanced_accuracy``, ``defect_f1`` and
    ``confusion`` (``tp fp tn fn`` of the verdict). Every field is a plain float/int/None (JSON-ready).
    """
    probs, y_true = np.asarray(probs), np.asarray(y_true, dtype=np.int64)
    known = y_true >= 0
    probs, y_true = probs[known], y_true[known]
    good = [i for i, name in enumerate(labels) if name in set(good_labels)]
    n = int(len(y_true))
    if not good:  # no verdict without good classes: only the top class can be judged
        return {"n": n, "threshold": float(threshold), "decision_accuracy": None, "defect_recall": None,
                "defect_precision": None, "roc_auc": None,
                "class_accuracy": float(np.mean(probs.argmax(axis=1) == y_true)) if n else None,
                "balanced_accuracy": None, "defect_f1": None, "false_reject_rate": None, "escape_rate": None,
                "confusion": None}  # fmt: skip
    truth = ~np.isin(y_true, good)
    score = defect_scores(probs, good) if len(probs) else np.zeros(0)
    c = verdict_counts(truth, score, threshold)
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    recall = tp / (tp + fn) if tp + fn else None
    precision = tp / (tp + fp) if tp + fp else None
    specificity = tn / (tn + fp) if tn + fp else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else (0.0 if n else None)
    class_accuracy = None
    if len(labels) > 2 and n:
        class_accuracy = float(np.mean(decided_classes(probs, good, threshold) == y_true))
    return {
        "n": n,
        "threshold": float(threshold),
        "decision_accuracy": (tp + tn) / n if n else None,
        "defect_recall": recall,
        "defect_precision": precision,
        "roc_auc": roc_auc(truth, score),
        "class_accuracy": class_accuracy,
        "balanced_accuracy": (recall + specificity) / 2 if recall is not None and specificity is not None else None,
        "defect_f1": f1,
        "false_reject_rate": fp / (fp + tn) if fp + tn else None,
        "escape_rate": fn / (tp + fn) if tp + fn else None,
        "confusion": c,
    }
