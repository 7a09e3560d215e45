"""One interface over every inference engine: a :class:`Backend` runs a batch, nothing more.

Everything model-specific (metadata, preprocessing, labels, dequantization) lives in
``edgetl_runtime.model``; a backend only moves a ready input tensor through an engine. Each
backend is imported lazily by :func:`open_backend`, so ``import edgetl_runtime`` loads no engine.

Device strings (the ``device=`` argument of :func:`edgetl_runtime.load`):

``cpu``
    TFLite through LiteRT with XNNPACK, or ONNX Runtime's CPU provider.
``edgetpu``, ``edgetpu:usb``, ``edgetpu:usb:N``, ``edgetpu:pci``, ``edgetpu:pci:N``
    A Coral Edge TPU through ``libedgetpu.so.1``: the first one found, the first (or N-th) USB
    one, the first (or N-th) PCIe one. TFLite models only.
``cuda``, ``cuda:N``
    ONNX Runtime's CUDA provider on GPU N (default 0), falling back to CPU.
``tensorrt``, ``tensorrt:N``
    ONNX Runtime's TensorRT provider (fp16, engine cache), then CUDA, then CPU.

This docstring and :func:`parse_device` are the one definition of the grammar; device profiles
and both CLIs use them.

Engine options (``engine_options=`` of :func:`edgetl_runtime.load`, ``[runtime.options]`` of a
device profile) go to the engine that runs the model: LiteRT on the CPU takes ``xnnpack``
(false: the plain builtin kernels); the Edge TPU takes ``library`` (the delegate to load) and
passes the rest to the delegate (e.g. ``usb_max_bulk_in_queue_length``); ONNX Runtime passes
``trt_*`` options to the TensorRT provider and ``cuda_*``-free names to the CUDA provider as
its provider options. An option the engine does not know is an error, never ignored.

>>> parse_device("edgetpu:usb:0")
Device(kind='edgetpu', option='usb:0')
"""

from __future__ import annotations

from pathlib import Path
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


def open_backend(
    path: Path, data: bytes, fmt: str, device: str, threads: int | None, options: dict | None = None
) -> Backend:
    """Return a ready :class:`Backend` for model bytes ``data`` of format ``fmt`` on ``device``.

    ``options``: engine options (see the module docstring).
    """
    dev = parse_device(device)
    options = dict(options or {})
    if fmt == "onnx":
        if dev.kind == "edgetpu":
            raise DeviceError(f"{path}: an ONNX model cannot run on the Edge TPU; export with --format edgetpu")
        from .onnxrt import OnnxBackend

        return OnnxBackend(path, data, dev, threads, options)
    if dev.kind in ("cuda", "tensorrt"):
        raise DeviceError(
            f"{path}: device {device!r} runs ONNX models; export with --format onnx, or use device='cpu'"
        )
    if dev.kind == "edgetpu" or is_edgetpu_model(data):
        from .edgetpu import EdgeTpuBackend

        return EdgeTpuBackend(path, data, dev, threads, options)
    from .litert import LiteRtBackend

    return LiteRtBackend(path, data, threads, options=options)


def check_engine_options(fmt: str, device: str, options: dict) -> None:
    """Raise :class:`EngineOptionError` unless the engine for ``fmt`` on ``device`` takes ``options``.

    The same checks the backends make when they open a model, without opening one (device
    profiles are checked when they are read).
    """
    kind = parse_device(device).kind
    if fmt == "onnx":
        from .onnxrt import providers_for

        providers_for(parse_device(device), Path("model.onnx"), options)
    elif kind == "edgetpu":
        if "device" in options:
            raise EngineOptionError("Edge TPU option 'device': choose the accelerator with the device string")
    else:
        from .litert import check_cpu_options

        check_cpu_options(options)
