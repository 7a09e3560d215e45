"""How much edgetl prints: one verbosity for the process and a stderr console that honours it.

Results (tables, JSON, file paths) go to stdout; everything else (progress, informational lines,
warnings, errors) goes to stderr through :func:`err_console`, so ``edgetl ... --json > out.json``
always gives a file that parses. Commands take ``-q/--quiet`` and ``-v/--verbose`` through
:func:`verbosity_options`.

>>> set_verbosity(QUIET); verbosity(), verbose_logs()
(-1, False)
>>> set_verbosity(NORMAL)
"""

from __future__ import annotations

from typing import Any, Callable

import click

QUIET, NORMAL, VERBOSE = -1, 0, 1

_level = NORMAL
_console = None
_listeners: list[Callable[[int], None]] = []


def set_verbosity(level: int) -> None:
    """Set the process's verbosity: -1 quiet (warnings and errors only), 0 normal, 1 verbose."""
    global _level
    _level = max(QUIET, min(VERBOSE, int(level)))
    import sys

    litert = sys.modules.get("edgetl_runtime.backends.litert")
    if _level >= VERBOSE or litert is not None:  # -v keeps the runtime engines' native log lines too
        from edgetl_runtime.backends.litert import keep_native_logs

        keep_native_logs(_level >= VERBOSE)
    for listener in _listeners:
        listener(_level)


def on_verbosity_change(listener: Callable[[int], None]) -> None:
    """Call ``listener(level)`` after every :func:`set_verbosity` (edgetl._tf follows it this way)."""
    if listener not in _listeners:
        _listeners.append(listener)


def verbosity() -> int:
    """Return the current verbosity (-1 quiet, 0 normal, 1 verbose)."""
    return _level


def verbose_logs() -> bool:
    """Return True when TensorFlow's own logs should stay at their defaults (``--verbose``)."""
    return _level >= VERBOSE


def err_console():
    """Return the shared rich console on stderr; it prints nothing while the verbosity is quiet."""
    global _console
    if _console is None:
        from rich.console import Console

        # No file given: rich looks up sys.stderr on every write, so redirections (tests) work.
        # soft_wrap: a line is never broken by rich (a path split over two lines cannot be copied,
        # and without a terminal rich would break at 80 columns); the terminal wraps it for display.
        _console = Console(stderr=True, soft_wrap=True)
    _console.quiet = _level < NORMAL
    return _console


def info(msg: Any) -> None:
    """Print an informational line on stderr unless quiet (rich markup allowed)."""
    if _level >= NORMAL:
        err_console().print(msg)


def debug(msg: Any) -> None:
    """Print a detail line on stderr only when verbose (rich markup allowed)."""
    if _level >= VERBOSE:
        err_console().print(msg)


def warn(msg: Any) -> None:
    """Print ``warning: msg`` on stderr, even when quiet."""
    console = err_console()
    console.quiet = False
    try:
        console.print("[yellow]warning:[/]", msg)
    finally:
        console.quiet = _level < NORMAL


# --------------------------------------------------------------------------- click options

_META_KEY = "edgetl.verbosity_flags"


def _remember_flag(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    # Click calls this for both flags, given or not; once both are known, the verbosity is set
    # (eager options are processed before the others, so before the command body runs).
    flags = ctx.meta.setdefault(_META_KEY, {})
    flags[param.name] = bool(value)
    if len(flags) == 2:
        if flags["quiet"] and flags["verbose"]:
            raise click.UsageError("--quiet and --verbose exclude each other; pass one of them", ctx=ctx)
        set_verbosity(QUIET if flags["quiet"] else VERBOSE if flags["verbose"] else NORMAL)
    return value


def verbosity_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``-q/--quiet`` and ``-v/--verbose`` to a click command; they set :func:`set_verbosity`.

    Apply it below ``@click.command()`` like any ``@click.option``; the command function does not
    receive the flags.
    """
    verbose = click.option(
        "-v", "--verbose", is_flag=True, expose_value=False, is_eager=True, callback=_remember_flag,
        help="Print more: details, and TensorFlow's own log messages.",
    )
    quiet = click.option(
        "-q", "--quiet", is_flag=True, expose_value=False, is_eager=True, callback=_remember_flag,
        help="Print only warnings, errors and the result (no progress).",
    )
    return quiet(verbose(command))
