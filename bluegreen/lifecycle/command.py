"""The `upgrade` commands as plain functions (the CLI is a thin layer over these).

Every command opens the same way (`open_command`, its rules in `phases.COMMANDS`): resolves the layout,
takes the staging lock, first finishes or undoes whatever an interrupted run left in flight (`_recover`,
the phase's named recovery), checks the phase's requirements and the command's rule for the phase, then
does its own work, moving the state through the transition table. Re-running a command whose work is done is a no-op that says so. Blue (the data
dir) is only ever read, except by the swap in promote/rollback."""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bluegreen import signals
from bluegreen.durable import atomic_write_json, atomic_write_text, fsync_dir, fsync_file
from bluegreen.errors import (
    BadInputError,
    NodeRunningError,
    BluegreenError,
    DriftError,
    MigrationError,
    OutOfSpaceError,
    PreflightError,
    SourceDataError,
    UnsavedDataError,
    VerificationFailed,
)
from bluegreen.schema.steps import SUPPORTED_TARGETS
from bluegreen.lifecycle import fingerprint as fpmod
from bluegreen.lifecycle import greendiff, layout as layoutmod, noderunning, ownership, setaside, snapshot
from bluegreen.lifecycle import catchup, storage_errors
from bluegreen.lifecycle import swap as swapmod
from bluegreen.lifecycle.killpoints import killpoint
from bluegreen.engine.pool import WorkerDied
from bluegreen.lifecycle.layout import Layout
from bluegreen.lifecycle.lock import StagingLock, is_locked, read_holder_pid
from bluegreen.lifecycle.phases import (
    BLUE_PREVIOUS_REQUIREMENTS,
    COMMANDS,
    GREEN_BROKEN_HINT,
    GREEN_REQUIREMENTS,
    NEXT_STEP,
    PHASES,
    Allow,
    CommandSpec,
    Recovery,
    Refusal,
    Requirement,
    check_requirements,
    green_missing_words,
)
from bluegreen.lifecycle.results import (
    AbortResult,
    CatchUpResult,
    CleanupResult,
    PhaseTiming,
    PromoteResult,
    RollbackResult,
    StageResult,
    StatusResult,
    VerifyResult,
    WorkTiming,
)
from bluegreen.lifecycle.state import (
    AuditEntry,
    Phase,
    Progress,
    StagingState,
    StateStore,
    SwapRecord,
    VerifyRecord,
    in_flight,
    utcnow,
)
from bluegreen.lifecycle.target import TargetChoice, choose_target
from bluegreen.nodecompat.ocore import OcoreInfo
from bluegreen.ocore_facts import KV_DIR_NAME
from bluegreen.lifecycle.verify_models import VerifyCheck, VerifyReport

ProgressFn = Callable[[str, int, int], None]
PROGRESS_SAVE_SECONDS = 5.0
STEP_OTHER_FILES = "other files"  # promote's copy of blue's changed non-database files into green
CHECK_BLUE_UNCHANGED = "blue_unchanged_since_stage"
CHECK_NODE_COMPAT = "node_library_reads_green"
CHECK_NODE_OCORE = "node_ocore_accepts_target"
CHECK_OWNERSHIP = "green_ownership_is_blues"

# Phases in which green sits in the staging area, fully migrated (status compares blue with it in these).
GREEN_STAGED = {p for p, spec in PHASES.items() if Requirement.GREEN_ROCKSDB in spec.requires}


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


@dataclass
class CommandContext:
    """What `open_command` hands a command: the layout, the locked store, the recovered state and notes.

    `absent`: there is no staging area (the command's `no_staging_area` rule is a no-op; no lock taken).
    `noop`: the command's rule for this phase says its work is done. `locked_by`: status only, another
    command holds the lock (nothing was recovered). `unreadable`: abort only, the state file cannot be read."""

    name: str
    lay: Layout
    store: StateStore | None = None
    state: StagingState | None = None
    notes: list[str] = field(default_factory=list)
    absent: bool = False
    noop: bool = False
    locked_by: int | None = None
    unreadable: BadInputError | None = None


def _nothing_there(spec: CommandSpec, lay: Layout) -> bool:
    if spec.reports:  # status: a staging dir without state.json (a command just took the lock) is nothing yet
        return not (lay.staging_dir / "state.json").exists() and not lay.swap_journal.exists()
    return not spec.create and not lay.staging_dir.exists()


def check_command(spec: CommandSpec, lay: Layout, state: StagingState | None) -> Allow:
    """Refuse (our errors, today's messages) unless `spec` may run here: first the requirements of the phase
    it enforces (green/ gone, blue-previous/ changed), then its rule for the phase. Returns RUN or NOOP."""
    if state is not None and spec.enforces:
        reqs = PHASES[state.phase].requires
        for unmet in check_requirements(lay, state, reqs, only=spec.enforces):
            raise unmet.spec.refusal(lay, state, unmet.problems)
    rule = spec.rule(state.phase if state is not None else None)
    if isinstance(rule, Refusal):
        raise rule.error(lay, state.phase if state is not None else Phase.NONE)
    return rule


@contextmanager
def open_command(name: str, data_dir: Path | None, staging_dir: Path | None,
                 before_lock: Callable[[Layout], None] | None = None) -> Iterator[CommandContext]:
    """How every command opens (its rules in `phases.COMMANDS`): resolve the layout (refusing a data dir inside
    a staging area unless the command may run there), take the lock (creating the staging area for stage),
    finish or undo an interrupted predecessor (`_recover`), then check the phase's requirements and the
    command's rule for the phase (status never refuses). `before_lock`: read-only checks of stage before
    anything is created."""
    spec = COMMANDS[name]
    lay = layoutmod.resolve(data_dir, staging_dir, require_db=spec.require_db,
                            allow_inside_staging=spec.allow_inside_staging)
    if _nothing_there(spec, lay):
        if isinstance(spec.no_staging_area, Refusal):
            raise PreflightError(spec.no_staging_area.message, spec.no_staging_area.hint)
        yield CommandContext(name, lay, absent=True)
        return
    if before_lock is not None:
        before_lock(lay)
    if spec.reports and is_locked(lay.lock_path):  # a command runs now: read what it saved, recover nothing
        yield CommandContext(name, lay, state=StateStore(lay.staging_dir).load(),
                             locked_by=read_holder_pid(lay.lock_path))
        return
    with _locked(lay, create=spec.create) as store:
        try:
            loaded = store.load()
        except BadInputError as exc:
            if not spec.tolerates_unreadable_state:
                raise
            yield CommandContext(name, lay, store=store, unreadable=exc)
            return
        state, notes = _recover(lay, store, loaded)
        _refresh_kept_snapshot(name, lay, store, state, notes)
        ctx = CommandContext(name, lay, store=store, state=state, notes=notes)
        if not spec.reports:
            ctx.noop = check_command(spec, lay, state) is Allow.NOOP
        try:
            yield ctx
        except Exception:
            # promote's row patch read blue's own file and then failed: keep the snapshot a later catch-up
            # needs while blue is still as it read it (the node is about to be started again)
            if state is not None and state.prev_behind is not None and state.phase in catchup.CATCHUP_PHASES:
                try:
                    catchup.refresh_prev(lay, store, state)
                except Exception:  # noqa: BLE001 - best effort: the next command tries again
                    pass
            raise


def _new_state(lay: Layout, choice: TargetChoice, genesis_unit: str | None) -> StagingState:
    return StagingState(data_dir=lay.data_dir, staging_dir=lay.staging_dir, db_name=lay.db_name, light=lay.light,
                        target_version=choice.version, target_origin=choice.origin, genesis_unit=genesis_unit)


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


def _versions(state: StagingState | None) -> dict[str, int | None]:
    """source_version / target_version of the staged upgrade, for a result."""
    if state is None:
        return {}
    return {"source_version": state.source_version, "target_version": state.target_version}


def _blue_drift(lay: Layout, state: StagingState) -> list[str]:
    if state.blue_fingerprint is None:
        return []
    return fpmod.diff_db(state.blue_fingerprint, fpmod.take(lay.data_dir, lay.exclude))


def green_problem(lay: Layout, state: StagingState | None) -> str | None:
    """What is missing from the staging area that the state says is there (green/ removed or emptied by
    hand), or None: the phase's unmet green requirement (`phases.REQUIREMENTS`). The state cannot be trusted
    then: every command says so and points to a re-stage."""
    if state is None:
        return None
    unmet = check_requirements(lay, state, PHASES[state.phase].requires, only=GREEN_REQUIREMENTS)
    return green_missing_words(lay, state, unmet[0].problems) if unmet else None


# ---------------------------------------------------------------- recovery (an interrupted predecessor)


