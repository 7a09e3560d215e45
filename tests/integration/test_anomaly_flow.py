"""Issue 13 end to end: good images -> `edgetl train --task anomaly` -> eval -> export -> the TF-free runtime.

The data is a synthetic aligned texture (``aligned_part`` in tests/conftest.py: busbars at fixed
places, two kinds of good part) with injected scratches and spots, written as real PNG files;
EfficientNet-Lite0 at 96 px keeps it quick.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgetl.cli import main

SIZE = 96


def write_parts(folder: Path, n: int, defect: bool, rng: np.random.Generator, make_part) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(make_part(rng, i % 2, defect, SIZE)).save(folder / f"{i:03d}.png")


@pytest.fixture(scope="module")
def parts(tmp_path_factory, make_part) -> Path:
    root = tmp_path_factory.mktemp("parts")
    rng = np.random.default_rng(0)
    write_parts(root / "train" / "good", 50, False, rng, make_part)
    write_parts(root / "train" / "crack", 6, True, rng, make_part)  # never fitted: validation only
    write_parts(root / "test" / "good", 16, False, rng, make_part)
    write_parts(root / "test" / "crack", 16, True, rng, make_part)
    return root


@pytest.fixture(scope="module")
def anomaly_run(parts: Path, tmp_path_factory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("runs") / "anomaly"
    result = CliRunner().invoke(main, ["train", str(parts / "train"), "-o", str(run), "--task", "anomaly",
                                       "--input-size", str(SIZE), "--dims", "48", "--max-false-alarm", "0.1",
                                       "--top-area", "0", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return run, json.loads(result.stdout)


def test_train_fits_good_images_only_and_writes_a_run_with_an_anomaly_contract(anomaly_run):
    run, payload = anomaly_run
    spec = json.loads((run / "model_spec.json").read_text())
    assert spec["task"] == "anomaly" and spec["labels"] == ["good", "anomaly"] and spec["good_labels"] == ["good"]
    assert spec["output"]["heatmap"] == [SIZE // 16, SIZE // 16]
    assert spec["decision"]["threshold"] == 0.5 and "held-out good" in spec["decision"]["threshold_source"]
    split = json.loads((run / "split.json").read_text())
    assert {label for _, label in split["train"]} == {"good"} and len(split["train"]) == 40
    assert sorted({label for _, label in split["val"]}) == ["anomaly", "good"]
    assert all("crack" not in path for path, _ in split["train"])  # no defect is ever fitted
    validation = payload["validation"]
    assert validation["held_out_good"] == 10 and validation["defects"] == 6
    assert json.loads((run / "config.json").read_text())["method"]["top_cells"] == 1  # small defects: the worst cell
    assert validation["false_alarm_rate"] <= 0.1
    assert validation["roc_auc"] > 0.9
    assert (run / "anomaly_scores.png").is_file() and not (run / "cache").exists()


def test_eval_maps_every_defect_folder_to_anomaly_and_finds_them(anomaly_run, parts, tmp_path):
    run, _ = anomaly_run
    result = CliRunner().invoke(main, ["eval", str(run), str(parts / "test"), "--json", "--report-dir",
                                       str(tmp_path / "report"), "--heatmap", str(tmp_path / "heat")])  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["n"] == 32 and metrics["roc_auc"] > 0.95
    assert metrics["decision_accuracy"] > 0.8
    overlays = sorted((tmp_path / "heat").glob("*.png"))
    assert len(overlays) == 32 and sum("-defect-" in p.name for p in overlays) == metrics["confusion"]["tp"] + \
        metrics["confusion"]["fp"]


def test_int8_export_validates_scores_order_and_runs_tf_free_with_a_heatmap(anomaly_run, parts, tmp_path):
    run, _ = anomaly_run
    out = tmp_path / "anomaly-int8.tflite"
    result = CliRunner().invoke(main, ["export", str(run), "--format", "tflite", "--quant", "int8", "-o", str(out),
                                       "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    report = payload["validation"]
    # re-fitted statistics, the decision layer re-set on held-out good images, the file's own threshold (the rank
    # match over every validation image): said also without validation
    assert len(payload["adjusted"]) == 3 and "calls" in payload["adjusted"][2]
    assert payload["export"]["threshold"] is not None
    assert report["passed"] and report["rank_agreement"] > 0.9
    assert "synthetic defect" in report["note"]
    assert "re-fitted to this file's quantized features" in report["note"] and "threshold re-set" in report["note"]
    assert out.stat().st_size < 20e6

    # On the device: no TensorFlow importable; the verdict, the score and a heatmap overlay per image.
    images = sorted((parts / "test" / "crack").glob("*.png"))[:2] + sorted((parts / "test" / "good").glob("*.png"))[:2]
    script = (
        "import sys\n"
        "class NoTF:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'tf_keras', 'keras'):\n"
        "            raise ImportError('no TensorFlow on this device')\n"
        "sys.meta_path.insert(0, NoTF())\n"
        "from edgetl_runtime.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    heat_dir = tmp_path / "heat"
    done = subprocess.run([sys.executable, "-c", script, "predict", str(out), *map(str, images), "--json",
                           "--heatmap", str(heat_dir)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["verdict"] for r in rows[:2]] == ["defect", "defect"]
    assert all(np.array(r["heatmap"]).shape == (SIZE // 16, SIZE // 16) for r in rows)
    for row in rows:  # --top-area 0: the score is the hottest cell's
        assert np.array(row["heatmap"]).max() == pytest.approx(row["defect_score"], abs=0.02)
    written = sorted(heat_dir.glob("*.png"))
    assert len(written) == 4 and Image.open(written[0]).size == (SIZE, SIZE)


def test_onnx_export_carries_the_heatmap_too(anomaly_run, tmp_path):
    import edgetl_runtime

    run, _ = anomaly_run
    out = tmp_path / "anomaly.onnx"
    result = CliRunner().invoke(main, ["export", str(run), "--format", "onnx", "-o", str(out)])
    assert result.exit_code == 0, result.output
    model = edgetl_runtime.load(out)
    assert model.has_heatmap and model.info.spec.task == "anomaly"
    split = json.loads((run / "split.json").read_text())
    pred = model.predict(split["val"][0][0])
    assert pred.heatmap.shape == (SIZE // 16, SIZE // 16) and pred.verdict in ("good", "defect")


def test_options_of_the_other_task_and_no_good_images_are_clear_errors(parts, tmp_path, make_part):
    runner = CliRunner()
    wrong = runner.invoke(main, ["train", str(parts / "train"), "-o", str(tmp_path / "a"), "--task", "anomaly",
                                 "--epochs", "3"])  # fmt: skip
    assert wrong.exit_code == 2 and "--epochs" in wrong.output and "classification" in wrong.output
    other = runner.invoke(main, ["train", str(parts / "train"), "-o", str(tmp_path / "b"), "--max-false-alarm", "0.1"])
    assert other.exit_code == 2 and "--max-false-alarm" in other.output and "anomaly" in other.output
    only_cracks = tmp_path / "cracks"
    write_parts(only_cracks / "crack", 3, True, np.random.default_rng(1), make_part)
    none_good = runner.invoke(main, ["train", str(only_cracks), "-o", str(tmp_path / "c"), "--task", "anomaly"])
    assert none_good.exit_code == 2 and "--good-class" in none_good.output
    assert not (tmp_path / "c").exists()


def test_benchmark_gives_each_export_its_roc_auc_and_latency(anomaly_run, tmp_path):
    run, _ = anomaly_run
    result = CliRunner().invoke(main, ["benchmark", str(run), "--formats", "tflite:fp32", "--runs", "3",
                                       "--warmup", "1", "-o", str(tmp_path), "--json"])  # fmt: skip
    assert result.exit_code in (0, 1), result.output
    table = json.loads(result.stdout)
    assert "synthetic defect" in table["data"] and table["float_metrics"]["roc_auc"] > 0.9
    rows = {row["quantization"]: row for row in table["rows"]}
    assert set(rows) == {"fp32"}  # one row keeps the suite short; the int8 file is the export test's
    for row in rows.values():
        assert row["error"] is None and row["metrics"]["roc_auc"] > 0.9 and row["p50_ms"] > 0


def test_a_few_labelled_defects_move_the_threshold_to_a_target_recall(anomaly_run, parts, tmp_path):
    import shutil

    run, _ = anomaly_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    result = CliRunner().invoke(main, ["eval", str(copy), str(parts / "test"), "--target-recall", "1.0", "--json",
                                       "--no-report"])  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["validation_recall"] == 1.0 and metrics["defect_recall"] > 0.9
    spec = json.loads((copy / "model_spec.json").read_text())
    # The lowest validation defect's score: all 6 are caught, with fewer false alarms than at 0.5.
    assert spec["decision"]["threshold"] != 0.5 and "target recall" in spec["decision"]["threshold_source"]
