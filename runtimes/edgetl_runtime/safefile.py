"""Reading files someone handed over: regular files only, size-bounded, and data formats whose numbers are sane.

Every path edgetl opens goes through :func:`read_regular` (or :func:`open_regular` for a stream): the
file is opened without blocking (``O_NONBLOCK``: a FIFO named ``model.tflite`` or ``profile.toml``
opens at once instead of waiting for a writer), then checked on the open descriptor (no race with a
rename), and refused unless it is a regular file below the caller's limit. Every JSON and TOML file
is parsed by :func:`loads_json` / :func:`loads_toml`: integers beyond ±2⁶³, NaN and infinities, and
nesting deeper than :data:`MAX_DEPTH` are refused there, once, for every reader (a 400-digit integer
used to surface as an ``OverflowError`` wherever it was first turned into a float).

>>> loads_json('{"threshold": 0.5, "n": 3}', "a contract")
{'threshold': 0.5, 'n': 3}
>>> loads_json('{"threshold": 1' + '0' * 400 + '}', "a contract")
Traceback (most recent call last):
...
edgetl_runtime.safefile.DataError: a contract: the number 1000000000000000... (401 digits) is out of range (at most 19 digits)
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

MAX_DEPTH = 64  # objects and arrays in each other: a contract or profile needs 4
_MAX_INT = 2**63


class SpecialFile(OSError):
    """The path is a pipe, socket, device or directory, not a file: reading it could block or never end."""


class TooLarge(OSError):
    """The file is larger than anything of its kind edgetl writes or reads."""


class DataError(ValueError):
    """A JSON or TOML text holds a number out of range, a NaN or infinity, or nesting too deep."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):  # fmt: skip
        if test(mode):
            return name
    return "a special file"


def open_regular(path: str | Path, limit: int | None = None) -> BinaryIO:
    """Return ``path`` opened for reading in binary, after checking on the open file that it is regular (and within ``limit`` bytes).

    Raises :class:`SpecialFile`, :class:`TooLarge` or the ``OSError`` of the open (no such file, a loop).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SpecialFile(f"{path}: not a regular file ({_kind(st.st_mode)})")
        if limit is not None and st.st_size > limit:
            raise TooLarge(f"{path}: {st.st_size:,} bytes, more than the {limit:,} a file of this kind may have")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | Path, limit: int) -> bytes:
    """Return the bytes of the regular file ``path``, at most ``limit`` of them (see :func:`open_regular`)."""
    with open_regular(path, limit) as f:
        # read what the file holds (one more byte to see it grow), not a buffer of ``limit``: a 100 KB
        # image must not cost a 256 MB allocation
        size = os.fstat(f.fileno()).st_size
        data = f.read(min(size, limit) + 1)
        while size < len(data) <= limit:  # it grew after the check: read on in 1 MiB steps, to the limit at most
            more = f.read(min(2**20, limit + 1 - len(data)))
            if not more:
                break
            data += more
    if len(data) > limit:  # it grew after the check
        raise TooLarge(f"{path}: more than the {limit:,} bytes a file of this kind may have")
    return data


def _quote(text: str) -> str:
    return text if len(text) <= 16 else f"{text[:16]}... ({len(text)} digits)"


def _int(text: str, what: str) -> int:
    digits = text.lstrip("+-")
    if len(digits) > 19 or abs(int(text)) >= _MAX_INT:
        raise DataError(f"{what}: the number {_quote(text)} is out of range (at most 19 digits)")
    return int(text)


def _float(text: str, what: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise DataError(f"{what}: the number {_quote(text)} is out of range (not a finite number)")
    return value


def _constant(text: str, what: str) -> float:
    raise DataError(f"{what}: {text} is not a finite number (NaN and infinities are refused)")


def _depth(value: Any, what: str, level: int = 0) -> None:
    if level > MAX_DEPTH:
        raise DataError(f"{what}: nested more than {MAX_DEPTH} levels deep; not a file edgetl wrote")
    if isinstance(value, dict):
        for item in value.values():
            _depth(item, what, level + 1)
    elif isinstance(value, list):
        for item in value:
            _depth(item, what, level + 1)


def loads_json(text: str | bytes, what: str) -> Any:
    """Return the JSON value of ``text``; :class:`DataError` naming ``what`` for bad numbers, nesting or syntax."""
    try:
        value = json.loads(text, parse_int=lambda s: _int(s, what), parse_float=lambda s: _float(s, what),
                           parse_constant=lambda s: _constant(s, what))  # fmt: skip
    except DataError:
        raise
    except RecursionError:
        raise DataError(f"{what}: nested too deeply; not a file edgetl wrote") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{what}: not valid JSON ({str(exc)[:120]})") from None
    _depth(value, what)
    return value


def loads_toml(text: str, what: str) -> dict[str, Any]:
    """Return the TOML table of ``text``, with the numbers checked as :func:`loads_json` checks them."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        value = tomllib.loads(text)
    except RecursionError:
        raise DataError(f"{what}: nested too deeply; not a file edgetl wrote") from None
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{what}: not valid TOML ({str(exc)[:160]})") from None
    _numbers(value, what, 0)
    return value


def _numbers(value: Any, what: str, level: int, where: str = "") -> None:
    """Refuse integers beyond ±2⁶³ and non-finite floats in a parsed TOML value, naming the key (``budget.p50_ms``)."""
    at = f" {where}" if where else ""
    if level > MAX_DEPTH:
        raise DataError(f"{what}: nested more than {MAX_DEPTH} levels deep; not a file edgetl wrote")
    if isinstance(value, bool):
        return
    if isinstance(value, int) and abs(value) >= _MAX_INT:
        raise DataError(f"{what}:{at} the number {_quote(str(value))} is out of range (at most 19 digits)")
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(f"{what}:{at} {value} is not a finite number (NaN and infinities are refused)")
    if isinstance(value, dict):
        for key, item in value.items():
            _numbers(item, what, level + 1, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _numbers(item, what, level + 1, f"{where}[{i}]")
