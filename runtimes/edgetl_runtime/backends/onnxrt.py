"""ONNX models through ONNX Runtime: CPU, CUDA, or TensorRT (with CUDA and CPU as fallbacks).

``InferenceSession.run`` is thread-safe, so one session serves every thread.

>>> providers_for(Device("tensorrt", None), Path("m.onnx"))[0][0]
'TensorrtExecutionProvider'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EngineNotInstalled, ModelFormatError
from . import Device, TensorSpec
from .litert import default_threads

ONNX_EXTRA = "pip install 'edgetl-runtime[onnx]'"
_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(double)": np.float64,
}


def providers_for(device: Device, path: Path) -> list[tuple[str, dict]]:
    """Return ONNX Runtime ``(provider, options)`` pairs for ``device``, best first."""
    gpu = {"device_id": int(device.option or 0)}
    cpu = [("CPUExecutionProvider", {})]
    if device.kind == "cuda":
        return [("CUDAExecutionProvider", gpu), *cpu]
    if device.kind == "tensorrt":
        # Building a TensorRT engine takes minutes on a Jetson: cache it beside the model.
        cache = path.parent / ".trt_cache"
        trt = {
            **gpu,
            "trt_fp16_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
        }
        return [("TensorrtExecutionProvider", trt), ("CUDAExecutionProvider", gpu), *cpu]
    return cpu


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
    return TensorSpec(arg.name, shape, np.dtype(_DTYPES.get(arg.type, np.float32)), None)


class OnnxBackend:
    """An ONNX model in one ONNX Runtime session; ``threads`` sets intra-op parallelism."""

    engine = "onnxruntime"

    def __init__(self, path: Path, data: bytes, device: Device, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise EngineNotInstalled(
                f"running an .onnx model needs ONNX Runtime, which is not installed: {ONNX_EXTRA} "
                "(on a Jetson, NVIDIA's onnxruntime-gpu wheel instead)"
            ) from None
        available = set(ort.get_available_providers())
        wanted = providers_for(device, path)
        providers = [(name, opts) for name, opts in wanted if name in available]
        if device.kind == "tensorrt" and providers[0][0] == "TensorrtExecutionProvider":
            (path.parent / ".trt_cache").mkdir(exist_ok=True)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: provider fallbacks are reported below
        try:
            self._session = ort.InferenceSession(data, sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception classes
            raise ModelFormatError(f"{path}: not a model ONNX Runtime can run ({exc})") from None
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelFormatError(
                f"{path}: expected an image classifier with 1 input and 1 output, "
                f"found {len(inputs)} inputs and {len(outputs)} outputs"
            )
        self.input, self.output = _spec(inputs[0]), _spec(outputs[0])
        self._in_name, self._out_name = inputs[0].name, outputs[0].name
        active = self._session.get_providers()[0]
        self.device = {
            "TensorrtExecutionProvider": f"tensorrt:{int(device.option or 0)}",
            "CUDAExecutionProvider": f"cuda:{int(device.option or 0)}",
        }.get(active, "cpu")
        self.threads = options.intra_op_num_threads
        self.fallback = device.kind != "cpu" and self.device == "cpu"

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Return the raw output (N, n_classes) for ``batch`` (N, H, W, C)."""
        step = self.input.shape[0] if self.input.shape else -1
        if step in (-1, len(batch)):
            return self._session.run([self._out_name], {self._in_name: batch})[0]
        parts = []
        for i in range(0, len(batch), step):  # a fixed-batch model: run in chunks, padding the tail
            chunk = batch[i : i + step]
            if len(chunk) < step:
                pad = np.zeros((step - len(chunk), *chunk.shape[1:]), chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            parts.append(self._session.run([self._out_name], {self._in_name: chunk})[0][: len(batch) - i])
        return np.concatenate(parts)
