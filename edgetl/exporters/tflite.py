"""TFLite export: fp32, fp16, dynamic range, int8 and QAT, with metadata inside the file.

The model is converted with a static batch of 1 (what every edge device runs, and what the Edge TPU
requires). int8 models take raw uint8 pixels (scale 1, zero point 0) because edgetl models keep
their normalization inside the graph.

The classification head of an int8 model runs in float by default (``ExportOptions.float_head``):
the backbone is int8, its features are dequantized once, and the dense layer and softmax compute
in float32, which is also the output's type. In an all-int8 file the logits are int8: at a
threshold of 0.12 on ELPV, 165 test cells took 8 distinct scores, up to 28 cells sharing one, and no
threshold could separate them (docs/BENCHMARKS.md, issue 24). The head costs a few thousand float
operations. ``float_head=False`` (``--full-int8``), QAT and the Edge TPU keep every op in int8.

>>> from edgetl.exporters.options import ExportOptions
>>> converter_flags(ExportOptions(quantization="int8"))
{'optimize': True, 'float16': False, 'integer_only': True, 'io_type': 'uint8', 'float_head': True}
"""

from __future__ import annotations

from typing import Any

import numpy as np
from edgetl_runtime.contract import ExportInfo, ModelSpec
from edgetl_runtime.metadata import embed_tflite_metadata

from .errors import ExportError
from .target import Target, full_range


def converter_flags(options: Any) -> dict[str, Any]:
    """Return the converter settings an option set implies (a plain dict, for logs and tests)."""
    integer = options.is_integer
    return {
        "optimize": options.quantization != "fp32",
        "float16": options.quantization == "fp16",
        "integer_only": integer,
        "io_type": options.io_type if integer else "float32",
        "float_head": options.has_float_head,
    }


# The classification head: these ops stay float in an int8 model with a float head.
FLOAT_HEAD_OPS = ("FULLY_CONNECTED", "SOFTMAX")


def _concrete_function(model: Any, batch: int = 1):
    """Return ``(concrete function, its owner)``: the forward pass traced at a static ``(batch, H, W, C)`` input.

    The owner is a bare ``tf.Module`` that tracks only the model's variables. The converter saves
    its ``trackable_obj`` as a SavedModel first; given the Keras model itself, that traced every
    layer's call for serialization (20 of the 22 s of a tiny model's export, in cProfile).
    """
    from edgetl._tf import tensorflow

    tf = tensorflow()
    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ExportError(
            f"model input shape {tuple(model.inputs[0].shape)} is not static; edge formats need a fixed "
            "height, width and channels. Rebuild the model with a fixed input size."
        )
    owner = tf.Module()
    owner.weights = list(model.weights)  # the variables the function captures, tracked for the SavedModel
    owner.forward = tf.function(lambda image: model(image, training=False))
    spec = tf.TensorSpec((batch, *shape), tf.float32, name="image")
    return owner.forward.get_concrete_function(spec), owner


def convert(model: Any, options: Any, calibration: np.ndarray | None = None) -> bytes:
    """Return the TFLite flatbuffer of a Keras ``model`` converted as ``options`` say.

    ``calibration``: uint8 pixels ``(N, H, W, C)`` for int8/QAT (the representative data set).
    """
    from edgetl._tf import tensorflow

    tf = tensorflow()
    flags = converter_flags(options)
    function, owner = _concrete_function(model)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], owner)
    if flags["optimize"]:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if flags["float16"]:
        converter.target_spec.supported_types = [tf.float16]
    if flags["integer_only"]:
        if calibration is None or not len(calibration):
            raise ExportError("int8 export needs calibration images; pass --calib DATA or a run with a train split")
        data = full_range(calibration).astype(np.float32)

        def representative():
            for image in data:
                yield [image[None]]

        converter.representative_dataset = representative
        io = {"uint8": tf.uint8, "int8": tf.int8, "float32": tf.float32}[flags["io_type"]]
        if not flags["float_head"]:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = io
            converter.inference_output_type = io
    from edgetl._tf import quiet_native_logs

    try:
        with quiet_native_logs():
            if flags["float_head"]:
                return _int8_with_float_head(converter, io)
            return bytes(converter.convert())
    except Exception as exc:  # the converter raises ConverterError, RuntimeError, ValueError...
        raise ExportError(
            f"TFLite conversion ({options.quantization}) failed: {exc.__class__.__name__}: {str(exc)[:600]}. "
            "If an op is not supported as int8, export --quant fp32/fp16/dynamic or change the layer."
        ) from exc


def _int8_with_float_head(converter: Any, input_type: Any) -> bytes:
    """Return the int8 flatbuffer whose :data:`FLOAT_HEAD_OPS` stay float: uint8 (``input_type``) in, float32 out.

    TensorFlow's selective quantization (what ``tf.lite.experimental.QuantizationDebugger`` does
    with ``denylisted_ops``): calibrate, quantize every op but the head's, then set the input type.
    """
    from tensorflow.lite.python import convert as tflite_convert
    from tensorflow.lite.python.util import modify_model_io_type

    from edgetl._tf import tensorflow

    converter._experimental_calibrate_only = True  # the calibrated float model; quantized below
    calibrated = converter.convert()
    quantized = tflite_convert.mlir_quantize(calibrated, fully_quantize=False, denylisted_ops=list(FLOAT_HEAD_OPS))
    return bytes(modify_model_io_type(quantized, input_type, tensorflow().float32))


class TfliteTarget(Target):
    """TFLite for the CPU (LiteRT/XNNPACK): every quantization, uint8/int8/float32 integer I/O."""

    def convert(self, model: Any, options: Any, calibration: np.ndarray | None) -> bytes:
        return convert(model, options, calibration)

    def embed(self, data: bytes, spec: ModelSpec, info: ExportInfo) -> bytes:
        return embed_tflite_metadata(data, spec, info)


TFLITE = TfliteTarget(
    name="tflite",
    suffix=".tflite",
    quantizations=("fp32", "fp16", "dynamic", "int8", "qat"),
    io_types=("uint8", "int8", "float32"),
    devices=("cpu",),
)
