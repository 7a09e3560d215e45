"""Image data sets as lists of files: labels, stratified splits and samples, content hashes.

A sample's label is None in an unlabelled set (a folder of calibration images). No TensorFlow
here, and no pixels: :mod:`edgetl.data.loading` decodes them.

>>> ds = ImageDataset((Sample(Path("a.png"), "good"), Sample(Path("b.png"), "defect")), ("defect", "good"), None)
>>> ds.counts(), ds.labels_array().tolist()
({'defect': 1, 'good': 1}, [1, 0])
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

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
    """One image file and its class (None when the set is unlabelled)."""

    path: Path
    label: str | None


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
        """Return each sample's class index into :attr:`classes` (-1 when unlabelled) as int64."""
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index.get(s.label, -1) for s in self.samples], dtype=np.int64)

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
            digests = list(pool.map(lambda s: file_digest(s.path), self.samples))
        return _combined_hash(self, digests)

    def _class_members(self) -> dict[str | None, list[int]]:
        """Map each class (None: unlabelled) to its sample indices, sorted by path (order-free)."""
        members: dict[str | None, list[int]] = {c: [] for c in self.classes}
        for i in sorted(range(len(self.samples)), key=lambda i: str(self.samples[i].path)):
            members.setdefault(self.samples[i].label, []).append(i)
        return members


# ------------------------------------------------------------------------------------ sampling


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


def stratified_sample(dataset: ImageDataset, n: int, seed: int = 0) -> ImageDataset:
    """Return ``n`` samples drawn at random per class in proportion (at least one of each class).

    The one sampler of int8 calibration and export validation images; the whole data set is
    returned when it has ``n`` samples or fewer. Unlabelled samples form one group.
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



# ------------------------------------------------------------------------------------- hashing


def file_digest(path: Path) -> str:
    """Return the SHA-256 of the file's bytes (hex); a pipe or device is refused (``OSError``), never read forever."""
    from edgetl_runtime.safefile import open_regular

    digest = hashlib.sha256()
    with open_regular(path) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _combined_hash(dataset: ImageDataset, digests: Sequence[str]) -> str:
    """Hash per-file digests with their labels, sorted, so sample order does not matter."""
    lines = sorted(f"{d} {s.label}" for s, d in zip(dataset.samples, digests))
    text = "\n".join(["classes " + ",".join(dataset.classes), *lines])
    return hashlib.sha256(text.encode()).hexdigest()[:16]
