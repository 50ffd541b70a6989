"""SIGKILL at every named point of stage, promote and rollback (real child processes), then recovery.

After each kill the data dir path holds exactly blue's files or exactly green's (sha256 of every
file); the journaled fallback is the one mechanism with mixed intermediate states, and there the
next command must restore one side completely. Then the flow completes normally."""

from __future__ import annotations

from pathlib import Path

import pytest

from bluegreen.lifecycle import command
from bluegreen.lifecycle.state import Phase
from test_lifecycle_support import cli_json, make_node, run_cli, tree_hash

FALLBACK = {"BLUEGREEN_SWAP_MECHANISM": "fallback"}


@pytest.mark.parametrize("point", [
    "snapshot.mid_copy",
    "snapshot.after_sqlite",
    "snapshot.mid_files",
    "stage.after_snapshot",
    "stage.before_migration",
    "engine.after_sql_steps",
    "engine.mid_units_chunk",
    "engine.before_kv_install",
    "engine.before_commit",
    "stage.after_migration",
])
def test_stage_killed_then_recovered(tmp_path: Path, point: str) -> None:
    node = make_node(tmp_path)
    blue = tree_hash(node)
    proc = run_cli("stage", "--data-dir", str(node), env_extra={"BLUEGREEN_KILL_AT": point})
    assert proc.returncode == -9, proc.stderr
    assert tree_hash(node) == blue
    rc, st = cli_json("status", "--data-dir", str(node))  # any command first cleans up what was in flight
    assert rc == 0
    assert not (tmp_path / "node.bluegreen" / "green.partial").exists()
    if point.startswith("snapshot."):
        assert st["phase"] == "FAILED" and any("interrupted snapshot" in n for n in st["recovered"])
    rc, res = cli_json("stage", "--data-dir", str(node))
    assert rc == 0 and res["phase"] == "MIGRATED", res
    assert tree_hash(node) == blue
    rc, v = cli_json("verify", "--data-dir", str(node))
    assert rc == 0 and v["passed"], v
    assert tree_hash(node) == blue


def _verified(tmp_path: Path) -> tuple[Path, dict[str, str], dict[str, str]]:
    node = make_node(tmp_path)
    blue = tree_hash(node)
    command.stage(node)
    assert command.verify(node).passed
    return node, blue, tree_hash(tmp_path / "node.bluegreen" / "green")


PROMOTE_POINTS = [
    ("promote.mid_kv_copy", {}, "VERIFIED"),
    ("promote.before_swap", {}, "VERIFIED"),
    ("promote.swap.after_journal", {}, "VERIFIED"),
    ("promote.swap.after_exchange", {}, "PROMOTED"),
    ("promote.after_swap", {}, "PROMOTED"),
    ("promote.swap.after_journal", FALLBACK, "VERIFIED"),
    ("promote.swap.fallback_mid", FALLBACK, "VERIFIED"),
    ("promote.after_swap", FALLBACK, "PROMOTED"),
]


@pytest.mark.parametrize("point,env,phase_after", PROMOTE_POINTS)
def test_promote_killed_then_recovered(tmp_path: Path, point: str, env: dict[str, str], phase_after: str) -> None:
    node, blue, green = _verified(tmp_path)
    proc = run_cli("promote", "--data-dir", str(node), env_extra={"BLUEGREEN_KILL_AT": point, **env})
    assert proc.returncode == -9, proc.stderr
    if "fallback_mid" not in point:
        assert tree_hash(node) in (blue, green)
    rc, st = cli_json("status", "--data-dir", str(node))
    assert rc == 0 and st["phase"] == phase_after, st
    assert tree_hash(node) == (green if phase_after == "PROMOTED" else blue)
    if phase_after == "PROMOTED":
        assert st["last_swap"]["mechanism"] == ("fallback" if env else "exchange")
    rc, p = cli_json("promote", "--data-dir", str(node), env_extra=env)
    assert rc == 0 and p["phase"] == "PROMOTED"
    assert tree_hash(node) == green
    assert tree_hash(tmp_path / "node.bluegreen" / "blue-previous") == blue


ROLLBACK_POINTS = [
    ("rollback.before_swap", {}, "PROMOTED"),
    ("rollback.swap.after_journal", {}, "PROMOTED"),
    ("rollback.swap.after_exchange", {}, "ROLLED_BACK"),
    ("rollback.after_swap", {}, "ROLLED_BACK"),
    ("rollback.swap.fallback_mid", FALLBACK, "PROMOTED"),
    ("rollback.after_swap", FALLBACK, "ROLLED_BACK"),
]


@pytest.mark.parametrize("point,env,phase_after", ROLLBACK_POINTS)
def test_rollback_killed_then_recovered(tmp_path: Path, point: str, env: dict[str, str], phase_after: str) -> None:
    node, blue, green = _verified(tmp_path)
    assert command.promote(node).phase == Phase.PROMOTED
    proc = run_cli("rollback", "--data-dir", str(node), env_extra={"BLUEGREEN_KILL_AT": point, **env})
    assert proc.returncode == -9, proc.stderr
    if "fallback_mid" not in point:
        assert tree_hash(node) in (blue, green)
    # A different command than the one killed does the recovery.
    rc, res = cli_json("promote", "--data-dir", str(node))
    assert rc == 0, res
    assert res["recovered"], res
    # Recovery landed on `phase_after`: still promoted (promote is then a no-op) or rolled back (promote again).
    assert res["noop"] is (phase_after == "PROMOTED")
    assert res["phase"] == "PROMOTED"
    assert tree_hash(node) == green
    rc, r = cli_json("rollback", "--data-dir", str(node), env_extra=env)
    assert rc == 0 and r["phase"] == "ROLLED_BACK"
    assert tree_hash(node) == blue


def test_abort_killed_midway_is_finished_by_next_command(tmp_path: Path) -> None:
    node, blue, _ = _verified(tmp_path)
    proc = run_cli("abort", "--data-dir", str(node), env_extra={"BLUEGREEN_KILL_AT": "abort.mid_remove"})
    assert proc.returncode == -9
    assert (tmp_path / "node.bluegreen").exists()
    rc, st = cli_json("status", "--data-dir", str(node))
    assert rc == 0 and st["phase"] == "NONE" and st["recovered"]
    assert not (tmp_path / "node.bluegreen").exists() and tree_hash(node) == blue


@pytest.mark.parametrize("op", ["promote", "rollback"])
def test_killed_between_fallback_phases_the_same_command_recovers_and_completes(tmp_path: Path, op: str) -> None:
    """Killed when every old entry has left the data dir and no new one arrived: the dir holds no database,
    yet re-running the same command must recover (undo) and then do its job."""
    node, blue, green = _verified(tmp_path)
    if op == "rollback":
        command.promote(node)
    proc = run_cli(op, "--data-dir", str(node), env_extra={"BLUEGREEN_KILL_AT": f"{op}.swap.fallback_between",
                                                           **FALLBACK})
    assert proc.returncode == -9, proc.stderr
    assert not any(node.iterdir())  # the mixed state this test is about
    rc, res = cli_json(op, "--data-dir", str(node), env_extra=FALLBACK)
    assert rc == 0 and res["recovered"] and res["mechanism"] == "fallback", res
    assert tree_hash(node) == (green if op == "promote" else blue)
