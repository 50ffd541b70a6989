"""`verify_green`: each check passes on a faithful green and fails, naming the item, on a real defect.

Greens are real: copies of the shared node dirs, a green migrated by our engine from the version-29
devnet node, and a green holding exactly the keys ocore's own migration wrote (expected-kv.jsonl).
Defects are made for real in green's SQLite file and RocksDB dir."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import apsw
import pytest
from rocksdict import Options, Rdict

from bluegreen.errors import BadInputError
from bluegreen.lifecycle.verify import (
    CHECK_BALLS,
    CHECK_FOREIGN_KEYS,
    CHECK_INTEGRITY,
    CHECK_KV_DATA_FEEDS,
    CHECK_KV_UNITS,
    CHECK_ROW_COUNTS,
    CHECK_SCHEMA,
    CHECK_USER_VERSION,
    open_readonly,
    verify_green,
)
from bluegreen.lifecycle.verify_models import VerifyReport
from tests.conftest import DEVNET_V29, DEVNET_V31, writable_copy

ALL_CHECKS = [
    CHECK_INTEGRITY,
    CHECK_FOREIGN_KEYS,
    CHECK_USER_VERSION,
    CHECK_SCHEMA,
    CHECK_ROW_COUNTS,
    CHECK_KV_UNITS,
    CHECK_KV_DATA_FEEDS,
    CHECK_BALLS,
]
DB = "byteball.sqlite"
GENESIS = "pLzHaCisvxkfgwyBDzgvZzhPp37ZKnuMOxiI3QwXxqM="


# ------------------------------------------------------------------------------------ helpers


def failing(report: VerifyReport) -> set[str]:
    return {c.name for c in report.checks if not c.passed}


def check(report: VerifyReport, name: str):  # type: ignore[no-untyped-def]
    [found] = [c for c in report.checks if c.name == name]
    return found


def sql(data_dir: Path, statement: str, bindings: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = apsw.Connection(str(data_dir / DB))
    try:
        return list(conn.execute(statement, bindings))
    finally:
        conn.close()


def kv_open(data_dir: Path) -> Rdict:
    return Rdict(str(data_dir / "rocksdb"), options=Options(raw_mode=True))


def kv_items(data_dir: Path, prefix: bytes) -> list[tuple[bytes, bytes]]:
    db = kv_open(data_dir)
    try:
        return [(k, v) for k, v in db.items() if k.startswith(prefix)]
    finally:
        db.close()


def shown(key: bytes) -> str:
    """A key or value as the report prints it: newlines as backslash-n."""
    return key.decode("utf-8").replace("\n", "\\n")


def tree_digest(path: Path) -> dict[str, str]:
    """Every file under `path` with the SHA-256 of its bytes: any write, creation or deletion shows."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------------------ pairs


@pytest.fixture
def v31_pair(tmp_path: Path) -> tuple[Path, Path]:
    """blue and green: two copies of the real version-31 node dir (so green == blue)."""
    return writable_copy(DEVNET_V31, tmp_path / "blue"), writable_copy(DEVNET_V31, tmp_path / "green")


@pytest.fixture
def migrated_pair(tmp_path: Path) -> tuple[Path, Path]:
    """blue: the real version-29 node dir; green: a copy of it migrated to 31 by our engine."""
    from bluegreen.engine.migrate import MigrationOptions, migrate_copy

    blue = writable_copy(DEVNET_V29, tmp_path / "blue")
    green = writable_copy(DEVNET_V29, tmp_path / "green")
    report = migrate_copy(green / DB, green / "rocksdb", tmp_path / "journal.json", MigrationOptions())
    assert report.completed
    return blue, green


