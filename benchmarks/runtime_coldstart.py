"""Print cold-start cost (import + load + first prediction, fresh process) and RSS over many predictions.

Uses the int8 MobileNetV3-Small of runtime_overhead.py (built with TensorFlow on first use).

    .venv/bin/python benchmarks/runtime_coldstart.py [--model M.tflite] [--repeats 5] [--predictions 10000]
                                                     [--compare-probe] [--markdown FILE] [--allow-busy]

``--compare-probe`` also times, interleaved with the default processes (the model already in the
probe cache), processes with an empty probe cache (the first load of a model on a machine: a
child process builds and runs it first, see ``edgetl_runtime/probe.py``) and with
``EDGETL_PROBE=0``, and prints the medians side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_state_options, start  # noqa: E402

CHILD = r"""
import sys, time, json
t0 = time.perf_counter()
import edgetl_runtime
t1 = time.perf_counter()
model = edgetl_runtime.load(sys.argv[1], threads=int(sys.argv[3]))
t2 = time.perf_counter()
model.predict(sys.argv[2])
t3 = time.perf_counter()
from edgetl_runtime.bench import memory_mb
print(json.dumps({"import": (t1 - t0) * 1e3, "load": (t2 - t1) * 1e3, "first": (t3 - t2) * 1e3,
                  "rss": memory_mb()[1]}))
"""

COLD_ROWS = (("import", "import edgetl_runtime (ms)"), ("load", "load() (ms)"),
             ("first", "first predict, 640x480 JPEG (ms)"), ("process", "whole process, python start to exit (ms)"),
             ("rss", "RSS after first predict (MB)"))


def main() -> int:
    from runtime_overhead import DEFAULT_CACHE, build_mobilenet_v3_small_int8

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where the built model is cached")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes to time")
    parser.add_argument("--predictions", type=int, default=10_000, help="predictions for the RSS-growth run")
    parser.add_argument("--compare-probe", action="store_true", help="also time EDGETL_PROBE=0 processes, interleaved")
    parser.add_argument("--json", dest="json_out", type=Path, default=None, help="write every figure to this JSON file")
    add_state_options(parser)
    args = parser.parse_args()
    path = args.model or build_mobilenet_v3_small_int8(args.cache_dir)

    from edgetl_runtime.bench import memory_mb, synthetic_image

    image = path.parent / "coldstart.jpg"
    image.write_bytes(synthetic_image())
    bench = start(args)
    import tempfile

    scratch = Path(tempfile.mkdtemp())
    sides: dict[str, list[dict]] = {"cached": [], "first": [], "off": []}

    def fresh_process(side: str, i: int) -> dict:
        env = dict(os.environ)
        if side == "off":
            env["EDGETL_PROBE"] = "0"
        elif side == "first":
            env["EDGETL_PROBE_CACHE"] = str(scratch / f"empty-{i}")  # nothing probed yet
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(image), str(args.threads)],
                             capture_output=True, text=True, check=True, env=env)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["process"] = (time.perf_counter() - t0) * 1e3
        return row

    fresh_process("cached", -1)  # puts the model in the probe cache
    names = list(sides) if args.compare_probe else ["cached"]
    for i in range(args.repeats):
        for side in names[i % len(names):] + names[: i % len(names)]:  # the order rotates
            sides[side].append(fresh_process(side, i))
    rows, unprobed = sides["cached"], sides["off"]
    medians = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    print(f"cold start, {path.name}, threads={args.threads}, median of {args.repeats} fresh processes:")
    for key, label in COLD_ROWS:
        print(f"  {label:38}{medians[key]:9.1f}")
    if args.compare_probe:
        first = {key: statistics.median(r[key] for r in sides["first"]) for key in rows[0]}
        off = {key: statistics.median(r[key] for r in unprobed) for key in rows[0]}
        print(f"  {'':38}{'cached':>9}{'first':>9}{'off':>9}  (probe: model in the cache / first load / EDGETL_PROBE=0)")
        for key, label in COLD_ROWS[:4]:
            print(f"  {label:38}{medians[key]:9.1f}{first[key]:9.1f}{off[key]:9.1f}")

    import edgetl_runtime

    model = edgetl_runtime.load(path, threads=args.threads)
    data = image.read_bytes()
    model.predict(data)
    first = memory_mb()[1]
    marks = {}
    t0 = time.perf_counter()
    for i in range(1, args.predictions + 1):
        model.predict(data)
        if i in (100, 1000) or i % 2500 == 0 or i == args.predictions:
            marks[i] = memory_mb()[1]
    elapsed = time.perf_counter() - t0
    last = max(marks, default=0)  # --predictions 0: no run
    growth = marks.get(last, first) - marks.get(1000, first)
    rate = args.predictions / max(elapsed, 1e-9)
    print(f"RSS over {args.predictions} predictions of a 640x480 JPEG ({rate:.0f} img/s):")
    print(f"  after 1: {first:.1f} MB; " + "; ".join(f"after {i}: {mb:.1f} MB" for i, mb in marks.items()))
    print(f"  growth after the first 1000: {growth:+.1f} MB")

    table = "\n".join([
        f"Cold start of {path.name}, threads={args.threads}: median of {args.repeats} fresh processes; RSS over "
        f"{args.predictions} predictions of a 640x480 JPEG.", "",
        "| measure | result |", "|---|---:|",
        *(f"| {label} | {medians[key]:.1f} |" for key, label in COLD_ROWS),
        *(f"| {label}, {name} | {statistics.median(r[key] for r in sides[side]):.1f} |"
          for side, name in (("first", "first load (empty probe cache)"), ("off", "EDGETL_PROBE=0"))
          for key, label in COLD_ROWS[:4] if sides[side]),
        f"| RSS after 1 / after {last} predictions (MB) | {first:.1f} / {marks.get(last, first):.1f} |",
        f"| RSS growth after the first 1000 predictions (MB) | {growth:+.1f} |",
    ]) + "\n"
    print("\n" + table)
    bench.end()
    if args.json_out:
        from edgetl_runtime.atomic import write_json

        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json_out, {"model": path.name, "threads": args.threads, "cold_start_ms": medians,
                                   "processes": sides, "rss_mb": {"1": first, **{str(i): mb for i, mb in marks.items()}},
                                   "rss_growth_mb": growth, "machine": bench.machine()})
    return bench.finish(table)


if __name__ == "__main__":
    sys.exit(main())
