"""Print the per-image cost of edgetl_runtime's predict() and scores() over a raw LiteRT invoke of the same model.

Two models, each with uint8 input and output and the same CPU threads on both sides (default 1):
(a) the int8 MobileNetV3-Small defect classifier (2 classes, edgetl metadata) and (b) a bare int8
MobileNetV2 with 1001 ImageNet-style classes, loaded with ``labels=`` like a third-party model,
where any per-class work in ``predict`` shows. The image is already decoded at the model's size,
so decoding is excluded and the difference is the runtime's own work (input prep, interpreter
pool, dequantization, softmax, the Prediction). One more side, ``predict`` of a 640x480 JPEG,
gives the end-to-end time with decode and resize.

Every side runs in the same process, in interleaved blocks (the order rotates each block) so that
machine noise hits all alike. The ratios are the median over blocks of (side's median in the block
/ raw invoke's median in the block). Models are built with TensorFlow on first use (weights=None:
timing does not depend on the weights) and cached in --cache-dir.

    .venv/bin/python benchmarks/runtime_overhead.py [--runs 300] [--blocks 10] [--threads 1] [--only v2-1001]
                                                    [--cache-dir runs/bench-cache] [--json F] [--markdown F]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from _common import add_state_options, start

DEFAULT_CACHE = Path(__file__).resolve().parents[1] / "runs" / "bench-cache"
IMAGENET_LABELS = ("background", *(f"class_{i}" for i in range(1, 1001)))  # 1001 outputs, class 0 background


def _int8_converter(model, size: int, low: float, high: float, samples: int = 8):
    """Return a TFLite converter for full-integer int8 with uint8 I/O, calibrated on random inputs."""
    from edgetl._tf import tensorflow

    tf = tensorflow()
    rng = np.random.default_rng(0)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: (
        [rng.uniform(low, high, (1, size, size, 3)).astype(np.float32)] for _ in range(samples)
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    return converter


def build_mobilenet_v3_small_int8(cache_dir: Path = DEFAULT_CACHE, size: int = 224) -> Path:
    """Return the path of an int8 MobileNetV3-Small (2 classes, edgetl metadata), building it if missing."""
    out = Path(cache_dir) / f"mobilenet_v3_small_int8_{size}.tflite"
    if out.is_file():
        return out
    from edgetl._tf import keras
    from edgetl_runtime.atomic import write_bytes
    from edgetl_runtime.contract import ExportInfo, InputSpec, ModelSpec, Provenance
    from edgetl_runtime.metadata import embed_tflite_metadata

    k = keras()
    base = k.applications.MobileNetV3Small(
        input_shape=(size, size, 3), weights=None, include_top=False, pooling="avg", include_preprocessing=True
    )
    model = k.Model(base.input, k.layers.Dense(2, activation="softmax")(base.output))
    spec = ModelSpec(labels=("defect", "good"), good_labels=("good",), input=InputSpec(size, size),
                     provenance=Provenance(backbone="mobilenet_v3_small"))
    tflite = _int8_converter(model, size, 0.0, 255.0).convert()  # the model rescales pixels itself
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes(out, embed_tflite_metadata(tflite, spec, ExportInfo("tflite", "int8", "uint8")))


def build_mobilenet_v2_1001_uint8(cache_dir: Path = DEFAULT_CACHE, size: int = 224) -> Path:
    """Return the path of a bare int8 MobileNetV2 with 1001 classes and uint8 I/O, building it if missing."""
    out = Path(cache_dir) / f"mobilenet_v2_1001_uint8_{size}.tflite"
    if out.is_file():
        return out
    from edgetl._tf import keras
    from edgetl_runtime.atomic import write_bytes

    model = keras().applications.MobileNetV2(input_shape=(size, size, 3), weights=None, classes=1001)
    # Calibrated on [-1, 1], MobileNetV2's input range: the uint8 input's quantization then maps
    # raw pixels 0..255 onto it, which is how the runtime feeds a bare uint8 model.
    tflite = _int8_converter(model, size, -1.0, 1.0).convert()
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes(out, tflite)


def build_mobilenet_v2_nchw_onnx(cache_dir: Path = DEFAULT_CACHE, size: int = 224) -> Path:
    """Return the path of a bare float MobileNetV2 ONNX with an NCHW input (as a PyTorch export has), building it if missing.

    tf2onnx's ``inputs_as_nchw`` puts the transpose inside the graph, so the file takes (N, 3, H, W) float
    pixels normalized outside it, as timm/torchvision exports do.
    """
    out = Path(cache_dir) / f"mobilenet_v2_1000_nchw_{size}.onnx"
    if out.is_file():
        return out
    import tf2onnx

    from edgetl._tf import keras, tensorflow
    from edgetl_runtime.atomic import write_bytes

    tf = tensorflow()
    model = keras().applications.MobileNetV2(input_shape=(size, size, 3), weights=None, classes=1000,
                                             classifier_activation=None)  # fmt: skip
    signature = (tf.TensorSpec((None, size, size, 3), tf.float32, name="input"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=13, inputs_as_nchw=["input"])
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes(out, proto.SerializeToString())


class _OnnxRaw:
    """The raw ONNX Runtime call on a session of its own (same threads), and on the runtime's session."""

    def __init__(self, path: Path, model, threads: int, batch: np.ndarray):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.own = model._backend._session  # private, on purpose: the runtime's own session
        self.name = self.session.get_inputs()[0].name
        spec = model.info.spec.input  # the tensor prepared once, outside the timed call: the engine's work only
        x = (batch.astype(np.float32) - np.float32(spec.mean)) / np.float32(spec.std)
        self.x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def raw(self) -> None:
        self.session.run(None, {self.name: self.x})

    def own_run(self) -> None:
        self.own.run(None, {self.name: self.x})


