"""One artifact, one image set: the export report, `edgetl eval`, `edgetl benchmark` and
`edgetl-runtime bench --data` give the same decision metrics under the same names.

Before, "accuracy" was the argmax class in export and benchmark but the thresholded decision in
eval: after `eval --target-recall` one int8 file scored 85 % in benchmark and 100 % in eval.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgetl.cli import main
from edgetl_runtime.cli import main as runtime_main
from edgetl_runtime.decision import METRIC_NAMES

KEYS = (*METRIC_NAMES, "n", "threshold", "confusion")


def _same(a: dict, b: dict) -> dict:
    return {k: (a.get(k), b.get(k)) for k in KEYS if a.get(k) != b.get(k)}


@pytest.mark.slow
def test_export_eval_benchmark_and_bench_agree(tiny_run, tiny_dataset, tmp_path):
    runner = CliRunner()
    # A threshold away from 0.5 (as after --target-recall) is where the old definitions parted.
    import shutil

    from edgetl.run import load_run

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    loaded = load_run(run)
    loaded.with_spec(loaded.spec.with_threshold(0.3, "test"))

    out = tmp_path / "model.tflite"
    exported = runner.invoke(main, ["export", str(run), "--quant", "int8", "--data", str(tiny_dataset),
                                    "--max-drop", "100", "--json", "-o", str(out)])  # fmt: skip
    assert exported.exit_code == 0, exported.output
    payload = json.loads(exported.stdout)
    report = payload["validation"]
    # The float model decides at the run's 0.3; the int8 file at its own threshold, re-set by the export.
    own = payload["export"]["threshold"]
    assert report["n_images"] == 32 and report["float"]["threshold"] == 0.3 and report["exported"]["threshold"] == own
    assert own is not None and "re-set through this file's quantized graph" in payload["export"]["threshold_source"]

    evaluated = runner.invoke(main, ["eval", str(out), str(tiny_dataset), "--json", "--no-report"])
    assert evaluated.exit_code == 0, evaluated.output
    eval_metrics = json.loads(evaluated.stdout)

    at_zero = runner.invoke(main, ["eval", str(out), str(tiny_dataset), "--threshold", "0", "--json", "--no-report"])
    zero = json.loads(at_zero.stdout)  # --threshold: every image is a defect verdict, nothing stored
    assert (zero["threshold"], zero["defect_recall"], zero["threshold_source"]) == (0.0, 1.0, "given to eval")
    assert json.loads((run / "model_spec.json").read_text())["decision"]["threshold"] == 0.3

    float_eval = runner.invoke(main, ["eval", str(run), str(tiny_dataset), "--json", "--no-report"])
    assert float_eval.exit_code == 0, float_eval.output

    bench_json = tmp_path / "bench.json"
    benchmarked = runner.invoke(main, ["benchmark", str(run), "--profile", "cpu-x86_64", "--data", str(tiny_dataset),
                                       "--formats", "tflite:int8", "--runs", "2", "--warmup", "0", "--max-drop", "100",
                                       "--json-file", str(bench_json), "-o", str(tmp_path / "bench")])  # fmt: skip
    assert benchmarked.exit_code == 0, benchmarked.output
    table = json.loads(bench_json.read_text())
    (row,) = table["rows"]

    device = runner.invoke(runtime_main, ["bench", str(out), "--data", str(tiny_dataset), "--runs", "2",
                                          "--warmup", "0", "--json"])  # fmt: skip
    assert device.exit_code == 0, device.output
    bench_metrics = json.loads(device.stdout)["metrics"]

    for name, other in (("eval", eval_metrics), ("bench", bench_metrics)):
        assert not _same(report["exported"], other), f"export report vs {name}: {_same(report['exported'], other)}"
    # The benchmark exports its own file (its threshold matched on the run's validation split, not on --data):
    # eval of that file gives the row's numbers.
    row_eval = runner.invoke(main, ["eval", row["path"], str(tiny_dataset), "--json", "--no-report"])
    assert not _same(row["metrics"], json.loads(row_eval.stdout)), "benchmark row vs eval of its file"
    assert not _same(report["float"], json.loads(float_eval.stdout)), "float model: export report vs eval"
    assert not _same(report["float"], table["float_metrics"]), "float model: export report vs benchmark"
    delta = (row["metrics"]["decision_accuracy"] - table["float_metrics"]["decision_accuracy"]) * 100
    assert row["accuracy_delta"] == pytest.approx(delta)
