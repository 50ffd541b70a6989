"""The v31 engine against the real devnet node: ocore's own migration output, byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import apsw
import pytest

from bluegreen.engine.kvwriter import iter_kv
from bluegreen.engine.migrate import MigrationOptions, migrate_copy
from bluegreen.errors import MigrationError
from tests.conftest import DEVNET_V29


def expected_kv() -> dict[bytes, bytes]:
    lines = (DEVNET_V29 / "expected-kv.jsonl").read_text("utf-8").splitlines()
    return {json.loads(l)["k"].encode("utf-8"): json.loads(l)["v"].encode("utf-8") for l in lines}


def run_engine(node: Path, **opts: object):
    return migrate_copy(node / "byteball.sqlite", node / "rocksdb", node.parent / f"{node.name}-journal.json",
                        MigrationOptions(**opts))


def user_version(db: Path) -> int:
    conn = apsw.Connection(str(db))
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def test_devnet_v29_migrates_to_exactly_ocores_62_keys(devnet_v29: Path) -> None:
    report = run_engine(devnet_v29)
    assert report.completed and report.failures_total == 0
    got = dict(iter_kv(devnet_v29 / "rocksdb"))
    want = expected_kv()
    assert len(want) == 62
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key] == value, key
    assert user_version(devnet_v29 / "byteball.sqlite") == 31
    conn = apsw.Connection(str(devnet_v29 / "byteball.sqlite"))
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert report.units_written == 14


def test_second_run_is_a_no_op(devnet_v29: Path) -> None:
    run_engine(devnet_v29)
    again = run_engine(devnet_v29)
    assert again.already_at_target and again.completed


def test_a_rowid_gap_does_not_skip_units(devnet_v29: Path) -> None:
    """ocore stops at the first empty window of 10,000 rowids; we read every unit."""
    db = devnet_v29 / "byteball.sqlite"
    conn = apsw.Connection(str(db))
    last = conn.execute("SELECT unit FROM units ORDER BY rowid DESC LIMIT 1").fetchone()[0]
    conn.execute("UPDATE units SET rowid=rowid+50000 WHERE unit=?", (last,))
    conn.close()
    report = run_engine(devnet_v29)
    got = dict(iter_kv(devnet_v29 / "rocksdb"))
    assert got == expected_kv()
    assert ("j\n" + last).encode() in got and report.units_written == 14


def _corrupt_payload_and_drop_definition(db: Path) -> tuple[str, str]:
    conn = apsw.Connection(str(db))
    feed_unit = conn.execute(
        "SELECT unit FROM data_feeds WHERE `value` IS NOT NULL ORDER BY rowid LIMIT 1").fetchone()[0]
    conn.execute("UPDATE data_feeds SET `value`=`value` || 'x' WHERE unit=? AND `value` IS NOT NULL", (feed_unit,))
    chash, def_unit = conn.execute(
        "SELECT definition_chash, unit FROM unit_authors WHERE definition_chash IS NOT NULL AND unit<>? "
        "ORDER BY rowid LIMIT 1", (feed_unit,)).fetchone()
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("DELETE FROM definitions WHERE definition_chash=?", (chash,))
    conn.close()
    return feed_unit, def_unit


def test_a_unit_that_no_longer_hashes_to_its_id_is_named_with_both_hashes(devnet_v29: Path) -> None:
    db = devnet_v29 / "byteball.sqlite"
    conn = apsw.Connection(str(db))
    unit = conn.execute("SELECT unit FROM units WHERE main_chain_index=3").fetchone()[0]
    conn.execute("UPDATE messages SET payload_hash='AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=' WHERE unit=?", (unit,))
    conn.close()
    with pytest.raises(MigrationError) as caught:
        run_engine(devnet_v29)
    [failure] = caught.value.report.failures  # type: ignore[attr-defined]
    assert (failure.unit, failure.reason, failure.expected_hash) == (unit, "hash_mismatch", unit)
    assert failure.computed_hash and failure.computed_hash != unit
    # left at ocore's own state before its KV fill (the SQL steps below 31 are committed first), no KV
    assert user_version(db) == 30 and not (devnet_v29 / "rocksdb").exists()


def test_bad_units_are_all_named_and_the_copy_stops_at_ocores_pre_fill_state(devnet_v29: Path) -> None:
    db = devnet_v29 / "byteball.sqlite"
    feed_unit, def_unit = _corrupt_payload_and_drop_definition(db)
    with pytest.raises(MigrationError) as caught:
        run_engine(devnet_v29)
    report = caught.value.report  # type: ignore[attr-defined]
    reasons = {f.unit: f for f in report.failures}
    # The unit hash covers payload_hash, not the payload: ocore would copy the changed value silently.
    assert reasons[feed_unit].reason == "payload_hash_mismatch"
    assert "message 0 (data_feed)" in reasons[feed_unit].detail
    assert reasons[def_unit].reason == "missing_definition"
    # version 30 is what ocore commits before its fill: the v30 tables, no KV; steps 32..N rolled back
    assert user_version(db) == 30
    tables = {r[0] for r in apsw.Connection(str(db)).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "joints" in tables
    assert not (devnet_v29 / "rocksdb").exists()


KILL_SCRIPT = """
import sys
from pathlib import Path
from bluegreen.engine.migrate import MigrationOptions, migrate_copy
node = Path(sys.argv[1])
migrate_copy(node / "byteball.sqlite", node / "rocksdb", node.parent / f"{node.name}-journal.json",
             MigrationOptions(unit_chunk=3, feed_chunk=5))
