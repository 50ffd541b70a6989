"""What each phase means on disk and for the commands, as data (like `state.TRANSITIONS`).

Per phase (`PHASES`): what must be on disk (`requires`, named `Requirement`s, each with its check and the
words for "missing"), how an interrupted run in it is finished or undone (`recovery`, a named `Recovery`;
command.py maps each name to the function doing it), the advice `status` gives (`next_step`) and what every
command does in it (`commands`: run, no-op, or a refusal with its message and hint). Every command opens
the same way from this data (`command.open_command`: resolve, lock, recover, check), and `status` reads
the same data for its advice, so the two cannot disagree."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from bluegreen.errors import BluegreenError, BluePreviousChangedError, PreflightError
from bluegreen.lifecycle import setaside
from bluegreen.lifecycle.layout import Layout
from bluegreen.lifecycle.state import Phase, StagingState

P = Phase

# ---------------------------------------------------------------- requirements (what must be on disk)

GREEN_BROKEN_HINT = "run `upgrade stage` to stage again (or `upgrade abort`)"


class Requirement(str, Enum):
    """A path the staging area must hold in a phase (the state says it is there)."""

    GREEN_DIR = "green_dir"
    GREEN_DB = "green_db"
    GREEN_ROCKSDB = "green_rocksdb"
    BLUE_PREVIOUS_PRESENT = "blue_previous_present"
    BLUE_PREVIOUS_UNCHANGED = "blue_previous_unchanged"


CheckFn = Callable[[Layout, StagingState], list[str]]  # what is missing or different; empty = met
RefusalFn = Callable[[Layout, StagingState, list[str]], BluegreenError]


def _green_dir(lay: Layout, state: StagingState) -> list[str]:
    return [] if lay.green_dir.is_dir() else [f"green/ is missing ({lay.green_dir})"]


def _green_db(lay: Layout, state: StagingState) -> list[str]:
    db = lay.green_dir / lay.db_name
    return [] if db.is_file() else [f"green/{lay.db_name} is missing ({db})"]


def _green_rocksdb(lay: Layout, state: StagingState) -> list[str]:
    kv = lay.green_dir / "rocksdb"
    return [] if kv.is_dir() else [f"green/rocksdb/ is missing ({kv})"]


def _previous_present(lay: Layout, state: StagingState) -> list[str]:
    return [] if lay.previous_dir.is_dir() else [f"{lay.previous_dir} is missing (archived, moved or removed?)"]


def _previous_unchanged(lay: Layout, state: StagingState) -> list[str]:
    if state.blue_previous_record is None:  # promoted by a bluegreen that did not record it: the old check
        return [] if (lay.previous_dir / lay.db_name).is_file() else [f"missing: {lay.db_name}"]
    return setaside.compare(state.blue_previous_record, lay.previous_dir)


def green_missing_words(lay: Layout, state: StagingState, problems: list[str]) -> str:
    """'green/... is missing (...) although the phase is X': the words every command uses."""
    return f"{problems[0]} although the phase is {state.phase.value}"


def _refuse_green(lay: Layout, state: StagingState, problems: list[str]) -> BluegreenError:
    return PreflightError(f"{green_missing_words(lay, state, problems)}: the staged copy is gone (removed by hand?)",
                          GREEN_BROKEN_HINT)


def _refuse_previous_gone(lay: Layout, state: StagingState, problems: list[str]) -> BluegreenError:
    return BluePreviousChangedError(
        f"cannot roll back: the old data {lay.previous_dir} is missing (archived or removed by hand?); "
        "the data dir keeps the upgraded data",
        f"put the old data dir back at {lay.previous_dir} exactly as it was and re-run `upgrade rollback`, "
        "or keep the upgrade",
    )


def _refuse_previous_changed(lay: Layout, state: StagingState, problems: list[str]) -> BluegreenError:
    rec = state.blue_previous_record
    head = (f"cannot roll back: the old data in {lay.previous_dir} is no longer what promote set aside at "
            f"{rec.taken_at:%Y-%m-%d %H:%M:%S} UTC" if rec is not None else
            f"cannot roll back: the old data in {lay.previous_dir} is incomplete")
    return BluePreviousChangedError(
        f"{head}; {len(problems)} difference(s):\n" + setaside.summarize(problems)
        + "\nNothing was moved; the data dir keeps the upgraded data.",
        f"inspect {lay.previous_dir}: remove what was added there (e.g. a nested staging area from running "
        "`upgrade` inside it), restore what was changed from your backup, then re-run `upgrade rollback`; "
        "or keep the upgrade (the data dir is fine as it is)",
    )


@dataclass(frozen=True)
class RequirementSpec:
    """One requirement: its check, the group it belongs to (a group is checked in order and stops at its first
    unmet requirement: no 'green/x is missing' when green/ itself is), the refusal of a command that needs it,
    and status's advice when it is unmet (`{previous_dir}` is filled in)."""

    what: str
    group: str
    check: CheckFn
    refusal: RefusalFn
    advice: str


