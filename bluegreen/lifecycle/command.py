"""The `upgrade` commands as plain functions (the CLI is a thin layer over these).

Every command: resolves the layout, takes the staging lock, first finishes or undoes whatever an
interrupted run left in flight (`_recover`), then does its own work, moving the state through the
transition table. Re-running a command whose work is done is a no-op that says so. Blue (the data
dir) is only ever read, except by the swap in promote/rollback."""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from bluegreen.durable import atomic_write_json, atomic_write_text, fsync_dir, fsync_file
from bluegreen.errors import (
    BadInputError,
    BluegreenError,
    DriftError,
    MigrationError,
    OutOfSpaceError,
    PreflightError,
    SourceDataError,
    VerificationFailed,
)
from bluegreen.schema.steps import SUPPORTED_TARGETS
from bluegreen.lifecycle import fingerprint as fpmod
from bluegreen.lifecycle import greendiff, layout as layoutmod, noderunning, ownership, snapshot, storage_errors
from bluegreen.lifecycle import swap as swapmod
from bluegreen.lifecycle.killpoints import killpoint
from bluegreen.lifecycle.layout import Layout
from bluegreen.lifecycle.lock import StagingLock, is_locked, read_holder_pid
from bluegreen.lifecycle.results import (
    AbortResult,
    PhaseTiming,
    PromoteResult,
    RollbackResult,
    StageResult,
    StatusResult,
    VerifyResult,
)
from bluegreen.lifecycle.state import (
    Phase,
    Progress,
    StagingState,
    StateStore,
    SwapRecord,
    VerifyRecord,
    utcnow,
)
from bluegreen.lifecycle.verify_models import VerifyCheck, VerifyReport

ProgressFn = Callable[[str, int, int], None]
PROGRESS_SAVE_SECONDS = 5.0
KV_KEYS_FILE = "green-kv-keys-at-promote.txt"
CHECK_BLUE_UNCHANGED = "blue_unchanged_since_stage"
CHECK_NODE_COMPAT = "node_library_reads_green"
CHECK_OWNERSHIP = "green_ownership_is_blues"

# Phases in which green sits in the staging area, fully migrated.
GREEN_STAGED = {Phase.MIGRATED, Phase.VERIFIED, Phase.ROLLED_BACK}


# ---------------------------------------------------------------- helpers


@contextmanager
def _locked(lay: Layout, create: bool) -> Iterator[StateStore]:
    if create:
        try:
            lay.staging_dir.mkdir(exist_ok=True)
        except OSError as exc:  # read-only mount, immutable parent, permissions: the operator's to fix
            raise PreflightError(
                f"cannot create the staging area {lay.staging_dir}: {exc.strerror}",
                "make its parent writable, or give --staging-dir on a writable place of the data dir's "
                "filesystem and mount",
            ) from exc
        fsync_dir(lay.staging_dir.parent)
    with StagingLock(lay.lock_path):
        yield StateStore(lay.staging_dir)


def _new_state(lay: Layout, target_version: int, genesis_unit: str | None) -> StagingState:
    return StagingState(data_dir=lay.data_dir, staging_dir=lay.staging_dir, db_name=lay.db_name, light=lay.light,
                        target_version=target_version, genesis_unit=genesis_unit)


def _version(dir_: Path, db_name: str) -> int | None:
    h = fpmod.read_sqlite_header(dir_ / db_name)
    return h.user_version if h else None


def _du(path: Path) -> int:
    total = 0
    for dirpath, _d, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except FileNotFoundError:
                pass
    return total


def _rmtree(path: Path) -> bool:
    if path.exists():
        shutil.rmtree(path)
        return True
    return False


def _blue_drift(lay: Layout, state: StagingState) -> list[str]:
    if state.blue_fingerprint is None:
        return []
    return fpmod.diff_db(state.blue_fingerprint, fpmod.take(lay.data_dir, lay.exclude))


def _recover(lay: Layout, store: StateStore, state: StagingState | None) -> tuple[StagingState | None, list[str]]:
    """Finish or undo whatever an interrupted command left in flight. Returns the state and what was done."""
    notes: list[str] = []
    outcome = swapmod.recover(lay.swap_journal)
    if outcome is not None and state is not None:
        if outcome.op == "promote":
            if state.phase == Phase.PROMOTING:
                to = Phase.PROMOTED if outcome.result == "completed" else Phase.VERIFIED
                if to == Phase.PROMOTED:
                    state.last_swap = SwapRecord(op="promote", mechanism=outcome.mechanism, at=utcnow(),
                                                 recovered=True)
                store.transition(state, to, f"recovered interrupted promote: swap {outcome.result}")
        elif state.phase == Phase.ROLLING_BACK:
            to = Phase.ROLLED_BACK if outcome.result == "completed" else Phase.PROMOTED
            if to == Phase.ROLLED_BACK:
                state.last_swap = SwapRecord(op="rollback", mechanism=outcome.mechanism, at=utcnow(), recovered=True)
            store.transition(state, to, f"recovered interrupted rollback: swap {outcome.result}")
        notes.append(f"interrupted {outcome.op} found: the {outcome.mechanism} swap was {outcome.result}")
    if outcome is not None:
        swapmod.finish(lay.swap_journal)
    if state is None:
        return None, notes
    if state.phase == Phase.PROMOTING:  # killed before the swap journal was written: nothing moved
        store.transition(state, Phase.VERIFIED, "recovered interrupted promote: nothing had moved")
        notes.append("interrupted promote found before its swap started: undone")
    elif state.phase == Phase.ROLLING_BACK:
        store.transition(state, Phase.PROMOTED, "recovered interrupted rollback: nothing had moved")
        notes.append("interrupted rollback found before its swap started: undone")
    elif state.phase == Phase.SNAPSHOTTING:
        _rmtree(lay.staging_dir / "green.partial")
        _rmtree(lay.green_dir)
        state.last_error = "the snapshot was interrupted; its partial copy was removed"
        store.transition(state, Phase.FAILED, "recovered interrupted snapshot: partial copy removed")
        notes.append("interrupted snapshot found: partial copy removed; `upgrade stage` starts it again")
    elif state.phase == Phase.ABORTED:
        _finish_abort(lay)
        notes.append("interrupted abort found: finished removing the staging area")
        return None, notes
    if _rmtree(lay.staging_dir / "green.partial"):
        notes.append("leftover green.partial removed")
    return state, notes


