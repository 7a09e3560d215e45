"""Atomic file writes: a killed process never leaves a half-written file under the final name."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

_umask_lock = threading.Lock()


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success it is renamed over ``final``.

    The temporary file keeps ``final``'s suffix (Keras and converters look at it). On any error,
    or when the process is interrupted, the temporary file is removed and ``final`` is untouched.
    """
    final = Path(final)
    if not final.parent.is_dir():
        raise FileNotFoundError(f"{final.parent}: output directory does not exist; create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".partial{final.suffix}", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _default_mode(tmp_path)
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(OSError):
            if tmp_path.is_dir():
                import shutil

                shutil.rmtree(tmp_path)
            else:
                tmp_path.unlink()
        raise


def _umask() -> int:
    """Return the process umask (from /proc on Linux: reading it with os.umask() would change it briefly)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _default_mode(path: Path) -> None:
    """Give ``path`` the mode a plain ``open()`` would (0666 or 0777 less the umask), not mkstemp's 0600.

    A model copied to a shared folder must be readable by the service that runs it.
    """
    with contextlib.suppress(OSError):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_umask())


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit(143)`` so that cleanup runs (temporary files of atomic writes).

    By default SIGTERM kills the process on the spot and leaves ``.partial`` files behind. Both
    CLIs call this; a handler someone else installed is left alone. Main thread only.
    """
    import signal

    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _exit_on_signal)


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def check_writable(folder: str | Path) -> None:
    """Raise ``OSError`` unless a file can be created in ``folder``.

    Probes by writing: ``os.access`` says yes to root even on read-only mounts.
    """
    with tempfile.TemporaryFile(dir=folder):
        pass


def write_bytes(final: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``final`` atomically and return the path."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def write_json(final: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``final`` atomically and return the path."""
    return write_bytes(final, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())