def _finish_swap(store: StateStore, state: StagingState, outcome: swapmod.SwapOutcome) -> None:
    """The swap journal says how far an interrupted promote/rollback got: finish it, or undo it."""
    if (outcome.op, state.phase) == ("promote", Phase.PROMOTING):
        to = Phase.PROMOTED if outcome.result == "completed" else Phase.VERIFIED
        if to == Phase.PROMOTED:
            state.last_swap = SwapRecord(op="promote", mechanism=outcome.mechanism, at=utcnow(), recovered=True)
        store.transition(state, to, f"recovered interrupted promote: swap {outcome.result}")
    elif outcome.op != "promote" and state.phase == Phase.ROLLING_BACK:
        to = Phase.ROLLED_BACK if outcome.result == "completed" else Phase.PROMOTED
        if to == Phase.ROLLED_BACK:
            state.last_swap = SwapRecord(op="rollback", mechanism=outcome.mechanism, at=utcnow(), recovered=True)
        store.transition(state, to, f"recovered interrupted rollback: swap {outcome.result}")


Recovered = tuple[StagingState | None, bool]  # (state, final: the staging area was finished off, stop here)


def _recover_nothing(lay: Layout, store: StateStore, state: StagingState, notes: list[str]) -> Recovered:
    return state, False


def _undo_unstarted_swap(lay: Layout, store: StateStore, state: StagingState, notes: list[str]) -> Recovered:
    # Still in flight after the journal's part: killed before the swap journal was written, nothing moved.
    if state.phase == Phase.PROMOTING:
        store.transition(state, Phase.VERIFIED, "recovered interrupted promote: nothing had moved")
        notes.append("interrupted promote found before its swap started: undone")
    elif state.phase == Phase.ROLLING_BACK:
        store.transition(state, Phase.PROMOTED, "recovered interrupted rollback: nothing had moved")
        notes.append("interrupted rollback found before its swap started: undone")
    return state, False


def _discard_snapshot(lay: Layout, store: StateStore, state: StagingState, notes: list[str]) -> Recovered:
    _rmtree(lay.staging_dir / "green.partial")
    _rmtree(lay.green_dir)
    state.last_error = "the snapshot was interrupted; its partial copy was removed"
    store.transition(state, Phase.FAILED, "recovered interrupted snapshot: partial copy removed")
    notes.append("interrupted snapshot found: partial copy removed; `upgrade stage` starts it again")
    return state, False


def _recover_abort(lay: Layout, store: StateStore, state: StagingState, notes: list[str]) -> Recovered:
    _finish_abort(lay)
    notes.append("interrupted abort found: finished removing the staging area")
    return None, True


def _recover_cleanup(lay: Layout, store: StateStore, state: StagingState, notes: list[str]) -> Recovered:
    try:  # final: finish it, there is no way back
        _, kept, _ = _finish_cleanup(lay, store, state)
    except OSError as exc:
        notes.append(f"interrupted cleanup found; it cannot finish ({exc}); fix that and re-run `upgrade cleanup`")
        return state, True
    notes.append("interrupted cleanup found: finished removing the old data and the staging area"
                 + (f" (record kept in {kept})" if kept else ""))
    return None, True


def _discard_kv_copy(lay: Layout, store: StateStore, state: StagingState, notes: list[str]) -> Recovered:
    gone = greendiff.discard_frozen_kv(lay.work_dir)
    if greendiff.KV_AT_PROMOTE_PARTIAL in gone:
        notes.append("interrupted promote found while it copied green's KV: the partial copy was removed")
    elif gone:
        notes.append("the KV copy of a rolled-back promote was removed (promote makes it again)")
    if state.green_kv_frozen is not None:
        state.green_kv_frozen = None
        store.save(state)
    return state, False


# The functions doing each named recovery of `phases.PHASES`.
RECOVERIES: dict[Recovery, Callable[[Layout, StateStore, StagingState, list[str]], Recovered]] = {
    Recovery.NONE: _recover_nothing,
    Recovery.RESUME_MIGRATION: _recover_nothing,  # stage resumes it; other commands leave it be
    Recovery.DISCARD_SNAPSHOT: _discard_snapshot,
    Recovery.FINISH_OR_UNDO_SWAP: _undo_unstarted_swap,
    Recovery.DISCARD_KV_COPY: _discard_kv_copy,
    Recovery.FINISH_ABORT: _recover_abort,
    Recovery.FINISH_CLEANUP: _recover_cleanup,
}
assert set(RECOVERIES) == set(Recovery)


def _recover(lay: Layout, store: StateStore, state: StagingState | None) -> tuple[StagingState | None, list[str]]:
    """Finish or undo whatever an interrupted command left in flight (the phase's `recovery`). Returns the
    state and what was done."""
    notes: list[str] = []
    outcome = swapmod.recover(lay.swap_journal)  # whatever the phase: the journal says how far a swap got
    if outcome is not None and state is not None \
            and PHASES[state.phase].recovery is Recovery.FINISH_OR_UNDO_SWAP:
        _finish_swap(store, state, outcome)
    if outcome is not None:
        notes.append(f"interrupted {outcome.op} found: the {outcome.mechanism} swap was {outcome.result}")
        swapmod.finish(lay.swap_journal)
    if state is None:
        return None, notes
    recovered, final = RECOVERIES[PHASES[state.phase].recovery](lay, store, state, notes)
    if final:
        return recovered, notes
    if _rmtree(lay.staging_dir / "green.partial"):
        notes.append("leftover green.partial removed")
    if recovered is not None:  # a killed catch-up: installed when complete, else discarded
        notes += catchup.recover(lay, store, recovered)
    return recovered, notes


def _refresh_kept_snapshot(name: str, lay: Layout, store: StateStore, state: StagingState | None,
                           notes: list[str]) -> None:
    """A promote killed after its row patch read blue's own file: make the kept snapshot blue again while blue
    is unchanged (the node is about to run again). Not for abort/cleanup, which delete it anyway."""
    if name in ("abort", "cleanup") or state is None or state.prev_behind is None \
            or state.phase not in catchup.CATCHUP_PHASES:
        return
    try:
        if catchup.refresh_prev(lay, store, state):
            notes.append("the kept source snapshot was refreshed from blue (promote had caught green up from "
                         "blue's own file)")
    except Exception as exc:  # noqa: BLE001 - best effort: this command's own work goes on
        notes.append(f"the kept source snapshot could not be refreshed from blue ({exc}); while it is not, a "
                     "catch-up after the node wrote again will ask to stage again")


# What abort keeps: the record of what happened (moved out of the staging area, never deleted).
KEPT_ON_ABORT = ("audit.log", "bluegreen.log", "reports")


# What cleanup keeps: the same, plus the final state.json (phase CLEANED_UP: the record that it finished).
KEPT_ON_CLEANUP = (*KEPT_ON_ABORT, "state.json")


def kept_aside_dir(lay: Layout, why: str = "aborted") -> Path:
    """Where abort (cleanup) moves the audit log, the detailed log and the reports: a sibling of the staging
    area, `<staging>-aborted-<ts>` (`<staging>-cleaned-<ts>`)."""
    return lay.staging_dir.with_name(f"{lay.staging_dir.name}-{why}-{utcnow():%Y%m%dT%H%M%S%fZ}")


def _keep_aside(lay: Layout, names: tuple[str, ...] = KEPT_ON_ABORT, why: str = "aborted") -> Path | None:
    """Move audit.log, bluegreen.log and reports/ out of the staging area (same filesystem: renames)."""
    present = [lay.staging_dir / n for n in names if (lay.staging_dir / n).exists()]
    if not present:
        return None
    dest = kept_aside_dir(lay, why)
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


def _progress_saver(store: StateStore, state: StagingState, user: ProgressFn | None,
                    command_name: str = "stage") -> ProgressFn:
    """Wrap `user`: keep the latest progress in the state and save it every few seconds (and at each step's
    start and end), so `upgrade status` can show it with an ETA while the command runs."""
    started = utcnow()
    last = [0.0]
    step_start: dict[str, datetime] = {}

    def report(step: str, done: int, total: int) -> None:
        now = time.monotonic()
        at = utcnow()
        new_step = step not in step_start
        step_started = step_start.setdefault(step, at)
        state.progress = Progress(step=step, done=done, total=total, started_at=started, updated_at=at,
                                  step_started_at=step_started, command=command_name)
        if now - last[0] >= PROGRESS_SAVE_SECONDS or done == total or new_step:
            last[0] = now
            store.save(state)
        if user:
            user(step, done, total)

    return report


