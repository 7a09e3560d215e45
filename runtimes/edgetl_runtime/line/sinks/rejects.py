"""``rejects:DIR[?quota_mb=500]``: each rejected part's image, and its heatmap overlay, under a disk quota.

For every defect verdict the part's image is written to ``DIR/<row id>-<part>.<ext>`` as the source
gave it (a file's bytes, or a camera frame as JPEG) and, for an anomaly detector, the heatmap over
the model's view as ``DIR/<row id>-overlay.png``. When the folder holds more than ``quota_mb``, the
oldest files go first. The operator's page shows them, and nothing outside this folder is ever
served. At most once: the images live in memory only until written (the queue keeps 32), so a
part whose image was not written before a restart has its row but no image.
"""

from __future__ import annotations

import io
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from .base import SinkError
from ..sources.base import options as parse_options

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
IMAGE_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}


class RejectsSink:
    """See the module docstring."""

    delivery, replay, wants_images, capacity = "at-most-once", False, True, 32

    def __init__(self, spec: str):
        folder, _, query = spec.partition("?")
        opts = parse_options(query)
        if not folder or set(opts) - {"quota_mb"}:
            raise SinkError(f"rejects:{spec}: give rejects:DIR[?quota_mb=500]")
        try:
            self.quota = int(float(opts.get("quota_mb", 500)) * 2**20)
        except ValueError:
            raise SinkError(f"rejects:{spec}: quota_mb must be a number of megabytes") from None
        self.folder = Path(folder).expanduser().resolve()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"rejects:{folder}: cannot create the folder ({exc.strerror or exc})") from None
        self.name = f"rejects:{self.folder}"
        self._lock = threading.Lock()
        # every file of the folder, oldest first (names start with the row id), and its size
        self._files: OrderedDict[str, int] = OrderedDict(
            (p.name, p.stat().st_size) for p in sorted(self.folder.iterdir()) if p.is_file())  # fmt: skip
        self._bytes = sum(self._files.values())
        self.removed = 0

    def wants(self, record: dict[str, Any]) -> bool:
        return record.get("verdict") == "defect"

    def details(self) -> dict[str, Any]:
        with self._lock:
            return {"files": len(self._files), "bytes": self._bytes, "removed": self.removed}

    def send(self, record: dict[str, Any], result: Any) -> None:
        if record.get("verdict") != "defect" or result is None or result.image is None:
            return
        stem = f"{record['id']:09d}-{_SAFE.sub('_', Path(str(record['part_id'])).stem)[:80]}"
        data, suffix = _encoded(result.image)
        self._write(f"{stem}{suffix}", data)
        if result.heatmap is not None and result.pixels is not None:
            from ...heatmap import overlay

            buffer = io.BytesIO()
            overlay(result.pixels, result.heatmap).save(buffer, format="PNG")
            self._write(f"{record['id']:09d}-overlay.png", buffer.getvalue())

    def image_path(self, row_id: int, overlay: bool = False) -> Path | None:
        """Return the file of row ``row_id`` (its overlay when ``overlay``) inside the folder, or None."""
        prefix = f"{int(row_id):09d}-"
        with self._lock:
            names = [n for n in self._files if n.startswith(prefix) and (n.endswith("-overlay.png") == overlay)]
        return self.folder / names[0] if names else None

    def _write(self, name: str, data: bytes) -> None:
        from ...atomic import write_bytes

        write_bytes(self.folder / name, data)
        with self._lock:
            self._files[name] = len(data)
            self._bytes += len(data)
            while self._bytes > self.quota and len(self._files) > 1:
                oldest, size = self._files.popitem(last=False)
                self._bytes -= size
                (self.folder / oldest).unlink(missing_ok=True)
                self.removed += 1

    def close(self) -> None:
        pass


def _encoded(image: Any) -> tuple[bytes, str]:
    """Return ``(bytes, suffix)`` of a part's image: a file's or a buffer's bytes as they are, a frame as JPEG."""
    import numpy as np
    from PIL import Image

    from ...preprocess import IMAGE_FORMATS

    if isinstance(image, np.ndarray):
        buffer = io.BytesIO()
        Image.fromarray(image).convert("RGB").save(buffer, format="JPEG", quality=90)
        return buffer.getvalue(), ".jpg"
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:  # the header only, never decoded
            return data, IMAGE_SUFFIXES.get(img.format or "", ".img")
    except Exception:  # noqa: BLE001 - a defect verdict came from a readable image; keep the bytes anyway
        return data, ".img"