GREEN_ADVICE = "upgrade stage (stages again from a fresh snapshot), or upgrade abort"

REQUIREMENTS: dict[Requirement, RequirementSpec] = {
    Requirement.GREEN_DIR: RequirementSpec("green/ (the staged copy)", "green", _green_dir, _refuse_green,
                                           GREEN_ADVICE),
    Requirement.GREEN_DB: RequirementSpec("green's SQLite database", "green", _green_db, _refuse_green,
                                          GREEN_ADVICE),
    Requirement.GREEN_ROCKSDB: RequirementSpec("green/rocksdb/ (the migrated KV store)", "green", _green_rocksdb,
                                               _refuse_green, GREEN_ADVICE),
    Requirement.BLUE_PREVIOUS_PRESENT: RequirementSpec(
        "blue-previous/ (the old data, kept for rollback)", "blue_previous", _previous_present,
        _refuse_previous_gone, "keep the upgrade, or put the old data back at {previous_dir} exactly as it was"),
    Requirement.BLUE_PREVIOUS_UNCHANGED: RequirementSpec(
        "blue-previous/ exactly as promote set it aside", "blue_previous", _previous_unchanged,
        _refuse_previous_changed, "keep the upgrade, or inspect {previous_dir} (remove what was added, restore "
        "what changed from a backup) before any rollback"),
}
GREEN_REQUIREMENTS = frozenset({Requirement.GREEN_DIR, Requirement.GREEN_DB, Requirement.GREEN_ROCKSDB})
BLUE_PREVIOUS_REQUIREMENTS = frozenset({Requirement.BLUE_PREVIOUS_PRESENT, Requirement.BLUE_PREVIOUS_UNCHANGED})


@dataclass(frozen=True)
class Unmet:
    """A requirement that does not hold, with what its check found."""

    requirement: Requirement
    problems: list[str]

    @property
    def spec(self) -> RequirementSpec:
        """The requirement's data."""
        return REQUIREMENTS[self.requirement]


def check_requirements(lay: Layout, state: StagingState, requirements: tuple[Requirement, ...],
                       only: frozenset[Requirement] | None = None) -> list[Unmet]:
    """The unmet ones of `requirements` (restricted to `only`), each group stopping at its first unmet one."""
    out: list[Unmet] = []
    failed_groups: set[str] = set()
    for req in requirements:
        spec = REQUIREMENTS[req]
        if spec.group in failed_groups or (only is not None and req not in only):
            continue
        problems = spec.check(lay, state)
        if problems:
            out.append(Unmet(req, problems))
            failed_groups.add(spec.group)
    return out


# ---------------------------------------------------------------- recoveries (an interrupted run)


class Recovery(str, Enum):
    """How the next command finishes or undoes a run interrupted in a phase (command.py does it)."""

    NONE = "nothing to recover"
    DISCARD_SNAPSHOT = "discard the partial snapshot (-> FAILED; stage starts it again)"
    RESUME_MIGRATION = "nothing now: the next stage resumes the migration from the engine's journal"
    FINISH_OR_UNDO_SWAP = "finish or undo the swap, as its journal says (nothing moved: undo)"
    # Green is not live in these phases, so the KV copy promote makes (rollback's baseline) serves nothing: an
    # unfinished one (promote killed while making it) or an earlier promote's (rolled back) is removed.
    DISCARD_KV_COPY = "discard the KV copy of an interrupted or rolled-back promote (promote makes it again)"
    FINISH_ABORT = "finish removing the staging area"
    FINISH_CLEANUP = "finish removing the old data and the staging area (final)"


# ---------------------------------------------------------------- commands in each phase


class Allow(str, Enum):
    """A command in a phase: does its work, or says its work is done (a no-op result)."""

    RUN = "run"
    NOOP = "noop"


