"""The v31 step on a copy of a node's data: every SQL step below 31, the KV fill, then steps 32..N.

Three commits, in ocore's own order: (1) the SQL steps below 31 with `user_version=30` (ocore's intermediate
state; a node stuck at 30 is an ordinary input); (2) the KV fill, built in a side directory whose progress
is journaled per durable chunk, with no write transaction open, so every worker reads the copy itself;
(3) steps 32..N and `user_version=N` in one transaction committed only after the KV store is complete,
durable and in place. A crash anywhere leaves the copy at its source version, at 30, or finished; a re-run
continues from the last durable chunk and ends with the same keys and values as an uninterrupted run.
The copy is never the live node's data: this is the green of a blue/green upgrade."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import apsw
from pydantic import BaseModel, Field

from bluegreen.durable import atomic_write_json, fsync_dir, fsync_tree
from bluegreen.engine.joints import ReadContext
from bluegreen.engine.kvwriter import KvBuilder, iter_kv, link_copy_kv, owned_by_migration, remove_kv_dir
from bluegreen.engine.pool import open_pool, resolve_jobs
from bluegreen.engine.fillworker import SqliteFailure, UnitReadTask, read_and_transform, release_readers
from bluegreen.engine.sqltxn import WriteTransaction
from bluegreen.engine.sqlsource import (
    chunk_starts,
    count_data_feed_rows,
    count_units,
    read_data_feed_rows,
    read_min_retrievable_mci,
    read_voided_at,
)
from bluegreen import signals
from bluegreen.ocore_facts import is_light_db_name, network_of
from bluegreen.errors import BadInputError, MigrationError, SourceDataError
from bluegreen.engine.transform import UnitFailure
from bluegreen.formats.feeds import data_feed_entries
from bluegreen.formats.networks import MAINNET, detect_network
from bluegreen.killpoints import killpoint
from bluegreen.schema.kvsteps import storage_sizes
from bluegreen.schema.runner import StepsReport, apply_schema_steps
from bluegreen.schema.steps import KV_FILL_STEP, SUPPORTED_TARGETS

TARGET_VERSION = 31
MAX_FAILURES_KEPT = 10_000  # every failure is counted; this many are listed
# Page cache of the main connection (SQL steps, counts, the feeds join): small and bounded, so peak memory does
# not grow with the node (measured at 1M units, 2 jobs: main 227 MB with 32 MiB, 331 MB with 128 MiB, and the
# feeds fill as fast); the unit reads have their own caches in the workers.
MAIN_CACHE_KIB = 32_768

Progress = Callable[[str, int, int], None]


class MigrationOptions(BaseModel):
    """How to run the v31 step."""

    target_version: int = TARGET_VERSION
    light: bool | None = None  # None: from the SQLite file name (byteball-light.sqlite)
    genesis_unit: str | None = None  # devnet: defaults to the unit without parents
    unit_chunk: int = Field(default=5000, ge=1)
    feed_chunk: int = Field(default=20000, ge=1)
    check_hashes: bool = True  # full nodes; light nodes cannot (no last balls)
    # A rebuilt payload that does not match its payload_hash fails the unit (ocore would copy it silently).
    strict_payload_hashes: bool = True
    # Worker processes for the unit fill (None: the usable cores); 1 runs it in this process (the reference).
    jobs: int | None = Field(default=None, ge=1)


class JournalPhase(str, Enum):
    UNITS = "units"
    FEEDS = "feeds"
    KV_DONE = "kv_done"
    KV_INSTALLED = "kv_installed"
    COMMITTED = "committed"


class SourceIdentity(BaseModel):
    """What the journal must match to resume: the same copy at the same version."""

    user_version: int
    units: int
    max_unit_rowid: int
    data_feeds: int
    max_feed_rowid: int


class MigrationJournal(BaseModel):
    """Durable progress of one migration run (written after each durable KV chunk)."""

    source: SourceIdentity
    phase: JournalPhase = JournalPhase.UNITS
    last_unit_rowid: int = 0
    last_feed_rowid: int = 0
    units_done: int = 0
    feed_rows_done: int = 0
    kv_puts: int = 0
    carried_kv_keys: int = 0
    stale_kv_keys_dropped: int = 0
    failures_total: int = 0
    failures: list[UnitFailure] = Field(default_factory=list)
    # Step 34's aa_addresses.storage_size per AA, read from the built KV before step 39 retypes its values:
    # once the KV is built, a resumed run re-applies the (rolled back) SQL of steps 32..N from here.
    storage_sizes: dict[str, int] | None = None
    # The copy's version before any step and what the steps below 31 did (committed at 30 before the fill,
    # so a resumed run reads 30 from the copy): the report of a resumed run still speaks of the whole run.
    origin_version: int | None = None
    steps: Any = None
    # The keys of a half-filled KV (a node stuck at 30) that are not the migration's are in the build. New
    # journals start False; a journal without the field was written by an older bluegreen, which saved its
    # first journal only once that carry was done.
    carry_done: bool = True
    started_at: datetime
    updated_at: datetime


class MigrationTimings(BaseModel):
    """Wall-clock seconds of this run's parts (a resumed run times only what it did itself), so a benchmark
    can tell the SQL steps from the KV fill without a profiler. `elapsed_seconds` of the report also covers
    what is not listed here (reading the network and counts, fsync of the build, installing it, the commit)."""

    sql_steps_seconds: float = 0.0  # the SQL steps below 31 and their commit at user_version=30
    units_seconds: float = 0.0  # every unit's `j` key (read, rebuild, hash, write)
    feeds_seconds: float = 0.0  # the data feeds' `df`/`dfv` keys
    later_steps_seconds: float = 0.0  # steps 32..target (SQL, and the KV parts of 34/39) after the fill


class MigrationReport(BaseModel):
    """What a migration run did. `completed` is True only when user_version is now the target."""

    db_path: str
    kv_dir: str
    source_version: int
    target_version: int
    light: bool
    network: str
    genesis_unit: str | None
    jobs: int = 1  # worker processes of the unit fill (1: in the main process)
    min_retrievable_mci: int | None = None
    # final-bad units voided in the data at exactly min_retrievable_mci (old ocore voided with <=, its reader
    # tests <): written in their voided form, which hashes to their id, where ocore's migration crashes
    voided_at_min_retrievable_mci: list[str] = Field(default_factory=list)
    completed: bool = False
    already_at_target: bool = False
    resumed: bool = False
    resumed_from_unit_rowid: int = 0
    steps: Any = None  # the schema runner's StepsReport, as a dict
    kv_era_steps: Any = None  # steps 32..target (StepsReport as a dict)
    units_total: int = 0
    units_written: int = 0
    feed_rows: int = 0
    kv_puts: int = 0
    carried_kv_keys: int = 0
    stale_kv_keys_dropped: int = 0
    orphan_data_feed_rows: int = 0
    failures_total: int = 0
    failures: list[UnitFailure] = Field(default_factory=list)
    elapsed_seconds: float = 0.0
    units_per_second: float = 0.0
    timings: MigrationTimings = Field(default_factory=MigrationTimings)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _since(mark: float) -> float:
    """Seconds since the monotonic `mark`, rounded as `elapsed_seconds` is."""
    return round(time.monotonic() - mark, 3)


def build_dir_for(kv_dir: Path) -> Path:
    """Where the KV is built before it replaces `kv_dir`."""
    return kv_dir.with_name(kv_dir.name + ".v31-build")


def _source_identity(conn: apsw.Connection, user_version: int) -> SourceIdentity:
    units, max_unit = conn.execute("SELECT COUNT(*), IFNULL(MAX(rowid),0) FROM units").fetchone()
    feeds, max_feed = conn.execute("SELECT COUNT(*), IFNULL(MAX(rowid),0) FROM data_feeds").fetchone()
    return SourceIdentity(user_version=user_version, units=units, max_unit_rowid=max_unit,
                          data_feeds=feeds, max_feed_rowid=max_feed)


def _open(db_path: Path) -> apsw.Connection:
    if not db_path.is_file():
        raise BadInputError(f"no SQLite database at {db_path}", hint="give the staged copy's byteball.sqlite")
    conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READWRITE)
    conn.setbusytimeout(5000)
    try:
        conn.execute(f"PRAGMA cache_size=-{MAIN_CACHE_KIB}")
        conn.execute("PRAGMA user_version").fetchone()
    except apsw.Error as exc:
        conn.close()
        raise SourceDataError(f"cannot read {db_path}: {exc}", hint="the database file is damaged; restore it from a backup") from exc
    return conn


def _load_journal(path: Path) -> MigrationJournal | None:
    if not path.exists():
        return None
    try:
        return MigrationJournal.model_validate_json(path.read_text("utf-8"))
    except ValueError:
        return None  # a journal we cannot read is treated as absent: start over (the KV build is discarded)


def migrate_copy(db_path: Path, kv_dir: Path, journal_path: Path, options: MigrationOptions | None = None,
                 progress: Progress | None = None) -> MigrationReport:
    """Bring the COPY at `db_path` (+ `kv_dir`) to `options.target_version` as ocore's migrateDb would.

    Never call this on a live node's files. Raises MigrationError (with `.report`) if any unit cannot
    be migrated; the copy is then at user_version 30 (the SQL steps below 31 commit first, as in ocore), with
    no KV installed. Safe to call again after a crash: it resumes."""
    options = options or MigrationOptions()
    if options.target_version not in SUPPORTED_TARGETS:
        raise BadInputError(f"target version {options.target_version} is not supported "
                            f"({SUPPORTED_TARGETS[0]}..{SUPPORTED_TARGETS[-1]})")
    started = time.monotonic()
    light = options.light if options.light is not None else is_light_db_name(db_path.name)
    conn = _open(db_path)
    try:
        source_version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        report = MigrationReport(db_path=str(db_path), kv_dir=str(kv_dir), source_version=source_version,
                                 target_version=options.target_version, light=light, network="?", genesis_unit=None,
                                 jobs=resolve_jobs(options.jobs))
        if source_version >= options.target_version:
            report.already_at_target = report.completed = True
            report.network = "unknown"
            return report
        if source_version >= KV_FILL_STEP:
            return _run_kv_era(conn, kv_dir, journal_path, options, light, report, started)
        return _run(conn, db_path, kv_dir, journal_path, options, light, report, started, progress)
    finally:
        conn.close()


STORAGE_SIZE_STEP = 34  # ocore's step 34 fills aa_addresses.storage_size from the `st` keys


def _set_storage_sizes(conn: apsw.Connection, sizes: dict[str, int] | None) -> None:
    """Step 34's SQL effect from the sizes recorded in the journal (before step 39 changed the values)."""
    for address, size in (sizes or {}).items():
        conn.execute("UPDATE aa_addresses SET storage_size=? WHERE address=?", (size, address))


