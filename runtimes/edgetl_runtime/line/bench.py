"""``edgetl-runtime bench MODEL --pipeline DIR``: what the station's pipeline buys over a predict loop.

Three runs over the same parts (the images of DIR, cycled to ``--runs`` parts), one after another:

1. *inference only*: the engine on pixels decoded beforehand, the ceiling of any station;
2. *sequential*: ``model.predict(path)`` in a loop, decoding and inference taking turns on one thread;
3. *pipelined*: the station itself (:class:`~edgetl_runtime.line.Line`) from a queue source to its
   history, decoding in worker threads while the engine runs.

It reports the throughput of each, the pipeline's **efficiency** (pipelined ÷ inference only: how
close the station comes to the engine), its speed-up over the sequential loop, the per-stage
p50/p99 latencies, and that every part has exactly one history row (lost and duplicated: 0).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from .parts import Part, Stop


class ListSource:
    """A queue source over a fixed list of image files, cycled to ``n`` parts (each part its own key)."""

    name, live = "bench", False

    def __init__(self, images: Sequence[Path], n: int):
        self.images, self.n = list(images), n

    def parts(self, stop: Stop) -> Iterator[Part]:
        for i in range(self.n):
            if stop.is_set():
                return
            path = self.images[i % len(self.images)]
            yield Part(source=self.name, part_id=path.name, image=str(path), key=str(i))

    def done(self, part: Part, result: object) -> None:
        pass

    def status(self) -> dict:
        return {"name": self.name, "kind": "list", "live": False, "parts": self.n}

    def close(self) -> None:
        pass


def pipeline_benchmark(model: Any, images: Sequence[Path], parts: int = 1000, decode_workers: int | None = None,
                       warmup: int = 20) -> dict[str, Any]:  # fmt: skip
    """Return the three runs' figures for a loaded ``model`` over ``images`` (see the module docstring)."""
    from .history import History
    from .pipeline import Line

    images = list(images)
    pixels = [model.pixels(p) for p in images[: min(len(images), 200)]]
    for i in range(warmup):
        model.predict_pixels(pixels[i % len(pixels)])
    began = time.perf_counter()
    for i in range(parts):
        model.predict_pixels(pixels[i % len(pixels)])
    inference_s = time.perf_counter() - began

    began = time.perf_counter()
    for i in range(parts):
        model.predict(images[i % len(images)])
    sequential_s = time.perf_counter() - began

    folder = Path(tempfile.mkdtemp(prefix="edgetl-pipeline-bench-"))
    try:
        line = Line(model, ListSource(images, parts), history=folder / "bench.sqlite", decode_workers=decode_workers)
        began = time.perf_counter()
        line.start()
        line.wait()
        pipelined_s = time.perf_counter() - began
        line.stop()
        status = line.status()
        history = History(folder / "bench.sqlite", readonly=True)
        try:
            rows = history.counts()["rows"]
        finally:
            history.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rate = lambda seconds: parts / seconds if seconds > 0 else float("inf")  # noqa: E731
    return {
        "parts": parts,
        "images": len(images),
        "threads": model.info.threads,
        "decode_workers": line.decode_workers,
        "inference_only_per_s": rate(inference_s),
        "sequential_per_s": rate(sequential_s),
        "pipelined_per_s": rate(pipelined_s),
        "efficiency": rate(pipelined_s) / rate(inference_s),
        "speedup_vs_sequential": rate(pipelined_s) / rate(sequential_s),
        "latency_ms": status["latency_ms"],
        "errors": status["errors"],
        "dropped": status["dropped"],
        "lost": parts - rows,
        "duplicates": status["duplicates"],
    }


def format_pipeline(report: dict[str, Any]) -> str:
    """Return the report as plain text: the three throughputs, the ratios, then the per-stage latencies."""
    lines = [f"{report['parts']} parts ({report['images']} images), {report['threads']} engine threads, "
             f"{report['decode_workers']} decoding threads",  # fmt: skip
             f"inference only   {report['inference_only_per_s']:8.1f} parts/s",
             f"sequential       {report['sequential_per_s']:8.1f} parts/s  (predict in a loop)",
             f"pipelined        {report['pipelined_per_s']:8.1f} parts/s  (the station, history included)",
             f"efficiency       {report['efficiency']:8.2f}  (pipelined / inference only)",
             f"vs sequential    {report['speedup_vs_sequential']:8.2f}x",
             f"lost {report['lost']}, duplicated {report['duplicates']}, dropped {report['dropped']}, "
             f"errors {report['errors']}",  # fmt: skip
             "stage            p50 ms    p99 ms"]
    for stage, p in report["latency_ms"].items():
        lines.append(f"{stage:14s} {p['p50']:8.2f}  {p['p99']:8.2f}")
    return "\n".join(lines)
