"""The station's running figures: right, and the same size after a shift as after a minute."""

from __future__ import annotations

import time
import tracemalloc

from edgetl_runtime.line.stats import LineStats


def _decide(stats: LineStats, n: int) -> None:
    for i in range(n):
        stats.add("decided", "defect" if i % 4 == 0 else "good", {"total": 10.0, "inference": 5.0}, score=0.3)


def test_the_figures_count_every_part():
    stats = LineStats()
    _decide(stats, 400)
    stats.add("error", None, {})
    snap = stats.snapshot()
    assert (snap["parts"], snap["rejects"], snap["good"], snap["errors"]) == (400, 100, 300, 1)
    assert snap["yield"] == 0.75 and snap["latency_ms"]["total"]["p50"] == 10.0
    # all 400 within the last minute; the rate is over the time the station has run (at least 1 s here)
    assert snap["parts_per_min"] >= 400 and snap["pipeline"]["parts_per_s"] > 0


def test_memory_does_not_grow_with_the_parts():
    # Before: one float per part for the parts-per-minute figure, kept up to 100,000 parts (3 MB at the end
    # of a shift's soak): the station's memory rose with every part.
    stats = LineStats()
    _decide(stats, 5_000)  # the rolling windows (2,000 parts) are full
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        began = time.monotonic()
        _decide(stats, 50_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    seconds = time.monotonic() - began + 2
    # at most one [second, count] pair per second of the run, whatever the number of parts
    assert grown < 200 * seconds + 20_000, f"{grown:,} bytes more after 50,000 parts"
    assert stats.snapshot()["parts"] == 55_000