@dataclass(frozen=True)
class Refusal:
    """A command refused in a phase: message and hint (templates: `{phase}`, `{previous_dir}`; hint None =
    the phase's next step)."""

    message: str
    hint: str | None = None

    def error(self, lay: Layout, phase: Phase) -> PreflightError:
        """The refusal as our error (exit 3)."""
        fill = dict(phase=phase.value, previous_dir=lay.previous_dir)
        hint = self.hint.format(**fill) if self.hint is not None else PHASES[phase].next_step
        return PreflightError(self.message.format(**fill), hint)


Rule = Allow | Refusal


@dataclass(frozen=True)
class CommandSpec:
    """How one command opens: resolve options, what it does with no staging area, in each phase (`phases`,
    else `default`), with no state after recovery (`nothing_staged`, else its rule for NONE), and which
    requirements it refuses to run without (`enforces`). `status` (`reports`) never refuses."""

    name: str
    default: Rule = Allow.RUN
    phases: Mapping[Phase, Rule] = field(default_factory=dict)
    no_staging_area: Rule = Allow.NOOP
    nothing_staged: Rule | None = None
    enforces: frozenset[Requirement] = frozenset()
    create: bool = False  # creates the staging area (stage)
    require_db: bool = True
    allow_inside_staging: bool = False
    tolerates_unreadable_state: bool = False  # abort: an unreadable state file is dropped, not an error
    reports: bool = False  # status: reads without waiting for a running command, never refuses

    def rule(self, phase: Phase | None) -> Rule:
        """What this command does in `phase` (None: nothing staged after recovery)."""
        if phase is None:
            if self.nothing_staged is not None:
                return self.nothing_staged
            phase = P.NONE
        return self.phases.get(phase, self.default)


_NOTHING_STAGED = Refusal("nothing is staged", "run `upgrade stage` first")
_NOTHING_ONLINE = Refusal("nothing is staged", "run `upgrade stage --online` first")
_PROMOTED_STAGE = Refusal("the upgrade is already promoted (phase {phase})",
                          "upgrade rollback first if you want to stage again")
_CLEANUP_AFTER_PROMOTE = "cleanup removes the old data after a promote only; phase {phase}: "
_CLEANUP_NOT_PROMOTED = Refusal(_CLEANUP_AFTER_PROMOTE + "nothing is promoted yet: the data dir still holds the old "
                                "data; `upgrade abort` drops the staging area")

COMMANDS: dict[str, CommandSpec] = {c.name: c for c in (
    CommandSpec("stage", create=True, phases={p: _PROMOTED_STAGE for p in (P.PROMOTED, P.PROMOTING, P.ROLLING_BACK)}),
    CommandSpec("verify", no_staging_area=_NOTHING_STAGED, enforces=GREEN_REQUIREMENTS,
                default=Refusal("green is not ready to verify (phase {phase})"),
                phases={P.MIGRATED: Allow.RUN, P.VERIFIED: Allow.RUN, P.ROLLED_BACK: Allow.RUN,
                        P.PROMOTED: Refusal("green is already promoted (it is the live data dir now)",
                                            "nothing to verify; upgrade rollback returns to the old data")}),
    CommandSpec("promote", no_staging_area=_NOTHING_STAGED, enforces=GREEN_REQUIREMENTS,
                default=Refusal("nothing promotable is staged (phase {phase})"),
                phases={P.VERIFIED: Allow.RUN, P.ROLLED_BACK: Allow.RUN, P.MIGRATED: Allow.RUN,
                        P.PROMOTED: Allow.NOOP}),
    CommandSpec("rollback", no_staging_area=Refusal("nothing was promoted: there is no staging area",
                                                    "no action needed"),
                enforces=BLUE_PREVIOUS_REQUIREMENTS,
                default=Refusal("nothing to roll back (phase {phase}): the data dir still holds the old data"),
                phases={P.PROMOTED: Allow.RUN, P.ROLLED_BACK: Allow.NOOP}),
    CommandSpec("abort", require_db=False, allow_inside_staging=True, tolerates_unreadable_state=True,
                phases={P.PROMOTED: Refusal("the upgrade is promoted: the data dir holds the upgraded data and the "
                                            "old data is in {previous_dir}; abort would lose the way back",
                                            "upgrade rollback first (then abort), or keep the upgrade")}),
    CommandSpec("cleanup", default=_CLEANUP_NOT_PROMOTED, nothing_staged=Allow.NOOP,
                phases={P.PROMOTED: Allow.RUN, P.CLEANING_UP: Allow.RUN,
                        P.ROLLED_BACK: Refusal(_CLEANUP_AFTER_PROMOTE + "the upgrade was rolled back: the data dir "
                                               "holds the old data again and the staged green is the upgraded copy; "
                                               "`upgrade abort` drops the staging area"),
                        P.PROMOTING: Refusal(_CLEANUP_AFTER_PROMOTE + "a promote is in flight"),
                        P.ROLLING_BACK: Refusal(_CLEANUP_AFTER_PROMOTE + "a rollback is in flight")}),
    # catch-up checks the online snapshot and its phase itself (lifecycle/catchup.py)
    CommandSpec("catch-up", no_staging_area=_NOTHING_ONLINE, nothing_staged=_NOTHING_ONLINE,
                enforces=GREEN_REQUIREMENTS),
    CommandSpec("status", require_db=False, allow_inside_staging=True, reports=True),
)}


