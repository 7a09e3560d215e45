"""Soak the station: a ``serve`` process deciding 100,000 parts from a folder; its memory must stay flat.

    python benchmarks/soak_line.py MODEL IMAGES_DIR --parts 100000 [--work runs/soak-line]

A writer thread feeds the watched folder as a camera PC does (a dot-name, then a rename into
place), copying the images of IMAGES_DIR in turn, never more than 200 files ahead of the station;
the station moves each decided file to a done folder, which this script empties. Sinks: jsonl and
a rejects folder under a 50 MB quota, besides the history. Every 5 s it reads the station's RSS
(``/proc/PID/status``) and how many rows the history holds. At the end: the RSS after the warm-up,
at the half and at the end, the growth between, the history's bytes per part, and whether every
part has exactly one row (lost and duplicated parts: 0).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_state_options, start  # noqa: E402

AHEAD = 200


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def rows(history: Path) -> int:
    if not history.exists():
        return 0
    with sqlite3.connect(f"file:{history}?mode=ro", uri=True, timeout=10) as db:
        return db.execute("SELECT count(*) FROM results").fetchone()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("images", type=Path)
    parser.add_argument("--parts", type=int, default=100_000)
    parser.add_argument("--work", type=Path, default=Path("runs/soak-line"))
    add_state_options(parser)
    args = parser.parse_args(argv)
    images = sorted(p for p in args.images.rglob("*.png"))
    if not images:
        parser.error(f"no .png images in {args.images}")
    shutil.rmtree(args.work, ignore_errors=True)
    incoming, done = args.work / "incoming", args.work / "done"
    incoming.mkdir(parents=True)
    history = args.work / "history.sqlite"
    bench = start(args)
    runtime = str(Path(sys.executable).parent / "edgetl-runtime")
    proc = subprocess.Popen([runtime, "serve", str(args.model), "--source", f"dir:{incoming}?settle_ms=0&move={done}",
                             "--history", str(history), "--sink", f"jsonl:{args.work / 'results.jsonl'}",
                             "--sink", f"rejects:{args.work / 'rejects'}?quota_mb=50", "--no-http"],
                            stderr=open(args.work / "serve.log", "w"))  # fmt: skip
    written = [0]

    def writer() -> None:
        while written[0] < args.parts and proc.poll() is None:
            if written[0] - rows(history) >= AHEAD:
                time.sleep(0.05)
                continue
            for _ in range(50):
                if written[0] >= args.parts:
                    break
                i = written[0]
                name = f"part{i:07d}.png"
                shutil.copyfile(images[i % len(images)], incoming / f".{name}")
                os.replace(incoming / f".{name}", incoming / name)
                written[0] += 1
            if done.exists():
                for path in done.iterdir():
                    path.unlink()

    thread = threading.Thread(target=writer, daemon=True)
    began = time.monotonic()
    thread.start()
    samples = []
    while proc.poll() is None:
        count = rows(history)
        samples.append((round(time.monotonic() - began, 1), count, round(rss_mb(proc.pid), 1)))
        print(f"{samples[-1][0]:8.1f} s  {count:7d} parts  RSS {samples[-1][2]:7.1f} MB", flush=True)
        if count >= args.parts:
            break
        time.sleep(5)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(120)
    bench.end()
    total = rows(history)
    with sqlite3.connect(history) as db:
        distinct = db.execute("SELECT count(DISTINCT key) FROM results").fetchone()[0]
    warm = next(s for s in samples if s[1] >= min(5000, args.parts // 10))
    half = next(s for s in samples if s[1] >= args.parts // 2)
    end = samples[-1]
    report = {
        "parts": args.parts, "rows": total, "distinct_files": distinct, "lost": args.parts - distinct,
        "duplicated": total - distinct, "exit_code": code, "seconds": round(time.monotonic() - began, 1),
        "rss_mb": {"after_warmup": warm[2], "half": half[2], "end": end[2]},
        "rss_growth_mb": {"warmup_to_half": round(half[2] - warm[2], 1), "half_to_end": round(end[2] - half[2], 1)},
        "history_bytes_per_part": round(history.stat().st_size / max(total, 1), 1),
        "samples": samples, "machine": bench.machine(),
    }  # fmt: skip
    (args.work / "soak.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k not in ("samples", "machine")}, indent=2))
    return 0 if report["lost"] == 0 and report["duplicated"] == 0 and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
