"""The step runner moves every empty ocore schema to the v31 reference, inside the caller's transaction,
skipping what is already there and failing loudly (with the step and statement) on anything else."""

from __future__ import annotations

import json
import re
from pathlib import Path

import apsw
import pytest
from conftest import EMPTY_SCHEMAS, writable_copy

from bluegreen.errors import MigrationError, SourceDataError
from bluegreen.schema.drift import drifts_for_fresh_schema, explain
from bluegreen.schema.reference import SchemaSnapshot, compare, introspect, introspect_file, load_reference
from bluegreen.schema.runner import SchemaStepError, StepsReport, apply_schema_steps

SHARED_EMPTY = sorted(
    (int(m.group(2)), m.group(1) == "light")
    for p in EMPTY_SCHEMAS.glob("*.sqlite")
    if (m := re.fullmatch(r"(full|light)-v(\d+)\.sqlite", p.name))
)
SHARED_IDS = [f"{'light' if lt else 'full'}-v{v}" for v, lt in SHARED_EMPTY]
NOT_APPLIED = {"skipped-already-present", "skipped-condition", "user_version-deferred"}


def empty_copy(tmp_path: Path, version: int, light: bool) -> Path:
    name = f"{'light' if light else 'full'}-v{version}.sqlite"
    return writable_copy(EMPTY_SCHEMAS / name, tmp_path / name)


def migrate(db: Path, from_version: int, light: bool, *, target: int = 31) -> tuple[StepsReport, SchemaSnapshot]:
    """What the engine does: one transaction holding the steps and the final user_version."""
    conn = apsw.Connection(str(db))
    try:
        conn.execute("BEGIN")
        report = apply_schema_steps(conn, from_version, light=light, target=target)
        conn.execute(f"PRAGMA user_version={target}")
        conn.execute("COMMIT")
        return report, introspect(conn)
    finally:
        conn.close()


@pytest.mark.parametrize(("version", "light"), SHARED_EMPTY, ids=SHARED_IDS)
def test_every_empty_schema_reaches_v31_except_ocores_known_drifts(version: int, light: bool, tmp_path: Path) -> None:
    db = empty_copy(tmp_path, version, light)
    report, schema = migrate(db, version, light)
    assert report.steps == [s for s in report.steps if version < s <= 30] and report.steps[-1] == 30
    assert schema.user_version == 31
    differences = compare(schema, load_reference(31, light))
    # ocore changed its fresh schema without steps; each such difference is named and dated in drift.py
    expected = [d for drift in drifts_for_fresh_schema(version, light) for d in drift.differences]
    assert sorted(map(str, differences)) == sorted(map(str, expected))
    assert explain(differences, light=light).unexplained == []


def test_nodes_created_from_version_27_on_reach_v31_exactly(tmp_path: Path) -> None:
    # ocore 0.2.95's prebuilt initial database is at version 27: such nodes have no drift at all
    for version in (27, 28):
        for light in (False, True):
            assert drifts_for_fresh_schema(version, light) == []
            _, schema = migrate(empty_copy(tmp_path, version, light), version, light)
            assert compare(schema, load_reference(31, light)) == []


def test_report_from_28_full_lists_every_statement(tmp_path: Path) -> None:
    db = empty_copy(tmp_path, 28, False)
    report, _ = migrate(db, 28, False)
    got = [(s.step, s.status, s.sql.split("(")[0].strip()) for s in report.statements]
    assert got == [
        (29, "skipped-already-present", "DELETE FROM known_bad_joints"),
        (30, "skipped-already-present", "CREATE TABLE IF NOT EXISTS joints"),  # ocore's fresh v28 has it
        (30, "applied", "CREATE TABLE IF NOT EXISTS aa_addresses"),
        (30, "applied", "CREATE TABLE IF NOT EXISTS aa_triggers"),
        (30, "applied", "CREATE TABLE IF NOT EXISTS aa_balances"),
        (30, "applied", "CREATE TABLE IF NOT EXISTS aa_responses"),
        (30, "skipped-condition", "CREATE TABLE IF NOT EXISTS aa_responses"),
        (30, "applied", "CREATE INDEX IF NOT EXISTS aaResponsesByTriggerAddress ON aa_responses"),
        (30, "applied", "CREATE INDEX IF NOT EXISTS aaResponsesByAAAddress ON aa_responses"),
        (30, "applied", "CREATE INDEX IF NOT EXISTS aaResponsesByMci ON aa_responses"),
        (30, "user_version-deferred", "PRAGMA user_version=30"),
    ]
    assert report.statements[0].reason == "table known_bad_joints is already empty"
    assert report.statements[6].reason == "only for light nodes"