# ocore commits `user_version=30` and the v30 tables before its KV fill; so do we: the copy then holds ocore's
# own intermediate state (a node stuck at 30 is an ordinary input), and the fill runs with no write
# transaction open, so every worker process reads the copy itself (engine/fillworker.py).
INTERMEDIATE_VERSION = KV_FILL_STEP - 1


def _save_journal(journal_path: Path, journal: MigrationJournal) -> None:
    journal.updated_at = _now()
    with signals.deferred():  # never cut by a TERM/HUP mid-serialisation (see bluegreen.signals)
        atomic_write_json(journal_path, journal.model_dump(mode="json"))


def _commit_sql_steps(conn: apsw.Connection, journal_path: Path, source_version: int, light: bool,
                      progress: Progress | None) -> MigrationJournal:
    """Steps source+1..30 in one transaction, committed with `user_version=30`. The journal naming that state
    (and the steps done, for the report) is durable before the commit: a crash between the two leaves the
    copy at its source version with a journal that no longer matches it, which the re-run discards."""
    with WriteTransaction(conn) as txn:
        txn.begin()
        killpoint("engine.before_sql_steps")
        steps = apply_schema_steps(conn, source_version, light=light, progress=progress)
        killpoint("engine.after_sql_steps")
        conn.execute(f"PRAGMA user_version={INTERMEDIATE_VERSION}")
        journal = MigrationJournal(source=_source_identity(conn, INTERMEDIATE_VERSION), origin_version=source_version,
                                   steps=steps.model_dump(mode="json"), carry_done=False, started_at=_now(),
                                   updated_at=_now())
        _save_journal(journal_path, journal)
        txn.commit()
    killpoint("engine.after_sql_commit")
    return journal