"""


@pytest.mark.parametrize("point", [
    "engine.after_sql_steps",
    "engine.after_sql_commit",
    "engine.mid_units_chunk@2",
    "engine.after_units_chunk_write@3",
    "engine.between_units_chunks@1",
    "engine.mid_feeds_chunk@2",
    "engine.before_kv_install",
    "engine.before_commit",
])
def test_killed_mid_run_then_restarted_gives_the_same_kv(devnet_v29: Path, point: str) -> None:
    env = {**os.environ, "BLUEGREEN_KILL_AT": point}
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(devnet_v29)], env=env,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == -9, "the kill point was not reached"
    # before the commit of the SQL steps: the source version; after it, ocore's own pre-fill state
    assert user_version(devnet_v29 / "byteball.sqlite") == (29 if point == "engine.after_sql_steps" else 30)
    report = run_engine(devnet_v29, unit_chunk=3, feed_chunk=5)
    assert report.completed and report.source_version == 29
    assert report.steps["from_version"] == 29 and 30 in report.steps["steps"]
    assert dict(iter_kv(devnet_v29 / "rocksdb")) == expected_kv()
    assert user_version(devnet_v29 / "byteball.sqlite") == 31


CARRY_KILL = """
import sys
from pathlib import Path
from bluegreen.engine.migrate import MigrationOptions, migrate_copy
node = Path(sys.argv[1])
migrate_copy(node / "byteball.sqlite", node / "rocksdb", node.parent / f"{node.name}-journal.json",
             MigrationOptions())
"""


def test_a_kill_right_after_the_kept_keys_were_carried_over_carries_them_again(devnet_v29: Path) -> None:
    """A pre-30 copy whose `rocksdb/` already holds keys that are not the migration's (e.g. a node's own keys):
    they are carried into the build before the fill. Killed before the journal says the carry is done, the
    re-run must carry them again, not resume a build that lacks them."""
    from bluegreen.engine.rocks_options import open_node_compatible

    db = open_node_compatible(devnet_v29 / "rocksdb")
    try:
        db.put(b"st\nSOMEAA\nvar", b"5")  # not a j/df/dfv key: the migration must keep it
    finally:
        db.close()
    env = {**os.environ, "BLUEGREEN_KILL_AT": "engine.after_carry"}
    proc = subprocess.run([sys.executable, "-c", CARRY_KILL, str(devnet_v29)], env=env,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == -9, "the kill point was not reached"
    report = run_engine(devnet_v29)
    assert report.completed and report.carried_kv_keys == 1
    kv = dict(iter_kv(devnet_v29 / "rocksdb"))
    assert kv.pop(b"st\nSOMEAA\nvar") == b"5"
    assert kv == expected_kv()
