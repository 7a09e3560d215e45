"""What travels down the line: a :class:`Part` from a source, its :class:`Result` to the history and the sinks.

>>> Result(seq=1, source="dir:in", part_id="a.png", t=0.0, status="decided", verdict="defect").is_reject
True
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np

# What a source hands over: encoded bytes, a file to read, or a decoded RGB frame (H, W, 3) uint8.
Image = Union[bytes, str, Path, np.ndarray]
STATUSES = ("decided", "error", "dropped")


@dataclass
class Part:
    """One part to inspect: where it came from, its image, and when it was taken.

    ``key`` is the source's name for the part that must never be decided twice (a folder source:
    the file's path, size and modification time); the history refuses a second row with it.
    ``reply`` (the HTTP source, a trigger) is called with the :class:`Result` once it is recorded.
    """

    source: str
    part_id: str
    image: Image | None
    key: str | None = None
    t: float = field(default_factory=time.time)  # wall clock when the source took it
    t0: float = field(default_factory=time.perf_counter)  # the same instant, for stage timings
    reply: Callable[[Result], None] | None = None
    seq: int = 0  # set by the line, in the order parts entered
    error: str | None = None  # why the source has no image for it (the part becomes an error row)


@dataclass
class Result:
    """What the line decided about one part (or why it did not): one row of the history.

    ``status``: ``decided`` (a verdict), ``error`` (the image could not be read or run: ``error``
    says why) or ``dropped`` (a live source's frame taken off a full queue, never inspected).
    ``timings`` in milliseconds: ``queued`` (taken -> decoding), ``decode``, ``wait`` (decoded ->
    inference), ``inference``, ``record`` (inference -> in the history), ``total``.
    """

    seq: int
    source: str
    part_id: str
    t: float
    status: str
    key: str | None = None
    verdict: str | None = None
    defect_score: float | None = None
    top_class: str | None = None
    top_probability: float | None = None
    threshold: float | None = None
    model_sha256: str | None = None
    latency_ms: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    id: int | None = None  # the history's row id, once recorded
    # Kept in memory for the sinks that need them (the rejects folder), for rejects only:
    image: Any = None
    pixels: np.ndarray | None = None
    heatmap: np.ndarray | None = None
    part: Part | None = None
    t_inferred: float | None = None  # perf_counter when the engine was done (for the record stage's timing)

    @property
    def is_reject(self) -> bool:
        """True when the part is to be rejected: a defect verdict."""
        return self.verdict == "defect"

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON record every sink and the status API send (the history's columns)."""
        return {
            "id": self.id,
            "time": datetime.fromtimestamp(self.t, timezone.utc).isoformat(timespec="milliseconds"),
            "source": self.source,
            "part_id": self.part_id,
            "status": self.status,
            "verdict": self.verdict,
            "defect_score": self.defect_score,
            "top_class": self.top_class,
            "top_probability": self.top_probability,
            "threshold": self.threshold,
            "model_sha256": self.model_sha256,
            "latency_ms": self.latency_ms,
            "timings": self.timings,
            "error": self.error,
        }


class Stop:
    """A stop flag with a short, interruptible wait (the stages poll it between items)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return True at once when the flag is set."""
        return self._event.wait(seconds)
