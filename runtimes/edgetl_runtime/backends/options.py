"""Engine options: which options each engine takes, checked before a model is opened.

>>> check_engine_options("tflite", "cpu", {"xnnpack": False}) is None
True
"""

from __future__ import annotations

from pathlib import Path

from .base import EngineOptionError, parse_device
from .litert import check_cpu_options
from .onnxrt import providers_for


def check_engine_options(fmt: str, device: str, options: dict) -> None:
    """Raise :class:`EngineOptionError` unless the engine for ``fmt`` on ``device`` takes ``options``.

    The same checks the backends make when they open a model, without opening one (device
    profiles are checked when they are read).
    """
    kind = parse_device(device).kind
    if fmt == "onnx":
        providers_for(parse_device(device), Path("model.onnx"), options)
    elif kind == "edgetpu":
        if "device" in options:
            raise EngineOptionError("Edge TPU option 'device': choose the accelerator with the device string")
    else:
        check_cpu_options(options)
