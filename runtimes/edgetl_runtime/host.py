"""The state of the machine a figure is taken on: CPU, cores, load, date; and whether it is busy.

A latency taken while other jobs run is not a noisy figure but a wrong one: the benchmark gets a
fraction of the CPU and reports the wait. Every benchmark records :func:`machine_state` with its
figures and refuses to publish them when the machine was busy (:func:`require_idle`).

>>> state = MachineState("AMD EPYC 7B13", 2, (0.05, 0.10, 0.08), "2026-11-25T10:00:00+00:00",
...                      "x86_64", "Linux 6.1", "3.11.9")
>>> state.busy
False
>>> state.summary()
'2026-11-25T10:00:00+00:00, AMD EPYC 7B13, 2 cores, load 0.05 0.10 0.08 (idle), Linux 6.1 x86_64, Python 3.11.9'
>>> MachineState("Raspberry Pi 4 Model B", 4, (2.5, 1.0, 0.5), "", "aarch64", "Linux", "3.11").busy
True
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from .errors import EdgetlRuntimeError

__all__ = ["MachineState", "machine_state", "busy_warning", "emulation_warning", "BusyMachineError", "require_idle",
           "pick_cpu_model"]


@dataclass(frozen=True)
class MachineState:
    """What a benchmark figure depends on besides the code: the CPU, its cores, its load, the date."""

    cpu_model: str  # "AMD EPYC 7B13", "Raspberry Pi 4 Model B Rev 1.4", ... or "unknown"
    cores: int  # usable by this process (CPU affinity respected)
    load: tuple[float, float, float]  # run-queue length over 1, 5, 15 min; nan where the OS has none
    date: str  # ISO 8601, UTC, seconds
    machine: str  # platform.machine(): x86_64, aarch64, armv7l, arm64, AMD64
    system: str  # "Linux 6.1.0-18-amd64", "Darwin 23.4.0", "Windows 10"
    python: str  # "3.11.9"
    emulated: str = ""  # what emulates this machine's architecture ("qemu-user: aarch64 on an x86 CPU"), or ""

    @property
    def busy(self) -> bool:
        """Return True when more than a third of the cores were busy over the last minute."""
        return self.load[0] > self.cores / 3  # nan (no load average) compares False

    def summary(self) -> str:
        """Return the state as one line, to print before and after a benchmark's figures."""
        if any(math.isnan(x) for x in self.load):
            load = "load n/a"
        else:
            load = "load " + " ".join(f"{x:.2f}" for x in self.load) + (" (busy)" if self.busy else " (idle)")
        cores = f"{self.cores} core{'s' if self.cores != 1 else ''}"
        emulated = f" (EMULATED: {self.emulated})" if self.emulated else ""
        return (f"{self.date}, {self.cpu_model}, {cores}, {load}, {self.system} {self.machine}{emulated}, "
                f"Python {self.python}")

    def to_dict(self) -> dict:
        """Return the state as JSON-ready values (an unknown load is ``None``), with ``busy``."""
        d = asdict(self)
        d["load"] = [None if math.isnan(x) else round(x, 2) for x in self.load]
        d["busy"] = self.busy
        return d


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:  # not Linux, or no device tree
        return ""


def _cpuinfo() -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in _read("/proc/cpuinfo").splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            fields.setdefault(key.strip(), value.strip())  # first core's entry is enough
    return fields


def pick_cpu_model(machine: str, cpuinfo: dict[str, str], board: str = "") -> str | None:
    """Return the CPU or board name from /proc/cpuinfo fields and the device-tree model, or ``None``.

    >>> pick_cpu_model("aarch64", {"model name": "ARMv8 Processor rev 1 (v8l)"}, "NVIDIA Jetson Nano\\x00")
    'NVIDIA Jetson Nano'
    """
    if machine.lower().startswith(("arm", "aarch")):
        # On ARM, "model name" is a generic "ARMv7 Processor rev 3"; the board says more.
        keys = [cpuinfo.get("Model"), board, cpuinfo.get("Hardware"), cpuinfo.get("model name")]
    else:
        keys = [cpuinfo.get("model name"), cpuinfo.get("Model"), board, cpuinfo.get("Hardware")]
    for name in keys:
        name = " ".join((name or "").replace("\x00", " ").split())
        if name:
            return name
    return None


