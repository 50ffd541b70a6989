"""The staging lock: an exclusive flock on `<staging>/lock`, so two `upgrade` runs never interleave.

flock is released by the kernel when the process dies (even by SIGKILL), so a crash never leaves
a stale lock behind; the pid written inside is only for the message."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from bluegreen.errors import LockedError


class StagingLock:
    """Context manager holding an exclusive, non-blocking flock on `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise LockedError naming the holder."""
        fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = read_holder_pid(self.path)
            raise LockedError(
                f"another `upgrade` process{f' (pid {pid})' if pid else ''} holds {self.path}",
                "wait for it to finish (or stop it); a killed process releases the lock by itself",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        """Drop the lock (closing the fd releases the flock)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> StagingLock:
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def read_holder_pid(path: Path) -> int | None:
    """The pid written by the last holder (informational only)."""
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def is_locked(path: Path) -> bool:
    """True when some process holds the lock right now (probe without keeping it)."""
    if not path.exists():
        return False
    fd = os.open(str(path), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
