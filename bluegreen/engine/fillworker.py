"""What one process of the KV fill runs for one chunk: read the chunk's rows from the copy, transform them.

The fill runs with no write transaction open on the copy (the SQL steps below 31 are committed first, at
`user_version=30`, as ocore itself does), so every process can read the copy through a read-only connection
of its own: the SQL reads, a third of the fill's work, are spread over the workers with the hashing instead
of being the main process's serial part. The main process only hands out chunk start points (rowids) and
writes the results to RocksDB and the journal in rowid order.

A process keeps one connection per database for all its chunks (`_READERS`); `release_readers` closes this
process's ones (the main process calls it when the fill ran in-process, `--jobs 1`, so no handle on green
outlives the fill)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import apsw

from bluegreen.engine.joints import ReadContext
from bluegreen.engine.sqlsource import UnitChunkReader, open_chunk_reader_connection
from bluegreen.engine.transform import UnitChunkResult, UnitChunkTask, transform_unit_chunk
from bluegreen.killpoints import killpoint

_READERS: dict[str, tuple[apsw.Connection, UnitChunkReader]] = {}


@dataclass(frozen=True)
class UnitReadTask:
    """One chunk of the fill: the units after `after_rowid` (at most `chunk_size`) of the copy at `db_path`."""

    db_path: str
    after_rowid: int
    chunk_size: int
    ctx: ReadContext
    check_unit_hashes: bool
    strict_payload_hashes: bool


def _reader(db_path: str, chunk_size: int) -> UnitChunkReader:
    cached = _READERS.get(db_path)
    if cached is None or cached[1].chunk_size != chunk_size:
        if cached is not None:
            cached[0].close()
        conn = open_chunk_reader_connection(Path(db_path))
        cached = (conn, UnitChunkReader(conn, chunk_size))
        _READERS[db_path] = cached
    return cached[1]


@dataclass(frozen=True)
class SqliteFailure:
    """An SQLite error of a worker's read, sent back as data: the main process raises the same apsw type, so
    a full disk (temp tables) or a damaged page is classified as it would be in one process."""

    kind: str  # the apsw exception class name, e.g. FullError, CorruptError
    message: str

    def exception(self) -> apsw.Error:
        """The apsw exception this stands for (apsw.Error when the name is unknown)."""
        cls = getattr(apsw, self.kind, apsw.Error)
        return cls(self.message) if isinstance(cls, type) and issubclass(cls, apsw.Error) else apsw.Error(self.message)


def read_and_transform(task: UnitReadTask) -> UnitChunkResult | SqliteFailure | None:
    """Read the chunk after `task.after_rowid` and rebuild, check and serialise its joints; None past the end."""
    try:
        raw = _reader(task.db_path, task.chunk_size).read_raw(task.after_rowid)
    except apsw.Error as exc:
        return SqliteFailure(type(exc).__name__, str(exc))
    killpoint("fillworker.after_read")  # tests: a worker killed mid-fill (as the OOM killer would)
    if raw is None:
        return None
    return transform_unit_chunk(UnitChunkTask(raw=raw, ctx=task.ctx, check_unit_hashes=task.check_unit_hashes,
                                              strict_payload_hashes=task.strict_payload_hashes))


def release_readers() -> None:
    """Close this process's read connections (no-op when it has none)."""
    while _READERS:
        _db, (conn, _reader_) = _READERS.popitem()
        conn.close()


@dataclass(frozen=True)
class UnitListTask:
    """Catch-up: rebuild the joints of these units of the database at `uri` (an SQLite URI, read only)."""

    uri: str
    units: tuple[str, ...]
    ctx: ReadContext
    check_unit_hashes: bool


def read_units_and_transform(task: UnitListTask) -> UnitChunkResult | SqliteFailure | None:
    """Read the listed units and rebuild, check (payload hashes always) and serialise their joints."""
    cached = _READERS.get(task.uri)
    try:
        if cached is None:
            conn = apsw.Connection(task.uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
            conn.setbusytimeout(5000)
            cached = (conn, UnitChunkReader(conn))
            _READERS[task.uri] = cached
        raw = cached[1].read_units_raw(list(task.units))
    except apsw.Error as exc:
        return SqliteFailure(type(exc).__name__, str(exc))
    if raw is None:
        return None
    return transform_unit_chunk(UnitChunkTask(raw=raw, ctx=task.ctx, check_unit_hashes=task.check_unit_hashes,
                                              strict_payload_hashes=True))
