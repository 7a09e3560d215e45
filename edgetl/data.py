"""Labelled image data sets: folder or CSV scanning, stratified splits, parallel loading.

A data set is a folder with one subfolder per class (``good/``, ``defect/``) or a CSV manifest
with a ``path,label`` header. Scanning checks the layout before any training starts; pixels are
decoded by :mod:`edgetl_runtime.preprocess`, the pipeline the device runtime uses too. No
TensorFlow here: loading returns numpy arrays and the trainer wraps them.

>>> ds = ImageDataset((Sample(Path("a.png"), "good"), Sample(Path("b.png"), "defect")), ("defect", "good"), None)
>>> ds.counts(), ds.labels_array().tolist()
({'defect': 1, 'good': 1}, [1, 0])
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from edgetl_runtime.errors import ImageError
from edgetl_runtime.preprocess import IMAGE_SUFFIXES, is_image_file, load_image, probe_image

EXPECTED_LAYOUT = """expected one subfolder per class, for example:
    DATA/
      good/    img_0001.png  img_0002.jpg ...
      defect/  img_0101.png ...
or a CSV manifest with a header line 'path,label' (paths relative to the CSV's folder)."""

# PIL releases the GIL while decoding, so threads scale with cores; a few extra hide file I/O.
_WORKERS = min(16, (os.cpu_count() or 1) + 2)


class DatasetError(ValueError):
    """The data set cannot be used as given; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Sample:
    """One labelled image file."""

    path: Path
    label: str


@dataclass(frozen=True)
class ImageDataset:
    """Labelled image files and their classes (sorted; a label's index is its class id)."""

    samples: tuple[Sample, ...]
    classes: tuple[str, ...]
    root: Path | None

    def __len__(self) -> int:
        return len(self.samples)

    def counts(self) -> dict[str, int]:
        """Return the number of samples of each class, in class order (absent classes count 0)."""
        found = Counter(s.label for s in self.samples)
        return {c: found.get(c, 0) for c in self.classes}

    def labels_array(self) -> np.ndarray:
        """Return each sample's class index into :attr:`classes` as an int64 array."""
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[s.label] for s in self.samples], dtype=np.int64)

    def subset(self, indices: Iterable[int]) -> ImageDataset:
        """Return the samples at ``indices`` (in that order), keeping every class and the root."""
        picked = [int(i) for i in indices]
        bad = [i for i in picked if not -len(self.samples) <= i < len(self.samples)]
        if bad:
            raise IndexError(f"indices {bad[:5]} out of range for a data set of {len(self)} samples")
        return ImageDataset(tuple(self.samples[i] for i in picked), self.classes, self.root)

    def split(self, val_fraction: float, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
        """Return ``(train, val)``, stratified by class; the same seed always gives the same split.

        Each class puts ``round(n * val_fraction)`` samples (at least 1, at most n - 1) in ``val``,
        so both parts keep every class. The result does not depend on the order of the samples.
        """
        if not 0.0 < val_fraction < 1.0:
            raise DatasetError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
        small = {c: n for c, n in self.counts().items() if n < 2}
        if small:
            raise DatasetError(
                f"cannot split: class(es) {small} have fewer than 2 images, so train and validation "
                "cannot both contain them; add images to those classes"
            )
        rng = np.random.default_rng(seed)
        train: list[int] = []
        val: list[int] = []
        for members in self._class_members().values():
            n_val = min(max(int(round(len(members) * val_fraction)), 1), len(members) - 1)
            order = rng.permutation(len(members))
            val.extend(members[j] for j in order[:n_val])
            train.extend(members[j] for j in order[n_val:])
        return self.subset(sorted(train)), self.subset(sorted(val))

    def content_hash(self) -> str:
        """Return a 16-hex-digit sha256 over every file's bytes and label, independent of order."""

        with ThreadPoolExecutor(_WORKERS) as pool:
            digests = list(pool.map(lambda s: _file_digest(s.path), self.samples))
        return _combined_hash(self, digests)

    def _class_members(self) -> dict[str, list[int]]:
        """Map each class to its sample indices, sorted by path (so order does not matter)."""
        members: dict[str, list[int]] = {c: [] for c in self.classes}
        for i in sorted(range(len(self.samples)), key=lambda i: str(self.samples[i].path)):
            members[self.samples[i].label].append(i)
        return members


@dataclass(frozen=True)
class LoadedImages:
    """Decoded pixels of a data set: ``x`` uint8 (N, H, W, C), ``y`` class ids, what was skipped."""

    x: np.ndarray
    y: np.ndarray
    samples: tuple[Sample, ...]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    classes: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------- scanning


def scan_dataset(path: str | Path) -> ImageDataset:
    """Return the data set in ``path``: a class-per-subfolder folder or a ``.csv`` manifest.

    Raises :class:`DatasetError` when the layout cannot train a classifier (no images, one class,
    an empty class folder, a CSV with a bad header or missing files).
    """
    path = Path(path).expanduser().absolute()
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder; {EXPECTED_LAYOUT}")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DatasetError(f"{path}: a data set is a folder or a .csv manifest, not a single file; {EXPECTED_LAYOUT}")
        return _scan_csv(path)
    return _scan_folder(path)


def _visible(name: str) -> bool:
    return not name.startswith((".", "__"))  # .DS_Store, .ipynb_checkpoints, __MACOSX


def _scan_folder(root: Path) -> ImageDataset:
    class_dirs = sorted((d for d in root.iterdir() if d.is_dir() and _visible(d.name)), key=lambda d: d.name)
    loose = [p for p in root.iterdir() if p.is_file() and is_image_file(p)]
    if not class_dirs:
        what = f"{len(loose)} images directly in it but no class folders" if loose else "no class folders"
        raise DatasetError(f"{root}: found {what}; {EXPECTED_LAYOUT}")
    samples: list[Sample] = []
    empty: list[str] = []
    for d in class_dirs:
        parts = (p for p in d.rglob("*") if all(map(_visible, p.relative_to(d).parts)))
        files = sorted(p for p in parts if p.is_file() and is_image_file(p))
        if not files:
            empty.append(d.name)
        samples.extend(Sample(p, d.name) for p in files)
    if not samples:
        raise DatasetError(f"{root}: no image files ({' '.join(IMAGE_SUFFIXES)}) in its subfolders; {EXPECTED_LAYOUT}")
    names = {d.name for d in class_dirs}
    if names & {"train", "test", "val", "validation"} and all(
        any(sub.is_dir() for sub in d.iterdir()) for d in class_dirs if d.name not in empty
    ):
        raise DatasetError(
            f"{root} looks like a folder of splits ({', '.join(sorted(names))}), each holding class folders; "
            f"point at one split instead, e.g. {root / ('train' if 'train' in names else sorted(names)[0])}"
        )
    if empty:
        raise DatasetError(
            f"{root}: class folder(s) {', '.join(repr(e) for e in empty)} contain no images; "
            "add images to them or remove the folder(s)"
        )
    return _checked(samples, root, where=str(root))


def _scan_csv(csv_path: Path) -> ImageDataset:
    base = csv_path.parent
    samples: list[Sample] = []
    missing: list[str] = []
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip().lower() for h in next(reader, [])]
            if "path" not in header or "label" not in header:
                raise DatasetError(
                    f"{csv_path}, line 1: header must name the columns 'path' and 'label' "
                    f"(extra columns are allowed), got {','.join(header) or 'an empty file'}"
                )
            ip, il = header.index("path"), header.index("label")
            for row in reader:
                line = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) <= max(ip, il) or not row[ip].strip() or not row[il].strip():
                    raise DatasetError(f"{csv_path}, line {line}: expected a path and a label, got {','.join(row)!r}")
                file = Path(row[ip].strip()).expanduser()
                file = file if file.is_absolute() else base / file
                if not file.is_file():
                    missing.append(f"line {line}: {file}")
                samples.append(Sample(file, row[il].strip()))
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{csv_path}: not a UTF-8 text CSV file ({exc}); save it as UTF-8 CSV") from None
    if missing:
        shown = "\n  ".join(missing[:10]) + (f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise DatasetError(f"{csv_path}: {len(missing)} listed file(s) do not exist:\n  {shown}\nfix the paths (relative ones are relative to {base})")
    if not samples:
        raise DatasetError(f"{csv_path}: lists no images; {EXPECTED_LAYOUT}")
    return _checked(samples, base, where=str(csv_path))


def _checked(samples: list[Sample], root: Path, where: str) -> ImageDataset:
    classes = tuple(sorted({s.label for s in samples}))
    if len(classes) < 2:
        other = "good" if classes[0] == "defect" else "defect"
        raise DatasetError(
            f"found only class {classes[0]!r} in {where}; a classifier needs at least two classes: "
            f"add a folder of {other} images"
        )
    return ImageDataset(tuple(samples), classes, root)


# ---------------------------------------------------------------------------------------- loading


def load_images(
    dataset: ImageDataset,
    size: tuple[int, int],
    color_mode: str = "rgb",
    progress: bool = True,
) -> LoadedImages:
    """Return every readable image of ``dataset`` decoded to uint8 pixels of ``size`` (h, w).

    Files that cannot be read (corrupt, truncated, empty, not an image) are skipped and listed in
    ``skipped`` with the reason, and a warning gives their count. Raises :class:`DatasetError`
    when skipping leaves a class without images.
    """
    height, width = int(size[0]), int(size[1])
    channels = 3 if color_mode == "rgb" else 1
    if color_mode not in ("rgb", "grayscale"):  # checked here, not once per file in the workers
        raise ValueError(f"color_mode must be 'rgb' or 'grayscale', got {color_mode!r}")
    x = np.empty((len(dataset), height, width, channels), np.uint8)
    ok = np.zeros(len(dataset), bool)
    reasons: dict[int, str] = {}

    def decode(i: int) -> None:
        try:
            x[i] = load_image(dataset.samples[i].path, (height, width), color_mode)
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

    with ThreadPoolExecutor(_WORKERS) as pool:
        futures = [pool.submit(fn, i) for i in range(n)]
        if not progress:
            for f in futures:
                f.result()
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, transient=True) as bar:
            task = bar.add_task(title, total=n)
            for f in futures:
                f.result()
                bar.advance(task)


