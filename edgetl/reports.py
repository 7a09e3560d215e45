"""The human-readable report folder of ``edgetl eval``: plots and a gallery of wrong verdicts.

:func:`write_eval_report` writes, each file atomically:

- ``confusion_matrix.png``: class confusion matrix (rows true, columns the decided class), each cell
  with its count and its share of the row;
- ``verdict_matrix.png``: the same for the good/defect verdict (2x2), kept as its own file so it stays
  legible however many classes there are;
- ``roc.png`` and ``pr.png``: ROC and precision-recall curves of the defect score, with the operating
  point at the threshold marked;
- ``misclassified.html``: a self-contained page (thumbnails embedded as JPEG data URIs) of the missed
  defects and the false alarms, the worst first.

The metrics themselves (``metrics.json``) are the caller's to write.

>>> import tempfile
>>> probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
>>> with tempfile.TemporaryDirectory() as tmp:
...     report = write_eval_report(Path(tmp) / "report", probs=probs, y_true=np.array([0, 1, 1]),
...                                paths=["a.png", "b.png", "c.png"], labels=["good", "defect"],
...                                good_labels=["good"], threshold=0.5, defect_score=probs[:, 1], title="demo")
>>> report.n_misclassified, [f.name for f in report.files]
(1, ['confusion_matrix.png', 'verdict_matrix.png', 'roc.png', 'pr.png', 'misclassified.html'])
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from edgetl_runtime.atomic import atomic_path, write_bytes

from edgetl_runtime.decision import roc_auc, roc_curve

THUMBNAIL_PX = 160


@dataclass(frozen=True)
class EvalReport:
    """Where the report went, every file written, and how many images got the wrong verdict."""

    out_dir: Path
    files: tuple[Path, ...]
    n_misclassified: int


def write_eval_report(out_dir: Path, *, probs: np.ndarray, y_true: np.ndarray, paths: Sequence[str | Path],
                      labels: Sequence[str], good_labels: Sequence[str], threshold: float,
                      defect_score: np.ndarray, title: str, max_gallery: int = 200) -> EvalReport:
    """Write the report files into ``out_dir`` (created if missing) and return an :class:`EvalReport`.

    ``probs`` is (N, classes) in the order of ``labels``, ``y_true`` the true class index of each image,
    ``defect_score`` the model's ``1 - sum(p(good))``; an image is called defective when its score is
    at least ``threshold``. At most ``max_gallery`` images are shown in each section of the gallery.
    """
    probs, y_true, score = np.asarray(probs, float), np.asarray(y_true, int), np.asarray(defect_score, float)
    _check_inputs(probs, y_true, paths, labels, good_labels, score)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    good = np.array([name in good_labels for name in labels], bool)
    true_defect = ~good[y_true]
    called_defect = score >= threshold
    # the decision rule of the runtime: best defect class when called defective, else best good class
    predicted = np.where(called_defect, np.where(good, -np.inf, probs).argmax(axis=1),
                         np.where(good, probs, -np.inf).argmax(axis=1))
    n_classes = len(labels)
    classes = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(classes, (y_true, predicted), 1)
    # The verdict matrix in the class matrix's row order: defect first when the labels start with a defect class.
    defect_first = not good[0]
    verdicts = np.zeros((2, 2), np.int64)
    np.add.at(verdicts, (true_defect.astype(int) ^ defect_first, called_defect.astype(int) ^ defect_first), 1)
    verdict_names = ["defect", "good"] if defect_first else ["good", "defect"]
    caption = f"{title}\n{len(y_true)} images, threshold {threshold:.3f}"

    plt = _pyplot()
    files = [
        _save(plt, _plot_matrix(plt, classes, list(labels), caption), out_dir / "confusion_matrix.png"),
        _save(plt, _plot_matrix(plt, verdicts, verdict_names, caption), out_dir / "verdict_matrix.png"),
        _save(plt, _plot_roc(plt, true_defect, score, threshold, caption), out_dir / "roc.png"),
        _save(plt, _plot_pr(plt, true_defect, score, threshold, caption), out_dir / "pr.png"),
    ]
    missed = np.flatnonzero(true_defect & ~called_defect)
    false_alarms = np.flatnonzero(~true_defect & called_defect)
    missed = missed[np.argsort(score[missed], kind="stable")]  # lowest score: the most confidently missed
    false_alarms = false_alarms[np.argsort(-score[false_alarms], kind="stable")]
    rows = {"probs": probs, "y_true": y_true, "predicted": predicted, "score": score, "paths": list(paths),
            "labels": list(labels)}
    page = _gallery_html(title, threshold, len(y_true), [("Missed defects", missed), ("False alarms", false_alarms)],
                         rows, max_gallery)
    files.append(write_bytes(out_dir / "misclassified.html", page.encode("utf-8")))
    return EvalReport(out_dir=out_dir, files=tuple(files), n_misclassified=int(missed.size + false_alarms.size))


def _check_inputs(probs: np.ndarray, y_true: np.ndarray, paths: Sequence[str | Path], labels: Sequence[str],
                  good_labels: Sequence[str], score: np.ndarray) -> None:
    n = len(y_true)
    if probs.ndim != 2 or probs.shape != (n, len(labels)):
        raise ValueError(f"probs has shape {probs.shape}, expected ({n}, {len(labels)}): one row per image "
                         f"and one column per label {list(labels)}")
    if len(paths) != n or score.shape != (n,):
        raise ValueError(f"{n} true labels, but {len(paths)} paths and {score.shape} defect scores: "
                         "give one of each per image, in the same order")
    if n and (y_true.min() < 0 or y_true.max() >= len(labels)):
        raise ValueError(f"y_true holds class indices outside 0..{len(labels) - 1} (labels {list(labels)})")
    unknown = sorted(set(good_labels) - set(labels))
    if unknown:
        raise ValueError(f"good labels {unknown} are not among the labels {list(labels)}")


# --------------------------------------------------------------------------- plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_matrix(path: Path, counts: np.ndarray, names: Sequence[str], caption: str) -> Path:
    """Write a confusion matrix PNG (rows true, columns predicted; counts and the share of each row) to ``path``."""
    plt = _pyplot()
    return _save(plt, _plot_matrix(plt, np.asarray(counts), list(names), caption), Path(path))


def _save(plt: Any, fig: Any, path: Path) -> Path:
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return path


def _plot_matrix(plt: Any, counts: np.ndarray, names: list[str], caption: str) -> Any:
    """Return a figure of ``counts`` (rows true), coloured and annotated by the share of each row."""
    n = len(names)
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    side = float(np.clip(1.5 + 0.7 * n, 4.5, 16.0))  # grows with the classes, capped at 1600 px
    fontsize = float(np.clip(110 / max(n, 1), 5, 10))
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    rotate = n > 6 or max((len(name) for name in names), default=0) > 8
    ax.set_xticks(range(n), names, rotation=45 if rotate else 0, ha="right" if rotate else "center",
                  fontsize=fontsize)
    ax.set_yticks(range(n), names, fontsize=fontsize)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(caption, fontsize=10)
    for (i, j), count in np.ndenumerate(counts):
        rate = f"{100 * rates[i, j]:.1f}%" if totals[i, 0] else "–"
        ax.text(j, i, f"{count}\n{rate}", ha="center", va="center", fontsize=fontsize,
                color="white" if rates[i, j] > 0.5 else "black")  # dark cells get light text
    fig.tight_layout()
    return fig


def _undefined(ax: Any) -> None:
    ax.text(0.5, 0.5, "undefined: only one class present", ha="center", va="center", transform=ax.transAxes)


def _counts_at(truth: np.ndarray, score: np.ndarray, threshold: float) -> tuple[int, int]:
    called = score >= threshold
    return int(np.sum(called & truth)), int(np.sum(called & ~truth))


def _plot_roc(plt: Any, truth: np.ndarray, score: np.ndarray, threshold: float, caption: str) -> Any:
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    auc = roc_auc(truth, score)
    if auc is None:
        _undefined(ax)
    else:
        fpr, tpr, _ = roc_curve(truth, score)
        ax.plot(fpr, tpr, label=f"defect score (AUC = {auc:.3f})")
        tp, fp = _counts_at(truth, score, threshold)
        ax.plot(fp / (~truth).sum(), tp / truth.sum(), "o", color="C3", label=f"threshold {threshold:.3f}")
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="false positive rate (false alarms)",
           ylabel="true positive rate (defect recall)")
    ax.set_title(caption, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def _pr_curve(truth: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Return (recall, precision, average precision), recall rising from 0, one point per distinct score."""
    order = np.argsort(-score, kind="mergesort")
    score, hits = score[order], truth[order]
    distinct = np.r_[np.where(np.diff(score))[0], len(score) - 1]
    tps = np.cumsum(hits)[distinct]
    recall = tps / truth.sum()
    precision = tps / (distinct + 1)
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))  # step-wise AP, no interpolation
    return np.r_[0.0, recall], np.r_[1.0, precision], ap


