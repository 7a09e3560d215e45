"""Scores of an exported file computed as an aarch64 device computes them: in an emulated Debian root (issue 28).

XNNPACK's integer kernels round differently on aarch64 than on x86_64 (ELPV int8: defect scores up
to 0.09 apart, two verdicts of 200 flipped, docs/BENCHMARKS.md), so a gate run on the workstation
does not tell, to the last step, what a Raspberry Pi or a Jetson's CPU will decide near the
threshold. ``edgetl export --validate-on aarch64`` runs the file inside the Debian bookworm arm64
root that ``benchmarks/arm64.py`` builds (qemu-user-static; the root holds ``edgetl-runtime``
installed from the wheel folder as docs/devices.md tells a user to), with no network: the threshold
the export re-sets, the drift reference and the gate all see the device's arithmetic.

Cost: emulation runs an int8 EfficientNet-Lite0 at about 3 images a second on this 2-core machine,
so a few minutes for a few hundred validation images; the default stays the host.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .errors import ExportError

VENV = "/opt/edgetl"
_SCRIPT = """
import json, sys
import numpy as np
import edgetl_runtime
from edgetl_runtime.host import machine_state
model = edgetl_runtime.load(sys.argv[1], device="cpu")
np.save(sys.argv[3], model.scores(np.load(sys.argv[2])))
info, state = model.info, machine_state()
print(json.dumps({"engine": info.engine, "device": info.device, "provider": info.provider, "machine": state.machine,
                  "emulated": state.emulated, "runtime": edgetl_runtime.__version__}))
"""


def default_root() -> Path:
    """Return the aarch64 root: ``$EDGETL_ARM64_ROOT``, else where ``benchmarks/arm64.py`` builds it."""
    return Path(os.environ.get("EDGETL_ARM64_ROOT") or Path.home() / ".cache/edgetl/arm64/bookworm")


def differing_files(host_package: Path, root_package: Path) -> list[str]:
    """Return the ``.py`` files (relative paths) that differ between two copies of a package, or are in one only.

    The emulated root's ``edgetl-runtime`` is installed from a wheel of whatever the source was when
    ``benchmarks/arm64.py`` last ran; a validation there must judge the runtime that ships. Code
    only: the shipped device profiles (TOML) do not enter a score.
    """
    def files(folder: Path) -> dict[str, bytes]:
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.py")
                if "__pycache__" not in p.parts}  # fmt: skip

    host, root = files(host_package), files(root_package)
    return sorted(name for name in set(host) | set(root) if host.get(name) != root.get(name))


def check_root(root: Path) -> None:
    """Raise :class:`ExportError` saying what to do when ``root`` cannot run the validation."""
    build = ("build it once with `sudo python benchmarks/arm64.py MODEL --images DIR` (debootstrap and "
             "qemu-user-static from the distribution's packages), or point EDGETL_ARM64_ROOT at one")  # fmt: skip
    if not (root / VENV.lstrip("/") / "bin/python3").exists():
        raise ExportError(f"--validate-on aarch64: no emulated aarch64 root with edgetl-runtime at {root}; {build}")
    if os.geteuid() != 0:
        raise ExportError("--validate-on aarch64: running the emulated root needs root (chroot); run the export with "
                          "sudo, or validate on the host (the default)")  # fmt: skip
    if not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
        raise ExportError("--validate-on aarch64: aarch64 programs do not run on this machine (no qemu-aarch64 "
                          "binfmt entry): apt-get install qemu-user-static, then update-binfmts --enable qemu-aarch64")  # fmt: skip
    import edgetl_runtime

    installed = sorted((root / VENV.lstrip("/")).glob("lib/python3*/site-packages/edgetl_runtime"))
    if not installed:
        raise ExportError(f"--validate-on aarch64: the emulated root {root} has no edgetl-runtime installed in {VENV}; "
                          f"{build}")  # fmt: skip
    stale = differing_files(Path(edgetl_runtime.__file__).parent, installed[0])
    if stale:
        raise ExportError(f"--validate-on aarch64: the edgetl-runtime in the emulated root {root} is not this one "
                          f"({len(stale)} file(s) differ, e.g. {stale[0]}), so the validation would judge another "
                          "runtime; reinstall it: sudo python benchmarks/arm64.py MODEL --images DIR (the root stays "
                          "cached)")  # fmt: skip


def run_in_root(root: Path, command: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    """Run the shell ``command`` inside ``root``: no network, its own /proc, the host's /sys not bound.

    (With the host's /sys in the root, LiteRT's CPU probe misreads the CPU and crashes.)
    """
    cmd = ["unshare", "--net", "--mount", "--fork", "sh", "-c",
           f"mount -t proc proc {root}/proc && exec chroot {root} /usr/bin/env -i PATH={VENV}/bin:/usr/bin:/bin "
           f"HOME=/root LANG=C.UTF-8 /bin/sh -c {shlex.quote(command)}"]  # fmt: skip
    return subprocess.run(cmd, text=True, capture_output=True, timeout=timeout)


def scores(data: bytes, fmt: str, pixels: np.ndarray, root: Path | None = None) -> tuple[np.ndarray, dict]:
    """Return the scores of the exported file ``data`` on uint8 ``pixels`` computed in the aarch64 root, and what ran them."""
    root = root or default_root()
    check_root(root)
    work = Path(tempfile.mkdtemp(prefix="validate-", dir=root / "opt"))
    inside, model = f"/opt/{work.name}", f"model.{'onnx' if fmt == 'onnx' else 'tflite'}"
    try:
        (work / model).write_bytes(data)
        np.save(work / "pixels.npy", np.ascontiguousarray(pixels, np.uint8))
        (work / "score.py").write_text(_SCRIPT)
        done = run_in_root(root, f"python3 {inside}/score.py {inside}/{model} {inside}/pixels.npy {inside}/scores.npy")
        if done.returncode != 0 or not (work / "scores.npy").exists():
            raise ExportError(f"--validate-on aarch64: the exported file did not run in the emulated root {root} "
                              f"(exit {done.returncode}): {done.stderr.strip()[-1500:]}")  # fmt: skip
        ran = json.loads(done.stdout.strip().splitlines()[-1])
        return np.load(work / "scores.npy"), ran
    finally:
        shutil.rmtree(work, ignore_errors=True)
