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
    with pytest.raises(PreflightError, match="target version 32 is not supported"):
        command.stage(node, target_version=32)
    assert not node.with_name(node.name + ".bluegreen").exists()  # no staging dir, no copy
    assert tree_hash(node) == blue
