"""Every ocore step up to 50 as data: empty start points, the devnet v29 node and the AA v32 node upgraded
to 50 end as ocore 0.4.6's own migration left them (../shared/fixtures/ocore-migrated)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import apsw
import pytest
from conftest import DEVNET_V29, EMPTY_SCHEMAS, FIXTURES, writable_copy

from bluegreen.engine.kvwriter import iter_kv
from bluegreen.engine.migrate import MigrationOptions, migrate_copy
from bluegreen.schema.reference import compare, introspect_file
from bluegreen.schema.steps import SUPPORTED_TARGETS, max_known_version

MIGRATED = FIXTURES / "ocore-migrated"
AA_V32 = FIXTURES / "ocore-aa-v32"
STARTS = sorted(
    (int(m.group(2)), m.group(1) == "light")
    for p in EMPTY_SCHEMAS.glob("*.sqlite")
    if (m := re.fullmatch(r"(full|light)-v(\d+)\.sqlite", p.name))
)
# columns holding the time of the run that made a row: compared as present, not equal
RUN_TIME_COLUMNS = {"creation_date", "last_update"}


def run(node: Path, db_name: str = "byteball.sqlite", **opts: object):
    return migrate_copy(node / db_name, node / "rocksdb", node.parent / f"{node.name}-journal.json",
                        MigrationOptions(target_version=50, **opts))


def rows(db: Path) -> dict[str, list[tuple[object, ...]]]:
    conn = apsw.Connection(f"file:{db}?immutable=1", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:
        out = {}
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name").fetchall():
            cols = [c[1] for c in conn.execute(f'PRAGMA table_info("{table}")')]
            sel = ", ".join(f'"{c}" IS NOT NULL' if c in RUN_TIME_COLUMNS else f'"{c}"' for c in sorted(cols))
            out[table] = sorted(conn.execute(f'SELECT {sel} FROM "{table}"').fetchall(), key=repr)
        return out
    finally:
        conn.close()


def expected_kv(path: Path) -> dict[bytes, bytes]:
    lines = [l for l in path.read_text("utf-8").split("\n") if l]  # values hold U+2028: not splitlines
    return {json.loads(l)["k"].encode("utf-8"): json.loads(l)["v"].encode("utf-8") for l in lines}


def test_supported_targets_come_from_the_catalogue() -> None:
    assert SUPPORTED_TARGETS == tuple(range(31, 51)) and max_known_version() == 50


@pytest.mark.parametrize(("version", "light"), STARTS, ids=[f"{'light' if lt else 'full'}-v{v}" for v, lt in STARTS])
def test_empty_start_point_to_50_has_ocores_migrated_schema(version: int, light: bool, tmp_path: Path) -> None:
    kind = "light" if light else "full"
    node = tmp_path / "node"
    node.mkdir()
    db_name = "byteball-light.sqlite" if light else "byteball.sqlite"
    writable_copy(EMPTY_SCHEMAS / f"{kind}-v{version}.sqlite", node / db_name)
    report = run(node, db_name, light=light)
    assert report.completed
    expected = MIGRATED / f"{kind}-v{version}-to-50.sqlite"
    assert compare(introspect_file(node / db_name), introspect_file(expected), check_user_version=True) == []
    got, want = rows(node / db_name), rows(expected)
    got.pop("sqlite_sequence", None), want.pop("sqlite_sequence", None)  # see ocore-migrated/README.md
    assert got == want


def test_devnet_v29_to_50_equals_ocores_run(tmp_path: Path) -> None:
    node = writable_copy(DEVNET_V29, tmp_path / "devnet-v29")
    report = run(node)
    assert report.completed and report.failures_total == 0
    assert dict(iter_kv(node / "rocksdb")) == expected_kv(DEVNET_V29 / "expected-kv.jsonl")
    expected = MIGRATED / "devnet-v29-to-50.sqlite"
    assert compare(introspect_file(node / "byteball.sqlite"), introspect_file(expected), check_user_version=True) == []
    assert rows(node / "byteball.sqlite") == rows(expected)


def test_aa_v32_to_50_equals_ocores_run(tmp_path: Path) -> None:
    node = writable_copy(AA_V32, tmp_path / "aa-v32")
    report = run(node)
    assert report.completed
    assert dict(iter_kv(node / "rocksdb")) == expected_kv(AA_V32 / "expected-kv.jsonl")
    expected = MIGRATED / "aa-v32-to-50.sqlite"
    assert compare(introspect_file(node / "byteball.sqlite"), introspect_file(expected), check_user_version=True) == []
    assert rows(node / "byteball.sqlite") == rows(expected)


FRESH = FIXTURES / "empty-schemas-29-50"
FRESH_FULL = sorted(int(m.group(1)) for p in FRESH.glob("full-v*.sqlite") if (m := re.fullmatch(r"full-v(\d+)\.sqlite", p.name)))


@pytest.mark.parametrize("version", [v for v in FRESH_FULL if v < 50])
def test_fresh_full_node_of_29_to_49_reaches_ocores_v50_schema(version: int, tmp_path: Path) -> None:
    # ocore-migrated/README.md: every fresh full-vN from 29 to 50 migrates to full-v28-to-50's schema
    node = tmp_path / "node"
    node.mkdir()
    writable_copy(FRESH / f"full-v{version}.sqlite", node / "byteball.sqlite")
    report = run(node)
    assert report.completed and report.source_version == version
    assert compare(introspect_file(node / "byteball.sqlite"), introspect_file(MIGRATED / "full-v28-to-50.sqlite"),
                   check_user_version=True) == []


def test_devnet_v31_with_its_kv_reaches_50_and_keeps_every_key(tmp_path: Path) -> None:
    node = writable_copy(FIXTURES / "ocore-devnet-v31", tmp_path / "devnet-v31")
    before = dict(iter_kv(node / "rocksdb"))
    report = run(node)
    assert report.completed and report.source_version == 31 and report.network == "devnet"
    assert dict(iter_kv(node / "rocksdb")) == before  # no st keys: steps 34 and 39 write nothing
    assert compare(introspect_file(node / "byteball.sqlite"), introspect_file(MIGRATED / "full-v28-to-50.sqlite"),
                   check_user_version=True) == []


@pytest.mark.parametrize(("version", "light"), STARTS, ids=[f"{'light' if lt else 'full'}-v{v}" for v, lt in STARTS])
def test_ocores_migrated_schemas_differ_from_the_v50_reference_by_catalogued_drifts_only(version: int, light: bool) -> None:
    from bluegreen.schema.drift import explain
    from bluegreen.schema.reference import load_reference

    kind = "light" if light else "full"
    diffs = compare(introspect_file(MIGRATED / f"{kind}-v{version}-to-50.sqlite"), load_reference(50, light))
    assert explain(diffs, light=light).unexplained == []


@pytest.mark.parametrize("name", sorted(p.name for p in FRESH.glob("*.sqlite") if int(p.stem.split("-v")[1]) >= 32))
def test_reference_data_32_to_50_equals_ocores_fresh_schemas(name: str) -> None:
    from bluegreen.schema.reference import load_reference

    kind, v = name.removesuffix(".sqlite").split("-v")
    assert load_reference(int(v), kind == "light") == introspect_file(FRESH / name)


KV_ERA_KILL = """
import sys
from pathlib import Path
from bluegreen.engine.migrate import MigrationOptions, migrate_copy
node = Path(sys.argv[1])
migrate_copy(node / "byteball.sqlite", node / "rocksdb", node.parent / f"{node.name}-journal.json",
             MigrationOptions(target_version=50))
"""


@pytest.mark.parametrize("point", ["engine.kv_era_before_install", "engine.kv_era_before_commit"])
def test_aa_v32_killed_after_step_39_typed_the_values_resumes_to_ocores_run(point: str, tmp_path: Path) -> None:
    """Steps 34 (storage sizes, measured on the values) and 39 (types every value) on a KV-era source: a kill
    after step 39 wrote, before the SQLite commit, must neither type a value twice nor let the re-run's step 34
    measure typed values (an in-place run did both: storage sizes too large, or `s\\nn\\n5`)."""
    import os
    import subprocess
    import sys

    node = writable_copy(AA_V32, tmp_path / "aa-v32")
    env = {**os.environ, "BLUEGREEN_KILL_AT": point}
    proc = subprocess.run([sys.executable, "-c", KV_ERA_KILL, str(node)], env=env,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == -9, "the kill point was not reached"
    report = run(node)
    assert report.completed and report.resumed
    assert dict(iter_kv(node / "rocksdb")) == expected_kv(AA_V32 / "expected-kv.jsonl")
    assert rows(node / "byteball.sqlite") == rows(MIGRATED / "aa-v32-to-50.sqlite")
