"""`edgetl data elpv` and `edgetl data inspect` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from edgetl.commands.data import data


def _runner() -> CliRunner:
    """A runner with a wide terminal, so rich tables do not wrap long file paths."""
    return CliRunner(env={"COLUMNS": "250"})


def _image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), value).save(path)


@pytest.fixture(scope="module")
def elpv_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "elpv"
    result = _runner().invoke(data, ["elpv", str(out), "--limit", "40", "--json"])
    assert result.exit_code == 0, result.output
    return out


def test_help_everywhere() -> None:
    runner = _runner()
    for args in (["--help"], ["elpv", "--help"], ["inspect", "--help"]):
        result = runner.invoke(data, args)
        assert result.exit_code == 0 and "Usage:" in result.output
    assert "elpv" in runner.invoke(data, ["--help"]).output


def test_registered_in_the_edgetl_cli() -> None:
    from edgetl.cli import main

    result = _runner().invoke(main, ["data", "inspect", "--help"])
    assert result.exit_code == 0 and "unreadable files" in result.output


def test_elpv_json_then_human_rerun(elpv_small: Path) -> None:
    runner = _runner()
    result = runner.invoke(data, ["elpv", str(elpv_small), "--limit", "40", "--json"])
    summary = json.loads(result.output)
    assert result.exit_code == 0 and summary["reused"] and summary["total"] == 40
    assert summary["counts"]["train"]["good"] + summary["counts"]["train"]["defect"] == 30
    human = runner.invoke(data, ["elpv", str(elpv_small), "--limit", "40"])
    assert human.exit_code == 0 and "already complete" in human.output and "│ train │" in human.output


def test_inspect_json_and_table(elpv_small: Path) -> None:
    runner = _runner()
    result = runner.invoke(data, ["inspect", str(elpv_small / "train"), "--json"])
    assert result.exit_code == 0
    report = json.loads(result.output)
    assert report["total"] == 30 and set(report["classes"]) == {"defect", "good"}
    assert report["modes"] == {"L": 30} and report["sizes"] == {"300x300": 30}
    table = runner.invoke(data, ["inspect", str(elpv_small / "train")])
    assert table.exit_code == 0
    assert "30 images, 2 classes" in table.output and "defect" in table.output and "300x300" in table.output
    manifest = runner.invoke(data, ["inspect", str(elpv_small / "manifest.csv"), "--json"])
    assert manifest.exit_code == 0 and json.loads(manifest.output)["total"] == 40


def test_inspect_lists_unreadable_and_duplicates_and_exits_1(tmp_path: Path) -> None:
    for i in range(2):
        _image(tmp_path / "good" / f"g{i}.png", 100 + i)
        _image(tmp_path / "defect" / f"d{i}.png", 10 + i)
    (tmp_path / "defect" / "d9.png").write_bytes((tmp_path / "defect" / "d0.png").read_bytes())
    (tmp_path / "good" / "broken.jpg").write_text("not an image")
    result = _runner().invoke(data, ["inspect", str(tmp_path)])
    assert result.exit_code == 1
    assert "broken.jpg" in result.output and "Unreadable files (1)" in result.output
    assert "Duplicate files (1 groups" in result.output


def test_dataset_errors_are_clean_messages_with_exit_code_2(tmp_path: Path) -> None:
    _image(tmp_path / "good" / "a.png", 1)
    result = _runner().invoke(data, ["inspect", str(tmp_path)])
    assert result.exit_code == 2
    assert "found only class 'good'" in result.output and "add a folder of defect images" in result.output
    assert "Traceback" not in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _runner().invoke(data, ["inspect", str(empty), "--json"])
    assert result.exit_code == 2 and "expected one subfolder per class" in result.output
    (tmp_path / "train").mkdir()  # someone else's split: never overwritten
    foreign = _runner().invoke(data, ["elpv", str(tmp_path), "--limit", "16"])
    assert foreign.exit_code == 2 and "not written by 'edgetl data elpv'" in foreign.output


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    result = _runner().invoke(data, ["elpv", str(tmp_path / "x"), "--split", "1.5"])
    assert result.exit_code == 2 and "--split" in result.output
    assert not (tmp_path / "x").exists()
