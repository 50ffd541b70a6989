"""`upgrade verify`: check a migrated green copy against blue before anyone may promote it.

Blue is opened read-only (see `open_readonly`: no file is created beside it) and never written.
Green is ours: its SQLite file is opened the same way, its RocksDB through rocksdict in raw read-only
mode (which still drops an OPTIONS file and `rocksdict-config.json` into green's `rocksdb/`).

Every check yields a `VerifyCheck` with counts and the first offending items; a check that cannot run
at all (missing table, unreadable KV) is reported as failed with the reason, never skipped. The KV
checks stream both sides in bytewise key order, so memory stays flat for millions of units."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import apsw
from rocksdict import Rdict

from bluegreen.engine.pool import open_pool, resolve_jobs
from bluegreen.engine.rocks_options import open_read_only
from bluegreen.engine.transform import JointCheckTask, StoredJoint, check_joints, joint_problem
from bluegreen.errors import BadInputError
from bluegreen.formats.feeds import data_feed_entries
from bluegreen.formats.hashing import get_ball_hash
from bluegreen.formats.networks import MAINNET, Network
from bluegreen.schema import drift, reference
from bluegreen.schema.steps import LAST_SQL_STEP, declared_effects
from bluegreen.lifecycle.snapshot import open_readonly_quiet
from bluegreen.lifecycle.pragma_progress import run_pragma
from bluegreen.engine.sqlsource import FEED_ROW_COLUMNS, FEED_ROWS_SQL
from bluegreen.ocore_facts import (  # noqa: F401 - re-exported for callers of verify
    DB_NAMES, DF_PREFIX, DFV_PREFIX, FULL_DB_NAME, KV_DIR_NAME, KV_ERA_VERSION, LIGHT_DB_NAME, UNIT_PREFIX,
    find_genesis, network_of,
)
from bluegreen.lifecycle.verify_models import MAX_FIRST_FAILURES, VerifyCheck, VerifyReport

Progress = Callable[[str, int, int], None]

CHECK_INTEGRITY = "integrity_check"
CHECK_FOREIGN_KEYS = "foreign_key_check"
CHECK_USER_VERSION = "user_version"
CHECK_SCHEMA = "schema"
CHECK_ROW_COUNTS = "row_counts"
CHECK_KV_UNITS = "kv_units"
CHECK_KV_DATA_FEEDS = "kv_data_feeds"
CHECK_BALLS = "balls"


# Sampling must give the same items on every run so that a failure can be reproduced.
SAMPLE_SEED = 31

PROGRESS_EVERY = 10_000

# Page cache of each verify connection (per process; bounded whatever the size). 32 MiB: at 1M units verify
# (2 jobs) took 48.3 s with it and 47.3 s with 64 MiB, and its peak tree RSS stays within 15% of 100k's
# (337 vs 294 MB; 445 vs 328 MB with 64 MiB). SQLite's default 2 MB made every b-tree walk a stream of read()s.
VERIFY_CACHE_KIB = 32_768


# ---------------------------------------------------------------------------------------------
# small helpers


@dataclass
class _Tally:
    """Counts for one check; keeps only the first failures so memory stays bounded."""

    name: str
    checked: int = 0
    failed: int = 0
    first_failures: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)  # check-specific counts (stray keys, ...)

    def fail(self, item: str) -> None:
        self.failed += 1
        if len(self.first_failures) < MAX_FIRST_FAILURES:
            self.first_failures.append(item)

    def absorb(self, part: _Tally) -> None:
        """Add a later part of the same check (parts absorbed in key/rowid order give the one-pass tally)."""
        self.checked += part.checked
        for item in part.first_failures[:max(0, MAX_FIRST_FAILURES - len(self.first_failures))]:
            self.first_failures.append(item)
        self.failed += part.failed
        for key, n in part.counters.items():
            self.counters[key] = self.counters.get(key, 0) + n

    def result(self, detail: str = "", passed: bool | None = None) -> VerifyCheck:
        ok = self.failed == 0 if passed is None else passed
        return VerifyCheck(
            name=self.name,
            passed=ok,
            checked=self.checked,
            failed=self.failed,
            first_failures=self.first_failures,
            detail=detail,
        )


def _show(key: bytes) -> str:
    """A KV key as readable text in a report (newlines made visible)."""
    return key.decode("utf-8", "backslashreplace").replace("\n", "\\n")


def _db_path(data_dir: Path) -> tuple[Path, bool]:
    """The node's SQLite file in `data_dir` and whether it is a light node's."""
    full, light = data_dir / FULL_DB_NAME, data_dir / LIGHT_DB_NAME
    if full.is_file():
        return full, False
    if light.is_file():
        return light, True
    raise BadInputError(
        f"no {FULL_DB_NAME} or {LIGHT_DB_NAME} in {data_dir}",
        hint="pass the node's data dir (the one holding byteball.sqlite) and the staged green dir",
    )


def open_readonly(db_path: Path) -> apsw.Connection:
    """Open an SQLite file read-only, leaving no file behind in its directory.

    A WAL-mode database without a `-wal` has every committed page in the main file, and `mode=ro`
    would still create an empty `-wal` and a `-shm` next to it (measured: it does, and they stay), so
    the snapshot's quiet open adds `immutable=1` there; otherwise plain `mode=ro` (committed data may
    sit in an existing WAL). That is safe only while nobody writes the file: verify
    runs with the node stopped, and a node starting meanwhile could only mislead the report."""
    conn = open_readonly_quiet(db_path.resolve())
    # SQLite's default 2 MB page cache turns every b-tree walk of a big database into read() system calls
    # (measured: 1.2 s of system time for integrity_check + balls at 100k units, 0.15 s with this cache).
    conn.execute(f"PRAGMA cache_size=-{VERIFY_CACHE_KIB}")
    return conn


def open_kv_readonly(kv_dir: Path) -> Rdict:
    """Open a RocksDB dir read-only in raw mode (keys and values are plain bytes)."""
    if not kv_dir.is_dir():
        raise BadInputError(f"no key-value store at {kv_dir}", hint="run `upgrade stage` again; green is incomplete")
    return open_read_only(kv_dir)


def _kv_range(kv: Rdict, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs whose key starts with `prefix`, in bytewise order, from `start` if given."""
    it = kv.iter()
    it.seek(start if start is not None else prefix)
    while it.valid():
        key = it.key()
        if not key.startswith(prefix):
            return
        yield key, it.value()
        it.next()