# What abort keeps: the record of what happened (moved out of the staging area, never deleted).
KEPT_ON_ABORT = ("audit.log", "bluegreen.log", "reports")


def kept_aside_dir(lay: Layout) -> Path:
    """Where abort moves the audit log, the detailed log and the reports: a sibling of the staging area."""
    return lay.staging_dir.with_name(f"{lay.staging_dir.name}-aborted-{utcnow():%Y%m%dT%H%M%S%fZ}")


def _keep_aside(lay: Layout) -> Path | None:
    """Move audit.log, bluegreen.log and reports/ out of the staging area (same filesystem: renames)."""
    present = [lay.staging_dir / n for n in KEPT_ON_ABORT if (lay.staging_dir / n).exists()]
    if not present:
        return None
    dest = kept_aside_dir(lay)
    dest.mkdir()
    for p in present:
        os.rename(p, dest / p.name)
    fsync_dir(dest)
    fsync_dir(lay.staging_dir)
    fsync_dir(dest.parent)
    return dest


def _abort_message(lay: Layout, removed: list[str]) -> str:
    kept = next((r for r in removed if r.startswith("(kept:")), "")
    return (f"aborted: removed {lay.staging_dir}; the data dir was not touched"
            + (f"; {kept[1:-1]}" if kept else ""))


def _finish_abort(lay: Layout) -> list[str]:
    removed = []
    for sub in (lay.green_dir, lay.staging_dir / "green.partial", lay.work_dir):
        if _rmtree(sub):
            removed.append(str(sub))
        killpoint("abort.mid_remove")
    kept = _keep_aside(lay)
    if kept is not None:
        removed.append(f"(kept: audit log, log and reports moved to {kept})")
    for name in ("state.json", "state.json.tmp", "lock"):
        p = lay.staging_dir / name
        if p.exists():
            p.unlink()
            removed.append(str(p))
    try:
        lay.staging_dir.rmdir()
        removed.append(str(lay.staging_dir))
    except OSError:
        pass  # someone put files there: leave them
    fsync_dir(lay.staging_dir.parent)
    return removed


NEXT_STEP = {
    Phase.NONE: "upgrade stage",
    Phase.SNAPSHOTTING: "upgrade stage (restarts the interrupted snapshot)",
    Phase.SNAPSHOTTED: "upgrade stage (runs the migration on the copy)",
    Phase.MIGRATING: "upgrade stage (resumes the migration where its journal says)",
    Phase.MIGRATED: "upgrade verify",
    Phase.VERIFIED: "stop the node, then upgrade promote",
    Phase.PROMOTING: "any upgrade command (finishes or undoes the interrupted promote)",
    Phase.PROMOTED: "start the node on the upgraded data; if it misbehaves, stop it and run upgrade rollback",
    Phase.ROLLING_BACK: "any upgrade command (finishes or undoes the interrupted rollback)",
    Phase.ROLLED_BACK: "start the node on the old data; upgrade promote re-applies the staged upgrade",
    Phase.ABORTED: "upgrade stage",
    Phase.FAILED: "upgrade stage (starts again from a fresh snapshot)",
}


def _progress_saver(store: StateStore, state: StagingState, user: ProgressFn | None) -> ProgressFn:
    started = utcnow()
    last = [0.0]

    def report(step: str, done: int, total: int) -> None:
        now = time.monotonic()
        state.progress = Progress(step=step, done=done, total=total, started_at=started, updated_at=utcnow())
        if now - last[0] >= PROGRESS_SAVE_SECONDS or done == total:
            last[0] = now
            store.save(state)
        if user:
            user(step, done, total)

    return report


# ---------------------------------------------------------------- stage


def _preflight_stage(lay: Layout, target_version: int) -> tuple[int, list[str]]:
    """Read-only checks before anything is written. Returns (blue version, warnings)."""
    warnings: list[str] = []
    if target_version not in SUPPORTED_TARGETS:
        raise PreflightError(f"target version {target_version} is not supported "
                             f"(supported: {', '.join(map(str, sorted(SUPPORTED_TARGETS)))})",
                             "give a supported --target-version, or omit it")
    version = _version(lay.data_dir, lay.db_name)
    if version is None:
        raise SourceDataError(f"{lay.data_dir / lay.db_name} is not a SQLite database", "check the data dir")
    if version >= target_version:
        raise PreflightError(
            f"{lay.data_dir / lay.db_name} is already at version {version} (target {target_version}); "
            "nothing to upgrade",
            "no action needed",
        )
    usage = noderunning.detect(lay.data_dir, lay.exclude)
    if usage.running:
        kv = lay.data_dir / "rocksdb"
        if kv.is_dir() and any(kv.iterdir()):
            noderunning.ensure_stopped(lay.data_dir, lay.exclude)
        warnings.append("the node is running; the SQLite copy is consistent, but anything it writes from now on "
                        "is drift and promote will refuse it (stop the node before promote, re-stage if needed):\n"
                        + usage.describe())
    ownership.preflight_blue(lay.data_dir, lay.exclude)  # before copying: our copies can carry blue's owners
    return version, warnings


