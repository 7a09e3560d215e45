"""Calibration and validation images, read through the one preprocessing pipeline of the runtime.

Every pixel an exported model is calibrated or validated on comes from
``edgetl_runtime.preprocess.load_image`` at the model's input size and colour mode, exactly as the
device will prepare it: uint8 ``(N, H, W, C)``.

>>> import numpy as np
>>> Samples(np.zeros((2, 4, 4, 3), np.uint8), (0, None), ("a.png", "b.png")).labelled
1
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from edgetl_runtime.errors import ImageError
from edgetl_runtime.preprocess import is_image_file, load_image

from .options import CalibrationError


@dataclass(frozen=True)
class Samples:
    """Preprocessed images: uint8 pixels ``(N, H, W, C)``, label index per image (None if unknown)."""

    pixels: np.ndarray
    labels: tuple[int | None, ...]
    paths: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.pixels)

    @property
    def labelled(self) -> int:
        """Number of images with a known label."""
        return sum(label is not None for label in self.labels)


def _spread(items: Sequence, limit: int) -> list:
    """Return at most ``limit`` items spread evenly over ``items`` (keeps classes balanced in sorted lists)."""
    if len(items) <= limit:
        return list(items)
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in idx]


def folder_entries(folder: str | Path) -> list[tuple[str, str | None]]:
    """Return ``(path, label)`` for every image under ``folder``; the label is the parent folder's name."""
    root = Path(folder)
    if not root.is_dir():
        raise CalibrationError(f"{root}: no such folder of images; pass a folder holding images (or <label>/ subfolders)")
    out = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p)):
        out.append((str(path), path.parent.name if path.parent != root else None))
    return out


def load_samples(
    entries: Iterable[tuple[str, str | None]],
    size: tuple[int, int],
    color_mode: str,
    class_names: Sequence[str],
    limit: int,
    source: str,
) -> Samples:
    """Return up to ``limit`` readable images of ``entries`` as :class:`Samples`; unreadable files are skipped.

    Raises :class:`CalibrationError` naming ``source`` when none is readable.
    """
    entries = _spread(list(entries), limit)
    pixels, labels, paths, skipped = [], [], [], []
    for path, label in entries:
        try:
            pixels.append(load_image(path, size, color_mode))
        except (ImageError, OSError) as exc:
            skipped.append(f"{path} ({exc})")
            continue
        labels.append(class_names.index(label) if label in class_names else None)
        paths.append(str(path))
    if not pixels:
        detail = f"; unreadable: {skipped[0]}" + (f" and {len(skipped) - 1} more" if len(skipped) > 1 else "")
        raise CalibrationError(
            f"{source}: no usable images (found {len(entries)} image files{detail if skipped else ''}). "
            "Point --calib/--data at a folder of .png/.jpg images (optionally in <label>/ subfolders)."
        )
    return Samples(np.stack(pixels), tuple(labels), tuple(paths))


def samples_from(
    folder: str | Path | None,
    split: list[tuple[str, str]],
    split_name: str,
    size: tuple[int, int],
    color_mode: str,
    class_names: Sequence[str],
    limit: int,
) -> Samples:
    """Return images from ``folder`` when given, else from the run's ``split`` list."""
    if folder is not None:
        return load_samples(folder_entries(folder), size, color_mode, class_names, limit, str(folder))
    if not split:
        raise CalibrationError(
            f"the run records no {split_name!r} images (split.json missing or empty); pass a folder of "
            f"images with {'--calib' if split_name == 'train' else '--data'}"
        )
    return load_samples(split, size, color_mode, class_names, limit, f"run split {split_name!r}")


def with_full_range(pixels: np.ndarray) -> np.ndarray:
    """Return a copy of ``pixels`` whose first image holds one 0 and one 255 pixel.

    The converter derives the input tensor's quantization from the range it saw during calibration;
    one black and one white pixel make that range exactly 0..255, so uint8 input has scale 1 and
    zero point 0 and the device feeds raw pixels without any arithmetic.
    """
    out = pixels.copy()
    out[0, 0, 0, :] = 0
    out[0, 0, -1, :] = 255
    return out