# The steps each command reports, in order: status says "step k of n" beside the ETA of the current step.
# (No ETA over the whole command: the later steps' sizes are unknown until they start, and their shares
# measured on generated nodes, e.g. no data feeds at all, would not transfer to a mainnet node.)
COMMAND_STEPS: dict[str, tuple[str, ...]] = {
    "stage": ("snapshot sqlite", "snapshot files", "quick_check", "schema steps", "units", "data_feeds"),
    # ("foreign_key_check (blue)" only when green has violations: then blue's same tables are checked)
    "verify": ("integrity_check", "foreign_key_check", "row_counts", "kv_units",
               "kv_data_feeds", "balls", greendiff.STEP_ROW_COUNTS),
    # row counts: only for a green verified by an older bluegreen (verify takes them now)
    "promote": (STEP_OTHER_FILES, greendiff.STEP_ROW_COUNTS, ownership.STEP_OWNERSHIP, greendiff.STEP_KV_FREEZE,
                swapmod.STEP_SWAP),
    "rollback": (greendiff.STEP_ROW_COUNTS, greendiff.STEP_KV_KEYS, ownership.STEP_OWNERSHIP, swapmod.STEP_SWAP),
}


def step_position(p: Progress) -> tuple[int, int] | None:
    """(k, n): the reported step is the k-th of the n steps its command reports, when known."""
    steps = COMMAND_STEPS.get(p.command or "", ())
    return (steps.index(p.step) + 1, len(steps)) if p.step in steps else None


def progress_eta(p: Progress, now: datetime | None = None) -> float | None:
    """Seconds left in the reported step at the rate so far (None when there is no rate yet)."""
    start = p.step_started_at or p.started_at
    spent = (p.updated_at - start).total_seconds()
    if p.total <= 0 or p.done <= 0 or spent <= 0:
        return None
    if p.done >= p.total:
        return 0.0
    left = (p.total - p.done) * spent / p.done
    # The record is as old as its last save: time passed since then is already spent.
    since = ((now or utcnow()) - p.updated_at).total_seconds()
    return max(0.0, left - max(0.0, since))


# ---------------------------------------------------------------- stage


def _preflight_stage(lay: Layout, choice: TargetChoice, online: bool = False) -> tuple[int, list[str]]:
    """Read-only checks before anything is written. Returns (blue version, warnings)."""
    choice.raise_if_refused()
    target_version = choice.version
    warnings: list[str] = [choice.note] if choice.note else []
    if target_version not in SUPPORTED_TARGETS:  # choose_target refuses these already; belt and braces
        raise PreflightError(f"target version {target_version} is not supported "
                             f"(supported: {min(SUPPORTED_TARGETS)}..{max(SUPPORTED_TARGETS)})",
                             "give a supported --to N, or omit it")
    version = _version(lay.data_dir, lay.db_name)
    if version is None:
        raise SourceDataError(f"{lay.data_dir / lay.db_name} is not a SQLite database", "check the data dir")
    if version > target_version:
        raise PreflightError(
            f"{lay.data_dir / lay.db_name} is at version {version}, above the target {target_version} "
            f"({choice.origin}): a database cannot be downgraded",
            f"give --to N with N > {version} (at most {max(SUPPORTED_TARGETS)}), or no action is needed"
            if version < max(SUPPORTED_TARGETS) else "no action needed",
        )
    if version == target_version:
        raise PreflightError(
            f"{lay.data_dir / lay.db_name} is already at version {version} (target {target_version}); "
            "nothing to upgrade",
            "no action needed",
        )
    kv = lay.data_dir / "rocksdb"
    kv_in_use = kv.is_dir() and any(kv.iterdir())
    if online:
        # Online staging copies only SQLite consistently; a KV store written beside it cannot be copied at
        # one consistent point with it while the node runs.
        reason = None
        if version >= 31:
            reason = f"the source is at version {version}: it already keeps its joints in the KV store (rocksdb/)"
        elif kv_in_use:
            reason = (f"the source is at version {version} with a KV store in use (rocksdb/ holds data: a node "
                      "stuck at 30 half way through its KV fill)")
        if reason is not None:
            raise PreflightError(f"`stage --online` is only for SQLite-only sources below 31; {reason}, which "
                                 "cannot be copied consistently while the node writes",
                                 "the node must be stopped first: stop it, then run `upgrade stage` (without "
                                 "--online)")
    usage = noderunning.detect(lay.data_dir, lay.exclude)
    if usage.running:
        if kv_in_use:
            noderunning.ensure_stopped(lay.data_dir, lay.exclude)
        if online:
            warnings.append("online stage: the node is running; green is blue as of the snapshot position in "
                            "state.json, and what the node writes afterwards is not in green yet (promote "
                            "refuses until a catch-up command exists: stop the node and re-stage before promote):\n"
                            + usage.describe())
        else:
            warnings.append("the node is running; the SQLite copy is consistent, but anything it writes from now "
                            "on is drift and promote will refuse it (stop the node before promote, re-stage if "
                            "needed; `stage --online` copies in small steps that never hold the node's writers "
                            "back):\n" + usage.describe())
    ownership.preflight_blue(lay.data_dir, lay.exclude)  # before copying: our copies can carry blue's owners
    return version, warnings


def stage(data_dir: Path | None = None, staging_dir: Path | None = None, *, target_version: int | None = None,
          genesis_unit: str | None = None, progress: ProgressFn | None = None, online: bool = False,
          jobs: int | None = None) -> StageResult:
    """Snapshot blue into the staging area and migrate the copy (resuming an interrupted run).

    target_version: the schema version to reach (`--to`); None: the node's own (the VERSION of the ocore in
    the node program found for the data dir), else the highest known, with a warning. A fresh snapshot
    chooses the target again; resuming keeps the one in state.json (a different explicit one is refused).
    `online`: the node may keep running (sources below 31 without a KV store only): the SQLite copy is
    taken in small steps inside one read transaction and its position is recorded in state.json.
    `jobs`: worker processes of the KV fill (None: the usable cores; 1: all in this process)."""
    choice: TargetChoice | None = None

    def preflight_if_new(lay: Layout) -> None:
        nonlocal choice
        existing = StateStore(lay.staging_dir).load() if lay.staging_dir.exists() else None
        if existing is None:
            # Read-only preflight before creating anything at all.
            choice = choose_target(lay.data_dir, target_version)
            _preflight_stage(lay, choice, online)
            snapshot.check_space(lay)

    with open_command("stage", data_dir, staging_dir, before_lock=preflight_if_new) as ctx:
        lay, store, state, notes = ctx.lay, ctx.store, ctx.state, ctx.notes
        assert store is not None
        result = lambda **kw: StageResult(command="stage", data_dir=lay.data_dir,  # noqa: E731
                                          staging_dir=lay.staging_dir, recovered=notes, **kw)
        broken = green_problem(lay, state)
        if broken:  # green/ went away (by hand): start over from a fresh snapshot, the history stays
            assert state is not None
            store.audit("green_missing", f"{broken}; staging again from a fresh snapshot", state.phase)
            notes.append(f"{broken}; staging again from a fresh snapshot")
        if state is not None and state.phase in GREEN_STAGED and not broken:
            drift = _blue_drift(lay, state)
            if not drift:
                _refuse_other_target(state, target_version)
                return result(noop=True, phase=state.phase, source_version=state.source_version,
                              target_version=state.target_version, target_origin=state.target_origin,
                              migration=state.migration_report,
                              message=f"already staged (phase {state.phase.value}); nothing to do",
                              next_step=NEXT_STEP[state.phase])
            notes.append("blue changed since the last stage, so green is stale and is staged again:\n    "
                         + "\n    ".join(drift[:20]))
        if state is None and not lay.staging_dir.exists():
            # The recovery finished an interrupted abort or cleanup, which removed the staging area (and the
            # lock we hold): start afresh in a new run rather than here.
            raise PreflightError("an interrupted command was finished: " + "; ".join(notes),
                                 "run `upgrade stage` again")
        resuming = state is not None and state.phase in (Phase.SNAPSHOTTED, Phase.MIGRATING) and not broken
        if resuming:
            _refuse_other_target(state, target_version)  # type: ignore[arg-type]
        elif choice is None:  # a fresh snapshot in an existing staging area: choose the target now
            choice = choose_target(lay.data_dir, target_version)
            choice.raise_if_refused()
        if state is None:
            assert choice is not None
            state = _new_state(lay, choice, genesis_unit)
            store.save(state)
            store.audit("created", f"staging area for {lay.data_dir}")
        if state.green_unique_changes is not None and lay.green_dir.is_dir() \
                and state.phase not in (Phase.SNAPSHOTTED, Phase.MIGRATING):
            # A fresh snapshot replaces green/: the node's writes a forced rollback set aside there would go.
            raise UnsavedDataError(
                f"blue changed since the last stage, so stage would take a fresh copy and replace {lay.green_dir}, "
                "which holds what the node wrote to the upgraded data after promote (set aside there by "
                "`upgrade rollback --force`); that data exists nowhere else:\n" + state.green_unique_changes.describe(),
                f"keep it: copy {lay.green_dir} away first; or delete it: `upgrade abort --yes`, then `upgrade stage`",
            )
        if genesis_unit:
            state.genesis_unit = genesis_unit
        snap = None
        warnings: list[str] = []
        if not resuming:
            assert choice is not None
            snap, warnings = _stage_snapshot(lay, store, state, choice, progress, online)
        try:
            report = _stage_migrate(lay, store, state, progress, jobs)
        except OSError as exc:  # e.g. the state file cannot be saved on a full disk
            if not storage_errors.is_out_of_space(exc):
                raise
            raise _out_of_space_migrating(lay, exc) from exc
        ownership.apply(lay.green_dir, ownership.record(lay.data_dir, lay.exclude))
        after = _blue_drift(lay, state)
        voided = getattr(report, "voided_at_min_retrievable_mci", None) or []
        if voided:
            warnings.append(f"{len(voided)} final-bad unit(s) at min_retrievable_mci were voided in the data by an "
                            "older ocore but read as whole by its reader (ocore's own migration crashes on them); "
                            "written in their voided form, which hashes to the unit: " + ", ".join(voided[:10]))
        if after and state.online:
            pos = state.online_position
            warnings.append("online stage: blue moved on after the snapshot (expected while the node runs); "
                            f"green holds blue up to units rowid {pos.max_units_rowid if pos else '?'}. `upgrade "
                            "catch-up` brings green up to blue (any number of times); promote, with the node "
                            "stopped, runs a last one")
        elif after:
            warnings.append("blue changed while staging (the node is running?); promote will refuse until "
                            "you stop the node and stage again:\n    " + "\n    ".join(after[:20]))
        return result(phase=state.phase, source_version=state.source_version, target_version=state.target_version,
                      target_origin=state.target_origin, space=state.space, snapshot=snap, migration=report, warnings=warnings,
                      message=f"staged: green at {lay.green_dir} migrated from version {state.source_version} "
                              f"to {state.target_version}"
                              + (f"; space: {snapshot.describe_space(state.space)}" if snap and state.space else ""),
                      next_step=NEXT_STEP[state.phase])


