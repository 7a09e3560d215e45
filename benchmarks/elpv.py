"""ELPV benchmark: the full train → eval flow on real solar-cell defect data, per backbone.

Materializes ELPV (75/25 stratified split, defective = probability > 0.5), trains with edgetl's
defaults (20% of the train split held out for validation), evaluates on the test split, and prints
a Markdown table: test accuracy, defect recall/precision, ROC AUC, training time.

    python benchmarks/elpv.py --out runs/bench-elpv            # all configurations
    python benchmarks/elpv.py --only efficientnet_lite0:imagenet --markdown runs/bench-elpv/results.md

Published baseline: 88.42 % accuracy (fine-tuned VGG-19, Deitsch et al., Solar Energy 2019).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import add_state_options, start

CONFIGS = [
    ("efficientnet_lite0", "imagenet"),
    ("mobilenet_v3_small", "imagenet"),
    ("mobilenet_v3_small", "none"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/elpv", help="where ELPV is (or will be) materialized")
    parser.add_argument("--out", default="runs/bench-elpv", help="folder for the run folders and results.json")
    parser.add_argument("--only", action="append", help="backbone:weights to run (repeatable)")
    parser.add_argument("--fine-tune-epochs", type=int, default=None)
    parser.add_argument("--patience", type=int, default=None, help="early-stopping patience (default: edgetl's)")
    add_state_options(parser)
    args = parser.parse_args()

    from edgetl.backbones import weights_available_offline
    from edgetl.data.elpv import materialize_elpv
    from edgetl.evaluation import evaluate
    from edgetl.training import TrainOptions, train

    data = Path(args.data)
    if not (data / "manifest.csv").is_file():
        materialize_elpv(data, split=0.75, seed=0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    configs = [tuple(c.split(":")) for c in args.only] if args.only else CONFIGS
    bench = start(args)
    rows = []
    for backbone, weights in configs:
        if weights == "imagenet" and not weights_available_offline(backbone):
            print(f"skipping {backbone}:{weights}: ImageNet weights are not cached on this machine")
            rows.append({"backbone": backbone, "weights": weights, "skipped": "weights not cached (offline)"})
            continue
        run_dir = out / f"{backbone}-{weights}"
        overrides = {"fine_tune_epochs": args.fine_tune_epochs, "patience": args.patience}
        options = TrainOptions(backbone=backbone, weights=weights,
                               **{k: v for k, v in overrides.items() if v is not None})
        t0 = time.perf_counter()
        if (run_dir / "model.keras").is_file():
            print(f"{run_dir} exists, evaluating it again")
            train_s = json.loads((run_dir / "config.json").read_text())["train_seconds"]
        else:
            result = train(data / "train", options=options, output=run_dir, resume=(run_dir / "checkpoints").is_dir())
            train_s = result.seconds
        test = evaluate(run_dir, data / "test", progress=False).metrics
        rows.append({
            "backbone": backbone, "weights": weights, "test_accuracy": test["decision_accuracy"],
            "defect_recall": test["defect_recall"], "defect_precision": test["defect_precision"], "roc_auc": test["roc_auc"],
            "train_seconds": round(train_s, 1), "n_test": test["n"],
            "wall_seconds": round(time.perf_counter() - t0, 1),
        })
        print(json.dumps(rows[-1]))
    lines = [f"ELPV test split ({bench.at_start.date[:10]})", "",
             "| backbone | weights | test accuracy | defect recall | defect precision | ROC AUC | training time |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['backbone']} | {r['weights']} | skipped: {r['skipped']} | | | | |")
            continue
        lines.append(f"| {r['backbone']} | {r['weights']} | {r['test_accuracy']:.2%} | {r['defect_recall']:.2%} | "
                     f"{r['defect_precision']:.2%} | {r['roc_auc']:.4f} | {r['train_seconds'] / 60:.1f} min |")
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    bench.end()
    results = {"date": bench.at_start.date, "machine": bench.machine(), "rows": rows}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return bench.finish(table)


if __name__ == "__main__":
    sys.exit(main())
