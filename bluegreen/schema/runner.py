"""Run ocore's schema steps (bluegreen.schema.steps) on the caller's connection, inside the caller's
open transaction. We never COMMIT here: the engine commits the steps together with user_version=31,
so a crash leaves the copy at its old version with nothing half-applied."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import apsw
from pydantic import BaseModel

from bluegreen.errors import MigrationError
from bluegreen.schema.steps import (
    DATA_OPERATIONS,
    KV_FILL_STEP,
    MAX_KNOWN_VERSION,
    AtomicBlock,
    DataOperation,
    KvOperation,
    NodeKind,
    Probe,
    Statement,
    StatementGroup,
    bound_params,
    statement_applies,
    steps_between,
)
from bluegreen.schema.kvsteps import KV_OPERATIONS, StateVarStore

Status = Literal["applied", "skipped-already-present", "skipped-condition", "user_version-deferred"]
Recorder = Callable[..., None]  # record(sql, status, reason=None, **extra)


class StatementReport(BaseModel):
    """What happened to one statement of a step. `executed` is the SQL we ran when it differs from
    ocore's (BEGIN/COMMIT of steps 10 and 24 run as SAVEPOINT/RELEASE)."""

    step: int
    index: int
    sql: str
    status: Status
    reason: str | None = None
    executed: str | None = None
    rows_changed: int | None = None


class StepsReport(BaseModel):
    """Everything `apply_schema_steps` did, statement by statement, in execution order."""

    from_version: int
    target: int
    node: NodeKind
    steps: list[int]
    statements: list[StatementReport]

    def with_status(self, status: Status) -> list[StatementReport]:
        """The statements that ended with `status`."""
        return [s for s in self.statements if s.status == status]

    def counts(self) -> dict[str, int]:
        """Number of statements per status."""
        out: dict[str, int] = {}
        for s in self.statements:
            out[s.status] = out.get(s.status, 0) + 1
        return out


class SchemaStepError(MigrationError):
    """A schema step statement failed. The caller's transaction is still open and must be rolled back."""

    def __init__(self, step: int, statement: str, cause: BaseException) -> None:
        first_line = statement.strip().splitlines()[0] if statement.strip() else statement
        super().__init__(
            f"schema step {step} failed at `{first_line}`: {cause}",
            hint="the green copy was not changed (roll back its transaction); check the source database with "
            "`PRAGMA integrity_check` and report this statement",
        )
        self.step = step
        self.statement = statement
        self.cause = cause


def _probe(conn: apsw.Connection, probe: Probe) -> bool:
    has_rows = next(iter(conn.execute(probe.sql)), None) is not None
    return has_rows if probe.present_when == "rows" else not has_rows