def stage(data_dir: Path | None = None, staging_dir: Path | None = None, *, target_version: int = 31,
          genesis_unit: str | None = None, progress: ProgressFn | None = None, jobs: int | None = None) -> StageResult:
    """Snapshot blue into the staging area and migrate the copy (resuming an interrupted run).

    `jobs`: worker processes of the KV fill (None: the usable cores; 1: all in this process)."""
    lay = layoutmod.resolve(data_dir, staging_dir)
    existing = StateStore(lay.staging_dir).load() if lay.staging_dir.exists() else None
    if existing is None:
        # Read-only preflight before creating anything at all.
        _preflight_stage(lay, target_version)
        snapshot.check_space(lay)
    with _locked(lay, create=True) as store:
        state, notes = _recover(lay, store, store.load())
        result = lambda **kw: StageResult(command="stage", data_dir=lay.data_dir,  # noqa: E731
                                          staging_dir=lay.staging_dir, recovered=notes, **kw)
        if state is not None and state.phase in (Phase.PROMOTED, Phase.PROMOTING, Phase.ROLLING_BACK):
            raise PreflightError(f"the upgrade is already promoted (phase {state.phase.value})",
                                 "upgrade rollback first if you want to stage again")
        if state is not None and state.phase in GREEN_STAGED:
            drift = _blue_drift(lay, state)
            if not drift:
                return result(noop=True, phase=state.phase, source_version=state.source_version,
                              target_version=state.target_version, migration=state.migration_report,
                              message=f"already staged (phase {state.phase.value}); nothing to do",
                              next_step=NEXT_STEP[state.phase])
            notes.append("blue changed since the last stage, so green is stale and is staged again:\n    "
                         + "\n    ".join(drift[:20]))
        if state is None:
            state = _new_state(lay, target_version, genesis_unit)
            store.save(state)
            store.audit("created", f"staging area for {lay.data_dir}")
        if genesis_unit:
            state.genesis_unit = genesis_unit
        snap = None
        warnings: list[str] = []
        if state.phase not in (Phase.SNAPSHOTTED, Phase.MIGRATING):
            snap, warnings = _stage_snapshot(lay, store, state, target_version, progress)
        try:
            report = _stage_migrate(lay, store, state, progress, jobs)
        except OSError as exc:  # e.g. the state file cannot be saved on a full disk
            if not storage_errors.is_out_of_space(exc):
                raise
            raise _out_of_space_migrating(lay, exc) from exc
        ownership.apply(lay.green_dir, ownership.record(lay.data_dir, lay.exclude))
        after = _blue_drift(lay, state)
        if after:
            warnings.append("blue changed while staging (the node is running?); promote will refuse until "
                            "you stop the node and stage again:\n    " + "\n    ".join(after[:20]))
        return result(phase=state.phase, source_version=state.source_version, target_version=state.target_version,
                      space=state.space, snapshot=snap, migration=report, warnings=warnings,
                      message=f"staged: green at {lay.green_dir} migrated from version {state.source_version} "
                              f"to {state.target_version}"
                              + (f"; space: {snapshot.describe_space(state.space)}" if snap and state.space else ""),
                      next_step=NEXT_STEP[state.phase])


def _stage_snapshot(lay: Layout, store: StateStore, state: StagingState, target_version: int,
                    progress: ProgressFn | None = None) -> tuple[snapshot.SnapshotReport, list[str]]:
    version, warnings = _preflight_stage(lay, target_version)
    state.space = snapshot.check_space(lay)
    state.source_version = version
    state.target_version = target_version
    state.blue_fingerprint = fpmod.take(lay.data_dir, lay.exclude)
    state.green_fingerprint_verified = state.green_fingerprint_promoted = None
    state.last_verify = None
    state.migration_report = None
    state.progress = None
    state.last_error = None
    # A fresh snapshot invalidates the engine journal, reports and any previous green.
    for sub in (lay.work_dir, lay.reports_dir, lay.green_dir):
        _rmtree(sub)
    store.transition(state, Phase.SNAPSHOTTING, f"snapshot of {lay.data_dir} (version {version})")
    try:
        snap = snapshot.take_snapshot(lay, progress)
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise  # left SNAPSHOTTING: the next command discards the partial copy
        _rmtree(lay.staging_dir / "green.partial")
        state.last_error = str(exc)
        store.transition(state, Phase.FAILED, f"snapshot failed: {getattr(exc, 'message', exc)}")
        raise
    problems = snapshot.quick_check(lay.green_dir / lay.db_name, progress)
    if problems:
        state.last_error = "quick_check: " + "; ".join(problems[:5])
        _rmtree(lay.green_dir)
        store.transition(state, Phase.FAILED, "source fails PRAGMA quick_check")
        raise SourceDataError(
            "the source database fails PRAGMA quick_check (checked on a page-for-page copy):\n    "
            + "\n    ".join(problems[:20]),
            "repair the node's database first (e.g. restore a backup); nothing was changed in the data dir",
        )
    killpoint("stage.after_snapshot")
    lay.work_dir.mkdir(exist_ok=True)
    store.transition(state, Phase.SNAPSHOTTED, f"copied {snap.files_copied} files, linked {snap.files_linked}")
    return snap, warnings


