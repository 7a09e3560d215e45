"""Coral Edge TPU: LiteRT with the ``libedgetpu.so.1`` delegate.

The device string picks the accelerator, as in pycoral's ``make_interpreter``:

* ``edgetpu`` - the first Edge TPU found (USB or PCIe);
* ``edgetpu:usb`` / ``edgetpu:pci`` - the first one on that bus;
* ``edgetpu:usb:N`` / ``edgetpu:pci:N`` - the N-th one on that bus (0-based).

One Edge TPU runs one model invocation at a time, so this backend keeps a single interpreter
behind a lock (concurrent ``predict`` calls queue up; results are those of serial calls).

Engine options: ``library`` names the delegate library to load (default ``libedgetpu.so.1``);
every other option goes to the delegate as it is (e.g. ``usb_max_bulk_in_queue_length``). The
accelerator is chosen by the device string only: a ``device`` option is an error.

>>> delegate_library("Linux")
'libedgetpu.so.1'
"""

from __future__ import annotations

import ctypes
import platform
from pathlib import Path

from typing import Any

from ..errors import EdgeTpuUnavailable
from .base import Device, is_edgetpu_model
from .options import check_engine_options
from .litert import LiteRtBackend, import_interpreter_module

_LIBRARIES = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}


def delegate_library(system: str | None = None) -> str:
    """Return the file name of the Edge TPU delegate library on this operating system."""
    return _LIBRARIES.get(system or platform.system(), "libedgetpu.so.1")


def _how_to_fix(path: Path) -> str:
    return (
        "Install the Edge TPU runtime (Debian/Ubuntu: `sudo apt-get install libedgetpu1-std` from "
        "Coral's apt repository), plug the Coral in (USB 3 port; replug after installing), or "
        "export for the CPU instead: `edgetl export ... --format tflite`"
    )


class EdgeTpuBackend(LiteRtBackend):
    """A TFLite model on a Coral Edge TPU (see the module docstring for device strings)."""

    def __init__(self, path: Path, data: bytes, device: Device, threads: int | None = None,
                 options: dict[str, Any] | None = None):
        module = import_interpreter_module()
        options = dict(options or {})
        check_engine_options("edgetpu", "edgetpu", options)
        library = str(options.pop("library", None) or delegate_library())
        options = {k: str(v) for k, v in options.items()}  # libedgetpu reads string values
        if device.option:
            options["device"] = device.option
        self.library, self.delegate_options = library, dict(options)
        compiled = is_edgetpu_model(data)
        try:
            # Probe with ctypes first: LiteRT's Delegate warns from __del__ when dlopen fails.
            ctypes.CDLL(library)
            delegate = module.load_delegate(library, options)
        except (ValueError, OSError, RuntimeError) as exc:
            what = (
                f"{path} was compiled for the Edge TPU (it contains edgetpu-custom-op), but"
                if compiled
                else f"device {'edgetpu:' + device.option if device.option else 'edgetpu'!r} was requested, but"
            )
            raise EdgeTpuUnavailable(
                f"{what} no usable Edge TPU was found: the delegate {library} could not be loaded "
                f"({str(exc).strip() or exc.__class__.__name__}). {_how_to_fix(path)}"
            ) from None
        if not compiled:
            # A plain int8 model would run entirely on the CPU, silently: say so instead.
            raise EdgeTpuUnavailable(
                f"{path} is not compiled for the Edge TPU (no edgetpu-custom-op); export it with "
                "`edgetl export ... --format edgetpu`, or load it with device='cpu'"
            )
        super().__init__(
            path,
            data,
            threads,
            delegates=lambda: [delegate],  # one interpreter only: it owns the one delegate
            max_interpreters=1,
        )
        self.engine = "edgetpu"
        self.provider = f"edgetpu delegate ({library})"
        self.device = "edgetpu" + (f":{device.option}" if device.option else "")
