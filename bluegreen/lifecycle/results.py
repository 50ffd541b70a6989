"""What every `upgrade` command returns (and prints with --json): pydantic models, JSON Schemas in schemas/."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from bluegreen.engine.catchup import CatchUpStats
from bluegreen.lifecycle.greendiff import GreenChanges
from bluegreen.lifecycle.noderunning import NodeUsage
from bluegreen.lifecycle.snapshot import SnapshotReport
from bluegreen.lifecycle.state import Phase, Progress, SpaceEstimate, SwapRecord, VerifyRecord
from bluegreen.lifecycle.verify_models import VerifyReport
from bluegreen.version import tool_version


class CommandResult(BaseModel):
    """Fields common to every command's result."""

    command: str
    tool_version: str = Field(default_factory=tool_version)  # the bluegreen that produced this result
    ok: bool = True
    noop: bool = False  # true when the command found its work already done
    exit_code: int = 0
    message: str
    phase: Phase
    next_step: str = ""
    data_dir: Path
    staging_dir: Path
    recovered: list[str] = Field(default_factory=list)  # what was finished/undone from an interrupted run
    warnings: list[str] = Field(default_factory=list)
    # The staged upgrade's versions (from state.json) whenever one is known: every result says what it is about.
    source_version: int | None = None
    target_version: int | None = None


class StageResult(CommandResult):
    """`upgrade stage`."""

    target_origin: str | None = None  # where the target came from: --to, the node's ocore, or the highest known
    space: SpaceEstimate | None = None
    snapshot: SnapshotReport | None = None
    migration: dict[str, Any] | None = None


class VerifyResult(CommandResult):
    """`upgrade verify`."""

    passed: bool = False
    report_path: Path | None = None
    report: VerifyReport | None = None


class PromoteResult(CommandResult):
    """`upgrade promote`."""

    mechanism: str | None = None
    copied_files: list[str] = Field(default_factory=list)
    removed_files: list[str] = Field(default_factory=list)
    # online stage: the last catch-up promote ran with the node stopped (None: blue had not moved)
    catch_up: CatchUpStats | None = None
    # from the moment promote found the node stopped to the end of the swap
    downtime_seconds: float | None = None
    # wall seconds of each part of promote, in order (checks, other files, row counts, ownership, kv copy,
    # fingerprint, set-aside record, swap): where the downtime goes
    timings: dict[str, float] = Field(default_factory=dict)
    # the downtime part by part, in order (the parts of `timings` after the node was found stopped): catch_up
    # (its own parts in catch_up.timings) when promote caught up, then the rest down to the swap
    downtime_parts: dict[str, float] = Field(default_factory=dict)


class OnlineLag(BaseModel):
    """How far blue moved since the last online snapshot or catch-up (`upgrade status`)."""

    recorded_units_rowid: int
    units_rowid_now: int | None
    new_units: int | None
    catch_ups: int
    note: str = ""


class CatchUpResult(CommandResult):
    """`upgrade catch-up`."""

    stats: CatchUpStats | None = None



class RollbackResult(CommandResult):
    """`upgrade rollback`."""

    mechanism: str | None = None
    forced: bool = False
    green_changes: GreenChanges | None = None


class PhaseTiming(BaseModel):
    """One history entry: when a phase was entered and how long the staging area stayed in it (until the next
    change, or until now). `work` is true for in-flight phases (SNAPSHOTTING, MIGRATING, PROMOTING, ...), where
    the tool was working; for the others `seconds` is mostly a wait for the operator's next command."""

    phase: Phase
    from_phase: Phase | None = None
    entered_at: datetime
    seconds: float
    work: bool = False
    # In-flight phases: how long their work took, counting what the command did before entering the phase
    # (promote's and rollback's checks and baselines); None for the others.
    work_seconds: float | None = None
    note: str = ""


class WorkTiming(BaseModel):
    """How long one piece of work took: an in-flight phase (SNAPSHOTTING, MIGRATING, PROMOTING, ROLLING_BACK,
    CLEANING_UP) or a verify run (VERIFYING: verify has no phase of its own). Waits between commands are not
    work and are not counted here."""

    what: str
    started_at: datetime
    seconds: float
    running: bool = False  # still going (a command holds the lock): `seconds` is so far


class StatusResult(CommandResult):
    """`upgrade status`."""

    staged: bool = False
    locked_by_pid: int | None = None
    target_origin: str | None = None
    state_tool_version: str | None = None  # the bluegreen that last saved state.json (tool_version: this one)
    data_dir_version: int | None = None
    green_version: int | None = None
    sizes: dict[str, int] = Field(default_factory=dict)
    progress: Progress | None = None
    # While a command runs: seconds left in its current step at the rate so far, and when that is.
    eta_seconds: float | None = None
    eta_at: datetime | None = None
    step_of: tuple[int, int] | None = None  # the progress step is the k-th of the n steps its command reports
    timings: list[PhaseTiming] = Field(default_factory=list)  # every history entry, oldest first
    work: list[WorkTiming] = Field(default_factory=list)  # the working phases and verify runs, with durations
    last_verify: VerifyRecord | None = None
    last_swap: SwapRecord | None = None
    blue_drift: list[str] = Field(default_factory=list)
    online_lag: OnlineLag | None = None  # online stage: how far blue moved since the last snapshot or catch-up
    # The staging area does not match the state (green/ or its files removed by hand), with the way out.
    problems: list[str] = Field(default_factory=list)
    # After promote: how blue-previous/ differs from what promote set aside (rollback refuses while non-empty).
    blue_previous_problems: list[str] = Field(default_factory=list)
    # The node's writes a forced rollback set aside in green/ (abort refuses to delete them unless told to).
    green_unique_changes: GreenChanges | None = None
    node: NodeUsage | None = None
    last_error: str | None = None
    migration_report: dict[str, Any] | None = None  # the engine's report: every failing unit and its reason


class AbortResult(CommandResult):
    """`upgrade abort`."""

    removed: list[str] = Field(default_factory=list)


class CleanupResult(CommandResult):
    """`upgrade cleanup`: the old data removed after a promote; the record kept in `kept_dir`."""

    removed: list[str] = Field(default_factory=list)
    freed_bytes: int = 0
    kept_dir: Path | None = None  # where audit.log, bluegreen.log, reports/ and the final state.json went


class ErrorResult(BaseModel):
    """What --json prints when a command fails."""

    ok: bool = False
    command: str
    tool_version: str = Field(default_factory=tool_version)
    error: str  # our error type, e.g. NodeRunningError
    message: str
    hint: str | None = None
    exit_code: int