def _stage_migrate(lay: Layout, store: StateStore, state: StagingState,
                   progress: ProgressFn | None, jobs: int | None = None) -> dict | None:
    from bluegreen.engine.migrate import MigrationOptions, migrate_copy

    killpoint("stage.before_migration")
    lay.work_dir.mkdir(exist_ok=True)
    resumed = state.phase == Phase.MIGRATING
    store.transition(state, Phase.MIGRATING, "resuming migration" if resumed else "migrating the copy")
    options = MigrationOptions(target_version=state.target_version, light=state.light,
                               genesis_unit=state.genesis_unit, jobs=jobs)
    try:
        report = migrate_copy(lay.green_dir / lay.db_name, lay.green_dir / "rocksdb", lay.engine_journal, options,
                              _progress_saver(store, state, progress))
    except MigrationError as exc:
        rep = getattr(exc, "report", None)
        state.migration_report = rep.model_dump(mode="json") if rep is not None else None
        full = _every_failure(lay, exc, rep)
        state.last_error = full.message
        store.transition(state, Phase.FAILED, "migration failed: " + exc.message.splitlines()[0])
        raise full from exc
    except (KeyboardInterrupt, SystemExit):
        raise  # left MIGRATING: the next stage resumes from the engine's journal
    except BluegreenError as exc:  # e.g. the engine's SourceDataError: green is not promotable, say why
        state.last_error = str(exc)
        store.transition(state, Phase.FAILED, "migration failed: " + exc.message.splitlines()[0])
        raise
    except Exception as exc:
        raise _migration_storage_error(lay, store, state, exc) from exc
    killpoint("stage.after_migration")
    state.migration_report = report.model_dump(mode="json")
    store.transition(state, Phase.MIGRATED, f"migrated in {report.elapsed_seconds:.1f}s")
    return state.migration_report


MAX_FAILURES_IN_MESSAGE = 50


def _every_failure(lay: Layout, exc: MigrationError, rep: object) -> MigrationError:
    """The engine's error with every failing unit and its reason: in the message (the first
    MAX_FAILURES_IN_MESSAGE) and, all of them, in `<staging>/reports/migration-failures.txt`."""
    failures = list(getattr(rep, "failures", []) or [])
    total = int(getattr(rep, "failures_total", len(failures)) or len(failures))
    if not failures:
        return exc
    lines = [f"{f.unit}: {f.reason}: {f.detail}" for f in failures]
    lay.reports_dir.mkdir(exist_ok=True)
    path = lay.reports_dir / "migration-failures.txt"
    atomic_write_text(path, "\n".join(lines) + "\n")
    shown = lines[:MAX_FAILURES_IN_MESSAGE]
    more = total - len(shown)
    msg = (f"{total} unit(s) of the source cannot be migrated; the copy was left at its version, "
           f"blue is untouched:\n    " + "\n    ".join(shown)
           + (f"\n    ... and {more} more" if more > 0 else "") + f"\n  every failing unit: {path}")
    out = MigrationError(msg, exc.hint)
    out.report = rep  # type: ignore[attr-defined]
    return out


def _out_of_space_migrating(lay: Layout, exc: BaseException) -> OutOfSpaceError:
    """ENOSPC after the copy was made: the numbers the migration still needs, and that it resumes."""
    est = snapshot.estimate_space(lay)
    need = est.kv_estimate_bytes + est.margin_bytes
    return OutOfSpaceError(
        f"the staging filesystem filled up while migrating the copy ({exc}). Blue is untouched; the "
        f"migration is kept resumable in {lay.staging_dir}. It needs about {need / snapshot.MiB:.1f} MiB "
        f"free for the KV store and its margin (KV estimate {est.kv_estimate_bytes / snapshot.MiB:.1f} MiB + "
        f"margin {est.margin_bytes / snapshot.MiB:.1f} MiB); free now {est.free_bytes / snapshot.MiB:.1f} MiB",
        f"free at least {max(need - est.free_bytes, 0) / snapshot.MiB:.1f} MiB on the staging filesystem, "
        "then re-run `upgrade stage` (it resumes from the engine's journal)",
    )


def _migration_storage_error(lay: Layout, store: StateStore, state: StagingState, exc: Exception) -> Exception:
    """Turn a storage failure during the migration of the copy into our error (or return `exc` unchanged).

    Disk full: the engine's journal makes the run resumable, so the phase stays MIGRATING and the next
    `upgrade stage` resumes once there is room. A damaged rocksdb/ copied from blue: FAILED, like any
    damaged source."""
    if storage_errors.is_out_of_space(exc):
        err = _out_of_space_migrating(lay, exc)
        state.last_error = err.message
        try:
            store.save(state)  # best effort: the disk is full, and MIGRATING is already recorded
        except OSError:
            pass
        return err
    corrupt = storage_errors.rocksdb_corruption(exc)
    if corrupt is not None:
        err = SourceDataError(
            f"the node's KV store is damaged: RocksDB reports, on the page-for-page copy of "
            f"{lay.data_dir / 'rocksdb'}: {corrupt}",
            "repair or restore the node's rocksdb/ (or move it aside if the node is stuck at version 30: its "
            "keys are rebuilt from SQL), then re-run `upgrade stage`; nothing was changed in the data dir",
        )
        state.last_error = err.message
        store.transition(state, Phase.FAILED, "source KV store is damaged")
        return err
    return exc


# ---------------------------------------------------------------- verify


