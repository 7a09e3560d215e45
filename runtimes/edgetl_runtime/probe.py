"""Open a ``.tflite`` first in a throwaway child process, so a file that crashes the engine cannot crash this one.

LiteRT trusts the flatbuffer it is given: a damaged or crafted ``.tflite`` can segfault or abort
the interpreter while it is built or first run (the fuzz suite, ``benchmarks/fuzz.py``, found
both in byte-mutated models). Python cannot catch a segfault. So before this process builds an
interpreter for a model it has not opened before, a forked child builds one and runs one
inference. When the child dies by a signal or does not finish within the timeout, :func:`probe`
raises :class:`~edgetl_runtime.errors.ModelFormatError` and this process never touches the file's
graph. When the build fails in the child because the file is not a working model
(:class:`~edgetl_runtime.errors.ModelFormatError`), that error is raised here, with the child's
memory cap named, and this process never builds the model either: an engine that cannot allocate
a tensor often reports only that a node "failed to invoke". Any other Python error in the child is
left for this process to report when it builds the model itself.

A model that passed is remembered by the SHA-256 of its bytes and the engine settings, in this
process and in ``~/.cache/edgetl/probed-models`` (``$XDG_CACHE_HOME``, or the file named by
``EDGETL_PROBE_CACHE``; a cache that cannot be written is skipped), so only the first load of a model on a machine pays for the probe: about
35 ms for the int8 MobileNetV3-Small (docs/BENCHMARKS.md). Linux only (``fork``); on other
systems, and with ``EDGETL_PROBE=0``, models are opened directly. ONNX Runtime checks a model's protobuf and
graph itself, and no ONNX case in the fuzz runs crashed it; ONNX files are probed all the same for
what they make the engine allocate.

**Memory.** A file can declare small tensors and still make the engine allocate gigabytes when it
runs (an ONNX ``ConstantOfShape [32768, 32768]`` took 4.3 GB, a TFLite ``FILL`` with a declared
``[1, 1]`` output 3.5 GB). The child runs with its address space capped at what it had at the fork
plus ``EDGETL_PROBE_MEMORY_MB`` (default 768: an edge model needs a few hundred MB at most), and so is its private writable memory (see
:func:`_cap_memory`): a model that needs more fails there, and is refused
here before this process builds it, whether the engine said it ran out of memory or only that a node
failed.

>>> probe("<none>", b"bytes", lambda: None, remember=False)  # a build that works: nothing raised
>>> _key(b"bytes", "") in _verified
True
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

from .errors import ModelFormatError

PROBE_ENV = "EDGETL_PROBE"
TIMEOUT_ENV = "EDGETL_PROBE_TIMEOUT"
CACHE_ENV = "EDGETL_PROBE_CACHE"
DEFAULT_TIMEOUT_S = 60.0

CACHE_ENTRIES = 1000  # digests kept on disk (most recent last)
MEMORY_ENV = "EDGETL_PROBE_MEMORY_MB"
DEFAULT_MEMORY_MB = 768
_OUT_OF_MEMORY = 3  # the child's exit code when the build or run could not allocate
_NOT_A_MODEL = 4  # the child's exit code for a ModelFormatError; its message comes back through a pipe

_verified: set[str] = set()
_lock = threading.Lock()


def _key(data: bytes, settings: str) -> str:
    import hashlib  # here: OpenSSL's import costs 5 ms, paid only when probing

    return hashlib.sha256(data + b"\0" + settings.encode()).hexdigest()


def _cache_file() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgetl" / "probed-models"


def engine_settings(threads: int | None, options: dict | None, fmt: str = "tflite") -> str:
    """Return what a build depends on besides the model (engine and version, threads, options, the memory cap), as text."""
    if fmt == "onnx":
        try:
            import onnxruntime

            engine = f"onnxruntime {onnxruntime.__version__}"
        except ImportError:
            engine = "onnxruntime (missing)"
    else:
        from .backends.litert import import_interpreter_module

        module = import_interpreter_module()
        package = sys.modules.get(module.__name__.split(".")[0])
        engine = f"{module.__name__} {getattr(package, '__version__', '?')}"
    return json.dumps([engine, threads, options or {}, _memory_mb()], sort_keys=True, default=str)


def _on_disk(key: str) -> bool:
    try:
        return key in _cache_file().read_text().split()
    except (OSError, ValueError):
        return False


def _remember(key: str) -> None:
    """Add ``key`` to the on-disk cache (atomically, keeping the newest entries); skipped when it cannot be written."""
    from .atomic import write_bytes

    path = _cache_file()
    try:
        keys = [k for k in (path.read_text().split() if path.exists() else []) if len(k) == 64 and k != key]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, ("\n".join([*keys[-(CACHE_ENTRIES - 1):], key]) + "\n").encode())
    except (OSError, ValueError):
        pass


def enabled() -> bool:
    """Return True when models are probed in a child process first (Linux, ``EDGETL_PROBE`` not ``0``)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork") and os.environ.get(PROBE_ENV, "1") != "0"


