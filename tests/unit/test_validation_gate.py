"""The export validation gates on what matters: decision accuracy and defect recall."""

from __future__ import annotations

import numpy as np
import pytest

from edgetl.exporters.validate import compare, raise_for
from edgetl.exporters import MetricDropError
from edgetl_runtime.contract import InputSpec, ModelSpec

SPEC = ModelSpec(labels=("defect", "good"), good_labels=("good",), input=InputSpec(32, 32))


def _collapse():
    """8 images, all right in the float model (4 defects at 0.55-0.6, near-ties); the export misses 2 of them."""
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    reference = np.array([[0.59, 0.41], [0.58, 0.42], [0.56, 0.44], [0.55, 0.45],
                          [0.05, 0.95], [0.1, 0.9], [0.02, 0.98], [0.1, 0.9]], np.float32)  # fmt: skip
    exported = reference.copy()
    exported[[2, 3]] = [[0.45, 0.55], [0.47, 0.53]]
    return exported, reference, labels


def test_an_accuracy_collapse_fails_even_when_decisive_images_agree():
    exported, reference, labels = _collapse()
    report = compare("m.tflite", exported, reference, labels, "int8", spec=SPEC)
    # Before: only agreement on "decisive" images counted, and all 4 of them agreed: "pass".
    assert report.decisive_images == 4 and report.decisive_agreement == 1.0
    assert report.float_metrics["decision_accuracy"] == 1.0 and report.exported_metrics["decision_accuracy"] == 0.75
    assert report.exported_metrics["defect_recall"] == 0.5
    assert report.delta("decision_accuracy") == pytest.approx(-25.0) and report.delta("defect_recall") == pytest.approx(-50.0)
    kinds = [(f.kind, round(f.measured, 1), f.limit) for f in report.failures]
    assert kinds == [("drop", 25.0, 1.0), ("drop", 50.0, 1.0)]
    with pytest.raises(MetricDropError, match=r"defect recall fell 50.0 points .*4 -> 2 of 4 defects found"):
        raise_for(report)
    payload = report.to_dict()
    assert payload["float"]["defect_recall"] == 1.0 and payload["exported"]["defect_recall"] == 0.5
    assert payload["delta_points"]["defect_recall"] == pytest.approx(-50.0)


def test_max_drop_is_the_allowance():
    exported, reference, labels = _collapse()
    assert compare("m.tflite", exported, reference, labels, "int8", spec=SPEC, max_drop=50.0).passed
    assert not compare("m.tflite", exported, reference, labels, "int8", spec=SPEC, max_drop=49.0).passed


def test_the_threshold_of_the_contract_decides():
    exported, reference, labels = _collapse()
    lenient = SPEC.with_threshold(0.4, "test")  # defect score >= 0.4: the export's 0.45/0.47 still count
    assert compare("m.tflite", exported, reference, labels, "int8", spec=lenient).passed


def test_unlabelled_validation_images_gate_on_agreement_only():
    exported, reference, _ = _collapse()
    report = compare("m.tflite", exported, reference, np.full(8, -1), "int8", spec=SPEC)
    assert report.exported_metrics is None and report.passed
    assert "not compared" in report.note  # a pass that compared no decision says so


def test_the_report_names_what_ran_the_export(tiny_run, tmp_path):
    from edgetl.exporters import ExportOptions, export

    result = export(tiny_run, ExportOptions(), tmp_path / "m.tflite")
    report = result.report.to_dict()
    assert (report["engine"], report["provider"], report["device"]) == ("litert", "xnnpack", "cpu")
