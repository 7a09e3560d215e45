"""``http``: images POSTed to the station (``POST /api/inspect``), each answered with its decision.

The pull model of an MES or a line controller: it sends a part's image and waits for the verdict.
Queue semantics: when inspection is behind, the caller waits (nothing is dropped); the request
times out after ``timeout_s`` (30) with 503. The body is the encoded image (PNG, JPEG, BMP, TIFF,
WebP), at most ``--max-body-mb``; ``?part_id=`` names the part.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator

from ..parts import Part, Result, Stop


class HttpSource:
    """See the module docstring."""

    name, live, OPTIONS = "http", False, {}

    def __init__(self, waiting: int = 16):
        self._queue: queue.Queue[Part] = queue.Queue(waiting)
        self._count = 0
        self._open = True

    def parts(self, stop: Stop) -> Iterator[Part]:
        while not stop.is_set():
            try:
                yield self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
        self._open = False

    def submit(self, image: bytes, part_id: str | None = None, timeout_s: float = 30.0) -> Result | None:
        """Queue one image, wait for its result and return it (None when ``timeout_s`` passed first)."""
        if not self._open:
            return None
        done, box = threading.Event(), []

        def reply(result: Result) -> None:
            box.append(result)
            done.set()

        self._count += 1
        part = Part(source=self.name, part_id=part_id or f"http-{self._count:08d}", image=image, reply=reply)
        try:
            self._queue.put(part, timeout=timeout_s)
        except queue.Full:
            return None
        return box[0] if done.wait(timeout_s) else None

    def done(self, part: Part, result: object) -> None:
        pass

    def status(self) -> dict:
        return {"name": self.name, "kind": "http", "live": False, "waiting": self._queue.qsize(), "received": self._count}

    def close(self) -> None:
        self._open = False
