"""verify finds the operator's node app next to the data dir and reads green with its own libraries;
promote refuses when that probe ran and failed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bluegreen.errors import BluegreenError
from bluegreen.generator import generate_node_dir
from bluegreen.lifecycle import command

pytestmark = pytest.mark.node
APP = "headless-obyte"


def tree_sha(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith("-shm")}


def make_node(home: Path, modules: Path) -> Path:
    data = home / ".config" / APP
    generate_node_dir(data, units=150, version=28, seed=4)
    app = home / APP
    app.mkdir()
    (app / "package.json").write_text(json.dumps({"name": APP, "version": "1.0.0"}))
    (app / "node_modules").symlink_to(modules, target_is_directory=True)
    return data


def test_verify_probes_green_with_the_node_app_found_beside_the_data_dir(tmp_path: Path, node_modules: Path) -> None:
    data = make_node(tmp_path / "home", node_modules)
    command.stage(data)
    result = command.verify(data)
    [probe] = [c for c in result.report.checks if c.name == command.CHECK_NODE_COMPAT]
    assert probe.passed and probe.checked > 150, probe
    assert result.passed
    assert any("probing green with the node's own libraries" in w for w in result.warnings)
    command.promote(data)


def test_a_failed_probe_fails_verify_and_promote_refuses(tmp_path: Path, node_modules: Path) -> None:
    broken = tmp_path / "broken_modules"
    broken.mkdir()
    for entry in node_modules.iterdir():
        if entry.name != "level-rocksdb":
            (broken / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    fake = broken / "level-rocksdb"
    fake.mkdir()
    (fake / "package.json").write_text(json.dumps({"name": "level-rocksdb", "version": "5.0.0", "main": "index.js"}))
    (fake / "index.js").write_text("throw new Error('this build of level-rocksdb cannot load');\n")
    data = make_node(tmp_path / "home", broken)
    command.stage(data)
    before = tree_sha(data)
    result = command.verify(data)
    [probe] = [c for c in result.report.checks if c.name == command.CHECK_NODE_COMPAT]
    assert not probe.passed and not result.passed
    assert any("cannot load" in f or "failed" in f for f in probe.first_failures), probe.first_failures
    with pytest.raises(BluegreenError):
        command.promote(data)
    assert tree_sha(data) == before
