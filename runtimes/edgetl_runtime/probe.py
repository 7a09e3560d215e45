"""Open a ``.tflite`` first in a throwaway child process, so a file that crashes the engine cannot crash this one.

LiteRT trusts the flatbuffer it is given: a damaged or crafted ``.tflite`` can segfault or abort
the interpreter while it is built or first run (the fuzz suite, ``benchmarks/fuzz.py``, found
both in byte-mutated models). Python cannot catch a segfault. So before this process builds an
interpreter for a model it has not opened before, a forked child builds one and runs one
inference. When the child dies by a signal or does not finish within the timeout, :func:`probe`
raises :class:`~edgetl_runtime.errors.ModelFormatError` and this process never touches the file's
graph. When the child fails with a Python error, this process goes on and reports that error
itself. Verified contents are remembered by SHA-256 for the life of the process.

The cost is one fork plus one interpreter build and inference in the child (milliseconds for the
edge models edgetl exports; see docs/BENCHMARKS.md). Linux only (``fork``); on other systems, and
with ``EDGETL_PROBE=0``, models are opened directly. ONNX Runtime checks a model's protobuf and
graph itself, and no ONNX case in the fuzz runs crashed it, so ONNX files are not probed.

>>> probe("<none>", b"bytes", lambda: None)  # a build that works: nothing raised, remembered
>>> hashlib.sha256(b"bytes").digest() in _verified
True
"""

from __future__ import annotations

import hashlib
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
DEFAULT_TIMEOUT_S = 60.0

_verified: set[bytes] = set()
_lock = threading.Lock()


def enabled() -> bool:
    """Return True when models are probed in a child process first (Linux, ``EDGETL_PROBE`` not ``0``)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork") and os.environ.get(PROBE_ENV, "1") != "0"


def probe(path: str | Path, data: bytes, build: Callable[[], None], timeout: float | None = None) -> None:
    """Run ``build`` (open the engine on ``data``, run one inference) in a forked child; raise if it crashes or hangs."""
    if not enabled():
        return
    digest = hashlib.sha256(data).digest()
    with _lock:
        if digest in _verified:
            return
    timeout = timeout if timeout is not None else float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12 warns on fork with threads
            pid = os.fork()
    except OSError:
        return  # no process to spare: open the model directly, as without the probe
    if pid == 0:  # the child: no output, no return into the caller's code
        code = 1
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            # Output is discarded anyway; this also keeps the child off the stderr filter's lock,
            # which another thread of the parent may have held at the fork.
            os.environ["EDGETL_NATIVE_LOGS"] = "1"
            build()
            code = 0
        finally:
            os._exit(code)
    status = _wait(pid, timeout)
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
            _verified.add(digest)


def _wait(pid: int, timeout: float) -> int | None:
    """Return the child's wait status, or None after killing it when ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    pause = 0.001
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
