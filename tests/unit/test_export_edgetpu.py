"""Edge TPU export: uint8 I/O, batch 1, op-by-op compatibility, the compiler (or how to run it)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edgetl.exporters import ExportError, ExportOptions, export
from edgetl.exporters.edgetpu import EDGETPU_OPS, check_compatibility
from edgetl_runtime.metadata import read_embedded


def test_edgetpu_export_maps_every_op_and_explains_the_compiler(tiny_run, tmp_path):
    out = tmp_path / "coral.tflite"
    result = export(tiny_run, ExportOptions.for_edgetpu(), out)

    tpu = result.edgetpu.to_dict()
    assert tpu["fully_mapped"] and tpu["cpu_ops"] == 0 and tpu["first_cpu_op"] is None
    assert "CONV_2D" in tpu["ops"] and "DEPTHWISE_CONV_2D" in tpu["ops"]
    assert read_embedded(out).export.format == "edgetpu" and result.report.passed
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(out)).get_input_details()[0]
    assert details["dtype"] == np.uint8 and list(details["shape_signature"]) == [1, 32, 32, 3]
    if shutil.which("edgetpu_compiler"):
        assert result.path == tmp_path / "coral_edgetpu.tflite" and read_embedded(result.path).export.compiled_for == "edgetpu"
    else:
        assert tpu["compiled_path"] is None and result.path == out and "not compiled" in result.note
        assert f"edgetpu_compiler -s -o {tmp_path} {out}" in tpu["compiler_log"]
        assert "apt-get install edgetpu-compiler" in tpu["compiler_log"]


def _int8_with_float_fallback() -> bytes:
    """A real conversion: int8 conv, then tf.math.sin (no int8 kernel) left in float, then dense."""
    from edgetl._tf import keras, tensorflow

    tf, k = tensorflow(), keras()
    inputs = k.Input((16, 16, 3), batch_size=1)
    h = k.layers.Conv2D(4, 3, activation="relu")(inputs)
    h = k.layers.Lambda(lambda t: tf.math.sin(t))(h)
    h = k.layers.GlobalAveragePooling2D()(h)
    model = k.Model(inputs, k.layers.Dense(2, activation="softmax")(h))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    converter.representative_dataset = lambda: ([rng.uniform(0, 255, (1, 16, 16, 3)).astype(np.float32)] for _ in range(4))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.inference_input_type = converter.inference_output_type = tf.uint8
    return converter.convert()


def test_compatibility_report_names_the_first_op_that_falls_back_to_the_cpu():
    report = check_compatibility(_int8_with_float_fallback())

    assert not report.fully_mapped
    first = report.first_cpu_op
    assert first.op in ("DEQUANTIZE", "SIN") and first.index > 0
    assert "CONV_2D" in [o.op for o in report.tpu_ops]
    assert all(o.supported for o in report.tpu_ops) and report.cpu_ops[0] is first
    assert any(o.op == "SIN" and not o.supported for o in report.cpu_ops)
    assert f"op #{first.index} {first.op} falls back to the CPU" in report.summary()


def test_a_float_model_is_not_edgetpu_compatible(tiny_run, tmp_path):
    out = tmp_path / "float.tflite"
    export(tiny_run, ExportOptions(validate=False), out)
    report = check_compatibility(out)
    assert report.first_cpu_op.index == 0 and "FLOAT32, not int8/uint8" in report.first_cpu_op.reason


def test_edgetpu_refuses_float_quantization_and_non_uint8_io():
    with pytest.raises(ExportError, match="only fully integer models"):
        ExportOptions(format="edgetpu", quantization="fp16")
    with pytest.raises(ExportError, match="uint8 input and output"):
        ExportOptions(format="edgetpu", quantization="int8", io_type="int8")
    assert "SOFTMAX" in EDGETPU_OPS and "SIN" not in EDGETPU_OPS
