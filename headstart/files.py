"""Files that others read while headstart writes: exclusive locks (a registry model, a run folder), atomic
replacement, flushing, and permissions.

`fcntl.flock` is released by the kernel when its holder dies, so a crashed writer never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

from headstart.errors import HeadstartError

_local = threading.local()
# descriptors of the locks this process holds or waits for: a forked child (a DataLoader worker) closes its copies,
# which would otherwise hold the lock after this process dies, until the child notices and exits
_held_fds: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in _held_fds:
        os.close(fd)  # closing, unlike LOCK_UN, leaves the parent's lock held
    _held_fds.clear()
    _local.held = set()  # the child holds none of them


os.register_at_fork(after_in_child=_close_inherited_locks)
# in a model folder while compress writes its variants or a push copies it; hidden, so a push leaves it out
COMPRESS_LOCK = ".compress.lock"


class NoLocks(HeadstartError):
    """The filesystem of a lock file cannot lock files."""


@contextmanager
def locked(path: Path, timeout: float = 60.0, busy: str | None = None):
    """Hold an exclusive lock on the file `path` (created if missing); waits up to `timeout` seconds, then raises
    `busy` (by default: another writer holds the registry lock). `NoLocks` where the filesystem cannot lock."""
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
    owner = os.getpid()
    _held_fds.add(fd)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise HeadstartError(busy or f"Another writer has held the registry lock {path} for over "
                                                 f"{timeout:g} s. Wait for it to finish, then try again.") from None
                time.sleep(0.02)
            except OSError as exc:
                raise NoLocks(f"Cannot lock {path}: {exc.strerror}. Its filesystem does not lock files (NFS without "
                              "its lock service, some network or FUSE mounts), so two writers could not be kept "
                              "apart: keep it on a local disk, or one that locks files.") from None
        _local.held = held | {key}
        try:
            yield
        finally:
            _local.held = held
    finally:
        if os.getpid() == owner:  # a forked child leaving this block closed its copy when it was forked
            _held_fds.discard(fd)
            with suppress(OSError):  # after a timeout there is nothing to release
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


@contextmanager
def run_lock(run_dir: Path):
    """Held by the process that trains or evaluates a run (a folder with its config.yaml and checkpoints/: not a
    registry version's copy of a run's files, which must stay as registered), so that a second one
    (`--overwrite`, `--resume`, `evaluate`) is refused instead of mixing the two runs' files."""
    run_dir = Path(run_dir)
    with ExitStack() as stack:
        if (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints").is_dir():
            _lock_if_possible(stack, run_dir / ".lock", f"{run_dir} is in use by another headstart process (a fit, "
                              "--resume or evaluate of that run). Wait for it to finish, then try again.")
        yield


@contextmanager
def model_lock(model_dir: Path):
    """Held while `fit --overwrite` moves a run aside: refused while `headstart compress` writes the variants of its
    model folder or `registry push` copies them."""
    with ExitStack() as stack:
        if Path(model_dir).is_dir():
            _lock_if_possible(stack, Path(model_dir) / COMPRESS_LOCK, f"{model_dir} is in use: `headstart compress` is "
                              "writing its variants or `headstart registry push` is copying it. Wait for it to "
                              "finish, then try again.")
        yield


def _lock_if_possible(stack: ExitStack, path: Path, busy: str) -> None:
    """Hold `path`'s lock in `stack`, refused with `busy` if taken; where no lock can be made (a read-only folder, a
    filesystem without locks), nothing else can write there either, so it goes unlocked."""
    try:
        stack.enter_context(locked(path, 0, busy=busy))
    except (OSError, NoLocks):
        pass


@contextmanager
def replacing(path: Path, mode: str = "w", **open_args):
    """A file handle whose content replaces `path` atomically when the block ends: written to a temporary file
    beside it, flushed to disk, then renamed over it. Readers see the old content or the new one, never a partial
    file; a failure (a full disk) leaves the old one and no temporary file. The folder is flushed too, so that
    after a crash the rename has happened or not, whatever wrote next."""
    with replacing_all([path], mode, **open_args) as (handle,):
        yield handle


@contextmanager
def replacing_all(paths: list[Path], mode: str = "w", **open_args):
    """File handles whose contents replace `paths`, each as `replacing` does; every file is written and flushed
    before the first rename, and the renames follow one another in order, so an interruption leaves the old files
    (bar the instant between two renames)."""
    paths = [Path(path) for path in paths]
    temporary = [path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp") for path in paths]
    if "b" not in mode:
        open_args.setdefault("encoding", "utf-8")
    try:
        with ExitStack() as stack:
            handles = [stack.enter_context(open(tmp, mode, **open_args)) for tmp in temporary]
            yield handles
            for handle in handles:
                handle.flush()
                os.fsync(handle.fileno())
        for tmp, path in zip(temporary, paths):
            os.replace(tmp, path)
        for folder in dict.fromkeys(path.parent for path in paths):
            fsync_path(folder)
    finally:
        for tmp in temporary:
            tmp.unlink(missing_ok=True)


def remove_temporary(folder: Path, *names: str) -> None:
    """Remove the temporary files that `replacing` left in `folder` when a kill -9 stopped it mid-write (those of
    the files `names`, or all); call it holding the lock of whatever writes there."""
    for name in names or ("*",):
        for tmp in Path(folder).glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def read_json_object(path: Path, fix: str) -> dict:
    """The JSON object in `path`; anything else is refused, naming the file, with `fix` (what to do)."""
    try:
        value = json.loads(Path(path).read_text())
    except ValueError as exc:  # invalid JSON or UTF-8
        raise HeadstartError(f"{path} is not valid JSON ({exc}). {fix}") from None
    if not isinstance(value, dict):
        raise HeadstartError(f"{path} holds a JSON {type(value).__name__}, not an object. {fix}")
    return value


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically (see `replacing`)."""
    with replacing(path) as handle:
        handle.write(text)


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk (on a filesystem that cannot flush a folder, its renames are done
    all the same)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        if not Path(path).is_dir():
            raise
    finally:
        os.close(fd)


def sync_tree(folder: Path) -> None:
    """Flush every file under `folder`, and the folders themselves, to disk (before renaming it into place, so a
    crash cannot leave a registered version with missing bytes)."""
    for path in [*sorted(Path(folder).rglob("*")), Path(folder)]:
        fsync_path(path)


# read once, at import: reading it means setting it, which would race with files other threads create
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def share_like_umask(folder: Path) -> None:
    """Give `folder` and everything in it the permissions a plain mkdir or open would (temporary folders and
    safetensors files are private to their owner), so that a service account can read a model folder."""
    for path in [Path(folder), *Path(folder).rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~_UMASK)
