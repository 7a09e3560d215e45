"""Open a ``.tflite`` first in a throwaway child process, so a file that crashes the engine cannot crash this one.

LiteRT trusts the flatbuffer it is given: a damaged or crafted ``.tflite`` can segfault or abort
the interpreter while it is built or first run (the fuzz suite, ``benchmarks/fuzz.py``, found
both in byte-mutated models). Python cannot catch a segfault. So before this process builds an
interpreter for a model it has not opened before, a forked child builds one and runs one
inference. When the child dies by a signal or does not finish within the timeout, :func:`probe`
raises :class:`~edgetl_runtime.errors.ModelFormatError` and this process never touches the file's
graph. When the child fails with a Python error, this process goes on and reports that error
itself.

A model that passed is remembered by the SHA-256 of its bytes and the engine settings, in this
process and in ``~/.cache/edgetl/probed-models`` (``$XDG_CACHE_HOME``, or the file named by
``EDGETL_PROBE_CACHE``; a cache that cannot be written is skipped), so only the first load of a model on a machine pays for the probe: about
35 ms for the int8 MobileNetV3-Small (docs/BENCHMARKS.md). Linux only (``fork``); on other
systems, and with ``EDGETL_PROBE=0``, models are opened directly. ONNX Runtime checks a model's protobuf and
graph itself, and no ONNX case in the fuzz runs crashed it, so ONNX files are not probed.

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


def engine_settings(threads: int | None, options: dict | None) -> str:
    """Return what a LiteRT build depends on besides the model (engine and version, threads, options), as text."""
    from .backends.litert import import_interpreter_module

    module = import_interpreter_module()
    package = sys.modules.get(module.__name__.split(".")[0])
    engine = f"{module.__name__} {getattr(package, '__version__', '?')}"
    return json.dumps([engine, threads, options or {}], sort_keys=True, default=str)


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
            build()
            code = 0
        finally:
            os._exit(code)
    status = _wait(pid, timeout)
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
    if os.WEXITSTATUS(status) == 0:
        with _lock:
            _verified.add(key)
        if remember:
            _remember(key)


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
