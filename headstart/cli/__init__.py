"""The `headstart` command line. Heavy libraries are imported inside commands, so help and config errors are fast.

Commands live in modules by concern (train, compress, registry, serve); importing them registers them on `app`.
"""

from __future__ import annotations

import errno
import sys

from rich.console import Console
from rich.markup import escape

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
        _fail(str(exc))
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # a write names no file
            _fail(f"{exc.strerror} ({exc.filename or 'while writing'}). Free some space, or write elsewhere (output, "
                  "--out, --registry), and run again: what was saved before is left as it was.")
        if exc.filename is None:  # not about a path the user gave: a bug to see in full
            raise
        _fail(f"{exc.filename}: {exc.strerror}. Check that the path exists, that a folder is given where one is "
              "expected, and that it is writable.")


def _fail(message: str) -> None:
    Console(stderr=True).print(f"[bold red]Error:[/] {escape(message)}", highlight=False)  # paths, values as given
    sys.exit(2)