def test_steps_run_in_the_callers_transaction_and_never_commit(tmp_path: Path) -> None:
    db = empty_copy(tmp_path, 21, False)
    before = introspect_file(db)
    conn = apsw.Connection(str(db))
    conn.execute("BEGIN")
    report = apply_schema_steps(conn, 21, light=False)
    assert not conn.getautocommit(), "the runner must leave the caller's transaction open"
    assert [s.sql for s in report.with_status("user_version-deferred")] == [
        "PRAGMA user_version=26", "PRAGMA user_version=28", "PRAGMA user_version=30"
    ]
    assert conn.execute("PRAGMA user_version").fetchall() == [(21,)]
    conn.execute("ROLLBACK")
    conn.close()
    assert introspect_file(db) == before


def test_refuses_to_run_outside_a_transaction(tmp_path: Path) -> None:
    conn = apsw.Connection(str(empty_copy(tmp_path, 28, False)))
    with pytest.raises(MigrationError, match="open transaction"):
        apply_schema_steps(conn, 28, light=False)
    conn.close()


def test_a_column_that_already_exists_is_skipped_and_reported(tmp_path: Path) -> None:
    db = empty_copy(tmp_path, 27, False)
    conn = apsw.Connection(str(db))
    conn.execute("ALTER TABLE units ADD COLUMN timestamp INT NOT NULL DEFAULT 0")
    conn.close()
    report, schema = migrate(db, 27, False)
    step28 = [s for s in report.statements if s.step == 28]
    assert [(s.sql, s.status, s.reason) for s in step28] == [
        ("ALTER TABLE units ADD COLUMN timestamp INT NOT NULL DEFAULT 0", "skipped-already-present", "column units.timestamp exists"),
        ("PRAGMA user_version=28", "user_version-deferred", "user_version is set to the target once, at the very end"),
    ]
    assert compare(schema, load_reference(31, False)) == []


@pytest.mark.parametrize(("version", "light"), [(6, False), (6, True), (17, False), (23, True)])
def test_running_the_steps_twice_finds_everything_present(version: int, light: bool, tmp_path: Path) -> None:
    db = empty_copy(tmp_path, version, light)
    first, migrated = migrate(db, version, light)
    assert first.with_status("applied")
    second, again = migrate(db, version, light)  # from the original version, on the migrated copy
    assert second.with_status("applied") == []
    assert {s.status for s in second.statements} <= NOT_APPLIED
    assert len(second.statements) == len(first.statements)
    assert again == migrated


def test_light_and_full_nodes_get_their_own_step_18_and_30_tables(tmp_path: Path) -> None:
    def keys(schema: SchemaSnapshot, table: str) -> set[tuple[str, ...]]:
        return {(*k.from_columns, k.table) for k in schema.tables[table].foreign_keys}

    full_report, full = migrate(empty_copy(tmp_path, 17, False), 17, False)
    light_report, light = migrate(empty_copy(tmp_path, 17, True), 17, True)
    assert ("attestor_address", "addresses") in keys(full, "attested_fields")
    assert ("attestor_address", "addresses") not in keys(light, "attested_fields")
    assert ("aa_address", "aa_addresses") in keys(full, "aa_responses")
    assert ("aa_address", "aa_addresses") not in keys(light, "aa_responses")
    assert [s.step for s in full_report.with_status("skipped-condition")] == [18, 30]
    assert [s.step for s in light_report.with_status("skipped-condition")] == [18, 30]
    assert all(s.reason == "only for light nodes" for s in full_report.with_status("skipped-condition"))


