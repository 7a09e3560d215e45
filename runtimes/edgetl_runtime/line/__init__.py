"""The station at the line: parts in from a camera, a folder, a trigger or HTTP; decisions out to the history, a PLC, MQTT, a webhook.

>>> import edgetl_runtime
>>> line = edgetl_runtime.Line("model.tflite", "dir:incoming", ["mqtt://broker/plant/line1/st3"])  # doctest: +SKIP
>>> line.start(); ...; line.stop()                                                   # doctest: +SKIP

``edgetl-runtime serve`` is the command; docs/line.md wires a camera, a trigger and a PLC. The
pieces: :mod:`.pipeline` (the stages and their queues), :mod:`.sources`, :mod:`.sinks`,
:mod:`.history` (SQLite), :mod:`.http` (the status API), :mod:`.stats`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Line", "Part", "Result", "History", "open_source", "open_sink"]

if TYPE_CHECKING:  # pragma: no cover
    from .history import History
    from .parts import Part, Result
    from .pipeline import Line
    from .sinks import open_sink
    from .sources import open_source

_LAZY = {"Line": "pipeline", "Part": "parts", "Result": "parts", "History": "history", "open_source": "sources",
         "open_sink": "sinks"}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'edgetl_runtime.line' has no attribute {name!r}")
