"""The README's quickstart and anomaly flow, run as written on a slice of the real ELPV data.

The commands are read from the README itself, so the test breaks when the README stops working,
not when it changes. The one change: the data step takes ``--limit 300`` (300 of the 2,624 cells,
stratified), so the flow fits in CI. Every command must exit 0.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from quickstart import ANOMALY, QUICKSTART, as_run, readme_commands, user_env  # noqa: E402

LIMIT = ["--limit", "300"]
NOISE = ("fully_quantize:", "cuInit", "E0000", "W0000", "I0000")  # native log lines a user must not see


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(as_run(command, LIMIT), cwd=cwd, env=user_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"README step failed: {command}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    noise = [line for line in done.stderr.splitlines() if any(n in line for n in NOISE)]
    assert not noise, f"{command}: log noise on stderr: {noise[:3]}"
    return done


def test_the_readme_commands_are_found():
    quick = readme_commands(QUICKSTART)
    assert quick[0].startswith("edgetl data elpv") and any(c.startswith("edgetl train") for c in quick)
    assert any("--format onnx --quant int8" in c for c in quick) and any("--max-false-alarm" in c for c in quick)
    assert any("--task anomaly" in c for c in readme_commands(ANOMALY))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quickstart")


def test_the_quickstart_runs_as_written_on_real_elpv_cells(workdir: Path):
    for command in readme_commands(QUICKSTART):
        _run(command, workdir)
    # What the steps promise: both int8 files written beside their validation reports, an eval report.
    for name in ("elpv-int8.tflite", "elpv-int8.onnx"):
        assert (workdir / name).is_file() and (workdir / f"{name}.report.json").is_file()
    assert (workdir / "runs" / "elpv" / "eval" / "test" / "misclassified.html").is_file()
