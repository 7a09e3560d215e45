"""The one place TensorFlow is imported: Keras 2 (tf-keras) is selected before the first import.

tensorflow-model-optimization only works with Keras 2, so ``TF_USE_LEGACY_KERAS=1`` must be set
before TensorFlow is imported anywhere in the process. Every edgetl module gets TensorFlow and
Keras through :func:`tensorflow` and :func:`keras`, never by importing them at module level, so
``import edgetl`` stays fast and TensorFlow-free.

TensorFlow's log noise is off unless the verbosity is ``--verbose`` (:mod:`edgetl.console`):

- C++ logs: ``TF_CPP_MIN_LOG_LEVEL=3`` unless the user set it. TensorFlow 2.21 logs through
  Abseil, which prints the messages logged before ``absl::InitializeLog()`` (the oneDNN notice,
  the CUDA probe) whatever the level; while ``import tensorflow`` runs, the native stderr is
  passed through a filter that applies ``TF_CPP_MIN_LOG_LEVEL`` to those lines.
  ``TF_ENABLE_ONEDNN_OPTS`` is left alone: it changes the numerics, not just the notice.
- Python: the ``tensorflow`` and ``absl`` loggers at ERROR; warnings raised in tensorflow,
  keras, tf_keras and tensorflow_model_optimization are ignored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import warnings
from typing import Iterator

from .console import on_verbosity_change, verbose_logs

_LOG_LEVEL_VAR = "TF_CPP_MIN_LOG_LEVEL"
_level_we_set: str | None = None  # the TF_CPP_MIN_LOG_LEVEL value edgetl chose (not the user)

# Warnings raised from these packages are theirs to fix, not the user's.
_NOISY_MODULES = r"(tensorflow|tf_keras|keras|tensorflow_model_optimization)(\.|$)"
_warning_filters: list = []  # the filters edgetl inserted, so --verbose can take them out again
_saved_logger_levels: dict[str, int] = {}


def _configure() -> None:
    global _level_we_set
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    current = os.environ.get(_LOG_LEVEL_VAR)
    if current is None or current == _level_we_set:  # the user's own setting always wins
        _level_we_set = "0" if verbose_logs() else "3"
        os.environ[_LOG_LEVEL_VAR] = _level_we_set


def tensorflow():
    """Return the ``tensorflow`` module, configured for Keras 2."""
    _configure()
    if "tensorflow" not in sys.modules:
        apply_python_log_levels()  # first: the import itself warns
        with _native_log_filter(_min_log_level()):
            import tensorflow  # noqa: F401
    import tensorflow as tf

    return tf


def keras():
    """Return Keras 2 (``tf_keras``), the Keras that tensorflow-model-optimization supports."""
    tensorflow()
    import tf_keras

    return tf_keras


def apply_python_log_levels() -> None:
    """Quiet TensorFlow's Python-side logging and warnings, or restore them under ``--verbose``."""
    if verbose_logs():
        for name, level in _saved_logger_levels.items():
            logging.getLogger(name).setLevel(level)
        _saved_logger_levels.clear()
        for entry in _warning_filters:
            with contextlib.suppress(ValueError):
                warnings.filters.remove(entry)
        _warning_filters.clear()
        mutated = getattr(warnings, "_filters_mutated", None)  # invalidates the warnings cache
        if mutated is not None:
            mutated()
        return
    for name in ("tensorflow", "absl"):  # tf.get_logger() is the "tensorflow" logger
        logger = logging.getLogger(name)
        _saved_logger_levels.setdefault(name, logger.level)
        logger.setLevel(logging.ERROR)
    if not _warning_filters:
        warnings.filterwarnings("ignore", module=_NOISY_MODULES)
        _warning_filters.append(warnings.filters[0])


def _follow_verbosity(level: int) -> None:
    if "tensorflow" in sys.modules:  # already imported: only its Python-side logging can still change
        apply_python_log_levels()


on_verbosity_change(_follow_verbosity)


def _min_log_level() -> int:
    try:
        return int(os.environ.get(_LOG_LEVEL_VAR, "0"))
    except ValueError:
        return 0


# Abseil's prefix: severity letter, MMDD, time, thread id, file:line] (e.g. "I0000 00:00:17.. 23 port.cc:153]").
_ABSL_LINE = re.compile(rb"^([IWEF])\d{4} \d\d:\d\d:[\d.]+ +\d+ [^\]]+\] ")
_ABSL_NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}
# Lines the TFLite converter prints straight to stderr (no Abseil prefix, so no severity): the
# quantizer's settings ("fully_quantize: 0, inference_type: 6, ...") on every int8 conversion.
_CONVERTER_NOISE = re.compile(rb"^fully_quantize: \d")


@contextlib.contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Keep TensorFlow's native log lines below ``TF_CPP_MIN_LOG_LEVEL`` (and the converter's settings
    line) off stderr while the block runs (a conversion), unless ``--verbose``."""
    with _native_log_filter(_min_log_level()):
        yield


@contextlib.contextmanager
def _native_log_filter(min_level: int) -> Iterator[None]:
    """Drop native stderr lines below ``min_level`` (Abseil severity) while the block runs.

    Everything else (fatal messages, lines that are not Abseil log lines) is passed on at once,
    so a crash during the block still shows its reason.
    """
    if min_level <= 0:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        read_end, write_end = os.pipe()
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters): nothing to filter
        yield
        return

    def forward() -> None:
        keep = True  # continuation lines share the fate of the log line they follow
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            pending = b""
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    keep = _keep_line(line, keep, min_level)
                    if keep:
                        os.write(saved, line + b"\n")
            if pending and _keep_line(pending, keep, min_level):
                os.write(saved, pending)

    reader = threading.Thread(target=forward, name="edgetl-native-log-filter", daemon=True)
    reader.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError, OSError):
            sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the reader sees EOF
        reader.join(timeout=5)
        if not reader.is_alive():  # else it still writes to saved: leave that descriptor open
            os.close(saved)


def _keep_line(line: bytes, previous_kept: bool, min_level: int) -> bool:
    if line.startswith(_ABSL_NOTICE) or _CONVERTER_NOISE.match(line):
        return False
    match = _ABSL_LINE.match(line)
    if match is None:
        return previous_kept
    severity = _SEVERITY[match.group(1)]
    return severity >= min(min_level, _SEVERITY[b"F"])
