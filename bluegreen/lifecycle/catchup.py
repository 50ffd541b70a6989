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
from bluegreen.durable import atomic_write_json, fsync_dir, fsync_file, fsync_tree
from bluegreen.engine.catchup import CatchUpStats, CatchUpTimings, catch_up_copy, timed
from bluegreen.engine.pagediff import PageDiffUnavailable, PageIndex, build_page_index, rowid_tables
from bluegreen.engine.rowpatch import Counts, PendingApply, RowPatch, RowPatchUnavailable, apply_row_patch, \
    build_row_patch, open_patch_source, settle_wal
from bluegreen.formats.networks import NETWORKS, Network, with_genesis
from bluegreen.errors import DriftError, OutOfSpaceError, PreflightError, VerificationFailed
from bluegreen.lifecycle import fingerprint as fpmod
from bluegreen.lifecycle import greendiff, ownership, snapshot, storage_errors
from bluegreen.lifecycle.killpoints import killpoint
from bluegreen.lifecycle.layout import Layout
from bluegreen.lifecycle.state import OnlinePosition, Phase, SpaceEstimate, StagingState, StateStore
from bluegreen.lifecycle.results import CatchUpResult, OnlineLag
from bluegreen.schema.patchplan import RowPatchPlan, row_patch_plan

Progress = Callable[[str, int, int], None]
PREV_NAME = "source-prev.sqlite"
PREV_INDEX_NAME = "source-prev.pages.json"  # its overflow pages' owners (engine/pagediff.py PageIndex)
COPY_ENV = "BLUEGREEN_CATCHUP_COPY"  # "1": never the row patch (tests of the copy catch-up)
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
    # "copy": green.sqlite was built whole and is renamed in; "patch": patch.sqlite is applied to green's file
    # (idempotent, so an install interrupted anywhere is simply done again)
    mode: str = "copy"
    src_is_blue: bool = False  # the patch was read from blue's own file (node stopped): no snapshot kept
    patch: RowPatch | None = None


def prev_path(lay: Layout) -> Path:
    """The previous source snapshot (pre-migration copy of blue's SQLite) kept for the next catch-up."""
    return lay.work_dir / PREV_NAME


def prev_index_path(lay: Layout) -> Path:
    """The page index of the previous source snapshot (built once, while the node may still run)."""
    return lay.work_dir / PREV_INDEX_NAME


def write_page_index(db: Path, dst: Path) -> PageIndex:
    """Build `db`'s PageIndex (a dbstat walk of the whole file) and write it durably to `dst`."""
    index = build_page_index(db, rowid_tables(db))
    atomic_write_json(dst, index.model_dump(mode="json"))
    return index


def load_prev_index(lay: Layout) -> PageIndex | None:
    """The previous snapshot's page index, if it was built for the file as it is now."""
    try:
        index = PageIndex.model_validate_json(prev_index_path(lay).read_bytes())
    except (OSError, ValueError):
        return None
    return index if prev_path(lay).exists() and index.matches(prev_path(lay)) else None


def ensure_prev_index(lay: Layout) -> PageIndex | None:
    """The previous snapshot's page index, built now when missing (None when the file cannot have one)."""
    index = load_prev_index(lay)
    if index is None and prev_path(lay).exists():
        try:
            index = write_page_index(prev_path(lay), prev_index_path(lay))
        except PageDiffUnavailable:
            return None
    return index


def refresh_prev(lay: Layout, store: StateStore, state: StagingState, db: Path | None = None) -> bool:
    """After promote's row patch read blue's own file, make the kept snapshot blue again (a copy of `db`,
    blue's SQLite by default), while blue still matches `state.prev_behind`. True when refreshed."""
    want = state.prev_behind
    if want is None:
        return False
    db = db or lay.data_dir / lay.db_name
    now = fpmod.take(db.parent, lay.exclude)
    if fpmod.diff_db(want, now):
        return False  # blue moved on: the snapshot cannot be made; a catch-up will ask for a new stage
    dst = prev_path(lay)
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    need = db.stat().st_size + 16 * snapshot.MiB
    if shutil.disk_usage(dst.parent).free < need:
        raise OutOfSpaceError(f"no room to refresh the kept snapshot {dst} from blue ({need // snapshot.MiB} MiB "
                              "needed)", f"free space on the filesystem of {dst.parent}")
    snapshot.backup_sqlite_online(db, tmp, node_stopped=True)
    fsync_file(tmp)
    if fpmod.diff_db(want, fpmod.take(db.parent, lay.exclude)):
        tmp.unlink(missing_ok=True)
        return False
    prev_index_path(lay).unlink(missing_ok=True)  # built again by the next catch-up (node running)
    os.replace(tmp, dst)
    fsync_dir(dst.parent)
    state.prev_behind = None
    store.save(state)
    store.audit("catch_up", "the kept source snapshot was refreshed from blue", state.phase)
    return True


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
    if not dst.exists():
        tmp = dst.with_name(dst.name + ".tmp")
        tmp.unlink(missing_ok=True)
        snapshot.backup_sqlite(lay.green_dir / lay.db_name, tmp)
        fsync_file(tmp)
        os.replace(tmp, dst)
        fsync_dir(dst.parent)
    # Its page index now, while the node runs (a dbstat walk: about 1.3 s at 1M units), not in promote's downtime.
    ensure_prev_index(lay)


