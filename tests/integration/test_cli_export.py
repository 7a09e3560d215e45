"""`edgetl export` from the command line: success, JSON output, and every bad input exits 2 cleanly."""

from __future__ import annotations

import json
import os
from pathlib import Path
import shutil

import pytest
from click.testing import CliRunner

from edgetl.cli import main


def _run(*args: str):
    return CliRunner().invoke(main, ["export", *map(str, args)])


def test_cli_int8_export_prints_json_and_writes_the_report(tiny_run, tmp_path):
    out = tmp_path / "model.tflite"
    result = _run(tiny_run, "--format", "tflite", "--quant", "int8", "--calib-samples", "12", "--json", "-o", out)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{"):])
    assert payload["export"]["format"] == "tflite" and payload["export"]["quantization"] == "int8"
    assert payload["validation"]["passed"] and payload["calibration_images"] == 12
    assert (tmp_path / "model.tflite.report.json").is_file() and out.stat().st_size == payload["size_bytes"]


def test_cli_prints_a_validation_table(tiny_run, tmp_path):
    result = _run(tiny_run, "--format", "onnx", "-o", tmp_path / "model.onnx")
    assert result.exit_code == 0, result.output
    assert "top-1 agreement" in result.output and "pass" in result.output and "model.onnx" in result.output


def test_cli_int8_table_says_each_adjustment_once(tiny_run, tmp_path):
    result = _run(tiny_run, "--quant", "int8", "--calib-samples", "12", "-o", tmp_path / "model.tflite")
    assert result.exit_code == 0, result.output
    assert result.output.count("threshold re-set for this export") == 1, result.output


def test_cli_device_profile_picks_format_and_quantization(tiny_run, tmp_path):
    result = _run(tiny_run, "--profile", "coral-usb", "--json", "-o", tmp_path / "coral.tflite")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{"):])
    assert payload["export"]["format"] == "edgetpu" and payload["edgetpu"]["fully_mapped"]


def test_cli_failing_validation_exits_nonzero_keeps_the_report_and_writes_no_model(tiny_run, tmp_path):
    out = tmp_path / "model.tflite"
    # int8 scores differ from float by ~1e-2; a forced 1e-6 tolerance must fail the command.
    result = _run(tiny_run, "--quant", "int8", "--atol", "1e-6", "-o", out)
    assert result.exit_code == 1, result.output
    assert "failed validation" in result.output and "exceeds 1e-06" in result.output
    assert "FAIL" in result.output and "Traceback" not in result.output
    report = json.loads((tmp_path / "model.tflite.report.json").read_text())
    assert not report["validation"]["passed"] and report["validation"]["tolerance"]["max_abs_diff"] == 1e-6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite.report.json"]  # no model, no staging left


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_model", "not a run folder of `edgetl train` (no model.keras in it)"),
        ("interrupted", "Finish it with `edgetl train DATA -o"),
        ("data_folder", "this is a folder of images, not a trained run. Train on it first: `edgetl train"),
        ("empty_calib", "unreadable"),
        ("calib_folder_without_images", "no image files"),
        ("missing_dir", "does not exist"),
        ("onnx_dynamic", "Dynamic quantization is not offered for ONNX"),
        ("bad_suffix", "written as .onnx"),
    ],
)
def test_cli_bad_input_exits_2_without_traceback(tiny_run, tiny_dataset, tmp_path, case, message):
    out = tmp_path / "model.tflite"
    args = [tiny_run, "-o", out]
    if case in ("no_model", "interrupted"):
        run = tmp_path / "run"
        shutil.copytree(tiny_run, run)
        (run / "model.keras").unlink()
        if case == "interrupted":
            (run / "checkpoints").mkdir()
            (run / "checkpoints" / "state.json").write_text("{}")
        args = [run, "-o", out]
    elif case == "data_folder":  # the quickstart's data folder given where the run goes
        args = [tiny_dataset, "-o", out]
    elif case == "empty_calib":
        calib = tmp_path / "calib"
        (calib / "good").mkdir(parents=True)
        (calib / "good" / "broken.png").write_bytes(b"not a png")
        (calib / "notes.txt").write_text("no images here")
        args += ["--quant", "int8", "--calib", calib]
    elif case == "calib_folder_without_images":
        (tmp_path / "nothing").mkdir()
        args += ["--quant", "int8", "--calib", tmp_path / "nothing"]
    elif case == "missing_dir":
        args = [tiny_run, "-o", tmp_path / "missing" / "model.tflite"]
    elif case == "onnx_dynamic":
        args += ["--format", "onnx", "--quant", "dynamic"]
    elif case == "bad_suffix":
        args += ["--format", "onnx"]
    result = _run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_cli_read_only_output_folder_exits_2(tiny_run, tmp_path):
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        locked = Path("/sys")  # read-only even for root (permission bits do not stop root)
        result = _run(tiny_run, "-o", locked / "model.tflite")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        try:
            result = _run(tiny_run, "-o", locked / "model.tflite")
        finally:
            locked.chmod(0o755)
    assert result.exit_code == 2 and "not writable" in result.output


