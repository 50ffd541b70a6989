"""A cross-section of the upgrade matrix (tests/matrix/run.py; `scripts/matrix` runs all of it): the oldest and
newest pre-31 sources, the stuck-era 29 and KV-era sources, full and light, every network, to 31 and to 50.
Each cell is a real generated node staged and verified by the lifecycle functions."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.matrix.run import cells, run_cell, source_versions, table

pytestmark = pytest.mark.slow

CROSS_SECTION = [6, 28, 30, 31, 46, 49]


def test_the_matrix_covers_every_reference_version_below_the_latest() -> None:
    sources = source_versions()
    assert sources[0] == 6 and sources[-1] == 49 and 30 in sources and 31 in sources
    every = list(cells(sources))
    # below 31: to 31 and to 50; from 31: to 50 only; both kinds, three networks
    assert len(every) == 6 * sum(2 if s < 31 else 1 for s in sources)


@pytest.mark.parametrize("source", CROSS_SECTION)
def test_generated_nodes_upgrade_and_verify_clean(source: int, tmp_path: Path) -> None:
    done = [run_cell(cell, tmp_path, units=24, seed=5) for cell in cells([source])]
    assert all(c.passed for c in done), table(done) + "\n" + "\n".join(c.problem for c in done if not c.passed)
