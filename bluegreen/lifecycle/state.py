"""The staging state file: one pydantic document, written atomically, every change appended to audit.log.

Allowed phase changes are data (`TRANSITIONS`), checked on every change, so a bug cannot silently
jump from e.g. MIGRATING to PROMOTED. Hooks see every transition (tests, progress printers)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from bluegreen import signals
from bluegreen.durable import append_line_durably, atomic_write_json
from bluegreen.errors import BadInputError, PreflightError
from bluegreen.engine.catchup import CatchUpStats
from bluegreen.lifecycle import logfile
from bluegreen.lifecycle.fingerprint import Fingerprint
from bluegreen.lifecycle.greendiff import FrozenKv, GreenChanges
from bluegreen.lifecycle.setaside import SetAsideRecord
from bluegreen.version import tool_version

STATE_FORMAT = 1


def utcnow() -> datetime:
    """Timezone-aware now, the only clock the lifecycle uses."""
    return datetime.now(timezone.utc)


class Phase(str, Enum):
    """Where the staged upgrade is. Phases ending in -ING are in flight (a crash there is recovered)."""

    NONE = "NONE"
    SNAPSHOTTING = "SNAPSHOTTING"
    SNAPSHOTTED = "SNAPSHOTTED"
    MIGRATING = "MIGRATING"
    MIGRATED = "MIGRATED"
    VERIFIED = "VERIFIED"
    PROMOTING = "PROMOTING"
    PROMOTED = "PROMOTED"
    ROLLING_BACK = "ROLLING_BACK"
    ROLLED_BACK = "ROLLED_BACK"
    ABORTED = "ABORTED"
    FAILED = "FAILED"
    CLEANING_UP = "CLEANING_UP"  # `upgrade cleanup` removing blue-previous/ (final; a crash here is finished)
    CLEANED_UP = "CLEANED_UP"  # the upgrade is complete, the old data removed (the kept state.json says so)


P = Phase
# The phases a running command is in (a crash there is recovered): their time is work, not a wait.
IN_FLIGHT = frozenset({P.SNAPSHOTTING, P.MIGRATING, P.PROMOTING, P.ROLLING_BACK, P.CLEANING_UP})


def in_flight(phase: Phase) -> bool:
    """True for SNAPSHOTTING, MIGRATING, PROMOTING, ROLLING_BACK, CLEANING_UP: a command is working."""
    return phase in IN_FLIGHT


# Allowed transitions, as data. Re-entering SNAPSHOTTING/MIGRATING is a restart or a resume.
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    P.NONE: frozenset({P.SNAPSHOTTING, P.ABORTED}),
    P.SNAPSHOTTING: frozenset({P.SNAPSHOTTED, P.SNAPSHOTTING, P.FAILED, P.ABORTED}),
    P.SNAPSHOTTED: frozenset({P.MIGRATING, P.FAILED, P.ABORTED, P.SNAPSHOTTING}),
    P.MIGRATING: frozenset({P.MIGRATED, P.MIGRATING, P.FAILED, P.ABORTED, P.SNAPSHOTTING}),
    P.MIGRATED: frozenset({P.VERIFIED, P.MIGRATED, P.ABORTED, P.SNAPSHOTTING}),
    P.VERIFIED: frozenset({P.VERIFIED, P.MIGRATED, P.PROMOTING, P.ABORTED, P.SNAPSHOTTING}),
    P.PROMOTING: frozenset({P.PROMOTED, P.VERIFIED}),
    P.PROMOTED: frozenset({P.ROLLING_BACK, P.CLEANING_UP}),
    P.ROLLING_BACK: frozenset({P.ROLLED_BACK, P.PROMOTED}),
    P.ROLLED_BACK: frozenset({P.PROMOTING, P.VERIFIED, P.MIGRATED, P.ABORTED, P.SNAPSHOTTING}),
    P.ABORTED: frozenset({P.SNAPSHOTTING}),
    P.FAILED: frozenset({P.SNAPSHOTTING, P.ABORTED}),
    P.CLEANING_UP: frozenset({P.CLEANED_UP}),  # no way back: the old data is being deleted
    P.CLEANED_UP: frozenset(),  # terminal: the staging area is moved aside right after
}


class HistoryEntry(BaseModel):
    """One phase change, also written as one line of audit.log."""

    at: datetime
    from_phase: Phase
    to_phase: Phase
    note: str = ""
    pid: int | None = None
    # When the command doing this in-flight phase's work began, if earlier than `at`: promote and rollback check
    # and record baselines before they enter PROMOTING / ROLLING_BACK (status counts that as the phase's work).
    work_started_at: datetime | None = None


class Progress(BaseModel):
    """Last progress a running command reported (persisted every few seconds so `status` can show it and an
    ETA). Cleared whenever a phase that is not in flight (-ING) is entered: no stale progress."""

    step: str
    done: int
    total: int
    started_at: datetime  # when the command began reporting (its first step)
    updated_at: datetime
    step_started_at: datetime | None = None  # when `step` began (absent in older files): the rate of this step
    command: str | None = None  # the command reporting (stage, verify, promote, rollback)


class SpaceEstimate(BaseModel):
    """The free-space check stage made before copying, in bytes."""

    copy_bytes: int
    linked_bytes: int
    kv_estimate_bytes: int
    margin_bytes: int
    needed_bytes: int
    free_bytes: int


class VerifyRecord(BaseModel):
    """The latest verify run on green."""

    report_path: Path
    passed: bool
    finished_at: datetime
    sample: int | None
    failed_checks: list[str] = Field(default_factory=list)
    started_at: datetime | None = None  # when that verify began (absent in older files): its duration is work


class SwapRecord(BaseModel):
    """Which mechanism the last swap used (`exchange` = one renameat2, `fallback` = journaled renames)."""

    op: str
    mechanism: str
    at: datetime
    recovered: bool = False


class OnlinePosition(BaseModel):
    """Where blue stood when an online snapshot read it: what a later catch-up starts from."""

    wal_mode: bool
    method: str  # "read-transaction+steps" (WAL), "one-step" (rollback journal), "copy (node stopped)" (promote)
    max_units_rowid: int  # every unit with a rowid up to this is in green, none after it
    units: int
    last_stable_mci: int | None
    data_version: int  # PRAGMA data_version of the snapshot connection (changes when another connection commits)
    header_change_counter: int  # blue's header file change counter just before the snapshot (WAL commits do not bump it)
    wal_bytes: int  # size of blue's -wal just before the snapshot's read transaction began
    steps: int
    busy_retries: int
    began_at_unix: float  # the read transaction began (the snapshot's moment)
    ended_at_unix: float  # the copy ended


class StagingState(BaseModel):
    """Everything the lifecycle knows about one staged upgrade (`<staging>/state.json`)."""

    format: int = STATE_FORMAT
    tool_version: str | None = None  # bluegreen version that last saved this state (absent in older files)
    phase: Phase = Phase.NONE
    data_dir: Path
    staging_dir: Path
    db_name: str = "byteball.sqlite"
    light: bool = False
    source_version: int | None = None
    target_version: int = 31
    target_origin: str | None = None  # why this target: "--to", the node's ocore VERSION, or the highest known
    genesis_unit: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    space: SpaceEstimate | None = None
    blue_fingerprint: Fingerprint | None = None
    green_fingerprint_verified: Fingerprint | None = None
    green_fingerprint_promoted: Fingerprint | None = None
    # Green's row counts when it was last verified (or caught up with its verify carried on): green does not
    # change after verify, so promote takes its rollback baseline from here instead of counting again.
    green_row_counts_verified: dict[str, int] | None = None
    green_row_counts_promoted: dict[str, int] = Field(default_factory=dict)
    green_kv_keys_promoted: int | None = None  # older bluegreens: keys listed at promote (now: green_kv_frozen)
    # Green's KV as it went live (hard-linked .sst): rollback's KV baseline. None: promoted by an older bluegreen.
    green_kv_frozen: FrozenKv | None = None
    # What promote set aside as blue-previous/ (rollback refuses when blue-previous/ no longer matches it).
    blue_previous_record: SetAsideRecord | None = None
    # What the node wrote to green after promote and a forced rollback set aside in green/: data that
    # exists nowhere else, so abort refuses to delete it unless told to. Cleared when green goes live again.
    green_unique_changes: GreenChanges | None = None
    progress: Progress | None = None
    migration_report: dict[str, Any] | None = None
    last_verify: VerifyRecord | None = None
    last_swap: SwapRecord | None = None
    last_error: str | None = None
    # `stage --online`: the node kept writing; green is blue as of `online_position` (for a later catch-up)
    online: bool = False
    online_position: OnlinePosition | None = None
    catch_ups: list[CatchUpStats] = Field(default_factory=list)  # every catch-up installed into green, in order
    # Set when promote's catch-up patched green from blue's own file (node stopped, no snapshot copied): the
    # kept source snapshot is older than green. It is refreshed from blue while blue still matches this
    # fingerprint (rollback, a failed promote, the next command); a catch-up refuses while it is set.
    prev_behind: Fingerprint | None = None
    history: list[HistoryEntry] = Field(default_factory=list)


class AuditEntry(BaseModel):
    """One line of audit.log."""

    at: datetime
    event: str
    from_phase: Phase | None = None
    to_phase: Phase | None = None
    note: str = ""
    pid: int


TransitionHook = Callable[[Phase, Phase, StagingState], None]


class StateStore:
    """Loads and saves `state.json` in a staging dir; every save is atomic, every transition audited."""

    def __init__(self, staging_dir: Path) -> None:
        self.staging_dir = staging_dir
        self.path = staging_dir / "state.json"
        self.audit_path = staging_dir / "audit.log"
        self.hooks: list[TransitionHook] = []
        logfile.attach(staging_dir)

    def exists(self) -> bool:
        """True when a state file is present."""
        return self.path.exists()

    def load(self) -> StagingState | None:
        """The saved state, or None when there is none."""
        if not self.path.exists():
            return None
        raw = self.path.read_bytes()
        try:
            fmt = json.loads(raw).get("format")
        except (ValueError, AttributeError):
            fmt = STATE_FORMAT  # unparseable: reported below
        if fmt != STATE_FORMAT:
            raise BadInputError(
                f"the state file {self.path} has format {fmt!r}, this bluegreen reads format {STATE_FORMAT}: it was "
                "left by another version of the tool",
                "finish or undo that upgrade with the version that started it, or (before promote only) run "
                "`upgrade abort` to drop its staging area",
            )
        try:
            return StagingState.model_validate_json(raw)
        except ValueError as exc:
            raise BadInputError(
                f"the state file {self.path} is unreadable: {exc}",
                "it was written atomically, so this means someone edited it; restore it or run `upgrade abort` "
                "(before promote only)",
            ) from exc

    def save(self, state: StagingState) -> None:
        """Write the state durably (tmp + fsync + rename + fsync dir)."""
        state.updated_at = utcnow()
        state.tool_version = tool_version()
        with signals.deferred():  # a TERM/HUP mid-serialisation is raised once the state is on disk
            atomic_write_json(self.path, json.loads(state.model_dump_json()))
        logfile.attach(self.staging_dir)

    def audit(self, event: str, note: str = "", from_phase: Phase | None = None,
              to_phase: Phase | None = None) -> None:
        """Append one durable line to audit.log."""
        entry = AuditEntry(at=utcnow(), event=event, from_phase=from_phase, to_phase=to_phase, note=note,
                           pid=os.getpid())
        with signals.deferred():
            append_line_durably(self.audit_path, entry.model_dump_json())

    def transition(self, state: StagingState, to: Phase, note: str = "",
                   work_started_at: datetime | None = None) -> StagingState:
        """Move `state` to phase `to` (checked against TRANSITIONS), save it, audit it, run the hooks.

        `work_started_at`: when the command began the work of the in-flight phase `to` (see HistoryEntry)."""
        frm = state.phase
        if to not in TRANSITIONS[frm]:
            raise PreflightError(
                f"the staged upgrade is in phase {frm.value}; it cannot go to {to.value}",
                "run `upgrade status` to see what the next command should be",
            )
        state.phase = to
        if not in_flight(to):
            state.progress = None  # the work that reported it is over: status must not show it as running
        state.history.append(HistoryEntry(at=utcnow(), from_phase=frm, to_phase=to, note=note, pid=os.getpid(),
                                          work_started_at=work_started_at))
        self.save(state)
        logfile.log.info("phase %s -> %s%s", frm.value, to.value, f": {note}" if note else "")
        self.audit("transition", note, frm, to)
        for hook in self.hooks:
            hook(frm, to, state)
        return state
