"""What every benchmark script shares: the machine state around its figures, ``--markdown`` and ``--allow-busy``.

    bench = start(args)             # prints the machine state; warns on stderr when busy
    ...                             # take and print the figures
    bench.end()                     # prints the machine state again (load at end)
    json_out["machine"] = bench.machine()
    return bench.finish(markdown)   # writes --markdown FILE, or refuses (1) if the machine was busy

The 1-minute load counts the benchmark's own threads too (and, at the start, a model it has just
built), so "busy" here means the load *of other jobs* is above ``cores / 3``: the script's own
share is estimated from the CPU time it and its children used (see :func:`own_load`) and taken off.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from edgetl_runtime.atomic import write_bytes
from edgetl_runtime.host import MachineState, busy_warning, machine_state

_T0 = time.monotonic()  # about when the script started: its CPU use since then is in the load too


def add_state_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--markdown FILE`` and ``--allow-busy`` to ``parser``."""
    parser.add_argument("--markdown", metavar="FILE", type=Path, default=None,
                        help="also write the Markdown figures, the machine state and this command to FILE "
                             "(refused, exit status 1, when the machine was busy at start or end)")
    parser.add_argument("--allow-busy", action="store_true",
                        help="write --markdown even from a busy machine, marked as measured on a busy machine")


def _cpu_seconds() -> float:
    t = os.times()  # children: subprocesses already waited for (runtime_coldstart's fresh processes)
    return t.user + t.system + t.children_user + t.children_system


def own_load(cpu_s: float, wall_s: float) -> float:
    """Return about how much of the 1-minute load ``cpu_s`` CPU seconds over the last ``wall_s`` seconds add.

    The kernel's 1-minute load is an exponential average with a 60 s time constant, so steady use
    of ``c`` cores for ``w`` seconds adds about ``c * (1 - exp(-w / 60))``.
    """
    return cpu_s / wall_s * (1 - math.exp(-wall_s / 60)) if wall_s > 0 else 0.0


def _others(state: MachineState, own: float) -> float:
    load = state.load[0]
    return load if math.isnan(load) else max(0.0, load - own)


class Bench:
    """One benchmark run: the machine state at its start and end, and this script's own share of the load."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.command = " ".join(sys.argv)
        self._wall0, self._cpu0 = time.monotonic(), _cpu_seconds()
        self.own_at_start = own_load(self._cpu0, self._wall0 - _T0)  # e.g. a model built just before
        self.at_start = machine_state()
        self.at_end: MachineState | None = None
        self.own_at_end = 0.0
        self._report("start", self.at_start, self.own_at_start)

    def _report(self, when: str, state: MachineState, own: float) -> None:
        others, limit = _others(state, own), state.cores / 3
        spared = state.busy and not others > limit  # busy only through this script's own load
        note = f"; about {own:.2f} of the load is this script's own" if own >= 0.05 or spared else ""
        if spared:
            note += f", so other jobs' {others:.2f} is below {limit:.2f}: idle enough"
        print(f"machine at {when}: {state.summary()}{note}", flush=True)
        if others > limit:
            print(busy_warning(state), file=sys.stderr, flush=True)

    def end(self) -> MachineState:
        """Return the machine state at the end (taken and printed on the first call)."""
        if self.at_end is None:
            wall = time.monotonic() - self._wall0
            self.own_at_end = self.own_at_start * math.exp(-wall / 60) + own_load(_cpu_seconds() - self._cpu0, wall)
            self.at_end = machine_state()
            self._report("end", self.at_end, self.own_at_end)
        return self.at_end

    def busy(self) -> tuple[float, int, str] | None:
        """Return (other jobs' load, cores, when) of the first busy moment, or ``None`` when idle at start and end."""
        moments = (("at start", self.at_start, self.own_at_start), ("at end", self.end(), self.own_at_end))
        for when, state, own in moments:
            if _others(state, own) > state.cores / 3:  # nan (no load average) compares False
                return _others(state, own), state.cores, when
        return None

    def machine(self) -> dict:
        """Return the machine state at start and end as JSON-ready values, with the command."""
        out: dict = {"command": self.command}
        for when, state, own in (("start", self.at_start, self.own_at_start), ("end", self.end(), self.own_at_end)):
            others = _others(state, own)
            out[f"at_{when}"] = {**state.to_dict(), "own_load": round(own, 2),
                                 "others_load": None if math.isnan(others) else round(others, 2)}
        return out

    def markdown(self, figures: str) -> str:
        """Return ``figures`` followed by the machine state, the command and any busy mark."""
        load = self.end().load[0]
        at_start = f" (about {self.own_at_start:.2f} of it the script's own)" if self.own_at_start >= 0.05 else ""
        at_end = "n/a" if math.isnan(load) else f"{load:.2f} (about {self.own_at_end:.2f} of it the benchmark's own)"
        lines = [figures.rstrip(), "", f"Machine: {self.at_start.summary()}{at_start}; load at end {at_end}. "
                                       f"Command: `{self.command}`"]
        busy = self.busy()
        if busy:
            lines += ["", f"**Measured on a busy machine (load {busy[0]:.2f} on {busy[1]} cores {busy[2]}, besides "
                          "the benchmark's own)**: these figures are not comparable with those of an idle machine."]
        return "\n".join(lines) + "\n"

    def finish(self, figures: str) -> int:
        """Write ``--markdown FILE`` unless refused; return the script's exit status (0, or 1 when refused)."""
        self.end()
        path: Path | None = self.args.markdown
        if path is None:
            return 0
        busy = self.busy()
        if busy and not self.args.allow_busy:
            print(f"error: not writing {path}: the machine was busy {busy[2]} (load {busy[0]:.2f} on {busy[1]} "
                  "cores besides this benchmark's own), so the figures above are wrong, not noisy. Wait for "
                  "other jobs to finish (check `uptime`) and run again, or pass --allow-busy to write them "
                  "marked as measured on a busy machine.", file=sys.stderr)
            return 1
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, self.markdown(figures).encode())
        print(f"wrote {path}")
        return 0


def start(args: argparse.Namespace) -> Bench:
    """Return a :class:`Bench` for this run, having printed the machine state (and any busy warning)."""
    return Bench(args)
