"""A run folder's JSON files are read through one checked reader: damage is a RunError naming the file (issue 11)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgetl.run import RunError, load_run
from edgetl_runtime.contract import InputSpec, ModelSpec


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"PK\x03\x04")  # never loaded here
    spec = ModelSpec(labels=("defect", "good"), good_labels=("good",), input=InputSpec(32, 32))
    (run / "model_spec.json").write_text(spec.to_json())
    (run / "config.json").write_text(json.dumps({"backbone": "efficientnet_lite0", "input_size": [32, 32]}))
    (run / "split.json").write_text(json.dumps({"train": [["a.png", "good"]], "val": [["b.png", "defect"]]}))
    return run


def test_an_intact_run_reads(run_dir: Path) -> None:
    run = load_run(run_dir)
    assert run.split("train") == [("a.png", "good")] and run.config["backbone"] == "efficientnet_lite0"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("config.json", b"{not json", "not valid JSON (Expecting property name"),
        ("config.json", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),  # before: a traceback
        ("config.json", b'{"epochs": 1' + b"0" * 400 + b"}", "out of range"),  # before: an OverflowError later on
        ("config.json", b'{"lr": NaN}', "not a finite number"),
        ("config.json", b"[1, 2]", "holds a JSON list, not the dict"),
        ("config.json", b'{"data": "caf\xe9"}', "not valid JSON ("),
        ("split.json", b'{"train": [["a.png"]], "val": []}', "'train' is not a list of [path, label] pairs"),
        ("split.json", b'{"train": {"a.png": "good"}}', "'train' is not a list"),
        ("split.json", b"null", "holds a JSON NoneType"),
    ],
)
def test_damaged_json_files_name_the_file(run_dir: Path, name: str, content: bytes, message: str) -> None:
    (run_dir / name).write_bytes(content)
    with pytest.raises(RunError) as info:
        run = load_run(run_dir)
        run.split("train")
    assert str(run_dir / name) in str(info.value) and message in str(info.value)


def test_a_fifo_as_config_is_refused_without_hanging(run_dir: Path) -> None:
    import os

    (run_dir / "config.json").unlink()
    os.mkfifo(run_dir / "config.json")
    with pytest.raises(RunError, match="not a regular file"):
        load_run(run_dir)
