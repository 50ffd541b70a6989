"""verify's options: --force re-runs a passed verify, --node-modules given later is honoured,
--require-node-probe fails when no probe can run, --no-node-probe skips it with a recorded warning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bluegreen.errors import BadInputError, VerificationFailed
from bluegreen.lifecycle import command
from bluegreen.lifecycle.state import Phase
from test_lifecycle_support import cli_json, make_node, run_cli


def test_force_runs_a_passed_verify_again(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    command.stage(node)
    first = command.verify(node)
    assert first.passed and not first.noop
    assert command.verify(node).noop
    again = command.verify(node, force=True)
    assert again.passed and not again.noop and again.report_path != first.report_path
    assert again.report_path and again.report_path.exists()


def test_require_node_probe_fails_verify_when_no_probe_can_run(tmp_path: Path) -> None:
    node = make_node(tmp_path)  # no node app beside it: the probe cannot run
    command.stage(node)
    res = command.verify(node, require_node_probe=True)
    assert not res.passed and res.exit_code == VerificationFailed.exit_code and res.phase == Phase.MIGRATED
    [probe] = [c for c in res.report.checks if c.name == command.CHECK_NODE_COMPAT]  # type: ignore[union-attr]
    assert not probe.passed and "--node-modules" in probe.detail
    assert "--node-modules" in res.next_step
    with pytest.raises(VerificationFailed):
        command.promote(node)
    # A passed verify without a probe is no answer to --require-node-probe: it runs (and fails) again.
    assert command.verify(node).passed
    assert not command.verify(node, require_node_probe=True).noop


def test_no_node_probe_skips_with_a_warning_in_the_report_and_printed(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    run_cli("stage", "--data-dir", str(node), check=True)
    proc = run_cli("verify", "--data-dir", str(node), "--no-node-probe")
    assert proc.returncode == 0, proc.stderr
    assert "warning: the node compatibility probe was skipped (--no-node-probe)" in proc.stderr
    [report] = (tmp_path / "node.bluegreen" / "reports").glob("verify-*.json")
    doc = json.loads(report.read_text())
    assert any("skipped (--no-node-probe)" in w for w in doc["warnings"])
    assert not any(c["name"] == command.CHECK_NODE_COMPAT for c in doc["checks"])
    rc, err = cli_json("verify", "--data-dir", str(node), "--no-node-probe", "--require-node-probe")
    assert rc == BadInputError.exit_code and "contradicts" in err["message"]


@pytest.mark.node
def test_node_modules_given_on_a_later_verify_is_honoured(tmp_path: Path, node_modules: Path) -> None:
    node = make_node(tmp_path)
    command.stage(node)
    first = command.verify(node)
    assert first.passed and not any(c.name == command.CHECK_NODE_COMPAT for c in first.report.checks)  # type: ignore[union-attr]
    later = command.verify(node, node_modules=node_modules)
    assert not later.noop
    [probe] = [c for c in later.report.checks if c.name == command.CHECK_NODE_COMPAT]  # type: ignore[union-attr]
    assert probe.passed and probe.checked > 0
    assert command.verify(node, require_node_probe=True).noop  # the last report holds a passed probe
