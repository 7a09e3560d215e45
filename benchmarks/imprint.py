"""ELPV few-shot imprinting: how well a handful of images teaches a class, on ImageNet and on domain embeddings.

Two measurements, each over ``--draws`` random draws of k = 5, 10, 20 training images per class
(split seed 0, the test split for every figure):

1. **Nearest class mean, good vs defect** (both classes imprinted, the bare-extractor case), on
   (a) ImageNet EfficientNet-Lite0 embeddings (a bare int8 extractor built here, uint8 in,
   (N, 1, 1, 1280) out, the shape of Coral's) and (b) domain embeddings: the embedding of an
   ELPV classifier trained *without* the level-2/3 cells (``--leave-out RUN``), exported with
   ``--embedding``. The scores are computed in numpy from the runtime's embeddings, with the same
   rule as :class:`edgetl_runtime.imprinted.ImprintBackend`; one draw per k is checked against
   the real ``edgetl_runtime.imprint`` file.
2. **A new defect type on a deployed classifier**: the leave-out classifier gains the class
   ``level-2of3`` from k of its training cells with ``edgetl_runtime.imprint`` (the real file,
   loaded and run by the runtime): decision accuracy on the test split, the recall of the
   level-2/3 test cells (verdict defect; top class the new one), against the leave-out classifier
   alone and the fully trained classifier (``--full RUN``, trained with every level).

And the time ``imprint`` takes per image (decode, resize, embedding, mean update) on this CPU,
and the predict latency of the base and of the imprinted file, side by side (take those idle).

    python benchmarks/imprint.py --data data/elpv-seed0 --leave-out runs/imprint/leave23-seed0 \\
        --full runs/bench-elpv/defaults/seed0/model-int8.tflite --out runs/imprint/bench
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from _common import add_state_options, start

NEW = "level-2of3"
LEVEL_23 = "0.6667"


def _extractor(out: Path, calib: np.ndarray) -> Path:
    """Return an int8 ImageNet EfficientNet-Lite0 embedding extractor (uint8 in, (N, 1, 1, 1280) out), built once."""
    path = out / "imagenet-lite0-extractor.tflite"
    if path.is_file():
        return path
    from edgetl._tf import keras, tensorflow
    from edgetl.backbones import load_backbone

    tf, k = tensorflow(), keras()
    backbone = load_backbone("efficientnet_lite0", input_size=224)
    model = k.Model(backbone.inputs, k.layers.GlobalAveragePooling2D(keepdims=True)(backbone.output))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None].astype(np.float32)] for x in calib)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.uint8
    path.write_bytes(converter.convert())
    return path


def _domain(run: Path) -> Path:
    """Return the run's int8 export with its embedding (exported once)."""
    from edgetl.exporters import ExportOptions, default_output, export

    options = ExportOptions.for_int8(embedding=True, calib_samples=500)  # 200 missed the 1-point gate on seed 0
    path = default_output(run, options)
    if not path.is_file():
        export(run, options)
    return path


def _manifest(data: Path) -> dict[str, list[tuple[Path, str, str]]]:
    rows = {"train": [], "test": []}
    for r in csv.DictReader((data / "manifest.csv").open()):
        rows[r["split"]].append((data / r["path"], r["label"], r["probability"]))
    return rows


