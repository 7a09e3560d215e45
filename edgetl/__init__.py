"""edgetl: labelled inspection images to a validated defect classifier on edge hardware.

The workstation side (TensorFlow) is imported lazily: ``import edgetl`` costs almost nothing, and
``edgetl.training``/``edgetl.exporters`` load TensorFlow on first use.

>>> import edgetl
>>> edgetl.__version__
'0.1.0'
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY = {
    "load_backbone": "edgetl.backbones",
    "train": "edgetl.training",
    "TrainOptions": "edgetl.training",
    "TrainResult": "edgetl.training",
    "evaluate": "edgetl.evaluation",
    "export": "edgetl.exporters",
    "ExportOptions": "edgetl.exporters",
    "ExportResult": "edgetl.exporters",
    "load_profile": "edgetl.profiles",
    "DeviceProfile": "edgetl.profiles",
    "select": "edgetl.selection",
    "SelectOptions": "edgetl.selection",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgetl' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
