"""The one exception type users see: a message that says what is wrong and what to do."""

import os
import sysconfig
import traceback
from collections.abc import Iterator
from pathlib import Path


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
    """'<type>: <message> (<file>:<line>)' of an exception from a user's code: the innermost line of the user's own
    files, not of torch or Python's library, which the user's line called (the innermost line of all if none)."""
    if isinstance(exc, SyntaxError) and exc.filename:  # its own text names the file already
        return f"{type(exc).__name__}: {exc.msg} ({exc.filename}:{exc.lineno})"
    frames = traceback.extract_tb(exc.__traceback__)
    own = [frame for frame in frames if _users(frame.filename)] or frames
    where = f" ({own[-1].filename}:{own[-1].lineno})" if own else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _users(filename: str) -> bool:
    """Whether a traceback's file is the user's: not headstart's, an installed package's (wherever its
    site-packages is: another environment's, reached through PYTHONPATH) or Python's own."""
    if filename.startswith("<"):  # <frozen importlib._bootstrap>, <string>
        return False
    path = os.path.realpath(filename)
    return not ({"site-packages", "dist-packages"} & set(Path(path).parts)
                or any(path == root or path.startswith(root + os.sep) for root in _LIBRARIES))


_LIBRARIES = {os.path.realpath(os.path.dirname(__file__))} | {
    os.path.realpath(sysconfig.get_path(key)) for key in ("stdlib", "platstdlib", "purelib", "platlib")}


def chain(exc: BaseException | None) -> Iterator[BaseException]:
    """`exc` and the exceptions it was raised while handling (`__context__`), each once."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__context__
