"""A node running: a separate process holds `rocksdb/LOCK` with fcntl, or holds the SQLite file open.
stage (for a node whose KV is in use), promote and rollback refuse with exit 4 naming the holder, and
touch neither file: sha256 AND mtime of every file in the data dir are the same afterwards.

Combinations already proven by the lifecycle tests (not repeated): stage + rocksdb/LOCK
(test_lifecycle_generated), promote + SQLite open (test_lifecycle_flow), rollback + rocksdb/LOCK
(test_lifecycle_flow), promote + SQLite write lock (test_cli_upgrade)."""

from __future__ import annotations

import os
from pathlib import Path

from bluegreen.errors import NodeRunningError
from bluegreen.lifecycle import command
from faultkit import fresh_node, manifest, record
from test_lifecycle_support import cli_json, holding


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): os.lstat(p).st_mtime_ns for p in [root, *root.rglob("*")]}


def _refused(cmd: str, node: Path, pid: int) -> None:
    before, times = manifest(node), _mtimes(node)
    rc, err = cli_json(cmd, "--data-dir", str(node))
    assert rc == NodeRunningError.exit_code and err["error"] == "NodeRunningError", err
    assert f"pid {pid}" in err["message"] and "stop the node" in err["hint"], err
    assert manifest(node) == before and _mtimes(node) == times


def test_stage_refuses_kv_node_whose_sqlite_is_held_open(tmp_path: Path) -> None:
    node = fresh_node(tmp_path, units=120, seed=3, stuck_at_30=True)
    with holding(node / "byteball.sqlite", "sqlite-open") as pid:
        _refused("stage", node, pid)
    assert not (tmp_path / "node.bluegreen").exists()
    record(tmp_path, "node_running_stage_sqlite_open")


def test_promote_refuses_while_rocksdb_lock_is_held(tmp_path: Path) -> None:
    node = fresh_node(tmp_path, units=120, seed=3, stuck_at_30=True)
    command.stage(node)
    assert command.verify(node).passed
    with holding(node / "rocksdb" / "LOCK", "fcntl") as pid:
        _refused("promote", node, pid)
    rc, st = cli_json("status", "--data-dir", str(node))
    assert rc == 0 and st["phase"] == "VERIFIED"
    record(tmp_path, "node_running_promote_rocksdb_lock")


def test_rollback_refuses_while_sqlite_is_held_open(tmp_path: Path) -> None:
    node = fresh_node(tmp_path, units=120, seed=3, stuck_at_30=True)
    command.stage(node)
    assert command.verify(node).passed
    command.promote(node)
    with holding(node / "byteball.sqlite", "sqlite-open") as pid:
        _refused("rollback", node, pid)
    rc, st = cli_json("status", "--data-dir", str(node))
    assert rc == 0 and st["phase"] == "PROMOTED"
    record(tmp_path, "node_running_rollback_sqlite_open")


def test_online_stage_proceeds_while_a_pre31_sqlite_node_holds_its_file_open(tmp_path: Path) -> None:
    """`stage --online`: a running SQLite-only node is expected; blue is only read (same bytes afterwards)."""
    node = fresh_node(tmp_path, units=120, seed=3)
    with holding(node / "byteball.sqlite", "sqlite-open") as pid:
        before = manifest(node)
        res = command.stage(node, online=True)
        assert manifest(node) == before
    assert res.phase.value == "MIGRATED" and res.snapshot is not None and res.snapshot.online is not None
    assert any("online stage" in w and f"pid {pid}" in w for w in res.warnings), res.warnings
    assert command.verify(node).passed  # nothing wrote meanwhile: green is blue
    record(tmp_path, "node_running_stage_online_sqlite_open")
