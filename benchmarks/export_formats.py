"""Export a run to every format x quantization and print size, accuracy and CPU latency as Markdown.

Usage::

    python benchmarks/export_formats.py RUN_DIR --data TEST_FOLDER [--out DIR] [--runs 50]

For each (format, quantization): file size, test accuracy through the runtime, accuracy delta vs
the float Keras model on the same images, and p50 single-image latency on this CPU (one thread,
after warm-up). All exports are made in one process so the numbers sit side by side.

>>> COMBOS[0]
('tflite', 'fp32')
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

COMBOS = [
    ("tflite", "fp32"), ("tflite", "fp16"), ("tflite", "dynamic"), ("tflite", "int8"), ("tflite", "qat"),
    ("edgetpu", "int8"), ("onnx", "fp32"), ("onnx", "fp16"), ("onnx", "int8"),
]  # fmt: skip


def p50_latency_ms(model, pixels: np.ndarray, runs: int) -> float:
    """Return the median latency (ms) of one-image ``model.scores`` calls after 5 warm-up calls."""
    for i in range(5):
        model.scores(pixels[i % len(pixels)][None])
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        model.scores(pixels[i % len(pixels)][None])
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="labelled test images (<label>/ subfolders)")
    parser.add_argument("--out", type=Path, default=None, help="where to keep the exported files (default: a temp dir)")
    parser.add_argument("--runs", type=int, default=50, help="timed single-image runs per model")
    parser.add_argument("--samples", type=int, default=500, help="at most this many test images")
    args = parser.parse_args(argv)

    import edgetl_runtime
    from edgetl.export import ExportOptions, export
    from edgetl.export.samples import folder_entries, load_samples
    from edgetl.export.validate import reference_scores
    from edgetl.run import load_run

    run = load_run(args.run_dir)
    test = load_samples(folder_entries(args.data), run.input_size, run.color_mode, run.labels, args.samples, str(args.data))
    known = [i for i, label in enumerate(test.labels) if label is not None]
    truth = np.asarray([test.labels[i] for i in known])
    float_acc = float(np.mean(reference_scores(run.load_model(), test.pixels)[known].argmax(1) == truth)) if known else float("nan")
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="edgetl-bench-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for fmt, quant in COMBOS:
        options = ExportOptions(format=fmt, quantization=quant, val_data=args.data, fail_on_validation=False)
        path = out_dir / f"model-{fmt}-{quant}{options.suffix}"
        try:
            result = export(run, options, path)
        except Exception as exc:  # one failing combination must not hide the others
            rows.append((fmt, quant, f"failed: {exc.__class__.__name__}", "", "", "", ""))
            continue
        model = edgetl_runtime.load(path, device="cpu", threads=1)
        acc = float(np.mean(model.scores(test.pixels)[known].argmax(1) == truth)) if known else float("nan")
        rows.append((fmt, quant, f"{result.size_bytes / 1024:.1f}", f"{acc:.4f}", f"{acc - float_acc:+.4f}",
                     f"{p50_latency_ms(model, test.pixels, args.runs):.2f}",
                     "pass" if result.report.passed else "FAIL"))  # fmt: skip
    print(f"Run `{args.run_dir}`, test set `{args.data}` ({len(test)} images), float Keras accuracy {float_acc:.4f}\n")
    print("| format | quant | size (KiB) | accuracy | delta vs float | p50 latency (ms, 1 thread) | validation |")
    print("|---|---|---:|---:|---:|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