@pytest.fixture
def ocore_pair(tmp_path: Path) -> tuple[Path, Path]:
    """blue: the version-29 node dir; green: its SQL steps applied by our runner, and as KV exactly
    the keys and values ocore's own migration wrote (expected-kv.jsonl): the checker's oracle."""
    from bluegreen.schema.runner import apply_schema_steps

    blue = writable_copy(DEVNET_V29, tmp_path / "blue")
    green = writable_copy(DEVNET_V29, tmp_path / "green")
    (green / "expected-kv.jsonl").unlink()
    conn = apsw.Connection(str(green / DB))
    with conn:
        apply_schema_steps(conn, 29, light=False)
        conn.execute("PRAGMA user_version=31")
    conn.close()
    db = kv_open(green)
    for line in (DEVNET_V29 / "expected-kv.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        db.put(entry["k"].encode("utf-8"), entry["v"].encode("utf-8"))
    db.close()
    return blue, green


# ------------------------------------------------------------------------------------ the v31 node


def test_copies_of_a_real_v31_node_pass_every_check(v31_pair: tuple[Path, Path]) -> None:
    blue, green = v31_pair
    report = verify_green(blue, green)
    assert [c.name for c in report.checks] == ALL_CHECKS
    assert failing(report) == set(), report.summary()
    # That node stopped filling SQL data_feeds when it moved to the KV, so the expected df/dfv keys
    # cannot be rebuilt from blue's SQL: each copied key is checked for ocore's form and its unit.
    feeds = check(report, CHECK_KV_DATA_FEEDS)
    assert feeds.checked == 44 and feeds.failed == 0
    assert "source already on the KV store" in feeds.detail
    units = check(report, CHECK_KV_UNITS)
    assert units.checked == 14 and units.failed == 0
    assert check(report, CHECK_BALLS).checked == 13
    assert report.passed


def test_a_copied_data_feed_key_naming_a_unit_green_lacks_fails_kv_data_feeds(v31_pair: tuple[Path, Path]) -> None:
    blue, green = v31_pair
    [(key, value)] = kv_items(green, b"df\n")[:1]
    ghost = "GhostUnitGhostUnitGhostUnitGhostUnitGhost0A="
    db = kv_open(green)
    db.put(key, ghost.encode("ascii"))
    db.close()
    report = verify_green(blue, green)
    assert failing(report) == {CHECK_KV_DATA_FEEDS}
    [item] = check(report, CHECK_KV_DATA_FEEDS).first_failures
    assert ghost in item and "green does not hold" in item


def test_verify_leaves_blue_and_green_byte_for_byte_unchanged_apart_from_rocksdict_files(
    v31_pair: tuple[Path, Path],
) -> None:
    blue, green = v31_pair
    before_blue, before_green = tree_digest(blue), tree_digest(green)
    verify_green(blue, green)
    assert tree_digest(blue) == before_blue
    after_green = tree_digest(green)
    # rocksdict writes an OPTIONS file and rocksdict-config.json even when opening read-only (green is ours)
    changed = {k for k in before_green.keys() | after_green.keys() if before_green.get(k) != after_green.get(k)}
    assert all(re.fullmatch(r"rocksdb/(OPTIONS-\d+|rocksdict-config\.json|LOG.*)", k) for k in changed), changed


def test_open_readonly_creates_no_wal_or_shm_next_to_a_wal_mode_database(tmp_path: Path) -> None:
    copy = writable_copy(DEVNET_V31 / DB, tmp_path / DB)
    conn = open_readonly(copy)
    assert conn.execute("PRAGMA journal_mode").fetchall()[0][0] in ("wal", "delete")
    assert conn.execute("SELECT count(*) FROM units").fetchall() == [(14,)]
    with pytest.raises(apsw.ReadOnlyError):
        conn.execute("DELETE FROM units")
    conn.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [DB]


def test_open_readonly_reads_committed_data_still_in_the_wal(tmp_path: Path) -> None:
    copy = writable_copy(DEVNET_V31 / DB, tmp_path / DB)
    writer = apsw.Connection(str(copy))
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("DELETE FROM known_bad_joints")
    writer.execute("INSERT INTO known_bad_joints (joint, json, error) VALUES ('x', '{}', 'only in the WAL')")
    assert (tmp_path / (DB + "-wal")).stat().st_size > 0
    reader = open_readonly(copy)
    assert reader.execute("SELECT error FROM known_bad_joints").fetchall() == [("only in the WAL",)]
    reader.close()
    writer.close()


# ------------------------------------------------------------------------------------ defects, one per check


def test_flipped_byte_in_a_joint_fails_only_kv_units_and_names_the_unit(v31_pair: tuple[Path, Path]) -> None:
    blue, green = v31_pair
    unit = GENESIS
    db = kv_open(green)
    key = b"j\n" + unit.encode()
    value = db[key]
    m = re.search(rb'"timestamp":(\d)', value)
    assert m is not None
    digit = m.group(1)
    flipped = b"1" if digit != b"1" else b"2"
    db[key] = value[: m.start(1)] + flipped + value[m.end(1):]
    db.close()
    report = verify_green(blue, green)
    assert failing(report) == {CHECK_KV_UNITS}
    units = check(report, CHECK_KV_UNITS)
    assert units.failed == 1
    assert units.first_failures[0].startswith(f"{unit}: stored unit hashes to ")


def test_unparsable_joint_fails_kv_units(v31_pair: tuple[Path, Path]) -> None:
    blue, green = v31_pair
    db = kv_open(green)
    key = b"j\n" + GENESIS.encode()
    db[key] = db[key][:-1]  # cut the closing brace
    db.close()
    units = check(verify_green(blue, green), CHECK_KV_UNITS)
    assert units.failed == 1 and units.first_failures[0].startswith(f"{GENESIS}: j value is not valid JSON")


def test_deleted_joint_key_fails_kv_units_and_names_the_unit(v31_pair: tuple[Path, Path]) -> None:
    blue, green = v31_pair
    [(unit,)] = sql(green, "SELECT unit FROM units ORDER BY unit DESC LIMIT 1")
    db = kv_open(green)
    del db[b"j\n" + str(unit).encode()]
    db.close()
    report = verify_green(blue, green)
    assert failing(report) == {CHECK_KV_UNITS}
    units = check(report, CHECK_KV_UNITS)
    assert units.failed == 1 and units.first_failures == [f"{unit}: no j key"]
    assert units.checked == 14


def test_stray_joint_key_fails_kv_units_and_names_the_key(v31_pair: tuple[Path, Path]) -> None:
    blue, green = v31_pair
    stray = "0000000000000000000000000000000000000000000="
    db = kv_open(green)
    db[b"j\n" + stray.encode()] = db[b"j\n" + GENESIS.encode()]
    db.close()
    report = verify_green(blue, green)
    assert failing(report) == {CHECK_KV_UNITS}
    units = check(report, CHECK_KV_UNITS)
    assert units.failed == 1 and units.first_failures == [f"j key without a units row: j\\n{stray}"]
    assert units.checked == 15


def test_dropped_index_fails_only_schema_and_names_the_index(v31_pair: tuple[Path, Path]) -> None:
    blue, green = v31_pair
    sql(green, "DROP INDEX byLevel")
    report = verify_green(blue, green)
    assert failing(report) == {CHECK_SCHEMA}
    schema = check(report, CHECK_SCHEMA)
    assert schema.failed == 1 and "byLevel" in schema.first_failures[0]
    assert schema.first_failures[0].startswith("missing index")


def test_changed_ball_fails_only_balls_and_names_the_unit(v31_pair: tuple[Path, Path]) -> None:
    blue, green = v31_pair
    # a ball that no other ball was built from, so exactly one re-hash fails
    [(unit, ball)] = sql(
        green,
        "SELECT unit, ball FROM balls WHERE unit NOT IN (SELECT parent_unit FROM parenthoods "
        "JOIN balls ON balls.unit=child_unit) AND unit NOT IN (SELECT skiplist_unit FROM skiplist_units) "
        "ORDER BY rowid LIMIT 1",
    )
    forged = "A" + str(ball)[1:] if not str(ball).startswith("A") else "B" + str(ball)[1:]
    sql(green, "UPDATE balls SET ball=? WHERE unit=?", (forged, unit))
    report = verify_green(blue, green)
    assert failing(report) == {CHECK_BALLS}
    balls = check(report, CHECK_BALLS)
    assert balls.failed == 1
    assert balls.first_failures == [f"{unit}: ball {forged} in balls, re-hashed {ball}"]


def test_ball_of_a_parent_gone_fails_balls(v31_pair: tuple[Path, Path]) -> None:
    blue, green = v31_pair
    sql(green, "DELETE FROM balls WHERE unit=?", (GENESIS,))
    balls = check(verify_green(blue, green), CHECK_BALLS)
    assert not balls.passed
    assert any(f"parent {GENESIS} has no ball" in item for item in balls.first_failures)


def test_new_foreign_key_violation_fails_only_foreign_keys(v31_pair: tuple[Path, Path]) -> None:
    blue, green = v31_pair
    ghost = "GhostUnitGhostUnitGhostUnitGhostUnitGhost0A="
    [(rowid,)] = sql(green, "SELECT rowid FROM units WHERE unit=?", (GENESIS,))
    sql(green, "UPDATE units SET best_parent_unit=? WHERE unit=?", (ghost, GENESIS))
    report = verify_green(blue, green)
    assert failing(report) == {CHECK_FOREIGN_KEYS}
    fk = check(report, CHECK_FOREIGN_KEYS)
    assert fk.failed == 1 and fk.first_failures == [f"units rowid={rowid} -> missing parent in units"]


def test_violation_already_in_blue_is_not_new(v31_pair: tuple[Path, Path]) -> None:
    blue, green = v31_pair
    ghost = "GhostUnitGhostUnitGhostUnitGhostUnitGhost0A="
    for side in (blue, green):
        sql(side, "UPDATE units SET best_parent_unit=? WHERE unit=?", (ghost, GENESIS))
    fk = check(verify_green(blue, green), CHECK_FOREIGN_KEYS)
    assert fk.passed and fk.checked == 1 and "1 violation(s) in green, 1 in blue's units" in fk.detail


def test_blue_is_asked_only_about_the_tables_where_green_has_violations(v31_pair: tuple[Path, Path]) -> None:
    """Blue's own violations elsewhere cannot change the verdict, and a healthy green needs no read of blue."""
    blue, green = v31_pair
    ghost = "GhostUnitGhostUnitGhostUnitGhostUnitGhost0A="
    sql(blue, "UPDATE units SET best_parent_unit=? WHERE unit=?", (ghost, GENESIS))  # blue's own, in units
    fk = check(verify_green(blue, green), CHECK_FOREIGN_KEYS)
    assert fk.passed and fk.checked == 0 and "blue not read (green has none)" in fk.detail
    [(rowid, unit)] = sql(green, "SELECT rowid, unit FROM units WHERE unit<>? LIMIT 1", (GENESIS,))
    sql(green, "UPDATE units SET best_parent_unit=? WHERE unit=?", (ghost, unit))  # a new one in green
    fk = check(verify_green(blue, green), CHECK_FOREIGN_KEYS)
    assert not fk.passed and fk.first_failures == [f"units rowid={rowid} -> missing parent in units"], fk
    assert "1 violation(s) in green, 1 in blue's units" in fk.detail  # blue's own one, in the same table


def test_wrong_user_version_fails_only_user_version(v31_pair: tuple[Path, Path]) -> None:
    blue, green = v31_pair
    sql(green, "PRAGMA user_version=30")
    report = verify_green(blue, green)
    assert failing(report) == {CHECK_USER_VERSION}
    assert check(report, CHECK_USER_VERSION).first_failures == ["user_version is 30, expected 31"]


def test_lost_rows_fail_only_row_counts_and_name_the_table(v31_pair: tuple[Path, Path]) -> None:
    blue, green = v31_pair
    [(n,)] = sql(blue, "SELECT count(*) FROM witness_list_hashes")
    sql(green, "DELETE FROM witness_list_hashes")
    report = verify_green(blue, green)
    assert failing(report) == {CHECK_ROW_COUNTS}
    assert check(report, CHECK_ROW_COUNTS).first_failures == [f"witness_list_hashes: blue has {n} rows, green 0; expected {n}"]


def test_corrupt_page_fails_integrity_check(v31_pair: tuple[Path, Path]) -> None:
    blue, green = v31_pair
    # overwrite the middle of the units table's root page: a structural defect SQLite itself detects
    [(root,)] = sql(green, "SELECT rootpage FROM sqlite_master WHERE name='sqlite_autoindex_units_1'")
    [(page_size,)] = sql(green, "PRAGMA page_size")
    sql(green, "PRAGMA journal_mode=DELETE")
    data = bytearray((green / DB).read_bytes())
    start = (int(root) - 1) * int(page_size)
    data[start + 8 : start + 64] = b"\xff" * 56
    (green / DB).write_bytes(bytes(data))
    integrity = check(verify_green(blue, green), CHECK_INTEGRITY)
    assert not integrity.passed and integrity.failed >= 1


def test_missing_kv_dir_fails_both_kv_checks_with_the_reason(v31_pair: tuple[Path, Path]) -> None:
    blue, green = v31_pair
    for p in sorted((green / "rocksdb").iterdir()):
        p.unlink()
    (green / "rocksdb").rmdir()
    report = verify_green(blue, green)
    for name in (CHECK_KV_UNITS, CHECK_KV_DATA_FEEDS):
        c = check(report, name)
        assert not c.passed and c.detail == "the check could not run"
        assert "no key-value store" in c.first_failures[0]
    assert check(report, CHECK_BALLS).passed


def test_a_dir_without_a_database_is_bad_input(v31_pair: tuple[Path, Path], tmp_path: Path) -> None:
    blue, _ = v31_pair
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInputError):
        verify_green(blue, empty)


