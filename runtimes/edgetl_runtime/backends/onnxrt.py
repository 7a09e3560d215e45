"""ONNX models through ONNX Runtime: CPU, CUDA, or TensorRT.

A requested accelerator that cannot be used (its provider missing from this ONNX Runtime build,
or dropped by ONNX Runtime because its libraries or GPU are absent) is a :class:`DeviceError`
naming what is missing, never a silent run on the CPU. Only ``allow_cpu_fallback=True`` lets
the session fall back (TensorRT -> CUDA -> CPU), and then ``fallback`` says what happened.

``InferenceSession.run`` is thread-safe, so one session serves every thread. Engine options (a
device profile's ``[runtime.options]``) become provider options: ``trt_*`` ones go to the
TensorRT provider, the others to the CUDA provider (see :func:`providers_for`).

>>> providers_for(Device("tensorrt", None), Path("m.onnx"))[0][0]
'TensorrtExecutionProvider'
>>> providers_for(Device("tensorrt", None), Path("m.onnx"), {"trt_max_workspace_size": 2**30})[0][1]["trt_max_workspace_size"]
1073741824
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EngineNotInstalled, ModelFormatError
from .base import Device, DeviceError, EngineOptionError, TensorSpec, primary_output
from .litert import default_threads

ONNX_EXTRA = "pip install 'edgetl-runtime[onnx]'"
_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(double)": np.float64,
}


def providers_for(device: Device, path: Path, options: dict[str, Any] | None = None) -> list[tuple[str, dict]]:
    """Return the ONNX Runtime ``(provider, provider options)`` pairs for ``device``, best first.

    ``options`` (engine options) are merged over the defaults: ``trt_*`` into the TensorRT
    provider's, the rest into the CUDA provider's. A ``trt_engine_cache_path`` may start with
    ``~``. Options on the CPU, or ``trt_*`` options without TensorRT, are an error.
    """
    options = dict(options or {})
    trt_opts = {k: v for k, v in options.items() if k.startswith("trt_")}
    cuda_opts = {k: v for k, v in options.items() if not k.startswith("trt_")}
    if device.kind == "cpu" and options:
        raise EngineOptionError(f"ONNX Runtime on the CPU takes no engine options, got {', '.join(sorted(options))}")
    if device.kind == "cuda" and trt_opts:
        raise EngineOptionError(f"{', '.join(sorted(trt_opts))}: TensorRT options need device 'tensorrt', not 'cuda'")
    gpu = {"device_id": int(device.option or 0)}
    cpu = [("CPUExecutionProvider", {})]
    if device.kind == "cuda":
        return [("CUDAExecutionProvider", {**gpu, **cuda_opts}), *cpu]
    if device.kind == "tensorrt":
        # Building a TensorRT engine takes minutes on a Jetson: cache it (default: beside the model).
        trt = {
            **gpu,
            "trt_fp16_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(path.parent / ".trt_cache"),
            "trt_timing_cache_enable": True,
            **trt_opts,
        }
        trt["trt_engine_cache_path"] = str(Path(str(trt["trt_engine_cache_path"])).expanduser())
        return [("TensorrtExecutionProvider", trt), ("CUDAExecutionProvider", {**gpu, **cuda_opts}), *cpu]
    return cpu


_GPU_FIX = ("On a Jetson install NVIDIA's onnxruntime-gpu wheel for your JetPack; on a PC, pip install "
            "onnxruntime-gpu with the CUDA/cuDNN (and TensorRT) versions it documents, and check nvidia-smi.")


def _device_name(device: Device) -> str:
    return device.kind + (f":{device.option}" if device.option else "")


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
    return TensorSpec(arg.name, shape, np.dtype(_DTYPES.get(arg.type, np.float32)), None)


class OnnxBackend:
    """An ONNX model in one ONNX Runtime session; ``threads`` sets intra-op parallelism."""

    engine = "onnxruntime"

    def __init__(self, path: Path, data: bytes, device: Device, threads: int | None = None,
                 options: dict[str, Any] | None = None, allow_cpu_fallback: bool = False):
        try:
            import onnxruntime as ort
        except ImportError:
            raise EngineNotInstalled(
                f"running an .onnx model needs ONNX Runtime, which is not installed: {ONNX_EXTRA} "
                "(on a Jetson, NVIDIA's onnxruntime-gpu wheel instead)"
            ) from None
        available = set(ort.get_available_providers())
        wanted = providers_for(device, path, options)
        providers = [(name, opts) for name, opts in wanted if name in available]
        wanted_first = wanted[0][0]
        if wanted_first not in available and not allow_cpu_fallback:
            raise DeviceError(
                f"{path}: device {_device_name(device)!r} needs ONNX Runtime's {wanted_first}, which this "
                f"onnxruntime {ort.__version__} does not have (it has {', '.join(sorted(available))}). "
                f"{_GPU_FIX} Or run on the CPU: device 'cpu' (CLI --device cpu), or allow the fallback "
                "explicitly (allow_cpu_fallback=True, CLI --allow-cpu-fallback)."
            )
        self.requested_providers = tuple(wanted)  # what the device string and engine options ask for
        self.providers = tuple(providers)  # what ONNX Runtime is handed (the available ones), options included
        if providers[0][0] == "TensorrtExecutionProvider" and providers[0][1].get("trt_engine_cache_enable"):
            Path(providers[0][1]["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: provider fallbacks are reported below
        # The model was read into memory: external data (weights in other files) is looked up beside the model
        # file, never in the current directory; ONNX Runtime refuses a location that leads out of that folder.
        options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                         str(Path(path).resolve().parent))  # fmt: skip
        try:
            self._session = ort.InferenceSession(data, sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception classes
            raise ModelFormatError(f"{path}: not a model ONNX Runtime can run ({exc})") from None
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1:
            raise ModelFormatError(f"{path}: expected an image model with 1 input, found {len(inputs)} inputs")
        self.outputs = tuple(_spec(o) for o in outputs)
        primary = primary_output(path, [o.shape for o in self.outputs])
        self.input, self.output = _spec(inputs[0]), self.outputs[primary]
        self._in_name, self._out_name = inputs[0].name, outputs[primary].name
        self._out_names = [o.name for o in outputs]
        active = self._session.get_providers()[0]
        self.provider = active
        self.device = {
            "TensorrtExecutionProvider": f"tensorrt:{int(device.option or 0)}",
            "CUDAExecutionProvider": f"cuda:{int(device.option or 0)}",
        }.get(active, "cpu")
        self.threads = options.intra_op_num_threads
        # The session dropped the requested provider (e.g. CUDA libraries or GPU absent).
        self.fallback = active != wanted_first
        if self.fallback and not allow_cpu_fallback:
            raise DeviceError(
                f"{path}: device {_device_name(device)!r} was requested, but ONNX Runtime could not start "
                f"{wanted_first} (no usable GPU, or its CUDA/TensorRT libraries are missing) and would run on "
                f"{active}. {_GPU_FIX} Or pass device 'cpu', or allow the fallback explicitly "
                "(allow_cpu_fallback=True, CLI --allow-cpu-fallback)."
            )

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Return the raw scores output (N, n_classes) for ``batch`` (N, H, W, C)."""
        return self._run(batch, [self._out_name])[0]

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        """Return every raw output for ``batch``, in the order of ``outputs``."""
        return self._run(batch, self._out_names)

    def _run(self, batch: np.ndarray, names: list[str]) -> list[np.ndarray]:
        step = self.input.shape[0] if self.input.shape else -1
        if step in (-1, len(batch)):
            return list(self._session.run(names, {self._in_name: batch}))
        parts = []
        for i in range(0, len(batch), step):  # a fixed-batch model: run in chunks, padding the tail
            chunk = batch[i : i + step]
            if len(chunk) < step:
                pad = np.zeros((step - len(chunk), *chunk.shape[1:]), chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            parts.append([out[: len(batch) - i] for out in self._session.run(names, {self._in_name: chunk})])
        return [np.concatenate(p) for p in zip(*parts)]
