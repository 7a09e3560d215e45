"""The export validation gates on what matters: decision accuracy and defect recall, beyond chance."""

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
    assert kinds == [("drop", 25.0, 5.0), ("drop", 50.0, 5.0)]  # 2 flips of 8: p 0.25, the hard limit fails it
    with pytest.raises(MetricDropError, match=r"defect recall fell 50.0 points .*4 -> 2 of 4 defects found \(2 lost"):
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


def _flips(n: int, defects: int, lost: int, gained: int, lost_defects: int = 0):
    """``n`` images (the first ``defects`` defective), all right in the float model but ``gained`` of them,
    which the export gets right; the export loses ``lost`` good images and ``lost_defects`` defects."""
    labels = np.where(np.arange(n) < defects, 0, 1)
    right = np.where((labels == 0)[:, None], [[0.9, 0.1]], [[0.1, 0.9]]).astype(np.float32)
    reference, exported = right.copy(), right.copy()
    wrong = right[:, ::-1]
    reference[defects : defects + gained] = wrong[defects : defects + gained]  # float misses, export right
    exported[n - lost :] = wrong[n - lost :]
    exported[:lost_defects] = wrong[:lost_defects]
    return exported, reference, labels


def test_a_few_flips_among_many_images_are_chance_not_a_failure():
    # The trial: 180 -> 177 of 200 images right (-1.5 points) was refused; 1 defect of 63 too.
    exported, reference, labels = _flips(200, 63, lost=2, gained=0, lost_defects=1)
    report = compare("m.tflite", exported, reference, labels, "int8", spec=SPEC)
    assert report.passed, report.failures
    tests = {t.metric: t for t in report.paired}
    assert (tests["decision_accuracy"].lost, tests["decision_accuracy"].gained) == (3, 0)
    assert tests["decision_accuracy"].p_value == 0.125 and tests["defect_recall"].p_value == 0.5
    payload = report.to_dict()["paired_tests"]
    assert payload["defect_recall"]["out_of"] == 63 and payload["defect_recall"]["lost"] == 1


def test_many_losses_and_no_gains_fail_even_when_the_drop_is_small():
    # 1000 images: 12 lost, none gained = -1.2 points, under the hard limit, but p = 2^-12.
    exported, reference, labels = _flips(1000, 300, lost=12, gained=0)
    report = compare("m.tflite", exported, reference, labels, "int8", spec=SPEC)
    assert [f.kind for f in report.failures] == ["paired"]
    with pytest.raises(MetricDropError, match=r"decision accuracy is worse than the float model's beyond chance "
                                              r"\(1000 -> 988 of 1000 images right \(12 lost, 0 gained"):
        raise_for(report)
    # as many gains as losses: a wash, whatever the count
    exported, reference, labels = _flips(1000, 300, lost=12, gained=12)
    assert compare("m.tflite", exported, reference, labels, "int8", spec=SPEC).passed
    # alpha 0 turns the paired test off; the hard limit remains
    exported, reference, labels = _flips(1000, 300, lost=12, gained=0)
    assert compare("m.tflite", exported, reference, labels, "int8", spec=SPEC, alpha=0.0).passed


def test_the_advice_never_repeats_a_lever_already_pulled():
    from edgetl.exporters import ExportOptions

    exported, reference, labels = _collapse()
    report = compare("m.tflite", exported, reference, labels, "int8", spec=SPEC)

    def advice(**options):
        with pytest.raises(MetricDropError) as caught:
            raise_for(report, ExportOptions(quantization="int8", **options))
        return str(caught.value)

    first = advice()
    assert "--calib-samples 500" in first and "--quant qat" in first and "--max-drop" in first
    followed = advice(calib_samples=500)
    assert "--calib-samples" not in followed and "--calib DIR" in followed and "--quant qat" in followed
    from pathlib import Path

    assert "--calib DIR" not in advice(calib_samples=800, calib_data=Path("line-images"))
    assert "--full-int8" not in first
    assert "drop --full-int8" in advice(float_head=False)  # the lever that fixed ELPV's broken calibration
    # A --calib folder of 1 image: the advice counts what the export had, not what --calib-samples asked for.
    with pytest.raises(MetricDropError) as caught:
        raise_for(report, ExportOptions(quantization="int8", calib_data=Path("one-cell")), calibrated_on=1)
    assert "the --calib folder gave 1" in str(caught.value) and "used 200" not in str(caught.value)
    with pytest.raises(MetricDropError) as caught:  # no --calib: the images came from the run's train split
        raise_for(report, ExportOptions(quantization="int8"), calibrated_on=40)
    assert "the run's train split gave 40" in str(caught.value) and "--calib folder" not in str(caught.value)
