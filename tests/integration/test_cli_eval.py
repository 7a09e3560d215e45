"""``edgetl eval``: thresholds chosen by what scrap costs, the rates at the threshold, one report folder per run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgetl.cli import main
from edgetl.thresholds import threshold_for_false_alarm


@pytest.fixture
def run(tiny_run: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny run: eval stores thresholds in the run's contract."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def _eval(*args) -> object:
    return CliRunner().invoke(main, ["eval", *map(str, args)])


def test_max_false_alarm_stores_the_threshold_and_says_where_and_what_it_replaced(run, tiny_dataset):
    out = _eval(run, tiny_dataset, "--max-false-alarm", "0.1")
    assert out.exit_code == 0, out.output
    text = " ".join(out.stdout.split())  # rich may wrap the table's cells; the sentence below is one line
    assert "false-reject rate" in text and "escape rate" in text
    spec_path = run / "model_spec.json"
    assert f"stored threshold" in out.stdout and f"in {spec_path} (was 0.5, schema 1 metadata)" in out.stdout
    stored = json.loads(spec_path.read_text())["decision"]
    assert "max false alarm 0.1 on the validation split" in stored["threshold_source"]

    metrics = json.loads((run / "eval" / tiny_dataset.name / "metrics.json").read_text())
    assert metrics["threshold"] == pytest.approx(stored["threshold"])
    assert metrics["validation_false_alarm"] <= 0.1 and metrics["threshold_stored"]["previous"] == 0.5
    c = metrics["confusion"]
    assert metrics["false_reject_rate"] == pytest.approx(c["fp"] / (c["fp"] + c["tn"]))
    assert metrics["escape_rate"] == pytest.approx(c["fn"] / (c["fn"] + c["tp"]))

    # A second evaluation keeps the first one's report and says which threshold it replaced.
    again = _eval(run, tiny_dataset, "--target-recall", "1.0", "--json")
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout)
    assert second["report_dir"] == str(run / "eval" / f"{tiny_dataset.name}-2")
    assert second["threshold_stored"]["previous"] == pytest.approx(stored["threshold"])
    assert (run / "eval" / tiny_dataset.name / "metrics.json").is_file()


def test_false_alarm_threshold_rule():
    truth = np.array([0] * 10 + [1] * 3, bool)
    scores = np.r_[np.linspace(0.0, 0.9, 10), [0.5, 0.8, 0.95]]
    t = threshold_for_false_alarm(truth, scores, 0.2)  # 2 of 10 good images may be rejected
    assert np.sum(scores[~truth] >= t) == 2 and np.sum(scores[~truth] >= np.nextafter(t, 0)) == 3
    assert threshold_for_false_alarm(truth, scores, 0.0) > 0.9  # not one good image rejected
    with pytest.raises(ValueError, match="no good images"):
        threshold_for_false_alarm(np.ones(3, bool), np.ones(3), 0.1)


@pytest.mark.parametrize("flag, value", [("--max-false-alarm", "0.05"), ("--target-recall", "0.9")])
def test_threshold_rules_need_a_run_folder(tiny_run, tiny_dataset, tmp_path, flag, value):
    import edgetl

    exported = edgetl.export(tiny_run, edgetl.ExportOptions(), tmp_path / "m.tflite").path
    out = _eval(exported, tiny_dataset, flag, value)
    assert out.exit_code == 2 and f"{flag} needs a run folder" in out.output


def test_only_one_way_to_set_the_threshold(run, tiny_dataset):
    out = _eval(run, tiny_dataset, "--max-false-alarm", "0.05", "--target-recall", "0.9")
    assert out.exit_code == 2 and "one way" in out.output
    assert _eval(run, tiny_dataset, "--max-false-alarm", "1.5").exit_code == 2  # a share, below 1
