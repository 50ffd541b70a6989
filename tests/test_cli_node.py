"""`upgrade verify --node-modules`: green is read by the node's own level-rocksdb 5 / sqlite3 5."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_lifecycle_support import cli_json, make_node, run_cli

pytestmark = pytest.mark.node


def test_verify_with_node_modules_reads_green_with_the_node_libraries(tmp_path: Path, node_modules: Path) -> None:
    node = make_node(tmp_path)
    run_cli("stage", "--data-dir", str(node), check=True)
    rc, v = cli_json("verify", "--data-dir", str(node), "--node-modules", str(node_modules))
    assert rc == 0, v
    check = next(c for c in v["report"]["checks"] if c["name"] == "node_library_reads_green")
    assert check["passed"] and check["checked"] == 62  # every key of the devnet node, digest equal to ours


def test_verify_with_an_empty_node_modules_is_bad_input(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    run_cli("stage", "--data-dir", str(node), check=True)
    (tmp_path / "empty").mkdir()
    rc, err = cli_json("verify", "--data-dir", str(node), "--node-modules", str(tmp_path / "empty"))
    assert rc == 2 and err["error"] == "BadInputError"
