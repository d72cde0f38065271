"""The one exception type users see: a message that says what is wrong and what to do."""

import traceback
from collections.abc import Iterator


class HeadstartError(Exception):
    """A problem with the user's input, config or files, explained in plain words.

    The CLI prints it as a paragraph (no traceback); the Python API lets it propagate.
    """


def first_five(items: list[str], sep: str = ", ") -> str:
    """The first five of `items` for an error message, and how many more there are."""
    return sep.join(items[:5]) + (f"{sep}and {len(items) - 5} more" if len(items) > 5 else "")


def short(item: str, width: int = 40) -> str:
    """`item` cut to `width` characters, "..." marking the cut."""
    return item if len(item) <= width else item[:width - 3] + "..."


def raised_at(exc: BaseException) -> str:
    """'<type>: <message> (<file>:<line>)' of an exception from a user's code, where it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    if isinstance(exc, SyntaxError) and exc.filename:  # its own text names the file already
        return f"{type(exc).__name__}: {exc.msg} ({exc.filename}:{exc.lineno})"
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def chain(exc: BaseException | None) -> Iterator[BaseException]:
    """`exc` and the exceptions it was raised while handling (`__context__`), each once."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__context__
