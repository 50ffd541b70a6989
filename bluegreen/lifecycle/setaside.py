"""The record of the blue that promote sets aside in `<staging>/blue-previous/`, and rollback's check of it.

Rollback swaps blue-previous/ back in as the live data dir, so it must be exactly the data promote set
aside: a write into `blue-previous/byteball.sqlite`, a file added or removed by hand, or a nested staging
area made there by running the tool from a shell left inside blue-previous/ would otherwise be rolled
back in silently. Promote records every entry (path, type, size, mtime_ns, inode; a symlink's target),
the SQLite and -wal header counters, and a sha256 of every small file; rollback and status compare.

Cheap by design (promote must stay well under a second at any size): only stat() of every entry, the
SQLite/-wal header reads, and sha256 of files up to HASH_LIMIT bytes (conf.json, keys.json, RocksDB's
CURRENT/MANIFEST/OPTIONS, ...), never of `.sst` files (RocksDB never rewrites one in place, a new one
gets a new name) and never more than HASH_BUDGET bytes in all.

What is NOT a difference (what a stopped node's dir picks up from a read-only look, e.g. `sqlite3
blue-previous/byteball.sqlite .tables`, or a read-only RocksDB open):
  * `-shm` files (the WAL index: rebuilt from the -wal, never data), whatever their size;
  * an EMPTY `-wal` or `-journal` file, appearing or vanishing (a reader creates/truncates/deletes it; an
    empty one carries no page). A -wal or -journal with content is a difference: it holds pages;
  * RocksDB's info logs `rocksdb/LOG`, `rocksdb/LOG.old.*` and an empty `rocksdb/LOCK` (a read-only open
    writes a new LOG and takes the LOCK; neither holds data);
  * atime (never recorded), ctime, owner and mode (ownership is checked and restored by ownership.py),
    and directory mtimes (side files appearing and vanishing change them).
Everything else is: content, size, mtime or inode of any file (a restore by copying gives new inodes:
it is refused too, the operator confirms by hand), any added or removed file, dir or symlink."""

from __future__ import annotations

import hashlib
import os
import stat as statmod
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, TypeAdapter

from bluegreen.lifecycle.fingerprint import DB_NAMES, SqliteHeader, WalHeader, read_sqlite_header, read_wal_header

HASH_LIMIT = 1 << 20  # files up to 1 MiB get a content hash
HASH_BUDGET = 64 << 20  # never hash more than this in one record (bounds promote's time)
SHOWN = 10  # differences listed in a message


class EntryRecord(BaseModel):
    """One path under the set-aside dir."""

    type: Literal["file", "dir", "symlink", "other"]
    size: int = 0
    mtime_ns: int = 0
    inode: int = 0
    sha256: str | None = None  # files up to HASH_LIMIT (not .sst), within the budget
    target: str | None = None  # symlinks


class SetAsideRecord(BaseModel):
    """What promote set aside as blue-previous/ (persisted in state.json)."""

    taken_at: datetime
    entries: dict[str, EntryRecord] = Field(default_factory=dict)
    sqlite: SqliteHeader | None = None
    wal: WalHeader | None = None
    hash_limit: int = HASH_LIMIT


_Entries = TypeAdapter(dict[str, EntryRecord])


def _harmless(rel: str, size: int, is_file: bool) -> bool:
    """True for the side files a read-only look leaves (see the module docstring): never compared."""
    name = rel.rsplit("/", 1)[-1]
    if not is_file:
        return False
    if name.endswith("-shm"):
        return True
    if size == 0 and (name.endswith("-wal") or name.endswith("-journal")):
        return True
    if rel.startswith("rocksdb/") and rel.count("/") == 1:
        if name == "LOG" or name.startswith("LOG.old."):
            return True
        if name == "LOCK" and size == 0:
            return True
    return False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def _scan(root: Path, exclude: frozenset[str], hashes: bool) -> dict[str, EntryRecord]:
    """Every entry under root as EntryRecord (validated in one pydantic-core pass: fast)."""
    return _Entries.validate_python(_scan_raw(root, exclude, hashes))