# ------------------------------------------------------------------------------------ sampling


def test_sample_mode_is_reproducible_and_catches_a_defect_in_its_sample(v31_pair: tuple[Path, Path]) -> None:
    blue, green = v31_pair
    first = verify_green(blue, green, sample=5)
    second = verify_green(blue, green, sample=5)
    assert first.sample == 5
    for a, b in zip(first.checks, second.checks):
        assert (a.name, a.passed, a.checked, a.failed, a.first_failures) == (
            b.name, b.passed, b.checked, b.failed, b.first_failures,
        )
    # a sample as large as the table covers every unit: a deleted key cannot hide
    db = kv_open(green)
    del db[b"j\n" + GENESIS.encode()]
    db.close()
    units = check(verify_green(blue, green, sample=100), CHECK_KV_UNITS)
    assert not units.passed and f"{GENESIS}: no j key" in units.first_failures


def test_sample_mode_finds_a_stray_joint_key(v31_pair: tuple[Path, Path]) -> None:
    blue, green = v31_pair
    db = kv_open(green)
    db[b"j\n" + b"zzzzStray"] = b"{}"  # after every real key: any probe past the last unit lands on it
    db.close()
    units = check(verify_green(blue, green, sample=50), CHECK_KV_UNITS)
    assert not units.passed and "j key without a units row: j\\nzzzzStray" in units.first_failures


