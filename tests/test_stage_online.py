"""`stage --online`: a real writer process keeps extending the node (one SQLite transaction per step) while
stage copies it. Green is blue at one consistent point: its units are exactly blue's units up to the recorded
rowid, every one hashes (the migration checks), foreign keys hold; verify compares green with its snapshot and promote catches up
(without the previous snapshot it refuses, naming the online snapshot).
Sources that keep data in a KV store are refused with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import apsw
import pytest

from bluegreen.errors import DriftError, PreflightError
from bluegreen.generator import generate_node_dir
from bluegreen.lifecycle import command, snapshot
from bluegreen.lifecycle.state import StateStore
from test_lifecycle_support import cli_json, rows

REPO = Path(__file__).resolve().parent.parent
WRITER = """
import json, sys, time
from pathlib import Path
from bluegreen.generator.extend import extend_node_dir
node, log, stop = Path(sys.argv[1]), open(sys.argv[2], "a"), Path(sys.argv[3])
i = 0
while not stop.exists():
    r = extend_node_dir(node, units=1 + i % 5, seed=i)
    log.write(json.dumps({"t": time.time(), "max_rowid": r.max_rowid}) + "\\n")
    log.flush()
    i += 1
"""


def _commits(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_online_stage_under_a_continuous_writer_copies_one_consistent_point(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, journal: str) -> None:
    g = generate_node_dir(tmp_path / "node", units=600, version=28, seed=5)
    node, db = g.out, g.db_path
    if journal != "wal":
        conn = apsw.Connection(str(db))
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.close()
    # tiny steps and longer pauses: the copy lasts long enough for the writer to commit many times inside it
    monkeypatch.setattr(snapshot, "ONLINE_PAGES_PER_STEP", 8)
    monkeypatch.setattr(snapshot, "ONLINE_SLEEP_SECONDS", 0.01)
    log, stop = tmp_path / "commits.jsonl", tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(node), str(log), str(stop)], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while (not log.exists() or len(_commits(log)) < 3) and time.monotonic() < deadline:
            assert writer.poll() is None, "the writer died"
            time.sleep(0.05)
        res = command.stage(node, online=True)
        time.sleep(0.3)  # a few commits after the stage as well
    finally:
        stop.touch()
        assert writer.wait(timeout=60) == 0
    state = StateStore(node.parent / "node.bluegreen").load()
    assert state is not None and state.online and state.online_position is not None
    pos = state.online_position
    assert pos.wal_mode == (journal == "wal")
    assert pos.method == ("read-transaction+steps" if journal == "wal" else "one-step")
    commits = _commits(log)
    assert pos.max_units_rowid in {c["max_rowid"] for c in commits} | {g.units}  # a committed state, not a torn one
    assert commits[-1]["max_rowid"] > pos.max_units_rowid  # blue moved on after the snapshot
    if journal == "wal":
        # the writer was never held back: it kept committing while the copy ran (many steps)
        assert pos.steps > 20
        assert any(pos.began_at_unix < c["t"] < pos.ended_at_unix for c in commits)
    # green = blue up to the recorded rowid (units are never deleted, rowids never reused)
    green_db = node.parent / "node.bluegreen" / "green" / "byteball.sqlite"
    green = rows(green_db, "SELECT rowid, unit, is_stable, main_chain_index FROM units ORDER BY rowid")
    assert [(r, u) for r, u, _, _ in green] == [
        (r, u) for r, u in rows(db, "SELECT rowid, unit FROM units WHERE rowid <= ? ORDER BY rowid", pos.max_units_rowid)]
    assert len(green) == pos.units
    assert res.migration is not None and res.migration["completed"]  # every unit re-hashed by the migration
    assert rows(green_db, "PRAGMA foreign_key_check") == []
    assert rows(green_db, "SELECT COUNT(*) FROM units WHERE is_free != (unit NOT IN (SELECT parent_unit FROM "
                          "parenthoods))") == [(0,)]
    assert rows(green_db, "SELECT MAX(main_chain_index) FROM units WHERE is_stable=1")[0][0] == pos.last_stable_mci
    assert any("online stage" in w for w in res.warnings)
    # verify compares green with its snapshot (blue moving on is expected); promote, the writer stopped, runs a
    # last catch-up (tests/test_catchup.py proves it equals a fresh migration)
    assert command.verify(node).passed
    p = command.promote(node)
    assert p.catch_up is not None and p.catch_up.to_units_rowid == commits[-1]["max_rowid"]


def test_promote_names_the_online_snapshot_when_blue_moved_and_no_catch_up_is_possible(tmp_path: Path) -> None:
    g = generate_node_dir(tmp_path / "node", units=300, version=28, seed=6)
    command.stage(g.out, online=True)
    assert command.verify(g.out).passed  # nothing wrote meanwhile: a plain, promotable stage
    from bluegreen.generator.extend import extend_node_dir

    extend_node_dir(g.out, units=3)
    (tmp_path / "node.bluegreen" / "work" / "source-prev.sqlite").unlink()  # what a catch-up compares against
    with pytest.raises(DriftError) as e:
        command.promote(g.out)
    assert "online stage's snapshot" in e.value.message and "previous snapshot" in e.value.message
    assert "stop the node" in (e.value.hint or "")


def test_online_stage_refused_for_kv_sources(tmp_path: Path) -> None:
    stuck = generate_node_dir(tmp_path / "stuck", units=120, version=29, stuck_at_30=True)
    with pytest.raises(PreflightError) as e:
        command.stage(stuck.out, online=True)
    assert "KV store in use" in e.value.message and "stopped first" in (e.value.hint or "")
    assert not (tmp_path / "stuck.bluegreen").exists()
    rc, err = cli_json("stage", "--online", "--data-dir", str(stuck.out))  # the CLI flag, exit code 3
    assert rc == PreflightError.exit_code and err["error"] == "PreflightError" and "--online" in err["message"]
    assert not (tmp_path / "stuck.bluegreen").exists()
    # a v31 source (staged and promoted with the node stopped), upgraded further online: refused
    g = generate_node_dir(tmp_path / "v31", units=200, version=28, seed=2)
    command.stage(g.out, target_version=31)  # a v31 node (the default target is the highest known)
    assert command.verify(g.out).passed
    command.promote(g.out)
    with pytest.raises(PreflightError) as e2:
        command.stage(g.out, staging_dir=tmp_path / "v31.second", target_version=32, online=True)
    assert "version 31" in e2.value.message and "stopped first" in (e2.value.hint or "")