def _probe_node(node_modules: Path, lay: Layout, target_version: int) -> VerifyCheck:
    """Read green with the node's own npm libraries and compare with what we read ourselves."""
    from bluegreen.engine.kvwriter import iter_kv
    from bluegreen.nodecompat import kv_digest, run_node_probe

    lay.work_dir.mkdir(exist_ok=True)
    res = run_node_probe(lay.green_dir / "rocksdb", lay.green_dir / lay.db_name, node_modules, work_dir=lay.work_dir)
    ours = kv_digest(iter_kv(lay.green_dir / "rocksdb"))
    problems = []
    if not res.ok:
        problems.append(f"the node's libraries failed at {res.error_stage}: {res.error}")
    elif res.kv_digest != ours:
        problems.append(f"the node read {res.keys_read} keys whose digest differs from ours")
    if res.ok and res.sqlite_user_version != target_version:
        problems.append(f"the node's sqlite3 reads user_version {res.sqlite_user_version}")
    return VerifyCheck(name=CHECK_NODE_COMPAT, passed=not problems, checked=res.keys_read, failed=len(problems),
                       first_failures=problems,
                       detail=f"level-rocksdb {res.level_rocksdb_version}, rocksdb {res.rocksdb_version}, "
                              f"sqlite3 {res.sqlite3_version}")


def _node_modules_for_probe(lay: Layout, given: Path | None) -> tuple[Path | None, str | None]:
    """The node_modules to probe green with: the operator's choice, else the node app found next to the
    data dir (its package.json names the data dir). Returns (path or None, a note for the operator)."""
    if given is not None:
        return given, None
    from bluegreen.nodecompat import find_node_modules

    found = find_node_modules(lay.data_dir)
    if found is None:
        return None, ("the node's own libraries were not probed: no node app with level-rocksdb was found for "
                      f"{lay.data_dir.name}; pass --node-modules PATH to read green with them before promote")
    if shutil.which("node") is None:
        return None, (f"found the node's libraries in {found} but no `node` on PATH: the compatibility probe "
                      "did not run; run verify where the node's Node.js is on PATH")
    return found, f"probing green with the node's own libraries found in {found}"


def verify(data_dir: Path | None = None, staging_dir: Path | None = None, *, sample: int | None = None,
           node_modules: Path | None = None, genesis_unit: str | None = None,
           progress: ProgressFn | None = None, jobs: int | None = None) -> VerifyResult:
    """Check green against blue, add the blue-drift check, persist the report, move to VERIFIED or MIGRATED.

    `jobs`: worker processes of the units hash pass (None: the usable cores; 1: all in this process)."""
    from bluegreen.lifecycle.verify import verify_green

    lay = layoutmod.resolve(data_dir, staging_dir)
    if not lay.staging_dir.exists():
        raise PreflightError("nothing is staged", "run `upgrade stage` first")
    with _locked(lay, create=False) as store:
        state, notes = _recover(lay, store, store.load())
        if state is None or state.phase not in GREEN_STAGED:
            phase = state.phase.value if state else "NONE"
            if state is not None and state.phase == Phase.PROMOTED:
                raise PreflightError("green is already promoted (it is the live data dir now)",
                                     "nothing to verify; upgrade rollback returns to the old data")
            raise PreflightError(f"green is not ready to verify (phase {phase})",
                                 NEXT_STEP.get(state.phase if state else Phase.NONE, "upgrade stage"))
        drift = _blue_drift(lay, state)
        green_fp = fpmod.take(lay.green_dir)
        lv = state.last_verify
        if (lv is not None and lv.passed and not drift and state.green_fingerprint_verified is not None
                and not fpmod.diff_db(state.green_fingerprint_verified, green_fp)
                and (sample is not None or lv.sample is None)):
            report = VerifyReport.model_validate_json(Path(lv.report_path).read_bytes())
            return VerifyResult(command="verify", noop=True, passed=True, phase=state.phase, report=report,
                                report_path=lv.report_path, data_dir=lay.data_dir, staging_dir=lay.staging_dir,
                                recovered=notes, next_step=NEXT_STEP[state.phase],
                                message=f"already verified at {lv.finished_at:%Y-%m-%d %H:%M:%S} UTC and nothing "
                                        "changed since; nothing to do")
        warnings = []
        usage = noderunning.detect(lay.data_dir, lay.exclude)
        if usage.running:
            warnings.append("the node is running: verify reads blue while it may change, so blue-vs-green "
                            "comparisons can be inconsistent; stop the node for a reliable report:\n"
                            + usage.describe())
        report = verify_green(lay.data_dir, lay.green_dir, target_version=state.target_version, sample=sample,
                              genesis_unit=genesis_unit or state.genesis_unit, progress=progress, jobs=jobs)
        checks = list(report.checks)
        checks.append(VerifyCheck(
            name=CHECK_BLUE_UNCHANGED, passed=not drift,
            checked=len(state.blue_fingerprint.db_files) if state.blue_fingerprint else 0, failed=len(drift),
            first_failures=drift,
            detail="" if not drift else "blue changed since stage: run `upgrade stage` again (re-stage)"))
        node_modules, probe_note = _node_modules_for_probe(lay, node_modules)
        if probe_note:
            warnings.append(probe_note)
        if node_modules is not None:
            checks.append(_probe_node(node_modules, lay, state.target_version))
        checks.append(ownership.verify_check(CHECK_OWNERSHIP, lay.green_dir, lay.data_dir, lay.exclude))
        report = report.model_copy(update={"checks": checks, "passed": all(c.passed for c in checks),
                                           "finished_at": datetime.now(timezone.utc)})
        lay.reports_dir.mkdir(exist_ok=True)
        path = lay.reports_dir / f"verify-{report.finished_at:%Y%m%dT%H%M%S%f}.json"
        atomic_write_json(path, report.model_dump(mode="json"))
        # Fingerprint after the checks: verify itself may add files to green (rocksdict writes OPTIONS).
        state.green_fingerprint_verified = fpmod.take(lay.green_dir)
        state.last_verify = VerifyRecord(report_path=path, passed=report.passed, finished_at=report.finished_at,
                                         sample=sample, failed_checks=[c.name for c in report.failed_checks()])
        to = Phase.VERIFIED if report.passed else Phase.MIGRATED
        store.transition(state, to, f"verify {'passed' if report.passed else 'FAILED'}: {path.name}")
        failed = ", ".join(c.name for c in report.failed_checks())
        return VerifyResult(
            command="verify", ok=report.passed, passed=report.passed, phase=state.phase, report=report,
            report_path=path, data_dir=lay.data_dir, staging_dir=lay.staging_dir, recovered=notes,
            warnings=warnings, exit_code=0 if report.passed else VerificationFailed.exit_code,
            message=("verify passed" if report.passed else f"verify FAILED: {failed}") + f"; report {path}",
            next_step=NEXT_STEP[state.phase] if report.passed else (
                "upgrade stage (blue changed: re-stage)" if drift else
                "read the report; green is not promotable. Fix the cause, then upgrade abort + upgrade stage"))