def _resume_or_start(conn: apsw.Connection, journal_path: Path, build_dir: Path, version: int,
                     report: MigrationReport) -> MigrationJournal:
    """The journal of a run interrupted on this very copy (its build still there), or a fresh one."""
    identity = _source_identity(conn, version)
    journal = _load_journal(journal_path)
    if journal is not None and journal.source != identity:
        journal = None  # a different copy: the old build is worthless
    if journal is not None and journal.phase in (JournalPhase.UNITS, JournalPhase.FEEDS) and not build_dir.exists():
        # progress recorded but the build dir is gone: start the fill over (the steps stay done)
        journal = journal.model_copy(update={"phase": JournalPhase.UNITS, "last_unit_rowid": 0, "last_feed_rowid": 0,
                                             "units_done": 0, "feed_rows_done": 0, "kv_puts": 0, "carried_kv_keys": 0,
                                             "stale_kv_keys_dropped": 0, "failures_total": 0, "failures": [],
                                             "storage_sizes": None, "carry_done": False})
        return journal
    if journal is None:
        remove_kv_dir(build_dir)
        return MigrationJournal(source=identity, origin_version=version, carry_done=False, started_at=_now(),
                                updated_at=_now())
    report.resumed = True
    report.resumed_from_unit_rowid = journal.last_unit_rowid
    return journal


