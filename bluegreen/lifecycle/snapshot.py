"""Copy blue into a fresh green dir without writing to blue: the free-space check, the copy, fsyncs.

- SQLite: the backup API over a read-only connection, so committed data still in the -wal is
  included and the copy is consistent even if the node writes meanwhile. When the file is in WAL
  mode but has no -wal (a cleanly stopped node), a read-only open would *create* -wal/-shm in blue,
  so we open it `immutable=1` and prove afterwards that nothing changed (else we retry normally).
- rocksdb/: file by file; `.sst` files are immutable in RocksDB, so they are hard-linked when the
  filesystem allows; everything else (MANIFEST, CURRENT, OPTIONS, the `*.log` WAL holding data) is copied.
- Every other file of the data dir is copied with its mode and mtime.
The copy goes to `green.partial/` and is renamed to `green/` only when complete and fsynced, so a
half snapshot is never mistaken for a whole one."""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import apsw
from pydantic import BaseModel

from bluegreen.durable import fsync_dir, fsync_file
from bluegreen.engine.sqlsource import sqlite_uri
from bluegreen.errors import OutOfSpaceError, SourceDataError
from bluegreen.lifecycle import fingerprint as fpmod
from bluegreen.lifecycle.killpoints import killpoint
from bluegreen.lifecycle.layout import Layout
from bluegreen.lifecycle.pragma_progress import run_pragma
from bluegreen.lifecycle.state import OnlinePosition, SpaceEstimate

MiB = 1 << 20
BACKUP_PAGES_PER_STEP = 4096
# online stage (the node keeps running): small steps, a pause between them, retries while the node's writer
# holds a lock. See docs/architecture.md "Online snapshot" for the measurements behind the choice.
ONLINE_PAGES_PER_STEP = 256
ONLINE_SLEEP_SECONDS = 0.002
ONLINE_BUSY_RETRIES = 2000  # x ONLINE_BUSY_SLEEP: ~10 s of a lock held by the node before we give up
ONLINE_BUSY_SLEEP = 0.005
Progress = Callable[[str, int, int], None]


class SnapshotReport(BaseModel):
    """What the snapshot copied."""

    sqlite_pages: int
    sqlite_bytes: int
    files_copied: int
    bytes_copied: int
    files_linked: int
    bytes_linked: int
    immutable_read: bool
    seconds: float
    online: OnlinePosition | None = None


def _sqlite_names(db_name: str) -> set[str]:
    return {db_name, f"{db_name}-wal", f"{db_name}-shm", f"{db_name}-journal"}


def _sizes(layout: Layout) -> tuple[int, int, int]:
    """(bytes to copy, bytes of .sst files that can be linked, bytes of the SQLite file and -wal)."""
    blue = layout.data_dir
    sql = sum((blue / n).stat().st_size for n in (layout.db_name, layout.db_name + "-wal") if (blue / n).exists())
    copy = sql
    linkable = 0
    for rel in fpmod.walk_files(blue, layout.exclude):
        if rel.split("/")[0] in _sqlite_names(layout.db_name):
            continue
        size = (blue / rel).stat().st_size
        if rel.startswith("rocksdb/") and rel.endswith(".sst"):
            linkable += size
        else:
            copy += size
    return copy, linkable, sql


# Bytes the v31 step adds (RocksDB joints + df/dfv keys, compressed, plus the engine's SQLite growth), per
# byte of blue's SQLite file. Measured after `stage` on generated devnet nodes (version 28): 2k units 0.239,
# 20k units 0.242 (docs/runbook.md "Planning"). Budgeting the SQLite size once more (the old model) was ~1.6x.
KV_BYTES_PER_SQLITE_BYTE = 0.25
SPACE_METHOD = ("copy = SQLite file + -wal + every non-.sst file (rocksdb/*.sst are hard-linked, 0 bytes); "
                f"KV = {KV_BYTES_PER_SQLITE_BYTE} x SQLite size (measured ratio of what the v31 step adds); "
                "margin = 10% + 16 MiB for the engine's WAL and RocksDB compaction peaks")


