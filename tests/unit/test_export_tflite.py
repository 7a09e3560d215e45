"""TFLite export of the tiny run at every quantization, run back through the runtime (LiteRT)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgetl_runtime
from edgetl.exporters import (
    AgreementError,
    AtolError,
    MetricDropError,
    ValidationError,
    ExportError,
    ExportOptions,
    export,
    report_path_for,
)
from edgetl.exporters.validate import validate
from edgetl.run import load_run
from edgetl_runtime.metadata import read_embedded
from edgetl_runtime.preprocess import load_image


def _input_details(path: Path) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    return interpreter.get_input_details()[0]


@pytest.mark.parametrize("quant", ["fp32", "fp16", "dynamic", "int8", "qat"])
def test_every_tflite_quantization_exports_validates_and_carries_metadata(tiny_run, tmp_path, quant):
    out = tmp_path / f"model-{quant}.tflite"
    result = export(tiny_run, ExportOptions(format="tflite", quantization=quant), out)

    assert result.path == out and out.is_file() and result.size_bytes == out.stat().st_size
    assert result.report.passed and result.report.n_images == 16
    assert result.report.decisive_agreement >= result.report.tolerance.min_agreement
    spec, _, info = read_embedded(out)
    assert spec == load_run(tiny_run).spec  # the run's contract, unchanged
    assert spec.labels == ("defect", "good") and spec.input_size == (32, 32)
    assert (info.quantization, info.format, spec.provenance.backbone, spec.provenance.data_hash) == (
        quant, "tflite", "tiny_test_net", "test")
    assert spec.input.normalization == "model" and info.created.endswith("+00:00")
    report = json.loads(report_path_for(out).read_text())
    assert report["validation"]["passed"] and report["export"]["quantization"] == quant
    # The runtime predicts from the file alone.
    run = load_run(tiny_run)
    path, label = run.split("val")[0]
    assert edgetl_runtime.load(out).predict(path).top_class in run.spec.labels
    if quant in ("int8", "qat"):
        details = _input_details(out)
        assert details["dtype"] == np.uint8 and details["quantization"] == (1.0, 0)  # raw pixels in
    if quant == "fp32":
        assert result.report.max_abs_diff <= 1e-3 and result.report.agreement == 1.0


def test_int8_with_int8_io_takes_shifted_pixels(tiny_run, tmp_path):
    out = tmp_path / "model.tflite"
    export(tiny_run, ExportOptions.for_int8(io_type="int8"), out)
    details = _input_details(out)
    assert details["dtype"] == np.int8 and details["quantization"] == (1.0, -128)
    assert list(details["shape"]) == [1, 32, 32, 3]


def test_int8_calibrates_on_a_given_folder(tiny_run, tiny_dataset, tmp_path):
    result = export(tiny_run, ExportOptions.for_int8(calib_data=tiny_dataset, calib_samples=8), tmp_path / "m.tflite")
    assert result.calibration_images == 8 and result.report.passed


def test_validation_against_a_different_float_model_raises_atol_error(tiny_run, tmp_path):
    out = tmp_path / "model.tflite"
    export(tiny_run, ExportOptions(validate=False), out)
    run = load_run(tiny_run)
    perturbed = run.load_model()
    weights = perturbed.get_layer("scores").get_weights()
    perturbed.get_layer("scores").set_weights([weights[0] * 1.5, weights[1]])
    from edgetl.data.loading import sample_images

    val = sample_images(None, run.split("val"), run.spec.input, 16, "validation")
    report = validate(out, perturbed, val.x, val.label_indices(run.spec.labels), "fp32", spec=run.spec)
    assert not report.passed and report.max_abs_diff > 1e-3
    assert ("atol", 1e-3) in [(f.kind, f.limit) for f in report.failures]
    from edgetl.exporters.validate import raise_for

    with pytest.raises(ValidationError, match="exceeds 0.001 for fp32") as info:
        raise_for(report)
    assert isinstance(info.value, (AgreementError, AtolError, MetricDropError)) and info.value.report is report


def test_killed_export_leaves_no_file_under_the_final_name(tiny_run, tmp_path):
    from edgetl_runtime.atomic import atomic_path

    out = tmp_path / "model.tflite"
    out.write_bytes(b"the previous, working model")
    with pytest.raises(KeyboardInterrupt):  # interrupted half-way through writing
        with atomic_path(out) as tmp:
            tmp.write_bytes(b"half a mod")
            raise KeyboardInterrupt
    assert out.read_bytes() == b"the previous, working model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]

    # A failing export (here: int8 of a bare model without calibration images) writes nothing either.
    fresh = tmp_path / "fresh.tflite"
    run = load_run(tiny_run)
    with pytest.raises(ExportError, match="calibration"):
        export(run.load_model(), ExportOptions(quantization="int8"), fresh, spec=run.spec)
    assert not fresh.exists()


def test_preprocessing_of_calibration_is_the_runtime_pipeline(tiny_run):
    from edgetl.data.loading import sample_images

    run = load_run(tiny_run)
    train = sample_images(None, run.split("train"), run.spec.input, 200, "calibration")
    path = str(train.samples[0].path)
    np.testing.assert_array_equal(train.x[0], load_image(path, (32, 32), "rgb"))
    assert train.x.dtype == np.uint8 and set(train.label_indices(run.spec.labels).tolist()) == {0, 1}
