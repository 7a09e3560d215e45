"""Real exported models for the runtime tests, built from ``tiny_run`` with TensorFlow.

TensorFlow is only used here, to make fixtures; the runtime under test never imports it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from edgetl_runtime.contract import ExportInfo, InputSpec, ModelSpec, Provenance
from edgetl_runtime.metadata import embed_onnx_metadata, embed_tflite_metadata
from edgetl_runtime.preprocess import load_image

LABELS = ("defect", "good")
# The start of a `python -c` script that runs as on a device: TensorFlow (and Keras) cannot be imported.
NO_TENSORFLOW = """
import sys
class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tf_keras", "keras", "tflite_runtime"):
            raise ImportError("TensorFlow is not available on this device")
sys.meta_path.insert(0, NoTensorFlow())
"""


class ExportedModels(NamedTuple):
    tflite_fp32: Path
    tflite_int8: Path  # full integer, uint8 input and output
    onnx: Path
    images: tuple[str, ...]  # validation images of the tiny data set
    truth: tuple[str, ...]  # their labels
    reference: np.ndarray  # Keras probabilities (N, 2) on those images


def tf_modules():
    from edgetl._tf import keras, tensorflow

    return tensorflow(), keras()


def to_tflite(model, representative: np.ndarray | None = None, io_dtype=None) -> bytes:
    """Return TFLite bytes of a Keras model: float, or full-integer with ``io_dtype`` I/O."""
    tf, _ = tf_modules()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None].astype(np.float32)] for x in representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = io_dtype
        converter.inference_output_type = io_dtype
    return converter.convert()


def to_edgetpu_lookalike(tflite: bytes) -> bytes:
    """Return ``tflite`` with its first operator code rewritten to the Edge TPU custom op."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    obj = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    code = obj.operatorCodes[0]
    code.builtinCode = schema.BuiltinOperator.CUSTOM
    code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = "edgetpu-custom-op"
    builder = flatbuffers.Builder(len(tflite) + 1024)
    builder.Finish(obj.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.fixture(scope="session")
def exported(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> ExportedModels:
    """The tiny_run classifier exported as TFLite fp32, TFLite int8 (uint8 I/O) and ONNX."""
    tf, k = tf_modules()
    out = tmp_path_factory.mktemp("exported")
    model = k.models.load_model(tiny_run / "model.keras", compile=False)
    config = json.loads((tiny_run / "config.json").read_text())
    split = json.loads((tiny_run / "split.json").read_text())
    size = tuple(config["input_size"])
    train = np.stack([load_image(p, size) for p, _ in split["train"]]).astype(np.float32)
    val = split["val"][:8]
    pixels = np.stack([load_image(p, size) for p, _ in val])
    reference = model.predict(pixels.astype(np.float32), verbose=0)
    spec = ModelSpec(labels=LABELS, good_labels=("good",), input=InputSpec(*size), provenance=Provenance(backbone="tiny"))

    fp32 = out / "tiny_fp32.tflite"
    fp32.write_bytes(embed_tflite_metadata(to_tflite(model), spec, ExportInfo("tflite", "fp32")))
    int8 = out / "tiny_int8.tflite"
    int8_bytes = to_tflite(model, train, tf.uint8)
    int8.write_bytes(embed_tflite_metadata(int8_bytes, spec, ExportInfo("tflite", "int8", io_type="uint8")))

    import tf2onnx

    signature = [tf.TensorSpec((None, *size, 3), tf.float32, name="image")]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=13)
    onnx_path = out / "tiny.onnx"
    onnx_path.write_bytes(embed_onnx_metadata(proto, spec, ExportInfo("onnx", "fp32", opset=13)).SerializeToString())
    return ExportedModels(
        fp32, int8, onnx_path, tuple(p for p, _ in val), tuple(label for _, label in val), reference
    )


class BareModels(NamedTuple):
    float32: Path
    uint8: Path
    int8: Path
    labels: Path  # 3 lines for the 3 outputs, the first "background" (the ImageNet convention)
    keras: object  # the float Keras model, input in [-1, 1], logits out


@pytest.fixture(scope="session")
def bare(tmp_path_factory: pytest.TempPathFactory) -> BareModels:
    """A third-party-style classifier without edgetl metadata: MobileNet [-1, 1] input, logits."""
    tf, k = tf_modules()
    k.utils.set_random_seed(1)
    out = tmp_path_factory.mktemp("bare")
    inputs = k.Input((24, 24, 3))
    h = k.layers.Conv2D(6, 3, strides=2, activation="relu")(inputs)
    h = k.layers.GlobalAveragePooling2D()(h)
    outputs = k.layers.Dense(3, kernel_initializer=k.initializers.RandomNormal(stddev=2.0))(h)
    model = k.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    calib = rng.uniform(-1, 1, (16, 24, 24, 3)).astype(np.float32)
    paths = BareModels(out / "bare_fp32.tflite", out / "bare_uint8.tflite", out / "bare_int8.tflite", out / "labels.txt", model)
    paths.float32.write_bytes(to_tflite(model))
    paths.uint8.write_bytes(to_tflite(model, calib, tf.uint8))
    paths.int8.write_bytes(to_tflite(model, calib, tf.int8))
    paths.labels.write_text("background\nscratch\ngood\n")
    return paths


@pytest.fixture(scope="session")
def edgetpu_model(exported: ExportedModels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A .tflite file that contains ``edgetpu-custom-op``, as edgetpu_compiler writes."""
    path = tmp_path_factory.mktemp("edgetpu") / "tiny_edgetpu.tflite"
    path.write_bytes(to_edgetpu_lookalike(exported.tflite_int8.read_bytes()))
    return path
