"""Hostile files, round two (issue 27), on the SDK side: run folders, data sets, exports, full disks.

Each test names what it did before the fix.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgetl.cli import main
from edgetl.run import load_run

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import fuzz_cases  # noqa: E402

RGB = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)


def _copy_run(tiny_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("*.lock"))
    return run


def _edgetl(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "import sys; from edgetl.cli import main; sys.exit(main())", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_eval_does_not_hang_on_a_split_file_that_names_a_fifo(tiny_run, tiny_dataset, tmp_path):
    # Before: split.json naming a FIFO hung `edgetl eval` (the leak check read it for its digest).
    run = _copy_run(tiny_run, tmp_path)
    split = json.loads((run / "split.json").read_text())
    fifo = tmp_path / "part.png"
    os.mkfifo(fifo)
    split["train"][0][0] = str(fifo)
    (run / "split.json").write_text(json.dumps(split))
    done = _edgetl("eval", run, tiny_dataset, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_data_inspect_lists_foreign_formats_and_pipes_without_a_traceback_or_a_program(tmp_path):
    # Before: DDS and BLP content gave a NotImplementedError traceback; EPS started Ghostscript.
    import fuzz

    ran = fuzz.fake_programs(tmp_path / "bin")
    data = tmp_path / "data"
    for label in ("defect", "good"):
        (data / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.roll(RGB, i + (10 if label == "good" else 0), axis=1)).save(data / label / f"{i}.png")
    for fmt in ("EPS", "DDS", "BLP"):
        (data / "defect" / f"{fmt.lower()}.png").write_bytes(fuzz_cases.foreign_image(fmt, RGB))
    os.mkfifo(data / "good" / "pipe.png")
    done = _edgetl("data", "inspect", data, "--json", timeout=120,
                   env={"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"})
    assert done.returncode == 1 and "Traceback" not in done.stderr and not ran.exists(), done.stderr[-2000:]
    unreadable = {Path(u["path"]).name: u["reason"] for u in json.loads(done.stdout)["unreadable"]}
    assert {name: reason.split(";")[0] for name, reason in unreadable.items()} == {
        "eps.png": "a PostScript (EPS) file by its content", "dds.png": "a DDS file by its content",
        "blp.png": "a BLP file by its content"}
    assert "pipe.png: not a regular file (a pipe, socket or device); left out" in done.stderr


@pytest.mark.parametrize("name, text, found", [
    ("model_spec.json", '{"schema_version": 2, "labels": ["defect", "good"], "input": {"height": 1' + "0" * 400 + "}}",
     "out of range"),
    ("config.json", '{"epochs": -' + "9" * 400 + "}", "out of range"),
])
def test_a_huge_number_in_a_run_file_is_a_clear_error(tiny_run, tiny_dataset, tmp_path, name, text, found):
    # Before: OverflowError tracebacks.
    run = _copy_run(tiny_run, tmp_path)
    (run / name).write_text(text)
    result = CliRunner().invoke(main, ["eval", str(run), str(tiny_dataset)])
    assert result.exit_code != 0 and found in result.output and name in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


def test_a_contract_that_does_not_fit_the_model_is_refused_even_without_validation(tiny_run, tmp_path):
    # Before: 3 labels for a 2-output model gave an unusable .onnx with --no-validate and exit 0;
    # a 64 px spec on a 32 px model surfaced only Keras' "Input 0 of layer ... incompatible".
    for field, value, found in (("labels", ["defect", "good", "scratch"], "names 3 labels, but model.keras has 2 outputs"),
                                ("input", "64", "says the model takes 64x64 px")):
        run = _copy_run(tiny_run, tmp_path / field)
        spec = load_run(run).spec.to_dict()
        if field == "labels":
            spec["labels"] = value
        else:
            spec["input"]["height"] = spec["input"]["width"] = int(value)
        (run / "model_spec.json").write_text(json.dumps(spec))
        out = tmp_path / field / "m.onnx"
        result = CliRunner().invoke(main, ["export", str(run), "--format", "onnx", "--no-validate", "-o", str(out)])
        assert result.exit_code != 0 and found in result.output, result.output
        assert not out.exists()


def test_an_output_under_a_file_says_so(tiny_run, tmp_path):
    # Before: -o img.png/out.onnx suggested `mkdir -p img.png`.
    (tmp_path / "img.png").write_bytes(b"a file")
    result = CliRunner().invoke(main, ["export", str(tiny_run), "--format", "onnx", "-o", str(tmp_path / "img.png" / "out.onnx")])
    assert result.exit_code != 0 and "img.png is a file, not a folder" in result.output and "mkdir" not in result.output


def test_a_staging_folder_left_by_a_killed_export_is_removed_by_the_next_one(tiny_run, tmp_path):
    # Before: kill -9 during an export left a .NAME.staging-* folder that later exports never cleaned.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".m.onnx.staging-{dead.pid}-abc123"
    stale.mkdir()
    (stale / "m.onnx").write_bytes(b"half a model")
    alive = tmp_path / f".m.onnx.staging-{os.getpid()}-def456"  # a live process's: kept
    alive.mkdir()
    result = CliRunner().invoke(main, ["export", str(tiny_run), "--format", "onnx", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    assert not stale.exists() and alive.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if ".staging-" in p.name) == [alive.name]


@pytest.fixture()
def small_disk(tmp_path):
    """A 2 MB tmpfs: a full disk on demand (mounting needs root, as in CI)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` but for about ``leave`` bytes."""
    with (disk / "filler").open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    with (disk / "filler").open("r+b") as f:
        f.truncate(max(0, (disk / "filler").stat().st_size - leave))


def test_a_full_disk_during_export_names_the_output_not_a_staging_folder(tiny_run, small_disk):
    # Before: the message on a full disk named no path (or a staging folder that no longer existed).
    _fill(small_disk, leave=4096)
    out = small_disk / "m.onnx"
    result = CliRunner().invoke(main, ["export", str(tiny_run), "--format", "onnx", "-o", str(out)])
    assert result.exit_code != 0 and result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert f"{out}: cannot write in {small_disk} (No space left on device)" in result.output, result.output
    assert ".staging-" not in result.output and not out.exists()
    assert [p.name for p in small_disk.iterdir()] == ["filler"]  # nothing half-written left behind


def test_a_full_disk_during_train_is_one_message_naming_the_run_folder(tiny_dataset, small_disk):
    # Before: a TensorFlow ResourceExhaustedError traceback.
    run = small_disk / "run"
    done = _edgetl("train", tiny_dataset, "-o", run, "--backbone", "mobilenet_v2", "--weights", "none",
                   "--input-size", "32", "--epochs", "2", "--fine-tune-epochs", "0", "--batch-size", "8", timeout=400)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and f"{run}: the disk is full (No space left on device)" in done.stderr, done.stderr[-3000:]