def recover(lay: Layout, store: StateStore, state: StagingState | None) -> list[str]:
    """Finish an interrupted catch-up's install (journal written), or discard an unfinished build."""
    cu = _dir(lay)
    if not cu.exists():
        return []
    journal_path = cu / "journal.json"
    if state is None or not journal_path.exists():
        if (cu / "patch.sqlite").exists() and state is not None:
            settle_green(lay, store, state)  # before the build goes: a kill in between must find it again
        shutil.rmtree(cu)
        fsync_dir(cu.parent)
        return ["interrupted catch-up found before its build was complete: discarded (green unchanged)"]
    journal = CatchUpJournal.model_validate_json(journal_path.read_bytes())
    _install(lay, store, state, journal)
    return ["interrupted catch-up found after its build was complete: installed into green"]


def settle_green(lay: Layout, store: StateStore, state: StagingState) -> None:
    """A row patch's transaction on green died uncommitted (SQLite ignores it): the -wal it left goes again
    (`settle_wal`). Green's rows are unchanged, so when green matched its verified fingerprint before, the
    fingerprint is taken again (settling may also fold committed frames an earlier promote left in the -wal)."""
    green_db = lay.green_dir / lay.db_name
    if not Path(str(green_db) + "-wal").exists():
        return
    was_verified = bool(state.green_fingerprint_verified
                        and not fpmod.diff_db(state.green_fingerprint_verified, fpmod.take(lay.green_dir)))
    settle_wal(green_db)
    if was_verified:
        state.green_fingerprint_verified = fpmod.take(lay.green_dir)
        store.save(state)


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


def _install(lay: Layout, store: StateStore, state: StagingState, journal: CatchUpJournal,
             applied: bool = False) -> None:
    cu = _dir(lay)
    if journal.mode == "patch" and not applied:
        apply_row_patch(lay.green_dir / lay.db_name, cu / "patch.sqlite")  # idempotent: done again on recovery
        killpoint("catchup.after_patch")
    _swap_in(cu / "rocksdb.new", lay.green_dir / "rocksdb", cu / "rocksdb.old")
    if (cu / "green.sqlite").exists():
        # a -wal/-shm of the old green file must never be applied to the new one (SQLite would replay it)
        for suffix in ("-wal", "-shm", "-journal"):
            (lay.green_dir / (lay.db_name + suffix)).unlink(missing_ok=True)
    _swap_in(cu / "green.sqlite", lay.green_dir / lay.db_name, cu / "green-old.sqlite")
    if (cu / "source-new.sqlite").exists():
        if (cu / "source-new.pages.json").exists():
            os.replace(cu / "source-new.pages.json", prev_index_path(lay))
        else:
            prev_index_path(lay).unlink(missing_ok=True)
        os.replace(cu / "source-new.sqlite", prev_path(lay))
        fsync_dir(lay.work_dir)
    if journal.src_is_blue:
        state.prev_behind = journal.blue_fingerprint
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
    if state.prev_behind is not None:
        raise PreflightError("the kept source snapshot is older than green (promote caught green up from blue's "
                             "own file, then blue changed before the snapshot could be refreshed): green cannot "
                             "be caught up", "stop the node and stage again: `upgrade stage`")
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


def _plan(state: StagingState) -> RowPatchPlan:
    network = str((state.migration_report or {}).get("network") or "mainnet")
    return row_patch_plan(state.source_version or 0, state.target_version, "light" if state.light else "full",
                          network)


def _network(state: StagingState) -> Network | None:
    """The network stage found (its migration report), so a catch-up need not scan every unit for it."""
    report = state.migration_report or {}
    found = NETWORKS.get(str(report.get("network")))
    genesis = state.genesis_unit or report.get("genesis_unit")
    if found is None or not genesis:
        return None
    return with_genesis(found, str(genesis))


