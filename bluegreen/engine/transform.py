"""The pure, picklable per-chunk work of stage's KV fill and of verify's hash pass.

Each function takes one task (plain data: rows with their column lists, the run's constants) and returns
plain data (KV puts, failures, problems). No database handle, no file, no global state: the same function
runs in the main process (`--jobs 1`, the reference) or in a worker of `engine/pool.py`, and gives the
same bytes either way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from pydantic import BaseModel

from bluegreen.engine.joints import (
    JointError,
    ReadContext,
    build_joint,
    check_payload_hashes,
    check_unit_hash,
    strip_for_kv,
)
from bluegreen.engine.sqlsource import RawChunk, UnitChunk
from bluegreen.formats.hashing import get_unit_hash
from bluegreen.formats.jsvalues import js_parse, js_stringify
from bluegreen.formats.networks import Network
from bluegreen.ocore_facts import UNIT_PREFIX

UNIT_KEY_PREFIX = UNIT_PREFIX


class UnitFailure(BaseModel):
    """One unit the step cannot migrate, with the reason."""

    unit: str
    reason: str  # hash_mismatch, missing_definition, missing_payload_rows, no_last_ball, ...
    detail: str
    expected_hash: str | None = None
    computed_hash: str | None = None


@dataclass(frozen=True)
class UnitChunkTask:
    """One chunk of the KV fill: its rows as read from SQLite and what to check."""

    raw: RawChunk
    ctx: ReadContext
    check_unit_hashes: bool
    strict_payload_hashes: bool


@dataclass
class UnitChunkResult:
    """What one chunk gives: the `j` puts in unit rowid order, the failing units, and where the chunk ends."""

    last_rowid: int
    units: int
    puts: list[tuple[bytes, bytes]] = field(default_factory=list)
    failures: list[UnitFailure] = field(default_factory=list)


def transform_unit_chunk(task: UnitChunkTask) -> UnitChunkResult:
    """Rebuild, check and serialise every joint of one chunk (ocore's readJoint + migrate_to_kv)."""
    chunk = UnitChunk.from_raw(task.raw)
    ctx = task.ctx
    result = UnitChunkResult(last_rowid=chunk.last_rowid, units=len(chunk.units))
    puts, failures = result.puts, result.failures
    for row in chunk.units:
        unit = row[1]
        try:
            joint = build_joint(row, chunk, ctx)
        except JointError as exc:
            failures.append(UnitFailure(unit=unit, reason=exc.reason, detail=exc.detail))
            continue
        if task.check_unit_hashes:
            computed = check_unit_hash(joint, ctx)
            if computed is not None:
                failures.append(UnitFailure(
                    unit=unit, reason="hash_mismatch",
                    detail="the unit rebuilt from SQL does not hash to its id",
                    expected_hash=unit, computed_hash=computed))
                continue
        if task.strict_payload_hashes:
            bad_payloads = check_payload_hashes(joint, ctx)
            if bad_payloads:
                failures.append(UnitFailure(unit=unit, reason="payload_hash_mismatch", detail="; ".join(bad_payloads)))
                continue
        text = js_stringify(strip_for_kv(joint, ctx))
        puts.append((UNIT_KEY_PREFIX + unit.encode("utf-8"), text.encode("utf-8")))
    return result


# ---------------------------------------------------------------------------------------------
# verify: one hashing joint per unit


class StoredJoint(NamedTuple):
    """A `j\\n<unit>` value read from green's KV, with the unit its key names."""

    unit: str
    value: bytes


@dataclass(frozen=True)
class JointCheckTask:
    """A batch of stored joints to parse and hash (verify's check 6)."""

    network: Network
    light: bool
    joints: list[StoredJoint]


def joint_problem(unit: str, raw: bytes, network: Network, light: bool) -> str | None:
    """Why the stored joint of `unit` is wrong, or None when it parses and hashes to `unit`."""
    try:
        joint = js_parse(raw.decode("utf-8"))
    except Exception as exc:  # any parse failure is a finding, not a crash
        return f"{unit}: j value is not valid JSON ({exc})"
    body = joint.get("unit") if isinstance(joint, dict) else None
    if not isinstance(body, dict):
        return f"{unit}: j value has no unit object"
    if body.get("unit") != unit:
        return f"{unit}: j value holds unit {body.get('unit')!r}"
    if light:
        return None  # light nodes keep units they cannot hash (ocore checks hashes on full nodes only)
    try:
        computed = get_unit_hash(body, network)
    except Exception as exc:
        return f"{unit}: cannot hash the stored unit ({exc})"
    if computed != unit:
        return f"{unit}: stored unit hashes to {computed}"
    return None


def check_joints(task: JointCheckTask) -> list[str | None]:
    """`joint_problem` of every joint of the batch, in the batch's order."""
    return [joint_problem(j.unit, j.value, task.network, task.light) for j in task.joints]