def estimate_space(layout: Layout) -> SpaceEstimate:
    """How many bytes stage needs on the staging filesystem, and how many are free.

    copy + KV estimate is the staging footprint after stage (within a few % on generated nodes); the margin
    covers transient peaks (SQLite WAL during the SQL steps, RocksDB flushes). See SPACE_METHOD."""
    copy, linkable, sql = _sizes(layout)
    kv = int(sql * KV_BYTES_PER_SQLITE_BYTE)
    margin = (copy + kv) // 10 + 16 * MiB
    probe = layout.staging_dir if layout.staging_dir.exists() else layout.staging_dir.parent
    st = os.statvfs(probe)
    return SpaceEstimate(copy_bytes=copy, linked_bytes=linkable, kv_estimate_bytes=kv, margin_bytes=margin,
                         needed_bytes=copy + kv + margin, free_bytes=st.f_bavail * st.f_frsize)


def describe_space(est: SpaceEstimate) -> str:
    """The numbers, for the operator."""
    return (f"needs about {est.needed_bytes / MiB:.1f} MiB (copy {est.copy_bytes / MiB:.1f} MiB + KV estimate "
            f"{est.kv_estimate_bytes / MiB:.1f} MiB + margin {est.margin_bytes / MiB:.1f} MiB; "
            f"{est.linked_bytes / MiB:.1f} MiB of .sst files are hard-linked, not copied), "
            f"free {est.free_bytes / MiB:.1f} MiB")


def check_space(layout: Layout) -> SpaceEstimate:
    """Raise OutOfSpaceError (nothing written yet) when the estimate exceeds the free space."""
    est = estimate_space(layout)
    if est.needed_bytes > est.free_bytes:
        raise OutOfSpaceError(
            f"not enough space on the staging filesystem for {layout.staging_dir}: {describe_space(est)}",
            f"free at least {(est.needed_bytes - est.free_bytes) / MiB:.1f} MiB there, or use --staging-dir on "
            "the same filesystem with more room",
        )
    return est


def open_source(db_path: Path, immutable: bool) -> apsw.Connection:
    """A read-only connection to blue's SQLite file (never creates files unless a -wal already exists)."""
    return apsw.Connection(sqlite_uri(db_path, immutable=immutable),
                           flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)


def open_readonly_quiet(db_path: Path) -> apsw.Connection:
    """Read-only connection that leaves no -wal/-shm behind: immutable only when WAL mode and no -wal exists."""
    header = fpmod.read_sqlite_header(db_path)
    wal = Path(str(db_path) + "-wal")
    return open_source(db_path, bool(header and header.wal_mode and not wal.exists()))


def _backup(src: apsw.Connection, dst_path: Path, progress: Progress | None) -> int:
    dst = apsw.Connection(str(dst_path))
    try:
        with dst.backup("main", src, "main") as b:
            first = True
            while not b.done:
                b.step(BACKUP_PAGES_PER_STEP)
                if progress:
                    progress("snapshot sqlite", b.pagecount - b.remaining, b.pagecount)
                if first:
                    killpoint("snapshot.mid_copy")
                    first = False
            pages = b.pagecount
    finally:
        dst.close()
    return pages


def _page_size(db_path: Path) -> int:
    """The page size from the SQLite header (bytes 16-17, big-endian; 1 means 65536)."""
    with open(db_path, "rb") as f:
        raw = f.read(18)[16:18]
    v = int.from_bytes(raw, "big") if len(raw) == 2 else 0
    return 65536 if v == 1 else v


def _cut_short(db_path: Path, header: fpmod.SqliteHeader) -> bool:
    """The file is shorter than the database size its header states (trusted only when the header's
    version-valid-for number equals its change counter, as SQLite itself requires)."""
    with open(db_path, "rb") as f:
        head = f.read(96)
    valid_for = int.from_bytes(head[92:96], "big") if len(head) == 96 else -1
    return valid_for == header.change_counter and header.page_count * _page_size(db_path) > db_path.stat().st_size


