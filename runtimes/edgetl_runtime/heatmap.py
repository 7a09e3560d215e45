"""Anomaly heatmap overlays: where an anomaly detector found the image anomalous, drawn on the image.

A heatmap (rows, cols) holds values in [0, 1] on the scale of the defect score (0.5 = the score
at which the threshold was set). :func:`overlay` stretches it bilinearly to the image and blends
a colour ramp over it: transparent below ``floor``, then yellow to red, opaque where the map
reaches 1. Only numpy and Pillow, so it runs on the device.

>>> import numpy as np
>>> image = np.full((32, 32, 3), 128, np.uint8)
>>> heat = np.zeros((4, 4), np.float32); heat[1, 2] = 1.0
>>> out = overlay(image, heat)
>>> out.size, out.getpixel((0, 31)), out.getpixel((20, 12))         # far from the cell: unchanged; on it: red
((32, 32), (128, 128, 128), (192, 84, 64))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_FLOOR = 0.25  # below this the image shows through unchanged: good regions stay readable


def overlay(pixels: np.ndarray, heatmap: np.ndarray, floor: float = DEFAULT_FLOOR, alpha: float = 0.6) -> Any:
    """Return a PIL RGB image: ``pixels`` (H, W, C uint8) with ``heatmap`` (rows, cols in [0, 1]) over it."""
    from PIL import Image

    pixels = np.asarray(pixels)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    base = Image.fromarray(pixels.astype(np.uint8)).convert("RGB")
    heat = np.nan_to_num(np.asarray(heatmap, np.float32), nan=0.0).clip(0.0, 1.0)
    if heat.ndim != 2:
        raise ValueError(f"a heatmap is (rows, cols), got shape {heat.shape}")
    stretched = np.asarray(Image.fromarray(heat, mode="F").resize(base.size, Image.BILINEAR), np.float32)
    strength = ((stretched - floor) / max(1.0 - floor, 1e-6)).clip(0.0, 1.0)
    colour = np.stack([np.full_like(strength, 255.0), 255.0 * (1.0 - strength), np.zeros_like(strength)], -1)
    weight = (alpha * strength)[..., None]
    blended = np.asarray(base, np.float32) * (1.0 - weight) + colour * weight
    return Image.fromarray(blended.round().astype(np.uint8))


def write_overlay(path: str | Path, pixels: np.ndarray, heatmap: np.ndarray, floor: float = DEFAULT_FLOOR) -> Path:
    """Write the :func:`overlay` of ``heatmap`` on ``pixels`` as a PNG at ``path`` (atomically); return it."""
    from .atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        overlay(pixels, heatmap, floor).save(tmp, format="PNG")
    return path


def overlay_name(image: str | Path, index: int, tag: str = "") -> str:
    """Return the overlay's file name for the ``index``-th image: unique even when two inputs share a name.

    >>> overlay_name("cells/a.png", 3), overlay_name("cells/a.png", 3, "defect")
    ('00003-a.png', '00003-defect-a.png')
    """
    return f"{index:05d}-{tag + '-' if tag else ''}{Path(image).stem}.png"