# ---------------------------------------------------------------- the phases


@dataclass(frozen=True)
class PhaseSpec:
    """One phase: what must be on disk, how an interrupted run in it recovers, status's advice, and what each
    command does in it."""

    requires: tuple[Requirement, ...]
    recovery: Recovery
    next_step: str
    commands: Mapping[str, Rule] = field(default_factory=dict)


_COPIED = (Requirement.GREEN_DIR, Requirement.GREEN_DB)  # the copy exists
_STAGED = (*_COPIED, Requirement.GREEN_ROCKSDB)  # ... and is migrated
_SET_ASIDE = (Requirement.BLUE_PREVIOUS_PRESENT, Requirement.BLUE_PREVIOUS_UNCHANGED)

_PHASES: dict[Phase, tuple[tuple[Requirement, ...], Recovery, str]] = {
    P.NONE: ((), Recovery.NONE, "upgrade stage"),
    P.SNAPSHOTTING: ((), Recovery.DISCARD_SNAPSHOT, "upgrade stage (restarts the interrupted snapshot)"),
    P.SNAPSHOTTED: (_COPIED, Recovery.NONE, "upgrade stage (runs the migration on the copy)"),
    P.MIGRATING: (_COPIED, Recovery.RESUME_MIGRATION, "upgrade stage (resumes the migration where its journal says)"),
    P.MIGRATED: (_STAGED, Recovery.DISCARD_KV_COPY, "upgrade verify"),
    P.VERIFIED: (_STAGED, Recovery.DISCARD_KV_COPY, "stop the node, then upgrade promote"),
    P.PROMOTING: ((), Recovery.FINISH_OR_UNDO_SWAP,
                  "any upgrade command (finishes or undoes the interrupted promote)"),
    P.PROMOTED: (_SET_ASIDE, Recovery.NONE,
                 "start the node on the upgraded data; if it misbehaves, stop it and run upgrade rollback; "
                 "once satisfied, upgrade cleanup removes the old data (final)"),
    P.ROLLING_BACK: ((), Recovery.FINISH_OR_UNDO_SWAP,
                     "any upgrade command (finishes or undoes the interrupted rollback)"),
    P.ROLLED_BACK: (_STAGED, Recovery.DISCARD_KV_COPY,
                    "start the node on the old data; upgrade promote re-applies the staged upgrade"),
    P.ABORTED: ((), Recovery.FINISH_ABORT, "upgrade stage"),
    P.FAILED: ((), Recovery.NONE, "upgrade stage (starts again from a fresh snapshot)"),
    P.CLEANING_UP: ((), Recovery.FINISH_CLEANUP, "upgrade cleanup (finishes removing the old data)"),
    P.CLEANED_UP: ((), Recovery.FINISH_CLEANUP, "nothing: the upgrade is complete"),
}

PHASES: dict[Phase, PhaseSpec] = {
    phase: PhaseSpec(requires=req, recovery=rec, next_step=nxt,
                     commands={name: c.rule(phase) for name, c in COMMANDS.items() if not c.reports})
    for phase, (req, rec, nxt) in _PHASES.items()
}
assert set(PHASES) == set(Phase), "every phase needs its spec"

NEXT_STEP: dict[Phase, str] = {p: s.next_step for p, s in PHASES.items()}