# "invoke (runtime's interpreter)": the same raw calls on the interpreter the runtime's backend owns,
# which separates the runtime's Python overhead from the difference between two interpreters.
SIDES = ("raw invoke", "invoke (runtime's interpreter)", "scores(pixels)", "predict(pixels)", "predict(JPEG)")


def time_sides(path: Path, labels, threads: int, runs: int, blocks: int) -> dict:
    """Return the per-call times (ms) of every side, per block, for the model at ``path``."""
    import edgetl_runtime
    from edgetl_runtime.backends.litert import import_interpreter_module
    from edgetl_runtime.bench import synthetic_image

    onnx = path.suffix == ".onnx"  # a bare NCHW float model: its logits read with softmax, as the note advises
    model = edgetl_runtime.load(path, threads=threads, labels=labels, softmax=onnx)
    h, w = model.input_size
    pixels = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    batch = pixels[None]
    jpeg = synthetic_image()
    if onnx:
        engine = _OnnxRaw(path, model, threads, batch)
        return _time(path, model, {"raw invoke": engine.raw, "invoke (runtime's interpreter)": engine.own_run,
                                   "scores(pixels)": lambda: model.scores(batch),
                                   "predict(pixels)": lambda: model.predict(pixels),
                                   "predict(JPEG)": lambda: model.predict(jpeg)}, runs, blocks)  # fmt: skip
    # The same interpreter module and settings as the runtime's backend (XNNPACK, threads).
    raw = import_interpreter_module().Interpreter(model_content=path.read_bytes(), num_threads=threads)
    raw.allocate_tensors()
    inp, out = raw.get_input_details()[0]["index"], raw.get_output_details()[0]["index"]

    def raw_invoke() -> None:
        raw.set_tensor(inp, batch)
        raw.invoke()
        raw.get_tensor(out)

    own = model._backend._pool.acquire()  # private, on purpose: the runtime's own interpreter
    model._backend._pool.release(own)
    own_in, own_out = own.get_input_details()[0]["index"], own.get_output_details()[0]["index"]

    def own_invoke() -> None:
        own.set_tensor(own_in, batch)
        own.invoke()
        own.get_tensor(own_out)

    calls: dict[str, Callable[[], object]] = {
        "raw invoke": raw_invoke,
        "invoke (runtime's interpreter)": own_invoke,
        "scores(pixels)": lambda: model.scores(batch),
        "predict(pixels)": lambda: model.predict(pixels),
        "predict(JPEG)": lambda: model.predict(jpeg),
    }
    return _time(path, model, calls, runs, blocks)