def test_progress_reports_each_streaming_check(v31_pair: tuple[Path, Path]) -> None:
    calls: list[tuple[str, int, int]] = []
    verify_green(*v31_pair, progress=lambda name, done, total: calls.append((name, done, total)))
    names = {c[0] for c in calls}
    assert {CHECK_ROW_COUNTS, CHECK_KV_UNITS, CHECK_BALLS} <= names
    assert (CHECK_KV_UNITS, 14, 14) in calls
    assert all(0 <= done <= total for _, done, total in calls)


# ------------------------------------------------------------------------------------ report


def test_report_round_trips_as_json_and_summarises_failures(v31_pair: tuple[Path, Path]) -> None:
    blue, green = v31_pair
    sql(green, "DELETE FROM witness_list_hashes")
    report = verify_green(blue, green)
    again = VerifyReport.model_validate_json(report.model_dump_json())
    assert again == report
    text = report.summary()
    assert text.splitlines()[0].startswith("verify FAILED")
    assert "[FAIL] row_counts:" in text
    assert "[PASS] kv_units: 14 checked, 0 failed" in text
    assert "[PASS] kv_data_feeds: 44 checked, 0 failed" in text


# ------------------------------------------------------------------------------------ migrated from version 29


def test_green_holding_exactly_ocores_own_migration_output_passes_every_check(ocore_pair: tuple[Path, Path]) -> None:
    blue, green = ocore_pair
    report = verify_green(blue, green)
    assert failing(report) == set(), report.summary()
    feeds = check(report, CHECK_KV_DATA_FEEDS)
    assert feeds.checked == 48  # the df/dfv keys of expected-kv.jsonl
    assert check(report, CHECK_KV_UNITS).checked == 14
    assert report.passed


