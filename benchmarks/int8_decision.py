"""What keeps an int8 file's verdicts at the float model's: the output, the head, and the threshold (issue 24).

    python benchmarks/int8_decision.py runs/quickstart/seed{0,1,2}/runs/elpv --test data/elpv-s{seed}/test ...
    python benchmarks/int8_decision.py RUN [RUN ...] --test TEST [TEST ...]

For each run (a trained classifier) and its test folder, every variant below is converted from the
run's float model (calibrated on 200 training images, as ``edgetl export`` does), run by LiteRT or
ONNX Runtime on the run's validation images and on the test images, and judged at three operating
points chosen on the validation images with the float model: the default 0.5, 95 % defect
recall, and 5 % false alarms. Each cell is the test decision accuracy minus the float model's, in
points, with the file's threshold set three ways: the float model's (``same``), the same rule
re-applied to the file's own validation scores (``rule``), and the rank match that ``edgetl
export`` uses (``match``: as many validation images called defective as the float model).

Variants: ``all-int8`` (uint8 output, the converter's full-integer file), ``float-out`` (the same
graph with a float32 output tensor), ``logits`` (the head without its softmax, the softmax in numpy),
``float-head`` (what ``edgetl export`` writes: dense layer and softmax in float after the int8
backbone); for ONNX ``all-int8``, ``logits`` and ``float-head``. The last column counts the distinct
defect scores of the test images scored between 0.08 and 0.2, where the 95 %-recall thresholds lie.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def _scores(data: bytes, fmt: str, pixels: np.ndarray, logits: bool) -> np.ndarray:
    """Return the good-vs-defect class scores of the file ``data`` on ``pixels``, run by the runtime's engine."""
    from edgetl_runtime.backends import open_backend
    from edgetl_runtime.preprocess import from_model_output, to_model_input

    folder = Path(tempfile.mkdtemp(prefix="int8-decision-"))
    try:
        path = folder / f"m.{fmt}"
        path.write_bytes(data)
        backend = open_backend(path, data, fmt, "cpu", None, {}, False)
        channels = pixels.shape[-1]
        parts = [from_model_output(np.asarray(backend.run(to_model_input(
            pixels[i : i + 32], backend.input.dtype, (0.0,) * channels, (1.0,) * channels, backend.input.quantization))),
            backend.output.quantization) for i in range(0, len(pixels), 32)]  # fmt: skip
        del backend
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    out = np.concatenate(parts).reshape(len(pixels), -1).astype(np.float64)
    if logits:
        out = np.exp(out - out.max(1, keepdims=True))
        out /= out.sum(1, keepdims=True)
    return out


def _without_softmax(model):
    """Return ``model`` with its classifier's softmax taken off (the same weights, logits out)."""
    from edgetl._tf import keras

    k = keras()
    dense = model.get_layer("scores")
    head = k.layers.Dense(dense.units, activation=None, name="logits")
    out = head(dense.input)
    head.set_weights(dense.get_weights())
    return k.Model(model.input, out)


def _tflite_float_out(model, calibration: np.ndarray) -> bytes:
    """Return the full-integer TFLite file of ``model`` with a float32 output tensor (int8 inside)."""
    from edgetl._tf import tensorflow
    from edgetl.exporters.target import full_range
    from edgetl.exporters.tflite import _concrete_function

    tf = tensorflow()
    function, owner = _concrete_function(model)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], owner)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    data = full_range(calibration).astype(np.float32)
    converter.representative_dataset = lambda: ([image[None]] for image in data)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type, converter.inference_output_type = tf.uint8, tf.float32
    return bytes(converter.convert())