def _time(path: Path, model, calls: dict[str, Callable[[], object]], runs: int, blocks: int) -> dict:
    h, w = model.input_size
    for fn in calls.values():  # warm up every side: first invokes allocate and pack weights
        for _ in range(min(20, runs)):
            fn()
    per_block = max(1, runs // blocks)
    samples: dict[str, list[list[float]]] = {name: [] for name in SIDES}
    for b in range(blocks):
        for name in SIDES[b % len(SIDES):] + SIDES[: b % len(SIDES)]:
            fn, times = calls[name], []
            for _ in range(per_block):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
            samples[name].append(times)
    return {"model": path.name, "size": [h, w], "classes": len(model.labels), "calls_per_side": per_block * blocks,
            "samples": samples}


def summarize(result: dict) -> dict:
    """Return median/mean/p90 ms per side and the median over blocks of each side's ratio to raw invoke."""
    samples = result["samples"]
    stats = {}
    for name in SIDES:
        flat = [t for block in samples[name] for t in block]
        stats[name] = {"median_ms": statistics.median(flat), "mean_ms": statistics.fmean(flat),
                       "p90_ms": float(np.percentile(flat, 90))}
    raw_blocks = [statistics.median(block) for block in samples["raw invoke"]]
    ratios = {}
    for name in SIDES[1:]:
        per_block = [statistics.median(block) / raw for block, raw in zip(samples[name], raw_blocks)]
        ratios[name] = {"median": statistics.median(per_block), "min": min(per_block), "max": max(per_block)}
    return {k: v for k, v in result.items() if k != "samples"} | {"stats": stats, "ratios": ratios}


def print_summary(s: dict, threads: int, blocks: int) -> None:
    h, w = s["size"]
    print(f"\n{s['model']}: {h}x{w}, {s['classes']} classes, threads={threads}, "
          f"{s['calls_per_side']} calls per side in {blocks} interleaved blocks")
    print(f"  {'':32}{'median ms':>10}{'mean ms':>10}{'p90 ms':>10}{'/ invoke':>10}"
          "   (ratio: median [min-max] over blocks)")
    for name in SIDES:
        st, r = s["stats"][name], s["ratios"].get(name)
        ratio = f"{r['median']:10.3f}   [{r['min']:.3f}-{r['max']:.3f}]" if r else ""
        print(f"  {name:32}{st['median_ms']:10.3f}{st['mean_ms']:10.3f}{st['p90_ms']:10.3f}{ratio}")
    over = s["stats"]["predict(pixels)"]["median_ms"] - s["stats"]["raw invoke"]["median_ms"]
    print(f"  predict overhead on decoded pixels: {over:+.3f} ms per image, "
          f"ratio {s['ratios']['predict(pixels)']['median']:.3f}x")


def markdown_table(summaries: list[dict], threads: int, blocks: int) -> str:
    lines = [f"`predict` / `scores` vs raw LiteRT `invoke`, threads={threads}; ratios are the median over "
             f"{blocks} interleaved blocks of per-block medians; predict(JPEG) decodes a 640x480 JPEG.", "",
             "| model | classes | raw invoke ms | same interpreter ms | scores(pixels) ms | predict(pixels) ms "
             "| predict(JPEG) ms | predict(pixels) / invoke | predict(pixels) / same interpreter |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summaries:
        ms = [f"{s['stats'][name]['median_ms']:.3f}" for name in SIDES]
        own = s["stats"]["invoke (runtime's interpreter)"]["median_ms"]
        ratios = [f"**{s['ratios']['predict(pixels)']['median']:.3f}×**",
                  f"{s['stats']['predict(pixels)']['median_ms'] / own:.3f}×"]
        lines.append(f"| {s['model']} | {s['classes']} | " + " | ".join(ms + ratios) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None,
                        help="2-class edgetl model to time instead of the built MobileNetV3-Small")
    parser.add_argument("--only", choices=("v3-small", "v2-1001", "v2-nchw-onnx"), default=None,
                        help="time one of the models (v2-nchw-onnx: a bare float NCHW ONNX MobileNetV2 on ONNX Runtime, "
                             "as a PyTorch export; not in the default set)")  # fmt: skip
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where built models are cached")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=300, help="timed calls per side and model")
    parser.add_argument("--blocks", type=int, default=10, help="interleaved blocks per side")
    parser.add_argument("--json", dest="json_out", type=Path, default=None, help="write every figure to this JSON file")
    add_state_options(parser)
    args = parser.parse_args()
    args.blocks = max(1, min(args.blocks, args.runs))

    models = []  # build (TensorFlow, minutes on first use) before the clock starts
    if args.only in (None, "v3-small"):
        models.append((args.model or build_mobilenet_v3_small_int8(args.cache_dir), None))
    if args.only in (None, "v2-1001"):
        models.append((build_mobilenet_v2_1001_uint8(args.cache_dir), IMAGENET_LABELS))
    if args.only == "v2-nchw-onnx":
        models.append((build_mobilenet_v2_nchw_onnx(args.cache_dir), None))
    bench = start(args)
    summaries = []
    for path, labels in models:
        summaries.append(summarize(time_sides(path, labels, args.threads, args.runs, args.blocks)))
        print_summary(summaries[-1], args.threads, args.blocks)
    table = markdown_table(summaries, args.threads, args.blocks)
    print("\n" + table)
    bench.end()
    if args.json_out:
        from edgetl_runtime.atomic import write_json

        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json_out, {"threads": args.threads, "blocks": args.blocks, "models": summaries,
                                   "machine": bench.machine()})
    return bench.finish(table)


if __name__ == "__main__":
    sys.exit(main())
