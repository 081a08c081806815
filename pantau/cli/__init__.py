"""The `pantau` command line: one module a command group (the typer app is in `app`)."""

from __future__ import annotations


def main() -> None:
    """The `pantau` console script."""
    from pantau.cli.app import main as run

    run()
