"""Reference schemas: our shipped data describes exactly the empty databases ocore creates, and we can
rebuild those databases from our data alone."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import apsw
import pytest

from bluegreen.errors import BadInputError
from bluegreen.schema.reference import (
    SchemaSnapshot,
    available_references,
    compare,
    create_empty_database,
    introspect,
    introspect_file,
    load_reference,
)
from conftest import DEVNET_V31, EMPTY_SCHEMAS, REPO

SHARED_EMPTY = sorted(
    (int(m.group(2)), m.group(1) == "light", p)
    for p in EMPTY_SCHEMAS.glob("*.sqlite")
    if (m := re.fullmatch(r"(full|light)-v(\d+)\.sqlite", p.name))
)
SHARED_IDS = [f"{'light' if lt else 'full'}-v{v}" for v, lt, _ in SHARED_EMPTY]
REQUIRED_VERSIONS = [6, 9, 11, 16, 17, 18, 19, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31]


def test_the_shared_fixtures_cover_what_the_brief_promises() -> None:
    assert len(SHARED_EMPTY) == 30, "30 empty schemas (15 versions x full/light) are expected in ../shared"


def test_we_carry_every_required_version_full_and_light() -> None:
    have = set(available_references())
    missing = [(v, lt) for v in REQUIRED_VERSIONS for lt in (False, True) if (v, lt) not in have]
    assert missing == []


@pytest.mark.parametrize(("version", "light", "path"), SHARED_EMPTY, ids=SHARED_IDS)
def test_reference_equals_the_empty_ocore_database(version: int, light: bool, path: Path) -> None:
    actual = introspect_file(path)
    assert actual.user_version == version
    assert actual == load_reference(version, light)


@pytest.mark.parametrize(("version", "light", "path"), SHARED_EMPTY, ids=SHARED_IDS)
def test_database_built_from_our_data_matches_ocores(version: int, light: bool, path: Path, tmp_path: Path) -> None:
    db = tmp_path / "built.sqlite"
    create_empty_database(db, version, light)
    built = introspect_file(db)
    assert compare(built, introspect_file(path), check_user_version=True) == []
    # Same stored CREATE text and column order too: the build replays ocore's own statements.
    assert built == load_reference(version, light)


@pytest.mark.parametrize("version", [29, 30, 31])
@pytest.mark.parametrize("light", [False, True], ids=["full", "light"])
def test_derived_versions_build_and_carry_their_user_version(version: int, light: bool, tmp_path: Path) -> None:
    db = tmp_path / "built.sqlite"
    create_empty_database(db, version, light)
    built = introspect_file(db)
    assert built.user_version == version
    assert built == load_reference(version, light)


@pytest.mark.parametrize("light", [False, True], ids=["full", "light"])
def test_version_29_is_28_plus_user_version_and_31_is_30(light: bool) -> None:
    assert compare(load_reference(29, light), load_reference(28, light)) == []
    assert load_reference(31, light).tables == load_reference(30, light).tables
    assert load_reference(31, light).indexes == load_reference(30, light).indexes


@pytest.mark.parametrize("light", [False, True], ids=["full", "light"])
def test_version_30_adds_exactly_the_step_30_objects(light: bool) -> None:
    diffs = compare(load_reference(30, light), load_reference(29, light))
    assert {d.object for d in diffs} == {"table", "index"}
    assert all(d.kind == "extra" for d in diffs)
    assert sorted(d.name for d in diffs if d.object == "table") == [
        "aa_addresses", "aa_balances", "aa_responses", "aa_triggers"
    ]  # `joints` is already in ocore's fresh v28 schema; step 30's CREATE ... IF NOT EXISTS keeps it
    assert {d.name for d in diffs if d.object == "index" and not d.name.startswith("<")} == {
        "aaResponsesByAAAddress", "aaResponsesByMci", "aaResponsesByTriggerAddress"
    }


def test_full_and_light_step_30_differ_by_the_aa_responses_key_only() -> None:
    full, light = load_reference(30, False), load_reference(30, True)
    full_fks = {t: {(tuple(k.from_columns), k.table) for k in full.tables[t].foreign_keys} for t in full.tables if t.startswith("aa_")}
    light_fks = {t: {(tuple(k.from_columns), k.table) for k in light.tables[t].foreign_keys} for t in light.tables if t.startswith("aa_")}
    assert full_fks["aa_responses"] - light_fks["aa_responses"] == {(("aa_address",), "aa_addresses")}
    assert {t: v for t, v in full_fks.items() if t != "aa_responses"} == {t: v for t, v in light_fks.items() if t != "aa_responses"}


def test_v31_reference_matches_a_real_v31_node() -> None:
    """The devnet node ocore made in 2019 was created from ocore's shipped initial.byteball.sqlite
    (user_version 27) and migrated by ocore's own steps 28..31. Structurally it is our v31 reference."""
    real = introspect_file(DEVNET_V31 / "byteball.sqlite")
    ref = load_reference(31, False)
    assert compare(real, ref, check_user_version=True) == []
    # What differs beyond structure, and why:
    for name, table in real.tables.items():
        ours = ref.tables[name]
        if [c.name for c in table.columns] != [c.name for c in ours.columns]:
            # step 28's ALTER TABLE appended `timestamp`; ocore's fresh v28 schema declares it mid-table
            assert name == "units"
            assert table.columns[-1].name == "timestamp"
            assert [c for c in table.columns if c.name != "timestamp"] == [c for c in ours.columns if c.name != "timestamp"]
        else:
            # otherwise only the stored CREATE text differs (comments, layout of the step-30 statements)
            assert table.model_copy(update={"sql": ours.sql}) == ours
    assert real.indexes == ref.indexes