def test_green_migrated_by_our_engine_passes_every_check(migrated_pair: tuple[Path, Path]) -> None:
    blue, green = migrated_pair
    report = verify_green(blue, green)
    assert failing(report) == set(), report.summary()
    assert report.summary().splitlines()[0].startswith("verify PASSED")


def test_sampled_verify_of_a_good_green_passes(migrated_pair: tuple[Path, Path]) -> None:
    report = verify_green(*migrated_pair, sample=4)
    assert failing(report) == set(), report.summary()
    assert 0 < check(report, CHECK_KV_UNITS).checked
    assert 0 < check(report, CHECK_KV_DATA_FEEDS).checked
    assert check(report, CHECK_BALLS).checked == 4


def test_changed_data_feed_value_fails_only_data_feeds_and_names_the_key(migrated_pair: tuple[Path, Path]) -> None:
    blue, green = migrated_pair
    [(key, value)] = [kv for kv in kv_items(green, b"dfv\n") if b"\ntimestamp\n" in kv[0]][:1]
    db = kv_open(green)
    db[key] = b"1" + value
    db.close()
    report = verify_green(blue, green)
    assert failing(report) == {CHECK_KV_DATA_FEEDS}
    feeds = check(report, CHECK_KV_DATA_FEEDS)
    assert feeds.failed == 1
    assert feeds.first_failures == [f"{shown(key)}: value {shown(b'1' + value)}, expected {shown(value)}"]