def _warn_skipped(skipped: Sequence[tuple[Path, str]], total: int) -> None:
    from rich.console import Console

    console = Console(stderr=True)
    console.print(f"[yellow]warning:[/] skipped {len(skipped)} of {total} files that could not be read:")
    more = f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else ""
    console.print("\n".join(f"  {path}: {reason}" for path, reason in skipped[:20]) + more, markup=False, highlight=False)


# ------------------------------------------------------------------------------------ calibration


def _allocate(counts: Sequence[int], total: int, minimum: int = 0) -> list[int]:
    """Split ``total`` over groups proportionally to ``counts`` (largest remainder), each >= minimum."""
    n = sum(counts)
    exact = [c * total / n for c in counts] if n else [0.0] * len(counts)
    alloc = [min(c, max(minimum, int(e))) for c, e in zip(counts, exact)]
    order = sorted(range(len(counts)), key=lambda i: (-(exact[i] - int(exact[i])), i))
    while sum(alloc) < total and any(a < c for a, c in zip(alloc, counts)):
        for i in order:
            if sum(alloc) < total and alloc[i] < counts[i]:
                alloc[i] += 1
    return alloc


def calibration_samples(dataset: ImageDataset, n: int, seed: int = 0) -> ImageDataset:
    """Return ``n`` samples drawn at random per class in proportion (at least one of each class).

    Used for int8 calibration; the whole data set is returned when it has ``n`` samples or fewer.
    """
    if n <= 0:
        raise DatasetError(f"number of calibration samples must be positive, got {n}")
    if n >= len(dataset):
        return dataset
    members = dataset._class_members()
    groups = [m for m in members.values() if m]
    alloc = _allocate([len(m) for m in groups], n, minimum=1 if n >= len(groups) else 0)
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for m, k in zip(groups, alloc):
        picked.extend(m[j] for j in rng.permutation(len(m))[:k])
    return dataset.subset(sorted(picked))


