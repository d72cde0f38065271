"""What a long step (`evaluate`, `compress`) says while it works, and warnings that do not stop one."""

from __future__ import annotations

from typing import Callable, Union


def reporter(step: str, progress: Union[bool, Callable[[str], None]]) -> Callable[[str], None]:
    """`progress` itself when it is a function; for True, lines on stderr prefixed with `step` (the messages name
    paths and values as given: printed as written, never as rich markup); for False, nothing."""
    if callable(progress):
        return progress
    if not progress:
        return lambda message: None
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True)
    return lambda message: console.print(f"[dim]{step}:[/] {escape(message)}", highlight=False)


def warn(message: str) -> None:
    """Something that works, but not as it may have been meant: said in yellow on stderr, and the work goes on."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[yellow]{escape(message)}")