def _damaged(db_path: Path, header: fpmod.SqliteHeader, what: str) -> SourceDataError:
    """The error for a source SQLite file SQLite cannot read whole (SQLite's own text can be as bare as "not
    an error" for a file cut short: say what it means)."""
    size = db_path.stat().st_size
    expected = header.page_count * _page_size(db_path)
    short = f"; the file has {size} bytes, its header promises {expected}" if expected > size else ""
    return SourceDataError(
        f"{db_path} is damaged ({what}{short}); nothing was changed in the data dir",
        "restore the node's database from a backup (or resync the node); then re-run `upgrade stage`",
    )


def backup_sqlite(db_path: Path, dst_path: Path, progress: Progress | None = None) -> tuple[int, bool]:
    """Consistent copy of `db_path` into `dst_path` via the backup API; returns (pages, read immutably)."""
    header = fpmod.read_sqlite_header(db_path)
    if header is None:
        raise SourceDataError(f"{db_path} is not a SQLite database", "check the data dir")
    wal = Path(str(db_path) + "-wal")
    immutable = header.wal_mode and not wal.exists()
    before = os.stat(db_path) if immutable else None
    try:
        if immutable and _cut_short(db_path, header):
            raise _damaged(db_path, header, "cut short")
        if immutable:
            # WAL mode and no -wal: nobody has the database open and every commit is in the main file, so the
            # file is itself a consistent snapshot. A plain copy (the kernel's copy_file_range/sendfile) is
            # 3-4x faster than the backup API's page-by-page copy; the checks below catch anyone who opened
            # or wrote it meanwhile, as they do for the backup.
            shutil.copyfile(db_path, dst_path)
            pages = dst_path.stat().st_size // _page_size(dst_path)
            if progress:
                progress("snapshot sqlite", pages, pages)
        else:
            src = open_source(db_path, immutable)
            try:
                pages = _backup(src, dst_path, progress)
            finally:
                src.close()
    except apsw.FullError as exc:
        raise OSError(errno.ENOSPC, str(exc)) from exc
    except (apsw.CorruptError, apsw.NotADBError) as exc:
        raise _damaged(db_path, header, f"SQLite: {type(exc).__name__}: {exc}") from exc
    except apsw.Error as exc:
        raise SourceDataError(f"cannot read {db_path} with SQLite: {exc}",
                              "if the node was killed mid-write, start and stop it once so SQLite recovers "
                              "its journal, then re-run") from exc
    if immutable:
        after = os.stat(db_path)
        if wal.exists() or (after.st_mtime_ns, after.st_size, after.st_ino) != (
                before.st_mtime_ns, before.st_size, before.st_ino):  # type: ignore[union-attr]
            # Someone opened/wrote it while we read without locks: read again with locks.
            dst_path.unlink(missing_ok=True)
            return backup_sqlite(db_path, dst_path, progress)
    return pages, immutable


def _retry_busy(fn: Callable[[], object], counter: list[int]) -> object:
    """Run `fn`, retrying while SQLite says another connection holds a lock (the node writing)."""
    for _ in range(ONLINE_BUSY_RETRIES):
        try:
            return fn()
        except (apsw.BusyError, apsw.LockedError):
            counter[0] += 1
            time.sleep(ONLINE_BUSY_SLEEP)
    return fn()


