"""Catch-up of a migrated green copy: from the old source snapshot to a fresh one, without a full KV fill.

Inputs: `prev_db` (the pre-migration source snapshot green was built from), `new_db` (a copy of a fresh
consistent snapshot of blue, ours to change: it becomes green's SQLite), `kv_dir` (a copy of green's KV,
ours to change). Result: `new_db` carries the SQL steps exactly as `migrate_copy` applies them, and `kv_dir`
holds exactly the keys a from-scratch migration of `new_db`'s source would write (docs/catch-up.md argues
why). Every rebuilt joint is re-hashed, as in the full migration."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import apsw
from pydantic import BaseModel, Field

from bluegreen.engine.joints import JointError, ReadContext, build_joint, check_payload_hashes, check_unit_hash, \
    strip_for_kv
from bluegreen.engine.kvwriter import KvBuilder
from bluegreen.engine.pagediff import PageDiffUnavailable, changed_rowids
from bluegreen.engine.sqlsource import _UNITS_SQL, UnitChunkReader, read_min_retrievable_mci
from bluegreen.errors import MigrationError, PreflightError
from bluegreen.formats.feeds import data_feed_entries
from bluegreen.formats.jsvalues import js_stringify
from bluegreen.killpoints import killpoint
from bluegreen.schema.kvsteps import storage_sizes
from bluegreen.schema.runner import apply_schema_steps
from bluegreen.schema.steps import KV_FILL_STEP

Progress = Callable[[str, int, int], None]

# Every table a joint is read from (engine/sqlsource.py _CHILD_QUERIES and _UNITS_SQL), with the column that
# names the unit whose joint reads the row. `definitions` (by definition_chash), `balls` read as another unit's
# last ball and `assets` read by the inputs of other units are followed as dependencies below.
JOINT_TABLES: dict[str, str] = {
    "units": "unit", "parenthoods": "child_unit", "balls": "unit", "skiplist_units": "unit",
    "unit_witnesses": "unit", "earned_headers_commission_recipients": "unit", "unit_authors": "unit",
    "authentifiers": "unit", "messages": "unit", "spend_proofs": "unit", "address_definition_changes": "unit",
    "polls": "unit", "poll_choices": "unit", "votes": "unit", "assets": "unit", "asset_attestors": "unit",
    "asset_denominations": "asset", "data_feeds": "unit", "inputs": "unit", "outputs": "unit",
}
DEFINITIONS_TABLE = "definitions"


class CatchUpTimings(BaseModel):
    """Wall-clock seconds of each part of one catch-up (docs/catch-up.md "Cost"). `install` is known only after
    the journal was written: it is in the printed stats, not in the journal's or state.json's copy."""

    snapshot: float = 0.0  # fresh online backup of blue's SQLite + its fsync
    copy_sqlite: float = 0.0  # green.sqlite from the fresh snapshot
    copy_kv: float = 0.0  # green's rocksdb/ (.sst hard-linked, the rest copied)
    diff: float = 0.0  # the two raw snapshots compared, dependencies, feed pairs
    sql_steps: float = 0.0  # the SQL steps below 31 on the fresh snapshot
    joints: float = 0.0  # j keys deleted, rebuilt, re-hashed, written
    feeds: float = 0.0  # df/dfv keys of the changed pairs
    steps_above_31: float = 0.0  # steps 32..N (SQL and KV parts)
    commit: float = 0.0  # KV flush + close, SQLite commit + checkpoint
    apply_wait: float = 0.0  # row patch: waiting for green's apply (a thread) after the KV part was built
    apply_commit: float = 0.0  # row patch: green's transaction committed (after the journal)
    row_counts: float = 0.0  # green's change per table vs blue's
    fsync: float = 0.0  # every file and dir of the build
    install: float = 0.0  # renames into green/, state saved


@contextmanager
def timed(timings: CatchUpTimings, part: str) -> Iterator[None]:
    """Add the wall time of the block to `timings.<part>`."""
    t0 = time.monotonic()
    try:
        yield
    finally:
        setattr(timings, part, round(getattr(timings, part) + time.monotonic() - t0, 3))


class CatchUpStats(BaseModel):
    """What one catch-up changed in green (persisted in state.json `catch_ups`, printed by catch-up/promote)."""

    started_at_unix: float
    from_units_rowid: int
    to_units_rowid: int
    units_before: int
    units_after: int
    changed_rows: dict[str, int] = Field(default_factory=dict)  # per joint table: rows only in old + only in new
    changed_units: int = 0  # units whose own rows changed (incl. new and removed ones)
    dependent_units: int = 0  # unchanged rows, but a last ball / definition / asset they read changed
    mci_window_units: int = 0  # main_chain_index between the old and new min_retrievable_mci
    min_retrievable_mci_before: int = 0
    min_retrievable_mci_after: int = 0
    joints_rebuilt: int = 0  # rebuilt, re-hashed and written
    joint_workers: int = 1  # processes that rebuilt them (row patch: 2+ when many units changed)
    joints_removed: int = 0  # units no longer in blue (j key deleted)
    feed_pairs: int = 0  # (address, feed_name) whose df/dfv keys were removed and rewritten
    feeds_full_rebuild: bool = False  # a feed name or address holds a newline: every df/dfv key rewritten
    kv_deletes: int = 0
    kv_puts: int = 0
    row_counts_checked: int = 0
    diff_method: str = ""  # "pages": only rows on differing pages compared; "rows (why)": every row;
    # "pages (row patch)": green patched in place, only the rows that differ written (engine/rowpatch.py)
    copy_reason: str = ""  # why green's SQLite was copied whole instead of patched (empty: patched)
    rows_written: int = 0  # row patch: rows inserted into green
    apply_seconds: float = 0.0  # row patch: the apply thread's own time (overlapping joints and feeds)
    dirty_pages: int = 0  # pages whose bytes or b-tree role differ between the two snapshots
    rows_compared: int = 0  # rowids compared (pages method), per table summed
    snapshot_seconds: float = 0.0
    seconds: float = 0.0
    timings: CatchUpTimings = Field(default_factory=CatchUpTimings)


def _tables(conn: apsw.Connection, schema: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for (name,) in conn.execute(f"SELECT name FROM {schema}.sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"):
        out[name] = [r[1] for r in conn.execute(f"PRAGMA {schema}.table_info(`{name}`)")]
    return out


def _has_rowid(conn: apsw.Connection, schema: str, table: str) -> bool:
    try:
        conn.execute(f"SELECT rowid FROM {schema}.`{table}` LIMIT 0").fetchall()
        return True
    except apsw.SQLError:
        return False  # WITHOUT ROWID


def diff_units(conn: apsw.Connection, stats: CatchUpStats, pages: tuple[Path, Path] | None = None) -> None:
    """Fill temp.cu_units with every unit whose joint may differ between `old` (attached) and `main`.

    Rows are compared by rowid plus every column (EXCEPT both ways), so a changed, added or removed row is
    found whatever changed in it; a duplicated row counts too (its rowid differs). `pages`: the (old, new)
    files, two backups of blue; then only the rowids on pages that differ are compared (engine/pagediff.py),
    else every row."""
    new_tables, old_tables = _tables(conn, "main"), _tables(conn, "old")
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS cu_units (unit TEXT PRIMARY KEY)")
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS cu_balls (unit TEXT PRIMARY KEY)")
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS cu_assets (unit TEXT PRIMARY KEY)")
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS cu_defs (chash TEXT PRIMARY KEY)")
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS cu_rowids (rid INTEGER PRIMARY KEY)")
    tables = {t: c for t, c in {**JOINT_TABLES, DEFINITIONS_TABLE: "definition_chash"}.items()
              if t in new_tables or t in old_tables}
    for table in tables:
        if new_tables.get(table) != old_tables.get(table):
            raise PreflightError(f"blue's table {table} changed its columns since the last snapshot (the node was "
                                 "upgraded?): green cannot be caught up", "stage again: `upgrade stage`")
    rowid_tables = [t for t in tables if _has_rowid(conn, "main", t)]
    candidates: dict[str, set[int]] | None = None
    stats.diff_method = "rows"
    if pages is not None:
        try:
            candidates, stats.dirty_pages = changed_rowids(pages[0], pages[1], rowid_tables)
            stats.diff_method = "pages"
        except PageDiffUnavailable as exc:
            stats.diff_method = f"rows ({exc})"
    for table, col in tables.items():
        cols = "rowid, *" if table in rowid_tables else "*"
        where = ""
        if candidates is not None and table in rowid_tables:
            conn.execute("DELETE FROM temp.cu_rowids")
            conn.executemany("INSERT INTO temp.cu_rowids VALUES (?)", ((r,) for r in candidates[table]))
            stats.rows_compared += len(candidates[table])
            where = " WHERE rowid IN (SELECT rid FROM temp.cu_rowids)"
        changed = 0
        for a, b in (("main", "old"), ("old", "main")):
            diff = f"SELECT {cols} FROM {a}.`{table}`{where} EXCEPT SELECT {cols} FROM {b}.`{table}`{where}"
            changed += int(conn.execute(f"SELECT COUNT(*) FROM ({diff})").fetchone()[0])
            target = {"definitions": "cu_defs", "balls": "cu_balls", "assets": "cu_assets"}.get(table)
            if target:
                conn.execute(f"INSERT OR IGNORE INTO temp.{target} SELECT `{col}` FROM ({diff})")
            if table != DEFINITIONS_TABLE:
                conn.execute(f"INSERT OR IGNORE INTO temp.cu_units SELECT `{col}` FROM ({diff})")
        stats.changed_rows[table] = changed
    stats.changed_units = int(conn.execute("SELECT COUNT(*) FROM temp.cu_units").fetchone()[0])
    add_dependents(conn, stats)


def add_dependents(conn: apsw.Connection, stats: CatchUpStats) -> None:
    """Add to temp.cu_units the units whose own rows did not change but read a row of another unit that did:
    its last ball (temp.cu_balls), its authors' definitions (temp.cu_defs), the assets its inputs spend
    (temp.cu_assets). The dependency columns are their own rows, unchanged, so `main` tells."""
    before = int(conn.execute("SELECT COUNT(*) FROM temp.cu_units").fetchone()[0])
    conn.execute("INSERT OR IGNORE INTO temp.cu_units SELECT unit FROM main.units WHERE last_ball_unit IN "
                 "(SELECT unit FROM temp.cu_balls)")
    conn.execute("INSERT OR IGNORE INTO temp.cu_units SELECT unit FROM main.unit_authors WHERE definition_chash IN "
                 "(SELECT chash FROM temp.cu_defs)")
    conn.execute("INSERT OR IGNORE INTO temp.cu_units SELECT unit FROM main.inputs WHERE asset IN "
                 "(SELECT unit FROM temp.cu_assets)")
    stats.dependent_units = int(conn.execute("SELECT COUNT(*) FROM temp.cu_units").fetchone()[0]) - before


class _WantedReader(UnitChunkReader):
    """UnitChunkReader restricted to the units in temp.cu_units."""

    units_sql = _UNITS_SQL.replace("WHERE units.rowid > ?",
                                   "WHERE units.rowid > ? AND units.unit IN (SELECT unit FROM temp.cu_units)")


def _feed_rows_sql(where: str) -> str:
    return ("SELECT data_feeds.rowid, unit, address, feed_name, `value`, int_value, main_chain_index "
            "FROM data_feeds CROSS JOIN units USING(unit) CROSS JOIN unit_authors USING(unit) "
            f"WHERE {where} ORDER BY data_feeds.rowid, unit_authors.address")


def _delete_range(kv: KvBuilder, prefix: bytes) -> int:
    keys = [k for k, _ in kv.scan(prefix, prefix + b"\xff\xff\xff\xff")]
    return kv.delete_chunk([k for k in keys if k.startswith(prefix)])


def catch_up_copy(prev_db: Path, new_db: Path, kv_dir: Path, *, source_version: int, target_version: int,
                  light: bool, genesis_unit: str | None, old_min_retrievable_mci: int, stats: CatchUpStats,
                  unit_chunk: int = 2000, progress: Progress | None = None, page_diff: bool = True) -> CatchUpStats:
    """Bring `new_db` (a raw snapshot at `source_version`) to `target_version` and `kv_dir` (green's KV as of
    `prev_db`) to the KV of `new_db`. One SQLite transaction, committed after the KV is complete and synced;
    a crash before leaves both to be discarded by the caller (they are copies). `page_diff`: both files are
    backups of blue (pages verbatim), so the diff compares only rows on differing pages (False: every row)."""
    from bluegreen.engine.migrate import _set_storage_sizes
    from bluegreen.ocore_facts import network_of

    started = time.monotonic()
    conn = apsw.Connection(str(new_db))
    conn.setbusytimeout(5000)
    try:
        conn.execute("PRAGMA cache_size=-200000")
        uv = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if uv != source_version:
            raise PreflightError(f"blue is at schema version {uv} now, the staged source was {source_version} (the "
                                 "node was upgraded meanwhile?): green cannot be caught up",
                                 "stage again: `upgrade stage`")
        tm = stats.timings
        with timed(tm, "diff"):
            conn.execute("ATTACH ? AS old", (str(prev_db),))
            try:
                # before the steps: the two snapshots are raw, at the same version
                diff_units(conn, stats, (prev_db, new_db) if page_diff else None)
                newline = _collect_feed_pairs(conn)
            finally:
                conn.execute("DETACH old")
        conn.execute("BEGIN IMMEDIATE")
        committed = False
        try:
            with timed(tm, "sql_steps"):
                apply_schema_steps(conn, source_version, light=light)
            network = network_of(conn, genesis_unit)
            new_mrm = read_min_retrievable_mci(conn)
            stats.min_retrievable_mci_before, stats.min_retrievable_mci_after = old_min_retrievable_mci, new_mrm
            lo, hi = sorted((old_min_retrievable_mci, new_mrm))
            before = int(conn.execute("SELECT COUNT(*) FROM temp.cu_units").fetchone()[0])
            # voided / ball / skiplist of a joint depend on mci vs min_retrievable_mci (both ends inclusive)
            conn.execute("INSERT OR IGNORE INTO temp.cu_units SELECT unit FROM units WHERE main_chain_index "
                         "BETWEEN ? AND ?", (lo, hi))
            stats.mci_window_units = int(conn.execute("SELECT COUNT(*) FROM temp.cu_units").fetchone()[0]) - before
            ctx = ReadContext(network=network, min_retrievable_mci=new_mrm, light=light)
            kv = KvBuilder(kv_dir)
            try:
                with timed(tm, "joints"):
                    _rewrite_joints(conn, kv, ctx, stats, unit_chunk, progress, check=not light)
                with timed(tm, "feeds"):
                    _rewrite_feeds(conn, kv, newline, stats)
                if target_version > KV_FILL_STEP:
                    with timed(tm, "steps_above_31"):
                        sizes = storage_sizes(kv)
                        apply_schema_steps(conn, KV_FILL_STEP, light=light, target=target_version,
                                           network=network.name, kv=kv)
                        _set_storage_sizes(conn, sizes)
            finally:
                with timed(tm, "commit"):
                    kv.close()
            killpoint("catchup.before_commit")
            with timed(tm, "commit"):
                conn.execute(f"PRAGMA user_version={target_version}")
                conn.execute("COMMIT")
            committed = True
        finally:
            if not committed:
                try:
                    conn.execute("ROLLBACK")
                except apsw.Error:
                    pass
        stats.units_after = int(conn.execute("SELECT COUNT(*) FROM units").fetchone()[0])
        with timed(tm, "commit"):
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    stats.seconds = round(time.monotonic() - started, 3)
    return stats


def _rewrite_joints(conn: apsw.Connection, kv: KvBuilder, ctx: ReadContext, stats: CatchUpStats, chunk_size: int,
                    progress: Progress | None, *, check: bool) -> None:
    # j keys of every unit in the set go; those still in blue are rebuilt (a unit ocore purged stays deleted)
    wanted = [r[0] for r in conn.execute("SELECT unit FROM temp.cu_units")]
    present = {r[0] for r in conn.execute("SELECT unit FROM units WHERE unit IN (SELECT unit FROM temp.cu_units)")}
    stats.kv_deletes += kv.delete_chunk(("j\n" + unit).encode("utf-8") for unit in wanted)
    stats.joints_removed = len(set(wanted) - present)
    reader = _WantedReader(conn, chunk_size)
    after, done, failures = 0, 0, []
    while True:
        chunk = reader.read(after)
        if chunk is None:
            break
        puts: list[tuple[bytes, bytes]] = []
        for row in chunk.units:
            unit = row[1]
            try:
                joint = build_joint(row, chunk, ctx)
            except JointError as exc:
                failures.append(f"{unit}: {exc.reason} ({exc.detail})")
                continue
            if check and check_unit_hash(joint, ctx) is not None:
                failures.append(f"{unit}: hash_mismatch (the unit rebuilt from SQL does not hash to its id)")
                continue
            bad = check_payload_hashes(joint, ctx)
            if bad:
                failures.append(f"{unit}: payload_hash_mismatch ({'; '.join(bad)})")
                continue
            puts.append((("j\n" + unit).encode("utf-8"), js_stringify(strip_for_kv(joint, ctx)).encode("utf-8")))
        killpoint("catchup.mid_joints")
        stats.kv_puts += kv.write_chunk(puts)
        after = chunk.last_rowid
        done += len(chunk.units)
        if progress:
            progress("catch-up joints", done, len(present))
    finish_joints(stats, done, failures)


def finish_joints(stats: CatchUpStats, done: int, failures: list[str]) -> None:
    """Record the joints rebuilt; raise when some changed unit cannot be migrated (green stays as it was)."""
    stats.joints_rebuilt = done - len(failures)
    if failures:
        raise MigrationError(f"{len(failures)} changed unit(s) cannot be migrated: " + "; ".join(failures[:5]),
                             hint="green is unchanged; repair the source or stage again")


def _collect_feed_pairs(conn: apsw.Connection) -> bool:
    """temp.cu_pairs: every (address, feed_name) a changed unit has, in the old snapshot or the new one.
    True when some feed name holds a newline (then every df/dfv key is rewritten, see below)."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS cu_pairs (address TEXT, feed_name TEXT, "
                 "PRIMARY KEY (address, feed_name))")
    for schema in ("main", "old"):
        conn.execute(f"INSERT OR IGNORE INTO temp.cu_pairs SELECT DISTINCT a.address, d.feed_name FROM "
                     f"{schema}.data_feeds AS d CROSS JOIN {schema}.unit_authors AS a USING(unit) "
                     "WHERE d.unit IN (SELECT unit FROM temp.cu_units)")
    # A key is `df\n<address>\n<feed_name>\n...`: a newline inside a name would let one pair's prefix cover
    # another pair's keys; ocore rejects such names, but if one exists we rewrite every feed key.
    return any(conn.execute(f"SELECT 1 FROM {s}.data_feeds WHERE instr(feed_name, char(10)) LIMIT 1").fetchone()
               for s in ("main", "old"))


