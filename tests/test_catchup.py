"""`upgrade catch-up` and promote's last catch-up on a node a real writer process keeps extending.

The oracle: a from-scratch migration (`migrate_copy`) of a copy of blue's final state. Green's KV must be
byte-identical to it and its SQLite row-for-row equal, every table. The data is checked to contain what
makes a catch-up hard (units unstable at the snapshot that became stable, final-bad units voided after it,
outputs spent after it), so the equality proves something. SIGKILLs inside catch-up (and inside promote's)
leave blue or a complete green, and the next command recovers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import apsw
import pytest

from bluegreen.engine.kvwriter import iter_kv
from bluegreen.engine.migrate import MigrationOptions, migrate_copy
from bluegreen.generator import generate_node_dir
from bluegreen.generator.extend import extend_node_dir
from bluegreen.lifecycle import command, greendiff, snapshot
from bluegreen.lifecycle.state import Phase, StateStore
from test_lifecycle_support import cli_json

REPO = Path(__file__).resolve().parent.parent
WRITER = """
import sys, time
from pathlib import Path
from bluegreen.generator.extend import extend_node_dir
node, stop, seed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
i = 0
while not stop.exists():
    extend_node_dir(node, units=3 + i % 5, seed=seed + i)
    i += 1
    time.sleep(0.01)