def backup_sqlite_online(db_path: Path, dst_path: Path, progress: Progress | None = None,
                         before_snapshot: Callable[[], None] | None = None, *,
                         node_stopped: bool = False) -> tuple[int, OnlinePosition]:
    """A consistent copy of a database a running node writes to, never blocking its writers for long.

    WAL mode (what ocore uses): one read transaction is held on the source for the whole copy, and the
    backup copies ONLINE_PAGES_PER_STEP pages per step with a pause between steps. Inside the read
    transaction the source never "changes" for the backup, so it never restarts (a plain stepwise backup
    restarts whenever another connection commits, and never ends under a continuous writer); a WAL reader
    does not block WAL writers (it only holds back checkpoints, so the -wal grows during the copy).
    Rollback-journal mode: a held read lock would block the node's commits for the whole copy, and small
    steps without it restart forever, so the copy is one step (-1) in one short read transaction, retried
    while the node holds its write lock: writers wait at most for one full copy (measured, see the docs).

    `before_snapshot` runs just before the snapshot's read transaction begins (after the -wal/-shm our
    open may create exist): stage takes blue's fingerprint there, so every commit of the node after it is
    drift (one landing between the fingerprint and the snapshot is in green and still counts as drift:
    promote refuses, which is the safe side).

    `node_stopped` (promote's last catch-up, the node checked stopped): nobody waits for us, so the copy is
    not throttled (large steps, no pauses); when every commit is in the main file it is a plain file copy
    (`_copy_stopped`). Downtime is what counts then."""
    header = fpmod.read_sqlite_header(db_path)
    if header is None:
        raise SourceDataError(f"{db_path} is not a SQLite database", "check the data dir")
    wal = Path(str(db_path) + "-wal")
    if node_stopped and header.wal_mode and not (wal.exists() and wal.stat().st_size) \
            and not Path(str(db_path) + "-journal").exists():
        copied = _copy_stopped(db_path, dst_path, before_snapshot)
        if copied is not None:
            return copied
    busy = [0]
    steps = 0
    src = open_source(db_path, False)  # never immutable: the node writes meanwhile
    try:
        src.set_busy_timeout(0)  # we retry ourselves, with pauses the node's writer can use
        began = [0.0]

        def read(sql: str) -> tuple:  # type: ignore[type-arg]
            return tuple(next(src.execute(sql)))

        # A first short read creates the -wal/-shm a read-only open may add; then, holding NO lock, the
        # fingerprint and the header. Never open blue's files in this process while the snapshot's read
        # transaction is held: closing any fd of a file drops every POSIX lock this process has on it
        # (SQLite's own read lock included), and the node could then commit in the middle of the copy.
        _retry_busy(lambda: read("SELECT COUNT(*) FROM sqlite_master"), busy)
        if before_snapshot is not None:
            before_snapshot()
        counter = fpmod.read_sqlite_header(db_path)
        wal_bytes = wal.stat().st_size if wal.exists() else 0

        def begin() -> tuple[int, int, int | None, int]:
            src.execute("BEGIN")
            try:
                # the first read starts the read transaction: its snapshot is the copy's
                rowid, count = read("SELECT IFNULL(MAX(rowid), 0), COUNT(*) FROM units")
                lsm = read("SELECT MAX(main_chain_index) FROM units WHERE is_stable=1")[0]
                dv = read("PRAGMA data_version")[0]
                began[0] = time.time()
            except BaseException:
                src.execute("ROLLBACK")
                raise
            return int(rowid), int(count), lsm, int(dv)

        wal_mode = bool(header.wal_mode)
        position = None
        dst = apsw.Connection(str(dst_path))
        try:
            if wal_mode:
                rowid, count, lsm, dv = _retry_busy(begin, busy)  # type: ignore[misc]
                try:
                    with dst.backup("main", src, "main") as b:
                        per_step = BACKUP_PAGES_PER_STEP if node_stopped else ONLINE_PAGES_PER_STEP
                        while not b.done:
                            _retry_busy(lambda: b.step(per_step), busy)
                            steps += 1
                            if progress:
                                progress("snapshot sqlite", b.pagecount - b.remaining, b.pagecount)
                            if steps == 1:
                                killpoint("snapshot.mid_copy")
                            if not node_stopped:
                                time.sleep(ONLINE_SLEEP_SECONDS)
                        pages = b.pagecount
                finally:
                    src.execute("COMMIT")
                method = "read-transaction+steps"
            else:
                def one_shot() -> tuple[int, tuple[int, int, int | None, int]]:
                    pos = begin()
                    try:
                        with dst.backup("main", src, "main") as b:
                            b.step(-1)
                            return b.pagecount, pos
                    finally:
                        src.execute("COMMIT")

                pages, (rowid, count, lsm, dv) = _retry_busy(one_shot, busy)  # type: ignore[misc]
                steps = 1
                method = "one-step"
            ended = time.time()
            position = OnlinePosition(
                wal_mode=wal_mode, method=method, max_units_rowid=rowid, units=count, last_stable_mci=lsm,
                data_version=dv, header_change_counter=counter.change_counter if counter else 0,
                wal_bytes=wal_bytes, steps=steps, busy_retries=busy[0], began_at_unix=began[0], ended_at_unix=ended)
        finally:
            dst.close()
    except apsw.FullError as exc:
        raise OSError(errno.ENOSPC, str(exc)) from exc
    except (apsw.BusyError, apsw.LockedError) as exc:
        raise SourceDataError(f"the node kept {db_path} locked for too long: {exc}",
                              "re-run `upgrade stage --online` at a quieter moment, or stop the node") from exc
    except apsw.Error as exc:
        raise SourceDataError(f"cannot read {db_path} with SQLite: {exc}", "check the data dir") from exc
    finally:
        src.close()
    return pages, position


