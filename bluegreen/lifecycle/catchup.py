"""`upgrade catch-up` and promote's last catch-up: bring an online-staged green up to blue's current state.

A fresh consistent snapshot of blue is compared with the previous one (`work/source-prev.sqlite`); green's
SQLite becomes the fresh snapshot with the SQL steps applied, green's KV the old KV with the joints and feed
keys of every possibly changed unit rewritten (bluegreen.engine.catchup; docs/catch-up.md: why nothing is
missed). Everything is built in `work/catchup/`; a journal marks the build complete, and only then are the
built files renamed into green/. A kill before that mark leaves green as it was (the build is discarded by
the next command); a kill after it is finished by the next command (`recover`)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import apsw
from pydantic import BaseModel

from bluegreen import signals
from bluegreen.durable import atomic_write_json, fsync_dir, fsync_file
from bluegreen.engine.catchup import CatchUpStats, CatchUpTimings, catch_up_copy, timed
from bluegreen.errors import OutOfSpaceError, PreflightError, VerificationFailed
from bluegreen.lifecycle import fingerprint as fpmod
from bluegreen.lifecycle import greendiff, ownership, snapshot, storage_errors
from bluegreen.lifecycle.killpoints import killpoint
from bluegreen.lifecycle.layout import Layout
from bluegreen.lifecycle.state import OnlinePosition, Phase, SpaceEstimate, StagingState, StateStore
from bluegreen.lifecycle.results import CatchUpResult, OnlineLag

Progress = Callable[[str, int, int], None]
PREV_NAME = "source-prev.sqlite"
CATCHUP_PHASES = (Phase.MIGRATED, Phase.VERIFIED, Phase.ROLLED_BACK)


class CatchUpJournal(BaseModel):
    """`work/catchup/journal.json`: written once the build is complete; its presence means "install it"."""

    position: OnlinePosition
    blue_fingerprint: fpmod.Fingerprint  # blue just before the fresh snapshot (its database part is used)
    keep_verified: bool  # green matched its verified fingerprint before: the catch-up's checks carry it on
    stats: CatchUpStats
    # Every table's row count of the caught-up green (its row-count check counted them): promote's rollback
    # baseline when the verify is carried on. None in journals of older bluegreens.
    green_row_counts: dict[str, int] | None = None


def prev_path(lay: Layout) -> Path:
    """The previous source snapshot (pre-migration copy of blue's SQLite) kept for the next catch-up."""
    return lay.work_dir / PREV_NAME


def verify_source_dir(lay: Layout) -> Path:
    """For verify of an online stage: a dir holding the snapshot green was built from (blue moves on, so
    comparing green with live blue would fail for rows the node added since; catch-up checks those)."""
    view = lay.work_dir / "verify-source"
    if view.exists():
        shutil.rmtree(view)
    view.mkdir(parents=True)
    os.link(prev_path(lay), view / lay.db_name)
    return view


def _dir(lay: Layout) -> Path:
    return lay.work_dir / "catchup"


def keep_source_copy(lay: Layout) -> None:
    """Before the migration of an online stage: keep green's SQLite as it is (= the snapshot) for catch-up.

    It is made (durably) before the engine first writes green, and a resumed stage finds it already there, so
    it is always the raw snapshot, never a partly migrated copy (the engine commits the steps below 31 first)."""
    dst = prev_path(lay)
    if dst.exists():
        return
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    snapshot.backup_sqlite(lay.green_dir / lay.db_name, tmp)
    fsync_file(tmp)
    os.replace(tmp, dst)
    fsync_dir(dst.parent)


def recover(lay: Layout, store: StateStore, state: StagingState | None) -> list[str]:
    """Finish an interrupted catch-up's install (journal written), or discard an unfinished build."""
    cu = _dir(lay)
    if not cu.exists():
        return []
    journal_path = cu / "journal.json"
    if state is None or not journal_path.exists():
        shutil.rmtree(cu)
        fsync_dir(cu.parent)
        return ["interrupted catch-up found before its build was complete: discarded (green unchanged)"]
    journal = CatchUpJournal.model_validate_json(journal_path.read_bytes())
    _install(lay, store, state, journal)
    return ["interrupted catch-up found after its build was complete: installed into green"]


def _swap_in(new: Path, live: Path, old: Path) -> None:
    """Idempotent: `new` takes `live`'s place, `live` is set aside as `old` (each rename once)."""
    if not new.exists():
        return
    if live.exists() and not old.exists():
        os.rename(live, old)
        fsync_dir(live.parent)
    elif live.exists():  # cannot happen by construction (old is only made here, right before new moves in)
        shutil.rmtree(live) if live.is_dir() else live.unlink()
    killpoint("catchup.mid_install")
    os.rename(new, live)
    fsync_dir(live.parent)


def _install(lay: Layout, store: StateStore, state: StagingState, journal: CatchUpJournal) -> None:
    cu = _dir(lay)
    _swap_in(cu / "rocksdb.new", lay.green_dir / "rocksdb", cu / "rocksdb.old")
    if (cu / "green.sqlite").exists():
        # a -wal/-shm of the old green file must never be applied to the new one (SQLite would replay it)
        for suffix in ("-wal", "-shm", "-journal"):
            (lay.green_dir / (lay.db_name + suffix)).unlink(missing_ok=True)
    _swap_in(cu / "green.sqlite", lay.green_dir / lay.db_name, cu / "green-old.sqlite")
    if (cu / "source-new.sqlite").exists():
        os.replace(cu / "source-new.sqlite", prev_path(lay))
        fsync_dir(lay.work_dir)
    ownership.apply(lay.green_dir, ownership.record(lay.data_dir, lay.exclude))
    # Only blue's database part: other files changed since stage are still copied by promote.
    fp = state.blue_fingerprint or journal.blue_fingerprint
    new = journal.blue_fingerprint
    state.blue_fingerprint = fp.model_copy(update={"db_files": new.db_files, "sqlite": new.sqlite, "wal": new.wal,
                                                   "rocksdb": new.rocksdb})
    state.online_position = journal.position
    if not state.catch_ups or state.catch_ups[-1].started_at_unix != journal.stats.started_at_unix:
        state.catch_ups.append(journal.stats)
    if journal.keep_verified:
        state.green_fingerprint_verified = fpmod.take(lay.green_dir)
    # Counts and verified fingerprint go together: without a carried-on verify green must be verified again.
    state.green_row_counts_verified = journal.green_row_counts if journal.keep_verified else None
    store.save(state)
    store.audit("catch_up", f"green caught up to units rowid {journal.position.max_units_rowid} "
                f"({journal.stats.joints_rebuilt} joints rebuilt)", state.phase)
    shutil.rmtree(cu)
    fsync_dir(lay.work_dir)


SPACE_METHOD = ("copy = 2 x blue's SQLite file + -wal (the fresh snapshot and green's copy of it) + every non-.sst "
                "file of green's rocksdb/ (.sst files are hard-linked, 0 bytes); KV = "
                f"{snapshot.KV_BYTES_PER_SQLITE_BYTE} x the SQLite growth since the last snapshot (the keys of the new "
                "units); margin = 10% + 16 MiB (the WAL of the steps, RocksDB flushes and compactions)")


def estimate_space(lay: Layout) -> SpaceEstimate:
    """How many bytes a catch-up builds in `work/catchup/` (see SPACE_METHOD), and how many are free.

    Green's old files stay until the install renames the new ones in, so the build is all extra space."""
    blue_sql = sum((lay.data_dir / n).stat().st_size for n in (lay.db_name, lay.db_name + "-wal")
                   if (lay.data_dir / n).exists())
    kv_copy = linked = 0
    for rel in fpmod.walk_files(lay.green_dir):
        if rel.startswith("rocksdb/"):
            size = (lay.green_dir / rel).stat().st_size
            if rel.endswith(".sst"):
                linked += size
            else:
                kv_copy += size
    prev = prev_path(lay)
    grown = max(0, blue_sql - (prev.stat().st_size if prev.exists() else 0))
    copy = 2 * blue_sql + kv_copy
    kv = int(grown * snapshot.KV_BYTES_PER_SQLITE_BYTE)
    margin = (copy + kv) // 10 + 16 * snapshot.MiB
    st = os.statvfs(lay.work_dir if lay.work_dir.exists() else lay.staging_dir)
    return SpaceEstimate(copy_bytes=copy, linked_bytes=linked, kv_estimate_bytes=kv, margin_bytes=margin,
                         needed_bytes=copy + kv + margin, free_bytes=st.f_bavail * st.f_frsize)


def _short_of_space(lay: Layout, est: SpaceEstimate, what: str) -> OutOfSpaceError:
    return OutOfSpaceError(
        f"{what} for a catch-up in {_dir(lay)}: it {snapshot.describe_space(est)}. Green and blue are unchanged",
        f"free at least {max(est.needed_bytes - est.free_bytes, 0) / snapshot.MiB:.1f} MiB on the filesystem of "
        f"{lay.staging_dir}, then run `upgrade catch-up` (or `upgrade promote`) again")


def check_space(lay: Layout) -> SpaceEstimate:
    """Raise OutOfSpaceError, before anything is written, when a catch-up would not fit."""
    est = estimate_space(lay)
    if est.needed_bytes > est.free_bytes:
        raise _short_of_space(lay, est, "not enough space on the staging filesystem")
    return est


def _check_counts(prev: Path, source_new: Path, green_old: Path, green_new: Path) -> dict[str, int]:
    """Row counts: green's change per table equals blue's change per table (the steps are the same both times).

    Returns the new green's count of every table (promote's rollback baseline: no recount at promote)."""
    a, b, c, d = (greendiff.row_counts(p) for p in (prev, source_new, green_old, green_new))
    bad = [f"{t}: blue {a.get(t, 0)} -> {b.get(t, 0)}, green {c.get(t, 0)} -> {d.get(t, 0)}"
           for t in sorted(set(c) | set(d)) if t in b and d.get(t, 0) - c.get(t, 0) != b[t] - a.get(t, 0)]
    if bad:
        raise VerificationFailed("the caught-up green's row counts do not follow blue's:\n    " + "\n    ".join(bad[:20]),
                                 "green is unchanged; run `upgrade catch-up` again, or stage again")
    return d


def catch_up_green(lay: Layout, store: StateStore, state: StagingState,
                   progress: Progress | None = None, *, node_stopped: bool = False) -> CatchUpStats | None:
    """One catch-up (the caller holds the staging lock and ran recovery). None when blue has not moved.

    `node_stopped`: promote's last catch-up (the node is checked stopped): the snapshot is not throttled."""
    if not state.online or state.online_position is None:
        raise PreflightError("green was not staged online (`stage --online`): there is nothing to catch up from",
                             "stop the node and stage again: `upgrade stage`")
    if state.phase not in CATCHUP_PHASES:
        raise PreflightError(f"green cannot be caught up in phase {state.phase.value}",
                             "run `upgrade status` to see the next step")
    if state.green_unique_changes is not None:  # a forced rollback set the node's writes aside in green/
        raise PreflightError("green holds what the node wrote after promote (set aside by a forced rollback); a "
                             "catch-up would replace it", "copy it away, then `upgrade abort` and stage again")
    if not prev_path(lay).exists():
        raise PreflightError(f"the previous source snapshot {prev_path(lay)} is missing", "stage again: `upgrade stage`")
    assert state.blue_fingerprint is not None
    if not fpmod.diff_db(state.blue_fingerprint, fpmod.take(lay.data_dir, lay.exclude)):
        return None
    keep_verified = bool(state.last_verify and state.green_fingerprint_verified
                         and not fpmod.diff_db(state.green_fingerprint_verified, fpmod.take(lay.green_dir)))
    cu = _dir(lay)
    if cu.exists():
        shutil.rmtree(cu)
    check_space(lay)
    try:
        return _build_and_install(lay, store, state, keep_verified, progress, node_stopped)
    except Exception as exc:
        if not storage_errors.is_out_of_space(exc) or (cu / "journal.json").exists():
            raise  # after the journal the build is complete: recovery installs it
        shutil.rmtree(cu, ignore_errors=True)  # a half build is useless; free its space now
        raise _short_of_space(lay, estimate_space(lay), f"the staging filesystem filled up ({exc})") from exc


def _build_and_install(lay: Layout, store: StateStore, state: StagingState, keep_verified: bool,
                       progress: Progress | None, node_stopped: bool) -> CatchUpStats:
    cu = _dir(lay)
    cu.mkdir(parents=True)
    started = time.time()
    t0 = time.monotonic()
    tm = CatchUpTimings()
    fp_holder: list[fpmod.Fingerprint] = []
    with timed(tm, "snapshot"):
        _, position = snapshot.backup_sqlite_online(
            lay.data_dir / lay.db_name, cu / "source-new.sqlite", progress,
            before_snapshot=lambda: fp_holder.append(fpmod.take(lay.data_dir, lay.exclude)), node_stopped=node_stopped)
        fsync_file(cu / "source-new.sqlite")
    killpoint("catchup.after_snapshot")
    with timed(tm, "copy_sqlite"):
        shutil.copyfile(cu / "source-new.sqlite", cu / "green.sqlite")
        shutil.copymode(lay.green_dir / lay.db_name, cu / "green.sqlite")
    with timed(tm, "copy_kv"):
        kv_rels = [r for r in fpmod.walk_files(lay.green_dir) if r.startswith("rocksdb/")]
        snapshot.copy_tree_files(lay.green_dir, cu / "kvcopy", kv_rels, True)
        os.rename(cu / "kvcopy" / "rocksdb", cu / "rocksdb.new")
    old = state.online_position
    assert old is not None  # catch_up_green checked it
    stats = CatchUpStats(started_at_unix=started, from_units_rowid=old.max_units_rowid,
                         to_units_rowid=position.max_units_rowid, units_before=old.units, units_after=position.units,
                         snapshot_seconds=tm.snapshot, timings=tm)
    old_mrm = (state.catch_ups[-1].min_retrievable_mci_after if state.catch_ups
               else int((state.migration_report or {}).get("min_retrievable_mci") or 0))
    catch_up_copy(prev_path(lay), cu / "green.sqlite", cu / "rocksdb.new", source_version=state.source_version or 0,
                  target_version=state.target_version, light=state.light, genesis_unit=state.genesis_unit,
                  old_min_retrievable_mci=old_mrm, stats=stats, progress=progress)
    with timed(tm, "row_counts"):
        green_counts = _check_counts(prev_path(lay), cu / "source-new.sqlite", lay.green_dir / lay.db_name,
                                     cu / "green.sqlite")
    stats.row_counts_checked = len(green_counts)
    leftover = [p.name for p in cu.glob("green.sqlite-*")]
    if leftover:  # the build's connection is closed: everything must be in the main file, which alone moves
        raise PreflightError(f"the caught-up SQLite file left {', '.join(leftover)} after closing",
                             "run `upgrade catch-up` again")
    with timed(tm, "fsync"):
        for dirpath, _dirs, _files in os.walk(cu):
            fsync_dir(dirpath)
    stats.seconds = round(time.monotonic() - t0, 3)
    journal = CatchUpJournal(position=position, blue_fingerprint=fp_holder[0], keep_verified=keep_verified,
                             stats=stats, green_row_counts=green_counts)
    with signals.deferred():
        atomic_write_json(cu / "journal.json", journal.model_dump(mode="json"))
    killpoint("catchup.before_install")
    with timed(tm, "install"):
        _install(lay, store, state, journal)
    stats.seconds = round(time.monotonic() - t0, 3)  # the printed stats include the install (the journal's cannot)
    return stats


def lag(lay: Layout, state: StagingState) -> OnlineLag | None:
    """Blue's units rowid now vs the one green holds (online stages only); reads blue read-only."""
    if not state.online or state.online_position is None:
        return None
    rec = state.online_position.max_units_rowid
    try:
        conn = snapshot.open_readonly_quiet(lay.data_dir / lay.db_name)
        try:
            now = int(conn.execute("SELECT IFNULL(MAX(rowid), 0) FROM units").fetchone()[0])
            new = int(conn.execute("SELECT COUNT(*) FROM units WHERE rowid > ?", (rec,)).fetchone()[0])
        finally:
            conn.close()
    except apsw.Error as exc:
        return OnlineLag(recorded_units_rowid=rec, units_rowid_now=None, new_units=None,
                         catch_ups=len(state.catch_ups), note=f"cannot read blue: {exc}")
    return OnlineLag(recorded_units_rowid=rec, units_rowid_now=now, new_units=new, catch_ups=len(state.catch_ups),
                     note=f"blue has {new} unit(s) past the last {'catch-up' if state.catch_ups else 'snapshot'} "
                          f"(units rowid {now} now, {rec} recorded)")


def catch_up_command(lay: Layout, store: StateStore, state: StagingState, notes: list[str],
                     progress: Progress | None) -> CatchUpResult:
    """The body of `upgrade catch-up` (the lifecycle function in command.py takes the lock and recovers)."""
    stats = catch_up_green(lay, store, state, progress)
    base = dict(command="catch-up", data_dir=lay.data_dir, staging_dir=lay.staging_dir, recovered=notes,
                phase=state.phase, source_version=state.source_version, target_version=state.target_version)
    if stats is None:
        return CatchUpResult(**base, noop=True, message="blue has not changed since the last snapshot or catch-up; "
                             "nothing to do", next_step="upgrade promote (stop the node first)")
    return CatchUpResult(**base, stats=stats,
                         message=f"green caught up: units rowid {stats.from_units_rowid} -> {stats.to_units_rowid}, "
                                 f"{stats.joints_rebuilt} joints rebuilt, {stats.feed_pairs} feed pairs rewritten in "
                                 f"{stats.seconds:.1f}s",
                         next_step="upgrade catch-up again, or stop the node and `upgrade promote` (it catches up "
                                   "the rest)")
