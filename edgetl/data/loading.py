"""Decoding a data set's images, in parallel, through the runtime's one preprocessing pipeline.

Every pixel edgetl trains, calibrates, validates or evaluates on comes from
:func:`edgetl_runtime.preprocess.load_image` with the model contract's input (size, colour mode,
resize), exactly as the device prepares it: uint8 ``(N, H, W, C)``.

>>> from edgetl_runtime.contract import InputSpec
>>> load_images(ImageDataset((), ("a", "b"), None), InputSpec(4, 4), progress=False).x.shape
(0, 4, 4, 3)
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from edgetl_runtime.contract import GOOD_LABEL_NAMES, InputSpec
from edgetl_runtime.errors import ImageError
from edgetl_runtime.preprocess import load_image

from .dataset import _WORKERS, DatasetError, ImageDataset, Sample


@dataclass(frozen=True)
class LoadedImages:
    """Decoded pixels of a data set: ``x`` uint8 (N, H, W, C), ``y`` class ids, what was skipped."""

    x: np.ndarray
    y: np.ndarray
    samples: tuple[Sample, ...]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    classes: tuple[str, ...] = ()

    def label_indices(self, labels: Sequence[str]) -> np.ndarray:
        """Return each image's index into ``labels`` (a model's), -1 where unlabelled or unknown."""
        lookup = {name: i for i, name in enumerate(labels)}
        return np.array([lookup.get(s.label, -1) if s.label is not None else -1 for s in self.samples], np.int64)

    def truth(self, spec: Any) -> np.ndarray:
        """Return each image's true label index under the contract ``spec`` (a ModelSpec), -1 where unknown.

        A classifier's labels are its class folders. An anomaly detector knows two labels, good and
        anomaly: a folder named as its good label (or ``good``, ``ok``, ...) is good, any other
        folder (``defect``, ``crack``, ...) an anomaly.
        """
        if spec.task != "anomaly":
            return self.label_indices(spec.labels)
        good = {name.lower() for name in (*spec.good_labels, *GOOD_LABEL_NAMES)}
        good_index, anomaly_index = spec.good_indices[0], 1 - spec.good_indices[0]
        return np.array([-1 if s.label is None else good_index if s.label.lower() in good else anomaly_index
                         for s in self.samples], np.int64)  # fmt: skip


def unknown_classes(classes: Sequence[str], spec: Any) -> list[str]:
    """Return the class folders of a test set that the contract ``spec`` cannot judge (none for anomaly)."""
    return [] if spec.task == "anomaly" else sorted(set(classes) - set(spec.labels))


def load_images(dataset: ImageDataset, image: InputSpec, progress: bool = True, roi: Any = None) -> LoadedImages:
    """Return every readable image of ``dataset`` decoded as the model input ``image`` says.

    ``roi``: an :class:`edgetl_runtime.roi.Roi` cropped from each image before the resize.

    Files that cannot be read (corrupt, truncated, empty, not an image) are skipped and listed in
    ``skipped`` with the reason, and a warning gives their count. Raises :class:`DatasetError`
    when skipping leaves a class without images.
    """
    size = (image.height, image.width)
    x = np.empty((len(dataset), *size, image.channels), np.uint8)
    ok = np.zeros(len(dataset), bool)
    reasons: dict[int, str] = {}

    def decode(i: int) -> None:
        try:
            x[i] = load_image(dataset.samples[i].path, size, image.color_mode, image.resize, roi)
            ok[i] = True
        except ImageError as exc:
            reasons[i] = exc.reason

    _run_parallel(decode, len(dataset), "Loading images", progress)
    kept = np.flatnonzero(ok)
    skipped = [(dataset.samples[i].path, reasons[i]) for i in sorted(reasons)]
    if skipped:
        _warn_skipped(skipped, len(dataset))
    result = dataset.subset(kept)
    lost = [c for c, n in result.counts().items() if n == 0 and dataset.counts()[c] > 0]
    if lost:
        raise DatasetError(
            f"every image of class(es) {', '.join(repr(c) for c in lost)} is unreadable "
            f"(see the {len(skipped)} skipped files above); replace those files"
        )
    return LoadedImages(x[kept], result.labels_array(), result.samples, skipped, dataset.classes)


def _run_parallel(fn: Any, n: int, title: str, progress: bool) -> None:
    """Call ``fn(i)`` for i in range(n) on a thread pool, with a rich progress bar if asked."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..console import err_console

    with ThreadPoolExecutor(_WORKERS) as pool:
        futures = [pool.submit(fn, i) for i in range(n)]
        if not progress:
            for f in futures:
                f.result()
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        console = err_console()  # stderr: stdout is for results. Not a terminal (logs, CI): no bar
        with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
            task = bar.add_task(title, total=n)
            for f in futures:
                f.result()
                bar.advance(task)


def _warn_skipped(skipped: Sequence[tuple[Path, str]], total: int) -> None:
    from rich.markup import escape

    from ..console import warn

    more = f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else ""
    lines = "\n".join(f"  {path}: {reason}" for path, reason in skipped[:20]) + more
    warn(escape(f"skipped {len(skipped)} of {total} files that could not be read:\n{lines}"))




def sample_images(
    folder: str | Path | None,
    recorded: Sequence[tuple[str, str]],
    image: InputSpec,
    limit: int,
    what: str,
    seed: int = 0,
    roi: Any = None,
) -> LoadedImages:
    """Return up to ``limit`` decoded images for calibration or validation (``what`` names them).

    From ``folder`` (labelled class subfolders or loose images) when given, else from the run's
    ``recorded`` ``(path, label)`` list; picked by :func:`~edgetl.data.dataset.stratified_sample`.
    Raises :class:`DatasetError` when there is no readable image.
    """
    from .dataset import stratified_sample
    from .scan import scan_images

    if folder is not None:
        dataset = scan_images(folder)
    elif recorded:
        samples = tuple(Sample(Path(p), label) for p, label in recorded)
        dataset = ImageDataset(samples, tuple(sorted({s.label for s in samples})), None)
    else:
        raise DatasetError(f"no {what} images: the run records none (split.json missing or empty); pass a folder of images")
    loaded = load_images(stratified_sample(dataset, limit, seed), image, progress=False, roi=roi)
    if not len(loaded.x):
        raise DatasetError(f"{folder or 'the run split'}: none of the {what} images could be read (see the warnings above)")
    return loaded
