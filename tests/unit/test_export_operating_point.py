"""A lossy export keeps the float model's decision: a float classification head, and a threshold of its own."""

from __future__ import annotations

import numpy as np
import pytest

import edgetl_runtime
from edgetl.exporters import ExportOptions, export
from edgetl.exporters.onnx import head_nodes
from edgetl.exporters.operating_point import matched_threshold, reset_threshold
from edgetl.run import load_run
from edgetl_runtime.metadata import read_embedded


def _ops_and_io(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    return ops, interpreter.get_input_details()[0]["dtype"], interpreter.get_output_details()[0]["dtype"]


def test_int8_tflite_runs_its_head_in_float_and_decides_at_its_own_threshold(tiny_run, tmp_path):
    result = export(tiny_run, ExportOptions(quantization="int8"), tmp_path / "m.tflite")
    ops, inp, out = _ops_and_io(result.path)
    # uint8 pixels in, an int8 backbone, then the dense layer and softmax in float: a float32 output
    assert inp == np.uint8 and out == np.float32 and "DEQUANTIZE" in ops and ops.index("DEQUANTIZE") < ops.index("SOFTMAX")
    assert "CONV_2D" in ops
    _, _, info = read_embedded(result.path)
    assert info.threshold is not None and "re-set through this file's quantized graph" in info.threshold_source
    assert any("threshold re-set for this export" in step for step in result.adjusted)
    model = edgetl_runtime.load(result.path)
    assert model.info.spec.threshold == info.threshold and model.info.embedded_spec.threshold == 0.5
    # the validation judged the file at that threshold, the float model at the contract's
    assert result.report.exported_metrics["threshold"] == info.threshold
    assert result.report.float_metrics["threshold"] == 0.5
    assert edgetl_runtime.load(result.path, threshold=0.9).info.spec.threshold == 0.9  # the caller's still wins


def test_full_int8_keeps_every_op_integer(tiny_run, tmp_path):
    result = export(tiny_run, ExportOptions(quantization="int8", float_head=False), tmp_path / "m.tflite")
    ops, inp, out = _ops_and_io(result.path)
    assert inp == np.uint8 and out == np.uint8 and "DEQUANTIZE" not in ops


def test_fp32_keeps_the_contract_threshold(tiny_run, tmp_path):
    result = export(tiny_run, ExportOptions(), tmp_path / "m.tflite")
    assert read_embedded(result.path)[2].threshold is None and not result.adjusted


def test_int8_onnx_leaves_its_head_unquantized(tiny_run, tmp_path):
    import onnx

    result = export(tiny_run, ExportOptions(format="onnx", quantization="int8"), tmp_path / "m.onnx")
    graph = onnx.load(str(result.path)).graph
    softmax = next(n for n in graph.node if n.op_type == "Softmax")
    producers = {o: n for n in graph.node for o in n.output}
    assert producers[softmax.input[0]].op_type != "DequantizeLinear"  # float logits, not int8 ones
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)  # the backbone is int8
    assert read_embedded(result.path)[2].threshold is not None


def test_head_nodes_start_at_the_last_matrix_product(tiny_run):
    from edgetl.exporters.onnx import to_onnx

    names = head_nodes(to_onnx(load_run(tiny_run).load_model(), 13))
    assert names and "MatMul" in names[0] and names[-1].endswith("Softmax")


def test_matched_threshold_keeps_the_float_models_count_of_defect_verdicts():
    rng = np.random.default_rng(0)
    float_scores = rng.uniform(0, 1, 500)
    shifted = np.clip(float_scores + 0.05 + rng.normal(0, 0.01, 500), 0, 1)  # int8: higher, a little noisy
    for threshold in (0.12, 0.5, 0.9):
        t = matched_threshold(float_scores, shifted, threshold)
        assert np.sum(shifted >= t) == np.sum(float_scores >= threshold)
    assert matched_threshold(float_scores, float_scores, 0.3) == pytest.approx(0.3)  # an exact copy: unchanged
    reset = reset_threshold(float_scores, shifted, 0.5)
    assert reset.called == np.sum(float_scores >= 0.5) and reset.images == 500 and "0.5 ->" in reset.note()


def test_matched_threshold_at_the_ends_and_on_ties():
    f = np.array([0.1, 0.2, 0.3])
    assert matched_threshold(f, f + 0.1, 0.05) <= 0.2  # every image defective: the lowest export score stays in
    assert matched_threshold(f, f - 0.05, 0.9) > 0.25  # none: the highest stays out
    tied = np.array([0.2, 0.2, 0.2])
    assert matched_threshold(f, tied, 0.25) == 0.2  # ties cannot be split: they go together
