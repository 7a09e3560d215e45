"""edgetl-runtime: run edgetl (and bare TFLite/ONNX) image classifiers on a device, without TensorFlow.

Importing the package is cheap: numpy, Pillow and the inference engine are imported by
:func:`load`, not here.

>>> import edgetl_runtime
>>> model = edgetl_runtime.load("model.tflite", device="cpu")      # doctest: +SKIP
>>> model.predict("cell.png").is_defect                            # doctest: +SKIP
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["load", "imprint", "ImprintResult", "Model", "ModelInfo", "Prediction", "read_spec", "ModelSpec", "ExportInfo",
           "Line", "adopt", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .contract import ExportInfo, ModelSpec
    from .modelfile import read_spec
    from .imprinting import ImprintResult, imprint
    from .model import Model, ModelInfo, Prediction, load
    from .line.pipeline import Line
    from .adopting import adopt

_LAZY = {
    "load": "model",
    "imprint": "imprinting",
    "ImprintResult": "imprinting",
    "Model": "model",
    "ModelInfo": "model",
    "Prediction": "model",
    "read_spec": "modelfile",
    "ModelSpec": "contract",
    "ExportInfo": "contract",
    "Line": "line.pipeline",
    "adopt": "adopting",
}


def __getattr__(name: str) -> Any:
    # PEP 562: the heavy modules are imported on first use of one of their names.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'edgetl_runtime' has no attribute {name!r}")
