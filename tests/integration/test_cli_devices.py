"""`edgetl devices list | show | detect` through click's CliRunner, on real profile files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgetl.cli import main
from edgetl_runtime.profiles import ENV_DEVICES_DIR


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.delenv(ENV_DEVICES_DIR, raising=False)
    return CliRunner()


def test_list_table_and_json(runner: CliRunner) -> None:
    table = runner.invoke(main, ["devices", "list"])
    assert table.exit_code == 0, table.output
    for name in ("cpu-x86_64", "raspberry-pi-4", "coral-usb", "jetson-orin-nano"):
        assert name in table.output
    data = json.loads(runner.invoke(main, ["devices", "list", "--json"]).output)
    coral = next(p for p in data if p["name"] == "coral-usb")
    assert coral["export"]["format"] == "edgetpu" and coral["runtime"]["device"] == "edgetpu:usb"


def test_show_one_profile(runner: CliRunner) -> None:
    result = runner.invoke(main, ["devices", "show", "jetson-nano"])
    assert result.exit_code == 0, result.output
    assert "trt_engine_cache_path=~/.cache/edgetl/trt" in result.output and "p99 <= 40 ms" in result.output
    data = json.loads(runner.invoke(main, ["devices", "show", "raspberry-pi-4", "--json"]).output)
    assert {k: v for k, v in data["budget"].items() if k != "source"} == {"p50_ms": 30.0, "p99_ms": 60.0, "memory_mb": 300.0}
    assert data["reference"]["basis"] == "published" and "XNNPACK" in data["reference"]["source"]
    assert "raspberry-pi-4" in data["budget"]["source"]
    assert data["published"][0]["source"].startswith("https://")


def test_show_unknown_lists_known_names(runner: CliRunner) -> None:
    result = runner.invoke(main, ["devices", "show", "raspberry-pi-9"])
    assert result.exit_code == 1
    assert "unknown device profile" in result.output and "raspberry-pi-5" in result.output


def test_show_a_malformed_user_profile_names_the_field(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "line-7.toml"
    bad.write_text('name = "line-7"\ndescription = "x"\n[budget]\np50_ms = -1\n')
    result = runner.invoke(main, ["devices", "show", str(bad)])
    assert result.exit_code == 1 and "line-7.toml: field 'detect'" in result.output


def test_detect_this_host_is_cpu_x86_64(runner: CliRunner) -> None:
    result = runner.invoke(main, ["devices", "detect"])
    assert result.exit_code == 0, result.output
    assert "profile: cpu-x86_64" in result.output and "architecture 'x86_64'" in result.output
    data = json.loads(runner.invoke(main, ["devices", "detect", "--json"]).output)
    assert data["profile"] == "cpu-x86_64" and data["host"]["arch"] == "x86_64"


def test_detect_a_copied_coral_dev_board_tree(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"Freescale i.MX8MQ Phanbell\0")
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/apex_0").write_text("")
    data = json.loads(runner.invoke(main, ["devices", "detect", "--json", "--root", str(tmp_path)]).output)
    # --root reads the tree, the architecture still comes from this x86-64 machine: the PCIe TPU is
    # seen, but the dev-board profile wants aarch64.
    assert data["host"]["edgetpu"] == ["pci"] and data["host"]["model"] == "Freescale i.MX8MQ Phanbell"
    assert data["profile"] == "cpu-x86_64"
    result = runner.invoke(main, ["devices", "detect", "--root", str(tmp_path), "--arch", "aarch64"])
    assert result.exit_code == 0, result.output
    assert "profile: coral-dev-board" in result.output and "apex_0 in /dev" in result.output


def test_detect_exits_1_when_nothing_matches(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["devices", "detect", "--root", str(tmp_path), "--arch", "riscv64"])
    assert result.exit_code == 1 and "no profile matches this host" in result.output