def apply_schema_steps(
    conn: apsw.Connection, from_version: int, *, light: bool, target: int = 31, network: str = "mainnet",
    kv: StateVarStore | None = None, progress: Callable[[str, int, int], None] | None = None,
) -> StepsReport:
    """Apply every ocore schema step with `from_version < step <= min(target, 30)` in order, on `conn`,
    inside the caller's open transaction (never commits; never sets user_version).

    Each statement is applied, or skipped because its effect is already present (probe), or because it
    is for the other node kind (full/light); ocore's intermediate `PRAGMA user_version=N` are recorded as
    deferred. Any other failure raises SchemaStepError naming the step and statement.
    `progress("schema steps", done, total)` is called before each step and once at the end."""
    if conn.getautocommit():
        raise MigrationError(
            "apply_schema_steps needs an open transaction on the connection",
            hint="call it between BEGIN and COMMIT so that the steps and user_version commit together",
        )
    if target > MAX_KNOWN_VERSION:
        raise MigrationError(
            f"schema target {target} is beyond what bluegreen handles ({MAX_KNOWN_VERSION})",
            hint=f"this tool upgrades ocore databases up to version {MAX_KNOWN_VERSION}",
        )
    if from_version < KV_FILL_STEP < target:
        raise MigrationError(
            f"steps {from_version + 1}..{target} cross step 31 (the KV fill), which the runner does not run",
            hint="run the steps up to 31, the engine's KV fill, then the steps from 31 (bluegreen.engine.migrate)",
        )
    node: NodeKind = "light" if light else "full"
    report = StepsReport(from_version=from_version, target=target, node=node, steps=[], statements=[])
    steps = steps_between(from_version, target)
    for done, step in enumerate(steps):
        if progress is not None:
            progress("schema steps", done, len(steps))
        report.steps.append(step.version)
        index = 0

        def record(sql: str, status: Status, reason: str | None = None, **extra: object) -> None:
            nonlocal index
            report.statements.append(
                StatementReport(step=step.version, index=index, sql=sql, status=status, reason=reason, **extra)  # type: ignore[arg-type]
            )
            index += 1

        for item in step.items:
            if isinstance(item, Statement):
                _run_statement(conn, step.version, item, node, record, network)
            elif isinstance(item, StatementGroup):
                try:
                    present = _probe(conn, item.already_present)
                except apsw.Error as e:
                    raise SchemaStepError(step.version, item.already_present.sql, e) from e
                for st in item.statements:
                    if present:
                        record(st.sql, "skipped-already-present", item.already_present.reason)
                    else:
                        _run_statement(conn, step.version, st, node, record, network)
            elif isinstance(item, KvOperation):
                label = f"kv operation {item.name}"
                if item.only_for is not None and item.only_for != node:
                    record(label, "skipped-condition", f"only for {item.only_for} nodes")
                    continue
                try:
                    kv_result = KV_OPERATIONS[item.name](conn, kv)
                except apsw.Error as e:
                    raise SchemaStepError(step.version, label, e) from e
                changed = kv_result.rows_changed + kv_result.kv_puts
                record(label, "applied" if changed else "skipped-already-present",
                       item.description if changed else f"nothing to do ({kv_result.model_dump_json()})",
                       rows_changed=changed)
            elif isinstance(item, AtomicBlock):
                _run_block(conn, step.version, item, record)
            elif isinstance(item, DataOperation):
                try:
                    result = DATA_OPERATIONS[item.name](conn)
                except MigrationError:
                    raise
                except apsw.Error as e:
                    raise SchemaStepError(step.version, f"data operation {item.name}", e) from e
                if result.inserted:
                    record(f"data operation {item.name}", "applied", item.description, rows_changed=result.inserted)
                else:
                    reason = (
                        f"all {result.candidates} rows it derives are already present"
                        if result.candidates
                        else "the database holds nothing for it to derive"
                    )
                    record(f"data operation {item.name}", "skipped-already-present", reason, rows_changed=0)
    if progress is not None:
        progress("schema steps", len(steps), len(steps))
    return report


def _run_statement(conn: apsw.Connection, step: int, st: Statement, node: NodeKind, record: Recorder,
                   network: str = "mainnet") -> None:
    if not statement_applies(st, node, network):
        why = f"only for {st.only_for} nodes" if st.only_for not in (None, node) else f"only on {st.only_networks}"
        record(st.sql, "skipped-condition", why)
        return
    if st.action == "user_version":
        record(st.sql, "user_version-deferred", "user_version is set to the target once, at the very end")
        return
    try:
        if st.already_present is not None and _probe(conn, st.already_present):
            record(st.sql, "skipped-already-present", st.already_present.reason)
            return
        before = conn.total_changes()
        conn.execute(st.sql, bound_params(st, network))
        record(st.sql, "applied", rows_changed=conn.total_changes() - before)
    except apsw.Error as e:
        raise SchemaStepError(step, st.sql, e) from e


def _run_block(conn: apsw.Connection, step: int, block: AtomicBlock, record: Recorder) -> None:
    try:
        present = _probe(conn, block.already_present)
    except apsw.Error as e:
        raise SchemaStepError(step, block.ocore_begin, e) from e
    if present:
        for sql in (block.ocore_begin, *(s.sql for s in block.statements), block.ocore_commit):
            record(sql, "skipped-already-present", block.already_present.reason)
        return
    savepoint = f"bluegreen_step_{step}"
    conn.execute(f"SAVEPOINT {savepoint}")
    record(block.ocore_begin, "applied", "ocore's own transaction, nested in the caller's", executed=f"SAVEPOINT {savepoint}")
    current = block.ocore_begin
    try:
        for st in block.statements:
            current = st.sql
            before = conn.total_changes()
            conn.execute(st.sql)
            record(st.sql, "applied", rows_changed=conn.total_changes() - before)
    except apsw.Error as e:
        # Undo the block but leave the caller's transaction open and usable; the caller rolls back.
        conn.execute(f"ROLLBACK TO {savepoint}")
        conn.execute(f"RELEASE {savepoint}")
        raise SchemaStepError(step, current, e) from e
    conn.execute(f"RELEASE {savepoint}")
    record(block.ocore_commit, "applied", "ocore's own transaction, nested in the caller's", executed=f"RELEASE {savepoint}")
