"""scripts/bench_ocore_style.py (the bench's per-unit reader, comparison only) builds the same joints as the
engine's chunked reader: otherwise the bench's ratio against it would compare different work."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bluegreen.generator import generate_node_dir

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import bench_ocore_style  # noqa: E402  (a script beside the bench, not a package module)


def _files(node: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in node.iterdir()}


@pytest.mark.parametrize("source", ["generated", "devnet_v29"])
def test_per_unit_reader_builds_the_engines_joints(source: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if source == "generated":
        node = tmp_path / "blue"
        generate_node_dir(node, units=1200, version=28, seed=5)
    else:
        node = request.getfixturevalue("devnet_v29")
    before = _files(node)
    result = bench_ocore_style.run(node / "byteball.sqlite", None, check=100_000)
    assert result.checked_against_engine == result.units > 0  # every unit compared, all equal
    assert not result.sample and result.queries > 5 * result.units  # one query per table per unit
    assert _files(node) == before  # opened immutable: no -wal/-shm beside the node
