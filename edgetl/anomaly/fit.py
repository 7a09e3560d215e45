"""``edgetl train --task anomaly``: fit an anomaly detector to good images and write a run folder.

No defect label is needed. The good images are split (seeded) into a *fit* part, whose frozen
backbone features the statistics are fitted on (:func:`edgetl.anomaly.fit_padim`), and a
*held-out* part, which sets the threshold: the image distance that at most ``max_false_alarm`` of
new good images exceed (the held-out images are new to the statistics, the fitted ones are not:
their own distances are biased low). Defect images in DATA, if it has defect class folders, are
never fitted; they only add a validation ROC AUC and recall to ``metrics.json``.

The run folder is a classifier's (:mod:`edgetl.run`): ``model.keras`` (the whole detector, the
statistics inside as layer weights, loadable in Keras' safe mode), ``model_spec.json`` (task
``anomaly``, labels ``(good, anomaly)``, a heatmap output), ``config.json``, ``split.json``
(train: the fitted images; val: the held-out good ones and any defects, labelled
``anomaly``), ``metrics.json`` and plots. Extracted features are cached per chunk in ``cache/``:
an interrupted fit reruns with the same command and skips the chunks already done.

>>> AnomalyOptions(max_false_alarm=0.01).holdout
0.2
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from edgetl_runtime.atomic import atomic_path, write_json
from edgetl_runtime.contract import (DecisionSpec, InputSpec, ModelSpec, OutputSpec, Provenance,
                                     default_good_labels)

ANOMALY_LABEL = "anomaly"
CHUNK = 256  # images per cached feature chunk


@dataclass(frozen=True)
class AnomalyOptions:
    """How an anomaly detector is fitted (``edgetl train --task anomaly``).

    ``holdout``: share of the good images kept out of the fit to set the threshold (at least 1,
    and at least 2 images stay in the fit). ``max_false_alarm``: the share of good images that may
    score as anomalies; the threshold is the held-out distance at that upper quantile.
    ``dims``/``clusters``/``shrinkage``: see :func:`edgetl.anomaly.fit_padim`. ``top_area``: the
    image's distance is the mean over its most distant cells covering this share of the image (at
    least one cell; 0: the farthest cell alone). ``flips``: also fit the left-right and up-down
    mirrored images (for parts whose mirror image is a good part too).
    """

    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"
    input_size: int | None = None
    holdout: float = 0.2
    max_false_alarm: float = 0.01
    dims: int = 150
    clusters: int = 2
    shrinkage: float = 0.1
    top_area: float = 0.025
    flips: bool = False
    batch_size: int = 32
    seed: int = 0
    good_labels: tuple[str, ...] | None = None
    verbose: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.holdout < 1.0:
            raise ValueError(f"--val-split (the held-out share of good images) must be in (0, 1), got {self.holdout}")
        if not 0.0 < self.max_false_alarm < 0.5:
            raise ValueError(f"--max-false-alarm must be in (0, 0.5), e.g. 0.01 for 1 %, got {self.max_false_alarm}")
        if self.dims < 1 or self.clusters < 1 or not 0.0 <= self.shrinkage <= 1.0:
            raise ValueError(f"need --dims >= 1, --clusters >= 1 and a shrinkage in [0, 1] "
                             f"(got {self.dims}, {self.clusters}, {self.shrinkage})")  # fmt: skip
        if not 0.0 <= self.top_area < 1.0:
            raise ValueError(f"--top-area must be in [0, 1), got {self.top_area}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def threshold_and_width(held_out: np.ndarray, max_false_alarm: float) -> tuple[float, float]:
    """Return ``(threshold, width)`` in distance units from the held-out good images' distances.

    The threshold is the ``1 - max_false_alarm`` quantile (the higher neighbour: never below the
    requested level on these images); the width, the spread of good distances (their standard
    deviation), sets how fast the bounded score rises around it.

    >>> threshold_and_width(np.arange(1.0, 101.0), 0.05)
    (96.0, 29.011491975882016)
    """
    d = np.asarray(held_out, np.float64)
    threshold = float(np.quantile(d, 1.0 - max_false_alarm, method="higher"))
    spread = float(d.std(ddof=1)) if len(d) > 1 else 0.0
    return threshold, max(spread, 0.05 * abs(threshold), 1e-6)


def _scan(data: Path, good_labels: tuple[str, ...] | None) -> tuple[list[Path], list[Path], str, Any]:
    """Return ``(good image paths, defect image paths, good label, dataset)`` of DATA."""
    from ..data import DatasetError
    from ..data.scan import scan_images

    dataset = scan_images(data)
    if not dataset.classes:  # loose images: all good
        if good_labels:
            raise DatasetError(f"{data} holds loose images without class folders: they are all taken as good; "
                               "drop --good-class")  # fmt: skip
        return [s.path for s in dataset.samples], [], "good", dataset
    good = tuple(good_labels or default_good_labels(dataset.classes))
    if not good:
        raise DatasetError(f"{data}: cannot tell which class folder holds the good images among "
                           f"{list(dataset.classes)}; pass --good-class NAME")  # fmt: skip
    unknown = sorted(set(good) - set(dataset.classes))
    if unknown:
        raise DatasetError(f"{data}: good class {unknown} is not among its class folders {list(dataset.classes)}")
    good_paths = [s.path for s in dataset.samples if s.label in good]
    defect_paths = [s.path for s in dataset.samples if s.label is not None and s.label not in good]
    return good_paths, defect_paths, good[0] if len(good) == 1 else "good", dataset


class _FeatureCache:
    """Features of the fitted images, cached per chunk under ``cache/`` so an interrupted fit resumes."""

    def __init__(self, run_dir: Path, key: dict[str, Any]):
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        self.dir = run_dir / "cache" / f"anomaly-features-{digest}"

    def extract(self, extractor: Any, images: np.ndarray, channels: np.ndarray | None, batch: int,
                progress: bool, title: str) -> np.ndarray:  # fmt: skip
        from ..console import err_console
        from .graph import extract_features

        self.dir.mkdir(parents=True, exist_ok=True)
        parts, done = [], 0
        start = time.perf_counter()
        for i in range(0, len(images), CHUNK):
            path = self.dir / f"{title}-{i // CHUNK:05d}.npy"
            if path.is_file():
                part = np.load(path, allow_pickle=False)
            else:
                part = extract_features(extractor, images[i : i + CHUNK], batch)
                part = part if channels is None else part[..., channels]
                with atomic_path(path) as tmp:
                    with open(tmp, "wb") as fh:
                        np.save(fh, part)
            parts.append(part)
            done = min(len(images), i + CHUNK)
            if progress:
                err_console().print(f"  {title}: features of {done}/{len(images)} images "
                                    f"({time.perf_counter() - start:.0f} s)")  # fmt: skip
        return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


def fit_run(data: str | Path, options: AnomalyOptions, output: str | Path) -> Any:
    """Fit an anomaly detector to the good images of ``data`` and write the run folder ``output``.

    Returns a :class:`~edgetl.training.TrainResult`. Raises :class:`~edgetl.run.RunError` when
    ``output`` already holds a finished run, holds files that are not an unfinished fit's, or is
    being written by another process; :class:`~edgetl.data.DatasetError` for data it cannot use (no
    good images, too few of them). An interrupted fit continues from its cached features.
    """
    from ..run import MODEL_FILE, RunError, claim

    run_dir = Path(output)
    if (run_dir / MODEL_FILE).is_file():
        raise RunError(f"{run_dir}: already holds a run; choose a new -o folder")
    cache = run_dir / "cache"
    unfinished = cache.is_dir() and all(p.is_dir() and p.name.startswith("anomaly-features-") for p in cache.iterdir())
    created = False
    try:
        with claim(run_dir, resuming=False, own={"cache"} if unfinished else ()) as created:
            return _fit_run(data, options, run_dir)
    except BaseException:
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):  # failed before writing anything: no trace
            run_dir.rmdir()
        raise


def _fit_run(data: str | Path, options: AnomalyOptions, output: Path) -> Any:
    from .. import __version__
    from .._tf import keras
    from ..backbones import get_spec, load_backbone
    from ..console import err_console
    from ..data import DatasetError, ImageDataset, Sample, load_images
    from ..run import CONFIG_FILE, METRICS_FILE, MODEL_FILE, SPLIT_FILE, RunError, write_spec
    from ..training.options import TrainResult
    from .graph import anomaly_model, feature_extractor
    from .padim import fit_padim, image_scores, score_maps, top_cells

    start = time.perf_counter()
    data, run_dir = Path(data), Path(output)
    if (run_dir / MODEL_FILE).is_file():
        raise RunError(f"{run_dir}: already holds a run; choose a new -o folder")
    good_paths, defect_paths, good_label, dataset = _scan(data, options.good_labels)
    if len(good_paths) < 3:
        raise DatasetError(f"{data}: {len(good_paths)} good image(s); fitting needs at least 3 (2 to fit, 1 to set "
                           "the threshold), and a reliable threshold far more (hundreds)")  # fmt: skip
    size = options.input_size or get_spec(options.backbone).default_input_size
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    image = InputSpec(height=height, width=width, color_mode="rgb", resize="bilinear", normalization="model")
    rng = np.random.default_rng(options.seed)
    order = rng.permutation(len(good_paths))
    n_hold = min(len(good_paths) - 2, max(1, round(len(good_paths) * options.holdout)))
    hold_paths = sorted(good_paths[i] for i in order[:n_hold])
    fit_paths = sorted(good_paths[i] for i in order[n_hold:])
    console, progress = err_console(), options.verbose > 0
    console.print(f"[bold]data[/] {data}: {len(fit_paths)} good images to fit, {len(hold_paths)} held out for the "
                  f"threshold, {len(defect_paths)} defect images for validation only")  # fmt: skip
    if 1.0 / len(hold_paths) > options.max_false_alarm:
        console.print(f"[yellow]warning[/] {len(hold_paths)} held-out good images cannot resolve a false-alarm rate "
                      f"of {options.max_false_alarm:g}: the threshold is their highest distance. Give at least "
                      f"{int(np.ceil(1 / options.max_false_alarm))} held-out good images for it")  # fmt: skip

    def load(paths: list[Path], label: str) -> Any:
        return load_images(ImageDataset(tuple(Sample(p, label) for p in paths), (label,), None), image, progress)

    fit_images, hold_images = load(fit_paths, good_label), load(hold_paths, good_label)
    defect_images = load(defect_paths, ANOMALY_LABEL) if defect_paths else None
    run_dir.mkdir(parents=True, exist_ok=True)
    keras().utils.set_random_seed(options.seed)
    backbone = load_backbone(options.backbone, weights=options.weights, input_size=(height, width))
    extractor = feature_extractor(backbone, options.backbone)
    channels_total = int(extractor.output.shape[-1])
    channels = np.sort(np.random.default_rng(options.seed).choice(channels_total, min(options.dims, channels_total),
                                                                  replace=False))  # fmt: skip
    x_fit = fit_images.x
    if options.flips:
        x_fit = np.concatenate([x_fit, x_fit[:, :, ::-1], x_fit[:, ::-1]])
    cache = _FeatureCache(run_dir, {"backbone": options.backbone, "weights": options.weights, "size": [height, width],
                                    "channels": channels.tolist(), "flips": options.flips,
                                    "images": [str(s.path) for s in fit_images.samples]})  # fmt: skip
    console.print(f"[bold]features[/] {options.backbone} at {height}x{width} px, {len(channels)} of "
                  f"{channels_total} channels, {len(x_fit)} images")  # fmt: skip
    features = cache.extract(extractor, x_fit, channels, options.batch_size, progress, "fit")
    kept = fit_padim(features, dims=len(channels), clusters=options.clusters, shrinkage=options.shrinkage,
                     seed=options.seed)  # every cached channel: kept.channels indexes them
    del features
    hold_features = cache.extract(extractor, hold_images.x, channels, options.batch_size, False, "held-out")
    top_k = top_cells(kept.grid, options.top_area)
    hold_distances = image_scores(score_maps(kept, hold_features), top_k)
    stats = dataclasses.replace(kept, channels=channels[kept.channels])  # indices into the full features
    threshold, width_ = threshold_and_width(hold_distances, options.max_false_alarm)
    model = anomaly_model(extractor, stats, threshold, width_, top_k)

    labels = (good_label, ANOMALY_LABEL)
    rows, cols = stats.grid
    source = (f"max false alarm {options.max_false_alarm:g} on {len(hold_paths)} held-out good images "
              f"(image distance {threshold:.4g})")  # fmt: skip
    spec = ModelSpec(
        task="anomaly", labels=labels, good_labels=(good_label,), input=image,
        output=OutputSpec(kind="probabilities", heatmap=(rows, cols)),
        decision=DecisionSpec(threshold=0.5, threshold_source=source),
        provenance=Provenance(backbone=options.backbone, weights=str(options.weights), data_hash=dataset.content_hash(),
                              sdk_version=__version__,
                              created=datetime.now(timezone.utc).replace(microsecond=0).isoformat()),
    )  # fmt: skip
    metrics = _validation(model, spec, hold_images.x, None if defect_images is None else defect_images.x,
                          options.batch_size)  # fmt: skip
    seconds = time.perf_counter() - start
    config = {
        "task": "anomaly",
        "options": options.to_dict(),
        "data": str(data.resolve()),
        "n_train": len(fit_images.x),
        "n_val": len(hold_images.x) + (0 if defect_images is None else len(defect_images.x)),
        "method": {"name": "padim", "taps": "strides 8, 16, 32", "grid": [rows, cols], "dims": stats.dims,
                   "top_cells": top_k, "clip": stats.clip,
                   "clusters": list(stats.cluster_sizes), "shrinkage": options.shrinkage,
                   "statistics_mb": round(stats.nbytes / 1e6, 2)},
        "threshold_distance": threshold,
        "score_width": width_,
        "held_out_distances": {"min": float(hold_distances.min()), "median": float(np.median(hold_distances)),
                               "max": float(hold_distances.max())},
        "skipped_files": [[str(p), r] for p, r in [*fit_images.skipped, *hold_images.skipped,
                                                   *(defect_images.skipped if defect_images else [])]],
        "train_seconds": round(seconds, 1),
    }  # fmt: skip
    split = {"train": [[str(s.path), good_label] for s in fit_images.samples],
             "val": [[str(s.path), good_label] for s in hold_images.samples]
             + ([[str(s.path), ANOMALY_LABEL] for s in defect_images.samples] if defect_images else [])}  # fmt: skip
    write_json(run_dir / SPLIT_FILE, split)
    write_spec(run_dir, spec)
    write_json(run_dir / CONFIG_FILE, config)
    with atomic_path(run_dir / MODEL_FILE) as tmp:  # last: a run is finished once model.keras exists
        model.save(tmp)
    write_json(run_dir / METRICS_FILE, {"validation": metrics})
    _plots(run_dir, metrics)
    shutil.rmtree(run_dir / "cache", ignore_errors=True)  # the fit is done: the features are not needed again
    auc = metrics.get("roc_auc")
    console.print(f"[bold green]done[/] in {seconds:.0f} s: held-out false alarms "
                  f"{metrics['false_alarm_rate']:.1%} at the threshold"
                  + (f", validation ROC AUC {auc:.4f} on {len(defect_paths)} defect images" if auc is not None else ""))
    return TrainResult(run_dir, run_dir / MODEL_FILE, spec, metrics, config, seconds)


def _validation(model: Any, spec: ModelSpec, good: np.ndarray, defects: np.ndarray | None, batch: int) -> dict[str, Any]:
    """Return the decision metrics on the held-out good images (and the defects, if any), float model."""
    from edgetl_runtime.decision import decision_metrics

    from ..exporters.validate import reference_scores

    x = good if defects is None else np.concatenate([good, defects])
    y = np.r_[np.zeros(len(good), np.int64), np.ones(0 if defects is None else len(defects), np.int64)]
    probs = reference_scores(model, x, batch)
    metrics = decision_metrics(probs, y, spec.labels, spec.good_labels, spec.threshold)
    metrics["false_alarm_rate"] = float(np.mean(probs[: len(good), 1] >= spec.threshold))
    metrics["held_out_good"] = int(len(good))
    metrics["defects"] = 0 if defects is None else int(len(defects))
    metrics["scores"] = {"good": probs[: len(good), 1].round(5).tolist(), "defect": probs[len(good) :, 1].round(5).tolist()}
    return metrics


def _plots(run_dir: Path, metrics: dict[str, Any]) -> None:
    """Write the held-out score histogram, and the ROC curve when DATA had defects."""
    from ..evaluation import _pyplot, _save, plot_roc

    good, defect = np.array(metrics["scores"]["good"]), np.array(metrics["scores"]["defect"])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bins = np.linspace(0, 1, 41)
    ax.hist(good, bins=bins, alpha=0.7, label=f"held-out good ({len(good)})")
    if len(defect):
        ax.hist(defect, bins=bins, alpha=0.7, label=f"defect ({len(defect)})")
    ax.axvline(0.5, color="k", linestyle="--", label="threshold")
    ax.set_xlabel("anomaly score")
    ax.set_ylabel("images")
    ax.legend()
    fig.tight_layout()  # the axis labels inside the figure
    _save(fig, plt, run_dir / "anomaly_scores.png")
    if len(defect):
        plot_roc(np.r_[np.zeros(len(good), bool), np.ones(len(defect), bool)], np.r_[good, defect],
                 run_dir / "roc_curve.png")