def _user_version(conn: apsw.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchall()[0][0])


def _tables(conn: apsw.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")
    return {r[0] for r in rows}


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _count(conn: apsw.Connection, sql: str, bindings: tuple[Any, ...] = ()) -> int:
    return int(conn.execute(sql, bindings).fetchall()[0][0])


def _sample_rowids(conn: apsw.Connection, table: str, n: int, rng: random.Random) -> list[int]:
    """Up to n distinct rowids of `table` picked at random but reproducibly.

    Picks random points in [min rowid, max rowid] and takes the next existing rowid: O(n log N) and
    flat in memory, at the price of a bias towards rows after rowid gaps (fine for a spot check)."""
    lo_hi = conn.execute(f"SELECT min(rowid), max(rowid) FROM {_quote_ident(table)}").fetchall()[0]
    if lo_hi[0] is None:
        return []
    lo, hi = int(lo_hi[0]), int(lo_hi[1])
    total = _count(conn, f"SELECT count(*) FROM {_quote_ident(table)}")
    if total <= n:
        return [r[0] for r in conn.execute(f"SELECT rowid FROM {_quote_ident(table)} ORDER BY rowid")]
    picked: set[int] = set()
    attempts = 0
    while len(picked) < n and attempts < 20 * n:
        attempts += 1
        point = rng.randint(lo, hi)
        row = conn.execute(
            f"SELECT rowid FROM {_quote_ident(table)} WHERE rowid>=? ORDER BY rowid LIMIT 1", (point,)
        ).fetchall()
        if row:
            picked.add(int(row[0][0]))
    return sorted(picked)


def _tick(progress: Progress | None, name: str, done: int, total: int) -> None:
    if progress is not None and (done % PROGRESS_EVERY == 0 or done == total):
        progress(name, done, total)


# ---------------------------------------------------------------------------------------------
# checks 1-5: SQL


def check_integrity(green: apsw.Connection, progress: Progress | None = None) -> VerifyCheck:
    """Check 1: `PRAGMA integrity_check` of green reports exactly `ok` (progress from SQLite's VM steps)."""
    tally = _Tally(CHECK_INTEGRITY)
    messages = [r[0] for r in run_pragma(green, "PRAGMA integrity_check(100)", CHECK_INTEGRITY, "integrity_check",
                                         progress)]
    tally.checked = 1
    for msg in messages:
        if msg != "ok":
            tally.fail(str(msg))
    return tally.result("database file structure, indexes, constraints")


def _fk_violations(conn: apsw.Connection, step: str = CHECK_FOREIGN_KEYS,
                   progress: Progress | None = None, table: str | None = None) -> list[tuple[str, int | None, str]]:
    pragma = f"PRAGMA foreign_key_check({_quote_ident(table)})" if table else "PRAGMA foreign_key_check"
    rows = run_pragma(conn, pragma, step, "foreign_key_check", progress)
    return [(r[0], r[1], r[2]) for r in rows]


def fk_violations_of_both(blue: apsw.Connection, green: apsw.Connection, progress: Progress | None = None
                          ) -> tuple[list[tuple[str, int | None, str]], set[tuple[str, int | None, str]], list[str]]:
    """(green's violations, blue's violations in the tables where green has some, those tables).

    Blue is asked only about the tables in which green has violations: a violation of green that is not new
    must be in the same table of blue, so blue's other tables cannot change the verdict. On a healthy node
    green has none and blue is not read at all (at 1M units the two full checks took 15 s each)."""
    green_rows = _fk_violations(green, CHECK_FOREIGN_KEYS, progress)
    tables = sorted({t for t, _r, _p in green_rows})
    known: set[tuple[str, int | None, str]] = set()
    for table in tables:
        if table in _tables(blue):
            known.update(_fk_violations(blue, CHECK_FOREIGN_KEYS + " (blue)", progress, table))
    return green_rows, known, tables


def foreign_keys_result(green_rows: list[tuple[str, int | None, str]], known: set[tuple[str, int | None, str]],
                        tables: list[str]) -> VerifyCheck:
    """Check 2's verdict from green's violations and blue's in the same tables."""
    tally = _Tally(CHECK_FOREIGN_KEYS)
    for table, rowid, parent in green_rows:
        tally.checked += 1
        if (table, rowid, parent) not in known:
            tally.fail(f"{table} rowid={rowid} -> missing parent in {parent}")
    if not tables:
        return tally.result(f"{len(green_rows)} violation(s) in green; blue not read (green has none)")
    return tally.result(f"{len(green_rows)} violation(s) in green, {len(known)} in blue's {', '.join(tables)}")


def check_foreign_keys(blue: apsw.Connection, green: apsw.Connection,
                       progress: Progress | None = None) -> VerifyCheck:
    """Check 2: every foreign-key violation of green already exists in blue (no new ones)."""
    return foreign_keys_result(*fk_violations_of_both(blue, green, progress))


def check_user_version(green: apsw.Connection, target_version: int) -> VerifyCheck:
    """Check 3: green's `PRAGMA user_version` equals the target version."""
    tally = _Tally(CHECK_USER_VERSION, checked=1)
    version = _user_version(green)
    if version != target_version:
        tally.fail(f"user_version is {version}, expected {target_version}")
    return tally.result(f"user_version={version}")


def check_schema(green: apsw.Connection, target_version: int, light: bool) -> VerifyCheck:
    """Check 4: green's schema equals the reference schema of the target version."""
    tally = _Tally(CHECK_SCHEMA, checked=1)
    expected = reference.load_reference(target_version, light)
    actual = reference.introspect(green)
    # Nodes created from older ocore releases carry schema differences that ocore changed in its fresh
    # schema without a migration step; those are catalogued (bluegreen.schema.drift) and only reported.
    explanation = drift.explain(reference.compare(actual, expected), light=light)
    for diff in explanation.unexplained:
        tally.fail(str(diff))
    kind = "light" if light else "full"
    known = "; ".join(sorted({e.drift for e in explanation.explained}))
    extra = f"; {len(explanation.explained)} known ocore drift(s) accepted: {known}" if known else ""
    return tally.result(f"against reference {kind}-v{target_version}{extra}")


@dataclass(frozen=True)
class RowCountRule:
    """What green's row count of one table must be, given blue's, after the steps' declared effects."""

    expect: str  # "equal", "zero" (emptied or dropped), "at_least" (rows added or replaced, never removed), "any"
    because: str  # the steps that made it so, in words; empty for "equal"


def row_count_rules(source_version: int, target_version: int, light: bool,
                    network: str | None) -> dict[str, RowCountRule]:
    """The row-count rule of every table a step between source and target touches, from the effects the
    steps declare (bluegreen.schema.steps): verify never parses SQL text."""
    rules: dict[str, RowCountRule] = {}
    for eff in declared_effects(source_version, target_version, "light" if light else "full", network):
        before = rules.get(eff.table, RowCountRule("equal", ""))
        said = f"{before.because}, " if before.because else ""
        if eff.kind in ("empties", "drops_rows"):
            verb = "empties" if eff.kind == "empties" else "drops and re-creates"
            rules[eff.table] = RowCountRule("zero", f"step {eff.version} {verb} it")
        elif eff.kind in ("upserts", "adds_rows"):
            expect = "any" if before.expect in ("zero", "any") else "at_least"
            rules[eff.table] = RowCountRule(expect, f"{said}step {eff.version} adds rows")
    return rules


_EXPECT_WORDS = {"zero": "empty", "at_least": "not fewer rows", "any": "any count", "equal": "equal"}


def _row_count_problem(rule: RowCountRule, n_blue: int, n_green: int) -> str | None:
    ok = {"equal": n_green == n_blue, "zero": n_green == 0, "at_least": n_green >= n_blue, "any": True}[rule.expect]
    if ok:
        return None
    wanted = {"equal": f"{n_blue}", "zero": "0", "at_least": f"at least {n_blue}", "any": "any"}[rule.expect]
    because = f" ({rule.because})" if rule.because else ""
    return f"blue has {n_blue} rows, green {n_green}; expected {wanted}{because}"


def check_row_counts(blue: apsw.Connection, green: apsw.Connection, progress: Progress | None = None, *,
                     target_version: int = LAST_SQL_STEP, light: bool = False,
                     network: str | None = None) -> VerifyCheck:
    """Check 5: every table present in both has blue's row count, unless a step between blue's version and
    the target declares an effect on it: emptied or dropped tables must be empty, tables a step adds rows to
    must not lose any. Rows a step drops (ocore's step 43 drops `asset_metadata`) are counted in the detail."""
    tally = _Tally(CHECK_ROW_COUNTS)
    rules = row_count_rules(_user_version(blue), target_version, light, network)
    common = sorted(_tables(blue) & _tables(green))
    notes: list[str] = []
    for i, table in enumerate(common, 1):
        sql = f"SELECT count(*) FROM {_quote_ident(table)}"
        n_blue, n_green = _count(blue, sql), _count(green, sql)
        tally.checked += 1
        rule = rules.get(table, RowCountRule("equal", ""))
        problem = _row_count_problem(rule, n_blue, n_green)
        if problem:
            tally.fail(f"{table}: {problem}")
        elif rule.expect != "equal" and n_blue != n_green:
            notes.append(f"{table} {n_blue} -> {n_green} rows ({rule.because})")
        if progress is not None:
            progress(CHECK_ROW_COUNTS, i, len(common))
    detail = f"{len(common)} tables compared"
    if rules:
        detail += "; by the steps' declared effects: " + ", ".join(
            f"{t} {_EXPECT_WORDS[r.expect]} ({r.because})" for t, r in sorted(rules.items()))
    if notes:
        detail += "; changed as declared: " + "; ".join(notes)
    return tally.result(detail)


# ---------------------------------------------------------------------------------------------
# network and genesis


def detect_green_network(conn: apsw.Connection, genesis_unit: str | None) -> Network:
    """The network of the data and its genesis unit (`ocore_facts.network_of`, the engine's rule too)."""
    return network_of(conn, genesis_unit)


# ---------------------------------------------------------------------------------------------
# check 6: one hashing joint per unit


_joint_problem = joint_problem  # parse + hash of one stored joint (engine/transform.py, shared with workers)

# Joints per task sent to a worker: big enough to amortise the pickling, small enough to keep memory flat.
JOINT_BATCH = 2000


class _Event(NamedTuple):
    """One step of the units/j-keys merge, in merge order: a finding known at once, or a stored joint to hash."""

    problem: str | None  # "no j key" / stray key finding; None for a joint to check
    joint: StoredJoint | None
    counts_done: bool  # True when the step consumed a units row (progress counts units)


def _unit_range_sql(lo: str | None, hi: str | None) -> tuple[str, tuple[str, ...]]:
    """`SELECT unit FROM units` for lo <= unit < hi (None: open end), in index order."""
    conds = [c for c, v in (("unit >= ?", lo), ("unit < ?", hi)) if v is not None]
    where = f" WHERE {' AND '.join(conds)}" if conds else ""
    return f"SELECT unit FROM units{where} ORDER BY unit", tuple(v for v in (lo, hi) if v is not None)


def _kv_unit_keys(kv: Rdict, lo: str | None, hi: str | None) -> Iterator[tuple[bytes, bytes]]:
    """The `j` entries whose unit part is in [lo, hi), in bytewise order."""
    start = UNIT_PREFIX + lo.encode("utf-8") if lo is not None else None
    stop = UNIT_PREFIX + hi.encode("utf-8") if hi is not None else None
    for key, value in _kv_range(kv, UNIT_PREFIX, start):
        if stop is not None and key >= stop:
            return
        yield key, value


def _merge_events(green: apsw.Connection, kv: Rdict, lo: str | None = None,
                  hi: str | None = None) -> Iterator[_Event]:
    """Merge `units` (ORDER BY unit) with the `j` keys (bytewise order), both within [lo, hi): missing keys,
    stray keys, pairs."""
    # ORDER BY unit walks the primary-key index; BINARY collation is memcmp of UTF-8, the same order as
    # RocksDB's bytewise comparator, so a merge of the two sorted streams finds missing and stray keys, and
    # the same bounds cut both streams at the same place.
    sql, bindings = _unit_range_sql(lo, hi)
    units = (str(r[0]) for r in green.execute(sql, bindings))
    keys = _kv_unit_keys(kv, lo, hi)
    unit = next(units, None)
    entry = next(keys, None)
    while unit is not None or entry is not None:
        unit_key = unit.encode("utf-8") if unit is not None else None
        kv_unit = entry[0][len(UNIT_PREFIX):] if entry is not None else None
        if kv_unit is None or (unit_key is not None and unit_key < kv_unit):
            yield _Event(f"{unit}: no j key", None, True)
            unit = next(units, None)
        elif unit_key is None or kv_unit < unit_key:
            yield _Event(f"j key without a units row: {_show(entry[0])}", None, False)  # type: ignore[index]
            entry = next(keys, None)
        else:
            yield _Event(None, StoredJoint(unit, entry[1]), True)  # type: ignore[index, arg-type]
            unit = next(units, None)
            entry = next(keys, None)


def _event_batches(events: Iterator[_Event], network: Network, light: bool
                   ) -> Iterator[tuple[list[_Event], JointCheckTask]]:
    batch: list[_Event] = []
    joints: list[StoredJoint] = []
    for event in events:
        batch.append(event)
        if event.joint is not None:
            joints.append(event.joint)
            if len(joints) >= JOINT_BATCH:
                yield batch, JointCheckTask(network, light, joints)
                batch, joints = [], []
    if batch:
        yield batch, JointCheckTask(network, light, joints)


def check_kv_units_part(green: apsw.Connection, kv: Rdict, network: Network, light: bool,
                        lo: str | None = None, hi: str | None = None,
                        progress: Progress | None = None, total: int | None = None) -> _Tally:
    """Check 6 over the units and `j` keys in [lo, hi) (None: open end), in this process: the tally of that
    range, with `counters` units (rows seen) and strays. Ranges checked in key order and absorbed in that
    order give exactly the tally of one pass over everything."""
    tally = _Tally(CHECK_KV_UNITS, counters={"units": 0, "strays": 0})
    for events, task in _event_batches(_merge_events(green, kv, lo, hi), network, light):
        results = iter(check_joints(task))
        for event in events:
            tally.checked += 1
            problem = next(results) if event.joint is not None else event.problem
            if event.joint is None and not event.counts_done:
                tally.counters["strays"] += 1
            if problem is not None:
                tally.fail(problem)
            if event.counts_done:
                tally.counters["units"] += 1
                if total is not None:
                    _tick(progress, CHECK_KV_UNITS, tally.counters["units"], total)
    return tally


def kv_units_result(tally: _Tally, light: bool) -> VerifyCheck:
    """The kv_units check from its (merged) tally."""
    what = "parse only (light node)" if light else "parse + unit hash"
    return tally.result(f"{tally.counters.get('units', 0)} units, {tally.counters.get('strays', 0)} stray j key(s); "
                        f"{what}")


def check_kv_units(
    green: apsw.Connection,
    kv: Rdict,
    network: Network,
    light: bool,
    sample: int | None,
    progress: Progress | None = None,
) -> VerifyCheck:
    """Check 6: every `units` row has a `j\\n<unit>` key whose joint hashes to the unit, and no stray `j` key
    (one pass in this process; `verify_tasks` splits the full check into unit ranges across workers)."""
    if sample is not None:
        return _check_kv_units_sample(green, kv, network, light, sample, progress)
    total = _count(green, "SELECT count(*) FROM units")
    return kv_units_result(check_kv_units_part(green, kv, network, light, progress=progress, total=total), light)


def _check_kv_units_sample(
    green: apsw.Connection, kv: Rdict, network: Network, light: bool, sample: int, progress: Progress | None
) -> VerifyCheck:
    tally = _Tally(CHECK_KV_UNITS)
    rng = random.Random(SAMPLE_SEED)
    rowids = _sample_rowids(green, "units", sample, rng)
    for i, rowid in enumerate(rowids, 1):
        unit = str(green.execute("SELECT unit FROM units WHERE rowid=?", (rowid,)).fetchall()[0][0])
        tally.checked += 1
        raw = kv.get(UNIT_PREFIX + unit.encode("utf-8"))
        if raw is None:
            tally.fail(f"{unit}: no j key")
        else:
            problem = _joint_problem(unit, raw, network, light)
            if problem is not None:
                tally.fail(problem)
        _tick(progress, CHECK_KV_UNITS, i, len(rowids))
    # Stray keys: seek to random points of the j key space and look the next key up in units.
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    probed: set[bytes] = set()
    for _ in range(sample):
        start = UNIT_PREFIX + "".join(rng.choice(b64) for _ in range(4)).encode()
        entry = next(_kv_range(kv, UNIT_PREFIX, start), None)
        if entry is None or entry[0] in probed:
            continue
        probed.add(entry[0])
        tally.checked += 1
        unit = entry[0][len(UNIT_PREFIX):].decode("utf-8", "replace")
        if not green.execute("SELECT 1 FROM units WHERE unit=?", (unit,)).fetchall():
            tally.fail(f"j key without a units row: {_show(entry[0])}")
    return tally.result(f"sample: {len(rowids)} units, {len(probed)} j keys probed for strays (seed {SAMPLE_SEED})")


# ---------------------------------------------------------------------------------------------
# check 7: data feeds


# The rows ocore's migration turns into df/dfv keys: one per (data_feeds row, author), in rowid order.
_FEED_ROWS_SQL = FEED_ROWS_SQL


def _entries(row: tuple[Any, ...]) -> list[tuple[bytes, bytes]]:
    """The df/dfv (key, value) pairs one feed row yields, as bytes."""
    _rowid, unit, address, feed_name, value, int_value, mci = row
    pairs = data_feed_entries(address, feed_name, value, int_value, mci, unit)
    return [(_b(k), _b(v)) for k, v in pairs]


def _b(x: str | bytes) -> bytes:
    return x if isinstance(x, bytes) else x.encode("utf-8")


def check_kv_data_feeds(
    blue: apsw.Connection, kv: Rdict, sample: int | None, progress: Progress | None = None
) -> VerifyCheck:
    """Check 7: green's `df\\n`/`dfv\\n` keys and values equal what blue's `data_feeds` imply."""
    if sample is not None:
        return _check_kv_data_feeds_sample(blue, kv, sample, progress)
    tally = _Tally(CHECK_KV_DATA_FEEDS)
    total = _count(blue, "SELECT count(*) FROM data_feeds")
    # The expected map goes to a private on-disk scratch database (SQLite deletes it on close), so its
    # size is not bounded by RAM; INSERT OR REPLACE in rowid order gives ocore's "later overwrites".
    scratch = apsw.Connection("")
    try:
        scratch.execute("CREATE TABLE expected (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
        done = 0
        last_rowid = None
        batch: list[tuple[bytes, bytes]] = []
        insert = "INSERT OR REPLACE INTO expected (k, v) VALUES (?, ?)"
        scratch.execute("BEGIN")
        for row in blue.execute(_FEED_ROWS_SQL + "ORDER BY data_feeds.rowid"):
            batch.extend(_entries(row))  # executemany keeps the order, so later rows still win
            if len(batch) >= PROGRESS_EVERY:
                scratch.executemany(insert, batch)
                batch.clear()
            if row[0] != last_rowid:
                last_rowid = row[0]
                done += 1
                _tick(progress, CHECK_KV_DATA_FEEDS, done, total)
        scratch.executemany(insert, batch)
        scratch.execute("COMMIT")
        n_expected = _count(scratch, "SELECT count(*) FROM expected")
        missing = extra = mismatched = 0
        # BLOB ordering is memcmp, like RocksDB; every df\n key sorts before every dfv\n key.
        want = ((bytes(r[0]), bytes(r[1])) for r in scratch.execute("SELECT k, v FROM expected ORDER BY k"))
        have = _chain(_kv_range(kv, DF_PREFIX), _kv_range(kv, DFV_PREFIX))
        w, h = next(want, None), next(have, None)
        while w is not None or h is not None:
            tally.checked += 1
            if h is None or (w is not None and w[0] < h[0]):
                missing += 1
                tally.fail(f"missing {_show(w[0])}")  # type: ignore[index]
                w = next(want, None)
            elif w is None or h[0] < w[0]:
                extra += 1
                tally.fail(f"extra {_show(h[0])} = {_show(h[1])}")
                h = next(have, None)
            else:
                if w[1] != h[1]:
                    mismatched += 1
                    tally.fail(f"{_show(w[0])}: value {_show(h[1])}, expected {_show(w[1])}")
                w, h = next(want, None), next(have, None)
    finally:
        scratch.close()
    return tally.result(
        f"{total} data_feeds rows -> {n_expected} expected keys; {missing} missing, {extra} extra, {mismatched} wrong value"
    )


def _chain(*iters: Iterator[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
    for it in iters:
        yield from it


def _group_rows(blue: apsw.Connection, address: str, feed_name: str, mci: int | None) -> list[tuple[Any, ...]]:
    """Every feed row that yields a key of (address, feed_name, encoded mci), in rowid order.

    NULL and 0 encode to the same mci text (ffffffff), so both belong to the group of either."""
    mci_cond = "(units.main_chain_index=0 OR units.main_chain_index IS NULL)" if not mci else "units.main_chain_index=?"
    bindings: tuple[Any, ...] = (feed_name, address) if not mci else (mci, feed_name, address)
    sql = (
        f"SELECT {FEED_ROW_COLUMNS} "  # units first: the group is found by mci through units' index
        "FROM units CROSS JOIN data_feeds USING(unit) CROSS JOIN unit_authors USING(unit) "
        f"WHERE {mci_cond} AND feed_name=? AND address=? ORDER BY data_feeds.rowid"
    )
    return list(blue.execute(sql, bindings))


KV_FEED_LOOKUP_BATCH = 900  # below SQLite's default limit of bound parameters


def check_kv_data_feeds_kv_era(green: apsw.Connection, kv: Rdict) -> VerifyCheck:
    """Check 7 for a source already on the KV store (version >= 31): ocore stopped filling SQL `data_feeds`,
    so the expected keys cannot be rebuilt from SQL. The `df`/`dfv` keys were copied from blue unchanged (no
    step from 31 on touches them); check that each one is well formed and names a unit that green holds."""
    tally = _Tally(CHECK_KV_DATA_FEEDS)
    pending: list[tuple[bytes, str]] = []

    def flush() -> None:
        units = sorted({u for _k, u in pending})
        known = {r[0] for r in green.execute(
            f"SELECT unit FROM units WHERE unit IN ({','.join('?' * len(units))})", units)} if units else set()
        for key, unit in pending:
            if unit not in known:
                tally.fail(f"{_show(key)} names unit {unit}, which green does not hold")
        pending.clear()

    for prefix, fields in ((DF_PREFIX, 6), (DFV_PREFIX, 4)):
        for key, value in _kv_range(kv, prefix):
            tally.checked += 1
            parts = key.split(b"\n")
            text = value.decode("utf-8", "replace")
            unit = text.rsplit("\n", 1)[-1] if prefix == DFV_PREFIX else text
            if len(parts) < fields or len(parts[-1]) != 8:
                tally.fail(f"{_show(key)}: not a {prefix.decode().strip()} key of ocore's form")
                continue
            pending.append((key, unit))
            if len(pending) >= KV_FEED_LOOKUP_BATCH:
                flush()
    flush()
    return tally.result(f"source already on the KV store: {tally.checked} df/dfv keys copied from blue, each "
                        "well formed and naming a unit green holds (SQL data_feeds is not filled in the KV era)")


def _check_kv_data_feeds_sample(blue: apsw.Connection, kv: Rdict, sample: int, progress: Progress | None) -> VerifyCheck:
    tally = _Tally(CHECK_KV_DATA_FEEDS)
    rng = random.Random(SAMPLE_SEED)
    rowids = _sample_rowids(blue, "data_feeds", sample, rng)
    seen_groups: set[tuple[str, str, int]] = set()
    missing = mismatched = 0
    for i, rowid in enumerate(rowids, 1):
        for row in blue.execute(_FEED_ROWS_SQL + "WHERE data_feeds.rowid=?", (rowid,)).fetchall():
            _r, _unit, address, feed_name, _v, _iv, mci = row
            group = (address, feed_name, mci or 0)
            if group in seen_groups:
                continue
            seen_groups.add(group)
            # All rows of the group, replayed in rowid order, give the exact final value of its keys.
            expected: dict[bytes, bytes] = {}
            for grow in _group_rows(blue, address, feed_name, mci):
                expected.update(_entries(grow))
            for k, v in expected.items():
                tally.checked += 1
                got = kv.get(k)
                if got is None:
                    missing += 1
                    tally.fail(f"missing {_show(k)}")
                elif got != v:
                    mismatched += 1
                    tally.fail(f"{_show(k)}: value {_show(got)}, expected {_show(v)}")
        _tick(progress, CHECK_KV_DATA_FEEDS, i, len(rowids))
    return tally.result(
        f"sample: {len(rowids)} data_feeds rows, {len(seen_groups)} (address, feed, mci) groups; "
        f"{missing} missing, {mismatched} wrong value; extra keys are only found by a full verify"
    )


# ---------------------------------------------------------------------------------------------
# check 8: balls


def _ball_rows(green: apsw.Connection, unit: str) -> tuple[list[tuple[Any, Any]], list[tuple[Any, Any]]]:
    """(parent unit, its ball) in ocore's order (`ORDER BY ball`) and (skiplist unit, its ball) of one unit."""
    parents = green.execute(
        "SELECT parent_unit, ball FROM parenthoods LEFT JOIN balls ON parent_unit=balls.unit "
        "WHERE child_unit=? ORDER BY ball, parent_unit",
        (unit,),
    ).fetchall()
    skiplist = green.execute(
        "SELECT skiplist_unit, ball FROM skiplist_units LEFT JOIN balls ON skiplist_unit=balls.unit "
        "WHERE skiplist_units.unit=? ORDER BY skiplist_unit",
        (unit,),
    ).fetchall()
    return parents, skiplist


def _ball_problem(ball: str, unit: str, sequence: str | None, parents: list[tuple[Any, Any]],
                  skiplist: list[tuple[Any, Any]]) -> str | None:
    """Why `ball` is not the ball hash of `unit` (with its parents' and skiplist units' balls), or None."""
    if sequence is None:
        return f"ball {ball}: its unit {unit} is not in units"
    for parent_unit, parent_ball in parents:
        if parent_ball is None:
            return f"{unit}: parent {parent_unit} has no ball"
    for skiplist_unit, skiplist_ball in skiplist:
        if skiplist_ball is None:
            return f"{unit}: skiplist unit {skiplist_unit} has no ball"
    # JS Array.sort compares UTF-16 code units; UTF-16-BE bytes sort the same way.
    skiplist_balls = sorted((str(b) for _, b in skiplist), key=lambda s: s.encode("utf-16-be"))
    parent_balls = [str(b) for _, b in parents]
    # ocore: is_nonserial = sequence === 'final-bad' (stable units are 'good' or 'final-bad').
    computed = get_ball_hash(unit, parent_balls, skiplist_balls, sequence == "final-bad")
    if computed != ball:
        return f"{unit}: ball {ball} in balls, re-hashed {computed}"
    return None


def _grouped(rows: Iterator[tuple[Any, ...]]) -> dict[str, list[tuple[Any, Any]]]:
    out: dict[str, list[tuple[Any, Any]]] = {}
    for unit, other, ball in rows:
        out.setdefault(unit, []).append((other, ball))
    return out


BALLS_PER_QUERY = 20_000  # rowids per window of the bulk queries: bounds memory whatever the range's size


def check_balls_part(green: apsw.Connection, lo: int | None = None, hi: int | None = None,
                     progress: Progress | None = None, total: int | None = None) -> _Tally:
    """Check 8 over the balls with lo <= rowid < hi (None: open end), in rowid order.

    Per window of BALLS_PER_QUERY rowids, three queries (its balls; the parents' and the skiplist units' balls
    of their units, grouped by unit in the same order as the one-unit queries of `_ball_rows`) instead of two
    per ball; the window keeps the grouped rows small on any node."""
    tally = _Tally(CHECK_BALLS)
    bounds = green.execute("SELECT min(rowid), max(rowid) FROM balls WHERE (? IS NULL OR rowid >= ?) "
                           "AND (? IS NULL OR rowid < ?)", (lo, lo, hi, hi)).fetchall()[0]
    if bounds[0] is None:
        return tally
    done = 0
    for start in range(int(bounds[0]), int(bounds[1]) + 1, BALLS_PER_QUERY):
        window = (start, min(start + BALLS_PER_QUERY, int(bounds[1]) + 1))  # never past the range's last ball
        where = " WHERE cb.rowid >= ? AND cb.rowid < ?"
        parents = _grouped(green.execute(
            "SELECT p.child_unit, p.parent_unit, pb.ball FROM balls AS cb JOIN parenthoods AS p "
            f"ON p.child_unit=cb.unit LEFT JOIN balls AS pb ON p.parent_unit=pb.unit{where} "
            "ORDER BY p.child_unit, pb.ball, p.parent_unit", window))
        skiplist = _grouped(green.execute(
            "SELECT s.unit, s.skiplist_unit, sb.ball FROM balls AS cb JOIN skiplist_units AS s ON s.unit=cb.unit "
            f"LEFT JOIN balls AS sb ON s.skiplist_unit=sb.unit{where} ORDER BY s.unit, s.skiplist_unit", window))
        rows = green.execute("SELECT cb.ball, cb.unit, units.sequence FROM balls AS cb LEFT JOIN units USING(unit)"
                             f"{where} ORDER BY cb.rowid", window)
        for ball, unit, sequence in rows:
            tally.checked += 1
            done += 1
            problem = _ball_problem(str(ball), str(unit), sequence, parents.get(unit, []), skiplist.get(unit, []))
            if problem is not None:
                tally.fail(problem)
            if total is not None:
                _tick(progress, CHECK_BALLS, done, total)
    return tally


BALLS_ALL = "all balls"
_BALLS_SQL = "SELECT balls.ball, balls.unit, units.sequence FROM balls LEFT JOIN units USING(unit)"


def check_balls(
    green: apsw.Connection, sample: int | None, progress: Progress | None = None
) -> VerifyCheck:
    """Check 8: every ball re-hashes from its unit, parents' balls, skiplist balls and sequence."""
    sql = _BALLS_SQL
    if sample is None:
        total = _count(green, "SELECT count(*) FROM balls")
        return check_balls_part(green, progress=progress, total=total).result(BALLS_ALL)
    tally = _Tally(CHECK_BALLS)
    rowids = _sample_rowids(green, "balls", sample, random.Random(SAMPLE_SEED))
    total = len(rowids)
    rows = (r for rowid in rowids for r in green.execute(sql + " WHERE balls.rowid=?", (rowid,)).fetchall())
    for i, (ball, unit, sequence) in enumerate(rows, 1):
        tally.checked += 1
        problem = _ball_problem(str(ball), str(unit), sequence, *_ball_rows(green, str(unit)))
        if problem is not None:
            tally.fail(problem)
        _tick(progress, CHECK_BALLS, i, total)
    return tally.result(f"sample of {total} balls (seed {SAMPLE_SEED})")


# ---------------------------------------------------------------------------------------------
# the entry point


def _run(name: str, fn: Callable[[], VerifyCheck]) -> VerifyCheck:
    """Run one check; a check that cannot run is a failed check carrying the reason."""
    try:
        return fn()
    except Exception as exc:
        return VerifyCheck(
            name=name,
            passed=False,
            checked=0,
            failed=1,
            first_failures=[f"{type(exc).__name__}: {exc}"],
            detail="the check could not run",
        )


def verify_green(
    blue_dir: Path,
    green_dir: Path,
    *,
    target_version: int = 31,
    sample: int | None = None,
    genesis_unit: str | None = None,
    progress: Progress | None = None,
    jobs: int | None = None,
) -> VerifyReport:
    """Run every verify check of green against blue and return the report (never raises on a failed check).

    `sample=None` checks every unit, data feed and ball; `sample=N` checks N reproducibly random ones
    of each (checks 1-5 always run in full). `jobs` worker processes hash the joints of the full units check
    (None: the usable cores; 1: in this process). Raises `BadInputError` when either dir holds no database."""
    started = datetime.now(timezone.utc)
    if sample is not None and sample < 1:
        raise BadInputError(f"--sample must be at least 1, got {sample}", hint="omit --sample for a full verify")
    blue_db, _ = _db_path(blue_dir)
    green_db, light = _db_path(green_dir)
    blue = open_readonly(blue_db)
    green = open_readonly(green_db)
    checks: list[VerifyCheck] = []
    try:
        if sample is None:
            checks = _full_checks(blue_db, green_db, green_dir, blue, green, light, target_version, genesis_unit,
                                  progress, jobs)
            return _report(checks, started, target_version, sample, blue_dir, green_dir)
        checks.append(_run(CHECK_INTEGRITY, lambda: check_integrity(green, progress)))
        checks.append(_run(CHECK_FOREIGN_KEYS, lambda: check_foreign_keys(blue, green, progress)))
        checks.append(_run(CHECK_USER_VERSION, lambda: check_user_version(green, target_version)))
        checks.append(_run(CHECK_SCHEMA, lambda: check_schema(green, target_version, light)))
        checks.append(_run(CHECK_ROW_COUNTS, lambda: check_row_counts(
            blue, green, progress, target_version=target_version, light=light, network=_network_name_or_none(green))))
        kv: Rdict | None = None
        try:
            kv = open_kv_readonly(green_dir / KV_DIR_NAME)
        except Exception as exc:
            for name in (CHECK_KV_UNITS, CHECK_KV_DATA_FEEDS):
                checks.append(_run(name, lambda exc=exc: _raise(exc)))
        if kv is not None:
            try:
                opened = kv

                def units_check() -> VerifyCheck:
                    # A node with no units has nothing network-dependent to check (stray j keys still are).
                    no_units = _count(green, "SELECT count(*) FROM units") == 0
                    network = MAINNET if no_units else detect_green_network(green, genesis_unit)
                    return check_kv_units(green, opened, network, light, sample, progress)

                checks.append(_run(CHECK_KV_UNITS, units_check))
                if _user_version(blue) >= KV_ERA_VERSION:
                    checks.append(_run(CHECK_KV_DATA_FEEDS,
                                       lambda: check_kv_data_feeds_kv_era(green, opened)))
                else:
                    checks.append(_run(CHECK_KV_DATA_FEEDS,
                                       lambda: check_kv_data_feeds(blue, opened, sample, progress)))
            finally:
                kv.close()
        checks.append(_run(CHECK_BALLS, lambda: check_balls(green, sample, progress)))
    finally:
        green.close()
        blue.close()
    return _report(checks, started, target_version, sample, blue_dir, green_dir)


def _report(checks: list[VerifyCheck], started: datetime, target_version: int, sample: int | None,
            blue_dir: Path, green_dir: Path) -> VerifyReport:
    return VerifyReport(
        passed=all(c.passed for c in checks),
        started_at=started,
        finished_at=datetime.now(timezone.utc),
        target_version=target_version,
        sample=sample,
        blue_dir=blue_dir,
        green_dir=green_dir,
        checks=checks,
    )


def _full_checks(blue_db: Path, green_db: Path, green_dir: Path, blue: apsw.Connection, green: apsw.Connection,
                 light: bool, target_version: int, genesis_unit: str | None, progress: Progress | None,
                 jobs: int | None) -> list[VerifyCheck]:
    """Every check over everything, as tasks over `jobs` processes (`verify_tasks`); same report for any jobs."""
    from bluegreen.lifecycle import verify_tasks  # it imports this module

    kv_dir = green_dir / KV_DIR_NAME
    kv_error: str | None = None
    try:
        open_kv_readonly(kv_dir).close()  # a KV that cannot open fails both KV checks with the reason
    except Exception as exc:
        kv_error = f"{type(exc).__name__}: {exc}"
    units_error: str | None = None
    network = MAINNET
    try:
        # A node with no units has nothing network-dependent to check (stray j keys still are).
        if _count(green, "SELECT count(*) FROM units"):
            network = detect_green_network(green, genesis_unit)
    except Exception as exc:  # an unknown network fails the units check with the reason
        units_error = f"{type(exc).__name__}: {exc}"
    env = verify_tasks.VerifyEnv(
        blue_db=str(blue_db.resolve()), green_db=str(green_db.resolve()), kv_dir=str(kv_dir.resolve()), light=light,
        target_version=target_version, blue_version=_user_version(blue), network=network,
        network_name=_network_name_or_none(green))
    return verify_tasks.run_full(env, green, kv_error, units_error, jobs, progress)


def _network_name_or_none(green: apsw.Connection) -> str | None:
    """green's network for network-conditional step effects; None (every network's) when it cannot be told."""
    try:
        return detect_green_network(green, None).name if _count(green, "SELECT count(*) FROM units") else None
    except Exception:  # an unknown network is reported by the kv_units check; here, take every effect
        return None


def _raise(exc: Exception) -> VerifyCheck:
    raise exc
