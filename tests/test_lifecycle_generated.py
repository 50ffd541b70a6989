"""The flow on generated node dirs: a version-28 node (the real field upgrade path) and a node stuck at
version 30 with a half-filled rocksdb/ (the failure this project exists for). Devnet flavour: its
genesis comes from the data (a generated "mainnet" node has no real mainnet genesis)."""

from __future__ import annotations

import os
from pathlib import Path

import apsw
import pytest

from bluegreen.errors import NodeRunningError
from bluegreen.generator import generate_node_dir
from bluegreen.lifecycle import command
from bluegreen.lifecycle.state import Phase
from test_lifecycle_support import holding, tree_hash


def test_generated_v28_node_goes_through_the_whole_flow(tmp_path: Path) -> None:
    node = tmp_path / "headless-obyte"
    gen = generate_node_dir(node, units=120, version=28, seed=7, network="devnet")
    blue = tree_hash(node)
    st = command.stage(node)
    assert st.source_version == 28 and st.migration and st.migration["units_written"] == gen.units
    assert tree_hash(node) == blue
    assert command.verify(node).passed and tree_hash(node) == blue
    green = tree_hash(tmp_path / "headless-obyte.bluegreen" / "green")
    assert command.promote(node).phase == Phase.PROMOTED and tree_hash(node) == green
    assert command.rollback(node).phase == Phase.ROLLED_BACK and tree_hash(node) == blue
    assert command.promote(node).phase == Phase.PROMOTED and tree_hash(node) == green


def test_node_stuck_at_30_is_staged_from_sql(tmp_path: Path) -> None:
    node = tmp_path / "stuck"
    generate_node_dir(node, units=60, version=28, seed=3, stuck_at_30=True, network="devnet")
    assert (node / "rocksdb").is_dir()
    blue = tree_hash(node)
    st = command.stage(node)
    assert st.source_version == 30 and st.phase == Phase.MIGRATED
    assert tree_hash(node) == blue
    assert command.verify(node).passed


def test_stage_refuses_running_node_that_uses_its_kv(tmp_path: Path) -> None:
    node = tmp_path / "stuck"
    generate_node_dir(node, units=20, version=28, seed=5, stuck_at_30=True, network="devnet")
    blue = tree_hash(node)
    with holding(node / "rocksdb" / "LOCK", "fcntl") as pid:
        with pytest.raises(NodeRunningError, match=str(pid)):
            command.stage(node)
    assert tree_hash(node) == blue and not (tmp_path / "stuck.bluegreen").exists()


def test_stage_with_running_node_without_kv_warns_and_verify_catches_its_writes(tmp_path: Path) -> None:
    node = tmp_path / "n"
    generate_node_dir(node, units=20, version=28, seed=9, network="devnet")
    with holding(node / "byteball.sqlite", "sqlite-open"):
        st = command.stage(node)
        assert st.phase == Phase.MIGRATED and any("node is running" in w for w in st.warnings)
        assert os.path.exists(tmp_path / "n.bluegreen" / "green" / "byteball.sqlite")
        conn = apsw.Connection(str(node / "byteball.sqlite"))  # the running node writes
        conn.execute("INSERT INTO peer_hosts(peer_host) VALUES('while.staged.example')")
        conn.close()
    v = command.verify(node)
    assert not v.passed and v.report is not None
    assert command.CHECK_BLUE_UNCHANGED in [c.name for c in v.report.failed_checks()]


def test_light_node_goes_through_the_flow(tmp_path: Path) -> None:
    node = tmp_path / "light"
    generate_node_dir(node, units=40, version=28, seed=2, light=True, network="devnet")
    blue = tree_hash(node)
    st = command.stage(node)
    assert st.phase == Phase.MIGRATED and st.migration and st.migration["light"] is True
    assert command.verify(node).passed and tree_hash(node) == blue
    green = tree_hash(tmp_path / "light.bluegreen" / "green")
    assert "byteball-light.sqlite" in green
    command.promote(node)
    assert tree_hash(node) == green
    command.rollback(node)
    assert tree_hash(node) == blue
