"""Atomic file writes: a killed process never leaves a half-written file under the final name."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


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
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(OSError):
            if tmp_path.is_dir():
                import shutil

                shutil.rmtree(tmp_path)
            else:
                tmp_path.unlink()
        raise


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
