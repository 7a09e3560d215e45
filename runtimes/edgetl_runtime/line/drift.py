"""The drift alarm: are the parts still like the ones the model was validated on?

``edgetl export`` stores the distribution of the exported file's defect scores on the run's
validation images (``ExportInfo.reference``): the reference's deciles as bin edges, and the share of
the reference in each bin. The station compares the scores of its last ``window`` decided parts
(200) with it by the **two-sample Kolmogorov-Smirnov distance at those edges**: the largest gap
between the share of the window and the share of the reference below any decile,
D = max_j |W(e_j) − R(e_j)|. The drift state goes on above ``on`` and off again below ``off``
(0.45 × ``on``), so a window near the limit does not flicker. ``on`` is the two-sample KS critical
value for the two sizes, c · sqrt(1/n + 1/m) with c = 2.3, n the reference's images and m the
window: 0.20 for an export's 393 validation images and a window of 200; a larger reference (a
bigger validation split, ``--drift-baseline 2000``) brings it down to 0.17, and the delays with it.
The population stability index over the same bins, PSI = Σ (w_i − r_i) · ln(w_i / r_i), is
reported beside it.

Why KS, and why c = 2.3 (benchmarks/drift.py, docs/BENCHMARKS.md, ELPV, three split seeds): over 3 ×
300,000 parts like the test split (30 streams of 10,000 per seed), windows of 200 reached D = 0.166
/ 0.163 / 0.194; the reference is only 393 validation images, and its own sampling noise is most of
a window's (seed 2's reference sits 0.05 from its test split before a window adds its own). 0.18,
the first limit, went on in 3 of seed 2's 30 streams; PSI at 0.30 in 6. Each at a limit with no
false alarm (KS 0.20, PSI 0.37), KS raised the alarm sooner than PSI on 14 of 15 shifts that move
the scores (a darkened, rotated or blurred line, a doubled defect rate): a cumulative distance sees
a shift of the whole distribution that decile-by-decile PSI spreads over its bins. Both cost one
bisection per part. Other rules (longer windows, persistence, a rank test, CUSUM:
benchmarks/drift_alternatives.py), each at a limit with no false alarm, were faster on some shifts
and slower on others, and none saw the two smallest shifts within 200 parts. What neither can know:
a line whose defect rate differs from the validation data's drifts by that alone; ``serve
--drift-baseline N`` takes the first N parts of the run as the reference instead. A shift that
leaves the scores where they were (upside-down cells) is invisible to any score-based alarm.

>>> import numpy as np
>>> ref = reference(np.linspace(0, 1, 500))
>>> m = DriftMonitor(ref, window=100)
>>> for s in np.linspace(0, 1, 100): _ = m.update(s)
>>> m.state, m.distance < 0.05
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
KS_C, KS_OFF_SHARE = 2.3, 0.45  # the alarm on the KS distance: on = KS_C * sqrt(1/n + 1/window), off = 0.45 * on
PSI_ON, PSI_OFF = 0.30, 0.10  # the former alarm on PSI (statistic="psi"), kept to measure against
STATISTICS = ("ks", "psi")
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


def ks_limits(n: int, window: int) -> tuple[float, float]:
    """Return the KS distances ``(on, off)`` for a reference of ``n`` scores and a window of ``window`` parts.

    >>> ks_limits(393, 200)
    (0.2, 0.09)
    """
    on = round(KS_C * math.sqrt(1 / n + 1 / window), 3)
    return on, round(KS_OFF_SHARE * on, 3)


class DriftMonitor:
    """The rolling KS distance (and PSI) of the last ``window`` scores against a reference (see the module docstring).

    ``statistic``: what raises the alarm, ``ks`` (the station's) or ``psi``; ``on``/``off`` default to
    that statistic's limits. Thread-safe.
    """

    def __init__(self, ref: dict[str, Any], window: int = WINDOW, on: float | None = None, off: float | None = None,
                 source: str = "the export's validation images", statistic: str = "ks"):  # fmt: skip
        if statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {', '.join(STATISTICS)}, got {statistic!r}")
        ref = check_reference(ref)
        self.edges = ref["edges"]
        self.expected = np.clip(np.asarray(ref["shares"]), _EPS, None)
        self._ref_cdf = np.cumsum(np.asarray(ref["shares"], np.float64))[:-1]
        default_on, default_off = ks_limits(ref["n"], window) if statistic == "ks" else (PSI_ON, PSI_OFF)
        self.statistic = statistic
        self.window, self.source = window, source
        self.on = default_on if on is None else on
        self.off = default_off if off is None else off
        self._bins: deque[int] = deque(maxlen=window)
        self._counts = np.zeros(len(self.edges) + 1, np.int64)
        self._lock = threading.Lock()
        self.state, self.distance, self.psi, self.since = "warming up", None, None, None

    @property
    def value(self) -> float | None:
        """The statistic that raises the alarm, for the last full window (None before)."""
        return self.distance if self.statistic == "ks" else self.psi

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
            observed = self._counts / self.window
            self.distance = float(np.max(np.abs(np.cumsum(observed[:-1]) - self._ref_cdf)))
            clipped = np.clip(observed, _EPS, None)
            self.psi = float(np.sum((clipped - self.expected) * np.log(clipped / self.expected)))
            value = self.value
            new = "drift" if value > self.on or (self.state == "drift" and value >= self.off) else "ok"
            if new == self.state:
                return None
            self.state = new
            return new

    def status(self) -> dict[str, Any]:
        with self._lock:
            rounded = lambda v: None if v is None or not math.isfinite(v) else round(v, 4)  # noqa: E731
            return {"state": self.state, "statistic": self.statistic, "distance": rounded(self.distance),
                    "psi": rounded(self.psi), "window": self.window, "parts_in_window": len(self._bins),
                    "on": self.on, "off": self.off, "reference": self.source}  # fmt: skip