def _copy_stopped(db_path: Path, dst_path: Path,
                  before_snapshot: Callable[[], None] | None) -> tuple[int, OnlinePosition] | None:
    """The node is stopped and every commit is in the main file (WAL mode, no -wal content, no -journal): the
    file itself is a consistent snapshot, its pages the database's pages, as the backup API would write them.
    A plain copy is 3-4x faster than the backup API. None (nothing copied) when the file changed meanwhile."""
    if before_snapshot is not None:
        before_snapshot()
    began = time.time()
    st0 = os.stat(db_path)
    shutil.copyfile(db_path, dst_path)
    st1 = os.stat(db_path)
    wal = Path(str(db_path) + "-wal")
    if (st0.st_mtime_ns, st0.st_size, st0.st_ino) != (st1.st_mtime_ns, st1.st_size, st1.st_ino) \
            or (wal.exists() and wal.stat().st_size):
        dst_path.unlink(missing_ok=True)  # someone wrote after all: take the consistent (backup API) way
        return None
    return pages_and_position(dst_path, began, fpmod.read_sqlite_header(dst_path))


def pages_and_position(db_path: Path, began: float, counter: fpmod.SqliteHeader | None,
                       method: str = "copy (node stopped)", immutable: bool = False) -> tuple[int, OnlinePosition]:
    """Page count and OnlinePosition of a quiescent database file (a copy we own, or blue with the node
    stopped and every commit in the main file: `immutable`, so no -shm is created beside an empty -wal)."""
    conn = open_source(db_path, True) if immutable else open_readonly_quiet(db_path)
    try:
        rowid, count = conn.execute("SELECT IFNULL(MAX(rowid), 0), COUNT(*) FROM units").fetchone()
        lsm = conn.execute("SELECT MAX(main_chain_index) FROM units WHERE is_stable=1").fetchone()[0]
        dv = conn.execute("PRAGMA data_version").fetchone()[0]
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    finally:
        conn.close()
    return pages, OnlinePosition(
        wal_mode=True, method=method, max_units_rowid=int(rowid), units=int(count),
        last_stable_mci=lsm, data_version=int(dv), header_change_counter=counter.change_counter if counter else 0,
        wal_bytes=0, steps=1, busy_retries=0, began_at_unix=began, ended_at_unix=time.time())


def quiescent(db_path: Path) -> bool:
    """Every commit is in the main file (WAL mode, no -wal content, no -journal): with the node stopped, the
    file itself is a consistent snapshot whose pages are the database's pages."""
    header = fpmod.read_sqlite_header(db_path)
    wal = Path(str(db_path) + "-wal")
    return bool(header and header.wal_mode and not (wal.exists() and wal.stat().st_size)
                and not Path(str(db_path) + "-journal").exists())


