"""The one write to the live path: swap the data dir with a staged dir, recoverably.

Preferred: one `renameat2(RENAME_EXCHANGE)` (atomic: the path holds either the old or the new dir
at every instant), then fsync of the parent dirs. Where the kernel/filesystem refuses it (EINVAL,
ENOSYS, ENOTSUP) or the data dir is a mount point (EBUSY; it cannot be renamed at all), a journaled
sequence of plain renames of the dir's *entries*: the journal (written durably first) lists what
moves where, and `recover()` decides from what exists on disk whether to finish or undo.

Both mechanisms leave a journal that the caller removes (`finish`) only after it saved its state,
so a crash between the swap and the state save is finished, not guessed, by the next command."""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel

from bluegreen.durable import atomic_write_json, fsync_dir
from bluegreen.errors import BluegreenError
from bluegreen.lifecycle.killpoints import killpoint

RENAME_EXCHANGE = 2
AT_FDCWD = -100
_SYSCALL_RENAMEAT2 = {"x86_64": 316, "aarch64": 276}
# Ops/test knob: force the journaled fallback even where RENAME_EXCHANGE works.
MECHANISM_ENV = "BLUEGREEN_SWAP_MECHANISM"
STEP_SWAP = "swap"
Progress = Callable[[str, int, int], None]


class SwapJournal(BaseModel):
    """What an in-flight swap does; written durably before the first rename."""

    op: str
    mechanism: str  # "exchange" or "fallback"
    target: Path  # the node's data dir path
    incoming: Path  # the dir whose content goes to `target`
    outgoing: Path  # where `target`'s old content ends up
    target_ino: int
    incoming_ino: int
    entries_out: list[str] = []
    entries_in: list[str] = []
    started_at: datetime


class SwapOutcome(BaseModel):
    """How a swap (or its recovery) ended."""

    op: str
    mechanism: str
    result: str  # "completed" or "undone"
    recovered: bool


def _libc_renameat2() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    libc = ctypes.CDLL(None, use_errno=True)
    return getattr(libc, "renameat2", None)


def rename_exchange(a: Path, b: Path) -> None:
    """Atomically exchange two paths (raises OSError with the kernel's errno)."""
    fn = _libc_renameat2()
    pa, pb = os.fsencode(str(a)), os.fsencode(str(b))
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        rc = fn(AT_FDCWD, pa, AT_FDCWD, pb, RENAME_EXCHANGE)
    else:  # old glibc: call the syscall by number
        nr = _SYSCALL_RENAMEAT2.get(platform.machine())
        if nr is None:
            raise OSError(errno.ENOSYS, "renameat2 not available")
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.syscall(ctypes.c_long(nr), ctypes.c_int(AT_FDCWD), ctypes.c_char_p(pa), ctypes.c_int(AT_FDCWD),
                          ctypes.c_char_p(pb), ctypes.c_uint(RENAME_EXCHANGE))
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(a), None, str(b))


def _entries(d: Path, exclude: frozenset[str]) -> list[str]:
    return sorted(e for e in os.listdir(d) if e not in exclude)


def _fsync_parents(*paths: Path) -> None:
    for p in {x.parent for x in paths} | {x for x in paths if x.is_dir()}:
        if p.exists():
            fsync_dir(p)


def _move(src: Path, dst: Path) -> None:
    if os.path.lexists(dst):
        raise BluegreenError(f"refusing to overwrite {dst} while moving {src}",
                             "this should not happen; inspect the dirs and the swap journal, then contact the authors")
    os.rename(src, dst)


def _run_fallback(j: SwapJournal, exclude: frozenset[str], progress: Progress | None = None) -> None:
    total = len(j.entries_out) + len(j.entries_in) + 1  # every rename, then the fsyncs
    if not j.outgoing.exists():
        j.outgoing.mkdir()
        os.chmod(j.outgoing, os.stat(j.target).st_mode & 0o7777)
        fsync_dir(j.outgoing.parent)
    for k, name in enumerate(j.entries_out):
        if not (j.outgoing / name).exists() and os.path.lexists(j.target / name):
            _move(j.target / name, j.outgoing / name)
        if progress:
            progress(STEP_SWAP, k + 1, total)
    killpoint(f"{j.op}.swap.fallback_between")  # every old entry moved out, no new one in yet
    for i, name in enumerate(j.entries_in):
        if os.path.lexists(j.incoming / name):
            _move(j.incoming / name, j.target / name)
        if progress:
            progress(STEP_SWAP, len(j.entries_out) + i + 1, total)
        if i == 0:
            killpoint(f"{j.op}.swap.fallback_mid")
    # The content now lives in target and outgoing; the emptied incoming dir goes away.
    j.incoming.rmdir()
    _fsync_parents(j.target, j.outgoing, j.incoming)