def _refuse_other_target(state: StagingState, target_version: int | None) -> None:
    """An explicit target that differs from the staged one would be silently ignored: refuse instead."""
    if target_version is not None and target_version != state.target_version:
        raise PreflightError(
            f"green is already staged for version {state.target_version} ({state.target_origin or 'recorded'}; "
            f"phase {state.phase.value}), not {target_version}",
            f"upgrade abort, then upgrade stage --to {target_version}; or re-run upgrade stage without --to",
        )


def _stage_snapshot(lay: Layout, store: StateStore, state: StagingState, choice: TargetChoice,
                    progress: ProgressFn | None = None,
                    online: bool = False) -> tuple[snapshot.SnapshotReport, list[str]]:
    version, warnings = _preflight_stage(lay, choice, online)
    state.online = online
    state.online_position = None
    state.space = snapshot.check_space(lay)
    state.source_version = version
    state.target_version = choice.version
    state.target_origin = choice.origin
    state.blue_fingerprint = fpmod.take(lay.data_dir, lay.exclude)
    state.green_fingerprint_verified = state.green_fingerprint_promoted = None
    state.green_row_counts_verified = state.green_kv_frozen = None
    state.blue_previous_record = state.green_unique_changes = None
    state.last_verify = None
    state.migration_report = None
    state.progress = None
    state.last_error = None
    # A fresh snapshot invalidates the engine journal, reports and any previous green.
    for sub in (lay.work_dir, lay.reports_dir, lay.green_dir):
        _rmtree(sub)
    store.transition(state, Phase.SNAPSHOTTING, f"snapshot of {lay.data_dir} (version {version})")
    progress = _progress_saver(store, state, progress)  # status shows the copy's progress too
    try:
        def fingerprint_at_snapshot() -> None:
            # online: blue just before the snapshot's read transaction (after our open made its -wal/-shm), so
            # any commit of the node after the snapshot is drift that promote refuses
            state.blue_fingerprint = fpmod.take(lay.data_dir, lay.exclude)

        snap = snapshot.take_snapshot(lay, progress, online=online,
                                      before_snapshot=fingerprint_at_snapshot if online else None)
        state.online_position = snap.online
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise  # left SNAPSHOTTING: the next command discards the partial copy
        signals.reraise_if_interrupt(exc)
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
    where = (f"; online, at units rowid {snap.online.max_units_rowid} ({snap.online.units} units, "
             f"{snap.online.steps} steps, {snap.online.busy_retries} busy retries)" if snap.online else "")
    store.transition(state, Phase.SNAPSHOTTED, f"copied {snap.files_copied} files, linked {snap.files_linked}"
                     + where)
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
    if state.online:
        catchup.keep_source_copy(lay)  # the pre-migration snapshot: what the first catch-up compares against
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
    except (KeyboardInterrupt, SystemExit, WorkerDied):
        raise  # left MIGRATING: the next stage resumes from the engine's journal (a killed worker lost no chunk)
    except BluegreenError as exc:  # e.g. the engine's SourceDataError: green is not promotable, say why
        state.last_error = str(exc)
        store.transition(state, Phase.FAILED, "migration failed: " + exc.message.splitlines()[0])
        raise
    except Exception as exc:
        signals.reraise_if_interrupt(exc)  # left MIGRATING, as for a plain interrupt
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
    msg = (f"{total} unit(s) of the source cannot be migrated; the staged copy was left unfinished (no KV "
           f"installed, not promotable) and blue is untouched:\n    " + "\n    ".join(shown)
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


def _ocore_check(ocore: OcoreInfo, target_version: int) -> VerifyCheck:
    """Does the node's ocore accept a database at the target? ocore refuses one above its VERSION."""
    v = ocore.schema_version
    problems = []
    if v is None:
        problems.append(f"cannot tell which schema version the node's ocore reads: {ocore.problem}")
    elif v < target_version:
        problems.append(f"the node's {ocore.describe()} refuses a database at version {target_version}: it reads "
                        f"up to {v} (ocore: 'user version {target_version} > {v}: looks like you are using a new "
                        "database with an old client'); update the node program, or abort and stage --to "
                        f"{max(v, min(SUPPORTED_TARGETS))}")
    detail = ocore.describe() + (f"; at start it migrates {target_version} -> {v} itself"
                                 if v is not None and v > target_version else "")
    return VerifyCheck(name=CHECK_NODE_OCORE, passed=not problems, checked=1, failed=len(problems),
                       first_failures=problems, detail=detail)


def _node_ocore(lay: Layout, given: Path | None) -> OcoreInfo | None:
    """The ocore of the node verify probes with: beside --node-modules, else the node app found."""
    from bluegreen.nodecompat import find_node_app, ocore_dir_for, read_ocore

    if given is not None:
        d = ocore_dir_for(given)
        return read_ocore(d) if d is not None else None
    app = find_node_app(lay.data_dir)
    return app.ocore if app is not None else None


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


PROBE_SKIPPED = ("the node compatibility probe was skipped (--no-node-probe): nothing checked that the node's own "
                 "libraries (level-rocksdb, sqlite3) read green")


def _no_probe_check(why: str) -> VerifyCheck:
    """--require-node-probe and no probe could run: a failed check, so verify fails and promote refuses."""
    return VerifyCheck(name=CHECK_NODE_COMPAT, passed=False, checked=0, failed=1, first_failures=[why],
                       detail="--require-node-probe: no node probe could run; pass --node-modules DIR with `node` "
                              "on PATH")


def verify(data_dir: Path | None = None, staging_dir: Path | None = None, *, sample: int | None = None,
           node_modules: Path | None = None, genesis_unit: str | None = None, force: bool = False,
           require_node_probe: bool = False, no_node_probe: bool = False,
           progress: ProgressFn | None = None, jobs: int | None = None) -> VerifyResult:
    """Check green against blue, add the blue-drift check, persist the report, move to VERIFIED or MIGRATED.

    `force` re-runs a verify that already passed; `node_modules` (given now) always runs the node probe;
    `require_node_probe` fails verify when no probe can run; `no_node_probe` skips it with a warning.
    `jobs`: worker processes of the units hash pass (None: the usable cores; 1: all in this process)."""
    from bluegreen.lifecycle.verify import verify_green

    if no_node_probe and (require_node_probe or node_modules is not None):
        raise BadInputError("--no-node-probe contradicts " + ("--require-node-probe" if require_node_probe
                                                              else "--node-modules"), "give only one of them")
    with open_command("verify", data_dir, staging_dir) as ctx:
        lay, store, state, notes = ctx.lay, ctx.store, ctx.state, ctx.notes
        assert store is not None and state is not None
        drift = _blue_drift(lay, state)
        green_fp = fpmod.take(lay.green_dir)
        lv = state.last_verify
        # Nothing to do only when nothing changed and the operator asks for nothing the last run did not do.
        if (not force and node_modules is None and lv is not None and lv.passed and not drift
                and state.green_fingerprint_verified is not None
                and not fpmod.diff_db(state.green_fingerprint_verified, green_fp)
                and (sample is not None or lv.sample is None) and Path(lv.report_path).is_file()):
            report = VerifyReport.model_validate_json(Path(lv.report_path).read_bytes())
            probed = any(c.name == CHECK_NODE_COMPAT and c.passed for c in report.checks)
            if probed or not require_node_probe:
                return VerifyResult(command="verify", noop=True, passed=True, phase=state.phase, report=report,
                                    source_version=state.source_version, target_version=state.target_version,
                                    report_path=lv.report_path, data_dir=lay.data_dir, staging_dir=lay.staging_dir,
                                    recovered=notes, next_step=NEXT_STEP[state.phase],
                                    message=f"already verified at {lv.finished_at:%Y-%m-%d %H:%M:%S} UTC and "
                                            "nothing changed since; nothing to do (`upgrade verify --force` runs "
                                            "it again)")
        warnings = []
        usage = noderunning.detect(lay.data_dir, lay.exclude)
        if usage.running:
            warnings.append("the node is running: verify reads blue while it may change, so blue-vs-green "
                            "comparisons can be inconsistent; stop the node for a reliable report:\n"
                            + usage.describe())
        verify_started = utcnow()
        # online stage: green against the snapshot it was built from (blue itself moves on)
        source_dir = catchup.verify_source_dir(lay) if state.online and catchup.prev_path(lay).exists() \
            else lay.data_dir
        saver = _progress_saver(store, state, progress, "verify")
        report = verify_green(source_dir, lay.green_dir, target_version=state.target_version, sample=sample,
                              genesis_unit=genesis_unit or state.genesis_unit, progress=saver, jobs=jobs)
        checks = list(report.checks)
        checks.append(VerifyCheck(
            # online stage: blue is expected to move on; catch-up and promote bring green up to it
            name=CHECK_BLUE_UNCHANGED, passed=not drift or state.online,
            checked=len(state.blue_fingerprint.db_files) if state.blue_fingerprint else 0, failed=len(drift),
            first_failures=drift,
            detail="" if not drift else "blue moved on since the online snapshot: `upgrade catch-up`, or promote "
                   "(node stopped) catches up" if state.online else
                   "blue changed since stage: run `upgrade stage` again (re-stage)"))
        ocore = _node_ocore(lay, node_modules)
        if no_node_probe:
            node_modules, probe_note = None, PROBE_SKIPPED
        else:
            node_modules, probe_note = _node_modules_for_probe(lay, node_modules)
        if probe_note:
            warnings.append(probe_note)
        if node_modules is not None:
            checks.append(_probe_node(node_modules, lay, state.target_version))
        elif require_node_probe:
            checks.append(_no_probe_check(probe_note or "no node probe could run"))
        if ocore is not None:  # the node's ocore found (with its libraries or alone): will it open green?
            checks.append(_ocore_check(ocore, state.target_version))
        checks.append(ownership.verify_check(CHECK_OWNERSHIP, lay.green_dir, lay.data_dir, lay.exclude))
        report = report.model_copy(update={"checks": checks, "passed": all(c.passed for c in checks),
                                           "warnings": [*report.warnings, *warnings],
                                           "source_version": state.source_version,
                                           "finished_at": datetime.now(timezone.utc)})
        lay.reports_dir.mkdir(exist_ok=True)
        path = lay.reports_dir / f"verify-{report.finished_at:%Y%m%dT%H%M%S%f}.json"
        atomic_write_json(path, report.model_dump(mode="json"))
        # Green is final once verified (promote refuses when it changed since): its row counts now are the ones
        # it goes live with, so promote copies them into rollback's baseline instead of counting with the node
        # stopped. A failed verify leaves none (promote refuses it anyway).
        state.green_row_counts_verified = (greendiff.row_counts(lay.green_dir / lay.db_name, saver)
                                           if report.passed else None)
        # Fingerprint after the checks: verify itself may add files to green (rocksdict writes OPTIONS).
        state.green_fingerprint_verified = fpmod.take(lay.green_dir)
        state.last_verify = VerifyRecord(report_path=path, passed=report.passed, finished_at=report.finished_at,
                                         sample=sample, failed_checks=[c.name for c in report.failed_checks()],
                                         started_at=verify_started)
        to = Phase.VERIFIED if report.passed else Phase.MIGRATED
        store.transition(state, to, f"verify {'passed' if report.passed else 'FAILED'}: {path.name}")
        failed = ", ".join(c.name for c in report.failed_checks())
        return VerifyResult(
            command="verify", ok=report.passed, passed=report.passed, phase=state.phase, report=report,
            source_version=state.source_version, target_version=state.target_version,
            report_path=path, data_dir=lay.data_dir, staging_dir=lay.staging_dir, recovered=notes,
            warnings=warnings, exit_code=0 if report.passed else VerificationFailed.exit_code,
            message=("verify passed" if report.passed else f"verify FAILED: {failed}") + f"; report {path}",
            next_step=NEXT_STEP[state.phase] if report.passed else (
                "upgrade stage (blue changed: re-stage)" if drift else
                "upgrade verify --node-modules DIR (the node's node_modules, with `node` on PATH)"
                if failed == CHECK_NODE_COMPAT and node_modules is None else
                "read the report; green is not promotable. Fix the cause, then upgrade abort + upgrade stage"))


# ---------------------------------------------------------------- promote

# The kernel refuses to rename: read-only mount, immutable dir (chattr +i), permissions, or a bind mount
# that makes the staging area look like the same filesystem while renames cannot cross it.
_CANNOT_RENAME = (errno.EPERM, errno.EACCES, errno.EROFS, errno.EXDEV, errno.EBUSY)


def _swap_or_refuse(op: str, lay: Layout, store: StateStore, state: StagingState, incoming: Path, outgoing: Path,
                    back: Phase, progress: ProgressFn | None = None) -> swapmod.SwapOutcome:
    """The swap; when the kernel refuses a rename, undo what moved and refuse clearly (state back to `back`)."""
    try:
        return swapmod.swap(op, lay.data_dir, incoming, outgoing, lay.swap_journal, lay.exclude,
                            lay.data_is_mountpoint, progress)
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


def _sync_other_files(lay: Layout, state: StagingState, blue_now: fpmod.Fingerprint,
                      progress: ProgressFn | None = None) -> tuple[list[str], list[str]]:
    """Copy blue's changed non-database files into green (a conf.json edit since stage survives)."""
    assert state.blue_fingerprint is not None
    changed, removed = fpmod.changed_other_files(state.blue_fingerprint, blue_now)
    for i, rel in enumerate(changed):
        if progress:
            progress(STEP_OTHER_FILES, i, len(changed) + len(removed))
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
    if progress:
        progress(STEP_OTHER_FILES, len(changed) + len(removed), len(changed) + len(removed))
    return changed, removed


class _Laps:
    """Wall time of consecutive parts of a command: `lap(name)` ends the part called `name` (and returns when)."""

    def __init__(self, start: float) -> None:
        self.last = start
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str) -> float:
        now = time.monotonic()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self.last, 4)
        self.last = now
        return now

    def after(self, name: str) -> dict[str, float]:
        """The parts that came after the part `name` (e.g. the downtime: after the checks found the node stopped)."""
        names = list(self.seconds)
        return {k: self.seconds[k] for k in names[names.index(name) + 1:]} if name in names else dict(self.seconds)


