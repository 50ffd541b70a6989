"""A damaged source, through `upgrade stage` on a generated node (real CLI child, real files).

For each damage: stage stops with a clear message, its next step and the documented exit code; blue
is untouched (sha256 of every file); the staging area is in a phase from which promote refuses (and
promote does refuse); and every bad unit is named with its reason (several at once too)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from bluegreen.errors import MigrationError, SourceDataError
from faultkit import fresh_node, manifest, record, sql
from test_lifecycle_support import cli_json

BAD_HASH = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
Damage = Callable[[Path], dict[str, str]]  # damages the node dir; returns {bad unit: expected reason}


def _db(node: Path) -> Path:
    return node / "byteball.sqlite"


def _late_units(node: Path, where: str, n: int = 1) -> list[str]:
    """Units past the genesis era matching `where` (a condition on messages m / units u)."""
    rows = sql(_db(node), f"SELECT DISTINCT u.unit FROM units u JOIN messages m ON m.unit=u.unit "
                          f"WHERE u.rowid > 50 AND {where} ORDER BY u.rowid LIMIT {n}")[0]
    assert len(rows) == n, f"the generated node has no {n} units with {where}"
    return [r[0] for r in rows]


def payload_hash_changed(node: Path) -> dict[str, str]:
    """messages.payload_hash is part of the unit hash: the unit no longer hashes to its id."""
    (unit,) = _late_units(node, "m.app='payment'")
    sql(_db(node), f"UPDATE messages SET payload_hash='{BAD_HASH}' WHERE unit='{unit}' AND message_index=0")
    return {unit: "hash_mismatch"}


def parent_changed(node: Path) -> dict[str, str]:
    """A parenthood row (covered by the unit hash) points at another, older unit."""
    child, parent = sql(_db(node), "SELECT p.child_unit, p.parent_unit FROM parenthoods p JOIN units u "
                                   "ON u.unit=p.child_unit WHERE u.rowid > 200 ORDER BY u.rowid LIMIT 1")[0][0]
    other = sql(_db(node), f"SELECT unit FROM units WHERE rowid BETWEEN 100 AND 190 AND unit NOT IN "
                           f"(SELECT parent_unit FROM parenthoods WHERE child_unit='{child}') LIMIT 1")[0][0][0]
    sql(_db(node), f"UPDATE parenthoods SET parent_unit='{other}' WHERE child_unit='{child}' AND parent_unit='{parent}'")
    return {child: "hash_mismatch"}


def author_address_changed(node: Path) -> dict[str, str]:
    """An author's address (covered by the unit hash) replaced by another existing address."""
    unit, addr = sql(_db(node), "SELECT a.unit, a.address FROM unit_authors a JOIN units u ON u.unit=a.unit "
                                "WHERE u.rowid > 300 AND a.definition_chash IS NULL ORDER BY u.rowid LIMIT 1")[0][0]
    other = sql(_db(node), f"SELECT address FROM addresses WHERE address<>'{addr}' ORDER BY address LIMIT 1")[0][0][0]
    sql(_db(node), "PRAGMA foreign_keys=OFF",
        f"UPDATE unit_authors SET address='{other}' WHERE unit='{unit}' AND address='{addr}'",
        f"UPDATE authentifiers SET address='{other}' WHERE unit='{unit}' AND address='{addr}'")
    return {unit: "hash_mismatch"}


def definition_missing(node: Path) -> dict[str, str]:
    """The definition a unit's author revealed is gone from `definitions`."""
    unit, chash = sql(_db(node), "SELECT a.unit, a.definition_chash FROM unit_authors a JOIN units u ON u.unit=a.unit "
                                 "WHERE a.definition_chash IS NOT NULL AND u.rowid > 1 ORDER BY u.rowid LIMIT 1")[0][0]
    sql(_db(node), f"DELETE FROM definitions WHERE definition_chash='{chash}'")
    return {unit: "missing_definition"}


def data_feed_rows_missing(node: Path) -> dict[str, str]:
    """A data_feed message whose data_feeds rows are gone."""
    unit, idx = sql(_db(node), "SELECT unit, message_index FROM messages WHERE app='data_feed' LIMIT 1")[0][0]
    sql(_db(node), f"DELETE FROM data_feeds WHERE unit='{unit}' AND message_index={idx}")
    return {unit: "missing_payload_rows"}


def poll_row_missing(node: Path) -> dict[str, str]:
    """A poll message whose polls row is gone."""
    unit, idx = sql(_db(node), "SELECT unit, message_index FROM messages WHERE app='poll' LIMIT 1")[0][0]
    sql(_db(node), f"DELETE FROM polls WHERE unit='{unit}' AND message_index={idx}")
    return {unit: "missing_payload_rows"}


