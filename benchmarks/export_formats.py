"""Every format x quantization of a run, side by side, with the issue's targets checked as ratios.

Usage::

    python benchmarks/export_formats.py RUN_DIR --data TEST_FOLDER [--runs 100] [--profile cpu-x86_64] [--markdown FILE]

Runs :func:`edgetl.benchmark.benchmark` (export, validation through the runtime, latency on this
host, all in one process so the rows are comparable) and prints its Markdown table, then the
ratios the export targets are stated in: int8 size / fp32 size, accuracy loss of PTQ int8 and QAT,
TFLite int8 p50 / TFLite fp32 p50, and ONNX int8 p50 / TFLite int8 p50.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _common import add_state_options, start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--data", required=True, help="labelled test folder")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--profile", default="cpu-x86_64")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads [the profile's]")
    parser.add_argument("--json", dest="json_out", default=None)
    add_state_options(parser)
    args = parser.parse_args()

    from edgetl.benchmark import benchmark

    bench = start(args)
    table = benchmark(args.run_dir, profile=args.profile, data=args.data, runs=args.runs, threads=args.threads,
                      progress=lambda line: print(line, flush=True))
    print(f"\n{table.to_markdown()}")
    inference = "\n".join(f"- {r.format} {r.quantization}: inference p50 {r.inference_p50_ms:.2f} ms, end to end "
                          f"{r.p50_ms:.2f} ms" for r in table.rows if r.ok)  # fmt: skip
    print(inference)
    rows = {(r.format, r.quantization): r for r in table.rows if r.ok}

    def ratio(a, b, field):
        if a in rows and b in rows and getattr(rows[b], field):
            return getattr(rows[a], field) / getattr(rows[b], field)
        return None

    checks = {
        "int8 size / fp32 size (target <= 0.30)": ratio(("tflite", "int8"), ("tflite", "fp32"), "size_bytes"),
        "TFLite int8 p50 / fp32 p50, end to end (target <= 0.5)": ratio(("tflite", "int8"), ("tflite", "fp32"), "p50_ms"),
        "TFLite int8 / fp32 inference p50": ratio(("tflite", "int8"), ("tflite", "fp32"), "inference_p50_ms"),
        "ONNX int8 / fp32 inference p50": ratio(("onnx", "int8"), ("onnx", "fp32"), "inference_p50_ms"),
        "ONNX int8 p50 / TFLite int8 p50 (target <= 1.5)": ratio(("onnx", "int8"), ("tflite", "int8"), "p50_ms"),
    }
    for quant, target in (("int8", 1.0), ("qat", 0.5)):
        row = rows.get(("tflite", quant))
        if row is not None and row.accuracy_delta is not None:
            checks[f"TFLite {quant} accuracy delta vs float, points (target >= -{target})"] = row.accuracy_delta
    check_lines = "\n".join(f"- {name}: {'n/a' if value is None else f'{value:.3f}'}" for name, value in checks.items())
    print(f"\n{check_lines}\n")
    bench.end()
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"table": table.to_dict(), "checks": checks,
                                                   "machine": bench.machine()}, indent=2, default=str))
    return bench.finish(f"{table.to_markdown()}\n{inference}\n\n{check_lines}\n")


if __name__ == "__main__":
    sys.exit(main())