def _run(conn: apsw.Connection, db_path: Path, kv_dir: Path, journal_path: Path, options: MigrationOptions,
         light: bool, report: MigrationReport, started: float, progress: Progress | None) -> MigrationReport:
    build_dir = build_dir_for(kv_dir)
    if report.source_version < INTERMEDIATE_VERSION:
        remove_kv_dir(build_dir)
        mark = time.monotonic()
        journal = _commit_sql_steps(conn, journal_path, report.source_version, light, progress)
        report.timings.sql_steps_seconds = _since(mark)
    else:
        journal = _resume_or_start(conn, journal_path, build_dir, report.source_version, report)
    # The report speaks of the run as a whole: the version the copy had before any step, and its steps.
    report.source_version = journal.origin_version if journal.origin_version is not None else report.source_version
    report.steps = journal.steps if journal.steps is not None else StepsReport(
        from_version=report.source_version, target=KV_FILL_STEP, node="light" if light else "full", steps=[],
        statements=[]).model_dump(mode="json")

    def save() -> None:
        _save_journal(journal_path, journal)

    with WriteTransaction(conn) as txn:  # steps 32..N: rolled back on any way out before their commit
        try:
            report.units_total = count_units(conn)
            report.jobs = resolve_jobs(options.jobs, report.units_total)
            # A node that never synced has no units: nothing tells its network, and nothing needs one.
            network = network_of(conn, options.genesis_unit) if report.units_total else MAINNET
            report.network = network.name if report.units_total else "unknown (no units)"
            report.genesis_unit = network.genesis_unit
            min_mci = read_min_retrievable_mci(conn)
            report.min_retrievable_mci = min_mci
            report.voided_at_min_retrievable_mci = read_voided_at(conn, min_mci)
            ctx = ReadContext(network=network, min_retrievable_mci=min_mci, light=light)

            if journal.phase in (JournalPhase.UNITS, JournalPhase.FEEDS):
                if build_dir.exists() and not journal.carry_done:
                    remove_kv_dir(build_dir)  # killed while carrying the kept keys over: carry them again
                kv = KvBuilder(build_dir)
                try:
                    if not journal.carry_done:
                        _carry_foreign_keys(kv, kv_dir, journal)
                        killpoint("engine.after_carry")
                        journal.carry_done = True
                        save()
                    if journal.phase is JournalPhase.UNITS:
                        mark = time.monotonic()
                        _fill_units(conn, db_path, kv, ctx, options, journal, report.units_total, save, progress,
                                    check=options.check_hashes and not light, jobs=report.jobs)
                        report.timings.units_seconds = _since(mark)
                        journal.phase = JournalPhase.FEEDS
                        save()
                    mark = time.monotonic()
                    _fill_feeds(conn, kv, options, journal, save, progress)
                    report.timings.feeds_seconds = _since(mark)
                    txn.begin()  # steps 32..N and user_version=target: one transaction
                    if options.target_version > KV_FILL_STEP:
                        mark = time.monotonic()
                        if options.target_version >= STORAGE_SIZE_STEP and journal.storage_sizes is None:
                            journal.storage_sizes = storage_sizes(kv)
                            save()
                        later = apply_schema_steps(conn, KV_FILL_STEP, light=light, target=options.target_version,
                                                   network=network.name, kv=kv)
                        # Same values on a first run; after a kill past step 39's KV writes, the recorded ones.
                        _set_storage_sizes(conn, journal.storage_sizes)
                        report.kv_era_steps = later.model_dump(mode="json")
                        report.timings.later_steps_seconds = _since(mark)
                finally:
                    kv.close()
                # Every file, not just the dir: rocksdict writes its config without fsync, and a power cut after
                # the journal says KV_DONE (and the state MIGRATED) left it empty (tests/test_powerloss.py).
                fsync_tree(build_dir)
                journal.phase = JournalPhase.KV_DONE
                save()
            else:
                txn.begin()
                if options.target_version > KV_FILL_STEP:
                    # Resumed after the KV was built (killed before the commit): the SQLite transaction that held
                    # steps 32..N rolled back, their KV parts are durable in the build. Re-apply the SQL parts only.
                    mark = time.monotonic()
                    later = apply_schema_steps(conn, KV_FILL_STEP, light=light, target=options.target_version,
                                               network=network.name, kv=None)
                    _set_storage_sizes(conn, journal.storage_sizes)
                    report.kv_era_steps = later.model_dump(mode="json")
                    report.timings.later_steps_seconds = _since(mark)
            report.orphan_data_feed_rows = _count_orphan_feeds(conn)
            _fill_report(report, journal)
            if journal.failures_total:
                shown = "; ".join(f"{f.unit}: {f.reason}" for f in journal.failures[:5])
                more = f"; and {journal.failures_total - 5} more" if journal.failures_total > 5 else ""
                raise MigrationError(
                    f"{journal.failures_total} unit(s) cannot be migrated ({shown}{more}); the copy was left at "
                    f"version {INTERMEDIATE_VERSION} (ocore's own state before its KV fill) with no KV installed",
                    hint="see the migration report for every failing unit; the live node is untouched. "
                         "Repair or resync the source database, then run `upgrade stage` again",
                )
            _install_and_commit(txn, journal, save, build_dir, kv_dir, options.target_version,
                                ("engine.before_kv_install", "engine.before_commit"))
            report.completed = True
        except MigrationError as exc:
            exc.report = report  # type: ignore[attr-defined]
            raise
    report.elapsed_seconds = round(time.monotonic() - started, 3)
    if report.elapsed_seconds > 0:
        report.units_per_second = round(report.units_written / report.elapsed_seconds, 1)
    return report


