"""A data dir that is a mount point cannot be renamed: the swap moves its entries with a journal.

Needs root (it mounts a real tmpfs); skipped, and reported as skipped, otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bluegreen.errors import PreflightError
from bluegreen.lifecycle import command
from bluegreen.lifecycle.state import Phase
from test_lifecycle_support import cli_json, make_node, run_cli, tree_hash

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a tmpfs")


@pytest.fixture
def mounted_node(tmp_path: Path) -> Iterator[Path]:
    src = make_node(tmp_path, "src")
    node = tmp_path / "node"
    node.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300m", "tmpfs", str(node)], check=True)
    try:
        for f in src.iterdir():
            shutil.copy2(f, node / f.name)
        yield node
    finally:
        subprocess.run(["umount", "-l", str(node)], check=True)


def tree_without(root: Path, name: str) -> dict[str, str]:
    return {k: v for k, v in tree_hash(root).items() if not k.startswith(name + "/")}


def test_mount_point_needs_explicit_staging_inside(mounted_node: Path) -> None:
    with pytest.raises(PreflightError, match="mount point") as e:
        command.stage(mounted_node)
    assert "--staging-dir" in (e.value.hint or "")


def test_mount_point_flow_uses_journaled_fallback(mounted_node: Path) -> None:
    node = mounted_node
    staging = node / ".bluegreen"
    blue = tree_hash(node)
    command.stage(node, staging)
    assert tree_without(node, ".bluegreen") == blue
    assert command.verify(node, staging).passed
    green = tree_hash(staging / "green")
    p = command.promote(node, staging)
    assert p.mechanism == "fallback" and os.path.ismount(node)
    assert tree_without(node, ".bluegreen") == green
    assert command.status(node, staging).last_swap.mechanism == "fallback"  # type: ignore[union-attr]
    r = command.rollback(node, staging)
    assert r.mechanism == "fallback" and tree_without(node, ".bluegreen") == blue
    assert command.promote(node, staging).phase == Phase.PROMOTED


def test_mount_point_fallback_killed_midway_is_undone(mounted_node: Path) -> None:
    node = mounted_node
    staging = node / ".bluegreen"
    blue = tree_hash(node)
    command.stage(node, staging)
    command.verify(node, staging)
    green = tree_hash(staging / "green")
    args = ("--data-dir", str(node), "--staging-dir", str(staging))
    proc = run_cli("promote", *args, env_extra={"BLUEGREEN_KILL_AT": "promote.swap.fallback_mid"})
    assert proc.returncode == -9
    rc, st = cli_json("status", *args)
    assert rc == 0 and st["phase"] == "VERIFIED" and st["recovered"]
    assert tree_without(node, ".bluegreen") == blue and tree_hash(staging / "green") == green
