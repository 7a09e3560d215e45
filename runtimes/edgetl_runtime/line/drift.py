"""The drift alarm: are the parts still like the ones the model was validated on?

``edgetl export`` stores the distribution of the exported file's defect scores on the run's
validation images (``ExportInfo.reference``): the reference's deciles as bin edges, and the share of
the reference in each bin. The station compares the scores of its last ``window`` decided parts
(200) with it by the **population stability index** over those bins: if the reference's share in
bin i is r_i (about 10 %) and the window's w_i, PSI = Σ (w_i − r_i) · ln(w_i / r_i). The drift
state goes on above ``on`` (0.30) and off again below ``off`` (0.10), so a window near the limit
does not flicker. 0.25 is the usual "significant shift"; on ELPV a window of 200 parts like the
test split reached 0.267 once in 50,000 parts (the reference is only 393 validation images), so
the station's limit is 0.30. Decile bins make it the same for any monotone score (an anomaly
detector's bounded score or its distance rank the parts alike).

Why PSI over a test: its value reads as a size of the shift whatever the window, and with fixed
bins it costs one bisection per part. Its false-alarm rate on parts like the validation images,
and how many parts a darkened, blurred or rotated line takes to raise it, are measured on ELPV
(benchmarks/drift.py, docs/BENCHMARKS.md). What it cannot know: a production line whose defect
rate differs from the validation data's drifts by that alone; ``serve --drift-baseline N`` takes
the first N parts of the run as the reference instead.

>>> import numpy as np
>>> ref = reference(np.linspace(0, 1, 500))
>>> m = DriftMonitor(ref, window=100)
>>> for s in np.linspace(0, 1, 100): _ = m.update(s)
>>> m.state, m.psi < 0.05
('ok', True)
>>> for s in np.full(100, 0.99): _ = m.update(s)
>>> m.state
'drift'
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import deque
from typing import Any, Sequence

import numpy as np

BINS = 10
WINDOW = 200
PSI_ON, PSI_OFF = 0.30, 0.10
_EPS = 1e-4  # a bin the window left empty counts as this share (ln 0 is -inf)


def reference(scores: Sequence[float]) -> dict[str, Any]:
    """Return the reference stored in a file: the deciles of ``scores`` as bin edges, each bin's share, the count.

    The edges are scores of the sample itself, and the shares are counted as the station bins its parts
    (a score on an edge goes to the bin above): a score that many parts share is seen alike on both sides.
    """
    values = np.asarray(scores, np.float64)
    if values.size == 0:
        raise ValueError("a drift reference needs at least one score")
    cuts = np.quantile(values, np.arange(1, BINS) / BINS, method="inverted_cdf")
    edges = sorted({round(float(v), 6) for v in cuts})
    counts = np.bincount([bisect.bisect_right(edges, v) for v in values], minlength=len(edges) + 1)
    return {"edges": edges, "shares": [round(float(c) / values.size, 6) for c in counts], "n": int(values.size)}


def check_reference(value: Any) -> dict[str, Any]:
    """Return ``value`` if it is a well-formed reference (sorted edges in [0, 1], a share per bin), else raise ValueError."""
    if not isinstance(value, dict) or set(value) != {"edges", "shares", "n"}:
        raise ValueError("the drift reference must be {edges: [...], shares: [...], n: N}")
    edges, shares, n = value["edges"], value["shares"], value["n"]
    numbers = lambda xs: isinstance(xs, list) and all(  # noqa: E731
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0 for v in xs)
    if (not numbers(edges) or not numbers(shares) or len(edges) > 100 or len(shares) != len(edges) + 1
            or any(b <= a for a, b in zip(edges, edges[1:])) or abs(sum(shares) - 1.0) > 1e-3
            or isinstance(n, bool) or not isinstance(n, int) or not 0 < n < 10**9):  # fmt: skip
        raise ValueError("the drift reference needs sorted edges in [0, 1], one share per bin summing to 1, n a count")
    return {"edges": [float(v) for v in edges], "shares": [float(v) for v in shares], "n": int(n)}


class DriftMonitor:
    """The rolling PSI of the last ``window`` scores against a reference (see the module docstring). Thread-safe."""

    def __init__(self, ref: dict[str, Any], window: int = WINDOW, on: float = PSI_ON, off: float = PSI_OFF,
                 source: str = "the export's validation images"):  # fmt: skip
        ref = check_reference(ref)
        self.edges = ref["edges"]
        self.expected = np.clip(np.asarray(ref["shares"]), _EPS, None)
        self.window, self.on, self.off, self.source = window, on, off, source
        self._bins: deque[int] = deque(maxlen=window)
        self._counts = np.zeros(len(self.edges) + 1, np.int64)
        self._lock = threading.Lock()
        self.state, self.psi, self.since = "warming up", None, None

    def update(self, score: float) -> str | None:
        """Add one part's defect score; return the new state when it changed (``drift`` or ``ok``), else None."""
        b = bisect.bisect_right(self.edges, score)
        with self._lock:
            if len(self._bins) == self.window:
                self._counts[self._bins[0]] -= 1
            self._bins.append(b)
            self._counts[b] += 1
            if len(self._bins) < self.window:
                return None
            observed = np.clip(self._counts / self.window, _EPS, None)
            self.psi = float(np.sum((observed - self.expected) * np.log(observed / self.expected)))
            new = "drift" if self.psi > self.on or (self.state == "drift" and self.psi >= self.off) else "ok"
            if new == self.state:
                return None
            self.state = new
            return new

    def status(self) -> dict[str, Any]:
        with self._lock:
            psi = None if self.psi is None or not math.isfinite(self.psi) else round(self.psi, 4)
            return {"state": self.state, "psi": psi, "window": self.window, "parts_in_window": len(self._bins),
                    "on": self.on, "off": self.off, "reference": self.source}  # fmt: skip
