"""The `headstart` Typer application and its console, shared by the command modules."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fine-tune pretrained models on small labelled datasets, the way the best practitioners do.")
console = Console()

