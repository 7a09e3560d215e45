"""TFLite on the CPU through LiteRT (XNNPACK), falling back to tflite-runtime, then TensorFlow.

Thread safety: a TFLite interpreter is not thread-safe, so this backend keeps a small pool of
interpreters built from the same model bytes. A call borrows an idle one (building a new one
while fewer than ``max_interpreters`` exist, waiting otherwise) and returns it afterwards. Many
threads thus run truly in parallel (``invoke`` releases the GIL) while memory stays bounded, and
every interpreter computes exactly what a single serial one would.

LiteRT's C++ code prints ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` on stderr
when the first interpreter of a process is built; no setting turns it off. While a backend builds
its first interpreter, native stderr goes to a temporary file and is written back without that
one line (:func:`quiet_native_stderr`); ``EDGETL_NATIVE_LOGS=1`` (or ``-v``) keeps it.

>>> import_interpreter_module().__name__.rsplit(".", 1)[-1]  # doctest: +SKIP
'interpreter'
"""

from __future__ import annotations

import contextlib
import importlib
import os
import queue
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import EngineNotInstalled, ModelFormatError
from .base import EngineOptionError, TensorSpec, primary_output

LITERT_EXTRA = "pip install 'edgetl-runtime[litert]'"
NATIVE_LOGS_ENV = "EDGETL_NATIVE_LOGS"
_NOISE = (b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)
_stderr_lock = threading.Lock()
_keep_native_logs = False


def keep_native_logs(keep: bool) -> None:
    """Keep (True) or drop (False, the default) LiteRT's native notice; ``-v`` in both CLIs keeps it."""
    global _keep_native_logs
    _keep_native_logs = bool(keep)


@contextlib.contextmanager
def quiet_native_stderr(noise: tuple[bytes, ...] = _NOISE) -> Iterator[None]:
    """Drop the lines starting with ``noise`` from what native code writes to stderr inside the block.

    Everything else written meanwhile (from any thread) is written back, in order, when the block
    ends, also when it raises. A no-op when ``EDGETL_NATIVE_LOGS=1`` or fd 2 cannot be redirected.
    """
    if _keep_native_logs or os.environ.get(NATIVE_LOGS_ENV) == "1":
        yield
        return
    with _stderr_lock:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            saved = None
        if saved is None:
            yield
            return
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield
            finally:
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                kept = b"".join(line for line in capture.read().splitlines(keepends=True)
                                if not line.startswith(noise))  # fmt: skip
                if kept:
                    os.write(2, kept)


def import_interpreter_module() -> Any:
    """Return the first installed module providing ``Interpreter`` and ``load_delegate``."""
    try:
        from ai_edge_litert import interpreter as module
    except ImportError:
        try:
            from tflite_runtime import interpreter as module  # older devices (Coral images, Pi OS)
        except ImportError:
            try:  # last resort on a machine that only has TensorFlow; never imported otherwise
                module = importlib.import_module("tensorflow.lite")
            except ImportError:
                raise EngineNotInstalled(
                    f"running a .tflite model needs LiteRT, which is not installed: {LITERT_EXTRA}"
                ) from None
    return module


def engine_name(module: Any) -> str:
    """Return a short name for the interpreter module: litert, tflite_runtime or tensorflow."""
    name = module.__name__
    return "litert" if name.startswith("ai_edge_litert") else name.split(".")[0]


