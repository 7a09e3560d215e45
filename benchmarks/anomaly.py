"""Anomaly detection from good images on ELPV: ROC AUC of the float graph and of int8 TFLite, per split seed.

The issue 13 protocol: fit on the *good* cells of each ELPV training split only (no defect label is
used), score every cell of the test split, and report the image ROC AUC (defect vs good) of the
float model and of the full-integer int8 TFLite file run by LiteRT, with the statistics' size, the
int8 file's size and the fit time. The int8 file is calibrated on 100 good training cells plus a
copy of each with a synthetic defect (``edgetl.anomaly.with_synthetic_anomalies``).

    python benchmarks/anomaly.py                                  # seeds 0, 1, 2; Lite0 224 px, 150 dims, 2 kinds
    python benchmarks/anomaly.py --dims 100 --clusters 1 --seeds 0
    python benchmarks/anomaly.py --backbone efficientnet_lite2 --input-size 260

This measures the method (``edgetl.anomaly``); ``edgetl train --task anomaly`` and the runtime's
support for anomaly files come next (issue 13).
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


def _litert_scores(blob: bytes, images: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=blob, num_threads=2)
    interpreter.allocate_tensors()
    (image,) = interpreter.get_input_details()
    out = min(interpreter.get_output_details(), key=lambda o: len(o["shape"]))  # (1, 1) score, not the map
    scale, zero = out["quantization"]
    scores = []
    for x in images:
        interpreter.set_tensor(image["index"], x[None].astype(image["dtype"]))
        interpreter.invoke()
        value = float(interpreter.get_tensor(out["index"]).reshape(-1)[0])
        scores.append((value - zero) * scale if scale else value)
    return np.array(scores)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/elpv", help="ELPV is materialized in DATA-seedN")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated split seeds")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--dims", type=int, default=150, help="feature channels kept (random subset)")
    parser.add_argument("--clusters", type=int, default=2, help="kinds of good part per position")
    parser.add_argument("--shrinkage", type=float, default=0.1)
    parser.add_argument("--no-int8", action="store_true", help="float ROC AUC only")
    add_state_options(parser)
    args = parser.parse_args()

    from edgetl.anomaly import (anomaly_model, extract_features, feature_extractor, fit_padim, image_scores,
                                score_maps, with_synthetic_anomalies)
    from edgetl.backbones import load_backbone
    from edgetl.data import load_images, scan_dataset
    from edgetl.data.elpv import materialize_elpv
    from edgetl.exporters import ExportOptions
    from edgetl.exporters.tflite import convert
    from edgetl_runtime.contract import InputSpec
    from edgetl_runtime.decision import roc_auc

    bench = start(args)
    extractor = feature_extractor(load_backbone(args.backbone, input_size=args.input_size), args.backbone)
    spec = InputSpec(height=args.input_size, width=args.input_size, color_mode="rgb", resize="bilinear",
                     normalization="model")
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        data = Path(f"{args.data}-seed{seed}")
        materialize_elpv(data, split=0.75, seed=seed, progress=False)
        train_set, test_set = scan_dataset(data / "train"), scan_dataset(data / "test")
        good_id = train_set.classes.index("good")
        train = load_images(train_set, spec, progress=False)
        test = load_images(test_set, spec, progress=False)
        good = train.x[train.y == good_id]
        is_defect = test.y != test_set.classes.index("good")
        t0 = time.perf_counter()
        stats = fit_padim(extract_features(extractor, good), dims=args.dims, clusters=args.clusters,
                          shrinkage=args.shrinkage, seed=seed)
        fit_s = time.perf_counter() - t0
        row = {"seed": seed, "good_images": int(len(good)), "fit_seconds": round(fit_s, 1),
               "stats_mb": round(stats.nbytes / 1e6, 1), "clusters": list(stats.cluster_sizes),
               "float_auc": roc_auc(is_defect, image_scores(score_maps(stats, extract_features(extractor, test.x))))}
        if not args.no_int8:
            model = anomaly_model(extractor, stats)
            picked = good[np.random.default_rng(seed).choice(len(good), min(100, len(good)), replace=False)]
            blob = convert(model, ExportOptions(quantization="int8"), with_synthetic_anomalies(picked, seed))
            row["int8_mb"] = round(len(blob) / 1e6, 1)
            row["int8_auc"] = roc_auc(is_defect, _litert_scores(blob, test.x))
        rows.append(row)
        print(json.dumps(row), flush=True)

    def mean_sd(key: str) -> str:
        values = [r[key] for r in rows]
        return f"{statistics.mean(values):.4f}" + (f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else "")

    name = f"{args.backbone} {args.input_size} px, {args.dims} dims, {args.clusters} kinds, shrinkage {args.shrinkage}"
    lines = [f"ELPV anomaly detection from good cells only ({name}), test splits of seeds {args.seeds}", "",
             "| seed | good cells fitted | float ROC AUC | int8 ROC AUC | statistics (float32) | int8 file | fit |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        int8 = f"{r['int8_auc']:.4f}" if "int8_auc" in r else "—"
        size = f"{r['int8_mb']} MB" if "int8_mb" in r else "—"
        lines.append(f"| {r['seed']} | {r['good_images']} | {r['float_auc']:.4f} | {int8} | {r['stats_mb']} MB | "
                     f"{size} | {r['fit_seconds']} s |")
    lines.append(f"| **mean ± sd** | | **{mean_sd('float_auc')}** | "
                 f"**{mean_sd('int8_auc') if not args.no_int8 else '—'}** | | | |")
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    bench.end()
    return bench.finish(table)


if __name__ == "__main__":
    sys.exit(main())
