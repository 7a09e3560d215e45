"""Anomaly detection from good images on ELPV, through the product: ROC AUC of the run and of its int8 file, per seed.

The issue 13 protocol: ``edgetl train --task anomaly`` on the training split of each ELPV split
seed (only its good cells are fitted; 20 % of them are held out to set the threshold at 1 % false
alarms; the defect cells only add a validation AUC), then the test split scored by the float Keras
run and by the int8 TFLite export run through edgetl-runtime. Per seed: ROC AUC, false-alarm rate
on the good test cells and defect recall at the stored threshold, the int8 file's size, fit and
export time. ``--latency CLASSIFIER_RUN`` then times the last seed's int8 anomaly file against
the int8 export of a classifier run on the same backbone and input size, alternating, in this
process (run it on an idle machine).

    python benchmarks/anomaly.py --data data/elpv --out runs/bench-anomaly                # seeds 0, 1, 2
    python benchmarks/anomaly.py --seeds 0 --dims 100 --clusters 1 --name d100-k1
    python benchmarks/anomaly.py --seeds 0 --latency runs/bench-elpv/defaults/seed0 --no-fit
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _common import add_state_options, start


def _scores(model, pixels: np.ndarray) -> np.ndarray:
    return np.concatenate([model.scores(pixels[i : i + 32])[:, 1] for i in range(0, len(pixels), 32)])


def _seed_row(args, seed: int) -> dict:
    import edgetl_runtime
    from edgetl.anomaly.fit import AnomalyOptions, fit_run
    from edgetl.data import load_images, scan_dataset
    from edgetl.data.elpv import materialize_elpv
    from edgetl.exporters import ExportOptions, export
    from edgetl.exporters.validate import first_output
    from edgetl.run import load_run
    from edgetl_runtime.decision import roc_auc

    data = Path(f"{args.data}-seed{seed}")
    materialize_elpv(data, split=0.75, seed=seed, progress=False)
    run_dir = Path(args.out) / args.name / f"seed{seed}"
    options = AnomalyOptions(backbone=args.backbone, input_size=args.input_size, dims=args.dims,
                             clusters=args.clusters, flips=args.flips, top_area=args.top_area, seed=seed,
                             verbose=0)  # fmt: skip
    t0 = time.perf_counter()
    if not (run_dir / "model.keras").is_file():
        fit_run(data / "train", options, run_dir)
    fit_s = time.perf_counter() - t0
    run = load_run(run_dir)
    test_set = scan_dataset(data / "test")
    test = load_images(test_set, run.spec.input, progress=False)
    truth = test.truth(run.spec) == 1 - run.spec.good_indices[0]
    keras_model = run.load_model()
    float_scores = np.concatenate([first_output(keras_model(test.x[i : i + 32].astype(np.float32), training=False))[:, 1]
                                   for i in range(0, len(test.x), 32)])  # fmt: skip
    t0 = time.perf_counter()
    result = export(run, ExportOptions(quantization="int8", max_drop=100.0))
    export_s = time.perf_counter() - t0
    int8_scores = _scores(edgetl_runtime.load(result.path), test.x)
    row = {"seed": seed, "run": str(run_dir), "good_fitted": run.config["n_train"], "fit_seconds": round(fit_s, 1),
           "export_seconds": round(export_s, 1), "int8_mb": round(result.size_bytes / 1e6, 2),
           "statistics_mb": run.config["method"]["statistics_mb"]}  # fmt: skip
    for name, score in (("float", float_scores), ("int8", int8_scores)):
        row[f"{name}_auc"] = roc_auc(truth, score)
        row[f"{name}_false_alarms"] = float(np.mean(score[~truth] >= run.spec.threshold))
        row[f"{name}_recall"] = float(np.mean(score[truth] >= run.spec.threshold))
    return row


def _latency(args, anomaly_run: Path) -> str:
    from edgetl.exporters import ExportOptions, export
    from edgetl_runtime.bench import run_benchmark

    paths = {}
    for name, run in (("anomaly", anomaly_run), ("classifier", Path(args.latency))):
        target = run / "export" / "model-tflite-int8.tflite"
        if not target.is_file():
            export(run, ExportOptions(quantization="int8", max_drop=100.0, validate=False), target)
        paths[name] = target
    p50 = {name: [] for name in paths}
    for _ in range(args.rounds):  # alternate, so that a drift of the machine hits both alike
        for name, path in paths.items():
            p50[name].append(run_benchmark(path, runs=args.runs, warmup=10, threads=args.threads).stages["inference"].p50)
    a, c = statistics.median(p50["anomaly"]), statistics.median(p50["classifier"])
    sizes = {name: path.stat().st_size / 1e6 for name, path in paths.items()}
    return (f"| int8 TFLite, {args.threads or 'default'} threads | {c:.2f} ms ({sizes['classifier']:.1f} MB) | "
            f"{a:.2f} ms ({sizes['anomaly']:.1f} MB) | {a / c:.2f}x |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/elpv", help="ELPV is materialized in DATA-seedN")
    parser.add_argument("--out", default="runs/bench-anomaly", help="run folders go to OUT/NAME/seedN (reused)")
    parser.add_argument("--name", default="defaults")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated split seeds")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--dims", type=int, default=150, help="feature channels kept (random subset)")
    parser.add_argument("--clusters", type=int, default=2, help="kinds of good part per position")
    parser.add_argument("--flips", action="store_true", help="also fit the mirrored good cells")
    parser.add_argument("--top-area", type=float, default=0.025, help="share of the image averaged into its score")
    parser.add_argument("--no-fit", action="store_true", help="skip the AUC rows (with --latency)")
    parser.add_argument("--latency", default=None, help="a classifier run folder to time the int8 files against")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    add_state_options(parser)
    args = parser.parse_args()

    bench = start(args)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    if not args.no_fit:
        for seed in seeds:
            rows.append(_seed_row(args, seed))
            print(json.dumps(rows[-1]), flush=True)
    lines = []
    if rows:
        def mean_sd(key: str, fmt: str = ".4f") -> str:
            values = [r[key] for r in rows]
            return f"{statistics.mean(values):{fmt}}" + (f" ± {statistics.stdev(values):{fmt}}" if len(values) > 1 else "")

        name = (f"{args.backbone} {args.input_size or 'native'} px, {args.dims} dims, {args.clusters} kinds, "
                f"top area {args.top_area:g}"
                f"{', flips' if args.flips else ''}")  # fmt: skip
        lines += [f"ELPV anomaly detection from good cells only ({name}; recipe `{args.name}`), test splits of "
                  f"seeds {args.seeds}", "",
                  "| seed | good cells fitted | float ROC AUC | int8 ROC AUC | int8 false alarms | int8 recall | "
                  "int8 file | fit | export |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in rows:
            lines.append(f"| {r['seed']} | {r['good_fitted']} | {r['float_auc']:.4f} | {r['int8_auc']:.4f} | "
                         f"{r['int8_false_alarms']:.1%} | {r['int8_recall']:.1%} | {r['int8_mb']} MB | "
                         f"{r['fit_seconds']} s | {r['export_seconds']} s |")  # fmt: skip
        lines.append(f"| **mean ± sd** | | **{mean_sd('float_auc')}** | **{mean_sd('int8_auc')}** | "
                     f"{mean_sd('int8_false_alarms', '.3f')} | {mean_sd('int8_recall', '.3f')} | | | |")
    if args.latency:
        anomaly_run = Path(args.out) / args.name / f"seed{seeds[-1]}"
        lines += ["", "| inference p50 (median of rounds) | classifier | anomaly detector | ratio |", "|---|---|---|---|",
                  _latency(args, anomaly_run)]  # fmt: skip
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    bench.end()
    return bench.finish(table)


if __name__ == "__main__":
    sys.exit(main())