def _network_name(conn: apsw.Connection, genesis: str | None) -> str:
    if not count_units(conn):
        return MAINNET.name  # nothing tells the network of an empty node: ocore's default (no env)
    versions = [row[0] for row in conn.execute("SELECT DISTINCT version FROM units")]
    try:
        return detect_network(versions).name  # the steps need the network only, not its genesis
    except ValueError as exc:
        raise SourceDataError(f"cannot tell the network from units.version values {versions[:10]}: {exc}",
                              hint="the database mixes networks; it is not a single node's database") from exc


def _run_kv_era(conn: apsw.Connection, kv_dir: Path, journal_path: Path, options: MigrationOptions, light: bool,
                report: MigrationReport, started: float) -> MigrationReport:
    """A source already on the KV store (31..49): steps source+1..target, the SQLite part committed last.

    The KV parts of steps 34 and 39 are applied to a copy of the KV dir (`.sst` hard-linked), which replaces
    it only once complete and durable (journal phase KV_DONE). A kill before that discards the copy and the
    steps start again from the untouched KV; a kill after it re-applies only the SQL parts, with step 34's
    storage sizes from the journal. So step 39 never types a value twice (`s\nn\n5`) and step 34 never
    measures values step 39 already typed, as an in-place run killed between the two would."""
    network = _network_name(conn, options.genesis_unit)
    report.network = network
    build_dir = build_dir_for(kv_dir)
    identity = _source_identity(conn, report.source_version)
    journal = _load_journal(journal_path)
    if journal is None or journal.source != identity or journal.phase not in (JournalPhase.KV_DONE,
                                                                              JournalPhase.KV_INSTALLED):
        remove_kv_dir(build_dir)  # nothing durable yet: start from the untouched KV dir
        journal = MigrationJournal(source=identity, origin_version=report.source_version, started_at=_now(),
                                   updated_at=_now())
    else:
        report.resumed = True

    def save() -> None:
        _save_journal(journal_path, journal)

    mark = time.monotonic()
    with WriteTransaction(conn) as txn:
        txn.begin()
        if journal.phase is JournalPhase.UNITS:
            kv = None
            if kv_dir.exists():
                link_copy_kv(kv_dir, build_dir)
                kv = KvBuilder(build_dir)
            try:
                if kv is not None and report.source_version < STORAGE_SIZE_STEP <= options.target_version:
                    journal.storage_sizes = storage_sizes(kv)  # before step 39 retypes the values
                steps = apply_schema_steps(conn, report.source_version, light=light, target=options.target_version,
                                           network=network, kv=kv)
            finally:
                if kv is not None:
                    kv.close()
            if kv is not None:
                fsync_tree(build_dir)
            journal.phase = JournalPhase.KV_DONE
            save()
        else:
            steps = apply_schema_steps(conn, report.source_version, light=light, target=options.target_version,
                                       network=network, kv=None)
            _set_storage_sizes(conn, journal.storage_sizes)
        report.kv_era_steps = steps.model_dump(mode="json")
        report.timings.later_steps_seconds = _since(mark)  # a KV-era source has no fill: only these steps
        _install_and_commit(txn, journal, save, build_dir, kv_dir, options.target_version,
                            ("engine.kv_era_before_install", "engine.kv_era_before_commit"),
                            built=build_dir.exists() or kv_dir.exists())
    report.completed = True
    report.elapsed_seconds = round(time.monotonic() - started, 3)
    return report


