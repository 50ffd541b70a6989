"""ocore's schema steps below 31, as data: the shape of the catalogue and the step-18 field rules."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from bluegreen.errors import SourceDataError
from bluegreen.schema.drift import KNOWN_DRIFTS, drifts_for_fresh_schema, explain
from bluegreen.schema.reference import SchemaDifference
from bluegreen.schema.steps import (
    STEPS,
    AtomicBlock,
    DataOperation,
    Statement,
    attested_field_rows,
    js_for_in_keys,
    js_length,
    steps_between,
)

# ocore sqlite_migrations.js has an `if (version < N)` block for exactly these N below 31
OCORE_STEP_VERSIONS = [1, 2, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30]


def all_statements() -> list[tuple[int, Statement, bool]]:
    """(step, statement, inside an atomic block) for every statement of every step."""
    out = []
    for step in STEPS:
        for item in step.items:
            if isinstance(item, AtomicBlock):
                out += [(step.version, s, True) for s in item.statements]
            elif isinstance(item, Statement):
                out.append((step.version, item, False))
    return out


def test_one_step_per_ocore_block_in_order() -> None:
    assert [s.version for s in STEPS] == OCORE_STEP_VERSIONS


def test_steps_between_selects_the_half_open_range() -> None:
    assert [s.version for s in steps_between(17, 20)] == [18, 19, 20]
    assert [s.version for s in steps_between(28, 30)] == [29, 30]
    assert steps_between(30, 30) == ()


def test_every_add_column_knows_its_column() -> None:
    adds = [(v, s) for v, s, _ in all_statements() if "ADD COLUMN" in s.sql]
    assert [v for v, _ in adds] == [6, 6, 13, 21, 25, 26, 28]
    for _, s in adds:
        table, column = re.match(r"ALTER TABLE (\w+) ADD COLUMN (\w+)", s.sql).groups()  # type: ignore[union-attr]
        assert s.already_present is not None
        assert s.already_present.reason == f"column {table}.{column} exists"


def test_every_create_and_delete_outside_blocks_has_a_probe() -> None:
    for version, s, in_block in all_statements():
        if in_block or s.action == "user_version":
            continue
        assert s.already_present is not None, (version, s.sql)
        if s.sql.startswith("CREATE TABLE"):
            name = re.match(r"CREATE TABLE IF NOT EXISTS (\w+)", s.sql).group(1)  # type: ignore[union-attr]
            assert s.already_present.reason == f"table {name} exists"
        elif s.sql.startswith("CREATE"):
            name = re.match(r"CREATE (?:UNIQUE )?INDEX IF NOT EXISTS (\w+)", s.sql).group(1)  # type: ignore[union-attr]
            assert s.already_present.reason == f"index {name} exists"
        elif s.sql.startswith("DELETE"):
            assert s.already_present.present_when == "no_rows"


def test_own_transactions_are_blocks_in_steps_10_and_24_only() -> None:
    blocks = {step.version: item for step in STEPS for item in step.items if isinstance(item, AtomicBlock)}
    assert sorted(blocks) == [10, 24]
    for block in blocks.values():
        assert (block.ocore_begin, block.ocore_commit) == ("BEGIN TRANSACTION", "COMMIT")
        assert not any(s.sql.upper().startswith(("BEGIN", "COMMIT")) for s in block.statements)


def test_intermediate_user_versions_are_recorded_for_deferral() -> None:
    marks = [(v, s.sql) for v, s, _ in all_statements() if s.action == "user_version"]
    assert marks == [(13, "PRAGMA user_version=13"), (26, "PRAGMA user_version=26"), (28, "PRAGMA user_version=28"), (30, "PRAGMA user_version=30")]
    assert not [s for _, s, _ in all_statements() if s.action == "execute" and "user_version" in s.sql]


def test_only_steps_18_and_30_depend_on_the_node_kind() -> None:
    conditioned = [(v, s.only_for) for v, s, _ in all_statements() if s.only_for]
    assert conditioned == [(18, "full"), (18, "light"), (30, "full"), (30, "light")]
    by_kind = {(v, s.only_for): s.sql for v, s, _ in all_statements() if s.only_for}
    assert "REFERENCES addresses(address)" in by_kind[(18, "full")]
    assert "REFERENCES addresses(address)" not in by_kind[(18, "light")]
    assert "REFERENCES aa_addresses(address)" in by_kind[(30, "full")]
    assert "REFERENCES aa_addresses(address)" not in by_kind[(30, "light")]


def test_step_18_ends_with_its_data_operation() -> None:
    (step18,) = [s for s in STEPS if s.version == 18]
    assert isinstance(step18.items[-1], DataOperation)
    assert step18.items[-1].name == "backfill_attested_fields"


def test_steps_are_immutable() -> None:
    with pytest.raises(ValidationError):
        STEPS[0].version = 99  # type: ignore[misc]
    with pytest.raises(ValidationError):
        all_statements()[0][1].sql = "DROP TABLE units"  # type: ignore[misc]


# ---------------------------------------------------------------- step 18 field rules


def test_js_length_counts_utf16_units() -> None:
    assert js_length("abc") == 3
    assert js_length("é") == 1
    assert js_length("\U0001F600") == 2


def test_for_in_visits_integer_like_keys_first() -> None:
    assert js_for_in_keys({"b": 1, "10": 1, "a": 1, "2": 1, "01": 1, "-1": 1, "4294967295": 1, "4294967294": 1}) == [
        "2", "10", "4294967294", "b", "a", "01", "-1", "4294967295"
    ]


def test_profile_rules() -> None:
    payload = '{"address": "A", "profile": {"s": "x", "n": 1, "b": false, "z": null, "o": {}, "l": ["x"]}}'
    assert attested_field_rows(payload, "A", "u") == [("s", "x")]
    assert attested_field_rows('{"address": "A"}', "A", "u") == []
    assert attested_field_rows('{"address": "A", "profile": ["p", 5]}', "A", "u") == [("0", "p")]


@pytest.mark.parametrize("payload", ['{"address": "B", "profile": {}}', '{"profile": {}}', "[1]", "not json", None])
def test_bad_attestation_payloads_are_source_data_errors(payload: str | None) -> None:
    with pytest.raises(SourceDataError, match="unit U"):
        attested_field_rows(payload, "A", "unit U")  # type: ignore[arg-type]


# ---------------------------------------------------------------- drift catalogue


def test_drift_ids_are_unique_and_differences_not_shared() -> None:
    ids = [d.id for d in KNOWN_DRIFTS]
    assert len(ids) == len(set(ids))
    seen: dict[SchemaDifference, str] = {}
    for drift in KNOWN_DRIFTS:
        for diff in drift.differences:
            assert diff not in seen or KNOWN_DRIFTS[ids.index(seen[diff])].light != drift.light, diff
            seen.setdefault(diff, drift.id)


def test_explain_only_explains_catalogued_differences_for_the_node_kind() -> None:
    fk = SchemaDifference(
        kind="extra", object="foreign_key", table="asset_attestors",
        name="(asset) -> assets(unit) on update NO ACTION on delete NO ACTION", detail="foreign key not expected",
    )
    stranger = SchemaDifference(kind="missing", object="table", table="units", name="units", detail="table absent")
    light = explain([fk, stranger], light=True)
    assert [e.drift for e in light.explained] == ["light-asset-attestors-fk"]
    assert light.unexplained == [stranger]
    assert explain([fk], light=False).unexplained == [fk]


def test_fresh_schema_drifts_by_version() -> None:
    assert [d.id for d in drifts_for_fresh_schema(16, False)] == [
        "varchar-to-char-2018", "poll-choice-length-2019", "prosaic-contracts-ttl-int", "push-platform-default",
        "sent-mnemonics-v16",
    ]
    assert [d.id for d in drifts_for_fresh_schema(24, True)] == ["prosaic-contracts-peer-device-fk"]
    assert drifts_for_fresh_schema(27, True) == []