def last_ball_unit_missing(node: Path) -> dict[str, str]:
    """A unit referenced as last_ball_unit is missing from units and balls: its referrers cannot be rebuilt."""
    lbu = sql(_db(node), "SELECT last_ball_unit FROM units WHERE last_ball_unit IN (SELECT unit FROM units WHERE "
                         "rowid > 50) GROUP BY last_ball_unit ORDER BY min(rowid) LIMIT 1")[0][0][0]
    referrers = [r[0] for r in sql(_db(node), f"SELECT unit FROM units WHERE last_ball_unit='{lbu}'")[0]]
    sql(_db(node), f"DELETE FROM balls WHERE unit='{lbu}'", f"DELETE FROM units WHERE unit='{lbu}'")
    return {u: "no_last_ball" for u in referrers}


DAMAGES: dict[str, Damage] = {
    "payload_hash": payload_hash_changed,
    "parenthood": parent_changed,
    "author_address": author_address_changed,
    "definition": definition_missing,
    "data_feeds_rows": data_feed_rows_missing,
    "poll_row": poll_row_missing,
    "last_ball_unit": last_ball_unit_missing,
}


def _stage_refused(tmp_path: Path, node: Path, blue: dict[str, str], error: type, exit_code: int) -> dict:
    rc, err = cli_json("stage", "--data-dir", str(node))
    assert rc == exit_code, err
    assert err["error"] == error.__name__ and err["hint"], err
    assert manifest(node) == blue, "blue changed"
    rc, st = cli_json("status", "--data-dir", str(node))
    assert rc == 0 and st["phase"] == "FAILED" and st["last_error"], st
    assert "upgrade stage" in st["next_step"]
    rc, p = cli_json("promote", "--data-dir", str(node))
    assert rc == 3 and "nothing promotable" in p["message"], p
    rc, v = cli_json("verify", "--data-dir", str(node))
    assert rc == 3, v
    assert manifest(node) == blue
    return err


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_unit_stops_stage_and_is_named(tmp_path: Path, damage: str) -> None:
    node = fresh_node(tmp_path)
    bad = DAMAGES[damage](node)
    blue = manifest(node)
    err = _stage_refused(tmp_path, node, blue, MigrationError, MigrationError.exit_code)
    for unit, reason in bad.items():
        assert f"{unit}: {reason}" in err["message"], err["message"]
    listing = (tmp_path / "node.bluegreen" / "reports" / "migration-failures.txt").read_text()
    assert sorted(line.split(": ")[0] for line in listing.splitlines()) == sorted(bad)
    record(tmp_path, f"source_damage_{damage}", bad_units=len(bad), exit_code=MigrationError.exit_code)


def test_several_bad_units_are_all_named_with_their_reasons(tmp_path: Path) -> None:
    node = fresh_node(tmp_path)
    bad: dict[str, str] = {}
    # The missing last-ball unit first (it removes a units row); the other damages avoid its referrers.
    bad.update(last_ball_unit_missing(node))
    for damage in (definition_missing, data_feed_rows_missing, poll_row_missing):
        bad.update(damage(node))
    # Four units failing their hash, spread over the DAG.
    avoid = ",".join(f"'{u}'" for u in bad)
    for unit in _late_units(node, f"m.app='payment' AND u.rowid > 250 AND u.unit NOT IN ({avoid})", 4):
        sql(_db(node), f"UPDATE messages SET payload_hash='{BAD_HASH}' WHERE unit='{unit}' AND message_index=0")
        bad[unit] = "hash_mismatch"
    blue = manifest(node)
    err = _stage_refused(tmp_path, node, blue, MigrationError, MigrationError.exit_code)
    assert err["message"].startswith(f"{len(bad)} unit(s)"), err["message"]
    for unit, reason in bad.items():
        assert f"{unit}: {reason}" in err["message"]
    rc, st = cli_json("status", "--data-dir", str(node))
    named = {f["unit"]: f["reason"] for f in st["migration_report"]["failures"]}
    assert named == bad
    record(tmp_path, "source_damage_several", bad_units=len(bad))


def test_truncated_sqlite_file_is_a_source_error(tmp_path: Path) -> None:
    node = fresh_node(tmp_path)
    db = _db(node)
    os.truncate(db, db.stat().st_size // 2)
    blue = manifest(node)
    err = _stage_refused(tmp_path, node, blue, SourceDataError, SourceDataError.exit_code)
    assert "damaged" in err["message"] and "header promises" in err["message"], err["message"]
    assert not (tmp_path / "node.bluegreen" / "green").exists()


def test_damaged_rocksdb_manifest_of_a_node_stuck_at_30_is_a_source_error(tmp_path: Path) -> None:
    node = fresh_node(tmp_path, units=120, seed=3, stuck_at_30=True)
    manifest_file = next((node / "rocksdb").glob("MANIFEST-*"))
    raw = bytearray(manifest_file.read_bytes())
    for i in range(10, min(len(raw), 200)):
        raw[i] ^= 0x5A  # flip bits in the records: RocksDB's checksum must catch it
    manifest_file.write_bytes(bytes(raw))
    blue = manifest(node)
    err = _stage_refused(tmp_path, node, blue, SourceDataError, SourceDataError.exit_code)
    assert "KV store is damaged" in err["message"] and "MANIFEST" in err["message"], err["message"]
    assert str(node / "rocksdb") in err["message"]