def test_missing_and_extra_data_feed_keys_are_counted_and_named(migrated_pair: tuple[Path, Path]) -> None:
    blue, green = migrated_pair
    [(key, _)] = kv_items(green, b"df\n")[:1]
    db = kv_open(green)
    del db[key]
    db[b"dfv\nSTRAYADDRESS\nfeed\nffffffff"] = b"x\nunit"
    db.close()
    report = verify_green(blue, green)
    assert failing(report) == {CHECK_KV_DATA_FEEDS}
    feeds = check(report, CHECK_KV_DATA_FEEDS)
    assert feeds.failed == 2
    assert f"missing {shown(key)}" in feeds.first_failures
    assert "extra dfv\\nSTRAYADDRESS\\nfeed\\nffffffff = x\\nunit" in feeds.first_failures
    assert "1 missing, 1 extra, 0 wrong value" in feeds.detail


def test_sampled_data_feed_check_catches_a_changed_value_in_its_sample(migrated_pair: tuple[Path, Path]) -> None:
    blue, green = migrated_pair
    items = kv_items(green, b"dfv\n")
    db = kv_open(green)
    for key, value in items:
        db[key] = value + b"!"
    db.close()
    feeds = check(verify_green(blue, green, sample=3), CHECK_KV_DATA_FEEDS)
    assert not feeds.passed and feeds.failed >= 3


def test_blue_at_version_28_skips_known_bad_joints_which_step_29_empties(tmp_path: Path) -> None:
    blue = writable_copy(DEVNET_V29, tmp_path / "blue")
    green = writable_copy(DEVNET_V29, tmp_path / "green")
    for side in (blue, green):
        sql(side, "INSERT INTO known_bad_joints (joint, json, error) VALUES ('j', '{}', 'bad')")
        sql(side, "PRAGMA user_version=28")
    sql(green, "DELETE FROM known_bad_joints")  # what step 29 does to green
    counts = check(verify_green(blue, green), CHECK_ROW_COUNTS)
    assert counts.passed and "known_bad_joints" in counts.detail


# ------------------------------------------------------------------------------------ a generated node


