"""The `headstart` command line. Heavy libraries are imported inside commands, so help and config errors are fast.

Commands live in modules by concern (train, compress, registry, serve); importing them registers them on `app`.
"""

from __future__ import annotations

import sys

from rich.console import Console

# importing a command module registers its commands, listed in `--help` in pipeline order
from headstart.cli import train  # noqa: F401, I001
from headstart.cli import compress, registry, serve  # noqa: F401, I001
from headstart.cli.app import app
from headstart.errors import HeadstartError

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()
    except HeadstartError as exc:
        Console(stderr=True).print(f"[bold red]Error:[/] {exc}", highlight=False)
        sys.exit(2)