def _embeddings(model, pixels: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([model.embeddings(pixels[i:i + batch]) for i in range(0, len(pixels), batch)])


def _ncm(train_emb: np.ndarray, train_y: np.ndarray, test_emb: np.ndarray) -> np.ndarray:
    """Nearest normalised class mean (cosine): the imprinted model's top class for a bare base."""
    means = np.stack([train_emb[train_y == c].mean(axis=0) for c in (0, 1)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    return (test_emb @ means.T).argmax(axis=1)


def _variants(model, pix: dict, y: dict, level: dict, ks: list[int], draws: int) -> list[str]:
    """Replay the extension rule in numpy with 1, 2, 4 or 8 prototypes per trained label and scale 10 or 30."""
    from edgetl.exporters.embedding import spherical_kmeans

    emb = {part: _embeddings(model, pix[part]) for part in ("train", "test")}
    head = np.concatenate([model.scores(pix["test"][i:i + 64]) for i in range(0, len(pix["test"]), 64)])
    good = list(model.labels).index("good")
    is23, seen = level["test"] == LEVEL_23, level["train"] != LEVEL_23
    lines = ["| prototypes per label | scale | k | decision accuracy | level-2/3 recall | other cells as the new class |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for per in (1, 2, 4, 8):
        centres = [spherical_kmeans(emb["train"][seen & (y["train"] == (c == "defect"))], per) for c in model.labels]
        for scale in (10, 30):
            for k in ks:
                got = []
                for d in range(draws):
                    rng = np.random.default_rng(2000 * k + d)
                    mean = emb["train"][rng.choice(np.flatnonzero(~seen), k, replace=False)].mean(axis=0)
                    cos = np.stack([(emb["test"] @ c.T).max(axis=1) for c in centres] +
                                   [emb["test"] @ (mean / np.linalg.norm(mean))], axis=1)  # fmt: skip
                    s = np.exp(scale * (cos - cos.max(axis=1, keepdims=True)))
                    q = (s[:, -1] / s.sum(axis=1))[:, None]
                    probs = np.concatenate([head * (1 - q), q], axis=1)
                    defect = probs[:, good] < 0.5
                    new = probs.argmax(axis=1) == probs.shape[1] - 1
                    got.append((np.mean(defect == (y["test"] == 1)), np.mean(defect[is23]), np.mean(new[~is23])))
                a, r, f = (100 * np.array(got)).mean(axis=0)
                lines.append(f"| {per} | {scale} | {k} | {a:.2f} % | {r:.1f} % | {f:.2f} % |")
        print("\n".join(lines[-2 * len(ks):]), flush=True)
    return lines


def _pm(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/elpv-seed0"), help="materialized ELPV split (manifest.csv)")
    parser.add_argument("--leave-out", type=Path, required=True, help="run trained without the level-2/3 cells")
    parser.add_argument("--full", type=Path, required=True, help="int8 export of a classifier trained with every level")
    parser.add_argument("--out", type=Path, default=Path("runs/imprint/bench"))
    parser.add_argument("--ks", default="5,10,20")
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--latency-only", action="store_true", help="only the timings (run it on an idle machine)")
    parser.add_argument("--variants", action="store_true",
                        help="also replay the extension in numpy with 1/2/4/8 prototypes per label and scale 10/30")
    add_state_options(parser)
    args = parser.parse_args()
    import edgetl_runtime as rt
    from edgetl_runtime.preprocess import load_image

    bench = start(args)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = _manifest(args.data)
    ks = [int(k) for k in args.ks.split(",")]
    full = rt.load(args.full)
    size = full.input_size
    pix = {part: np.stack([load_image(p, size) for p, _, _ in rows[part]]) for part in rows}
    y = {part: np.array([1 if label == "defect" else 0 for _, label, _ in rows[part]]) for part in rows}
    level = {part: np.array([prob for _, _, prob in rows[part]]) for part in rows}
    rng_calib = np.random.default_rng(0)
    extractor = _extractor(args.out, pix["train"][rng_calib.choice(len(pix["train"]), 100, replace=False)])
    domain = _domain(args.leave_out)
    bases = {"ImageNet Lite0 (bare int8 extractor)": extractor, "ELPV, level 2/3 left out (int8 --embedding)": domain}
    lines = ["| embedding | k per class | accuracy (good vs defect, nearest class mean) |", "|---|---|---|"]
    always_good = 100 * float(np.mean(y["test"] == 0))
    for name, path in ({} if args.latency_only else bases).items():
        model = rt.load(path)
        emb = {part: _embeddings(model, pix[part]) for part in pix}
        for k in ks:
            accs = []
            for d in range(args.draws):
                rng = np.random.default_rng(1000 * k + d)
                pick = np.concatenate([rng.choice(np.flatnonzero(y["train"] == c), k, replace=False) for c in (0, 1)])
                pred = _ncm(emb["train"][pick], y["train"][pick], emb["test"])
                accs.append(100 * float(np.mean(pred == y["test"])))
                if d == 0 and path == extractor:  # the numpy rule is the imprinted file's
                    names = {0: "good", 1: "defect"}
                    classes = {names[c]: [rows["train"][i][0] for i in pick if y["train"][i] == c] for c in (0, 1)}
                    check = rt.load(rt.imprint(path, classes, args.out / "check.imprint").path)
                    top = [p.top_class for p in check.predict_batch(list(pix["test"][:64]))]
                    assert top == [names[int(v)] for v in pred[:64]], "numpy rule and imprinted file disagree"
            lines.append(f"| {name} | {k} | {_pm(accs)} % |")
        print("\n".join(lines[-len(ks):]), flush=True)
    lines.append(f"| (always answering good) | | {always_good:.2f} % |")

    # 2. a new defect type on the deployed leave-out classifier
    base = rt.load(domain)
    is23 = level["test"] == LEVEL_23
    pool = np.flatnonzero(level["train"] == LEVEL_23)

    def decisions(model) -> tuple[float, float, float, float]:
        preds = model.predict_batch(list(pix["test"]))
        verdict = np.array([p.verdict == "defect" for p in preds])
        new = np.array([p.top_class == NEW for p in preds])
        return (100 * float(np.mean(verdict == (y["test"] == 1))), 100 * float(np.mean(verdict[is23])),
                100 * float(np.mean(new[is23])), 100 * float(np.mean(new[~is23])))  # fmt: skip

    ext = ["| model | k | decision accuracy | level-2/3 recall (verdict) | level-2/3 as the new class | other cells as the new class |",
           "|---|---|---|---|---|---|"]  # fmt: skip
    for label, model in () if args.latency_only else (("fully trained classifier (every level)", full),
                                                       ("leave-out classifier alone", base)):  # fmt: skip
        acc, rec, _, _ = decisions(model)
        ext.append(f"| {label} | — | {acc:.2f} % | {rec:.2f} % | — | — |")
    ms, sizes = [], []
    for k in ks:
        figures = []
        for d in range(args.draws):
            rng = np.random.default_rng(2000 * k + d)
            images = [rows["train"][i][0] for i in rng.choice(pool, k, replace=False)]
            result = rt.imprint(domain, {NEW: images}, args.out / "extended.imprint")
            ms.append(result.ms_per_image)
            if not args.latency_only:
                figures.append(decisions(rt.load(result.path)))
        sizes.append(result.path.stat().st_size)
        if args.latency_only:
            continue
        cols = [_pm([f[i] for f in figures]) + " %" for i in range(4)]
        ext.append(f"| leave-out classifier + imprinted `{NEW}` | {k} | " + " | ".join(cols) + " |")
        print(ext[-1], flush=True)

    variants = _variants(base, pix, y, level, ks, args.draws) if args.variants and not args.latency_only else []

    # 3. latency: imprint per image, predict of the base and of the imprinted file, side by side
    one = pix["test"][0]
    lat = {}
    for label, path in (("base (leave-out, int8 --embedding)", domain), ("imprinted (+1 class)", args.out / "extended.imprint")):
        model = rt.load(path)
        for _ in range(10):
            model.scores(one[None])
        times = []
        for _ in range(200):
            t0 = time.perf_counter()
            model.scores(one[None])
            times.append((time.perf_counter() - t0) * 1e3)
        lat[label] = statistics.median(times)
    bench.end()
    text = "\n".join([*lines, "", *ext, "", *variants, "",
                      f"imprint: {statistics.mean(ms):.1f} ms per image (mean over {len(ms)} calls, decode + resize + "
                      f"embedding + mean update), imprinted file {sizes[-1] / 2**20:.2f} MB",
                      "inference p50 (one image, 200 runs): " + ", ".join(f"{k} {v:.2f} ms" for k, v in lat.items())])  # fmt: skip
    print(text)
    (args.out / "results.json").write_text(json.dumps({"table": text, "machine": bench.machine()}, indent=2))
    return bench.finish(text)


if __name__ == "__main__":
    sys.exit(main())
