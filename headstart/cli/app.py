"""The `headstart` Typer application and its console, shared by the command modules."""

from __future__ import annotations

from contextlib import contextmanager

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fine-tune pretrained models on small labelled datasets, the way the best practitioners do.")
console = Console()


@contextmanager
def on_interrupt(left: str | None = None):
    """Ctrl-C ends the command saying `left` (what it leaves as it was), or else what the interrupt itself says
    (`fit`'s; nothing, in a DDP worker process), with exit status 130."""
    try:
        yield
    except KeyboardInterrupt as exc:
        said = left or (exc.args[0] if exc.args else None)
        if said:
            Console(stderr=True).print(f"Interrupted. {said}", highlight=False, markup=False)
        raise typer.Exit(130) from None