def promote(data_dir: Path | None = None, staging_dir: Path | None = None, *,
            progress: ProgressFn | None = None) -> PromoteResult:
    """Swap green in as the live data dir (blue kept in the staging area for rollback).

    progress(step, done, total) for its parts: other files, (row counts: only when an older bluegreen verified
    green), ownership, kv copy at promote, swap. Its work with the node stopped is O(files), never O(rows or keys):
    the rollback baseline is the row counts verify took and a hard-linked copy of green's KV."""
    entered = time.monotonic()
    with open_command("promote", data_dir, staging_dir) as ctx:
        lay, store, state, notes = ctx.lay, ctx.store, ctx.state, ctx.notes
        assert store is not None and state is not None
        res = lambda **kw: PromoteResult(command="promote", data_dir=lay.data_dir,  # noqa: E731
                                         staging_dir=lay.staging_dir, recovered=notes, **_versions(state), **kw)
        if ctx.noop:  # PROMOTED
            return res(noop=True, phase=state.phase, mechanism=state.last_swap.mechanism if state.last_swap else None,
                       message="already promoted; nothing to do", next_step=NEXT_STEP[state.phase])
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
        caught_up = None
        stopped_at = None
        lap = _Laps(entered)  # every part of promote; the downtime is the parts after "checks"
        if drift and state.online and catchup.prev_path(lay).exists():
            # online stage: with the node stopped, a last catch-up makes green blue's final state
            noderunning.ensure_stopped(lay.data_dir, lay.exclude)
            stopped_at = lap("checks")  # downtime: from here to the end of the swap
            caught_up = catchup.catch_up_green(lay, store, state, _progress_saver(store, state, progress, "promote"),
                                               node_stopped=True)
            lap("catch_up")
            blue_now = fpmod.take(lay.data_dir, lay.exclude)
            drift = fpmod.diff_db(state.blue_fingerprint, blue_now) if state.blue_fingerprint else []
            green_now = fpmod.take(lay.green_dir)
            if state.green_fingerprint_verified is None or fpmod.diff_db(state.green_fingerprint_verified, green_now):
                raise DriftError("green changed after its last verify (before this catch-up)",
                                 "run `upgrade verify` again, then promote")
        if drift:
            if state.online:
                pos = state.online_position
                raise DriftError(
                    "blue (the live data dir) moved on after the online stage's snapshot (green holds blue up to "
                    f"units rowid {pos.max_units_rowid if pos else '?'}) and "
                    + ("the catch-up did not bring green up to it" if caught_up else
                       f"the previous snapshot a catch-up compares against ({catchup.prev_path(lay)}) is missing")
                    + ", so green is stale:\n    " + "\n    ".join(drift[:20]),
                    "stop the node and re-stage: `upgrade stage`, `upgrade verify`, then promote")
            raise DriftError("blue (the live data dir) changed since stage, so green is stale:\n    "
                             + "\n    ".join(drift[:20]),
                             "stop the node and re-stage: `upgrade stage`, `upgrade verify`, then promote")
        noderunning.ensure_stopped(lay.data_dir, lay.exclude)
        if stopped_at is None:
            stopped_at = lap("checks")
        else:
            lap("checks after catch-up")  # fingerprints of blue and green after it, the node-stopped check
        owners = ownership.preflight_blue(lay.data_dir, lay.exclude)
        ownership.ensure_can_apply(lay.green_dir, owners)  # refuse before changing anything
        began = utcnow()  # the baselines below are the promote's work too (status counts them in PROMOTING)
        saver = _progress_saver(store, state, progress, "promote")  # the swap itself: not saved (no write then)
        copied, removed = _sync_other_files(lay, state, blue_now, saver)
        lap("other files")
        # Baseline for rollback: what green holds at the moment it goes live. Green is exactly as verified (or
        # as the catch-up above left it, counted by the catch-up's own check), so its counts are known already.
        counts = state.green_row_counts_verified
        if counts is None:  # verified by an older bluegreen, which did not keep them
            counts = greendiff.row_counts(lay.green_dir / lay.db_name, saver)
        state.green_row_counts_promoted = dict(counts)
        lap("row counts")
        ownership.save(owners, lay.work_dir / ownership.RECORD_NAME)  # rollback checks the old blue against it
        ownership.apply(lay.green_dir, owners, progress=saver)  # green becomes the data dir: blue's owners
        lap("ownership")
        # After ownership (the copies' files carry green's final owners); complete and durable before the swap.
        state.green_kv_frozen = greendiff.freeze_kv(lay.green_dir / KV_DIR_NAME, lay.work_dir, saver)
        state.green_kv_keys_promoted = None
        (lay.work_dir / greendiff.LEGACY_KV_KEYS_FILE).unlink(missing_ok=True)  # an older bluegreen's baseline
        lap("kv copy")
        state.green_fingerprint_promoted = fpmod.take(lay.green_dir)
        lap("fingerprint")
        # What rollback may swap back in: blue exactly as it is set aside (renames keep inodes and mtimes).
        state.blue_previous_record = setaside.record(lay.data_dir, utcnow(), lay.exclude)
        lap("set-aside record")
        state.green_unique_changes = None  # green goes live: whatever it holds is the live data again
        store.transition(state, Phase.PROMOTING, f"swapping {lay.green_dir} into {lay.data_dir}",
                         work_started_at=began)
        killpoint("promote.before_swap")
        outcome = _swap_or_refuse("promote", lay, store, state, lay.green_dir, lay.previous_dir, Phase.VERIFIED,
                                  progress)
        killpoint("promote.after_swap")
        state.last_swap = SwapRecord(op="promote", mechanism=outcome.mechanism, at=utcnow())
        store.transition(state, Phase.PROMOTED, f"swap by {outcome.mechanism}")
        swapmod.finish(lay.swap_journal)
        lap("swap")
        downtime = round(time.monotonic() - stopped_at, 3)
        parts = lap.after("checks")
        largest = ", ".join(f"{k} {v:.2f}s" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])[:3])
        return res(phase=state.phase, mechanism=outcome.mechanism, copied_files=copied, removed_files=removed,
                   catch_up=caught_up, downtime_seconds=downtime, timings=lap.seconds, downtime_parts=parts,
                   message=f"promoted: {lay.data_dir} now holds the version-{state.target_version} data "
                           f"(swap by {outcome.mechanism}); the old data is kept in {lay.previous_dir}"
                           + (f"; caught up {caught_up.joints_rebuilt} joints with the node stopped"
                              if caught_up else "") + f"; downtime {downtime:.2f}s ({largest})",
                   next_step=NEXT_STEP[state.phase])


