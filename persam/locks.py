"""An exclusive, inter-process lock on a lock file: ``fcntl.flock`` where it exists, else an
``O_EXCL`` lock file holding the owner's pid (a lock left by a dead process is taken over).

The kernel drops an ``flock`` when its holder dies, even on SIGKILL, so a crashed run never blocks
the next one; :func:`held_by_other` lets a run tell a live neighbour's files from a dead run's.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from persam.errors import OutputPathError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

PathLike = str | os.PathLike


class FileLock:
    """An exclusive lock on ``path`` (created if missing, never deleted while in use).

    Args:
        path: the lock file.
        timeout: seconds to wait for another holder (None: wait forever).
        remove: delete the lock file on release (it leaves nothing behind in a user's folder).
            A waiter that then holds the deleted file notices and locks the path anew.
    """

    def __init__(self, path: PathLike, timeout: float | None = None, remove: bool = False) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.remove = remove
        self._fd: int | None = None

    def acquire(self, blocking: bool = True) -> bool:
        """Takes the lock; False when ``blocking`` is False (or the timeout passed) and it is held."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            if self._try():
                return True
            if not blocking or (deadline is not None and time.monotonic() > deadline):
                return False
            time.sleep(0.05)

    def _try(self) -> bool:
        if fcntl is not None:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                raise OutputPathError(f"{self.path}: cannot create lock file ({e.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current != os.fstat(fd).st_ino:  # its holder removed it meanwhile: lock the new one
                os.close(fd)
                return False
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            self._fd = fd
            return True
        return self._try_exclusive_file()  # pragma: no cover - Windows

    def _try_exclusive_file(self) -> bool:  # pragma: no cover - Windows
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            if not _pid_alive(_read_pid(self.path)):
                self.path.unlink(missing_ok=True)  # left by a dead process
            return False
        except OSError as e:
            raise OutputPathError(f"{self.path}: cannot create lock file ({e.strerror})") from None
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if fcntl is not None:
            if self.remove:
                self.path.unlink(missing_ok=True)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        else:  # pragma: no cover - Windows
            os.close(fd)
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> FileLock:
        if not self.acquire():
            raise OutputPathError(f"{self.path}: timed out waiting for another persam run to release it")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def locked(path: PathLike, timeout: float | None = 600.0, remove: bool = True) -> Iterator[FileLock]:
    """``with locked(path):`` holds :class:`FileLock` ``path`` for the block (and by default
    deletes the lock file after)."""
    with FileLock(path, timeout, remove) as lock:
        yield lock


def held_by_other(path: PathLike) -> bool:
    """True when a live process holds the lock ``path`` (this one too, if it holds it)."""
    p = Path(path)
    if not p.exists():
        return False
    if fcntl is None:  # pragma: no cover - Windows
        pid = _read_pid(p)
        return pid != os.getpid() and _pid_alive(pid)
    lock = FileLock(p)
    if lock.acquire(blocking=False):
        lock.release()
        return False
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True