def probe(path: str | Path, data: bytes, build: Callable[[], None], timeout: float | None = None,
          settings: str = "", remember: bool = True, confirm: list[str] | None = None) -> None:
    """Run ``build`` (open the engine on ``data``, run one inference) in a forked child; raise if it crashes or hangs.

    ``settings``: what else the build depends on (engine version, threads, options), part of the
    cache key. ``remember``: also record a pass in the on-disk cache. ``confirm``: a command that
    does the same build in a fresh process (see ``model.probe_build``); a crash of the
    forked child is confirmed with it before the model is refused, because a fork of a process
    whose other threads hold native locks can itself crash, whatever the model.
    """
    if not enabled():
        return
    key = _key(data, settings)
    with _lock:
        if key in _verified:
            return
    if _on_disk(key):
        with _lock:
            _verified.add(key)
        return
    timeout = timeout if timeout is not None else float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    # No garbage collection across the fork: Python's after-fork handler in the child could collect the
    # parent's LiteRT interpreters, whose destructors crash there (seen in CI), whatever the model.
    collecting = gc.isenabled()
    gc.disable()
    pid = None
    reply, answer = os.pipe()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12 warns on fork with threads
            pid = os.fork()
    except OSError:
        pid = None  # no process to spare: open the model directly, as without the probe
    finally:
        if collecting and pid != 0:
            gc.enable()  # in the parent; the short-lived child never collects
    if pid is None:
        os.close(reply)
        os.close(answer)
        return
    if pid == 0:  # the child: no output, no return into the caller's code
        code = 1
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            # Output is discarded anyway; this also keeps the child off the stderr filter's lock,
            # which another thread of the parent may have held at the fork.
            os.environ["EDGETL_NATIVE_LOGS"] = "1"
            import faulthandler

            faulthandler.disable()  # a crash here is the expected answer, not a dump on the parent's terminal
            os.close(reply)
            _cap_memory()
            try:
                build()
                code = 0
            except BaseException as exc:  # noqa: BLE001 - the child only reports how it ended
                if _is_out_of_memory(exc):
                    code = _OUT_OF_MEMORY
                elif isinstance(exc, ModelFormatError):
                    code = _NOT_A_MODEL
                    os.write(answer, str(exc).encode("utf-8", "replace")[:4096])  # under the pipe's buffer: never blocks
        finally:
            os._exit(code)
    os.close(answer)
    try:
        status = _wait(pid, timeout)
        message = os.read(reply, 4096).decode("utf-8", "replace") if status not in (None, _UNKNOWN) else ""
    finally:
        os.close(reply)
    if status == _UNKNOWN:
        return  # open the model directly, as without the probe; nothing remembered
    if status is None:
        raise ModelFormatError(
            f"{path}: the inference engine did not finish building and running this model within {timeout:.0f} s "
            f"(checked in a child process, which was stopped); the file is corrupt or crafted. Export it again; "
            f"if the model is just very slow to build, raise {TIMEOUT_ENV}"
        )
    if os.WIFSIGNALED(status) and confirm:
        status = _fresh_process(confirm, timeout)
        if status is None:
            raise ModelFormatError(
                f"{path}: the inference engine did not finish building and running this model within {timeout:.0f} s "
                f"(checked in a child process, which was stopped); the file is corrupt or crafted. Export it again; "
                f"if the model is just very slow to build, raise {TIMEOUT_ENV}"
            )
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        raise ModelFormatError(
            f"{path}: the inference engine crashed ({name}) building or running this model, in a child process that "
            "edgetl starts for each new model; the file is corrupt or crafted. Copy or export it again"
        )
    if os.WEXITSTATUS(status) == _OUT_OF_MEMORY:
        raise ModelFormatError(
            f"{path}: running this model takes more than {_memory_mb()} MB of memory beyond what it was loaded with "
            f"(checked in a child process with its memory capped); the file is crafted or not an edge model. Raise "
            f"{MEMORY_ENV} if it is a large model you trust"
        )
    if os.WEXITSTATUS(status) == _NOT_A_MODEL:
        raise ModelFormatError(
            f"{message or f'{path}: the model does not build or run'} (checked in a child process with its memory "
            f"capped at {_memory_mb()} MB beyond what it was loaded with: a crafted file may fail there only for want of "
            f"memory; raise {MEMORY_ENV} if it is a large model you trust)"
        )
    if os.WEXITSTATUS(status) == 0:
        with _lock:
            _verified.add(key)
        if remember:
            _remember(key)


