"""A cheap, read-only fingerprint of a node data dir, and a diff that names what changed.

Nothing here opens SQLite or RocksDB: files are stat()ed and the SQLite/WAL headers read with a
plain O_RDONLY read, so fingerprinting the live dir never writes to it. Database files (the SQLite
file, its -wal, everything under rocksdb/) decide drift; other files (conf.json, ...) are tracked
separately because promote re-copies them instead of refusing."""

from __future__ import annotations

import os
import stat
import struct
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, Field

from bluegreen.ocore_facts import DB_NAMES, KV_DIR_NAME

# Files that never carry data: the WAL index (rebuilt from the -wal) and SQLite's lock-only files.
IGNORED_SUFFIXES = ("-shm",)


class FileStat(BaseModel):
    """stat() facts of one file that change whenever it is written or replaced."""

    size: int
    mtime_ns: int
    inode: int
    mode: int


class SqliteHeader(BaseModel):
    """Counters from the 100-byte SQLite header (https://sqlite.org/fileformat.html)."""

    change_counter: int
    page_count: int
    schema_cookie: int
    user_version: int
    wal_mode: bool


class WalHeader(BaseModel):
    """The -wal header: its checkpoint sequence and salts change on every WAL reset."""

    size: int
    checkpoint_seq: int
    salt1: int
    salt2: int


class RocksdbInfo(BaseModel):
    """RocksDB's CURRENT names the live MANIFEST; the manifest grows with every flush/compaction."""

    current: str
    manifest_name: str
    manifest_size: int


class Fingerprint(BaseModel):
    """Fingerprint of a data dir: database part (drift) and other files (re-copied at promote)."""

    db_files: dict[str, FileStat] = Field(default_factory=dict)
    other_files: dict[str, FileStat] = Field(default_factory=dict)
    sqlite: SqliteHeader | None = None
    wal: WalHeader | None = None
    rocksdb: RocksdbInfo | None = None


def is_db_file(rel: str) -> bool:
    """True for the SQLite file, its -wal/-journal, and anything under rocksdb/."""
    if rel.startswith("rocksdb/"):
        return True
    return any(rel == n or rel.startswith(n + "-") for n in DB_NAMES)


def read_sqlite_header(path: Path) -> SqliteHeader | None:
    """Parse the header counters of a SQLite file (None if it is not one)."""
    try:
        with open(path, "rb") as f:
            head = f.read(100)
    except FileNotFoundError:
        return None
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        return None
    return SqliteHeader(
        change_counter=struct.unpack(">I", head[24:28])[0],
        page_count=struct.unpack(">I", head[28:32])[0],
        schema_cookie=struct.unpack(">I", head[40:44])[0],
        user_version=struct.unpack(">i", head[60:64])[0],
        wal_mode=head[18] == 2 and head[19] == 2,
    )