def default_threads() -> int:
    """Return the CPU threads used when the caller gives none: every core, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


def _spec(detail: dict) -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    signature = detail.get("shape_signature", detail["shape"])
    shape = tuple(int(d) for d in signature)
    quant = (float(scale), int(zero_point)) if scale else None
    return TensorSpec(detail["name"], shape, np.dtype(detail["dtype"]), quant)


class InterpreterPool:
    """A bounded pool of interpreters built on demand by ``factory`` (see the module docstring)."""

    def __init__(self, factory: Callable[[], Any], max_interpreters: int):
        self._factory = factory
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._lock = threading.Lock()
        self._created = 0
        self._max = max(1, max_interpreters)
        self._idle.put(self._build())  # the first one, built eagerly so load errors surface now

    def _build(self) -> Any:
        interpreter = self._factory()
        interpreter.allocate_tensors()
        self._created += 1
        return interpreter

    def acquire(self) -> Any:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._created < self._max:
                return self._build()
        return self._idle.get()

    def release(self, interpreter: Any) -> None:
        self._idle.put(interpreter)


CPU_OPTIONS = ("xnnpack",)


def check_cpu_options(options: dict[str, Any]) -> None:
    """Raise :class:`EngineOptionError` for an option LiteRT on the CPU does not take."""
    unknown = sorted(set(options) - set(CPU_OPTIONS))
    if unknown:
        raise EngineOptionError(f"LiteRT on the CPU has no option {unknown[0]!r}; it takes {', '.join(CPU_OPTIONS)}")


def interpreter_kwargs(module: Any, threads: int, options: dict[str, Any]) -> dict[str, Any]:
    """Return the ``Interpreter`` keyword arguments (besides the model) for CPU ``options``.

    ``xnnpack`` (default true): false selects the builtin kernels without LiteRT's default
    XNNPACK delegate (slower; for bit-exact comparisons or kernels XNNPACK gets wrong).
    """
    check_cpu_options(options)
    kwargs: dict[str, Any] = {"num_threads": threads}
    xnnpack = options.get("xnnpack", True)
    if not isinstance(xnnpack, bool):
        raise EngineOptionError(f"LiteRT option xnnpack must be true or false, got {xnnpack!r}")
    if not xnnpack:
        kwargs["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return kwargs


class LiteRtBackend:
    """A TFLite model on the CPU. ``threads`` is the CPU threads of each interpreter."""

    engine = "litert"
    device = "cpu"

    def __init__(
        self,
        path: Path,
        data: bytes,
        threads: int | None = None,
        delegates: Callable[[], list] | None = None,
        max_interpreters: int | None = None,
        options: dict[str, Any] | None = None,
    ):
        module = import_interpreter_module()
        self.engine = engine_name(module)
        self.threads = threads or default_threads()
        self._data = data  # interpreters read the buffer in place: keep it alive
        # What each interpreter is built with (besides the model): the profile's settings land here.
        self.interpreter_options = interpreter_kwargs(module, self.threads, options or {})
        # What executes the kernels: XNNPACK unless the profile turned it off.
        self.provider = "builtin kernels" if "experimental_op_resolver_type" in self.interpreter_options else "xnnpack"

        interpreter_options = self.interpreter_options  # not self: a closure over self would make a reference
        # cycle (backend -> pool -> factory -> backend) that keeps the interpreters' memory until a GC pass

        def factory() -> Any:
            kwargs: dict[str, Any] = {"model_content": data, **interpreter_options}
            if delegates is not None:
                kwargs["experimental_delegates"] = delegates()
            return module.Interpreter(**kwargs)

        try:
            with quiet_native_stderr():
                self._pool = InterpreterPool(factory, max_interpreters or os.cpu_count() or 1)
        except (ValueError, RuntimeError) as exc:
            raise ModelFormatError(f"{path}: not a model this TFLite engine can run ({exc})") from None
        first = self._pool.acquire()
        try:
            inputs, outputs = first.get_input_details(), first.get_output_details()
        finally:
            self._pool.release(first)
        if len(inputs) != 1:
            raise ModelFormatError(f"{path}: expected an image model with 1 input, found {len(inputs)} inputs")
        self.outputs = tuple(_spec(o) for o in outputs)
        primary = primary_output(path, [o.shape for o in self.outputs])
        self._in_index, self._out_index = inputs[0]["index"], outputs[primary]["index"]
        self._out_indices = [o["index"] for o in outputs]
        self.input, self.output = _spec(inputs[0]), self.outputs[primary]
        # Models converted with a dynamic batch (-1) take a whole batch in one invoke.
        self._dynamic_batch = self.input.shape[0] == -1
        self._fixed_batch = max(1, int(inputs[0]["shape"][0]))
        self._shapes: dict[int, tuple] = {}  # id(interpreter) -> allocated input shape

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Return the raw scores output (N, n_classes) for ``batch`` (N, H, W, C) of the input dtype."""
        return self._run(batch, [self._out_index])[0]

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        """Return every raw output for ``batch``, in the order of ``outputs``."""
        return self._run(batch, self._out_indices)

    def _run(self, batch: np.ndarray, indices: list[int]) -> list[np.ndarray]:
        interpreter = self._pool.acquire()
        try:
            if self._dynamic_batch:
                return self._invoke(interpreter, batch, indices)
            step = self._fixed_batch
            parts = [self._invoke(interpreter, batch[i : i + step], indices) for i in range(0, len(batch), step)]
            return [np.concatenate(p) for p in zip(*parts)] if len(parts) != 1 else parts[0]
        finally:
            self._pool.release(interpreter)

    def _invoke(self, interpreter: Any, batch: np.ndarray, indices: list[int]) -> list[np.ndarray]:
        # get_input_details() builds dicts on every call; remember each interpreter's shape instead.
        if self._shapes.get(id(interpreter)) != batch.shape:
            if not self._dynamic_batch and batch.shape[0] < self._fixed_batch:  # pad a short tail
                pad = np.zeros((self._fixed_batch - batch.shape[0], *batch.shape[1:]), batch.dtype)
                padded = self._invoke(interpreter, np.concatenate([batch, pad]), indices)
                return [out[: batch.shape[0]] for out in padded]
            interpreter.resize_tensor_input(self._in_index, batch.shape)
            interpreter.allocate_tensors()
            self._shapes[id(interpreter)] = batch.shape
        interpreter.set_tensor(self._in_index, batch)
        interpreter.invoke()
        # Copy: the interpreter reuses its output buffers on the next invoke.
        return [np.array(interpreter.get_tensor(i)) for i in indices]
