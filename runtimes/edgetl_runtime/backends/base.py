"""The pieces every backend shares: device strings, tensor specs, the Backend protocol, errors.

>>> parse_device("cuda:1")
Device(kind='cuda', option='1')
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from ..errors import EdgetlRuntimeError

DEVICE_KINDS = ("cpu", "edgetpu", "cuda", "tensorrt")
EDGETPU_CUSTOM_OP = b"edgetpu-custom-op"


class Device(NamedTuple):
    """A parsed device string: ``kind`` plus the engine-specific rest (``"usb:0"``, ``"1"``)."""

    kind: str
    option: str | None = None


class TensorSpec(NamedTuple):
    """One input or output tensor: name, shape, dtype and quantization ``(scale, zero_point)``."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    quantization: tuple[float, int] | None = None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": np.dtype(self.dtype).name,
            "quantization": list(self.quantization) if self.quantization else None,
        }


@runtime_checkable
class Backend(Protocol):
    """What every engine provides. ``run`` must be safe to call from many threads at once."""

    engine: str  # "litert", "tflite_runtime", "tensorflow", "edgetpu", "onnxruntime"
    device: str  # what actually runs the model, e.g. "cpu", "edgetpu:usb", "cuda:0"
    provider: str  # the kernel provider that ran: "xnnpack", "CUDAExecutionProvider", ...
    input: TensorSpec
    output: TensorSpec

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Return the raw output tensor (N, n_classes) for an input batch (N, H, W, C)."""
        ...


class DeviceError(EdgetlRuntimeError, ValueError):
    """The device string is malformed or does not fit the model's format."""


DEVICE_GRAMMAR = "cpu, edgetpu, edgetpu:usb[:N], edgetpu:pci[:N], cuda[:N], tensorrt[:N]"


class EngineOptionError(EdgetlRuntimeError, ValueError):
    """An engine option is unknown to the engine that runs the model, or has the wrong type."""


def parse_device(device: str) -> Device:
    """Return the :class:`Device` for a device string such as ``"edgetpu:usb:0"`` or ``"cuda"``."""
    kind, _, option = str(device).strip().lower().partition(":")
    if kind not in DEVICE_KINDS:
        raise DeviceError(
            f"unknown device {device!r}; use one of {DEVICE_GRAMMAR}"
        )
    if kind == "cpu" and option:
        raise DeviceError(f"device {device!r}: 'cpu' takes no option")
    if kind == "edgetpu" and option:
        bus, _, index = option.partition(":")
        if bus not in ("usb", "pci") or (index and not index.isdigit()):
            raise DeviceError(f"device {device!r}: expected edgetpu, edgetpu:usb[:N] or edgetpu:pci[:N]")
    if kind in ("cuda", "tensorrt") and option and not option.isdigit():
        raise DeviceError(f"device {device!r}: expected {kind} or {kind}:N (a GPU index)")
    return Device(kind, option or None)


def is_edgetpu_model(data: bytes) -> bool:
    """Return True when a TFLite flatbuffer contains an Edge TPU-compiled subgraph."""
    # The custom op's name is stored verbatim in the operator-code table; a byte search is
    # exact enough and costs nothing next to loading the model.
    return EDGETPU_CUSTOM_OP in data
