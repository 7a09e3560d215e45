"""Soak the runtime: many predictions from many threads on one model; answers must not drift, memory must not grow.

Each thread predicts on a fixed set of images (decoded files and arrays, in turn) and every answer
is compared with the serial answer for the same image. The RSS is read after a warm-up and at the
end; the growth in between is what a leak would show.

    .venv/bin/python benchmarks/soak.py [--predictions 10000] [--threads 16] [--model seed_int8.tflite] [--json F]

The models and images are the fuzz seeds (``benchmarks/fuzz.py``), built on first use in the cache.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzz import DEFAULT_CACHE, build_corpus  # noqa: E402


def _rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--predictions", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--model", default="seed_int8.tflite", help="a model of the fuzz seeds: seed_int8.tflite, seed_fp32.tflite, seed.onnx")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    corpus = build_corpus(args.cache_dir)
    import edgetl_runtime
    from edgetl_runtime.host import machine_state

    state = machine_state()
    print(f"soak: {state.summary()}", file=sys.stderr)
    rss_start = _rss_mb()
    model = edgetl_runtime.load(args.cache_dir / args.model, threads=1)
    rng = np.random.default_rng(0)
    inputs: list = [str(p) for p in corpus.images] + [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(11)]
    serial = [model.predict(x).probabilities.to_dict() for x in inputs]
    for i in range(500):
        model.predict(inputs[i % len(inputs)])
    rss_warm = _rss_mb()
    per_thread = args.predictions // args.threads

    def worker(offset: int) -> int:
        wrong = 0
        for i in range(per_thread):
            k = (offset + i) % len(inputs)
            wrong += model.predict(inputs[k]).probabilities.to_dict() != serial[k]
        return wrong

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        wrong = sum(pool.map(worker, range(args.threads)))
    seconds = time.perf_counter() - t0
    total = per_thread * args.threads
    result = {
        "model": args.model, "predictions": total, "threads": args.threads, "differing_from_serial": wrong,
        "rss_start_mb": round(rss_start, 1), "rss_after_warmup_mb": round(rss_warm, 1), "rss_end_mb": round(_rss_mb(), 1),
        "peak_rss_mb": round(_rss_mb("VmHWM"), 1), "seconds": round(seconds, 1), "machine": state.to_dict(),
    }
    growth = result["rss_end_mb"] - result["rss_after_warmup_mb"]
    print(f"{total} predictions on {args.threads} threads ({args.model}): {wrong} differ from serial; "
          f"RSS {result['rss_after_warmup_mb']:.0f} MB after warm-up -> {result['rss_end_mb']:.0f} MB at the end "
          f"({growth:+.1f} MB), peak {result['peak_rss_mb']:.0f} MB; {seconds:.1f} s")
    if args.json:
        from edgetl_runtime.atomic import write_json

        write_json(args.json, result)
    return 1 if wrong or growth > 16 else 0


if __name__ == "__main__":
    sys.exit(main())
