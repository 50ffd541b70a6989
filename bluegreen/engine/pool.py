"""An ordered, bounded process pool for the CPU-bound parts of stage (KV fill) and verify (hash pass).

`open_pool(jobs).imap(fn, items)` yields `fn(item)` for every item, **in the order of `items`**, computing
up to `jobs` of them at once in worker processes; `imap_unordered` yields `(index, result)` as each finishes
(independent tasks of unequal length: verify's checks) (`jobs` 1: in this process, the reference path). The caller (the main process) keeps every database handle:
it produces the items (SQLite reads) and consumes the results (RocksDB writes, journal saves) itself, so
the engine's journal advances chunk by chunk in rowid order exactly as with one process, and a SIGKILL at
any instant loses only chunks that were never written.

Why this shape and not `multiprocessing.Pool` / `ProcessPoolExecutor`:
- Bounded memory: at most `jobs` items are inside workers and one more is being produced; `Pool.imap`
  drains its input iterator without bound.
- No hang on a dead worker: a worker that dies (OOM killer) closes its pipe, which we see as EOFError and
  turn into `WorkerDied`; `Pool` would wait forever for the lost task.
- No orphans: each worker holds only its own end of a socketpair. When the main process dies (SIGKILL),
  the worker's `recv` sees EOF and it exits; nothing else keeps the pipe open.

Start method: **spawn**, done by hand: each worker is a fresh `python -m bluegreen.engine.poolworker`
started with `subprocess` and given one end of a socketpair (nothing else: `close_fds`). `fork` would copy
the open apsw connection (mid-transaction) and the rocksdict handle (its flock on `rocksdb/LOCK`, its
threads' state) into every child; SQLite and RocksDB both forbid using or even closing such copies.
multiprocessing's own spawn/forkserver re-run the caller's `__main__` in each worker (a script fed on
stdin, a pytest run), which a library cannot control; a worker that runs one known module can be
started from anywhere. It costs one interpreter start per worker (~0.3 s), once per command. Workers ask
the kernel for SIGKILL when their parent dies (PR_SET_PDEATHSIG), so a SIGKILLed stage leaves no orphan
computing a chunk nobody will write.

Deadlock freedom: items are dealt round-robin, one per worker, and the main process sends an item to a
worker only after receiving that worker's previous result, so a worker is always idle in `recv` when its
item arrives and nobody ever blocks writing to a full pipe."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

from bluegreen.engine.poolworker import WorkerFailed
from bluegreen.errors import BluegreenError

T = TypeVar("T")
R = TypeVar("R")

WORKER_DIED_HINT = ("a worker process is usually killed by the kernel's out-of-memory killer (see `dmesg`) or by "
                    "hand; run the same command again (stage resumes from its last durable chunk), with `--jobs 1` "
                    "to use less memory")


class WorkerDied(BluegreenError):
    """A worker process ended without returning its result (killed, out of memory)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, WORKER_DIED_HINT)


def default_jobs() -> int:
    """Usable cores of this process (its CPU affinity, which containers and taskset narrow), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


# Below this many units the default runs in-process: starting workers (a Python start-up each, ~0.3 s on a
# busy machine) costs more than they save on two chunks of work. An explicit --jobs N is always honoured.
SMALL_WORK_UNITS = 10_000


def resolve_jobs(jobs: int | None, work_units: int | None = None) -> int:
    """`None` or 0 -> the usable cores (1 when `work_units` is known and small); otherwise `jobs` itself."""
    if jobs:
        return max(1, int(jobs))
    if work_units is not None and work_units < SMALL_WORK_UNITS:
        return 1
    return default_jobs()


def _start_worker() -> tuple[Connection, subprocess.Popen[bytes]]:
    mine, theirs = socket.socketpair()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "bluegreen.engine.poolworker", str(theirs.fileno())],
                                pass_fds=(theirs.fileno(),), close_fds=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    finally:
        theirs.close()  # only the worker holds its end: its recv sees EOF when we close ours or die
    return Connection(mine.detach()), proc


class OrderedPool:
    """`jobs` worker processes fed round-robin; results come back in submission order."""

    def __init__(self, jobs: int) -> None:
        self._conns: list[Connection] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        try:
            for _ in range(jobs):
                conn, proc = _start_worker()
                self._conns.append(conn)
                self._procs.append(proc)
        except BaseException:
            self.close()
            raise

    def imap(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """`fn(item)` for each item, in order; at most one item per worker in flight."""
        n = len(self._conns)
        inflight: deque[int] = deque()  # worker indexes, oldest first
        nxt = 0
        for item in items:
            if len(inflight) == n:
                # round-robin: the oldest item in flight is on worker `nxt`, the one we need free
                yield self._receive(inflight.popleft())
            self._send(nxt, fn, item)
            inflight.append(nxt)
            nxt = (nxt + 1) % n
        while inflight:
            yield self._receive(inflight.popleft())

    def imap_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[int, R]]:
        """`(i, fn(items[i]))` as each finishes: an idle worker takes the next item at once, so tasks of very
        different lengths (verify's integrity_check beside its hash ranges) keep every worker busy. Still at
        most one item per worker in flight, so memory stays bounded and no send can block."""
        idle = list(range(len(self._conns)))
        busy: dict[int, int] = {}  # worker index -> item index
        it = enumerate(items)
        exhausted = False
        while True:
            while idle and not exhausted:
                nxt = next(it, None)
                if nxt is None:
                    exhausted = True
                    break
                worker = idle.pop(0)
                self._send(worker, fn, nxt[1])
                busy[worker] = nxt[0]
            if not busy:
                return
            ready = wait([self._conns[w] for w in busy])
            for worker in [w for w in busy if self._conns[w] in ready]:
                yield busy.pop(worker), self._receive(worker)
                idle.append(worker)

    def _send(self, index: int, fn: Callable[[Any], Any], item: Any) -> None:
        try:
            self._conns[index].send((fn, item))
        except (BrokenPipeError, OSError) as exc:
            raise WorkerDied(f"worker {index} is gone ({self._exit_text(index)})") from exc

    def _receive(self, index: int) -> Any:
        try:
            status, value = self._conns[index].recv()
        except (EOFError, OSError) as exc:
            raise WorkerDied(f"worker {index} ended without a result ({self._exit_text(index)})") from exc
        if status == "err":
            raise WorkerFailed(f"worker {index} raised:\n{value}")  # the worker's traceback text
        return value

    def _exit_text(self, index: int) -> str:
        proc = self._procs[index]
        try:
            code = proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return "still running"
        return f"killed by signal {-code}" if code < 0 else f"exit {code}"

    def close(self) -> None:
        """Close the pipes (workers then exit on EOF) and reap the workers."""
        for conn in self._conns:
            conn.close()
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()  # one of ours, by its own handle
                proc.wait()
        self._conns, self._procs = [], []

    def __enter__(self) -> OrderedPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InlinePool:
    """The `--jobs 1` reference: the same `imap` contract, computed in this process, no worker at all."""

    def imap(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """`fn(item)` for each item, in order."""
        for item in items:
            yield fn(item)

    def imap_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[int, R]]:
        """`(i, fn(item))` for each item, in order (one process finishes them in order)."""
        for i, item in enumerate(items):
            yield i, fn(item)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> InlinePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_pool(jobs: int) -> InlinePool | OrderedPool:
    """A pool of `jobs` workers, or the in-process reference when `jobs` is 1. Use it as a context manager;
    `fn` and the items given to `imap` must be picklable (a module-level function, plain data)."""
    return InlinePool() if jobs <= 1 else OrderedPool(jobs)