def _build_patch(lay: Layout, state: StagingState, plan: RowPatchPlan, index: PageIndex, src: Path,
                 src_is_blue: bool, stats: CatchUpStats, progress: Progress | None,
                 keep_verified: bool) -> tuple[RowPatch, PendingApply]:
    """The row patch into work/catchup/patch.sqlite and rocksdb.new (green's KV copied, then changed)."""
    cu = _dir(lay)
    tm = stats.timings
    with timed(tm, "copy_kv"):
        kv_rels = [r for r in fpmod.walk_files(lay.green_dir) if r.startswith("rocksdb/")]
        snapshot.copy_tree_files(lay.green_dir, cu / "kvcopy", kv_rels, True)
        os.rename(cu / "kvcopy" / "rocksdb", cu / "rocksdb.new")
    old_mrm = (state.catch_ups[-1].min_retrievable_mci_after if state.catch_ups
               else int((state.migration_report or {}).get("min_retrievable_mci") or 0))
    conn = open_patch_source(src, prev_path(lay), lay.green_dir / lay.db_name, cu / "patch.sqlite")
    started = time.monotonic()
    try:
        # green's counts are the verified ones while green is as verified (keep_verified)
        counts = Counts(old=index.row_counts, green=state.green_row_counts_verified if keep_verified else None)
        patch, pending = build_row_patch(conn, cu / "rocksdb.new", plan=plan, prev=prev_path(lay), src=src,
                                green=lay.green_dir / lay.db_name, index=index,
                                source_version=state.source_version or 0, light=state.light,
                                genesis_unit=state.genesis_unit, network=_network(state),
                                old_min_retrievable_mci=old_mrm, stats=stats, counts=counts,
                                patch=cu / "patch.sqlite", checkpoint=not src_is_blue, progress=progress)
    finally:
        conn.close()
    stats.seconds = round(time.monotonic() - started, 3)
    return patch, pending


def _discard_patch(lay: Layout) -> None:
    cu = _dir(lay)
    for name in ("patch.sqlite", "patch.sqlite-journal", "rocksdb.new", "kvcopy"):
        path = cu / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _build_and_install(lay: Layout, store: StateStore, state: StagingState, keep_verified: bool,
                       progress: Progress | None, node_stopped: bool) -> CatchUpStats:
    cu = _dir(lay)
    cu.mkdir(parents=True)
    started = time.time()
    t0 = time.monotonic()
    tm = CatchUpTimings()
    old = state.online_position
    assert old is not None  # catch_up_green checked it
    plan = _plan(state)
    index = None
    why_copy = plan.why_not
    if os.environ.get(COPY_ENV) == "1":
        why_copy = f"{COPY_ENV}=1"
    elif plan.possible:
        with timed(tm, "diff"):
            index = ensure_prev_index(lay)
        why_copy = "" if index is not None else "the kept snapshot has no page index"
    blue_db = lay.data_dir / lay.db_name
    if index is not None and node_stopped and snapshot.quiescent(blue_db):
        # the node is stopped and every commit is in blue's main file: read it directly (immutable), no copy
        fp = fpmod.take(lay.data_dir, lay.exclude)
        _, position = snapshot.pages_and_position(blue_db, started, fpmod.read_sqlite_header(blue_db),
                                                  method="blue's own file (node stopped)", immutable=True)
        stats = CatchUpStats(started_at_unix=started, from_units_rowid=old.max_units_rowid,
                             to_units_rowid=position.max_units_rowid, units_before=old.units,
                             units_after=position.units, timings=tm)
        try:
            patch, pending = _build_patch(lay, state, plan, index, blue_db, True, stats, progress, keep_verified)
        except RowPatchUnavailable as exc:
            _discard_patch(lay)
            why_copy = str(exc)
        else:
            try:
                moved = fpmod.diff_db(fp, fpmod.take(lay.data_dir, lay.exclude))
            except BaseException:
                pending.abandon()
                raise
            if moved:
                pending.abandon()
                raise DriftError("blue changed while promote's catch-up read it (was the node started?)",
                                 "stop the node, then run `upgrade promote` again")
            return _journal_and_install(lay, store, state, keep_verified, t0, position, fp, stats,
                                        mode="patch", src_is_blue=True, patch=patch, pending=pending)
    fp_holder: list[fpmod.Fingerprint] = []
    with timed(tm, "snapshot"):
        _, position = snapshot.backup_sqlite_online(
            lay.data_dir / lay.db_name, cu / "source-new.sqlite", progress,
            before_snapshot=lambda: fp_holder.append(fpmod.take(lay.data_dir, lay.exclude)), node_stopped=node_stopped)
        fsync_file(cu / "source-new.sqlite")
    killpoint("catchup.after_snapshot")
    if index is not None and not why_copy:  # not again when blue's own file already told it cannot be patched
        stats = CatchUpStats(started_at_unix=started, from_units_rowid=old.max_units_rowid,
                             to_units_rowid=position.max_units_rowid, units_before=old.units,
                             units_after=position.units, snapshot_seconds=tm.snapshot, timings=tm)
        try:
            patch, pending = _build_patch(lay, state, plan, index, cu / "source-new.sqlite", False, stats,
                                          progress, keep_verified)
        except RowPatchUnavailable as exc:
            _discard_patch(lay)
            why_copy = str(exc)
        else:
            try:
                if not node_stopped:  # the next catch-up's index; in promote it would be downtime (built later)
                    with timed(tm, "diff"):
                        write_page_index(cu / "source-new.sqlite", cu / "source-new.pages.json")
            except PageDiffUnavailable:
                pass
            except BaseException:
                pending.abandon()
                raise
            return _journal_and_install(lay, store, state, keep_verified, t0, position, fp_holder[0], stats,
                                        mode="patch", src_is_blue=False, patch=patch, pending=pending)
    with timed(tm, "copy_sqlite"):
        shutil.copyfile(cu / "source-new.sqlite", cu / "green.sqlite")
        shutil.copymode(lay.green_dir / lay.db_name, cu / "green.sqlite")
    with timed(tm, "copy_kv"):
        kv_rels = [r for r in fpmod.walk_files(lay.green_dir) if r.startswith("rocksdb/")]
        snapshot.copy_tree_files(lay.green_dir, cu / "kvcopy", kv_rels, True)
        os.rename(cu / "kvcopy" / "rocksdb", cu / "rocksdb.new")
    stats = CatchUpStats(started_at_unix=started, from_units_rowid=old.max_units_rowid,
                         to_units_rowid=position.max_units_rowid, units_before=old.units, units_after=position.units,
                         snapshot_seconds=tm.snapshot, timings=tm, copy_reason=why_copy)
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
    return _journal_and_install(lay, store, state, keep_verified, t0, position, fp_holder[0], stats,
                                mode="copy", green_counts=green_counts)