def read_wal_header(path: Path) -> WalHeader | None:
    """Parse a -wal header (None when absent or empty)."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if len(head) < 32:
        return WalHeader(size=size, checkpoint_seq=0, salt1=0, salt2=0)
    seq, salt1, salt2 = struct.unpack(">III", head[12:24])
    return WalHeader(size=size, checkpoint_seq=seq, salt1=salt1, salt2=salt2)


def read_rocksdb_info(kv_dir: Path) -> RocksdbInfo | None:
    """CURRENT and the MANIFEST it names (None when there is no RocksDB there)."""
    try:
        current = (kv_dir / "CURRENT").read_text().strip()
    except FileNotFoundError:
        return None
    manifest = kv_dir / current
    size = manifest.stat().st_size if manifest.exists() else -1
    return RocksdbInfo(current=current, manifest_name=current, manifest_size=size)


def walk_files(root: Path, exclude: frozenset[str] = frozenset()) -> list[str]:
    """Relative paths of every regular file under `root`, sorted; `exclude` names top-level entries to skip.

    One scandir per directory and no stat per file (the entry's type comes with the listing): promote walks
    green's and blue's dirs several times, and a mainnet KV holds tens of thousands of .sst files."""
    out: list[str] = []

    def walk(path: str, prefix: str, top: bool) -> None:
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        subdirs = []
        for e in entries:
            if top and e.name in exclude:
                continue
            if e.is_dir(follow_symlinks=False):
                subdirs.append(e)
            elif e.is_file(follow_symlinks=False):
                out.append(prefix + e.name)
        for d in subdirs:  # a dir's files first, then its subdirs in name order (as os.walk top-down)
            walk(d.path, f"{prefix}{d.name}/", False)

    walk(str(root), "", True)
    return out


def take(root: Path, exclude: frozenset[str] = frozenset()) -> Fingerprint:
    """Fingerprint the data dir `root` (read-only: stat() and header reads only)."""
    fp = Fingerprint()
    for rel in walk_files(root, exclude):
        if rel.endswith(IGNORED_SUFFIXES):
            continue
        try:
            st = os.stat(root / rel)
        except FileNotFoundError:  # a running node's transient file (e.g. a -journal) went away meanwhile
            continue
        fs = FileStat(size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino, mode=st.st_mode)
        (fp.db_files if is_db_file(rel) else fp.other_files)[rel] = fs
    for name in DB_NAMES:
        if (root / name).exists():
            fp.sqlite = read_sqlite_header(root / name)
            fp.wal = read_wal_header(root / (name + "-wal"))
            break
    fp.rocksdb = read_rocksdb_info(root / KV_DIR_NAME)
    return fp


def _when(ns: int, other_ns: int) -> str:
    """A file time for people (UTC): the time of day, with the date when the two differ in day, with
    milliseconds when they fall in the same second."""
    t, o = (datetime.fromtimestamp(x / 1e9, timezone.utc) for x in (ns, other_ns))
    text = t.strftime("%H:%M:%S" if t.date() == o.date() else "%Y-%m-%d %H:%M:%S")
    if ns // 10**9 == other_ns // 10**9:
        text += f".{ns % 10**9 // 10**6:03d}"
    return text


def _describe_change(x: FileStat, y: FileStat, compare_inode: bool) -> list[str]:
    what = []
    if x.size != y.size:
        what.append(f"size {x.size} -> {y.size} bytes")
    if x.mtime_ns != y.mtime_ns:
        what.append(f"modified {_when(x.mtime_ns, y.mtime_ns)} -> {_when(y.mtime_ns, x.mtime_ns)} UTC")
    if compare_inode and x.inode != y.inode:
        what.append("replaced by a new file (new inode)")
    if x.mode != y.mode:
        what.append(f"permissions {stat.filemode(x.mode)} -> {stat.filemode(y.mode)}")
    return what


def _diff_files(kind: str, a: dict[str, FileStat], b: dict[str, FileStat], compare_inode: bool) -> list[str]:
    out: list[str] = []
    for rel in sorted(set(a) | set(b)):
        if rel not in b:
            out.append(f"{kind} file removed: {rel} (was {a[rel].size} bytes)")
        elif rel not in a:
            out.append(f"{kind} file added: {rel} ({b[rel].size} bytes)")
        else:
            what = _describe_change(a[rel], b[rel], compare_inode)
            if what:
                out.append(f"{kind} file changed: {rel}: " + ", ".join(what))
    return out


# What each SQLite header counter means, for the drift message.
_HEADER_MEANING = {
    "change_counter": "the database was written",
    "page_count": "the file grew or shrank",
    "schema_cookie": "the schema changed",
    "user_version": "the schema version changed",
    "wal_mode": "the journal mode changed",
}


def _describe_wal(a: WalHeader | None, b: WalHeader | None) -> str:
    if a is None or b is None:
        return ("SQLite write-ahead log (-wal) " + (f"created ({b.size} bytes)" if b is not None
                                                    else f"removed (was {a.size} bytes)" if a is not None else ""))
    what = []
    if a.size != b.size:
        what.append(f"size {a.size} -> {b.size} bytes")
    if a.checkpoint_seq != b.checkpoint_seq:
        what.append(f"checkpoint sequence {a.checkpoint_seq} -> {b.checkpoint_seq}")
    if (a.salt1, a.salt2) != (b.salt1, b.salt2):
        what.append("salts changed (the log was reset after a checkpoint)")
    return "SQLite write-ahead log (-wal): " + ", ".join(what)


def _describe_rocksdb(a: RocksdbInfo | None, b: RocksdbInfo | None) -> str:
    if a is None or b is None:
        return "RocksDB " + (f"appeared (CURRENT names {b.manifest_name})" if b is not None
                             else f"is gone (CURRENT named {a.manifest_name})" if a is not None else "")
    what = []
    if a.manifest_name != b.manifest_name:
        what.append(f"CURRENT names {a.manifest_name} -> {b.manifest_name} (a new manifest: the store was reopened "
                    "or compacted)")
    if a.manifest_size != b.manifest_size:
        what.append(f"{b.manifest_name} size {a.manifest_size} -> {b.manifest_size} bytes (a flush or compaction)")
    return "RocksDB: " + ", ".join(what)


def diff_db(a: Fingerprint, b: Fingerprint, compare_inode: bool = True) -> list[str]:
    """What changed in the database part from `a` to `b`, one sentence per change (empty list = no drift)."""
    out = _diff_files("database", a.db_files, b.db_files, compare_inode)
    if a.sqlite != b.sqlite and a.sqlite is not None and b.sqlite is not None:
        for field in SqliteHeader.model_fields:
            x, y = getattr(a.sqlite, field), getattr(b.sqlite, field)
            if x != y:
                if field == "wal_mode":
                    x, y = ("WAL" if v else "rollback journal" for v in (x, y))
                out.append(f"SQLite header {field} {x} -> {y} ({_HEADER_MEANING[field]})")
    if a.wal != b.wal:
        out.append(_describe_wal(a.wal, b.wal))
    if a.rocksdb != b.rocksdb:
        out.append(_describe_rocksdb(a.rocksdb, b.rocksdb))
    return out


def diff_other(a: Fingerprint, b: Fingerprint) -> list[str]:
    """What changed among the non-database files (conf.json, keys.json, ...)."""
    return _diff_files("other", a.other_files, b.other_files, True)


def changed_other_files(a: Fingerprint, b: Fingerprint) -> tuple[list[str], list[str]]:
    """(new or changed, removed) non-database files from `a` to `b`, relative paths."""
    changed = [r for r, s in b.other_files.items() if r not in a.other_files or a.other_files[r] != s]
    removed = [r for r in a.other_files if r not in b.other_files]
    return sorted(changed), sorted(removed)
