"""The ``edgetl`` subcommands, one module each (registered by :mod:`edgetl.cli`)."""

from __future__ import annotations

import click


class InputError(click.ClickException):
    """Bad input a user can fix: exit code 2, no traceback."""

    exit_code = 2


TABLE_WIDTH = 100  # every table fits 100 columns


def table_console(stderr: bool = False):
    """Return a rich Console for tables: the terminal's width up to 100 columns (100 when not a terminal)."""
    from rich.console import Console

    console = Console(stderr=stderr)
    width = min(TABLE_WIDTH, console.width) if console.is_terminal else TABLE_WIDTH
    return Console(stderr=stderr, width=width)
