"""`upgrade cleanup`: after a promote, delete the old data (blue-previous/) for good, keep the record
(audit.log, bluegreen.log, reports/, the final state.json) beside the staging area, remove the staging area.
Refusals in every other phase, when the data dir is not the upgraded one, and when the old data is in use."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bluegreen.errors import NodeRunningError, PreflightError
from bluegreen.lifecycle import command
from bluegreen.lifecycle.state import TRANSITIONS, Phase
from test_cli_operator import _pty_run
from test_lifecycle_support import cli_json, holding, make_node, run_cli, tree_hash


def _promoted(tmp_path: Path) -> Path:
    node = make_node(tmp_path)
    command.stage(node)
    assert command.verify(node).passed
    command.promote(node)
    return node


def _kept(tmp_path: Path) -> list[Path]:
    return [p for p in tmp_path.iterdir() if p.name.startswith("node.bluegreen-cleaned-")]


def test_cleanup_after_promote_deletes_the_old_data_and_keeps_the_record(tmp_path: Path) -> None:
    node = _promoted(tmp_path)
    staging = tmp_path / "node.bluegreen"
    live = tree_hash(node)
    audit = (staging / "audit.log").read_text()
    assert "upgrade cleanup" in command.status(node).next_step
    res = command.cleanup(node)
    assert res.phase == Phase.CLEANED_UP and not res.noop and res.freed_bytes > 0
    assert not staging.exists() and tree_hash(node) == live  # the data dir is never touched
    [kept] = _kept(tmp_path)
    assert res.kept_dir == kept and str(kept) in res.message
    assert (kept / "audit.log").read_text().startswith(audit)
    assert list((kept / "reports").glob("verify-*.json"))
    assert json.loads((kept / "state.json").read_text())["phase"] == "CLEANED_UP"
    assert any("not written to the upgraded data" in w for w in res.warnings)  # the node never ran on it
    s = command.status(node)
    assert s.phase == Phase.NONE and s.data_dir_version == 50 and s.next_step.startswith("nothing")
    assert command.cleanup(node).noop
    with pytest.raises(PreflightError):
        command.rollback(node)


def test_cleanup_is_a_terminal_phase_of_the_state_machine() -> None:
    assert Phase.CLEANING_UP in TRANSITIONS[Phase.PROMOTED]
    assert TRANSITIONS[Phase.CLEANING_UP] == {Phase.CLEANED_UP} and not TRANSITIONS[Phase.CLEANED_UP]
    assert all(Phase.CLEANING_UP not in TRANSITIONS[p] for p in Phase if p != Phase.PROMOTED)
    assert all(p in command.NEXT_STEP for p in Phase)


def test_cleanup_refuses_before_promote_and_after_rollback(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    command.stage(node)
    with pytest.raises(PreflightError, match="after a promote only; phase MIGRATED") as e:
        command.cleanup(node)
    assert "abort" in str(e.value.message)
    command.verify(node)
    command.promote(node)
    command.rollback(node)
    with pytest.raises(PreflightError, match="rolled back"):
        command.cleanup(node)
    assert (tmp_path / "node.bluegreen" / "green").is_dir()


def test_cleanup_refuses_when_the_data_dir_is_not_the_upgraded_one(tmp_path: Path) -> None:
    node = _promoted(tmp_path)
    previous = tmp_path / "node.bluegreen" / "blue-previous"
    # Someone put the old database back by hand: blue-previous may be the only copy left.
    shutil.copy2(previous / "byteball.sqlite", node / "byteball.sqlite")
    with pytest.raises(PreflightError, match="version 29, not the upgraded 50"):
        command.cleanup(node)
    assert (previous / "byteball.sqlite").is_file() and command.status(node).phase == Phase.PROMOTED


def test_cleanup_refuses_while_something_uses_the_old_data(tmp_path: Path) -> None:
    node = _promoted(tmp_path)
    previous = tmp_path / "node.bluegreen" / "blue-previous"
    with holding(previous / "byteball.sqlite", "sqlite-open"):
        with pytest.raises(NodeRunningError, match="in use"):
            command.cleanup(node)
    assert (previous / "byteball.sqlite").is_file() and command.status(node).phase == Phase.PROMOTED
    assert command.cleanup(node).phase == Phase.CLEANED_UP


def test_cleanup_killed_mid_way_is_finished_by_the_next_command(tmp_path: Path) -> None:
    node = _promoted(tmp_path)
    staging = tmp_path / "node.bluegreen"
    proc = run_cli("cleanup", "--data-dir", str(node), "--yes", env_extra={"BLUEGREEN_KILL_AT": "cleanup.mid_remove"})
    assert proc.returncode == -9, proc.stderr
    assert json.loads((staging / "state.json").read_text())["phase"] == "CLEANING_UP"
    rc, st = cli_json("status", "--data-dir", str(node))
    assert rc == 0 and any("interrupted cleanup" in n for n in st["recovered"]), st
    assert not staging.exists() and len(_kept(tmp_path)) == 1


def test_cli_cleanup_asks_says_final_and_json(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    staging = tmp_path / "elsewhere"
    run_cli("stage", "--data-dir", str(node), "--staging-dir", str(staging), check=True)
    run_cli("verify", "--data-dir", str(node), check=True)
    run_cli("promote", "--data-dir", str(node), "--yes", check=True)
    rc, out = _pty_run(["cleanup", "--data-dir", str(node)], b"n\n")
    assert rc == 1 and "[y/N]" in out and "final" in out and "nothing was done" in out
    assert (staging / "blue-previous").is_dir()
    rc, doc = cli_json("cleanup", "--data-dir", str(node))
    assert rc == 0 and doc["phase"] == "CLEANED_UP" and doc["kept_dir"] and not staging.exists()
    log = (Path(doc["kept_dir"]) / "bluegreen.log").read_text()
    assert "upgrade promote started" in log and "phase CLEANING_UP -> CLEANED_UP" in log
    assert not (tmp_path / "node.bluegreen-pointer").exists()  # the remembered staging area is forgotten
    rc, err = cli_json("rollback", "--data-dir", str(node))
    assert rc == 3
