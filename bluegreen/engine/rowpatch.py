"""Catch-up by row patch: green's SQLite changes only in the rows blue changed (docs/catch-up.md "Row patch").

`build_row_patch` compares the old raw snapshot (`prev`) with the new raw state of blue (`src`: a fresh
snapshot, or with the node stopped blue's own quiescent file, read immutable). The rows that differ are found
from the pages that differ (engine/pagediff.py `changed_rowids_indexed`), compared by rowid and every column,
and written to a patch file: per table, the rowids to delete from green and blue's new rows to insert. The
steps the plan follows (schema/patchplan.py) leave a carried row as it is, apart from columns they add, which
take their defaults, so the patch is green's change exactly. The KV part (joints of changed units, the
min_retrievable_mci window, data feeds by (pair, mci)) is written into a copy of green's KV, as in the copy
catch-up. `apply_row_patch` applies the patch to green in one transaction; it is idempotent, so recovery after
the journal simply applies it again."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import apsw
from pydantic import BaseModel, Field

from bluegreen.engine.catchup import DEFINITIONS_TABLE, JOINT_TABLES, CatchUpStats, _rewrite_feeds, \
    _rewrite_joints, add_dependents, finish_joints, timed
from bluegreen.engine.joints import ReadContext
from bluegreen.engine.kvwriter import KvBuilder
from bluegreen.engine.pagediff import PageDiffUnavailable, PageIndex, changed_rowids_indexed, prefetch
from bluegreen.engine.fillworker import SqliteFailure, UnitListTask, read_units_and_transform
from bluegreen.engine.pool import OrderedPool, resolve_jobs
from bluegreen.engine.sqlsource import read_min_retrievable_mci, sqlite_uri
from bluegreen.errors import PreflightError, VerificationFailed
from bluegreen.formats.feeds import data_feed_entries
from bluegreen.formats.networks import Network
from bluegreen.killpoints import killpoint
from bluegreen.ocore_facts import network_of
from bluegreen.schema.patchplan import RowPatchPlan

Progress = Callable[[str, int, int], None]
PARALLEL_JOINTS_MIN = 4000  # changed units from which worker processes pay for their start (about 0.3 s)
# from here the joints, not green's apply, are the longer part: workers on every core (1M units + 100k: 21 s
# of joints in one process, the apply 6 s)
ALL_CORES_JOINTS_MIN = 30000
SEQUENCE_TABLE = "sqlite_sequence"  # patched by name, last (sequence_into_patch)


class RowPatchUnavailable(Exception):
    """The row patch cannot be used here (the reason is the message); the copy catch-up is exact instead."""


class PatchedTable(BaseModel):
    """One table of a row patch."""

    name: str
    columns: list[str]  # blue's columns, in order (green has them first, then the columns the steps added)
    deleted: int  # rowids removed from green (rows that differ, in either snapshot)
    inserted: int  # blue's rows at those rowids
    green_delta: int  # green's row count change


class RowPatch(BaseModel):
    """What `build_row_patch` wrote into the patch file (also kept in the catch-up journal)."""

    tables: list[PatchedTable] = Field(default_factory=list)
    green_row_counts: dict[str, int] = Field(default_factory=dict)  # every table of green after the patch


def open_patch_source(src: Path, prev: Path, green: Path, patch: Path) -> apsw.Connection:
    """A connection with blue's new state as `main` (read only, immutable: a snapshot of ours, or blue's own
    file with the node stopped), the old snapshot as `old`, green as `green` (read only) and the patch file
    as `patch`. Unqualified table names are blue's: the joint reader's."""
    flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI
    conn = apsw.Connection(sqlite_uri(src, immutable=True), flags=flags)
    conn.setbusytimeout(5000)
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute("ATTACH ? AS old", (sqlite_uri(prev, immutable=True),))
    quiet = not any(Path(str(green) + s).exists() for s in ("-wal", "-journal"))
    conn.execute("ATTACH ? AS green", (sqlite_uri(green, immutable=quiet),))
    conn.execute("ATTACH ? AS patch", (sqlite_uri(patch, read_only=False),))
    return conn


def _schema(conn: apsw.Connection, db: str) -> list[tuple[str, str, str, str | None]]:
    return list(conn.execute(f"SELECT type, name, tbl_name, sql FROM {db}.sqlite_master ORDER BY type, name"))


def _columns(conn: apsw.Connection, db: str, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA {db}.table_info(`{table}`)")]


def _roots(conn: apsw.Connection, db: str) -> dict[str, int]:
    return {n: int(r) for n, r in conn.execute(f"SELECT name, rootpage FROM {db}.sqlite_master WHERE type='table'")}


def _count(conn: apsw.Connection, db: str, table: str) -> int:
    return int(conn.execute(f"SELECT COUNT(*) FROM {db}.`{table}`").fetchone()[0])


def carried_tables(conn: apsw.Connection, plan: RowPatchPlan) -> dict[str, list[str]]:
    """Blue's tables the patch carries (name -> blue's columns); raises RowPatchUnavailable when the files do
    not allow a row patch (schema moved, a table without rowid, green's columns not blue's plus added ones)."""
    if _schema(conn, "main") != _schema(conn, "old"):
        raise RowPatchUnavailable("blue's schema changed since the last snapshot")
    green_tables = {n for (n,) in conn.execute("SELECT name FROM green.sqlite_master WHERE type='table'")}
    for t in plan.must_be_empty:
        for db in ("main", "old"):
            present = conn.execute(f"SELECT 1 FROM {db}.sqlite_master WHERE type='table' AND name=?", (t,)).fetchone()
            if present and conn.execute(f"SELECT 1 FROM {db}.`{t}` LIMIT 1").fetchone():
                raise RowPatchUnavailable(f"a step reads the rows of {t}, which is not empty")
    out: dict[str, list[str]] = {}
    for (name,) in conn.execute("SELECT name FROM main.sqlite_master WHERE type='table' ORDER BY name"):
        if name in plan.not_carried or name == SEQUENCE_TABLE:  # sqlite_sequence: by name (sequence_into_patch)
            continue
        if name not in green_tables:
            raise RowPatchUnavailable(f"green has no table {name}")
        try:
            conn.execute(f"SELECT rowid FROM main.`{name}` LIMIT 0").fetchall()
        except apsw.SQLError as exc:
            raise RowPatchUnavailable(f"table {name} has no rowid") from exc
        cols, gcols = _columns(conn, "main", name), _columns(conn, "green", name)
        if gcols[:len(cols)] != cols:
            raise RowPatchUnavailable(f"green's columns of {name} are not blue's followed by added ones")
        out[name] = cols
    return out


def _q(cols: list[str]) -> str:
    return ", ".join(f"`{c}`" for c in cols)


def diff_into_patch(conn: apsw.Connection, tables: dict[str, list[str]], candidates: dict[str, set[int]],
                    stats: CatchUpStats) -> list[PatchedTable]:
    """Write the patch tables (p_<i>: blue's rows to insert, d_<i>: rowids to delete, `tables` the index) and
    fill temp.cu_units with every unit whose own rows differ, plus the dependents (see engine/catchup.py)."""
    for t in ("cu_units", "cu_balls", "cu_assets"):
        conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {t} (unit TEXT PRIMARY KEY)")
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS cu_defs (chash TEXT PRIMARY KEY)")
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS cu_rowids (rid INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE patch.tables (i INTEGER PRIMARY KEY, name TEXT NOT NULL, columns TEXT NOT NULL)")
    out: list[PatchedTable] = []
    for i, (table, cols) in enumerate(tables.items()):
        if not candidates.get(table):  # no dirty leaf of it: none of its rows differ
            if table in JOINT_TABLES or table == DEFINITIONS_TABLE:
                stats.changed_rows[table] = 0
            continue
        conn.execute("DELETE FROM temp.cu_rowids")
        conn.executemany("INSERT INTO temp.cu_rowids VALUES (?)", ((r,) for r in candidates.get(table, ())))
        stats.rows_compared += len(candidates.get(table, ()))
        where = "WHERE rowid IN (SELECT rid FROM temp.cu_rowids)"
        # compared as quote(): SQL equality would take 1 for 1.0 (a change of storage class alone)
        quoted = ", ".join(f"quote(`{c}`)" for c in cols)
        sel = f"SELECT rowid, {quoted} FROM {{db}}.`{table}` {where}"
        new_only = f"SELECT rowid FROM ({sel.format(db='main')} EXCEPT {sel.format(db='old')})"
        old_only = f"SELECT rowid FROM ({sel.format(db='old')} EXCEPT {sel.format(db='main')})"
        conn.execute(f"CREATE TABLE patch.p_{i} (rid INTEGER PRIMARY KEY, {_q(cols)})")
        conn.execute(f"CREATE TABLE patch.d_{i} (rid INTEGER PRIMARY KEY)")
        conn.execute(f"INSERT INTO patch.p_{i} SELECT rowid, {_q(cols)} FROM main.`{table}` WHERE rowid IN ({new_only})")
        conn.execute(f"INSERT OR IGNORE INTO patch.d_{i} SELECT rid FROM patch.p_{i}")
        conn.execute(f"INSERT OR IGNORE INTO patch.d_{i} {old_only}")
        conn.execute("INSERT INTO patch.tables VALUES (?, ?, ?)", (i, table, "\x1f".join(cols)))
        inserted = _count(conn, "patch", f"p_{i}")
        deleted = _count(conn, "patch", f"d_{i}")
        in_green = int(conn.execute(f"SELECT COUNT(*) FROM green.`{table}` WHERE rowid IN "
                                    f"(SELECT rid FROM patch.d_{i})").fetchone()[0])
        out.append(PatchedTable(name=table, columns=cols, deleted=deleted, inserted=inserted,
                                green_delta=inserted - in_green))
        if table in JOINT_TABLES or table == DEFINITIONS_TABLE:
            col = JOINT_TABLES.get(table, "definition_chash")
            stats.changed_rows[table] = deleted
            changed = (f"SELECT `{col}` FROM patch.p_{i} UNION "
                       f"SELECT `{col}` FROM old.`{table}` WHERE rowid IN (SELECT rid FROM patch.d_{i})")
            target = {"definitions": "cu_defs", "balls": "cu_balls", "assets": "cu_assets"}.get(table)
            if target:
                conn.execute(f"INSERT OR IGNORE INTO temp.{target} {changed}")
            if table != DEFINITIONS_TABLE:
                conn.execute(f"INSERT OR IGNORE INTO temp.cu_units {changed}")
    stats.changed_units = _count(conn, "temp", "cu_units")
    add_dependents(conn, stats)
    return out


class Counts(BaseModel):
    """Row counts known before a row patch (none of them is trusted for blue's new state, always counted):
    `old` of the kept snapshot (its page index), `green` of green now (state.json). Missing: counted."""

    old: dict[str, int] | None = None
    green: dict[str, int] | None = None


class _Counter(threading.Thread):
    """COUNT(*) of tables in its own read-only connection, on a thread (SQLite counts without the GIL), so
    the check overlaps the KV part instead of preceding it (0.7 s on cold files at 1M units)."""

    def __init__(self, uri: str, names: list[str]) -> None:
        super().__init__(name="row-counts", daemon=True)
        self.uri, self.names = uri, names
        self.counts: dict[str, int] = {}
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            conn = apsw.Connection(self.uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
            try:
                self.counts = {n: _count(conn, "main", n) for n in self.names}
            finally:
                conn.close()
        except BaseException as exc:  # noqa: BLE001 - handed over by result()
            self.error = exc

    def result(self) -> dict[str, int]:
        self.join()
        if self.error is not None:
            raise self.error
        return self.counts


def sequence_into_patch(conn: apsw.Connection, tables: dict[str, list[str]]) -> None:
    """patch.seq: blue's sqlite_sequence rows of the carried tables, applied by name after the rows (an
    insert into an AUTOINCREMENT table moves green's row by itself; blue's value is the one to keep, and a
    row of a table the steps dropped or that only green has is not blue's to set)."""
    if conn.execute("SELECT 1 FROM main.sqlite_master WHERE name=?", (SEQUENCE_TABLE,)).fetchone() is None:
        return
    conn.execute("CREATE TABLE patch.seq (name TEXT PRIMARY KEY, seq)")
    conn.executemany(f"INSERT INTO patch.seq SELECT name, seq FROM main.{SEQUENCE_TABLE} WHERE name=?",
                     ((t,) for t in tables))


def check_counts(tables: list[str], patched: list[PatchedTable], blue: dict[str, int], old: dict[str, int]) -> None:
    """Green's change per carried table (the patch's: 0 for a table without a differing row) must be blue's,
    counted independently of the diff: blue's new state now, the old snapshot's when it was kept."""
    delta = {p.name: p.green_delta for p in patched}
    bad = [f"{t}: blue {blue[t] - old[t]:+d} rows, the patch {delta.get(t, 0):+d}"
           for t in tables if blue[t] - old[t] != delta.get(t, 0)]
    if bad:
        raise VerificationFailed("the catch-up's row patch does not follow blue's row counts:\n    "
                                 + "\n    ".join(bad[:20]), "green is unchanged; run `upgrade catch-up` again, or "
                                 "stage again")


def green_counts_after(conn: apsw.Connection, patched: list[PatchedTable], known: dict[str, int] | None) -> dict[str, int]:
    """Every table's row count of green after the patch (as greendiff.row_counts: no sqlite_ tables)."""
    deltas = {p.name: p.green_delta for p in patched}
    green = known or {}
    return {n: (green[n] if n in green else _count(conn, "green", n)) + deltas.get(n, 0)
            for (n,) in conn.execute("SELECT name FROM green.sqlite_master WHERE type='table' "
                                     "AND name NOT LIKE 'sqlite_%'")}


def rewrite_feeds_by_mci(conn: apsw.Connection, kv: KvBuilder, stats: CatchUpStats) -> None:
    """df/dfv keys of every (address, feed_name, mci) a changed unit has, in the old snapshot or the new one.

    Every such key ends in the encoded mci (None counts as 0) after `df\\n<address>\\n<feed_name>\\n`, so the
    keys of one (pair, mci) come only from the rows of that pair at that mci. The old rows' keys are deleted,
    then the new rows are replayed in the full fill's order (data_feeds rowid, author address): the same last
    writer per key as the full fill. A feed name or address holding a newline: every feed key is rewritten."""
    newline = any(conn.execute(f"SELECT 1 FROM {s}.data_feeds WHERE instr(feed_name, char(10)) LIMIT 1").fetchone()
                  for s in ("main", "old"))
    if newline:
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS cu_pairs (address TEXT, feed_name TEXT, "
                     "PRIMARY KEY (address, feed_name))")
        _rewrite_feeds(conn, kv, True, stats)
        return
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS cu_feed_at (address TEXT, feed_name TEXT, mci INTEGER, "
                 "PRIMARY KEY (address, feed_name, mci))")
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS cu_mcis (mci INTEGER PRIMARY KEY)")
    for s in ("main", "old"):
        conn.execute(f"INSERT OR IGNORE INTO temp.cu_feed_at SELECT a.address, d.feed_name, "
                     f"IFNULL(u.main_chain_index, 0) FROM {s}.data_feeds AS d CROSS JOIN {s}.units AS u USING(unit) "
                     f"CROSS JOIN {s}.unit_authors AS a USING(unit) WHERE d.unit IN (SELECT unit FROM temp.cu_units)")
    conn.execute("INSERT OR IGNORE INTO temp.cu_mcis SELECT DISTINCT mci FROM temp.cu_feed_at")
    wanted = {(a, f, m) for a, f, m in conn.execute("SELECT address, feed_name, mci FROM temp.cu_feed_at")}
    stats.feed_pairs = len({(a, f) for a, f, _m in wanted})
    has_zero = conn.execute("SELECT 1 FROM temp.cu_mcis WHERE mci=0").fetchone() is not None

    def entries(schema: str) -> dict[bytes, bytes]:
        keyed: dict[bytes, bytes] = {}
        null = " OR u.main_chain_index IS NULL" if has_zero else ""
        sql = (f"SELECT d.unit, a.address, d.feed_name, d.`value`, d.int_value, u.main_chain_index "
               f"FROM {schema}.units AS u CROSS JOIN {schema}.data_feeds AS d USING(unit) "
               f"CROSS JOIN {schema}.unit_authors AS a USING(unit) "
               f"WHERE u.main_chain_index IN (SELECT mci FROM temp.cu_mcis){null} ORDER BY d.rowid, a.address")
        for unit, address, feed_name, value, int_value, mci in conn.execute(sql):
            if (address, feed_name, mci or 0) in wanted:
                for k, v in data_feed_entries(address, feed_name, value, int_value, mci, unit):
                    keyed[k.encode("utf-8")] = v.encode("utf-8")
        return keyed

    old, new = entries("old"), entries("main")
    stats.kv_deletes += kv.delete_chunk([k for k in old if k not in new])
    stats.kv_puts += kv.write_chunk(list(new.items()))


def rewrite_joints_in_workers(conn: apsw.Connection, kv: KvBuilder, ctx: ReadContext, stats: CatchUpStats,
                              uri: str, jobs: int, *, check: bool, chunk: int = 1000,
                              progress: Progress | None = None) -> None:
    """As engine/catchup.py `_rewrite_joints`, with the joints read and rebuilt by `jobs` worker processes
    (each with its own read-only connection to `uri`), written here in rowid order."""
    wanted = [r[0] for r in conn.execute("SELECT unit FROM temp.cu_units")]
    present = [r[0] for r in conn.execute("SELECT unit FROM main.units WHERE unit IN "
                                          "(SELECT unit FROM temp.cu_units) ORDER BY rowid")]
    stats.kv_deletes += kv.delete_chunk(("j\n" + unit).encode("utf-8") for unit in wanted)
    stats.joints_removed = len(set(wanted) - set(present))
    stats.joint_workers = jobs
    tasks = (UnitListTask(uri=uri, units=tuple(present[i:i + chunk]), ctx=ctx, check_unit_hashes=check)
             for i in range(0, len(present), chunk))
    done, failures = 0, []
    with OrderedPool(jobs) as pool:
        for res in pool.imap(read_units_and_transform, tasks):
            if isinstance(res, SqliteFailure):
                raise res.exception()
            if res is None:
                continue
            failures += [f"{f.unit}: {f.reason} ({f.detail})" for f in res.failures]
            killpoint("catchup.mid_joints")
            stats.kv_puts += kv.write_chunk(res.puts)
            done += res.units
            if progress:
                progress("catch-up joints", done, len(present))
    finish_joints(stats, done, failures)


def build_row_patch(conn: apsw.Connection, kv_dir: Path, *, plan: RowPatchPlan, prev: Path, src: Path,
                    green: Path, index: PageIndex, source_version: int, light: bool, genesis_unit: str | None,
                    network: Network | None, old_min_retrievable_mci: int, stats: CatchUpStats,
                    counts: Counts, patch: Path, checkpoint: bool, unit_chunk: int = 2000,
                    progress: Progress | None = None) -> tuple[RowPatch, PendingApply]:
    """Fill the patch file (`patch`, attached as `patch`), apply it to green in a transaction left open
    (`PendingApply`: the caller commits it after its journal) and bring `kv_dir` (a copy of green's KV) to
    blue's new state.

    `network`: the one stage found (None: read from the units again). `counts`: the row counts already known.
    Raises RowPatchUnavailable before writing anything when the files do not allow it."""
    tm = stats.timings
    uv = int(conn.execute("PRAGMA main.user_version").fetchone()[0])
    if uv != source_version:
        raise PreflightError(f"blue is at schema version {uv} now, the staged source was {source_version} (the "
                             "node was upgraded meanwhile?): green cannot be caught up", "stage again: `upgrade stage`")
    with timed(tm, "diff"):
        tables = carried_tables(conn, plan)
        ro, rn = _roots(conn, "old"), _roots(conn, "main")
        try:
            candidates, dirty = changed_rowids_indexed(prev, src, {t: (ro[t], rn[t]) for t in tables}, index)
        except PageDiffUnavailable as exc:
            raise RowPatchUnavailable(str(exc)) from exc
        stats.dirty_pages = len(dirty)
        # green's file has blue's page layout, apart from what the steps and earlier patches allocated: the
        # pages the apply will read are mostly these; read them ahead while the joints are built
        prefetch(green, dirty, index.page_size)
        stats.diff_method = "pages (row patch)"
        conn.execute("BEGIN")  # the patch file's writes, one transaction
        patched = diff_into_patch(conn, tables, candidates, stats)
        sequence_into_patch(conn, tables)
    with timed(tm, "row_counts"):
        names = list(tables)
        blue_counter = _Counter(sqlite_uri(src, immutable=True), names)
        old_counter = None if counts.old is not None and all(n in counts.old for n in names) \
            else _Counter(sqlite_uri(prev, immutable=True), names)
        green_counts = green_counts_after(conn, patched, counts.green)  # read before the apply below starts
    stats.row_counts_checked = len(names)
    conn.execute("COMMIT")  # the patch file is complete: green's apply reads it while the KV part is built
    conn.execute("DETACH green")  # read no more here: it is being written
    conn.execute("BEGIN")
    pending = PendingApply(green, patch, checkpoint=checkpoint)
    try:
        _build_kv(conn, kv_dir, src=src, light=light, genesis_unit=genesis_unit, network=network,
                  old_min_retrievable_mci=old_min_retrievable_mci, stats=stats, unit_chunk=unit_chunk,
                  progress=progress)
        with timed(tm, "row_counts"):
            check_counts(names, patched, blue_counter.result(),
                         old_counter.result() if old_counter is not None else dict(counts.old or {}))
        with timed(tm, "apply_wait"):
            stats.rows_written = pending.wait()
        stats.apply_seconds = pending.seconds
    except BaseException:
        pending.abandon()
        blue_counter.join()
        if old_counter is not None:
            old_counter.join()
        raise
    return RowPatch(tables=patched, green_row_counts=green_counts), pending


def _build_kv(conn: apsw.Connection, kv_dir: Path, *, src: Path, light: bool, genesis_unit: str | None,
              network: Network | None, old_min_retrievable_mci: int, stats: CatchUpStats, unit_chunk: int,
              progress: Progress | None) -> None:
    """The KV part of a row patch: joints of the changed units and the min_retrievable_mci window, feeds."""
    tm = stats.timings
    if network is None:
        network = network_of(conn, genesis_unit)
    new_mrm = read_min_retrievable_mci(conn)
    stats.min_retrievable_mci_before, stats.min_retrievable_mci_after = old_min_retrievable_mci, new_mrm
    lo, hi = sorted((old_min_retrievable_mci, new_mrm))
    before = _count(conn, "temp", "cu_units")
    conn.execute("INSERT OR IGNORE INTO temp.cu_units SELECT unit FROM main.units WHERE main_chain_index "
                 "BETWEEN ? AND ?", (lo, hi))
    stats.mci_window_units = _count(conn, "temp", "cu_units") - before
    ctx = ReadContext(network=network, min_retrievable_mci=new_mrm, light=light)
    kv = KvBuilder(kv_dir)
    try:
        with timed(tm, "joints"):
            n = _count(conn, "temp", "cu_units")
            # green's apply runs meanwhile on a thread of its own (C, no GIL): it keeps one core busy, and it is
            # the longer of the two, so worker processes only pay with cores to spare (measured at 1M units
            # with 2 cores: two workers slowed the apply more than they sped up the joints)
            jobs = resolve_jobs(None) - (0 if n >= ALL_CORES_JOINTS_MIN else 1)
            if jobs > 1 and n >= PARALLEL_JOINTS_MIN:
                rewrite_joints_in_workers(conn, kv, ctx, stats, sqlite_uri(src, immutable=True), jobs,
                                          check=not light,
                                          progress=progress)
            else:
                _rewrite_joints(conn, kv, ctx, stats, unit_chunk, progress, check=not light)
        with timed(tm, "feeds"):
            rewrite_feeds_by_mci(conn, kv, stats)
    finally:
        with timed(tm, "commit"):
            kv.close()
    killpoint("catchup.before_commit")
    with timed(tm, "commit"):
        conn.execute("COMMIT")
    stats.units_after = _count(conn, "main", "units")


APPLY_CACHE_KIB = 65536  # green's page cache for the apply (measured at 1M units, below)


def _open_green(green: Path, checkpoint: bool) -> tuple[apsw.Connection, bool]:
    conn = apsw.Connection(str(green))
    conn.setbusytimeout(5000)
    # A modest cache on purpose: the transaction spills its pages to the -wal as it goes, so the commit has
    # less left to write (10k-unit tail at 1M units: commit 0.5-0.7 s with 64 MiB, 1.2-2.7 s with 1 GiB)
    conn.execute(f"PRAGMA cache_size=-{APPLY_CACHE_KIB}")
    conn.execute("PRAGMA synchronous=FULL")
    wal = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"
    if wal and not checkpoint:
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
    return conn, wal


def _apply_statements(conn: apsw.Connection) -> int:
    """Inside the caller's transaction: every table's deletes and inserts, then sqlite_sequence by name."""
    written = 0
    for i, name, columns in list(conn.execute("SELECT i, name, columns FROM patch.tables ORDER BY i")):
        cols = _q(str(columns).split("\x1f"))
        conn.execute(f"DELETE FROM main.`{name}` WHERE rowid IN (SELECT rid FROM patch.d_{i})")
        conn.execute(f"INSERT INTO main.`{name}` (rowid, {cols}) SELECT rid, {cols} FROM patch.p_{i}")
        written += conn.changes()
        killpoint("catchup.mid_patch")
    if conn.execute("SELECT 1 FROM patch.sqlite_master WHERE name='seq'").fetchone():
        conn.execute(f"UPDATE main.{SEQUENCE_TABLE} SET seq=(SELECT seq FROM patch.seq WHERE patch.seq.name="
                     f"main.{SEQUENCE_TABLE}.name) WHERE name IN (SELECT name FROM patch.seq)")
        conn.execute(f"INSERT INTO main.{SEQUENCE_TABLE} (name, seq) SELECT name, seq FROM patch.seq "
                     f"WHERE name NOT IN (SELECT name FROM main.{SEQUENCE_TABLE})")
    return written


def _finish(conn: apsw.Connection, wal: bool, checkpoint: bool) -> None:
    conn.execute("DETACH patch")
    if wal and checkpoint:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def apply_row_patch(green: Path, patch: Path, *, checkpoint: bool = True) -> int:
    """Apply a patch file to green's SQLite in one transaction (idempotent: every inserted rowid is deleted
    first). Returns the rows written.

    `checkpoint=False` (promote, the node stopped): when green is in WAL mode the commit is durable in green's
    -wal (synchronous=FULL syncs it) and is left there, not copied into the main file: the -wal moves with
    green at the swap and the node's SQLite folds it in at its next checkpoint. That copy and its fsync
    (1.6 s for a 10k-unit tail at 1M units) are then not downtime."""
    conn, wal = _open_green(green, checkpoint)
    try:
        conn.execute("ATTACH ? AS patch", (str(patch),))
        conn.execute("BEGIN IMMEDIATE")
        try:
            written = _apply_statements(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        _finish(conn, wal, checkpoint)
    finally:
        conn.close()
    return written


class PendingApply:
    """The patch applied to green in an open write transaction, on a thread of its own (SQLite runs without
    the GIL), while the joints and feeds are built. `commit` once the catch-up's journal is written; any
    other end rolls it back (`abandon`, or the process dying: SQLite discards an uncommitted transaction), and
    recovery applies the patch file again."""

    def __init__(self, green: Path, patch: Path, *, checkpoint: bool) -> None:
        self.checkpoint = checkpoint
        self.green = green
        self._conn, self._wal = _open_green(green, checkpoint)
        self.written = 0
        self.seconds = 0.0  # the thread's own time (it overlaps the KV part)
        self._error: BaseException | None = None
        try:
            self._conn.execute("ATTACH ? AS patch", (str(patch),))
            self._conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._conn.close()
            raise
        self._thread = threading.Thread(target=self._run, name="green-apply", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t0 = time.monotonic()
        try:
            self.written = _apply_statements(self._conn)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread by wait()
            self._error = exc
        self.seconds = round(time.monotonic() - t0, 3)

    def wait(self) -> int:
        """Until every statement ran; re-raises its error here. Returns the rows written."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.written

    def commit(self) -> None:
        """Make the patch durable in green (after the journal)."""
        self.wait()
        try:
            self._conn.execute("COMMIT")
            _finish(self._conn, self._wal, self.checkpoint)
        finally:
            self._conn.close()

    def abandon(self) -> None:
        """Roll the transaction back (the build failed or is discarded) and leave green's files as they were."""
        self._thread.join()
        try:
            self._conn.execute("ROLLBACK")
        except apsw.Error:
            pass
        finally:
            self._conn.close()
        settle_wal(self.green)


def settle_wal(green: Path) -> None:
    """After a transaction on green was rolled back or died with its process: the -wal it created (holding
    no commit of ours) goes again. The last connection's close checkpoints what is committed and deletes the
    -wal, so green's files are as verify fingerprinted them."""
    if Path(str(green) + "-wal").exists():
        conn = apsw.Connection(str(green))
        try:
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # opens the -wal (lazily opened)
        finally:
            conn.close()
