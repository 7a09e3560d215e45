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
    ONNX Runtime's CUDA provider on GPU N (default 0).
``tensorrt``, ``tensorrt:N``
    ONNX Runtime's TensorRT provider (fp16, engine cache).

A requested accelerator that cannot be used is an error naming what is missing; only an
explicit ``allow_cpu_fallback=True`` lets ONNX Runtime fall back (TensorRT, then CUDA, then CPU).

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

from ..errors import EdgetlRuntimeError, ModelFormatError

from .base import (
    DEVICE_GRAMMAR,
    DEVICE_KINDS,
    Backend,
    Device,
    DeviceError,
    EngineOptionError,
    TensorSpec,
    is_edgetpu_model,
    parse_device,
)
from .options import check_engine_options

__all__ = ["DEVICE_GRAMMAR", "DEVICE_KINDS", "Backend", "Device", "DeviceError", "EngineOptionError", "TensorSpec",
           "check_engine_options", "is_edgetpu_model", "open_backend", "parse_device"]

def open_backend(
    path: Path, data: bytes, fmt: str, device: str, threads: int | None, options: dict | None = None,
    allow_cpu_fallback: bool = False,
) -> Backend:
    """Return a ready :class:`Backend` for model bytes ``data`` of format ``fmt`` on ``device``.

    ``options``: engine options (see the module docstring). ``allow_cpu_fallback``: let ONNX
    Runtime run on the CPU when the requested GPU provider cannot start (otherwise an error).
    Whatever else goes wrong while the engine reads the file (a damaged file makes engines raise
    UnicodeDecodeError, IndexError, their own types...) is a :class:`ModelFormatError` naming it.
    """
    try:
        return _open_backend(path, data, fmt, device, threads, options, allow_cpu_fallback)
    except (EdgetlRuntimeError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - one place that turns engine surprises into one error type
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelFormatError(f"{path}: the inference engine could not read this model ({type(exc).__name__}: "
                               f"{text:.200}); the file is corrupt: copy or export it again") from None


def _open_backend(
    path: Path, data: bytes, fmt: str, device: str, threads: int | None, options: dict | None, allow_cpu_fallback: bool
) -> Backend:
    dev = parse_device(device)
    options = dict(options or {})
    if fmt == "onnx":
        if dev.kind == "edgetpu":
            raise DeviceError(f"{path}: an ONNX model cannot run on the Edge TPU; export with --format edgetpu")
        from .onnxrt import OnnxBackend

        return OnnxBackend(path, data, dev, threads, options, allow_cpu_fallback)
    if dev.kind in ("cuda", "tensorrt"):
        raise DeviceError(
            f"{path}: device {device!r} runs ONNX models; export with --format onnx, or use device='cpu'"
        )
    if dev.kind == "edgetpu" or is_edgetpu_model(data):
        from .edgetpu import EdgeTpuBackend

        return EdgeTpuBackend(path, data, dev, threads, options)
    from .litert import LiteRtBackend

    return LiteRtBackend(path, data, threads, options=options)
