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
from bluegreen.engine.pagediff import build_page_index, changed_rowids_indexed, rowid_tables
from bluegreen.generator import generate_node_dir
from bluegreen.generator.extend import extend_node_dir
from bluegreen.lifecycle import command, greendiff, snapshot
from bluegreen.lifecycle.catchup import COPY_ENV
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


@pytest.mark.parametrize("mode", ["patch", "copy"])
def test_catch_up_under_a_writer_then_promote_equals_a_fresh_migration(tmp_path: Path, mode: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`patch`: green patched in place with the rows blue changed (the default where the steps allow it);
    `copy`: green's SQLite built from a whole copy of the new snapshot. Both must equal a fresh migration."""
    if mode == "copy":
        monkeypatch.setenv(COPY_ENV, "1")
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
    assert tm.diff > 0 and tm.joints > 0 and tm.install > 0
    # patch: blue's own file is read (node stopped), nothing copied; copy: a snapshot and a copy of it
    assert (tm.snapshot == 0 and tm.copy_sqlite == 0) if mode == "patch" else (tm.snapshot > 0 and tm.copy_sqlite > 0)
    assert sum(tm.model_dump().values()) <= p.catch_up.seconds + 0.05
    state = StateStore(staging).load()
    assert state is not None and state.phase == Phase.PROMOTED and len(state.catch_ups) == 4
    # rollback's baseline: the caught-up green's counts from the catch-up's own check, not counted again
    assert "row counts" not in steps
    assert state.green_row_counts_promoted == greendiff.row_counts(node / "byteball.sqlite")
    assert state.online_position is not None and state.online_position.method == (
        "blue's own file (node stopped)" if mode == "patch" else "copy (node stopped)")
    assert (state.prev_behind is not None) == (mode == "patch")  # the kept snapshot is older than green
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
    method = "pages (row patch)" if mode == "patch" else "pages"
    assert all(c.diff_method == method and 0 < c.rows_compared and (c.copy_reason == "") == (mode == "patch")
               for c in state.catch_ups), \
        state.catch_ups
    for old, new in ((first_prev, c1_prev), (c1_prev, c3_prev), (first_prev, c3_prev), (c3_prev, final_blue)):
        if mode == "copy":
            assert _diff_units(old, new, pages=True) == _diff_units(old, new, pages=False)
        else:
            assert_indexed_candidates_cover_every_difference(old, new, tmp_path / "index.json")


def assert_indexed_candidates_cover_every_difference(old: Path, new: Path, scratch: Path) -> None:
    """The row patch's page compare (interior walks + the old file's overflow owners) names every rowid
    whose row differs, in every table, found here by comparing every row."""
    tables = rowid_tables(old)
    index = build_page_index(old, tables)
    roots = {}
    for t in tables:
        [(ro,)], [(rn,)] = _rows(old, "SELECT rootpage FROM sqlite_master WHERE name=?", t), \
            _rows(new, "SELECT rootpage FROM sqlite_master WHERE name=?", t)
        roots[t] = (ro, rn)
    candidates, dirty = changed_rowids_indexed(old, new, roots, index)
    assert len(dirty) > 0
    conn = apsw.Connection(str(scratch.with_suffix(".sqlite")))
    conn.execute("ATTACH ? AS a", (str(old),))
    conn.execute("ATTACH ? AS b", (str(new),))
    differing = 0
    for t in tables:
        rows = set()
        for x, y in (("a", "b"), ("b", "a")):
            rows |= {r[0] for r in conn.execute(f"SELECT rowid, * FROM {x}.`{t}` EXCEPT SELECT rowid, * FROM {y}.`{t}`")}
        differing += len(rows)
        assert rows <= candidates[t], (t, sorted(rows - candidates[t])[:10])
    conn.close()
    assert differing > 0


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
                                   "catchup.before_install", "catchup.mid_patch", "catchup.after_patch",
                                   "catchup.mid_install", "copy:catchup.mid_joints", "copy:catchup.mid_install@2"])