def swap(op: str, target: Path, incoming: Path, outgoing: Path, journal_path: Path,
         exclude: frozenset[str] = frozenset(), mountpoint: bool = False,
         progress: Progress | None = None) -> SwapOutcome:
    """Put `incoming`'s content at `target` and `target`'s old content at `outgoing`. Journal left for `finish`.

    progress("swap", done, total): one unit per rename of the fallback (plus the final fsyncs); the exchange
    is a single step."""
    if outgoing.exists():
        raise BluegreenError(f"{outgoing} already exists; a previous swap did not finish cleanly",
                             "run `upgrade status` (it recovers in-flight swaps) and follow its advice")
    forced = os.environ.get(MECHANISM_ENV) == "fallback"
    mechanism = "fallback" if (mountpoint or forced or exclude) else "exchange"
    j = SwapJournal(op=op, mechanism=mechanism, target=target, incoming=incoming, outgoing=outgoing,
                    target_ino=os.stat(target).st_ino, incoming_ino=os.stat(incoming).st_ino,
                    entries_out=_entries(target, exclude), entries_in=_entries(incoming, frozenset()),
                    started_at=datetime.now(timezone.utc))
    atomic_write_json(journal_path, j.model_dump(mode="json"))
    killpoint(f"{op}.swap.after_journal")
    if progress:
        progress(STEP_SWAP, 0, len(j.entries_out) + len(j.entries_in) + 1 if mechanism == "fallback" else 1)
    if mechanism == "exchange":
        try:
            rename_exchange(target, incoming)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EBUSY, errno.EXDEV):
                raise
            j.mechanism = "fallback"
            atomic_write_json(journal_path, j.model_dump(mode="json"))
    if j.mechanism == "exchange":
        _fsync_parents(target, incoming)
        killpoint(f"{op}.swap.after_exchange")
        os.rename(incoming, outgoing)  # `incoming` now holds the old content
        _fsync_parents(outgoing)
        if progress:
            progress(STEP_SWAP, 1, 1)
    else:
        _run_fallback(j, exclude, progress)
        if progress:
            total = len(j.entries_out) + len(j.entries_in) + 1
            progress(STEP_SWAP, total, total)
    return SwapOutcome(op=op, mechanism=j.mechanism, result="completed", recovered=False)


def load_journal(journal_path: Path) -> SwapJournal | None:
    """The in-flight swap journal, if any."""
    if not journal_path.exists():
        return None
    return SwapJournal.model_validate_json(journal_path.read_bytes())


def finish(journal_path: Path) -> None:
    """Drop the journal once the caller's state records the outcome."""
    if journal_path.exists():
        journal_path.unlink()
        fsync_dir(journal_path.parent)


def _ino(p: Path) -> int | None:
    try:
        return os.stat(p).st_ino
    except FileNotFoundError:
        return None


def fallback_complete(j: SwapJournal) -> bool:
    """True when every entry has reached its destination."""
    return (all(os.path.lexists(j.outgoing / n) for n in j.entries_out)
            and all(not os.path.lexists(j.incoming / n) and os.path.lexists(j.target / n) for n in j.entries_in))


def recover(journal_path: Path) -> SwapOutcome | None:
    """Finish (if the swap took effect) or undo (if it did not) an interrupted swap. None if nothing in flight.

    The journal is kept; the caller records the outcome in its state, then calls `finish`."""
    j = load_journal(journal_path)
    if j is None:
        return None
    if j.mechanism == "exchange":
        if _ino(j.target) == j.incoming_ino:
            if _ino(j.incoming) == j.target_ino:
                os.rename(j.incoming, j.outgoing)
                _fsync_parents(j.outgoing)
            return SwapOutcome(op=j.op, mechanism=j.mechanism, result="completed", recovered=True)
        return SwapOutcome(op=j.op, mechanism=j.mechanism, result="undone", recovered=True)
    if fallback_complete(j):
        if j.incoming.exists() and not os.listdir(j.incoming):
            j.incoming.rmdir()
            _fsync_parents(j.incoming)
        return SwapOutcome(op=j.op, mechanism=j.mechanism, result="completed", recovered=True)
    # Undo: bring incoming entries back first (names may repeat between the two sides), then outgoing ones.
    if not j.incoming.exists():
        j.incoming.mkdir(mode=0o700)
    for name in j.entries_in:
        if not os.path.lexists(j.incoming / name) and os.path.lexists(j.target / name):
            os.rename(j.target / name, j.incoming / name)
    for name in j.entries_out:
        if os.path.lexists(j.outgoing / name) and not os.path.lexists(j.target / name):
            os.rename(j.outgoing / name, j.target / name)
    if j.outgoing.exists() and not os.listdir(j.outgoing):
        j.outgoing.rmdir()
    _fsync_parents(j.target, j.incoming, j.outgoing)
    return SwapOutcome(op=j.op, mechanism=j.mechanism, result="undone", recovered=True)