@pytest.fixture
def generated_pair(tmp_path: Path) -> tuple[Path, Path]:
    """blue: a generated version-28 devnet node (version-1 units without timestamp hashing, voided
    final-bad units with nonserial balls, skiplists, multi-author units, string and int feeds);
    green: a copy migrated by our engine."""
    import shutil

    from bluegreen.engine.migrate import MigrationOptions, migrate_copy
    from bluegreen.generator import generate_node_dir

    blue, green = tmp_path / "blue", tmp_path / "green"
    generate_node_dir(blue, units=600, version=28, network="devnet", seed=3)
    shutil.copytree(blue, green)
    assert migrate_copy(green / DB, green / "rocksdb", tmp_path / "journal.json", MigrationOptions()).completed
    return blue, green


def test_generated_node_migrated_by_our_engine_passes_every_check(generated_pair: tuple[Path, Path]) -> None:
    blue, green = generated_pair
    # the data must exercise what the checks depend on, or passing proves little
    assert sql(blue, "SELECT count(*) FROM balls JOIN units USING(unit) WHERE sequence='final-bad'")[0][0] > 0
    assert sql(blue, "SELECT count(*) FROM units WHERE version='1.0dev'")[0][0] > 0
    assert sql(blue, "SELECT count(*) FROM skiplist_units")[0][0] > 0
    report = verify_green(blue, green)
    assert failing(report) == set(), report.summary()
    assert check(report, CHECK_KV_UNITS).checked == 600
    assert check(report, CHECK_ROW_COUNTS).detail.endswith("known_bad_joints empty (step 29 empties it)")


def test_nonserial_flag_of_a_final_bad_ball_is_part_of_the_rehash(generated_pair: tuple[Path, Path]) -> None:
    blue, green = generated_pair
    [(unit,)] = sql(green, "SELECT unit FROM balls JOIN units USING(unit) WHERE sequence='final-bad' LIMIT 1")
    sql(green, "UPDATE units SET sequence='good' WHERE unit=?", (unit,))
    report = verify_green(blue, green)
    assert failing(report) == {CHECK_BALLS}
    balls = check(report, CHECK_BALLS)
    assert balls.failed == 1 and balls.first_failures[0].startswith(f"{unit}: ball ")


def _generate_and_migrate(tmp_path: Path, *, migrate: bool = True, **kwargs: object) -> tuple[Path, Path]:
    import shutil

    from bluegreen.engine.migrate import MigrationOptions, migrate_copy
    from bluegreen.generator import generate_node_dir

    blue, green = tmp_path / "blue", tmp_path / "green"
    generate_node_dir(blue, units=300, network="devnet", seed=3, **kwargs)  # type: ignore[arg-type]
    shutil.copytree(blue, green)
    if migrate:
        db = green / (LIGHT_DB if kwargs.get("light") else DB)
        assert migrate_copy(db, green / "rocksdb", tmp_path / "journal.json", MigrationOptions()).completed
    return blue, green


LIGHT_DB = "byteball-light.sqlite"


def test_light_node_green_is_checked_against_the_light_reference_without_hashing(tmp_path: Path) -> None:
    blue, green = _generate_and_migrate(tmp_path, version=28, light=True)
    report = verify_green(blue, green)
    assert failing(report) == set(), report.summary()
    assert check(report, CHECK_SCHEMA).detail == "against reference light-v31"
    assert "parse only (light node)" in check(report, CHECK_KV_UNITS).detail


def test_node_stuck_at_30_passes_once_migrated(tmp_path: Path) -> None:
    blue, green = _generate_and_migrate(tmp_path, version=29, stuck_at_30=True)
    report = verify_green(blue, green)
    assert failing(report) == set(), report.summary()


def test_node_stuck_at_30_with_its_half_filled_kv_fails(tmp_path: Path) -> None:
    blue, green = _generate_and_migrate(tmp_path, migrate=False, version=29, stuck_at_30=True)
    report = verify_green(blue, green)
    assert {CHECK_USER_VERSION, CHECK_KV_UNITS} <= failing(report)
    units = check(report, CHECK_KV_UNITS)
    assert units.failed > 0 and all(item.endswith(": no j key") for item in units.first_failures)
