"""Schema check of verify: nodes created by old ocore releases carry catalogued drifts, nothing else."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from bluegreen.engine.migrate import MigrationOptions, migrate_copy
from bluegreen.lifecycle.verify import check_schema
from tests.conftest import EMPTY_SCHEMAS, writable_copy


@pytest.mark.parametrize("name", ["full-v6", "full-v16", "full-v23", "light-v11", "full-v28"])
def test_an_empty_node_of_any_era_migrates_and_passes_the_schema_check(tmp_path: Path, name: str) -> None:
    light = name.startswith("light")
    db = writable_copy(EMPTY_SCHEMAS / f"{name}.sqlite", tmp_path / ("byteball-light.sqlite" if light else "byteball.sqlite"))
    report = migrate_copy(db, tmp_path / "rocksdb", tmp_path / "journal.json", MigrationOptions())
    assert report.completed and report.units_total == 0
    check = check_schema(apsw.Connection(str(db)), 31, light)
    assert check.passed, check.first_failures


def test_an_unexplained_difference_still_fails(tmp_path: Path) -> None:
    db = writable_copy(EMPTY_SCHEMAS / "full-v6.sqlite", tmp_path / "byteball.sqlite")
    migrate_copy(db, tmp_path / "rocksdb", tmp_path / "journal.json", MigrationOptions())
    conn = apsw.Connection(str(db))
    conn.execute("DROP INDEX bySequence")
    check = check_schema(conn, 31, False)
    assert not check.passed and any("bySequence" in f for f in check.first_failures)