def test_step_10_rebuilds_chat_messages_and_keeps_its_rows(tmp_path: Path) -> None:
    db = empty_copy(tmp_path, 9, False)
    conn = apsw.Connection(str(db))
    conn.execute("INSERT INTO correspondent_devices (device_address, name, pubkey, hub) VALUES ('0DEVICE', 'bob', 'pk', 'hub')")
    conn.execute(
        "INSERT INTO chat_messages (id, correspondent_address, message, is_incoming) VALUES (7, '0DEVICE', 'hi', 1), (9, '0DEVICE', 'yo', 0)"
    )
    conn.close()
    report, schema = migrate(db, 9, False)
    step10 = [s for s in report.statements if s.step == 10]
    assert (step10[0].sql, step10[0].executed) == ("BEGIN TRANSACTION", "SAVEPOINT bluegreen_step_10")
    assert step10[3].sql.startswith("INSERT INTO chat_messages SELECT") and step10[3].rows_changed == 2
    assert (step10[6].sql, step10[6].executed) == ("COMMIT", "RELEASE bluegreen_step_10")
    assert schema.tables["chat_messages"].autoincrement
    assert schema.tables["chat_messages"].foreign_keys[0].on_delete == "CASCADE"
    conn = apsw.Connection(str(db))
    assert conn.execute("SELECT id, message FROM chat_messages ORDER BY id").fetchall() == [(7, "hi"), (9, "yo")]
    conn.close()


def test_step_24_adds_attestor_to_the_key_and_keeps_rows(tmp_path: Path) -> None:
    db = empty_copy(tmp_path, 23, False)
    conn = apsw.Connection(str(db))
    conn.execute("INSERT INTO asset_attestors VALUES ('UNIT', 0, 'ASSET', 'ATTESTOR')")
    conn.close()
    _, schema = migrate(db, 23, False)
    assert [c.name for c in schema.tables["asset_attestors"].columns if c.pk] == ["unit", "message_index", "attestor_address"]
    conn = apsw.Connection(str(db))
    assert conn.execute("SELECT * FROM asset_attestors").fetchall() == [("UNIT", 0, "ASSET", "ATTESTOR")]
    conn.close()


def test_a_failing_statement_names_its_step_and_leaves_the_transaction_to_the_caller(tmp_path: Path) -> None:
    db = empty_copy(tmp_path, 23, False)
    conn = apsw.Connection(str(db))
    conn.execute("CREATE TABLE asset_attestors_new (x)")  # debris that makes step 24's CREATE fail
    before = introspect(conn)
    conn.execute("BEGIN")
    with pytest.raises(SchemaStepError) as info:
        apply_schema_steps(conn, 23, light=False)
    assert info.value.step == 24
    assert info.value.statement.startswith("CREATE TABLE asset_attestors_new")
    assert "schema step 24" in info.value.message and info.value.hint
    assert isinstance(info.value, MigrationError)
    assert not conn.getautocommit(), "the caller still owns its (now to be rolled back) transaction"
    conn.execute("ROLLBACK")
    assert introspect(conn) == before
    conn.close()


def test_a_missing_table_fails_with_our_error(tmp_path: Path) -> None:
    db = empty_copy(tmp_path, 28, False)
    conn = apsw.Connection(str(db))
    conn.execute("DROP TABLE known_bad_joints")
    conn.execute("BEGIN")
    with pytest.raises(SchemaStepError) as info:
        apply_schema_steps(conn, 28, light=False)
    assert (info.value.step, info.value.statement) == (29, "DELETE FROM known_bad_joints")
    conn.execute("ROLLBACK")
    conn.close()


def test_target_below_31_stops_there(tmp_path: Path) -> None:
    report, schema = migrate(empty_copy(tmp_path, 17, False), 17, False, target=20)
    assert report.steps == [18, 19, 20]
    assert compare(schema, load_reference(21, False)) != []  # step 21 not applied
    assert "attested_fields" in schema.tables


def test_steps_across_the_kv_fill_and_beyond_50_are_refused(tmp_path: Path) -> None:
    conn = apsw.Connection(str(empty_copy(tmp_path, 28, False)))
    conn.execute("BEGIN")
    with pytest.raises(MigrationError, match="cross step 31"):
        apply_schema_steps(conn, 28, light=False, target=32)
    with pytest.raises(MigrationError, match="beyond"):
        apply_schema_steps(conn, 31, light=False, target=51)
    conn.execute("ROLLBACK")
    conn.close()


