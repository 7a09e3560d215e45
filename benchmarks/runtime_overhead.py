"""Print the cost of edgetl_runtime's predict() over a raw LiteRT invoke of the same model.

Both run the same int8 MobileNetV3-Small (224x224, uint8 I/O) with the same threads, in one
process, alternating blocks so that machine noise hits both alike. The image is already decoded
at the model's size, so the difference is the runtime's own work (input prep, locking/pooling,
dequantization, Prediction). Builds the model with TensorFlow on first use (weights=None: the
weights do not matter for timing) and caches it.

    .venv/bin/python benchmarks/runtime_overhead.py [--model M.tflite] [--threads 2] [--runs 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

DEFAULT_MODEL = Path(os.environ.get("EDGETL_BENCH_DIR", "/tmp/edgetl_bench")) / "mobilenet_v3_small_int8.tflite"


def build_mobilenet_v3_small_int8(out: Path = DEFAULT_MODEL, size: int = 224) -> Path:
    """Return ``out``, writing an int8 MobileNetV3-Small with edgetl metadata there if missing."""
    if out.is_file():
        return out
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tf_keras as k

    from edgetl_runtime.atomic import write_bytes
    from edgetl_runtime.contract import ExportInfo, InputSpec, ModelSpec, Provenance
    from edgetl_runtime.metadata import embed_tflite_metadata

    base = k.applications.MobileNetV3Small(
        input_shape=(size, size, 3), weights=None, include_top=False, pooling="avg", include_preprocessing=True
    )
    outputs = k.layers.Dense(2, activation="softmax")(base.output)
    model = k.Model(base.input, outputs)
    rng = np.random.default_rng(0)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: (
        [rng.integers(0, 256, (1, size, size, 3)).astype(np.float32)] for _ in range(8)
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    spec = ModelSpec(labels=("defect", "good"), good_labels=("good",), input=InputSpec(size, size),
                     provenance=Provenance(backbone="mobilenet_v3_small"))
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes(out, embed_tflite_metadata(converter.convert(), spec, ExportInfo("tflite", "int8", "uint8")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=300, help="timed calls per side")
    parser.add_argument("--blocks", type=int, default=6, help="alternating blocks per side")
    args = parser.parse_args()
    path = args.model or build_mobilenet_v3_small_int8()

    import edgetl_runtime
    from ai_edge_litert.interpreter import Interpreter

    model = edgetl_runtime.load(path, threads=args.threads)
    h, w = model.input_size
    pixels = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)

    raw = Interpreter(model_content=path.read_bytes(), num_threads=args.threads)
    raw.allocate_tensors()
    inp, out = raw.get_input_details()[0]["index"], raw.get_output_details()[0]["index"]
    batch = pixels[None]

    def raw_call() -> None:
        raw.set_tensor(inp, batch)
        raw.invoke()
        raw.get_tensor(out)

    def runtime_call() -> None:
        model.predict(pixels)

    for fn in (raw_call, runtime_call):  # warm up both
        for _ in range(20):
            fn()
    samples: dict[str, list[float]] = {"raw LiteRT invoke": [], "edgetl_runtime predict": []}
    per_block = max(1, args.runs // args.blocks)
    for _ in range(args.blocks):
        for name, fn in (("raw LiteRT invoke", raw_call), ("edgetl_runtime predict", runtime_call)):
            for _ in range(per_block):
                t0 = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - t0) * 1e3)

    print(f"model {path.name}, {h}x{w} uint8, threads={args.threads}, {per_block * args.blocks} calls per side")
    print(f"{'':24}{'median ms':>10}{'mean ms':>10}{'p90 ms':>10}")
    for name, values in samples.items():
        p90 = float(np.percentile(values, 90))
        print(f"{name:24}{statistics.median(values):10.3f}{statistics.fmean(values):10.3f}{p90:10.3f}")
    raw_med = statistics.median(samples["raw LiteRT invoke"])
    rt_med = statistics.median(samples["edgetl_runtime predict"])
    print(f"overhead: {rt_med - raw_med:+.3f} ms per call, ratio {rt_med / raw_med:.3f}x (median)")


if __name__ == "__main__":
    main()