def test_sigkill_inside_catch_up_and_inside_promotes_catch_up(tmp_path: Path, point: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Row patch (and, `copy:`, the copy catch-up): a kill anywhere leaves green old or complete, blue as it
    was, and the next command finishes. Promote's row patch reads blue's own file: no snapshot step there."""
    if point.startswith("copy:"):
        monkeypatch.setenv(COPY_ENV, "1")
        point = point[len("copy:"):]
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
    in_promote = point if os.environ.get(COPY_ENV) or point != "catchup.after_snapshot" else "catchup.before_commit"
    r2 = _cli("promote", "--data-dir", str(node), "--json", "--yes", kill_at=in_promote)
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


def _same_file(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


def test_rollback_after_a_row_patch_promote_refreshes_the_kept_snapshot_so_catch_up_goes_on(tmp_path: Path) -> None:
    """Promote's row patch reads blue's own file and keeps no snapshot; rollback (blue exactly as promote read
    it) makes the kept snapshot blue again, so a later catch-up and promote are still exact."""
    g = generate_node_dir(tmp_path / "node", units=300, version=28, seed=41)
    node, staging = g.out, tmp_path / "node.bluegreen"
    command.stage(node, online=True, target_version=31)
    assert command.verify(node).passed
    extend_node_dir(node, units=30, seed=1)
    p = command.promote(node)
    assert p.catch_up is not None and p.catch_up.diff_method == "pages (row patch)"
    state = StateStore(staging).load()
    assert state is not None and state.prev_behind is not None
    prev = staging / "work" / "source-prev.sqlite"
    assert not _same_file(prev, staging / "blue-previous" / "byteball.sqlite")
    command.rollback(node)
    state = StateStore(staging).load()
    assert state is not None and state.prev_behind is None and state.phase == Phase.ROLLED_BACK
    assert _rows(prev, "SELECT * FROM units ORDER BY rowid") == _rows(node / "byteball.sqlite",
                                                                    "SELECT * FROM units ORDER BY rowid")
    extend_node_dir(node, units=25, seed=2)
    c = command.catch_up(node)
    assert c.stats is not None and c.stats.diff_method == "pages (row patch)"
    assert command.verify(node).passed
    assert command.promote(node).phase == Phase.PROMOTED
    assert_same_as_oracle(node, _oracle(staging / "blue-previous" / "byteball.sqlite", tmp_path / "oracle", 31))


@pytest.mark.slow
def test_a_promote_killed_after_its_row_patch_keeps_catch_up_possible_or_says_stage_again(tmp_path: Path) -> None:
    """Killed after the row patch, before the swap: the next command refreshes the kept snapshot from blue
    (unchanged); the node then writes and catch-up is exact. If the node writes before any command ran,
    catch-up cannot be exact and says to stage again."""
    g = generate_node_dir(tmp_path / "node", units=300, version=28, seed=43)
    node, staging = g.out, tmp_path / "node.bluegreen"
    command.stage(node, online=True, target_version=31)
    assert command.verify(node).passed
    extend_node_dir(node, units=30, seed=1)
    r = _cli("promote", "--data-dir", str(node), "--json", "--yes", kill_at="promote.before_swap")
    assert r.returncode == -9, r.stderr
    st = command.status(node)  # recovers: the swap undone, the snapshot refreshed
    assert st.phase == Phase.VERIFIED and any("refreshed" in n for n in st.recovered), st.recovered
    state = StateStore(staging).load()
    assert state is not None and state.prev_behind is None
    extend_node_dir(node, units=25, seed=2)
    assert command.catch_up(node).stats is not None
    assert command.promote(node).phase == Phase.PROMOTED
    assert_same_as_oracle(node, _oracle(staging / "blue-previous" / "byteball.sqlite", tmp_path / "oracle2", 31))
    # the other order: killed after the patch, then the node writes before bluegreen runs again
    g2 = generate_node_dir(tmp_path / "n2", units=200, version=28, seed=44)
    command.stage(g2.out, online=True, target_version=31)
    assert command.verify(g2.out).passed
    extend_node_dir(g2.out, units=20, seed=3)
    r = _cli("promote", "--data-dir", str(g2.out), "--json", "--yes", kill_at="promote.before_swap")
    assert r.returncode == -9, r.stderr
    extend_node_dir(g2.out, units=20, seed=4)
    rc, err = cli_json("catch-up", "--data-dir", str(g2.out))
    assert rc != 0 and "stage again" in err["hint"], err


def test_joints_rebuilt_by_worker_processes_equal_a_fresh_migration(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Many changed units: the row patch rebuilds joints in worker processes (each reading blue's own file),
    written in rowid order; the result is a fresh migration's, byte for byte."""
    from bluegreen.engine import rowpatch

    monkeypatch.setattr(rowpatch, "PARALLEL_JOINTS_MIN", 1)
    monkeypatch.setattr("bluegreen.engine.pool.default_jobs", lambda: 3)  # two for joints, one for the apply
    g = generate_node_dir(tmp_path / "node", units=300, version=28, seed=61)
    node, staging = g.out, tmp_path / "node.bluegreen"
    command.stage(node, online=True)  # the highest target: steps 32..50 in the plan too
    assert command.verify(node).passed
    extend_node_dir(node, units=120, seed=9)
    c = command.catch_up(node)  # node running: a snapshot, green checkpointed
    assert c.stats is not None and c.stats.joint_workers == 2 and c.stats.joints_rebuilt >= 120
    assert not (staging / "green" / "byteball.sqlite-wal").exists() or \
        (staging / "green" / "byteball.sqlite-wal").stat().st_size == 0
    extend_node_dir(node, units=80, seed=10)
    p = command.promote(node)  # node stopped: blue's own file, the commit left in green's -wal for the node
    assert p.catch_up is not None and p.catch_up.joint_workers == 2 and p.catch_up.timings.apply_commit > 0
    assert (node / "byteball.sqlite-wal").stat().st_size > 0
    final = staging / "blue-previous" / "byteball.sqlite"
    assert_same_as_oracle(node, _oracle(final, tmp_path / "oracle", _rows(node / "byteball.sqlite",
                                                                           "PRAGMA user_version")[0][0]))