def test_validate_on_aarch64_without_the_emulated_root_says_how_to_build_it(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGETL_ARM64_ROOT", str(tmp_path / "no-root"))
    result = _run(tiny_run, "--quant", "int8", "--validate-on", "aarch64", "-o", tmp_path / "pi.tflite")
    assert result.exit_code == 2, result.output
    assert "no emulated aarch64 root with edgetl-runtime at" in result.output and "benchmarks/arm64.py" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "pi.tflite").exists()


def test_a_stale_runtime_in_the_emulated_root_is_found(tmp_path):
    # The root's edgetl-runtime is a wheel of the source when benchmarks/arm64.py last ran: a validation there must
    # judge the runtime that ships, so check_root refuses a copy with any differing file, naming one.
    import edgetl_runtime

    from edgetl.exporters.emulated import differing_files

    host = Path(edgetl_runtime.__file__).parent
    copy = tmp_path / "edgetl_runtime"
    shutil.copytree(host, copy, ignore=shutil.ignore_patterns("__pycache__", "devices"))
    assert differing_files(host, copy) == []
    (copy / "decision.py").write_text((copy / "decision.py").read_text() + "\n# changed\n")
    (copy / "old_module.py").write_text("")
    assert differing_files(host, copy) == ["decision.py", "old_module.py"]


def test_validate_on_aarch64_emulates_once_and_gates_on_those_scores(tiny_run, tmp_path, monkeypatch):
    # The threshold pass and the gate run the same graph (the file that ships differs only in its metadata), so the
    # emulated root is entered once. The root is stood in for by the host runtime (CI has no aarch64 root): what is
    # checked is the plumbing, one call, and the report naming what ran.
    import edgetl_runtime

    from edgetl.exporters import emulated

    calls = []

    def host_scores(data, fmt, pixels, root=None):
        calls.append(len(pixels))
        path = tmp_path / f"scored.{fmt}"
        path.write_bytes(data)
        return edgetl_runtime.load(path).scores(pixels), {
            "engine": "litert", "device": "cpu", "provider": "xnnpack", "machine": "aarch64",
            "emulated": "stand-in", "runtime": "test"}  # fmt: skip

    monkeypatch.setattr(emulated, "check_root", lambda root: None)
    monkeypatch.setattr(emulated, "scores", host_scores)
    out = tmp_path / "pi.tflite"
    result = _run(tiny_run, "--quant", "int8", "--calib-samples", "12", "--validate-on", "aarch64", "--json", "-o", out)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])["validation"]
    assert len(calls) == 1 and calls[0] == report["n_images"], calls
    assert "aarch64, stand-in" in report["device"] and out.is_file()
