"""Where the part is in the frame: a region of interest, cropped before the model's own resize.

A camera sees more than the part (conveyor, fixture, background); squashing the whole frame to
224x224 throws away most of the part's pixels. ``--roi X,Y,W,H`` gives the part's box in pixels of
the source frame (``100,40,640,480``) or as fractions of its width and height
(``0.1,0.05,0.5,0.9``: every value at most 1, with a decimal point). It is applied by the one
image pipeline (:func:`edgetl_runtime.preprocess.load_image`) in ``predict``, ``serve``, the Python
API, and by ``edgetl export --roi`` to the calibration and validation images, which stores it in
the file (``ExportInfo.roi``) so the station crops as the validation did.

>>> Roi.parse("100,40,640,480").box(1280, 720)
(100, 40, 740, 520)
>>> Roi.parse("0.25,0,0.5,1").box(800, 600)
(200, 0, 600, 600)
"""

from __future__ import annotations

import math
from typing import NamedTuple

from .errors import ImageError, MetadataError


class Roi(NamedTuple):
    """A box ``x, y, w, h``: pixels of the source frame, or fractions of its size when ``fraction``."""

    x: float
    y: float
    w: float
    h: float
    fraction: bool = False

    @classmethod
    def parse(cls, text: str | list | tuple) -> Roi:
        """Return the ROI of ``"X,Y,W,H"`` (pixels) or fractions (every value <= 1, one with a decimal point)."""
        parts = text.split(",") if isinstance(text, str) else list(text)
        try:
            values = [float(v) for v in parts]
        except (TypeError, ValueError):
            raise MetadataError(f"region of interest {str(text)[:60]!r}: give X,Y,W,H as four numbers") from None
        if len(values) != 4 or not all(math.isfinite(v) and 0 <= v < 1e6 for v in values):
            raise MetadataError(f"region of interest {str(text)[:60]!r}: give X,Y,W,H as four numbers >= 0 "
                                "(pixels, or fractions of the frame's width and height)")  # fmt: skip
        decimal = isinstance(text, str) and "." in text
        fraction = all(v <= 1 for v in values) and (decimal or not isinstance(text, str) and any(v % 1 for v in values))
        x, y, w, h = values
        if w <= 0 or h <= 0:
            raise MetadataError(f"region of interest {str(text)[:60]!r}: its width and height must be above 0")
        if fraction and (x + w > 1 + 1e-9 or y + h > 1 + 1e-9):
            raise MetadataError(f"region of interest {str(text)[:60]!r}: as fractions, x + w and y + h must be <= 1")
        if not fraction and any(v % 1 for v in values):
            raise MetadataError(f"region of interest {str(text)[:60]!r}: pixels are whole numbers (fractions are all "
                                "<= 1)")  # fmt: skip
        return cls(x, y, w, h, fraction)

    def box(self, width: int, height: int, name: str = "<image>") -> tuple[int, int, int, int]:
        """Return the PIL crop box ``(left, top, right, bottom)`` in a ``width`` x ``height`` frame.

        Raises :class:`~edgetl_runtime.errors.ImageError` when the box does not lie inside the frame.
        """
        if self.fraction:
            left, top = round(self.x * width), round(self.y * height)
            right, bottom = round((self.x + self.w) * width), round((self.y + self.h) * height)
        else:
            left, top, right, bottom = int(self.x), int(self.y), int(self.x + self.w), int(self.y + self.h)
        if right > width or bottom > height or right <= left or bottom <= top:
            raise ImageError(name, f"the region of interest {self.text()} does not lie inside the {width}x{height} "
                                   "frame; check --roi against the camera's resolution")  # fmt: skip
        return left, top, right, bottom

    def text(self) -> str:
        """Return the ROI as ``--roi`` takes it."""
        if not self.fraction:
            return ",".join(str(int(v)) for v in self[:4])
        return ",".join(f"{v:g}" if v % 1 else f"{v:.1f}" for v in self[:4])  # 1.0, not 1: still fractions when read back

    def to_json(self) -> list | dict:
        """Return the JSON form: ``[x, y, w, h]`` in pixels, or ``{"fraction": [x, y, w, h]}``."""
        return {"fraction": list(self[:4])} if self.fraction else [int(v) for v in self[:4]]

    @classmethod
    def from_json(cls, value: object) -> Roi:
        """Return the ROI stored by :meth:`to_json` (a file's export facts)."""
        if isinstance(value, dict) and set(value) == {"fraction"} and isinstance(value["fraction"], list):
            roi = cls.parse([*value["fraction"]])
            return roi._replace(fraction=True) if all(v <= 1 for v in roi[:4]) else roi
        if isinstance(value, list):
            return cls.parse(value)
        raise MetadataError(f"export roi must be [x, y, w, h] or {{\"fraction\": [x, y, w, h]}}, got {str(value)[:60]}")
