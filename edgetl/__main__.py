"""``python -m edgetl`` runs the CLI."""

from edgetl.cli import main

main()
