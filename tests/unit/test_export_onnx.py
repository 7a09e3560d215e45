"""ONNX export of the tiny run (fp32, fp16, static int8 QDQ), run back through ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgetl_runtime
from edgetl.exporters import ExportError, ExportOptions, export, report_path_for
from edgetl_runtime.metadata import read_embedded


@pytest.mark.parametrize("quant", ["fp32", "fp16", "int8"])
def test_every_onnx_quantization_exports_validates_and_carries_metadata(tiny_run, tmp_path, quant):
    import onnx

    out = tmp_path / f"model-{quant}.onnx"
    result = export(tiny_run, ExportOptions(format="onnx", quantization=quant), out)

    assert result.report.passed and result.info.opset == 13
    spec, _, info = read_embedded(out)
    assert (info.format, info.quantization, spec.labels, info.opset) == ("onnx", quant, ("defect", "good"), 13)
    proto = onnx.load(out)
    assert {o.domain or "ai.onnx": o.version for o in proto.opset_import}["ai.onnx"] >= 13
    (inp,) = proto.graph.input
    assert inp.name == "image" and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 I/O
    assert not inp.type.tensor_type.shape.dim[0].HasField("dim_value")  # dynamic batch
    ops = {n.op_type for n in proto.graph.node}
    if quant == "int8":
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # static QDQ
    if quant == "fp16":
        assert "Cast" in ops
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
    if quant == "fp32":
        assert result.report.max_abs_diff <= 1e-3 and result.report.agreement == 1.0
    report = json.loads(report_path_for(out).read_text())
    assert report["export"]["opset"] == 13 and report["validation"]["n_images"] == 16
    # A whole batch runs in one call thanks to the dynamic batch dimension.
    model = edgetl_runtime.load(out)
    scores = model.scores(np.zeros((3, 32, 32, 3), np.uint8))
    assert scores.shape == (3, 2) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-2)


def test_onnx_dynamic_quantization_is_refused_with_a_reason():
    with pytest.raises(ExportError, match="Dynamic quantization is not offered for ONNX.*--quant int8"):
        ExportOptions(format="onnx", quantization="dynamic")


def test_output_suffix_must_match_the_format(tiny_run, tmp_path):
    with pytest.raises(ExportError, match=r"written as \.onnx"):
        export(tiny_run, ExportOptions(format="onnx"), tmp_path / "model.tflite")