def catch_up(data_dir: Path | None = None, staging_dir: Path | None = None, *,
             progress: ProgressFn | None = None) -> CatchUpResult:
    """Bring an online-staged green up to blue's current state (the node may keep running); repeatable."""
    with open_command("catch-up", data_dir, staging_dir) as ctx:
        lay, store, state, notes = ctx.lay, ctx.store, ctx.state, ctx.notes
        assert store is not None and state is not None
        return catchup.catch_up_command(lay, store, state, notes, _progress_saver(store, state, progress, "catch-up"))


# ---------------------------------------------------------------- rollback

FORCED_ROLLBACK_NOTE = "forced rollback discarding changes"  # audit.log note; abort reads it when state.json cannot


def blue_previous_problems(lay: Layout, state: StagingState) -> list[str]:
    """How blue-previous/ differs from what promote set aside (empty = rollback may swap it back in): the
    unmet blue-previous requirement (`phases.REQUIREMENTS`)."""
    unmet = check_requirements(lay, state, PHASES[Phase.PROMOTED].requires, only=BLUE_PREVIOUS_REQUIREMENTS)
    return unmet[0].problems if unmet else []


def rollback(data_dir: Path | None = None, staging_dir: Path | None = None, *, force: bool = False,
             progress: ProgressFn | None = None) -> RollbackResult:
    """Swap the old blue back in; refuses (unless `force`) when the node wrote to green since promote.

    progress(step, done, total) for its long parts: row counts (only when green's SQLite changed since promote),
    kv keys (only when its KV files changed: a merge of the KV copy made at promote with the KV now), ownership,
    swap."""
    with open_command("rollback", data_dir, staging_dir) as ctx:  # refuses unless blue-previous/ is intact
        lay, store, state, notes = ctx.lay, ctx.store, ctx.state, ctx.notes
        assert store is not None and state is not None
        res = lambda **kw: RollbackResult(command="rollback", data_dir=lay.data_dir,  # noqa: E731
                                          staging_dir=lay.staging_dir, recovered=notes, **_versions(state), **kw)
        if ctx.noop:  # ROLLED_BACK
            return res(noop=True, phase=state.phase, mechanism=state.last_swap.mechanism if state.last_swap else None,
                       message="already rolled back; nothing to do", next_step=NEXT_STEP[state.phase])
        noderunning.ensure_stopped(lay.data_dir, lay.exclude)
        began = utcnow()  # the comparison below is the rollback's work too (status counts it in ROLLING_BACK)
        saver = _progress_saver(store, state, progress, "rollback")  # the swap itself: not saved (no write then)
        frozen = state.green_kv_frozen
        changes = greendiff.compare(state.green_fingerprint_promoted or fpmod.Fingerprint(),
                                    state.green_row_counts_promoted, frozen.path if frozen else None,
                                    lay.data_dir, lay.db_name, lay.work_dir / "kv-probe", saver,
                                    legacy_keys=lay.work_dir / greendiff.LEGACY_KV_KEYS_FILE)
        if changes.changed and not force:
            raise DriftError(
                "the node wrote to the upgraded data since promote; a rollback would lose:\n" + changes.describe(),
                "keep the upgraded data (start the node again), or run `upgrade rollback --force` to discard it",
            )
        restored = ownership.restore_before_rollback(lay.previous_dir, lay.work_dir / ownership.RECORD_NAME,
                                                     saver)
        # Saved with the transition, so an interrupted rollback finished by recovery keeps it too.
        state.green_unique_changes = changes if changes.changed else None
        store.transition(state, Phase.ROLLING_BACK,
                         FORCED_ROLLBACK_NOTE + ":\n" + changes.describe() if changes.changed else "",
                         work_started_at=began)
        killpoint("rollback.before_swap")
        outcome = _swap_or_refuse("rollback", lay, store, state, lay.previous_dir, lay.green_dir, Phase.PROMOTED,
                                  progress)
        killpoint("rollback.after_swap")
        state.last_swap = SwapRecord(op="rollback", mechanism=outcome.mechanism, at=utcnow())
        store.transition(state, Phase.ROLLED_BACK, f"swap by {outcome.mechanism}")
        swapmod.finish(lay.swap_journal)
        # Green is no longer live: its KV copy from promote is no baseline any more (a kill here: recovery ends it)
        greendiff.discard_frozen_kv(lay.work_dir)
        warn = [f"{restored} path(s) of the old data had lost their owner/group/mode and were restored"] \
            if restored else []
        if state.prev_behind is not None and not changes.changed:
            # promote caught green up from blue's own file: the next catch-up needs blue's snapshot, and blue is
            # exactly as promote read it until the node starts again (a kill here: the next command does it)
            try:
                catchup.refresh_prev(lay, store, state)
            except Exception as exc:  # noqa: BLE001 - the rollback itself is done
                warn.append(f"the kept source snapshot could not be refreshed from blue ({exc}): a later catch-up "
                            "will ask to stage again once the node wrote")
        if changes.changed:
            warn.append("changes made by the node after promote were discarded (they stay in the staged green):\n"
                        + changes.describe())
        return res(phase=state.phase, mechanism=outcome.mechanism, forced=force and changes.changed,
                   green_changes=changes, warnings=warn,
                   message=f"rolled back: {lay.data_dir} holds the old data again (swap by {outcome.mechanism}); "
                           f"the upgraded data is kept in {lay.green_dir}", next_step=NEXT_STEP[state.phase])


