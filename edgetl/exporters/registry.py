"""The export targets by name: what ``--format`` can be, and what each supports.

Adding a target is a :class:`~edgetl.exporters.target.Target` subclass in its own module and one
line in :data:`TARGETS`; the options check, the CLI choices and ``edgetl benchmark`` follow.

>>> sorted(TARGETS), TARGETS["edgetpu"].quantizations
(['edgetpu', 'onnx', 'tflite'], ('int8', 'qat'))
"""

from __future__ import annotations

from edgetl_runtime.contract import FORMATS

from .edgetpu import EDGETPU
from .errors import ExportError
from .onnx import ONNX
from .target import Target
from .tflite import TFLITE

TARGETS: dict[str, Target] = {t.name: t for t in (TFLITE, EDGETPU, ONNX)}
assert tuple(TARGETS) == FORMATS, "every file format of the contract has exactly one target"

# format -> the quantizations it offers (for help texts and the benchmark's rows)
SUPPORTED = {name: target.quantizations for name, target in TARGETS.items()}


def get_target(name: str) -> Target:
    """Return the target called ``name`` or raise :class:`ExportError` listing the known ones."""
    try:
        return TARGETS[name]
    except KeyError:
        raise ExportError(f"unknown format {name!r}; choose one of {', '.join(TARGETS)}") from None