def variants(model, calibration: np.ndarray) -> dict:
    """Return {name: (format, bytes, output is logits)} of every variant of ``model``."""
    from edgetl.exporters import onnx as onnx_export
    from edgetl.exporters import tflite as tflite_export
    from edgetl.exporters.options import ExportOptions

    int8, full = ExportOptions(quantization="int8"), ExportOptions(quantization="int8", float_head=False)
    onnx8, onnx_full = int8.replace(format="onnx"), full.replace(format="onnx")
    logits = _without_softmax(model)
    return {
        "tflite all-int8": ("tflite", lambda: tflite_export.convert(model, full, calibration), False),
        "tflite float-out": ("tflite", lambda: _tflite_float_out(model, calibration), False),
        "tflite logits": ("tflite", lambda: _tflite_float_out(logits, calibration), True),
        "tflite float-head": ("tflite", lambda: tflite_export.convert(model, int8, calibration), False),
        "onnx all-int8": ("onnx", lambda: onnx_export.convert(model, onnx_full, calibration).SerializeToString(), False),
        "onnx logits": ("onnx", lambda: onnx_export.convert(logits, onnx_full, calibration).SerializeToString(), True),
        "onnx float-head": ("onnx", lambda: onnx_export.convert(model, onnx8, calibration).SerializeToString(), False),
    }


def one_run(run_dir: Path, test_dir: Path) -> list[tuple[str, str, dict[str, float], int]]:
    """Return (variant, operating point, {same, rule, match: Δ accuracy}, distinct low scores) rows of one run."""
    from edgetl.data import scan_dataset
    from edgetl.data.loading import load_images, sample_images
    from edgetl.exporters.operating_point import matched_threshold
    from edgetl.exporters.validate import reference_scores
    from edgetl.run import load_run
    from edgetl.thresholds import threshold_for_false_alarm, threshold_for_recall
    from edgetl_runtime.decision import defect_scores

    run = load_run(run_dir)
    spec, model = run.spec, run.load_model()
    val = sample_images(None, run.split("val"), spec.input, 10**6, "validation")
    test = load_images(scan_dataset(test_dir), spec.input, progress=False)
    calibration = sample_images(None, run.split("train"), spec.input, 200, "calibration").x
    good = spec.good_indices
    truth_v, truth_t = ~np.isin(val.truth(spec), good), ~np.isin(test.truth(spec), good)
    fv, ft = (defect_scores(reference_scores(model, x), good) for x in (val.x, test.x))
    rules = {"0.5": lambda t, s: 0.5, "recall 0.95": lambda t, s: threshold_for_recall(t, s, 0.95),
             "false alarm 0.05": lambda t, s: threshold_for_false_alarm(t, s, 0.05)}  # fmt: skip
    accuracy = lambda called: 100.0 * np.mean(called == truth_t)  # noqa: E731
    rows = []
    for name, (fmt, make, logits) in variants(model, calibration).items():
        data = make()
        ev, et = (defect_scores(_scores(data, fmt, x, logits), good) for x in (val.x, test.x))
        low = et[(et > 0.08) & (et < 0.2)]
        for point, rule in rules.items():
            t = rule(truth_v, fv)
            base = accuracy(ft >= t)
            own = {"same": t, "rule": rule(truth_v, ev), "match": matched_threshold(fv, ev, t)}
            rows.append((name, point, {k: accuracy(et >= v) - base for k, v in own.items()}, len(np.unique(low))))
        print(f"{run_dir}: {name}", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--test", type=Path, nargs="+", required=True, help="one test folder per run")
    args = parser.parse_args(argv)
    if len(args.test) != len(args.runs):
        parser.error("give one --test folder per run")
    table: dict[tuple[str, str], list] = {}
    for run_dir, test_dir in zip(args.runs, args.test):
        for name, point, deltas, distinct in one_run(run_dir, test_dir):
            table.setdefault((name, point), []).append((deltas, distinct))
    print("| variant | operating point | Δ accuracy, file at the float threshold | same rule re-applied | "
          "rank match (edgetl) | distinct scores 0.08-0.2 |\n|---|---|---|---|---|---|")  # fmt: skip
    for (name, point), cells in table.items():
        cols = [" / ".join(f"{c[0][k]:+.2f}" for c in cells) for k in ("same", "rule", "match")]
        print(f"| {name} | {point} | {' | '.join(cols)} | {' / '.join(str(c[1]) for c in cells)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
