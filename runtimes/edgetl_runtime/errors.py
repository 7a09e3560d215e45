"""Errors a user can act on: each says what was wrong, where, and what to do."""

from __future__ import annotations


class EdgetlRuntimeError(Exception):
    """Base class of every error the runtime raises on purpose."""


class ModelFormatError(EdgetlRuntimeError, ValueError):
    """The file is missing, truncated, or not a TFLite/ONNX model."""


class MetadataError(EdgetlRuntimeError, ValueError):
    """The embedded edgetl metadata is malformed or from an unsupported schema version."""


class ContractError(MetadataError):
    """The embedded model contract does not fit the model's own tensors (size, channels, outputs)."""


class EngineNotInstalled(EdgetlRuntimeError, ImportError):
    """The inference engine the model needs is not installed (names the extra to install)."""


class EdgeTpuUnavailable(EdgetlRuntimeError, RuntimeError):
    """A model compiled for the Edge TPU was loaded on a host without a usable Edge TPU."""


class ImageError(EdgetlRuntimeError, ValueError):
    """An image could not be read (corrupt, truncated, unsupported or too large)."""

    def __init__(self, source: object, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")
