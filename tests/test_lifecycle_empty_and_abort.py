"""An empty node (no units) goes through the whole lifecycle; abort keeps the record of what happened."""

from __future__ import annotations

from pathlib import Path

import pytest

from bluegreen.lifecycle import command
from bluegreen.lifecycle.state import Phase
from conftest import EMPTY_SCHEMAS, writable_copy
from test_lifecycle_support import make_node, tree_hash


@pytest.mark.parametrize("kind,db_name", [("full", "byteball.sqlite"), ("light", "byteball-light.sqlite")])
def test_an_empty_node_stages_verifies_and_promotes(tmp_path: Path, kind: str, db_name: str) -> None:
    node = tmp_path / "node"
    node.mkdir()
    writable_copy(EMPTY_SCHEMAS / f"{kind}-v28.sqlite", node / db_name)
    blue = tree_hash(node)
    command.stage(node)
    v = command.verify(node)
    assert v.passed, [c for c in v.report.checks if not c.passed]  # type: ignore[union-attr]
    assert tree_hash(node) == blue
    assert command.promote(node).phase == Phase.PROMOTED
    assert command.status(node).data_dir_version == 50  # the default target: no node program found


def test_abort_moves_audit_log_and_reports_aside_and_says_where(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    command.stage(node)
    command.verify(node)
    audit = (tmp_path / "node.bluegreen" / "audit.log").read_text()
    a = command.abort(node)
    assert not (tmp_path / "node.bluegreen").exists()
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("node.bluegreen-aborted-")]
    assert len(kept) == 1 and str(kept[0]) in a.message
    assert (kept[0] / "audit.log").read_text().startswith(audit)
    assert list((kept[0] / "reports").glob("verify-*.json"))