# ---------------------------------------------------------------- promote

# The kernel refuses to rename: read-only mount, immutable dir (chattr +i), permissions, or a bind mount
# that makes the staging area look like the same filesystem while renames cannot cross it.
_CANNOT_RENAME = (errno.EPERM, errno.EACCES, errno.EROFS, errno.EXDEV, errno.EBUSY)


def _swap_or_refuse(op: str, lay: Layout, store: StateStore, state: StagingState, incoming: Path, outgoing: Path,
                    back: Phase) -> swapmod.SwapOutcome:
    """The swap; when the kernel refuses a rename, undo what moved and refuse clearly (state back to `back`)."""
    try:
        return swapmod.swap(op, lay.data_dir, incoming, outgoing, lay.swap_journal, lay.exclude,
                            lay.data_is_mountpoint)
    except OSError as exc:
        if exc.errno not in _CANNOT_RENAME or not lay.swap_journal.exists():
            raise
        undone = swapmod.recover(lay.swap_journal)  # puts back whatever moved (usually nothing)
        if undone is not None and undone.result == "completed":
            return undone  # every entry had already arrived: the swap did take effect
        swapmod.finish(lay.swap_journal)
        store.transition(state, back, f"{op} refused: the kernel refused a rename ({exc})")
        raise PreflightError(
            f"cannot {op}: a rename in the swap was refused ({exc}). The data dir {lay.data_dir} or its parent is "
            "read-only, immutable (chattr +i), on a read-only mount, or the staging area is on another mount; "
            "nothing was moved",
            f"make the data dir and its parent writable (chattr -i, remount read-write, same mount as "
            f"{lay.staging_dir}), then re-run `upgrade {op}`",
        ) from exc


def _sync_other_files(lay: Layout, state: StagingState, blue_now: fpmod.Fingerprint) -> tuple[list[str], list[str]]:
    """Copy blue's changed non-database files into green (a conf.json edit since stage survives)."""
    assert state.blue_fingerprint is not None
    changed, removed = fpmod.changed_other_files(state.blue_fingerprint, blue_now)
    for rel in changed:
        dst = lay.green_dir / rel
        tmp = dst.with_name(dst.name + ".bluegreen-tmp")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lay.data_dir / rel, tmp)
        shutil.copystat(lay.data_dir / rel, tmp)
        fsync_file(tmp)
        os.replace(tmp, dst)
        fsync_dir(dst.parent)
    for rel in removed:
        if (lay.green_dir / rel).exists():
            (lay.green_dir / rel).unlink()
            fsync_dir((lay.green_dir / rel).parent)
    return changed, removed


def promote(data_dir: Path | None = None, staging_dir: Path | None = None) -> PromoteResult:
    """Swap green in as the live data dir (blue kept in the staging area for rollback)."""
    lay = layoutmod.resolve(data_dir, staging_dir)
    if not lay.staging_dir.exists():
        raise PreflightError("nothing is staged", "run `upgrade stage` first")
    with _locked(lay, create=False) as store:
        state, notes = _recover(lay, store, store.load())
        res = lambda **kw: PromoteResult(command="promote", data_dir=lay.data_dir,  # noqa: E731
                                         staging_dir=lay.staging_dir, recovered=notes, **kw)
        if state is not None and state.phase == Phase.PROMOTED:
            return res(noop=True, phase=state.phase, mechanism=state.last_swap.mechanism if state.last_swap else None,
                       message="already promoted; nothing to do", next_step=NEXT_STEP[state.phase])
        if state is None or state.phase not in (Phase.VERIFIED, Phase.ROLLED_BACK, Phase.MIGRATED):
            phase = state.phase if state else Phase.NONE
            raise PreflightError(f"nothing promotable is staged (phase {phase.value})", NEXT_STEP[phase])
        lv = state.last_verify
        if lv is None:
            raise PreflightError("green has not been verified", "run `upgrade verify`")
        if not lv.passed:
            raise VerificationFailed(f"the latest verify of green failed ({', '.join(lv.failed_checks)}); "
                                     f"report {lv.report_path}", "green cannot be promoted; see the report")
        green_now = fpmod.take(lay.green_dir)
        changed = fpmod.diff_db(state.green_fingerprint_verified, green_now) if state.green_fingerprint_verified \
            else ["no fingerprint recorded at verify"]
        if changed:
            raise DriftError("green changed after its last verify:\n    " + "\n    ".join(changed[:20]),
                             "run `upgrade verify` again")
        blue_now = fpmod.take(lay.data_dir, lay.exclude)
        drift = fpmod.diff_db(state.blue_fingerprint, blue_now) if state.blue_fingerprint else []
        if drift:
            raise DriftError("blue (the live data dir) changed since stage, so green is stale:\n    "
                             + "\n    ".join(drift[:20]),
                             "stop the node and re-stage: `upgrade stage`, `upgrade verify`, then promote")
        noderunning.ensure_stopped(lay.data_dir, lay.exclude)
        owners = ownership.preflight_blue(lay.data_dir, lay.exclude)
        ownership.ensure_can_apply(lay.green_dir, owners)  # refuse before changing anything
        copied, removed = _sync_other_files(lay, state, blue_now)
        # Baseline for rollback: what green holds at the moment it goes live.
        state.green_row_counts_promoted = greendiff.row_counts(lay.green_dir / lay.db_name)
        state.green_kv_keys_promoted = greendiff.save_kv_keys(lay.green_dir / "rocksdb", lay.work_dir / "kv-probe",
                                                              lay.work_dir / KV_KEYS_FILE)
        ownership.save(owners, lay.work_dir / ownership.RECORD_NAME)  # rollback checks the old blue against it
        ownership.apply(lay.green_dir, owners)  # green becomes the data dir: blue's owners and modes
        state.green_fingerprint_promoted = fpmod.take(lay.green_dir)
        store.transition(state, Phase.PROMOTING, f"swapping {lay.green_dir} into {lay.data_dir}")
        killpoint("promote.before_swap")
        outcome = _swap_or_refuse("promote", lay, store, state, lay.green_dir, lay.previous_dir, Phase.VERIFIED)
        killpoint("promote.after_swap")
        state.last_swap = SwapRecord(op="promote", mechanism=outcome.mechanism, at=utcnow())
        store.transition(state, Phase.PROMOTED, f"swap by {outcome.mechanism}")
        swapmod.finish(lay.swap_journal)
        return res(phase=state.phase, mechanism=outcome.mechanism, copied_files=copied, removed_files=removed,
                   message=f"promoted: {lay.data_dir} now holds the version-{state.target_version} data "
                           f"(swap by {outcome.mechanism}); the old data is kept in {lay.previous_dir}",
                   next_step=NEXT_STEP[state.phase])