# ---------------------------------------------------------------- step 18: attested_fields backfill

ATTESTOR = "ATTESTORATTESTORATTESTORATTESTOR"
SUBJECT = "SUBJECTSUBJECTSUBJECTSUBJECTSUBJ"


def add_attestation(conn: apsw.Connection, unit: str, payload: object, *, address: str = SUBJECT) -> None:
    conn.execute("INSERT INTO units (unit, headers_commission, payload_commission) VALUES (?, 100, 200)", (unit,))
    conn.execute(
        "INSERT INTO messages (unit, message_index, app, payload_location, payload_hash, payload) "
        "VALUES (?, 0, 'attestation', 'inline', 'HASH', ?)",
        (unit, payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)),
    )
    conn.execute("INSERT INTO attestations (unit, message_index, attestor_address, address) VALUES (?, 0, ?, ?)", (unit, ATTESTOR, address))


def test_step_18_indexes_short_string_profile_fields_of_existing_attestations(tmp_path: Path) -> None:
    db = empty_copy(tmp_path, 17, False)
    conn = apsw.Connection(str(db))
    # Written as JSON text so that the key order is ours: integer-like keys are visited first by for..in.
    payload = (
        '{"address": "' + SUBJECT + '", "profile": {'
        '"email": "a@example.com", "age": 30, "verified": true, "nested": {"x": "y"}, '
        '"' + "f" * 51 + '": "name too long", "bio": "' + "b" * 101 + '", '
        '"exactly100": "' + "z" * 100 + '", "' + "k" * 50 + '": "name of 50", '
        '"emoji50": "' + "\U0001F600" * 50 + '", "emoji51": "' + "\U0001F600" * 51 + '", '
        '"2": "two", "1": "one", "email": "second@example.com"}}'
    )
    add_attestation(conn, "UNIT1", payload)
    add_attestation(conn, "UNIT2", {"address": SUBJECT})  # no profile at all
    conn.close()

    report, _ = migrate(db, 17, False)
    (op,) = [s for s in report.statements if s.sql == "data operation backfill_attested_fields"]
    assert (op.status, op.rows_changed) == ("applied", 6)

    conn = apsw.Connection(str(db))
    rows = conn.execute("SELECT unit, message_index, attestor_address, address, field, value FROM attested_fields ORDER BY rowid").fetchall()
    conn.close()
    assert rows == [
        ("UNIT1", 0, ATTESTOR, SUBJECT, "1", "one"),
        ("UNIT1", 0, ATTESTOR, SUBJECT, "2", "two"),
        ("UNIT1", 0, ATTESTOR, SUBJECT, "email", "second@example.com"),  # duplicate key: first place, last value
        ("UNIT1", 0, ATTESTOR, SUBJECT, "exactly100", "z" * 100),
        ("UNIT1", 0, ATTESTOR, SUBJECT, "k" * 50, "name of 50"),
        # 50 emoji are 100 UTF-16 units (JavaScript's length): kept; 51 are 102: left out
        ("UNIT1", 0, ATTESTOR, SUBJECT, "emoji50", "\U0001F600" * 50),
    ]

    # Second run (steps from 17 again): every field is already there.
    report, _ = migrate(db, 17, False)
    (op,) = [s for s in report.statements if s.sql == "data operation backfill_attested_fields"]
    assert op.status == "skipped-already-present"
    assert op.reason == "all 6 rows it derives are already present"


def test_step_18_stops_on_an_attestation_for_another_address(tmp_path: Path) -> None:
    db = empty_copy(tmp_path, 17, True)
    conn = apsw.Connection(str(db))
    add_attestation(conn, "UNIT1", {"address": "SOMEONEELSE", "profile": {"email": "x"}})
    conn.execute("BEGIN")
    with pytest.raises(SourceDataError, match="UNIT1"):
        apply_schema_steps(conn, 17, light=True)
    conn.execute("ROLLBACK")
    conn.close()
