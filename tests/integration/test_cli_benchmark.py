"""`edgetl benchmark` from the command line: one row per export of a device, sane values, errors as rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgetl.cli import main
from edgetl_runtime.profiles import detect

CPU_ROWS = [("tflite", q) for q in ("fp32", "fp16", "dynamic", "int8", "qat")] + [("onnx", q) for q in ("fp32", "fp16", "int8")]
DEFAULT_ROWS = [row for row in CPU_ROWS if row[1] != "qat"]  # QAT trains: benchmarked when asked for by name


def test_qat_is_benchmarked_only_when_asked_for_by_name():
    from edgetl.benchmark import candidates, select
    from edgetl_runtime.profiles import load_profile

    cands = candidates(load_profile("cpu-x86_64"))
    assert [(c.format, c.quantization) for c in select(cands, None)] == DEFAULT_ROWS
    assert [(c.format, c.quantization) for c in select(cands, ["tflite"])] == DEFAULT_ROWS[:4]
    assert [(c.format, c.quantization) for c in select(cands, ["tflite:qat"])] == [("tflite", "qat")]


def _run(*args: object):
    return CliRunner().invoke(main, ["benchmark", *map(str, args)])


def _wide_run(tiny_run: Path, root: Path) -> Path:
    """Return a copy of ``tiny_run`` whose model has ~40k weights, so that weights dominate file sizes."""
    from edgetl._tf import keras

    k = keras()
    k.utils.set_random_seed(0)
    run = root / "wide_run"
    run.mkdir()
    for name in ("config.json", "split.json"):
        shutil.copy(tiny_run / name, run / name)
    inputs = k.Input((32, 32, 3), name="image")
    h = k.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    for i, width in enumerate((32, 128, 256)):
        h = k.layers.Conv2D(width, 3 if i == 0 else 1, strides=2 if i == 0 else 1, padding="same", use_bias=False)(h)
        h = k.layers.BatchNormalization()(h)
        h = k.layers.ReLU(6.0)(h)
    outputs = k.layers.Dense(2, activation="softmax", name="scores")(k.layers.GlobalAveragePooling2D()(h))
    k.Model(inputs, outputs).save(run / "model.keras")
    return run


@pytest.mark.slow
def test_cpu_profile_table_has_every_tflite_and_onnx_row(tiny_run, tmp_path):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    # every row: the post-training ones that run by default, and QAT asked for by name
    result = _run(tiny_run, "--profile", "cpu-x86_64", "--runs", 3, "--warmup", 1, "--json-file", out_json,
                  "--markdown", out_md, "--allow-busy", "-o", tmp_path / "exports",
                  "--formats", "tflite,onnx,tflite:qat")  # fmt: skip
    assert result.exit_code == 0, result.output
    table = json.loads(out_json.read_text())
    float_accuracy = table["float_metrics"]["decision_accuracy"]
    assert table["profile"] == "cpu-x86_64" and table["n_images"] > 0 and 0 <= float_accuracy <= 1
    assert table["host"]["cores"] >= 1 and table["host"]["date"]
    rows = {(r["format"], r["quantization"]): r for r in table["rows"]}
    assert list(rows) == CPU_ROWS
    for key, row in rows.items():
        assert row["error"] is None, (key, row["error"])
        assert row["size_bytes"] > 0 and Path(row["path"]).stat().st_size == row["size_bytes"], key
        accuracy = row["metrics"]["decision_accuracy"]
        assert 0 <= accuracy <= 1 and 0 <= row["agreement"] <= 1 and row["metrics"]["n"] == table["n_images"], key
        assert row["accuracy_delta"] == pytest.approx(100 * (accuracy - float_accuracy)), key
        assert 0 < row["p50_ms"] <= row["p99_ms"] and row["fps"] > 0, key
    assert rows["tflite", "fp32"]["agreement"] == 1.0 and rows["tflite", "fp32"]["accuracy_delta"] == 0
    assert rows["tflite", "int8"]["note"] == "profile target"
    md = out_md.read_text().splitlines()
    assert md[2].startswith("Machine: ") and md[4].startswith("| format | quant |") and len([line for line in md if line.startswith("| tflite") or line.startswith("| onnx")]) == 8
    assert "| tflite | int8 | cpu |" in out_md.read_text() and "profile target" in out_md.read_text()
    assert max(len(line) for line in result.stdout.splitlines()) <= 100  # the table fits 100 columns
    for fmt, quant in CPU_ROWS:  # one console table, every row in it
        assert any(fmt in line and f" {quant} " in line for line in result.stdout.splitlines()), (fmt, quant)


@pytest.mark.slow
def test_int8_files_are_smaller_than_fp32(tiny_run, tmp_path):
    run = _wide_run(tiny_run, tmp_path)
    out_json = tmp_path / "bench.json"
    result = _run(run, "--profile", "cpu-x86_64", "--formats", "tflite:fp32,tflite:int8", "--formats", "onnx:fp32,onnx:int8",
                  "--runs", 2, "--warmup", 0, "--json-file", out_json)  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = {(r["format"], r["quantization"]): r for r in json.loads(out_json.read_text())["rows"]}
    assert set(rows) == {("tflite", "fp32"), ("tflite", "int8"), ("onnx", "fp32"), ("onnx", "int8")}
    for fmt in ("tflite", "onnx"):
        assert rows[fmt, "int8"]["size_bytes"] < rows[fmt, "fp32"]["size_bytes"] / 2, rows
    assert (run / "benchmark" / "model-tflite-int8.tflite").is_file()  # default export folder


@pytest.mark.slow
def test_a_failing_row_does_not_abort_the_table(tiny_run, tmp_path):
    if detect().profile is not None and detect().profile.name == "coral-usb" and shutil.which("edgetpu_compiler"):
        pytest.skip("this host has a Coral USB and the compiler: the Edge TPU row would succeed")
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    result = _run(tiny_run, "--profile", "coral-usb", "--runs", 2, "--warmup", 0, "--json-file", out_json,
                  "--markdown", out_md, "--allow-busy", "-o", tmp_path / "exports")  # fmt: skip
    assert result.exit_code == 0, result.output
    tpu, cpu = json.loads(out_json.read_text())["rows"]
    assert (tpu["format"], tpu["device"]) == ("edgetpu", "edgetpu:usb") and tpu["error"]
    assert tpu["failed_at"] in ("export", "accuracy", "benchmark") and tpu["size_bytes"] > 0  # the file was written
    assert "edgetpu_compiler" in tpu["error"] or "Edge TPU" in tpu["error"]
    assert (cpu["format"], cpu["quantization"], cpu["device"]) == ("tflite", "int8", "cpu") and cpu["error"] is None
    assert cpu["note"] == "CPU fallback" and cpu["p50_ms"] > 0 and 0 <= cpu["metrics"]["decision_accuracy"] <= 1
    assert "error" in result.stdout and "| edgetpu | int8 | edgetpu:usb |" in out_md.read_text()


def test_bad_input_exits_2_with_a_reason(tiny_run, tmp_path):
    result = _run(tmp_path / "missing")
    assert result.exit_code == 2 and "no such run folder" in result.output
    result = _run(tiny_run, "--profile", "cpu-x86_64", "--formats", "edgetpu")
    assert result.exit_code == 2 and "not offered for this device" in result.output and "tflite:int8" in result.output
    result = _run(tiny_run, "--profile", "no-such-board")
    assert result.exit_code == 2 and "unknown device profile" in result.output
    result = _run(tiny_run, "--data", tmp_path / "nowhere", "--formats", "tflite:fp32")
    assert result.exit_code == 2 and "nowhere" in result.output


def test_tta_adds_a_row_for_the_profile_target_with_its_latency(tiny_run, tmp_path):
    out_json = tmp_path / "bench.json"
    result = _run(tiny_run, "--profile", "cpu-x86_64", "--formats", "tflite:int8", "--tta", "--runs", 3,
                  "--warmup", 1, "--json-file", out_json, "-o", tmp_path / "exports")  # fmt: skip
    assert result.exit_code == 0, result.output
    plain, tta = json.loads(out_json.read_text())["rows"]
    assert (plain["tta"], tta["tta"]) == (False, True) and "TTA" in tta["note"]
    assert (tta["format"], tta["quantization"]) == ("tflite", "int8") and tta["error"] is None
    assert tta["p50_ms"] > 0 and tta["metrics"]["decision_accuracy"] is not None
    assert (tmp_path / "exports" / "model-tflite-int8-tta.tflite").is_file()