# ------------------------------------------------------------------------------------- inspection


def inspect_dataset(path: str | Path) -> dict[str, Any]:
    """Return a report on the data set at ``path``: counts, sizes, modes, duplicates, unreadable files."""
    dataset = scan_dataset(path)
    infos: list[Any] = [None] * len(dataset)
    digests: list[str] = [""] * len(dataset)

    def probe(i: int) -> None:
        file = dataset.samples[i].path
        try:
            infos[i] = probe_image(file)
        except ImageError as exc:
            infos[i] = exc.reason
        try:
            digests[i] = _file_digest(file)
        except OSError as exc:
            digests[i] = f"unreadable:{exc}"

    _run_parallel(probe, len(dataset), "Inspecting images", progress=False)
    good = [info for info in infos if not isinstance(info, str)]
    groups: dict[str, list[str]] = {}
    for sample, digest in zip(dataset.samples, digests):
        groups.setdefault(digest, []).append(str(sample.path))
    return {
        "path": str(Path(path).expanduser().absolute()),
        "root": str(dataset.root) if dataset.root else None,
        "total": len(dataset),
        "classes": dataset.counts(),
        "sizes": _counted(f"{i.width}x{i.height}" for i in good),
        "modes": _counted(i.mode for i in good),
        "formats": _counted(i.format for i in good),
        "duplicates": sorted(sorted(g) for g in groups.values() if len(g) > 1),
        "unreadable": [
            {"path": str(s.path), "reason": info} for s, info in zip(dataset.samples, infos) if isinstance(info, str)
        ],
        "content_hash": _combined_hash(dataset, digests),
    }


def _counted(values: Iterable[str]) -> dict[str, int]:
    return dict(Counter(values).most_common())


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _combined_hash(dataset: ImageDataset, digests: Sequence[str]) -> str:
    """Hash per-file digests with their labels, sorted, so sample order does not matter."""
    lines = sorted(f"{d} {s.label}" for s, d in zip(dataset.samples, digests))
    text = "\n".join(["classes " + ",".join(dataset.classes), *lines])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def __getattr__(name: str) -> Any:
    # materialize_elpv lives in edgetl/elpv.py (which imports this module); resolved on first use.
    if name == "materialize_elpv":
        from .elpv import materialize_elpv

        return materialize_elpv
    raise AttributeError(f"module 'edgetl.data' has no attribute {name!r}")


__all__ = ["DatasetError", "Sample", "ImageDataset", "LoadedImages", "scan_dataset", "load_images",
           "calibration_samples", "inspect_dataset", "materialize_elpv"]
