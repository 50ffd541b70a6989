"""Issue 8 safety: refusals that happen before anything is created or lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from bluegreen.errors import PreflightError
from bluegreen.lifecycle import command
from test_lifecycle_support import make_node, tree_hash


def test_unsupported_target_version_refused_before_anything_is_created(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    blue = tree_hash(node)
    with pytest.raises(PreflightError, match="target version 51 is not supported"):
        command.stage(node, target_version=51)
    assert not node.with_name(node.name + ".bluegreen").exists()  # no staging dir, no copy
    assert tree_hash(node) == blue


def test_rollback_with_blue_previous_removed_is_a_clear_refusal(tmp_path: Path) -> None:
    import shutil
    node = make_node(tmp_path)
    command.stage(node)
    command.verify(node)
    command.promote(node)
    green = tree_hash(node)
    shutil.rmtree(node.with_name(node.name + ".bluegreen") / "blue-previous")
    with pytest.raises(PreflightError, match="blue-previous") as e:
        command.rollback(node)
    assert e.value.exit_code != 70 and e.value.hint
    assert tree_hash(node) == green
