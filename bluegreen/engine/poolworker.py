"""A worker process of `engine/pool.py`: `python -m bluegreen.engine.poolworker <fd>`.

Receives `(fn, item)` pickles on the socket `fd`, answers `("ok", fn(item))` or `("err", traceback)`, and
exits at EOF (the main process closed its end or died). It opens no database and no file."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

_PR_SET_PDEATHSIG = 1


class WorkerFailed(RuntimeError):
    """The function raised in a worker; carries the worker's traceback text."""


def _die_with_parent(parent: int) -> None:
    """SIGKILL this worker when the process that started it dies (Linux); no-op elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def serve(conn: Connection) -> None:
    """The worker loop: one result per item, until EOF."""
    while True:
        try:
            fn, item = conn.recv()
        except (EOFError, OSError):
            return  # the main process closed the pipe or died: nothing left to do
        try:
            out: tuple[str, Any] = ("ok", fn(item))
        except BaseException:  # noqa: BLE001 - everything goes back to the main process
            out = ("err", traceback.format_exc())
        try:
            conn.send(out)
        except OSError:
            return


def main(argv: list[str]) -> None:
    """Entry point: `argv[1]` is the socket's file descriptor."""
    parent = os.getppid()
    _die_with_parent(parent)
    # Ctrl-C reaches the whole process group: the main process handles it (and closes our pipe).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import bluegreen.engine.transform  # noqa: F401 - warm up (hashing, JSON) while the first task is planned

    serve(Connection(int(argv[1])))


if __name__ == "__main__":
    main(sys.argv)