# ---------------------------------------------------------------- status / abort


def _verify_started_at(lv: VerifyRecord) -> datetime | None:
    """When the last verify began: recorded in the state, or (older state files) read from its report."""
    if lv.started_at is not None:
        return lv.started_at
    try:
        return VerifyReport.model_validate_json(Path(lv.report_path).read_bytes()).started_at
    except (OSError, ValueError):
        return None


def _timings(state: StagingState, running: bool = False,
             now: datetime | None = None) -> tuple[list[PhaseTiming], list[WorkTiming]]:
    """Every history entry with its time in the phase, and the work apart from the waits.

    A history entry lasts until the next one, so the time between two commands (the operator reading the
    stage result before running verify) is a wait, not the duration of anything: only in-flight (-ING) phases
    and verify runs (from the verify record) are work. An in-flight phase nobody runs any more (killed) ends at
    the state's last save."""
    now = now or utcnow()
    out: list[PhaseTiming] = []
    work: list[WorkTiming] = []
    hist = state.history
    for i, h in enumerate(hist):
        last = i + 1 == len(hist)
        end = hist[i + 1].at if not last else (now if running or not in_flight(h.to_phase) else state.updated_at)
        secs = max(0.0, (end - h.at).total_seconds())
        begin = min(h.work_started_at or h.at, h.at)
        worked = max(0.0, (end - begin).total_seconds()) if in_flight(h.to_phase) else None
        out.append(PhaseTiming(phase=h.to_phase, from_phase=h.from_phase, entered_at=h.at, seconds=secs,
                               work=worked is not None, work_seconds=worked, note=h.note))
        if worked is not None:
            work.append(WorkTiming(what=h.to_phase.value, started_at=begin, seconds=worked,
                                   running=last and running))
    lv = state.last_verify
    started = _verify_started_at(lv) if lv is not None else None
    if lv is not None and started is not None:
        work.append(WorkTiming(what="VERIFYING", started_at=started,
                               seconds=max(0.0, (lv.finished_at - started).total_seconds())))
    p = state.progress
    if running and p is not None and p.command == "verify":  # a verify runs now (it has no phase of its own)
        work.append(WorkTiming(what="VERIFYING", started_at=p.started_at,
                               seconds=max(0.0, (now - p.started_at).total_seconds()), running=True))
    work.sort(key=lambda w: w.started_at)
    return out, work


def _next_when_nothing_staged(dver: int | None) -> str:
    """`upgrade stage`, unless the data dir is already upgraded (e.g. after a cleanup)."""
    if dver is not None and dver >= min(SUPPORTED_TARGETS):
        return f"nothing: the data dir is already at version {dver} (upgrade stage --target-version N for a later one)"
    return NEXT_STEP[Phase.NONE]


def status(data_dir: Path | None = None, staging_dir: Path | None = None) -> StatusResult:
    """Phase, versions, sizes, progress, timings, last verify, and what the next command would do."""
    with open_command("status", data_dir, staging_dir) as ctx:  # never refuses: reports what it finds
        lay, state, notes, locked_by = ctx.lay, ctx.state, ctx.notes, ctx.locked_by
    base = dict(command="status", data_dir=lay.data_dir, staging_dir=lay.staging_dir)
    node = noderunning.detect(lay.data_dir, lay.exclude)
    dver = _version(lay.data_dir, lay.db_name)
    if ctx.absent:
        # A command that just took the lock may not have written its state yet: still say who runs.
        holder = read_holder_pid(lay.lock_path) if is_locked(lay.lock_path) else None
        return StatusResult(**base, phase=Phase.NONE, data_dir_version=dver, node=node, locked_by_pid=holder,
                            sizes={"data_dir": _du(lay.data_dir)},
                            message=f"nothing staged; the data dir is at version {dver}"
                                    + (f" (an upgrade command is running now, pid {holder})" if holder else ""),
                            next_step=_next_when_nothing_staged(dver))
    if state is None:  # e.g. recovery just finished an interrupted cleanup: the data dir may be upgraded already
        return StatusResult(**base, phase=Phase.NONE, data_dir_version=dver, node=node, recovered=notes,
                            sizes={"data_dir": _du(lay.data_dir)}, message="nothing staged",
                            next_step=_next_when_nothing_staged(dver))
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
    # The phase's requirements that do not hold (as the commands check them): each is a problem with its advice.
    # A running command may be re-making green: green's are not checked then.
    unmet = check_requirements(lay, state, PHASES[state.phase].requires,
                               only=BLUE_PREVIOUS_REQUIREMENTS if locked_by else None)
    problems = []
    broken = None
    prev_problems: list[str] = []
    for u in unmet:
        if u.requirement in GREEN_REQUIREMENTS:
            broken = green_missing_words(lay, state, u.problems)
            problems.append(f"{broken}; {GREEN_BROKEN_HINT}")
            msg += f"; problem: {broken}"
        else:
            prev_problems = u.problems
            msg += (f"; the old data {lay.previous_dir} is missing: rollback is impossible"
                    if u.requirement is Requirement.BLUE_PREVIOUS_PRESENT else
                    f"; the old data in {lay.previous_dir} no longer matches what promote set aside "
                    f"({len(prev_problems)} difference(s)): rollback refuses")
        nxt = u.spec.advice.format(previous_dir=lay.previous_dir)
    unique = state.green_unique_changes if state.phase != Phase.PROMOTED else None
    if unique is not None:
        msg += (f"; {lay.green_dir} holds the node's writes discarded by a forced rollback (abort refuses to "
                "delete them without --yes)")
    if broken:
        pass
    elif drift and state.online:
        nxt = "blue moved on since the online snapshot: upgrade catch-up, or stop the node and upgrade promote"
    elif drift:
        nxt = "blue changed since stage: upgrade stage (re-stage), then verify and promote"
    elif state.phase in (Phase.MIGRATED,) and state.last_verify and not state.last_verify.passed:
        nxt = "the last verify failed: read its report; then upgrade abort and upgrade stage"
    timings, work = _timings(state, running=locked_by is not None)
    # Progress only while a command runs, or where an interrupted in-flight phase stopped (no stale progress of
    # work that is over); an ETA only while a command runs: a killed run's record has no rate any more.
    shown = state.progress if locked_by is not None or in_flight(state.phase) else None
    eta = progress_eta(shown) if locked_by is not None and shown is not None else None
    return StatusResult(**base, phase=state.phase, staged=True, locked_by_pid=locked_by, recovered=notes,
                        source_version=state.source_version, target_version=state.target_version,
                        target_origin=state.target_origin, state_tool_version=state.tool_version,
                        data_dir_version=dver, green_version=green_ver, sizes=sizes, progress=shown,
                        eta_seconds=eta, eta_at=utcnow() + timedelta(seconds=eta) if eta is not None else None,
                        step_of=step_position(shown) if shown is not None else None,
                        timings=timings, work=work, last_verify=state.last_verify, last_swap=state.last_swap,
                        blue_drift=drift, problems=problems,
                        online_lag=catchup.lag(lay, state) if drift and state.online else None, blue_previous_problems=prev_problems,
                        green_unique_changes=unique, node=node, last_error=state.last_error,
                        migration_report=state.migration_report, message=msg, next_step=nxt)


