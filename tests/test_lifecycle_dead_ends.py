"""A staging area that no longer matches its state (green/ or its files removed by hand): every command
notices, says what is missing and what to run next, and that next command works."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bluegreen.errors import PreflightError
from bluegreen.lifecycle import command
from bluegreen.lifecycle.state import Phase
from test_lifecycle_support import cli_json, make_node, run_cli, tree_hash


def _remove(staging: Path, what: str) -> None:
    target = staging / "green" / what if what else staging / "green"
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()


@pytest.mark.parametrize("what,shown", [("", "green/ is missing"),
                                        ("byteball.sqlite", "green/byteball.sqlite is missing"),
                                        ("rocksdb", "green/rocksdb/ is missing")])
def test_green_removed_after_verify_every_command_says_so_and_stage_starts_over(
        tmp_path: Path, what: str, shown: str) -> None:
    node = make_node(tmp_path)
    staging = tmp_path / "node.bluegreen"
    command.stage(node)
    command.verify(node)
    blue = tree_hash(node)
    _remove(staging, what)
    audit_before = (staging / "audit.log").read_text()

    s = command.status(node)
    assert s.phase == Phase.VERIFIED and len(s.problems) == 1, s.problems
    assert shown in s.problems[0] and "run `upgrade stage` to stage again (or `upgrade abort`)" in s.problems[0]
    assert s.next_step.startswith("upgrade stage")
    for cmd in (command.verify, command.promote):
        with pytest.raises(PreflightError, match="missing") as e:
            cmd(node)
        assert e.value.hint == command.GREEN_BROKEN_HINT
    assert tree_hash(node) == blue

    again = command.stage(node)  # not "already staged": a fresh snapshot, then the migration
    assert not again.noop and again.phase == Phase.MIGRATED and again.snapshot is not None
    assert any(shown in n and "fresh snapshot" in n for n in again.recovered), again.recovered
    audit = (staging / "audit.log").read_text()
    assert audit.startswith(audit_before)  # history kept
    events = [json.loads(line) for line in audit.splitlines()]
    assert any(e["event"] == "green_missing" for e in events)
    assert command.status(node).problems == []
    assert command.verify(node).passed
    assert command.promote(node).phase == Phase.PROMOTED


def test_green_removed_before_verify_and_after_rollback(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    staging = tmp_path / "node.bluegreen"
    command.stage(node)
    shutil.rmtree(staging / "green")
    with pytest.raises(PreflightError, match="green/ is missing"):
        command.verify(node)
    assert command.stage(node).phase == Phase.MIGRATED
    command.verify(node)
    command.promote(node)
    command.rollback(node)
    shutil.rmtree(staging / "green")  # after a rollback green/ holds the upgraded data: gone too
    with pytest.raises(PreflightError, match="green/ is missing"):
        command.promote(node)
    assert command.stage(node).phase == Phase.MIGRATED


def test_cli_status_prints_the_problem_and_abort_still_works(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    run_cli("stage", "--data-dir", str(node), check=True)
    run_cli("verify", "--data-dir", str(node), check=True)
    shutil.rmtree(tmp_path / "node.bluegreen" / "green")
    out = run_cli("status", "--data-dir", str(node), check=True).stdout
    assert "phase:       VERIFIED" in out
    assert any(line.startswith("problem:") and "green/ is missing" in line and "`upgrade stage`" in line
               for line in out.splitlines()), out
    rc, err = cli_json("promote", "--data-dir", str(node), "--yes")
    assert rc == 3 and "green/ is missing" in err["message"] and "upgrade stage" in err["hint"]
    rc, err = cli_json("verify", "--data-dir", str(node))
    assert rc == 3 and "upgrade stage" in err["hint"]
    rc, a = cli_json("abort", "--data-dir", str(node), "--yes")
    assert rc == 0 and not (tmp_path / "node.bluegreen").exists()


def test_stage_after_a_killed_abort_says_to_run_again_instead_of_crashing(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    run_cli("stage", "--data-dir", str(node), check=True)
    proc = run_cli("abort", "--data-dir", str(node), "--yes", env_extra={"BLUEGREEN_KILL_AT": "abort.mid_remove"})
    assert proc.returncode == -9
    rc, err = cli_json("stage", "--data-dir", str(node))  # its recovery finishes the abort first
    assert rc == 3 and "interrupted abort" in err["message"] and "upgrade stage" in err["hint"], err
    rc, res = cli_json("stage", "--data-dir", str(node))
    assert rc == 0 and res["phase"] == "MIGRATED"
