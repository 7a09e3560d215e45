"""Other drift alarms on the same ELPV scores: longer windows, a persistence rule, a rank test, CUSUM (issue 26).

    python benchmarks/drift_alternatives.py s0.npz s1.npz s2.npz [--streams 60]

Each ``.npz`` is a ``benchmarks/drift.py --scores-cache`` file of one seed (the file's defect scores
on the validation images, the test images and the shifted test images). For each alarm rule: in how
many of ``--streams`` in-distribution streams of 10,000 test parts per seed it went on (every one a
false alarm), and the median number of shifted parts until it went on, after 1,000 test parts (30
streams per shift and seed). The rules see what the station's monitor sees: the reference's deciles.

- ``ks W L kK``: the KS distance at the deciles over the last W parts above L for K parts in a row
  (K = 1: the station's rule; W 200, L 0.20 is the station's setting).
- ``rank z``: the mean of the window's reference percentiles (each part's decile midpoint), a
  rank-sum test against 0.5 in standard errors of the window and the reference together.
- ``cusum k h``: a two-sided CUSUM of the parts' reference percentiles minus 0.5.

No timing. Seeded: the same files give the same table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

SHIFTS = ("darkened to 60 %", "darkened to 40 %", "blurred (Gaussian, 2 px)", "rotated 10 degrees")


def reference(scores: np.ndarray) -> dict:
    from edgetl_runtime.line.drift import reference as ref

    return ref(scores)


def deciles(ref: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    edges, shares = np.asarray(ref["edges"]), np.asarray(ref["shares"])
    cdf = np.cumsum(shares)
    return edges, shares, cdf[:-1], cdf - shares / 2


def window_counts(scores: np.ndarray, edges: np.ndarray, bins: int, window: int) -> np.ndarray:
    onehot = np.eye(bins)[np.searchsorted(edges, scores, side="right")]
    total = np.cumsum(onehot, 0)
    return total[window - 1:] - np.vstack([np.zeros((1, bins)), total[:-window]])


def ks_rule(window: int, limit: float, persist: int = 1):
    def alarm(scores: np.ndarray, ref: dict) -> np.ndarray:
        edges, shares, cdf, _ = deciles(ref)
        observed = window_counts(scores, edges, len(shares), window) / window
        on = np.max(np.abs(np.cumsum(observed[:, :-1], 1) - cdf), 1) > limit
        if persist > 1:
            on = np.convolve(on.astype(int), np.ones(persist, int), "full")[: len(on)] >= persist
        return np.r_[np.zeros(window - 1, bool), on]

    return alarm


def rank_rule(z_limit: float, window: int = 200, with_ks: float | None = None):
    def alarm(scores: np.ndarray, ref: dict) -> np.ndarray:
        edges, shares, _, mid = deciles(ref)
        counts = window_counts(scores, edges, len(shares), window)
        variance = shares @ (mid - 0.5) ** 2
        z = np.abs(counts @ mid / window - 0.5) / np.sqrt(variance / window + variance / ref["n"])
        on = np.r_[np.zeros(window - 1, bool), z > z_limit]
        return on | ks_rule(window, with_ks)(scores, ref) if with_ks else on

    return alarm


def cusum_rule(k: float, h: float):
    def alarm(scores: np.ndarray, ref: dict) -> np.ndarray:
        edges, _, _, mid = deciles(ref)
        up = down = 0.0
        on = np.zeros(len(scores), bool)
        for i, u in enumerate(mid[np.searchsorted(edges, scores, side="right")] - 0.5):
            up, down = max(0.0, up + u - k), max(0.0, down - u - k)
            on[i] = up > h or down > h
        return on

    return alarm


def evaluate(rule, seeds: list[dict], streams: int) -> tuple[list[int], dict]:
    false_alarms, delays = [], {}
    for s, cache in enumerate(seeds):
        ref, test = reference(cache["val"]), cache["test"]
        rng = np.random.default_rng(11 + s)
        false_alarms.append(int(sum(rule(rng.choice(test, 10_000), ref).any() for _ in range(streams))))
        for i, name in enumerate(SHIFTS):
            found = []
            for _ in range(30):
                on = rule(np.r_[rng.choice(test, 1000), rng.choice(cache[f"shift{i}"], 2000)], ref)
                after = np.nonzero(on[1000:])[0]
                found.append(-1 if on[:1000].any() else (after[0] + 1 if len(after) else 9999))
            delays[(s, name)] = int(np.median(found))
    return false_alarms, delays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("caches", type=Path, nargs="+")
    parser.add_argument("--streams", type=int, default=60)
    args = parser.parse_args(argv)
    seeds = [dict(np.load(path)) for path in args.caches]
    rules = {
        "ks 200 0.20 (the station's)": ks_rule(200, 0.20),
        "ks 200 0.18 (before)": ks_rule(200, 0.18),
        "ks 200 0.18 k10": ks_rule(200, 0.18, 10),
        "ks 200 0.17 k40": ks_rule(200, 0.17, 40),
        "ks 250 0.17": ks_rule(250, 0.17),
        "ks 250 0.18": ks_rule(250, 0.18),
        "ks 300 0.155": ks_rule(300, 0.155),
        "rank z 3.67": rank_rule(3.67),
        "rank z 3.67 or ks 0.20": rank_rule(3.67, with_ks=0.20),
        "cusum k 0.05 h 4": cusum_rule(0.05, 4),
        "cusum k 0.10 h 4": cusum_rule(0.10, 4),
        "cusum k 0.10 h 8": cusum_rule(0.10, 8),
        "cusum k 0.05 h 12": cusum_rule(0.05, 12),
    }
    print(f"| rule | streams with a false alarm (of {args.streams} per seed) | "
          + " | ".join(f"{name} (median, seeds {'/'.join(map(str, range(len(seeds))))})" for name in SHIFTS) + " |")
    print("|---|---|" + "---|" * len(SHIFTS))
    for label, rule in rules.items():
        false_alarms, delays = evaluate(rule, seeds, args.streams)
        shown = lambda d: "false alarm" if d < 0 else ("never" if d == 9999 else str(d))  # noqa: E731
        cells = [" / ".join(shown(delays[(s, name)]) for s in range(len(seeds))) for name in SHIFTS]
        print(f"| {label} | {' / '.join(map(str, false_alarms))} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
