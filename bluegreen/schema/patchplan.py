"""Which catalogue steps catch-up's row patch can follow (docs/catch-up.md "Row patch").

The row patch changes green's SQLite only in the rows blue changed: each changed row of blue is written to
green in its post-step form. That is exact only when the steps from the source version to the target are
row-local on every table they carry, read from the catalogue itself:
- DDL that leaves existing rows as they are: CREATE TABLE / INDEX (not `AS SELECT`), `ALTER TABLE .. ADD
  COLUMN` (a row written later with the column left out takes the same default), DROP INDEX, user_version;
- a statement that empties or drops a table (`effect` empties / drops_rows): green's rows of that table come
  from the steps alone, blue's rows of it are not carried;
- a statement whose `depends_on` tables are empty or absent in both snapshots (checked at run time): it does
  the same to green as to a fresh migration;
- the KV operations of steps 34 and 39 act on `st` keys only, which a source below 31 has none of.
Anything else (a data operation, an UPDATE or table copy not declared, a source already on the KV store) makes
the plan impossible, and catch-up falls back to migrating a whole copy."""

from __future__ import annotations

import re

from pydantic import BaseModel

from bluegreen.schema.steps import (AtomicBlock, DataOperation, KvOperation, Statement, StatementGroup,
                                    statement_applies, steps_between)
from bluegreen.schema.steps import KV_FILL_STEP

_ROW_PRESERVING_DDL = re.compile(
    r"^\s*(CREATE\s+(UNIQUE\s+)?(TABLE|INDEX)\b|ALTER\s+TABLE\s+\S+\s+ADD\s+COLUMN\b|DROP\s+INDEX\b)",
    re.IGNORECASE)


class RowPatchPlan(BaseModel):
    """Whether the row patch can follow the steps, and what it must know to do so."""

    possible: bool
    why_not: str = ""
    not_carried: tuple[str, ...] = ()  # tables a step empties or drops: green's rows are the steps' own
    must_be_empty: tuple[str, ...] = ()  # source tables a step reads rows of: empty or absent in both snapshots


def _statement_kind(st: Statement, extra_depends: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """('ok' | 'drops' | 'depends' | 'no', tables) for one statement."""
    if st.action == "user_version":
        return "ok", ()
    if st.effect is not None and st.effect[0] in ("empties", "drops_rows"):
        return "drops", (st.effect[1],)
    deps = st.depends_on or extra_depends
    if deps:
        return "depends", deps
    if _ROW_PRESERVING_DDL.match(st.sql) and not re.search(r"\bSELECT\b", st.sql, re.IGNORECASE):
        return "ok", ()
    return "no", ()


def row_patch_plan(source_version: int, target_version: int, node: str, network: str) -> RowPatchPlan:
    """The plan for a source at `source_version` (SQLite only, below 31) migrated to `target_version`."""
    if source_version >= KV_FILL_STEP:
        return RowPatchPlan(possible=False, why_not=f"the source is at {source_version}, already on the KV store")
    not_carried: list[str] = []
    empty: list[str] = []
    for step in steps_between(source_version, target_version):
        for item in step.items:
            if isinstance(item, DataOperation):
                return RowPatchPlan(possible=False, why_not=f"step {step.version}: data operation {item.name}")
            if isinstance(item, KvOperation):
                continue  # `st` keys only: none in a source below 31
            parts = item.statements if isinstance(item, (AtomicBlock, StatementGroup)) else (item,)
            block_deps = item.depends_on if isinstance(item, AtomicBlock) else ()
            for st in parts:
                if not statement_applies(st, node, network):  # type: ignore[arg-type]
                    continue
                kind, tables = _statement_kind(st, block_deps)
                if kind == "no":
                    first = st.sql.strip().splitlines()[0][:80]
                    return RowPatchPlan(possible=False, why_not=f"step {step.version}: `{first}` is not row-local")
                if kind == "drops":
                    not_carried += [t for t in tables if t not in not_carried]
                elif kind == "depends":
                    empty += [t for t in tables if t not in empty]
    return RowPatchPlan(possible=True, not_carried=tuple(not_carried), must_be_empty=tuple(empty))