# ---------------------------------------------------------------- rollback


def rollback(data_dir: Path | None = None, staging_dir: Path | None = None, *, force: bool = False) -> RollbackResult:
    """Swap the old blue back in; refuses (unless `force`) when the node wrote to green since promote."""
    lay = layoutmod.resolve(data_dir, staging_dir)
    if not lay.staging_dir.exists():
        raise PreflightError("nothing was promoted: there is no staging area", "no action needed")
    with _locked(lay, create=False) as store:
        state, notes = _recover(lay, store, store.load())
        res = lambda **kw: RollbackResult(command="rollback", data_dir=lay.data_dir,  # noqa: E731
                                          staging_dir=lay.staging_dir, recovered=notes, **kw)
        if state is not None and state.phase == Phase.ROLLED_BACK:
            return res(noop=True, phase=state.phase, mechanism=state.last_swap.mechanism if state.last_swap else None,
                       message="already rolled back; nothing to do", next_step=NEXT_STEP[state.phase])
        if state is None or state.phase != Phase.PROMOTED:
            phase = state.phase if state else Phase.NONE
            raise PreflightError(f"nothing to roll back (phase {phase.value}): the data dir still holds the old data",
                                 NEXT_STEP[phase])
        if not (lay.previous_dir / lay.db_name).is_file():
            raise PreflightError(f"cannot roll back: the old data {lay.previous_dir} is missing (archived or removed "
                                 "by hand?); the data dir keeps the upgraded data",
                                 f"put the old data dir back at {lay.previous_dir} and re-run `upgrade rollback`, "
                                 "or keep the upgrade")
        noderunning.ensure_stopped(lay.data_dir, lay.exclude)
        changes = greendiff.compare(state.green_fingerprint_promoted or fpmod.Fingerprint(),
                                    state.green_row_counts_promoted, lay.work_dir / KV_KEYS_FILE,
                                    lay.data_dir, lay.db_name, lay.work_dir / "kv-probe")
        if changes.changed and not force:
            raise DriftError(
                "the node wrote to the upgraded data since promote; a rollback would lose:\n" + changes.describe(),
                "keep the upgraded data (start the node again), or run `upgrade rollback --force` to discard it",
            )
        restored = ownership.restore_before_rollback(lay.previous_dir, lay.work_dir / ownership.RECORD_NAME)
        store.transition(state, Phase.ROLLING_BACK,
                         "forced rollback discarding changes:\n" + changes.describe() if changes.changed else "")
        killpoint("rollback.before_swap")
        outcome = _swap_or_refuse("rollback", lay, store, state, lay.previous_dir, lay.green_dir, Phase.PROMOTED)
        killpoint("rollback.after_swap")
        state.last_swap = SwapRecord(op="rollback", mechanism=outcome.mechanism, at=utcnow())
        store.transition(state, Phase.ROLLED_BACK, f"swap by {outcome.mechanism}")
        swapmod.finish(lay.swap_journal)
        warn = [f"{restored} path(s) of the old data had lost their owner/group/mode and were restored"] \
            if restored else []
        if changes.changed:
            warn.append("changes made by the node after promote were discarded (they stay in the staged green):\n"
                        + changes.describe())
        return res(phase=state.phase, mechanism=outcome.mechanism, forced=force and changes.changed,
                   green_changes=changes, warnings=warn,
                   message=f"rolled back: {lay.data_dir} holds the old data again (swap by {outcome.mechanism}); "
                           f"the upgraded data is kept in {lay.green_dir}", next_step=NEXT_STEP[state.phase])


# ---------------------------------------------------------------- status / abort


def _timings(state: StagingState) -> list[PhaseTiming]:
    out: list[PhaseTiming] = []
    hist = state.history
    for i, h in enumerate(hist):
        end = hist[i + 1].at if i + 1 < len(hist) else utcnow()
        out.append(PhaseTiming(phase=h.to_phase, entered_at=h.at, seconds=(end - h.at).total_seconds()))
    return out


