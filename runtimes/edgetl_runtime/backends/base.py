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
    output: TensorSpec  # the scores: the one output, or the primary one (see :func:`primary_output`)
    outputs: tuple[TensorSpec, ...]  # every output, in the model's order

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Return the raw primary output tensor (N, n_classes) for an input batch (N, H, W, C)."""
        ...

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        """Return every raw output tensor, in the order of ``outputs``."""
        ...


class DeviceError(EdgetlRuntimeError, ValueError):
    """The device string is malformed or does not fit the model's format."""


DEVICE_GRAMMAR = "cpu, edgetpu, edgetpu:usb[:N], edgetpu:pci[:N], cuda[:N], tensorrt[:N]"


class EngineOptionError(EdgetlRuntimeError, ValueError):
    """An engine option is unknown to the engine that runs the model, or has the wrong type."""


MAX_OUTPUTS = 4  # scores, plus e.g. an anomaly heatmap or an embedding


def primary_output(path: object, shapes: list[tuple[int, ...]]) -> int:
    """Return the index of the scores among a model's outputs: the only one, or the only (N, C) one.

    An anomaly detector has a second output, its heatmap (N, H, W); more than :data:`MAX_OUTPUTS`
    outputs, or several of rank 2, is not a model this runtime knows how to read.
    """
    from ..errors import ModelFormatError

    if not 1 <= len(shapes) <= MAX_OUTPUTS:
        raise ModelFormatError(f"{path}: expected an image model with 1 to {MAX_OUTPUTS} outputs (scores first, "
                               f"then e.g. a heatmap), found {len(shapes)}")  # fmt: skip
    if len(shapes) == 1:
        return 0
    flat = [i for i, shape in enumerate(shapes) if len(shape) == 2]
    if len(flat) != 1:
        raise ModelFormatError(f"{path}: {len(shapes)} outputs of shapes {shapes}: cannot tell which holds the scores "
                               "(exactly one output must be (N, classes))")  # fmt: skip
    return flat[0]


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