# ---------------------------------------------------------------- compare() on real small databases


def _snapshot(tmp_path: Path, name: str, *statements: str) -> SchemaSnapshot:
    conn = apsw.Connection(str(tmp_path / f"{name}.sqlite"))
    for sql in statements:
        conn.execute(sql)
    snap = introspect(conn)
    conn.close()
    return snap


def test_compare_ignores_column_order_whitespace_and_type_case(tmp_path: Path) -> None:
    a = _snapshot(
        tmp_path, "a",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, b  char(33)  NOT NULL DEFAULT 'x', c INT)",
        "ALTER TABLE t ADD COLUMN d TINYINT NOT NULL DEFAULT 0",
    )
    b = _snapshot(tmp_path, "b", "CREATE TABLE t (id INTEGER PRIMARY KEY, d TINYINT NOT NULL DEFAULT 0, b CHAR(33) NOT NULL DEFAULT 'x', c INT)")
    assert a != b
    assert compare(a, b) == []


def test_compare_reports_missing_extra_and_changed_objects(tmp_path: Path) -> None:
    expected = _snapshot(
        tmp_path, "expected",
        "CREATE TABLE p (id INTEGER PRIMARY KEY)",
        "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, p INT REFERENCES p(id) ON DELETE CASCADE, a TEXT NOT NULL, gone INT)",
        "CREATE INDEX tByA ON t(a)",
        "CREATE TABLE only_expected (x INT UNIQUE)",
    )
    actual = _snapshot(
        tmp_path, "actual",
        "CREATE TABLE p (id INTEGER PRIMARY KEY)",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, p INT REFERENCES p(id), a TEXT NULL, new INT)",
        "CREATE INDEX tByA ON t(a, p)",
        "CREATE INDEX tByP ON t(p)",
        "CREATE TABLE only_actual (x INT)",
    )
    found = {(d.kind, d.object, d.table, d.name) for d in compare(actual, expected)}
    assert found == {
        ("missing", "table", "only_expected", "only_expected"),
        ("missing", "index", "only_expected", "<u:only_expected(x)>"),
        ("extra", "table", "only_actual", "only_actual"),
        ("missing", "column", "t", "gone"),
        ("extra", "column", "t", "new"),
        ("changed", "column", "t", "a"),
        ("changed", "table", "t", "t"),  # AUTOINCREMENT
        ("missing", "foreign_key", "t", "(p) -> p(id) on update NO ACTION on delete CASCADE"),
        ("extra", "foreign_key", "t", "(p) -> p(id) on update NO ACTION on delete NO ACTION"),
        ("changed", "index", "t", "tByA"),
        ("extra", "index", "t", "tByP"),
    }


