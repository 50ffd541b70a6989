"""Recognise what the storage layers raise when the disk is full or a RocksDB dir is damaged.

SQLite (apsw) raises `FullError`, Python raises `OSError(ENOSPC)`, and rocksdict raises a bare
`Exception` carrying RocksDB's status text ("IO error: No space left on device ...",
"Corruption: ..."). The lifecycle turns these into our own errors so the operator gets the exit
code and next step of docs/exit-codes.md instead of an internal error."""

from __future__ import annotations

import errno

import apsw

_NO_SPACE_TEXT = ("No space left on device", "Disk quota exceeded", "database or disk is full")


def is_out_of_space(exc: BaseException) -> bool:
    """True when `exc` (or what it was raised from) says the filesystem is full."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, apsw.FullError):
            return True
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if type(cur) is Exception and any(t in str(cur) for t in _NO_SPACE_TEXT):  # rocksdict's RocksDB status
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def rocksdb_corruption(exc: BaseException) -> str | None:
    """RocksDB's message when `exc` is rocksdict reporting a damaged database (bare Exception "Corruption: ...")."""
    text = str(exc)
    if type(exc) is Exception and text.startswith("Corruption:"):
        return text
    return None