def _audit_says_forced_rollback(lay: Layout) -> bool:
    """True when audit.log's last swap-related transition is a forced rollback that set node writes aside."""
    try:
        lines = (lay.staging_dir / "audit.log").read_text(errors="replace").splitlines()
    except OSError:
        return False
    for line in reversed(lines):
        try:
            entry = AuditEntry.model_validate_json(line)
        except ValueError:
            continue
        if entry.to_phase in (Phase.PROMOTING, Phase.ROLLING_BACK, Phase.SNAPSHOTTING):
            return entry.to_phase == Phase.ROLLING_BACK and entry.note.startswith(FORCED_ROLLBACK_NOTE)
    return False


def abort(data_dir: Path | None = None, staging_dir: Path | None = None, *,
          discard_node_writes: bool = False) -> AbortResult:
    """Remove green and the staging area (before promote only; never touches blue).

    Refuses (UnsavedDataError) when green holds what the node wrote after promote and a forced rollback
    set aside there (that data exists nowhere else), unless `discard_node_writes`."""
    with open_command("abort", data_dir, staging_dir) as ctx:  # refuses after promote (the way back)
        lay, store, state, notes = ctx.lay, ctx.store, ctx.state, ctx.notes
        base = dict(command="abort", data_dir=lay.data_dir, staging_dir=lay.staging_dir)
        if ctx.absent:
            return AbortResult(**base, noop=True, phase=Phase.NONE, message="nothing to abort: no staging area",
                               next_step=NEXT_STEP[Phase.NONE])
        assert store is not None
        exc = ctx.unreadable
        if exc is not None:
            # A state file we cannot read (edited, or left by another version): abort is the way out, as long
            # as nothing says an upgrade is live. blue-previous/ or a swap journal mean it may be: refuse.
            if lay.previous_dir.exists() or lay.swap_journal.exists():
                raise PreflightError(
                    f"{exc.message}; and {lay.staging_dir} holds blue-previous/ or a swap journal, so the data dir "
                    "may hold upgraded data: abort will not guess",
                    "inspect the staging area by hand (blue-previous/ is the old data); never delete it blindly",
                ) from exc
            if not discard_node_writes and lay.green_dir.is_dir() and _audit_says_forced_rollback(lay):
                raise UnsavedDataError(
                    f"{exc.message}; and audit.log says the last swap was a forced rollback, so {lay.green_dir} may "
                    "hold what the node wrote after promote, which exists nowhere else: abort will not delete it",
                    f"copy {lay.green_dir} away first if you need it; to delete it anyway: `upgrade abort --yes` "
                    "(CLI) / discard_node_writes=True",
                ) from exc
            removed = _finish_abort(lay)
            return AbortResult(**base, phase=Phase.NONE, removed=removed,
                               recovered=[f"unreadable state file dropped: {exc.message}"],
                               message=_abort_message(lay, removed),
                               next_step=NEXT_STEP[Phase.NONE])
        if state is not None and state.green_unique_changes is not None and not discard_node_writes:
            ch = state.green_unique_changes
            raise UnsavedDataError(
                f"{lay.green_dir} holds what the node wrote to the upgraded data after promote, set aside there by "
                "`upgrade rollback --force`; that data exists nowhere else and abort would delete it:\n"
                + ch.describe(),
                f"keep it: `upgrade promote` makes it live again (after `upgrade verify`), or copy {lay.green_dir} "
                "away first; to delete it anyway: `upgrade abort --yes` (CLI) / discard_node_writes=True",
            )
        if state is not None:
            store.transition(state, Phase.ABORTED, "abort: removing green and the staging area")
        removed = _finish_abort(lay)
    return AbortResult(**base, phase=Phase.NONE, recovered=notes, removed=removed, **_versions(state),
                       message=_abort_message(lay, removed),
                       next_step=NEXT_STEP[Phase.NONE])


# ---------------------------------------------------------------- cleanup


def _du_unshared(path: Path) -> int:
    """Bytes that deleting `path` frees: files not hard-linked elsewhere (blue-previous's .sst files are
    usually links shared with the live data dir, since stage hard-links them)."""
    total = 0
    for dirpath, _d, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except FileNotFoundError:
                continue
            if st.st_nlink <= 1:
                total += st.st_size
    return total


def _finish_cleanup(lay: Layout, store: StateStore, state: StagingState) -> tuple[list[str], Path | None, int]:
    """Remove blue-previous/ and the scratch, record CLEANED_UP, move the record aside, remove the staging
    area. Safe to re-run after a crash at any point (the phase stays CLEANING_UP until the old data is gone)."""
    removed: list[str] = []
    freed = 0
    for sub in (lay.previous_dir, lay.green_dir, lay.staging_dir / "green.partial", lay.work_dir):
        if sub.exists():
            freed += _du_unshared(sub)
            shutil.rmtree(sub)
            removed.append(str(sub))
        killpoint("cleanup.mid_remove")
    fsync_dir(lay.staging_dir)
    if state.phase == Phase.CLEANING_UP:
        store.transition(state, Phase.CLEANED_UP, f"old data removed ({freed} bytes freed); the upgrade is complete")
    kept = _keep_aside(lay, KEPT_ON_CLEANUP, "cleaned")
    for name in ("state.json.tmp", "lock"):
        p = lay.staging_dir / name
        if p.exists():
            p.unlink()
    try:
        lay.staging_dir.rmdir()
        removed.append(str(lay.staging_dir))
    except OSError:
        pass  # someone put files there: leave them
    fsync_dir(lay.staging_dir.parent)
    return removed, kept, freed


def cleanup(data_dir: Path | None = None, staging_dir: Path | None = None) -> CleanupResult:
    """After a promote the operator is happy with: delete the old data (`<staging>/blue-previous/`) for good,
    keep the record (audit.log, bluegreen.log, reports/, the final state.json) in `<staging>-cleaned-<ts>/`
    and remove the staging area. Final: no rollback afterwards. Never touches the data dir."""
    with open_command("cleanup", data_dir, staging_dir) as ctx:  # refuses unless promoted
        lay, store, state, notes = ctx.lay, ctx.store, ctx.state, ctx.notes
        base = dict(command="cleanup", data_dir=lay.data_dir, staging_dir=lay.staging_dir)
        if ctx.absent:
            return CleanupResult(**base, noop=True, phase=Phase.NONE, message="nothing to clean up: no staging area",
                                 next_step=NEXT_STEP[Phase.CLEANED_UP])
        assert store is not None
        if state is None:
            done = any("interrupted cleanup" in n for n in notes)
            return CleanupResult(**base, noop=not done, phase=Phase.NONE, recovered=notes,
                                 message="cleanup finished" if done else "nothing to clean up: nothing is staged",
                                 next_step=NEXT_STEP[Phase.CLEANED_UP if done else Phase.NONE])
        warnings: list[str] = []
        if state.phase == Phase.PROMOTED:
            # The data dir must really hold the upgraded data: else blue-previous/ may be the only copy left.
            dver = _version(lay.data_dir, lay.db_name)
            if dver != state.target_version:
                raise PreflightError(
                    f"the data dir {lay.data_dir} is at version {dver}, not the upgraded {state.target_version}: "
                    f"it was changed by hand after promote, and {lay.previous_dir} may be the only copy of the "
                    "node's data; cleanup will not delete it",
                    "inspect the data dir and blue-previous/ by hand (`upgrade status`)",
                )
            # Nothing may use the old data (a node started on it, a backup copying it).
            if lay.previous_dir.exists():
                usage = noderunning.detect(lay.previous_dir)
                if usage.running:
                    raise NodeRunningError(f"the old data {lay.previous_dir} is in use:\n{usage.describe()}",
                                           "stop whatever uses it (a node started on the old data? a backup "
                                           "copying it?), then re-run `upgrade cleanup`")
            else:
                warnings.append(f"{lay.previous_dir} was already gone (archived or removed by hand)")
            if state.green_fingerprint_promoted is not None and not fpmod.diff_db(
                    state.green_fingerprint_promoted, fpmod.take(lay.data_dir, lay.exclude)):
                warnings.append("the node has not written to the upgraded data since promote (not started on it "
                                "yet?); the old data is gone now, so keep your own backup until it runs well")
            store.transition(state, Phase.CLEANING_UP, f"removing the old data {lay.previous_dir} (final)")
        try:
            removed, kept, freed = _finish_cleanup(lay, store, state)
        except OSError as exc:
            raise PreflightError(
                f"cleanup could not remove everything ({exc}); the phase stays CLEANING_UP",
                "fix the permissions (or whatever the error names), then re-run `upgrade cleanup`",
            ) from exc
    return CleanupResult(**base, phase=Phase.CLEANED_UP, recovered=notes, removed=removed, freed_bytes=freed,
                         kept_dir=kept, warnings=warnings,
                         message=f"cleaned up: the old data is deleted ({freed / (1 << 20):.1f} MiB freed) and "
                                 f"{lay.staging_dir} removed; the data dir keeps the upgraded data"
                                 + (f"; audit log, log, reports and the final state kept in {kept}" if kept else ""),
                         next_step=NEXT_STEP[Phase.CLEANED_UP])
