"""The lifecycle takes a node to any catalogued target: a pre-KV node to 50, and a node already on the KV
store (version 31) to 50, with verify passing and the swap leaving the node at 50."""

from __future__ import annotations

from pathlib import Path

import pytest
from rocksdict import Options, Rdict

from bluegreen.lifecycle import command
from bluegreen.lifecycle.state import Phase
from bluegreen.lifecycle.verify import CHECK_KV_DATA_FEEDS
from conftest import DEVNET_V31, writable_copy
from test_lifecycle_support import make_node, tree_hash


def test_pre_kv_node_goes_to_50_in_one_swap(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    blue = tree_hash(node)
    res = command.stage(node, target_version=50)
    assert res.phase == Phase.MIGRATED and (res.source_version, res.target_version) == (29, 50)
    v = command.verify(node)
    assert v.passed, [c for c in v.report.checks if not c.passed]  # type: ignore[union-attr]
    assert tree_hash(node) == blue
    command.promote(node)
    assert command.status(node).data_dir_version == 50
    command.rollback(node)
    assert tree_hash(node) == blue


def test_kv_era_node_goes_to_50_and_verify_checks_its_copied_feeds(tmp_path: Path) -> None:
    node = writable_copy(DEVNET_V31, tmp_path / "node")
    res = command.stage(node, target_version=50)
    assert (res.source_version, res.target_version) == (31, 50)
    v = command.verify(node)
    feeds = next(c for c in v.report.checks if c.name == CHECK_KV_DATA_FEEDS)  # type: ignore[union-attr]
    assert v.passed and feeds.checked == 44, feeds
    command.promote(node)
    assert command.status(node).data_dir_version == 50


def test_kv_era_feed_naming_a_unit_green_lacks_fails_verify(tmp_path: Path) -> None:
    node = writable_copy(DEVNET_V31, tmp_path / "node")
    command.stage(node, target_version=50)
    opts = Options(raw_mode=True)
    kv = Rdict(str(tmp_path / "node.bluegreen" / "green" / "rocksdb"), opts)
    kv[b"dfv\nADDRESS\nfeed\nfffffff0"] = b"42\nNoSuchUnitXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX="
    kv.close()
    v = command.verify(node)
    feeds = next(c for c in v.report.checks if c.name == CHECK_KV_DATA_FEEDS)  # type: ignore[union-attr]
    assert not v.passed and feeds.failed == 1 and "NoSuchUnit" in feeds.first_failures[0]
    with pytest.raises(Exception):
        command.promote(node)
