"""An exclusive lock on a registry model, held by one writer (process or thread) at a time.

`fcntl.flock` is released by the kernel when its holder dies, so a crashed writer never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from headstart.errors import HeadstartError

_local = threading.local()


@contextmanager
def locked(path: Path, timeout: float = 60.0):
    """Hold an exclusive lock on the file `path` (created if missing); waits up to `timeout` seconds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    held = getattr(_local, "held", set())
    key = str(path.resolve())
    if key in held:  # re-entrant within one thread: promote inside push, for instance
        yield
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        if not path.is_file():
            raise
        fd = os.open(path, os.O_RDONLY)  # a lock file this user may not write (another's): flock needs no more
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise HeadstartError(f"Another writer has held the registry lock {path} for over {timeout:g} s. "
                                         "Wait for it to finish, then try again.") from None
                time.sleep(0.02)
        _local.held = held | {key}
        try:
            yield
        finally:
            _local.held = held
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically: written to a temporary file, flushed to disk, then renamed over it.
    Readers see the old content or the new one, never a partial file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(folder: Path) -> None:
    """Flush every file under `folder`, and the folders themselves, to disk (before renaming it into place, so a
    crash cannot leave a registered version with missing bytes)."""
    for path in [*sorted(Path(folder).rglob("*")), Path(folder)]:
        fsync_path(path)