def status(data_dir: Path | None = None, staging_dir: Path | None = None) -> StatusResult:
    """Phase, versions, sizes, progress, timings, last verify, and what the next command would do."""
    lay = layoutmod.resolve(data_dir, staging_dir, require_db=False)
    base = dict(command="status", data_dir=lay.data_dir, staging_dir=lay.staging_dir)
    node = noderunning.detect(lay.data_dir, lay.exclude)
    dver = _version(lay.data_dir, lay.db_name)
    if not (lay.staging_dir / "state.json").exists() and not (lay.staging_dir / "swap-journal.json").exists():
        # A command that just took the lock may not have written its state yet: still say who runs.
        holder = read_holder_pid(lay.lock_path) if is_locked(lay.lock_path) else None
        return StatusResult(**base, phase=Phase.NONE, data_dir_version=dver, node=node, locked_by_pid=holder,
                            sizes={"data_dir": _du(lay.data_dir)},
                            message=f"nothing staged; the data dir is at version {dver}"
                                    + (f" (an upgrade command is running now, pid {holder})" if holder else ""),
                            next_step=NEXT_STEP[Phase.NONE])
    notes: list[str] = []
    locked_by = None
    if is_locked(lay.lock_path):
        locked_by = read_holder_pid(lay.lock_path)
        state = StateStore(lay.staging_dir).load()
    else:
        with _locked(lay, create=False) as store:
            state, notes = _recover(lay, store, store.load())
    if state is None:
        return StatusResult(**base, phase=Phase.NONE, data_dir_version=dver, node=node, recovered=notes,
                            sizes={"data_dir": _du(lay.data_dir)}, message="nothing staged",
                            next_step=NEXT_STEP[Phase.NONE])
    sizes = {"data_dir": _du(lay.data_dir)}
    for name, p in (("green", lay.green_dir), ("blue_previous", lay.previous_dir), ("staging_total", lay.staging_dir)):
        if p.exists():
            sizes[name] = _du(p)
    # Green is in the staging area, or is the data dir itself after promote.
    green_ver = _version(lay.green_dir, lay.db_name) if lay.green_dir.exists() else (
        dver if state.phase == Phase.PROMOTED else None)
    drift = _blue_drift(lay, state) if state.phase in GREEN_STAGED | {Phase.SNAPSHOTTED, Phase.MIGRATING} else []
    msg = f"phase {state.phase.value}"
    if locked_by:
        msg += f" (an upgrade command is running now, pid {locked_by})"
    if state.last_swap:
        msg += f"; last swap: {state.last_swap.op} by {state.last_swap.mechanism}"
        if state.last_swap.recovered:
            msg += " (finished by recovery)"
    nxt = NEXT_STEP[state.phase]
    if drift:
        nxt = "blue changed since stage: upgrade stage (re-stage), then verify and promote"
    elif state.phase in (Phase.MIGRATED,) and state.last_verify and not state.last_verify.passed:
        nxt = "the last verify failed: read its report; then upgrade abort and upgrade stage"
    return StatusResult(**base, phase=state.phase, staged=True, locked_by_pid=locked_by, recovered=notes,
                        source_version=state.source_version, target_version=state.target_version,
                        data_dir_version=dver, green_version=green_ver, sizes=sizes, progress=state.progress,
                        timings=_timings(state), last_verify=state.last_verify, last_swap=state.last_swap,
                        blue_drift=drift, node=node, last_error=state.last_error,
                        migration_report=state.migration_report, message=msg, next_step=nxt)


def abort(data_dir: Path | None = None, staging_dir: Path | None = None) -> AbortResult:
    """Remove green and the staging area (before promote only; never touches blue)."""
    lay = layoutmod.resolve(data_dir, staging_dir, require_db=False)
    base = dict(command="abort", data_dir=lay.data_dir, staging_dir=lay.staging_dir)
    if not lay.staging_dir.exists():
        return AbortResult(**base, noop=True, phase=Phase.NONE, message="nothing to abort: no staging area",
                           next_step=NEXT_STEP[Phase.NONE])
    with _locked(lay, create=False) as store:
        try:
            loaded = store.load()
        except BadInputError as exc:
            # A state file we cannot read (edited, or left by another version): abort is the way out, as long
            # as nothing says an upgrade is live. blue-previous/ or a swap journal mean it may be: refuse.
            if lay.previous_dir.exists() or lay.swap_journal.exists():
                raise PreflightError(
                    f"{exc.message}; and {lay.staging_dir} holds blue-previous/ or a swap journal, so the data dir "
                    "may hold upgraded data: abort will not guess",
                    "inspect the staging area by hand (blue-previous/ is the old data); never delete it blindly",
                ) from exc
            removed = _finish_abort(lay)
            return AbortResult(**base, phase=Phase.NONE, removed=removed,
                               recovered=[f"unreadable state file dropped: {exc.message}"],
                               message=_abort_message(lay, removed),
                               next_step=NEXT_STEP[Phase.NONE])
        state, notes = _recover(lay, store, loaded)
        if state is not None and state.phase == Phase.PROMOTED:
            raise PreflightError("the upgrade is promoted: the data dir holds the upgraded data and the old data "
                                 f"is in {lay.previous_dir}; abort would lose the way back",
                                 "upgrade rollback first (then abort), or keep the upgrade")
        if state is not None:
            store.transition(state, Phase.ABORTED, "abort: removing green and the staging area")
        removed = _finish_abort(lay)
    return AbortResult(**base, phase=Phase.NONE, recovered=notes, removed=removed,
                       message=_abort_message(lay, removed),
                       next_step=NEXT_STEP[Phase.NONE])