def _plot_pr(plt: Any, truth: np.ndarray, score: np.ndarray, threshold: float, caption: str) -> Any:
    fig, ax = plt.subplots(figsize=(5, 5))
    if truth.all() or not truth.any():
        _undefined(ax)
    else:
        recall, precision, ap = _pr_curve(truth, score)
        ax.step(recall, precision, where="post", label=f"defect score (AP = {ap:.3f})")
        prevalence = float(truth.mean())
        ax.axhline(prevalence, ls="--", color="grey", label=f"baseline (prevalence {prevalence:.3f})")
        tp, fp = _counts_at(truth, score, threshold)
        # nothing called defective: precision is 0/0; plot it as 1, the curve's own convention at recall 0
        ax.plot(tp / truth.sum(), tp / (tp + fp) if tp + fp else 1.0, "o", color="C3",
                label=f"threshold {threshold:.3f}")
        ax.legend(loc="lower left", fontsize=8)
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="recall (defects found)",
           ylabel="precision (called defects that are defects)")
    ax.set_title(caption, fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- gallery


def _thumbnail(path: str | Path) -> str | None:
    """Return a JPEG data URI of the image at ``path``, at most THUMBNAIL_PX on a side, or None if unreadable."""
    from edgetl_runtime.errors import ImageError
    from edgetl_runtime.preprocess import open_image

    try:  # the runtime's reader: its formats only, bounded memory, JPEG decoded at reduced size
        image = open_image(path, "rgb", (THUMBNAIL_PX, THUMBNAIL_PX))
        image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
    except (ImageError, OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _card(i: int, rows: dict[str, Any]) -> str:
    e = html.escape
    labels, probs = rows["labels"], rows["probs"]
    path = str(rows["paths"][i])
    uri = _thumbnail(path)
    picture = f'<img src="{uri}" alt="{e(path)}">' if uri else '<div class="missing">image could not be read</div>'
    top = int(probs[i].argmax())
    return (f'<div class="card">{picture}<code>{e(path)}</code><dl>'
            f"<dt>true</dt><dd>{e(labels[rows['y_true'][i]])}</dd>"
            f"<dt>predicted</dt><dd>{e(labels[rows['predicted'][i]])}</dd>"
            f"<dt>defect score</dt><dd>{rows['score'][i]:.3f}</dd>"
            f"<dt>top class</dt><dd>{e(labels[top])} {probs[i, top]:.3f}</dd></dl></div>")


_CSS = ("body{font-family:sans-serif;margin:1.5em}.grid{display:flex;flex-wrap:wrap;gap:12px}"
        ".card{width:200px;border:1px solid #ccc;border-radius:4px;padding:6px;font-size:12px}"
        ".card img{max-width:160px;max-height:160px;display:block;margin:auto}"
        ".missing{height:80px;display:flex;align-items:center;justify-content:center;background:#eee;color:#900}"
        "code{display:block;word-break:break-all;margin:4px 0}dl{display:grid;grid-template-columns:auto 1fr;"
        "gap:0 6px;margin:0}dt{color:#666}dd{margin:0}")


def _gallery_html(title: str, threshold: float, n: int, sections: list[tuple[str, np.ndarray]],
                  rows: dict[str, Any], max_gallery: int) -> str:
    e = html.escape
    wrong = sum(len(indices) for _, indices in sections)
    parts = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{e(title)}: wrong verdicts</title>"
             f"<style>{_CSS}</style></head><body><h1>{e(title)}: wrong verdicts</h1>"
             f"<p>{n} images, threshold {threshold:.3f}, {wrong} with the wrong good/defect verdict.</p>"]
    if not wrong:
        parts.append("<p>No misclassified images: every verdict is right.</p>")
    for heading, indices in sections:
        order = "lowest defect score first" if heading == "Missed defects" else "highest defect score first"
        parts.append(f"<h2>{e(heading)} ({len(indices)})</h2>")
        if not len(indices):
            parts.append("<p>None.</p>")
            continue
        parts.append(f"<p>{e(order)}.</p><div class=\"grid\">")
        parts.extend(_card(int(i), rows) for i in indices[:max_gallery])
        parts.append("</div>")
        if len(indices) > max_gallery:
            parts.append(f"<p>{len(indices) - max_gallery} more not shown (at most {max_gallery} per section).</p>")
    parts.append("</body></html>\n")
    return "".join(parts)
