"""``jsonl:PATH``: one JSON line per part, appended and flushed (at least once).

Each line is the part's history record: time, source, part id, status, verdict, defect score, top
class, threshold, the model's SHA-256, latency and per-stage timings. The file only grows: rotate
it with logrotate (``copytruncate``) or let the history be the archive.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .base import SinkError


class JsonlSink:
    """See the module docstring."""

    delivery, replay = "at-least-once", True

    def __init__(self, path: str):
        if not path:
            raise SinkError("jsonl: give the file to append to, e.g. jsonl:results.jsonl")
        self.path = Path(path).expanduser()
        if not self.path.parent.is_dir():
            raise SinkError(f"jsonl:{path}: folder {self.path.parent} does not exist; create it first")
        self.name = f"jsonl:{self.path}"
        self._file = None

    def send(self, record: dict[str, Any], result: Any) -> None:
        if self._file is None:  # opened (and reopened after a failure) here, in the sink's thread
            self._file = open(self.path, "a", encoding="utf-8")
        try:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._file.flush()
        except OSError:
            self._file.close()
            self._file = None
            raise

    def event(self, record: dict[str, Any]) -> None:
        """Write a station event (drift, a threshold change) as a line with an ``event`` key."""
        self.send(record, None)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