"""


def _rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = snapshot.open_readonly_quiet(db)  # never leaves a -wal behind (green's fingerprint would change)
    conn.setbusytimeout(30_000)  # the writer process may hold the lock
    try:
        return list(conn.execute(sql, args))
    finally:
        conn.close()


class Writer:
    """A process extending the node until stopped."""

    def __init__(self, node: Path, tmp: Path, seed: int) -> None:
        self.stop = tmp / f"stop-{seed}"
        self.node = node
        self.proc = subprocess.Popen([sys.executable, "-c", WRITER, str(node), str(self.stop), str(seed)], cwd=REPO)
        self.start_rowid = self.rowid()

    def rowid(self) -> int:
        return int(_rows(self.node / "byteball.sqlite", "SELECT MAX(rowid) FROM units")[0][0])

    def wait_for(self, units: int) -> None:
        deadline = time.monotonic() + 120
        while self.rowid() < self.start_rowid + units:
            assert self.proc.poll() is None, "the writer died"
            assert time.monotonic() < deadline, "the writer is too slow"
            time.sleep(0.05)

    def finish(self) -> None:
        self.stop.touch()
        assert self.proc.wait(timeout=120) == 0


def _oracle(blue_db: Path, out: Path, target: int) -> Path:
    """A from-scratch migration of a copy of blue's final SQLite."""
    out.mkdir()
    src = apsw.Connection(f"file:{blue_db}?mode=ro", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    dst = apsw.Connection(str(out / "byteball.sqlite"))
    with dst.backup("main", src, "main") as b:
        b.step(-1)
    dst.close()
    src.close()
    report = migrate_copy(out / "byteball.sqlite", out / "rocksdb", out / "journal.json",
                          MigrationOptions(target_version=target))
    assert report.completed
    return out


def assert_same_as_oracle(green: Path, oracle: Path) -> None:
    """KV byte-identical (every key and value) and SQLite row-for-row equal, every table, schema too."""
    kv_green, kv_oracle = list(iter_kv(green / "rocksdb")), list(iter_kv(oracle / "rocksdb"))
    assert len(kv_green) == len(kv_oracle)
    assert kv_green == kv_oracle
    gdb, odb = green / "byteball.sqlite", oracle / "byteball.sqlite"
    schema = "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
    assert _rows(gdb, schema) == _rows(odb, schema)
    assert _rows(gdb, "PRAGMA user_version") == _rows(odb, "PRAGMA user_version")
    for (table,) in _rows(odb, "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"):
        # node_vars: a step inserts its rows with CURRENT_TIMESTAMP (the moment the step ran, never equal)
        cols = "name, value" if table == "node_vars" else "*"
        sql = f"SELECT {cols} FROM `{table}` ORDER BY rowid"
        try:
            g, o = _rows(gdb, sql), _rows(odb, sql)
        except apsw.SQLError:  # WITHOUT ROWID
            g, o = sorted(_rows(gdb, f"SELECT * FROM `{table}`"), key=repr), sorted(_rows(odb, f"SELECT * FROM `{table}`"), key=repr)
        assert g == o, table


def _hard_cases(prev: Path, final: Path) -> dict[str, int]:
    """What happened after the snapshot: unstable units that became stable, voided final-bad units, outputs spent."""
    unstable = {u for (u,) in _rows(prev, "SELECT unit FROM units WHERE is_stable=0")}
    stable_now = {u for (u,) in _rows(final, "SELECT unit FROM units WHERE is_stable=1")}
    at_snapshot = {u for (u,) in _rows(prev, "SELECT unit FROM units")}
    voided_before = {u for (u,) in _rows(prev, "SELECT unit FROM archived_joints WHERE reason='voided'")}
    voided_now = {u for (u,) in _rows(final, "SELECT unit FROM archived_joints WHERE reason='voided'")}
    unspent = {r for r in _rows(prev, "SELECT unit, message_index, output_index FROM outputs WHERE is_spent=0")}
    spent_now = {r for r in _rows(final, "SELECT unit, message_index, output_index FROM outputs WHERE is_spent=1")}
    return {"became_stable": len(unstable & stable_now), "voided": len((voided_now - voided_before) & at_snapshot),
            "spent": len(unspent & spent_now)}


def test_catch_up_under_a_writer_then_promote_equals_a_fresh_migration(tmp_path: Path) -> None:
    g = generate_node_dir(tmp_path / "node", units=500, version=28, seed=11)
    node = g.out
    staging = tmp_path / "node.bluegreen"
    writer = Writer(node, tmp_path, seed=100)
    try:
        writer.wait_for(5)
        res = command.stage(node, online=True)  # the node's own target (else the highest known)
        first_prev = tmp_path / "first-prev.sqlite"
        os.link(staging / "work" / "source-prev.sqlite", first_prev)  # the stage's snapshot (renamed away later)
        assert command.verify(node).passed  # blue moving on is expected for an online stage
        writer.wait_for(60)
        c1 = command.catch_up(node)
        assert c1.stats is not None and c1.stats.to_units_rowid > c1.stats.from_units_rowid
        c1_prev = tmp_path / "c1-prev.sqlite"
        os.link(staging / "work" / "source-prev.sqlite", c1_prev)  # the first catch-up's snapshot
        st = command.status(node)
        writer.wait_for(120)
        c2 = command.catch_up(node)
        assert c2.stats is not None and c2.stats.from_units_rowid == c1.stats.to_units_rowid
    finally:
        writer.finish()
    assert st.phase == Phase.VERIFIED
    # a catch-up while a bad (double-spend) unit is whole in blue, not yet voided: green gets it whole...
    blue = node / "byteball.sqlite"
    for seed in range(1000, 1100):
        if _rows(blue, "SELECT 1 FROM units WHERE sequence!='good' AND unit NOT IN (SELECT unit FROM archived_joints)"):
            break
        extend_node_dir(node, units=3, seed=seed)
    c3 = command.catch_up(node)
    assert c3.stats is not None
    c3_prev = tmp_path / "c3-prev.sqlite"
    os.link(staging / "work" / "source-prev.sqlite", c3_prev)
    # ...and more after the last catch-up (voiding it), written with the node "stopped": promote catches up
    extend_node_dir(node, units=200, seed=7)
    st = command.status(node)
    assert st.online_lag is not None and st.online_lag.new_units and st.online_lag.new_units >= 200
    steps: set[str] = set()
    p = command.promote(node, progress=lambda step, done, total: steps.add(step))
    assert p.catch_up is not None and p.catch_up.joints_rebuilt >= 200
    assert p.downtime_seconds is not None and p.downtime_seconds > 0 and "downtime" in p.message
    # the downtime's parts add up to it; the catch-up's own parts to the catch-up
    assert list(p.downtime_parts)[0] == "catch_up" and "swap" in p.downtime_parts
    assert abs(sum(p.downtime_parts.values()) - p.downtime_seconds) < 0.05, p.downtime_parts
    tm = p.catch_up.timings
    assert tm.snapshot > 0 and tm.diff > 0 and tm.joints > 0 and tm.install > 0
    assert sum(tm.model_dump().values()) <= p.catch_up.seconds + 0.05
    state = StateStore(staging).load()
    assert state is not None and state.phase == Phase.PROMOTED and len(state.catch_ups) == 4
    # rollback's baseline: the caught-up green's counts from the catch-up's own check, not counted again
    assert "row counts" not in steps
    assert state.green_row_counts_promoted == greendiff.row_counts(node / "byteball.sqlite")
    assert state.online_position is not None and state.online_position.method == "copy (node stopped)"
    final_blue = staging / "blue-previous" / "byteball.sqlite"
    for prev in (first_prev, c1_prev):
        cases = _hard_cases(prev, final_blue)
        assert cases["became_stable"] > 0 and cases["spent"] > 0, cases
    assert _hard_cases(c3_prev, final_blue)["voided"] > 0  # whole in green after catch-up 3, voided later
    assert sum(c.mci_window_units + c.changed_units for c in state.catch_ups) > 0
    oracle = _oracle(final_blue, tmp_path / "oracle", res.target_version or 31)
    assert_same_as_oracle(node, oracle)
    # every catch-up compared only the rows on changed pages; on these real snapshots (a writer running, rows
    # updated in place, units voided) that finds exactly the units a compare of every row finds
    assert all(c.diff_method == "pages" and 0 < c.rows_compared for c in state.catch_ups), state.catch_ups
    for old, new in ((first_prev, c1_prev), (c1_prev, c3_prev), (first_prev, c3_prev)):
        assert _diff_units(old, new, pages=True) == _diff_units(old, new, pages=False)


def _diff_units(old: Path, new: Path, *, pages: bool) -> set[str]:
    """temp.cu_units after diff_units over two raw snapshots, by the page compare or by every row."""
    from bluegreen.engine.catchup import CatchUpStats, diff_units

    conn = apsw.Connection(f"file:{new}?mode=ro", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:
        conn.execute("ATTACH ? AS old", (f"file:{old}?mode=ro",))
        stats = CatchUpStats(started_at_unix=0, from_units_rowid=0, to_units_rowid=0, units_before=0, units_after=0)
        diff_units(conn, stats, (old, new) if pages else None)
        assert stats.diff_method == ("pages" if pages else "rows")
        return {r[0] for r in conn.execute("SELECT unit FROM temp.cu_units")}
    finally:
        conn.close()


def _cli(*args: str, kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("BLUEGREEN_KILL_AT", None)
    if kill_at:
        env["BLUEGREEN_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "bluegreen", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def _db_fingerprint(db: Path) -> list[tuple[Any, ...]]:
    return _rows(db, "SELECT rowid, unit, is_stable, main_chain_index FROM units ORDER BY rowid")


@pytest.mark.parametrize("point", ["catchup.after_snapshot", "catchup.mid_joints", "catchup.before_commit",
                                   "catchup.before_install", "catchup.mid_install@2"])
def test_sigkill_inside_catch_up_and_inside_promotes_catch_up(tmp_path: Path, point: str) -> None:
    g = generate_node_dir(tmp_path / "node", units=300, version=28, seed=21)
    node, staging = g.out, tmp_path / "node.bluegreen"
    command.stage(node, online=True, target_version=31)
    assert command.verify(node).passed
    extend_node_dir(node, units=40, seed=1)
    green_before = _db_fingerprint(staging / "green" / "byteball.sqlite")
    blue_before = _db_fingerprint(node / "byteball.sqlite")
    r = _cli("catch-up", "--data-dir", str(node), "--json", kill_at=point)
    assert r.returncode == -9, r.stderr
    # blue untouched; green is the old green or the complete new one (never half): the journal decides
    assert _db_fingerprint(node / "byteball.sqlite") == blue_before
    complete = (staging / "work" / "catchup" / "journal.json").exists()
    if not complete:
        assert _db_fingerprint(staging / "green" / "byteball.sqlite") == green_before or point.startswith("catchup.mid_install")
    st = command.status(node)  # recovers
    assert st.recovered and not (staging / "work" / "catchup").exists()
    assert st.phase == Phase.VERIFIED
    extend_node_dir(node, units=20, seed=2)
    # promote's own catch-up killed: the data dir stays blue, the next promote finishes
    r2 = _cli("promote", "--data-dir", str(node), "--json", "--yes", kill_at=point)
    assert r2.returncode == -9, r2.stderr
    assert _db_fingerprint(node / "byteball.sqlite")[-1][0] > blue_before[-1][0]  # blue, with its new units
    assert (node / "rocksdb").exists() is False or not any((node / "rocksdb").iterdir())
    p = command.promote(node)
    assert p.phase == Phase.PROMOTED and p.recovered
    oracle = _oracle(staging / "blue-previous" / "byteball.sqlite", tmp_path / "oracle", 31)
    assert_same_as_oracle(node, oracle)


def test_cli_catch_up_json_and_refusals(tmp_path: Path) -> None:
    g = generate_node_dir(tmp_path / "node", units=200, version=28, seed=31)
    node = g.out
    command.stage(node, online=True, target_version=31)
    rc, doc = cli_json("catch-up", "--data-dir", str(node))
    assert rc == 0 and doc["noop"] and doc["command"] == "catch-up"  # blue did not move
    extend_node_dir(node, units=15, seed=3)
    rc, doc = cli_json("catch-up", "--data-dir", str(node))
    assert rc == 0 and not doc["noop"] and doc["stats"]["joints_rebuilt"] >= 15, doc
    assert doc["stats"]["units_after"] == doc["stats"]["units_before"] + 15
    assert set(doc["stats"]["timings"]) >= {"snapshot", "diff", "sql_steps", "joints", "feeds", "install"}
    # an offline stage has nothing to catch up from
    g2 = generate_node_dir(tmp_path / "off", units=100, version=28, seed=32)
    command.stage(g2.out, target_version=31)
    rc, err = cli_json("catch-up", "--data-dir", str(g2.out))
    assert rc == 3 and err["error"] == "PreflightError" and "--online" in err["message"]