def _scan_raw(root: Path, exclude: frozenset[str], hashes: bool) -> dict[str, dict]:
    """Every entry under root (lstat, never following links), harmless side files left out.

    os.scandir and plain strings, no pathlib, plain dicts validated at once: this runs on every file of blue
    inside promote (tens of thousands of .sst files on a big node)."""
    out: dict[str, dict] = {}
    budget = HASH_BUDGET
    make = dict
    stack: list[tuple[str, str]] = [(os.fspath(root), "")]
    while stack:
        dir_path, rel_dir = stack.pop()
        try:
            it = os.scandir(dir_path)
        except FileNotFoundError:
            continue
        with it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            name = entry.name
            if not rel_dir and name in exclude:
                continue
            rel = rel_dir + name
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            mode = st.st_mode
            if statmod.S_ISREG(mode):
                if _harmless(rel, st.st_size, True):
                    continue
                digest = None
                if hashes and st.st_size <= HASH_LIMIT and st.st_size <= budget and not name.endswith(".sst"):
                    budget -= st.st_size
                    digest = _sha256(Path(entry.path))
                out[rel] = make(type="file", size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino,
                                sha256=digest, target=None)
            elif statmod.S_ISDIR(mode):
                out[rel] = make(type="dir", size=0, mtime_ns=0, inode=st.st_ino, sha256=None, target=None)
                stack.append((entry.path, rel + "/"))
            elif statmod.S_ISLNK(mode):
                out[rel] = make(type="symlink", size=0, mtime_ns=0, inode=st.st_ino, sha256=None,
                                target=os.readlink(entry.path))
            else:
                out[rel] = make(type="other", size=0, mtime_ns=0, inode=st.st_ino, sha256=None, target=None)
    return out


def _headers(root: Path) -> tuple[SqliteHeader | None, WalHeader | None]:
    for name in DB_NAMES:
        if (root / name).is_file():
            wal = read_wal_header(root / (name + "-wal"))
            return read_sqlite_header(root / name), (wal if wal is not None and wal.size > 0 else None)
    return None, None


def record(root: Path, taken_at: datetime, exclude: frozenset[str] = frozenset()) -> SetAsideRecord:
    """Record the dir about to be set aside (read-only: lstat, header reads, small-file hashes)."""
    sqlite, wal = _headers(root)
    # Raw dicts validated in one pydantic-core pass (much cheaper than one model per entry).
    return SetAsideRecord.model_validate({"taken_at": taken_at, "entries": _scan_raw(root, exclude, hashes=True),
                                          "sqlite": sqlite, "wal": wal})


def _describe_entry(e: EntryRecord) -> str:
    if e.type == "file":
        return f"file, {e.size} bytes"
    if e.type == "symlink":
        return f"symlink to {e.target}"
    return e.type


def compare(rec: SetAsideRecord, root: Path) -> list[str]:
    """Every difference between `root` now and the record, in words (empty list = exactly what was set aside).

    A missing `root` is one difference saying so."""
    if not root.is_dir():
        return [f"{root} is missing (archived, moved or removed?)"]
    now = _scan(root, frozenset(), hashes=False)
    out: list[str] = []
    for rel in sorted(set(rec.entries) | set(now)):
        a, b = rec.entries.get(rel), now.get(rel)
        if b is None:
            assert a is not None
            out.append(f"missing: {rel} ({_describe_entry(a)})")
            continue
        if a is None:
            hint = " - a nested staging area?" if rel.endswith(".bluegreen") or rel.endswith("/state.json") else ""
            out.append(f"added: {rel} ({_describe_entry(b)}){hint}")
            continue
        what: list[str] = []
        if a.type != b.type:
            what.append(f"was a {a.type}, now a {b.type}")
        elif a.type == "file":
            if a.size != b.size:
                what.append(f"size {a.size} -> {b.size}")
            if a.mtime_ns != b.mtime_ns:
                what.append("modified (mtime changed)")
            if a.inode != b.inode:
                what.append("replaced (new inode)")
            if a.sha256 is not None and not what and _sha256(root / rel) != a.sha256:
                what.append("content changed (same size and mtime)")
        elif a.type == "symlink" and a.target != b.target:
            what.append(f"points to {b.target} instead of {a.target}")
        elif a.inode != b.inode:
            what.append("replaced (new inode)")
        if what:
            out.append(f"changed: {rel}: " + ", ".join(what))
    sqlite, wal = _headers(root)
    if rec.sqlite is not None and sqlite is not None and rec.sqlite != sqlite:
        for field in SqliteHeader.model_fields:
            x, y = getattr(rec.sqlite, field), getattr(sqlite, field)
            if x != y:
                out.append(f"SQLite header {field}: {x} -> {y} (the database was written)")
    if rec.wal != wal:
        out.append(f"SQLite -wal header: {rec.wal.model_dump() if rec.wal else 'empty or absent'} -> "
                   f"{wal.model_dump() if wal else 'empty or absent'}")
    return out


def summarize(diffs: list[str], shown: int = SHOWN) -> str:
    """The first `shown` differences, one an indented line, and how many more."""
    lines = [f"    {d}" for d in diffs[:shown]]
    if len(diffs) > shown:
        lines.append(f"    ... and {len(diffs) - shown} more")
    return "\n".join(lines)