def emulation(machine: str, cpuinfo: dict[str, str]) -> str:
    """Return what emulates an ARM ``machine`` on another CPU (qemu-user passes the host's /proc/cpuinfo), or "".

    >>> emulation("aarch64", {"vendor_id": "GenuineIntel", "model name": "Intel(R) Xeon(R) Processor"})
    'qemu-user: aarch64 on an x86 CPU (Intel(R) Xeon(R) Processor)'
    >>> emulation("aarch64", {"CPU implementer": "0x41", "Model": "Raspberry Pi 4 Model B Rev 1.4"})
    ''
    """
    if machine.lower().startswith(("arm", "aarch")) and "vendor_id" in cpuinfo:  # an x86-only field
        return f"qemu-user: {machine} on an x86 CPU ({cpuinfo.get('model name', cpuinfo['vendor_id'])})"
    return ""


def emulation_warning(state: MachineState) -> str | None:
    """Return a one-line warning when ``state`` is an emulated machine, else ``None``."""
    if not state.emulated:
        return None
    return (f"warning: this {state.machine} is emulated ({state.emulated}): timings here are the emulator's, "
            "not the device's; only the device itself gives its latency")


def _cpu_model(machine: str, cpuinfo: dict[str, str]) -> str:
    # Raspberry Pi, Jetson and other boards name themselves in the device tree.
    name = pick_cpu_model(machine, cpuinfo, _read("/proc/device-tree/model"))
    if name:
        return name
    if platform.system() == "Darwin":  # macOS has no /proc; platform.processor() only says "arm"
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                 timeout=2)
            if out.stdout.strip():
                return out.stdout.strip()
    return platform.processor() or "unknown"


def _cores() -> int:
    try:  # Linux: taskset and cgroup cpusets limit the cores this process may use
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def machine_state() -> MachineState:
    """Return the state of this machine now (reads /proc on Linux; never raises)."""
    try:
        load = tuple(float(x) for x in os.getloadavg())
    except (AttributeError, OSError):  # Windows has no load average
        load = (math.nan,) * 3
    machine, cpuinfo = platform.machine(), _cpuinfo()
    return MachineState(
        cpu_model=_cpu_model(machine, cpuinfo),
        cores=_cores(),
        load=load,  # type: ignore[arg-type]
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        machine=machine,
        system=f"{platform.system()} {platform.release()}".strip() or "unknown",
        python=platform.python_version(),
        emulated=emulation(machine, cpuinfo),
    )


def busy_warning(state: MachineState) -> str | None:
    """Return a one-line warning when ``state`` is busy, else ``None``."""
    if not state.busy:
        return None
    return (f"warning: this machine is busy (load {state.load[0]:.2f} over the last minute on {state.cores} "
            "cores): figures taken now are wrong, not noisy, because other jobs take CPU time from the "
            "benchmark; wait for them to finish (check `uptime`) and run it again")


class BusyMachineError(EdgetlRuntimeError, RuntimeError):
    """Benchmark figures were about to be recorded from a busy machine."""


def require_idle(state: MachineState, allow_busy: bool, what: str) -> None:
    """Raise :class:`BusyMachineError` when ``state`` is busy, unless ``allow_busy``.

    ``what`` names the thing refused, e.g. ``"write docs/figures.md"``.
    """
    if allow_busy or not state.busy:
        return
    raise BusyMachineError(
        f"refusing to {what}: the machine is busy (load {state.load[0]:.2f} on {state.cores} cores, above "
        f"{state.cores / 3:.2f}), so the figures are wrong, not noisy. Wait for other jobs to finish "
        "(check `uptime`) and run again, or pass --allow-busy to record them marked as measured on a busy machine"
    )
