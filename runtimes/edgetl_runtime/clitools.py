"""What the ``edgetl-runtime`` commands share: exit codes, verbosity, loading a model, common options.

Kept apart from :mod:`edgetl_runtime.cli` so that the station's commands (:mod:`edgetl_runtime.line.cli`)
use the same pieces without importing the command group that registers them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import click

from .backends.base import DEVICE_GRAMMAR
from .errors import EdgetlRuntimeError

EXIT_CHECK_FAILED = 1
_VERBOSITY = {"level": 0}


class InputError(click.ClickException):
    """Bad input a user can fix (file, option, device): exit status 2, no traceback."""

    exit_code = 2


def _set_verbosity(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value:
        return
    other = ctx.meta.setdefault("edgetl_runtime.verbosity", param.name)
    if other != param.name:
        raise click.UsageError("-q/--quiet and -v/--verbose cannot be combined")
    _VERBOSITY["level"] = -1 if param.name == "quiet" else 1
    if param.name == "verbose":  # keep the engines' own native log lines too
        from .backends.litert import keep_native_logs

        keep_native_logs(True)


def verbosity_options(f: Callable) -> Callable:
    """Add ``-q/--quiet`` and ``-v/--verbose`` to a command."""
    f = click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=_set_verbosity,
                     help="More detail on stderr.")(f)  # fmt: skip
    return click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_verbosity,
                        help="Only results and errors.")(f)  # fmt: skip


def note(message: str) -> None:
    """Print a note on stderr unless --quiet."""
    if _VERBOSITY["level"] >= 0:
        click.echo(f"note: {message}", err=True)


def _load(model: str, device: str | None, threads: int | None, labels: str | None, profile: Any = None,
          **kwargs: Any) -> Any:  # fmt: skip
    from .model import load

    try:
        m = load(model, device=device, threads=threads, labels=labels, profile=profile, **kwargs)
    except EdgetlRuntimeError as exc:
        raise InputError(str(exc)) from None
    except OSError as exc:
        raise InputError(f"{model}: {exc.strerror or exc}") from None
    for text in m.info.notes:
        note(text)
    if _VERBOSITY["level"] > 0:
        i = m.info
        click.echo(f"loaded {i.path}: {i.format}, engine {i.engine}, provider {i.provider}, device {i.device}, "
                   f"{i.threads} threads, input {list(i.input.shape)} {i.input.dtype}", err=True)  # fmt: skip
    return m


def _expand(paths: tuple[str, ...], problems: list[str] | None = None) -> list[Path]:
    """Return the image files named by ``paths``; a folder stands for the images inside it.

    What a folder holds that cannot be read (a symlink that leads nowhere or loops, a pipe named like
    an image, a subfolder that cannot be listed) is appended to ``problems``, never skipped silently.
    """
    import os

    from .preprocess import is_image_file

    problems = problems if problems is not None else []
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            out.append(p)
            continue
        found: list[Path] = []
        for folder, dirs, files in os.walk(p, onerror=lambda exc: problems.append(
                f"{exc.filename}: cannot be listed ({exc.strerror or exc})")):  # fmt: skip
            for name in [*files, *dirs]:
                entry = Path(folder) / name
                if entry.is_symlink() and not entry.exists():
                    problems.append(f"{entry}: a symlink that leads nowhere (broken, or a loop of links)")
                elif name in files and is_image_file(entry):
                    if entry.is_file():
                        found.append(entry)
                    else:
                        problems.append(f"{entry}: not a regular file (a pipe, socket or device)")
        out += sorted(found)
    return out


def _profile(name: str | None) -> Any:
    if not name:
        return None
    from .profiles import load_profile

    try:
        return load_profile(name)
    except (EdgetlRuntimeError, OSError) as exc:
        raise InputError(str(exc)) from None


device_option = click.option(
    "--device", default=None, help=f"device string: {DEVICE_GRAMMAR} [cpu, or the profile's]"
)
profile_option = click.option(
    "--profile", "profile_name", default=None,
    help="device profile (name such as raspberry-pi-4, or a TOML path): its device, threads and engine options apply",
)
fallback_option = click.option(
    "--allow-cpu-fallback", is_flag=True,
    help="ONNX models: run on the CPU when the requested CUDA/TensorRT provider cannot start (default: an error)",
)
threads_option = click.option("--threads", type=click.IntRange(1, 256), default=None,
                              help="CPU threads, 1 to 256 [all cores, at most 4]")  # a profile's bound too
labels_option = click.option(
    "--labels", type=click.Path(exists=True, dir_okay=False), default=None,
    help="labels file (one per output), for a model without edgetl metadata [classes numbered]",
)
softmax_option = click.option("--softmax", is_flag=True, help="the bare model outputs logits: apply a softmax")

def _writable_file(out: str | None) -> None:
    if out and not Path(out).resolve().parent.is_dir():
        raise InputError(f"{out}: folder {Path(out).parent} does not exist; create it first")
    if out:
        from .atomic import check_writable

        try:
            check_writable(Path(out).resolve().parent)
        except OSError as exc:
            raise InputError(f"{out}: cannot write there ({exc.strerror or exc}); choose another path") from None
