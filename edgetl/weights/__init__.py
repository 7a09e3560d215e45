"""Pretrained-weight resolution and importers: the Keras cache and the EfficientNet-Lite0 port.

* :mod:`edgetl.weights.keras_cache` finds (or downloads) the Keras MobileNet ImageNet weights;
* :mod:`edgetl.weights.torch_pickle` reads PyTorch ``.pth`` files without torch, refusing code;
* :mod:`edgetl.weights.efficientnet_lite` builds EfficientNet-Lite0 in Keras and loads its weights.

Every failure is one of the errors below, each naming the file and what to do about it.

>>> issubclass(UnsafeWeightsFile, WeightsFileError)
True
"""

from __future__ import annotations


class WeightsUnavailable(RuntimeError):
    """Pretrained weights are neither cached nor downloadable (offline, firewalled, wrong path)."""


class WeightsFileError(ValueError):
    """A weights file exists but cannot be read: truncated, wrong format, or wrong architecture."""


class UnsafeWeightsFile(WeightsFileError):
    """A weights file asks to run code (a pickle naming a non-tensor global); it was not loaded."""


__all__ = ["UnsafeWeightsFile", "WeightsFileError", "WeightsUnavailable"]
