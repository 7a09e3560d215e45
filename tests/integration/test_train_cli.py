"""`edgetl train` output conventions: --json is clean JSON on stdout, --quiet, the end message, exit codes.

Each training is tiny (MobileNetV2 alpha 0.35 at 32 px, no pretrained weights, one head epoch):
a few seconds each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgetl.cli import main

TINY = ["--backbone", "mobilenet_v2", "--weights", "none", "--alpha", "0.35", "--input-size", "32",
        "--epochs", "1", "--fine-tune-epochs", "0", "--batch-size", "8"]


def _train(data: Path, run: Path, *extra: str):
    return CliRunner().invoke(main, ["train", str(data), "-o", str(run), *TINY, *extra])


def test_json_is_the_only_thing_on_stdout_and_tensorflow_noise_is_off(tiny_dataset: Path, tmp_path: Path) -> None:
    # A real process: Keras' progress bars and TensorFlow's native logs write to the real stdout/stderr.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # edgetl's default level
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "edgetl", "train", str(tiny_dataset), "-o", str(run), *TINY, "--json",
         "--json-file", str(tmp_path / "train.json")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # nothing but the JSON object
    assert {"run_dir", "model", "seconds", "validation", "files", "next"} <= set(result)
    assert result["model"] == str(run / "model.keras") and Path(result["model"]).is_file()
    assert str(run / "model_spec.json") in result["files"] and str(run / "config.json") in result["files"]
    assert any(cmd.startswith(f"edgetl eval {run}") for cmd in result["next"])
    assert json.loads((tmp_path / "train.json").read_text()) == result
    assert "phase1" in proc.stderr  # progress went to stderr
    # stderr is a pipe here, as in a CI log: one line per epoch, no carriage-return progress bars.
    assert "\r" not in proc.stderr and "\x1b[" not in proc.stderr
    assert sum(" - loss: " in line for line in proc.stderr.splitlines()) == 1  # the one epoch, one line
    for noise in ("oneDNN custom operations", "absl::InitializeLog", "Could not find cuda drivers", "cuInit"):
        assert noise not in proc.stderr, noise


def test_normal_end_lists_what_was_written_and_the_next_commands(tiny_dataset: Path, tmp_path: Path) -> None:
    result = _train(tiny_dataset, tmp_path / "run")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"wrote {tmp_path / 'run'}: model.keras (the trained model), model_spec.json (the model contract)" in out
    assert "next:" in out and f"edgetl eval {tmp_path / 'run'}" in out and "edgetl export" in out
    assert "phase1" not in out and "Epoch" not in out  # progress is on stderr
    assert "phase1" in result.stderr


def test_quiet_prints_only_the_model_path(tiny_dataset: Path, tmp_path: Path) -> None:
    result = _train(tiny_dataset, tmp_path / "run", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{tmp_path / 'run' / 'model.keras'}\n"
    assert result.stderr == ""


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "invalid training options"),
    (["--good-class", "nonexistent"], "not among the data set's classes"),
])  # fmt: skip
def test_bad_input_exits_2_with_the_reason_on_stderr(tiny_dataset: Path, tmp_path: Path, args, message) -> None:
    result = CliRunner().invoke(main, ["train", str(tiny_dataset), "-o", str(tmp_path / "run"), *TINY, *args,
                                       "--json"])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stdout == ""


def test_an_existing_run_folder_is_bad_input(tiny_dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").write_bytes(b"")
    result = _train(tiny_dataset, tmp_path / "run")
    assert result.exit_code == 2 and "already holds a run" in result.stderr


@pytest.mark.parametrize("content", [b"{broken", b'{"epochs": 3, "colour": "red"}'], ids=["junk", "foreign"])
def test_resume_with_damaged_saved_options_is_bad_input(tiny_dataset: Path, tmp_path: Path, content: bytes) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "state.json").write_text('{"epoch": 1}')
    (run / "checkpoints" / "options.json").write_bytes(content)
    result = _train(tiny_dataset, run, "--resume")
    assert result.exit_code == 2, result.output
    assert "options.json" in result.output and "Traceback" not in result.output


def test_json_file_into_a_missing_folder_fails_before_training(tiny_dataset: Path, tmp_path: Path) -> None:
    result = _train(tiny_dataset, tmp_path / "run", "--json-file", str(tmp_path / "absent" / "train.json"))
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written