def test_compare_user_version_only_when_asked(tmp_path: Path) -> None:
    a = _snapshot(tmp_path, "a", "CREATE TABLE t (x)", "PRAGMA user_version=5")
    b = _snapshot(tmp_path, "b", "CREATE TABLE t (x)")
    assert compare(a, b) == []
    assert [d.object for d in compare(a, b, check_user_version=True)] == ["user_version"]


# ---------------------------------------------------------------- errors and packaging


def test_unknown_version_is_our_error_with_a_hint() -> None:
    with pytest.raises(BadInputError) as info:
        load_reference(12, False)
    assert "12" in info.value.message and "full-v28" in (info.value.hint or "")


def test_create_never_overwrites(tmp_path: Path) -> None:
    db = tmp_path / "x.sqlite"
    db.write_bytes(b"operator data")
    with pytest.raises(BadInputError):
        create_empty_database(db, 28, False)
    assert db.read_bytes() == b"operator data"


def test_introspect_file_leaves_no_trace_next_to_the_database(tmp_path: Path) -> None:
    db = tmp_path / "wal.sqlite"
    create_empty_database(db, 28, False)
    conn = apsw.Connection(str(db))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    before = sorted(os.listdir(tmp_path))
    introspect_file(db)
    assert sorted(os.listdir(tmp_path)) == before


def test_top_level_schemas_reference_is_the_packaged_data() -> None:
    top = REPO / "schemas" / "reference"
    packaged = REPO / "bluegreen" / "schema" / "reference_data"
    assert top.resolve() == packaged.resolve()
    assert sorted(p.name for p in top.glob("*.json")) == sorted(
        f"{'light' if lt else 'full'}-v{v}.json" for v, lt in available_references()
    )


def test_reference_data_is_in_sync_with_the_shared_fixtures() -> None:
    """The dev tool that generated the data reproduces it byte for byte (run as a real process)."""
    done = subprocess.run(
        [str(REPO / "scripts" / "refresh-reference-schemas"), "--check"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "would change: none" in done.stdout


def test_reference_data_ships_inside_the_built_package(tmp_path: Path) -> None:
    """Build the package the way setuptools does (build_py, real process) and load a reference from the
    built tree, far from the repository: the product must never need the source checkout or ../shared."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "bluegreen", src / "bluegreen", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, src / name)
    built = tmp_path / "built"
    done = subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py", "--build-lib", str(built)],
        cwd=src, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    shipped = sorted(p.name for p in (built / "bluegreen" / "schema" / "reference_data").glob("*.json"))
    assert shipped == sorted(p.name for p in (REPO / "schemas" / "reference").glob("*.json"))
    probe = subprocess.run(
        [sys.executable, "-c", "from bluegreen.schema.reference import load_reference; print(load_reference(31, True).user_version)"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(built)}, capture_output=True, text=True, timeout=120,
    )
    assert probe.stdout.strip() == "31", probe.stderr


def test_introspect_file_refuses_a_database_with_a_live_wal(tmp_path: Path) -> None:
    db = tmp_path / "odd name?#.sqlite"  # URI-special characters in the path are quoted
    create_empty_database(db, 28, False)
    assert introspect_file(db).user_version == 28
    writer = apsw.Connection(str(db))
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE newer (x)")  # committed, but only in the -wal file
    with pytest.raises(BadInputError, match="write-ahead log"):
        introspect_file(db)
    assert "newer" in introspect(writer).tables
    writer.close()
