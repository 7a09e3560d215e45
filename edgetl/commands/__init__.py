"""The ``edgetl`` subcommands, one module each (registered by :mod:`edgetl.cli`)."""

from __future__ import annotations

import click


class InputError(click.ClickException):
    """Bad input a user can fix: exit code 2, no traceback."""

    exit_code = 2