def _fill_report(report: MigrationReport, journal: MigrationJournal) -> None:
    report.units_written = journal.units_done
    report.feed_rows = journal.feed_rows_done
    report.kv_puts = journal.kv_puts
    report.carried_kv_keys = journal.carried_kv_keys
    report.stale_kv_keys_dropped = journal.stale_kv_keys_dropped
    report.failures_total = journal.failures_total
    report.failures = list(journal.failures)


def _carry_foreign_keys(kv: KvBuilder, kv_dir: Path, journal: MigrationJournal) -> None:
    """A node stuck at 30 has a half-filled KV: its j/df/dfv keys are rebuilt from SQL, anything else is kept."""
    if not kv_dir.exists() or not any(kv_dir.iterdir()):
        return
    carried: list[tuple[bytes, bytes]] = []
    for key, value in iter_kv(kv_dir):
        if owned_by_migration(key):
            journal.stale_kv_keys_dropped += 1
        else:
            carried.append((key, value))
            if len(carried) >= 10_000:
                journal.carried_kv_keys += kv.write_chunk(carried)
                carried = []
    journal.carried_kv_keys += kv.write_chunk(carried)


def _record_failure(journal: MigrationJournal, failure: UnitFailure) -> None:
    journal.failures_total += 1
    if len(journal.failures) < MAX_FAILURES_KEPT:
        journal.failures.append(failure)


def _unit_tasks(conn: apsw.Connection, db_path: Path, after_rowid: int, ctx: ReadContext,
                options: MigrationOptions, check: bool) -> Iterator[UnitReadTask]:
    """One task per chunk of `unit_chunk` units after `after_rowid`, in rowid order: where each chunk starts,
    for whichever process reads it (nothing writes the copy during the fill, so the chunks stay put)."""
    for start in chunk_starts(conn, after_rowid, options.unit_chunk):
        yield UnitReadTask(db_path=str(db_path.resolve()), after_rowid=start, chunk_size=options.unit_chunk, ctx=ctx,
                           check_unit_hashes=check, strict_payload_hashes=options.strict_payload_hashes)


