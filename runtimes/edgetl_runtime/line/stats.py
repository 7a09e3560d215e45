"""The station's running figures: counts, yield, parts per minute, latency per stage; bounded memory.

>>> s = LineStats()
>>> s.add("decided", "good", {"total": 12.0}); s.add("decided", "defect", {"total": 8.0})
>>> s.snapshot()["yield"], s.snapshot()["latency_ms"]["total"]["p50"]
(0.5, 10.0)
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from typing import Any

import numpy as np

STAGES = ("queued", "decode", "wait", "inference", "record", "total")
WINDOW = 2000  # latencies kept per stage: the last 2000 parts
RATE_WINDOW_S = 60.0
SCORES_KEPT = 2000  # recent defect scores, for the page's histogram and threshold what-if
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class LineStats:
    """Thread-safe counters and rolling windows; :meth:`snapshot` is what the status API shows."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        self.counts = {"decided": 0, "error": 0, "dropped": 0, "defect": 0, "good": 0, "duplicate": 0}
        self._latency = {stage: deque(maxlen=WINDOW) for stage in STAGES}
        # parts decided per second over the last minute, [second, count] (a time per part grew 32 bytes per
        # part, to 3 MB at 100,000 parts)
        self._per_second: deque[list[int]] = deque()
        self._scores: deque[float] = deque(maxlen=SCORES_KEPT)  # recent defect scores: the page's histogram
        self._latency_buckets = np.zeros(len(LATENCY_BUCKETS_MS) + 1, np.int64)  # /metrics: a Prometheus histogram
        self._latency_sum = 0.0
        self.last: dict[str, Any] | None = None

    def add(self, status: str, verdict: str | None, timings: dict[str, float], record: dict | None = None,
            score: float | None = None) -> None:  # fmt: skip
        with self._lock:
            self.counts[status] = self.counts.get(status, 0) + 1
            if status == "decided":
                self.counts[verdict or "good"] = self.counts.get(verdict or "good", 0) + 1
                self._count_second(int(time.time()))
                for stage in STAGES:
                    if stage in timings:
                        self._latency[stage].append(timings[stage])
                if score is not None:
                    self._scores.append(score)
                if "total" in timings:
                    self._latency_buckets[bisect.bisect_left(LATENCY_BUCKETS_MS, timings["total"])] += 1
                    self._latency_sum += timings["total"]
            if record is not None:
                self.last = record

    def _count_second(self, second: int) -> None:
        if self._per_second and self._per_second[-1][0] == second:
            self._per_second[-1][1] += 1
        else:
            self._per_second.append([second, 1])
        while self._per_second[0][0] < second - RATE_WINDOW_S:
            self._per_second.popleft()

    def recent_scores(self, n: int = SCORES_KEPT) -> list[float]:
        """Return the defect scores of the last ``n`` decided parts, oldest first."""
        with self._lock:
            return list(self._scores)[-n:]

    def latency_histogram(self) -> tuple[list[int], float]:
        """Return the cumulative counts of end-to-end latency per bucket of :data:`LATENCY_BUCKETS_MS` (+Inf), and the sum."""
        with self._lock:
            return np.cumsum(self._latency_buckets).tolist(), self._latency_sum

    def duplicate(self) -> None:
        with self._lock:
            self.counts["duplicate"] += 1

    def snapshot(self) -> dict[str, Any]:
        """Return the counts, yield, rate and latency percentiles now (JSON-ready)."""
        now = time.time()
        with self._lock:
            counts = dict(self.counts)
            recent = sum(n for second, n in self._per_second if now - second < RATE_WINDOW_S)
            last_10s = sum(n for second, n in self._per_second if now - second < 10.0)
            latency = {stage: _percentiles(values) for stage, values in self._latency.items() if values}
            last = self.last
        decided = counts["decided"]
        span = min(RATE_WINDOW_S, now - self.started)
        return {
            "uptime_s": round(now - self.started, 1),
            "parts": decided,
            "rejects": counts.get("defect", 0),
            "good": counts.get("good", 0),
            "errors": counts["error"],
            "dropped": counts["dropped"],
            "duplicates": counts["duplicate"],
            "yield": (decided - counts.get("defect", 0)) / decided if decided else None,
            "parts_per_min": round(recent * 60.0 / span, 2) if span > 0 else 0.0,
            "latency_ms": latency,
            "pipeline": _pipeline(last_10s / min(10.0, max(now - self.started, 1e-9)), latency),
            "last": last,
        }


def _pipeline(rate: float, latency: dict[str, dict[str, float]]) -> dict[str, float | None]:
    """Return the station's throughput over the last 10 s against what the engine alone could do.

    ``efficiency`` = parts per second ÷ the engine's capacity (1000 ÷ its p50 inference ms): near 1
    when the line keeps the engine busy; at a slower feed it is how busy the engine is.
    """
    inference = latency.get("inference", {}).get("p50")
    capacity = 1000.0 / inference if inference else None
    return {"parts_per_s": round(rate, 2), "engine_capacity_per_s": round(capacity, 2) if capacity else None,
            "efficiency": round(rate / capacity, 3) if capacity else None}  # fmt: skip


def _percentiles(values: deque) -> dict[str, float]:
    array = np.fromiter(values, float, len(values))
    p50, p99 = np.percentile(array, [50, 99])
    return {"p50": round(float(p50), 3), "p99": round(float(p99), 3), "n": int(array.size)}