def _rewrite_feeds(conn: apsw.Connection, kv: KvBuilder, newline: bool, stats: CatchUpStats) -> None:
    """df/dfv keys: every key of a pair in temp.cu_pairs is removed and the pair's keys are rewritten from all
    its rows of the new snapshot, in the full fill's order (data_feeds rowid, author address)."""
    if newline:
        stats.feeds_full_rebuild = True
        stats.kv_deletes += _delete_range(kv, b"df\n") + _delete_range(kv, b"dfv\n")
        where = "1"
        pairs: list[tuple[str, str]] = []
    else:
        pairs = list(conn.execute("SELECT address, feed_name FROM temp.cu_pairs"))
        for address, feed_name in pairs:
            for kind in ("df", "dfv"):
                stats.kv_deletes += _delete_range(kv, f"{kind}\n{address}\n{feed_name}\n".encode("utf-8"))
        where = "(unit_authors.address, data_feeds.feed_name) IN (SELECT address, feed_name FROM temp.cu_pairs)"
    stats.feed_pairs = len(pairs)
    puts: list[tuple[bytes, bytes]] = []
    for _rowid, unit, address, feed_name, value, int_value, mci in conn.execute(_feed_rows_sql(where)):
        for key, val in data_feed_entries(address, feed_name, value, int_value, mci, unit):
            puts.append((key.encode("utf-8"), val.encode("utf-8")))
        if len(puts) >= 20000:
            stats.kv_puts += kv.write_chunk(puts)
            puts = []
    stats.kv_puts += kv.write_chunk(puts)