def _fill_units(conn: apsw.Connection, db_path: Path, kv: KvBuilder, ctx: ReadContext, options: MigrationOptions,
                journal: MigrationJournal, total: int, save: Callable[[], None], progress: Progress | None,
                *, check: bool, jobs: int) -> None:
    """Every unit's `j` key: chunks are read and transformed by `jobs` processes but written and journaled
    here, one chunk at a time in rowid order, so the journal's resume point is exactly the last durable
    chunk."""
    tasks = _unit_tasks(conn, db_path, journal.last_unit_rowid, ctx, options, check)
    try:
        with open_pool(jobs) as pool:
            for result in pool.imap(read_and_transform, tasks):
                if isinstance(result, SqliteFailure):
                    raise result.exception()  # the same apsw error type as in one process (full disk, ...)
                if result is None:  # nothing writes the copy during the fill: its units cannot have gone
                    raise MigrationError("a chunk of units vanished from the copy during the fill",
                                         hint="something else wrote the staged copy; run `upgrade stage` again")
                for failure in result.failures:
                    _record_failure(journal, failure)
                killpoint("engine.mid_units_chunk")
                journal.kv_puts += kv.write_chunk(result.puts)
                killpoint("engine.after_units_chunk_write")
                journal.last_unit_rowid = result.last_rowid
                journal.units_done += result.units
                save()
                killpoint("engine.between_units_chunks")
                if progress:
                    progress("units", journal.units_done, total)
    finally:
        release_readers()  # `--jobs 1` read in this process: no handle on the copy outlives the fill


def _fill_feeds(conn: apsw.Connection, kv: KvBuilder, options: MigrationOptions, journal: MigrationJournal,
                save: Callable[[], None], progress: Progress | None) -> None:
    total = count_data_feed_rows(conn)
    while True:
        rows, upper = read_data_feed_rows(conn, journal.last_feed_rowid, options.feed_chunk)
        if upper is None:
            return
        puts: list[tuple[bytes, bytes]] = []
        for _rowid, unit, address, feed_name, value, int_value, mci in rows:
            for key, val in data_feed_entries(address, feed_name, value, int_value, mci, unit):
                puts.append((key.encode("utf-8"), val.encode("utf-8")))
        killpoint("engine.mid_feeds_chunk")
        journal.kv_puts += kv.write_chunk(puts)
        journal.last_feed_rowid = upper
        journal.feed_rows_done += len(rows)
        save()
        if progress:
            progress("data_feeds", journal.feed_rows_done, total)


def _count_orphan_feeds(conn: apsw.Connection) -> int:
    """data_feeds rows ocore's join silently drops (no units row or no unit_authors row)."""
    return int(conn.execute(
        "SELECT COUNT(*) FROM data_feeds WHERE NOT EXISTS (SELECT 1 FROM units WHERE units.unit=data_feeds.unit) "
        "OR NOT EXISTS (SELECT 1 FROM unit_authors WHERE unit_authors.unit=data_feeds.unit)"
    ).fetchone()[0])


def _install_and_commit(txn: WriteTransaction, journal: MigrationJournal, save: Callable[[], None], build_dir: Path,
                        kv_dir: Path, target_version: int, kill_points: tuple[str, str], *, built: bool = True) -> None:
    """The end of every run: the built KV in place of the copy's (journal KV_INSTALLED), then `user_version`
    and the SQL commit (COMMITTED). Each part runs once: a re-run after a kill between them skips what is done.
    `built`: a KV was built (False: a KV-era copy without a KV dir, nothing to install)."""
    killpoint(kill_points[0])
    if journal.phase is JournalPhase.KV_DONE:
        if built:
            _install_kv(build_dir, kv_dir)
        journal.phase = JournalPhase.KV_INSTALLED
        save()
    killpoint(kill_points[1])
    txn.conn.execute(f"PRAGMA user_version={target_version}")
    txn.commit()
    journal.phase = JournalPhase.COMMITTED
    save()


def _install_kv(build_dir: Path, kv_dir: Path) -> None:
    """Put the finished build in place of the copy's KV dir (both are ours: this is the green copy)."""
    if not build_dir.exists():
        if kv_dir.exists():
            return  # installed by an interrupted earlier run
        raise MigrationError(f"the built KV {build_dir} is missing", hint="run `upgrade stage` again to rebuild it")
    old = kv_dir.with_name(kv_dir.name + ".pre-v31")
    remove_kv_dir(old)
    if kv_dir.exists():
        os.rename(kv_dir, old)
    os.rename(build_dir, kv_dir)
    fsync_dir(kv_dir.parent)
    remove_kv_dir(old)