def quick_check(db_path: Path, progress: Progress | None = None) -> list[str]:
    """`PRAGMA quick_check` on a copy we own; [] when it says ok. Progress from SQLite's VM steps."""
    conn = open_readonly_quiet(db_path)
    try:
        rows = [r[0] for r in run_pragma(conn, "PRAGMA quick_check(20)", "quick_check", "quick_check", progress)]
    finally:
        conn.close()
    return [] if rows == ["ok"] else rows


def _copy_file(src: Path, dst: Path) -> int:
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
        return 0
    shutil.copyfile(src, dst, follow_symlinks=False)
    shutil.copystat(src, dst, follow_symlinks=False)
    fsync_file(dst)
    return dst.stat().st_size


def copy_tree_files(src_root: Path, dst_root: Path, rels: list[str], link_sst: bool,
                    progress: Progress | None = None) -> tuple[int, int, int, int]:
    """Copy (or hard-link .sst) each relative path; returns (copied, bytes copied, linked, bytes linked)."""
    copied = bcopied = linked = blinked = 0
    made: set[Path] = set()  # parents known to exist: one check per dir, not per file (20k+ .sst in one dir)
    for i, rel in enumerate(rels):
        s, d = src_root / rel, dst_root / rel
        if d.parent not in made:
            if not d.parent.exists():
                d.parent.mkdir(parents=True)
                shutil.copystat(s.parent, d.parent)
            made.add(d.parent)
        if link_sst and rel.endswith(".sst") and rel.startswith("rocksdb/"):
            try:
                os.link(s, d)
                linked += 1
                blinked += d.stat().st_size
                continue
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
        bcopied += _copy_file(s, d)
        copied += 1
        if progress:
            progress("snapshot files", i + 1, len(rels))
        if i == len(rels) // 2:
            killpoint("snapshot.mid_files")
    return copied, bcopied, linked, blinked


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, _files in os.walk(root):
        fsync_dir(dirpath)


def take_snapshot(layout: Layout, progress: Progress | None = None, *, online: bool = False,
                  before_snapshot: Callable[[], None] | None = None) -> SnapshotReport:
    """Copy blue into `<staging>/green` (via green.partial). Raises OutOfSpaceError on ENOSPC, cleaning up.

    `online`: the node may be writing (pre-31, SQLite only): `backup_sqlite_online`, position recorded."""
    t0 = time.monotonic()
    partial = layout.staging_dir / "green.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    shutil.copystat(layout.data_dir, partial)
    try:
        position = None
        if online:
            pages, position = backup_sqlite_online(layout.data_dir / layout.db_name, partial / layout.db_name,
                                                   progress, before_snapshot)
            immutable = False
        else:
            pages, immutable = backup_sqlite(layout.data_dir / layout.db_name, partial / layout.db_name, progress)
        shutil.copymode(layout.data_dir / layout.db_name, partial / layout.db_name)
        fsync_file(partial / layout.db_name)
        killpoint("snapshot.after_sqlite")
        sqlite_skip = _sqlite_names(layout.db_name)
        rels = [r for r in fpmod.walk_files(layout.data_dir, layout.exclude) if r.split("/")[0] not in sqlite_skip]
        copied, bcopied, linked, blinked = copy_tree_files(layout.data_dir, partial, rels, True, progress)
        _fsync_tree(partial)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            shutil.rmtree(partial, ignore_errors=True)
            est = estimate_space(layout)
            raise OutOfSpaceError(
                f"the staging filesystem filled up while copying blue ({exc}); the partial copy was removed, "
                f"blue is untouched. Stage {describe_space(est)}",
                "free space on the staging filesystem (or pick another --staging-dir on the same filesystem) "
                "and re-run `upgrade stage`",
            ) from exc
        raise
    green = layout.green_dir
    if green.exists():
        shutil.rmtree(green)
    os.rename(partial, green)
    fsync_dir(layout.staging_dir)
    return SnapshotReport(sqlite_pages=pages, sqlite_bytes=(green / layout.db_name).stat().st_size,
                          files_copied=copied, bytes_copied=bcopied, files_linked=linked, bytes_linked=blinked,
                          immutable_read=immutable, seconds=time.monotonic() - t0, online=position)
