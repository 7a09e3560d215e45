"""Per-device-profile latency tests: the profile's reference model must meet its budget on its device.

One test per profile (``list_profiles()``, user profiles included). It runs only where this host
is that device (``edgetl_runtime.profiles.detect()``) or when forced with ``pytest --profile NAME``,
and skips elsewhere with the reason. The timing runs in a separate ``edgetl-runtime bench``
process, as on the device: no TensorFlow in it, so peak memory is the runtime's own. These are
the only tests of the project that assert wall-clock times, always against the profile's budget.

    pytest tests/devices                            # the profile of this host
    pytest tests/devices --profile raspberry-pi-4    # on a Pi 4 that detection does not recognise
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from edgetl_runtime.bench import BenchReport, StageStats, report_text, verdict
from edgetl_runtime.profiles import DeviceProfile, list_profiles, load_profile

from .conftest import profile_marks, why_no_model, why_not_this_host

RUNS, WARMUP = 50, 5  # enough for a stable p50 and a p99 that is the slowest run or close to it


def _params() -> list:
    return [pytest.param(p.name, marks=profile_marks(p), id=p.name) for p in list_profiles()]


def _bench(model: Path, profile: DeviceProfile, out: Path) -> BenchReport:
    """Return the report of ``edgetl-runtime bench MODEL --profile PROFILE`` run in a fresh process."""
    cmd = [sys.executable, "-c", "from edgetl_runtime.cli import main; main()", "bench", str(model),
           "--profile", str(profile.path), "--runs", str(RUNS), "--warmup", str(WARMUP), "--force", "--json-file", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    # --force: this test already decided the host is the device (detected, or pytest --profile).
    # Exit 1 means "measured, budget not met": the assertion below reports it with the numbers.
    assert proc.returncode in (0, 1) and out.is_file(), f"edgetl-runtime bench failed:\n{proc.stdout}\n{proc.stderr}"
    data = json.loads(out.read_text())
    data.pop("verdict", None)
    data["stages"] = {name: StageStats(**s) for name, s in data["stages"].items()}
    data["latencies_ms"] = tuple(data["latencies_ms"])
    data["notes"] = tuple(data["notes"])
    return BenchReport(**data)


@pytest.mark.parametrize("profile_name", _params())
def test_reference_model_meets_latency_budget(
    profile_name: str, device_option: str | None, reference_model: Callable[[DeviceProfile], Path], tmp_path: Path
) -> None:
    profile = load_profile(profile_name)
    reason = why_not_this_host(profile, device_option) or why_no_model(profile)
    if reason:
        pytest.skip(reason)
    model = reference_model(profile)
    report = _bench(model, profile, tmp_path / "bench.json")
    result = verdict(report, profile, force=True)
    assert result.reasons, f"{profile.name}: its budget names no limit to check"
    assert result.passed, (
        f"{profile.name}: reference {profile.reference.backbone} {profile.reference.quantization} "
        f"({model.name}) misses its budget:\n" + "\n".join(result.reasons) + f"\n{report_text(report, result, profile.name)}"
    )
