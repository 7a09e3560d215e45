"""The drift alarm on ELPV: false alarms on parts like the validation data, delay on shifted parts (issue 26).

    python benchmarks/drift.py MODEL RUN TEST_DIR [--streams 5] [--parts 10000]

MODEL is an exported file, RUN its run folder, TEST_DIR the held-out test split. The reference is
made as ``edgetl export`` makes it: the file's defect scores on the run's validation images. Then
the file scores every test image as it is and shifted (darkened to 60 %, blurred with a 2-pixel
Gaussian, rotated by 10 degrees, turned upside down), and the station's own monitor
(:class:`edgetl_runtime.line.drift.DriftMonitor`, window 200; ``--statistic psi`` for the PSI alarm
it replaced, ``--on`` for another limit) is fed streams of those scores:

- *in distribution*: ``--streams`` streams of ``--parts`` test parts drawn at random (with
  replacement): how many times does the alarm go on?
- *shifted*: 1000 test parts, then the shifted parts: after how many shifted parts does it go on?
  (median and worst over the streams; ``never`` when it did not within 2000)
- *defect rate*: 1000 test parts, then parts at twice the test split's defect rate.

No timing: the figures do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

SHIFTS = {
    "darkened to 60 %": lambda im: Image.eval(im, lambda v: int(v * 0.6)),
    "darkened to 40 %": lambda im: Image.eval(im, lambda v: int(v * 0.4)),
    "blurred (Gaussian, 2 px)": lambda im: im.filter(ImageFilter.GaussianBlur(2)),
    "rotated 10 degrees": lambda im: im.rotate(10, resample=Image.Resampling.BILINEAR, fillcolor=0),
    "upside down": lambda im: im.rotate(180),
}


def scores(model, images: list[Path], transform=None) -> np.ndarray:
    out = []
    for path in images:
        with Image.open(path) as image:
            image = image.convert("RGB")
            out.append(model.predict(np.asarray(transform(image) if transform else image)).defect_score)
    return np.asarray(out)


def first_alarm(monitor_args: tuple, before: np.ndarray, after: np.ndarray) -> int | None:
    """Return after how many of the ``after`` scores the alarm went on (None: never); it must stay off during ``before``."""
    from edgetl_runtime.line.drift import DriftMonitor

    monitor = DriftMonitor(*monitor_args)
    for s in before:
        monitor.update(s)
    if monitor.state == "drift":
        return -1  # already on before the shift: a false alarm, reported as such
    for i, s in enumerate(after, 1):
        if monitor.update(s) == "drift":
            return i
    return None


def main(argv: list[str] | None = None) -> int:
    import edgetl_runtime
    from edgetl_runtime.line.drift import WINDOW, DriftMonitor, reference

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("run", type=Path)
    parser.add_argument("test", type=Path)
    parser.add_argument("--streams", type=int, default=5)
    parser.add_argument("--parts", type=int, default=10_000)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--on", type=float, default=None,
                        help="the statistic's value that turns the alarm on [the station's: KS 2.3 * sqrt(1/n + 1/window), 0.20 for 393 images and 200 parts; PSI 0.30]")
    parser.add_argument("--window", type=int, default=None, help="parts in the window [the station's, 200]")
    parser.add_argument("--statistic", choices=("ks", "psi"), default="ks",
                        help="what raises the alarm: ks, the station's (the Kolmogorov-Smirnov distance at the "
                             "reference's deciles), or psi, measured against it [ks]")  # fmt: skip
    parser.add_argument("--scores-cache", type=Path, default=None,
                        help="a .npz to keep the file's scores in (validation, test, shifted): a rerun with another "
                             "statistic or limit does not score the images again")  # fmt: skip
    args = parser.parse_args(argv)
    model = edgetl_runtime.load(args.model)
    val = [Path(p) for p, _ in json.loads((args.run / "split.json").read_text())["val"]]
    cache = dict(np.load(args.scores_cache)) if args.scores_cache and args.scores_cache.is_file() else {}
    if "val" not in cache:
        cache["val"] = scores(model, val)
    ref = reference(cache["val"])
    monitor_args = (ref, args.window or WINDOW, args.on, None, "the validation images", args.statistic)
    test = sorted(args.test.rglob("*.png"))
    is_defect = np.array(["defect" in p.parent.name for p in test])
    if "test" not in cache:
        cache["test"] = scores(model, test)
    base = cache["test"]
    rng = np.random.default_rng(0)
    results: dict = {"reference_images": len(val), "test_images": len(test), "window": args.window or WINDOW,
                     "on": args.on, "statistic": args.statistic}  # fmt: skip

    alarms, peak = [], []
    for _ in range(args.streams):
        monitor, ons, top = DriftMonitor(*monitor_args), 0, 0.0
        for s in rng.choice(base, args.parts):
            ons += monitor.update(s) == "drift"
            top = max(top, monitor.value or 0.0)
        alarms.append(ons)
        peak.append(top)
    results["in_distribution"] = {"streams": args.streams, "parts_each": args.parts, "alarms": alarms,
                                  "max_value": [round(p, 3) for p in peak]}  # fmt: skip
    for i, (name, fn) in enumerate(SHIFTS.items()):
        if f"shift{i}" not in cache:
            cache[f"shift{i}"] = scores(model, test, fn)
    shifted = {name: cache[f"shift{i}"] for i, name in enumerate(SHIFTS)}
    if args.scores_cache:
        np.savez(args.scores_cache, **cache)
    doubled = lambda n: np.r_[rng.choice(base[is_defect], n // 2), rng.choice(base[~is_defect], n - n // 2)]  # noqa: E731
    shifted_streams = {**{name: (lambda n, v=v: rng.choice(v, n)) for name, v in shifted.items()},
                       f"defect rate {2 * is_defect.mean():.0%} (test split: {is_defect.mean():.0%})": doubled}  # fmt: skip
    delays = {}
    for name, draw in shifted_streams.items():
        found = [first_alarm(monitor_args, rng.choice(base, 1000), draw(2000)) for _ in range(20)]
        done = sorted(d for d in found if d is not None and d > 0)
        delays[name] = {"median": int(np.median(done)) if done else None, "worst": max(done) if done else None,
                        "never": sum(d is None for d in found), "false_before": sum(d == -1 for d in found),
                        "mean_score": round(float(np.mean(shifted.get(name, base))), 3)}  # fmt: skip
    results["shifted"] = delays
    results["test_mean_score"] = round(float(base.mean()), 3)
    print(json.dumps(results, indent=2))
    print("\n| stream | alarm after (median / worst of 20 streams) |\n|---|---|")
    print(f"| {args.streams} x {args.parts} test parts (in distribution) | {sum(alarms)} alarms; max {args.statistic.upper()} "
          f"{max(peak):.3f} |")  # fmt: skip
    for name, d in delays.items():
        shown = "never" if d["median"] is None else f"{d['median']} / {d['worst']} parts"
        extra = f" ({d['never']} of 20 never)" if d["never"] and d["median"] is not None else ""
        print(f"| {name} | {shown}{extra} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
