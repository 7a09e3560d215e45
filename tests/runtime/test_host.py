"""The machine state recorded with every benchmark figure, and the refusal to record it from a busy machine."""

from __future__ import annotations

import json
import math
from datetime import datetime

import pytest

from edgetl_runtime.errors import EdgetlRuntimeError
from edgetl_runtime.host import (
    BusyMachineError,
    MachineState,
    busy_warning,
    machine_state,
    pick_cpu_model,
    require_idle,
)


def state(load1: float, cores: int = 3) -> MachineState:
    return MachineState("Test CPU", cores, (load1, 0.5, 0.25), "2026-11-25T10:00:00+00:00", "x86_64", "Linux 6.1",
                        "3.11.9")


@pytest.mark.parametrize("load1, cores, busy", [(0.0, 3, False), (1.0, 3, False), (1.01, 3, True),
                                                (0.2, 1, False), (0.4, 1, True), (2.5, 8, False), (3.0, 8, True)])
def test_busy_above_a_third_of_the_cores(load1, cores, busy):
    assert state(load1, cores).busy is busy
    assert (busy_warning(state(load1, cores)) is not None) is busy
    assert ("(busy)" in state(load1, cores).summary()) is busy


def test_no_load_average_is_not_busy_and_says_so():
    s = MachineState("unknown", 4, (math.nan,) * 3, "2026-11-25T10:00:00+00:00", "AMD64", "Windows 10", "3.11.9")
    assert not s.busy and busy_warning(s) is None
    assert "load n/a" in s.summary()
    assert json.loads(json.dumps(s.to_dict()))["load"] == [None, None, None]  # valid JSON, no NaN


def test_busy_warning_says_load_cores_and_what_to_do():
    text = busy_warning(state(2.0))
    assert "2.00" in text and "3 cores" in text and "wrong, not noisy" in text and "uptime" in text
    assert "\n" not in text


def test_require_idle_raises_on_a_busy_machine_only():
    require_idle(state(0.1), allow_busy=False, what="write figures.md")
    require_idle(state(2.0), allow_busy=True, what="write figures.md")
    with pytest.raises(BusyMachineError) as err:
        require_idle(state(2.0), allow_busy=False, what="write figures.md")
    assert isinstance(err.value, EdgetlRuntimeError)
    text = str(err.value)
    assert "write figures.md" in text and "2.00" in text and "3 cores" in text and "--allow-busy" in text


def test_summary_and_dict_carry_every_field():
    s = state(0.05)
    assert s.summary() == ("2026-11-25T10:00:00+00:00, Test CPU, 3 cores, load 0.05 0.50 0.25 (idle), "
                           "Linux 6.1 x86_64, Python 3.11.9")
    d = s.to_dict()
    assert d["cpu_model"] == "Test CPU" and d["cores"] == 3 and d["load"] == [0.05, 0.5, 0.25] and d["busy"] is False


@pytest.mark.parametrize("machine, cpuinfo, board, expected", [
    ("x86_64", {"model name": "AMD EPYC 7B13  64-Core Processor"}, "", "AMD EPYC 7B13 64-Core Processor"),
    # Raspberry Pi OS 32-bit: generic "model name" per core, the board in "Model"
    ("armv7l", {"model name": "ARMv7 Processor rev 3 (v7l)", "Hardware": "BCM2835",
                "Model": "Raspberry Pi 4 Model B Rev 1.4"}, "Raspberry Pi 4 Model B Rev 1.4\x00",
     "Raspberry Pi 4 Model B Rev 1.4"),
    # Jetson: no "Model" field, the board only in the device tree
    ("aarch64", {"model name": "ARMv8 Processor rev 1 (v8l)"}, "NVIDIA Jetson Orin Nano Developer Kit\x00",
     "NVIDIA Jetson Orin Nano Developer Kit"),
    ("aarch64", {"Hardware": "Qualcomm"}, "", "Qualcomm"),
    ("arm64", {}, "", None),  # macOS: no /proc, the caller falls back to sysctl/platform
])  # fmt: skip
def test_cpu_model_prefers_the_board_on_arm(machine, cpuinfo, board, expected):
    assert pick_cpu_model(machine, cpuinfo, board) == expected


def test_machine_state_of_this_machine_is_sane():
    s = machine_state()
    assert s.cores >= 1 and s.cpu_model and s.machine is not None and s.python.count(".") == 2
    assert len(s.load) == 3 and all(math.isnan(x) or x >= 0 for x in s.load)
    when = datetime.fromisoformat(s.date)
    assert when.utcoffset().total_seconds() == 0 and when.microsecond == 0
    assert s.date in s.summary()
    json.dumps(s.to_dict())


def test_an_emulated_arm_machine_is_named_and_bench_warns():
    # qemu-user passes the host's /proc/cpuinfo through: an aarch64 Python that reads an x86 CPU there is emulated
    from edgetl_runtime.host import emulation, emulation_warning

    cpuinfo = {"vendor_id": "GenuineIntel", "model name": "Intel(R) Xeon(R) Processor", "flags": "fpu vme sse2"}
    assert emulation("aarch64", cpuinfo) == "qemu-user: aarch64 on an x86 CPU (Intel(R) Xeon(R) Processor)"
    assert emulation("x86_64", cpuinfo) == "" and emulation("aarch64", {"Model": "Raspberry Pi 5 Model B"}) == ""
    state = MachineState("Intel(R) Xeon(R) Processor", 2, (0.1, 0.1, 0.1), "2026-12-05T03:00:00+00:00", "aarch64",
                         "Linux 6.1", "3.11.2", emulated=emulation("aarch64", cpuinfo))  # fmt: skip
    assert "EMULATED" in state.summary() and state.to_dict()["emulated"].startswith("qemu-user")
    assert "not the device's" in emulation_warning(state)