def _memory_mb() -> int:
    try:
        return max(64, int(os.environ.get(MEMORY_ENV, DEFAULT_MEMORY_MB)))
    except ValueError:
        return DEFAULT_MEMORY_MB


def _cap_memory() -> None:
    """In the child: cap its memory at what it has now plus :func:`_memory_mb` (Linux, best effort).

    Two limits, each the current size plus the allowance: the address space (``RLIMIT_AS``) and the
    private writable memory (``RLIMIT_DATA``, Linux 4.7 and later). The second is the one that bounds
    what the child can fill: a process that ran many models holds gigabytes of address space reserved
    but never written (malloc's per-thread arenas), which the first limit alone would let it use.
    """
    try:
        import resource

        with open("/proc/self/status") as f:
            sizes = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.startswith(("VmSize:", "VmData:"))}
        allowance = _memory_mb() * 2**20
        for limit, now in ((resource.RLIMIT_AS, sizes["VmSize"]), (resource.RLIMIT_DATA, sizes["VmData"])):
            hard = resource.getrlimit(limit)[1]
            resource.setrlimit(limit, (now + allowance if hard == resource.RLIM_INFINITY else min(now + allowance, hard), hard))
    except (OSError, ValueError, KeyError, ImportError):
        pass


def _is_out_of_memory(exc: BaseException) -> bool:
    """True when ``exc`` says an allocation failed (MemoryError, an engine's bad_alloc or "failed to allocate")."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "bad_alloc" in text or "bad allocation" in text or "allocat" in text


def _fresh_process(command: list[str], timeout: float) -> int | None:
    """Run ``command`` and return its wait status (as ``os.waitpid`` gives it), None when it timed out."""
    import subprocess

    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=timeout, env={**os.environ, PROBE_ENV: "0"})
    except subprocess.TimeoutExpired:
        return None
    code = done.returncode
    return (-code & 0x7F) if code < 0 else (code & 0xFF) << 8  # the encoding WIFSIGNALED/WEXITSTATUS read


_UNKNOWN = -1  # the child was reaped by someone else (SIGCHLD ignored, a reaper thread): no verdict


def _wait(pid: int, timeout: float) -> int | None:
    """Return the child's wait status, None after killing it when ``timeout`` passed, or ``_UNKNOWN``."""
    deadline = time.monotonic() + timeout
    pause = 0.001
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return None
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
    except ChildProcessError:  # an application that ignores SIGCHLD: its children are reaped automatically
        return _UNKNOWN
