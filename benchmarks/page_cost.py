"""What the operator's page costs the station: serve's CPU time per part with and without a page open (issue 26).

    python benchmarks/page_cost.py MODEL IMAGES_DIR [--rate 20] [--seconds 60] [--rounds 2]

A ``serve`` process watches a folder that a writer fills at ``--rate`` parts per second (each image
renamed into place, moved away once decided). In alternating periods of ``--seconds`` the page is
closed, then open in headless Chromium (Debian's, driven by Playwright): the page polls the status
every second and the scores, history and images every few seconds, as on the line. For each period
the station's own CPU time (user + system, ``/proc/PID/stat``) is divided by the parts it decided in
that period. The browser's CPU is not the station's: on the line it runs on another machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_state_options, start  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def decided(history: Path) -> int:
    with sqlite3.connect(f"file:{history}?mode=ro", uri=True, timeout=10) as db:
        return db.execute("SELECT count(*) FROM results").fetchone()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("images", type=Path)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("runs/page-cost"))
    add_state_options(parser)
    args = parser.parse_args(argv)
    images = sorted(args.images.rglob("*.png"))
    shutil.rmtree(args.work, ignore_errors=True)
    incoming, done = args.work / "in", args.work / "done"
    incoming.mkdir(parents=True)
    history = args.work / "history.sqlite"
    port = 18765
    runtime = str(Path(sys.executable).parent / "edgetl-runtime")
    bench = start(args)
    proc = subprocess.Popen([runtime, "serve", str(args.model), "--source", f"dir:{incoming}?settle_ms=0&move={done}",
                             "--history", str(history), "--http", f"127.0.0.1:{port}", "--sink",
                             f"rejects:{args.work / 'rejects'}?quota_mb=20"], stderr=open(args.work / "serve.log", "w"))  # fmt: skip
    stop = threading.Event()

    def writer() -> None:
        i, began = 0, time.monotonic()
        while not stop.is_set():
            name = f"p{i:07d}.png"
            shutil.copyfile(images[i % len(images)], incoming / f".{name}")
            os.replace(incoming / f".{name}", incoming / name)
            i += 1
            if done.exists() and i % 100 == 0:
                for path in done.iterdir():
                    path.unlink()
            stop.wait(max(0.0, began + i / args.rate - time.monotonic()))

    from playwright.sync_api import sync_playwright

    time.sleep(5)  # the station loads its model
    threading.Thread(target=writer, daemon=True).start()
    time.sleep(10)  # warm-up: steady rate
    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--disable-sync"])  # fmt: skip
        for round_ in range(args.rounds):
            for with_page in (False, True):
                page = browser.new_page() if with_page else None
                if page is not None:
                    page.goto(f"http://127.0.0.1:{port}/")
                c0, n0 = cpu_s(proc.pid), decided(history)
                time.sleep(args.seconds)
                c1, n1 = cpu_s(proc.pid), decided(history)
                if page is not None:
                    page.close()
                rows.append((round_, with_page, n1 - n0, (c1 - c0) * 1000 / max(n1 - n0, 1)))
                print(f"round {round_} page {'open  ' if with_page else 'closed'}: {n1 - n0} parts, "
                      f"{rows[-1][3]:.2f} ms CPU per part", flush=True)
        browser.close()
    stop.set()
    proc.terminate()
    proc.wait(60)
    bench.end()
    closed = [r[3] for r in rows if not r[1]]
    opened = [r[3] for r in rows if r[1]]
    figures = (f"| page | CPU per part (ms), each period | mean |\n|---|---|---|\n"
               f"| closed | {' / '.join(f'{v:.2f}' for v in closed)} | {sum(closed) / len(closed):.2f} |\n"
               f"| open | {' / '.join(f'{v:.2f}' for v in opened)} | {sum(opened) / len(opened):.2f} |\n\n"
               f"The page costs {sum(opened) / len(opened) - sum(closed) / len(closed):+.2f} ms of the station's CPU per "
               f"part at {args.rate:g} parts/s.")  # fmt: skip
    print(figures)
    return bench.finish(figures)


if __name__ == "__main__":
    sys.exit(main())
