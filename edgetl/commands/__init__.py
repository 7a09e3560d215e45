"""The ``edgetl`` subcommands, one module each (registered by :mod:`edgetl.cli`)."""

from __future__ import annotations

import click


class InputError(click.ClickException):
    """Bad input a user can fix: exit code 2, no traceback."""

    exit_code = 2


def check_output_files(*paths: str | None) -> None:
    """Raise :class:`InputError` now, not after minutes of work, when an output file cannot be written."""
    from pathlib import Path

    from edgetl_runtime.atomic import check_writable

    for out in paths:
        if not out:
            continue
        folder = Path(out).resolve().parent
        if not folder.is_dir():
            raise InputError(f"{out}: folder {folder} does not exist; create it first")
        try:
            check_writable(folder)
        except OSError as exc:
            raise InputError(f"{out}: cannot write there ({exc.strerror or exc}); choose another path") from None


TABLE_WIDTH = 100  # every table fits 100 columns


def table_console(stderr: bool = False):
    """Return a rich Console for tables: the terminal's width up to 100 columns (100 when not a terminal)."""
    from rich.console import Console

    console = Console(stderr=stderr)
    width = min(TABLE_WIDTH, console.width) if console.is_terminal else TABLE_WIDTH
    return Console(stderr=stderr, width=width)