def _journal_and_install(lay: Layout, store: StateStore, state: StagingState, keep_verified: bool, t0: float,
                         position: OnlinePosition, blue_fp: fpmod.Fingerprint, stats: CatchUpStats, *, mode: str,
                         src_is_blue: bool = False, patch: RowPatch | None = None,
                         pending: PendingApply | None = None,
                         green_counts: dict[str, int] | None = None) -> CatchUpStats:
    """Sync the build, write the journal (the build is complete), install it. `pending`: the row patch's
    open transaction on green, committed right after the journal (a kill before: recovery applies the patch)."""
    cu = _dir(lay)
    tm = stats.timings
    try:
        with timed(tm, "fsync"):
            if patch is not None:
                fsync_file(cu / "patch.sqlite")
                fsync_tree(cu / "rocksdb.new")  # rocksdict writes its OPTIONS/config files without fsync
            for dirpath, _dirs, _files in os.walk(cu):
                fsync_dir(dirpath)
        stats.seconds = round(time.monotonic() - t0, 3)
        journal = CatchUpJournal(position=position, blue_fingerprint=blue_fp, keep_verified=keep_verified,
                                 stats=stats, green_row_counts=patch.green_row_counts if patch else green_counts,
                                 mode=mode, src_is_blue=src_is_blue, patch=patch)
        with signals.deferred():
            atomic_write_json(cu / "journal.json", journal.model_dump(mode="json"))
        killpoint("catchup.before_install")
    except BaseException:
        if pending is not None:
            pending.abandon()
        raise
    if pending is not None:
        with timed(tm, "apply_commit"):
            pending.commit()
        killpoint("catchup.after_patch")
    with timed(tm, "install"):
        _install(lay, store, state, journal, applied=pending is not None)
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
                                 f"{stats.seconds:.1f}s ("
                                 + (f"whole copy: {stats.copy_reason})" if stats.copy_reason else
                                    f"row patch: {sum(stats.changed_rows.values())} joint-table rows)"),
                         next_step="upgrade catch-up again, or stop the node and `upgrade promote` (it catches up "
                                   "the rest)")
