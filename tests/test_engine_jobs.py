"""`--jobs`: the KV fill and verify's hash pass in worker processes give exactly what one process gives.

Real generated nodes and the real devnet fixture, real worker processes (engine/pool.py), real SIGKILLs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import apsw
import pytest

from bluegreen.engine.kvwriter import iter_kv
from bluegreen.engine.migrate import MigrationOptions, MigrationReport, migrate_copy
from bluegreen.engine.pool import OrderedPool, WorkerDied, WorkerFailed, default_jobs, open_pool
from bluegreen.engine.rocks_options import open_node_compatible
from bluegreen.errors import MigrationError
from bluegreen.generator import generate_node_dir
from bluegreen.lifecycle.verify import CHECK_KV_UNITS, verify_green
from test_engine_devnet import _corrupt_payload_and_drop_definition, expected_kv

REPO = Path(__file__).resolve().parent.parent
UNITS = 1500
CHUNK = 200  # several chunks in flight at once


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    node = tmp_path_factory.mktemp("jobs") / "blue"
    generate_node_dir(node, units=UNITS, version=28, seed=23)
    return node


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _migrate(node: Path, **opts: Any) -> MigrationReport:
    return migrate_copy(node / "byteball.sqlite", node / "rocksdb", node.parent / f"{node.name}-journal.json",
                        MigrationOptions(**opts))


def _same_report(a: MigrationReport, b: MigrationReport) -> None:
    skip = {"db_path", "kv_dir", "elapsed_seconds", "units_per_second", "timings", "jobs"}
    assert a.model_dump(exclude=skip) == b.model_dump(exclude=skip)


def test_generated_node_gives_byte_identical_kv_with_one_or_two_jobs(generated: Path, tmp_path: Path) -> None:
    one, two = _copy(generated, tmp_path / "one"), _copy(generated, tmp_path / "two")
    r1 = _migrate(one, jobs=1, unit_chunk=CHUNK)
    r2 = _migrate(two, jobs=2, unit_chunk=CHUNK)
    assert r1.completed and r2.completed and (r1.jobs, r2.jobs) == (1, 2)
    _same_report(r1, r2)
    kv1, kv2 = list(iter_kv(one / "rocksdb")), list(iter_kv(two / "rocksdb"))
    assert len([k for k, _ in kv1 if k.startswith(b"j\n")]) == UNITS
    assert kv1 == kv2  # same keys, same values, same order


def test_devnet_fixture_gives_ocores_keys_with_two_jobs(devnet_v29: Path, tmp_path: Path) -> None:
    one = _copy(devnet_v29, tmp_path / "one")
    r1 = _migrate(one, jobs=1, unit_chunk=3)
    r2 = _migrate(devnet_v29, jobs=2, unit_chunk=3)
    _same_report(r1, r2)
    assert dict(iter_kv(devnet_v29 / "rocksdb")) == dict(iter_kv(one / "rocksdb")) == expected_kv()


def test_failures_are_the_same_and_in_the_same_order_with_two_jobs(devnet_v29: Path, tmp_path: Path) -> None:
    _corrupt_payload_and_drop_definition(devnet_v29 / "byteball.sqlite")
    one = _copy(devnet_v29, tmp_path / "one")
    reports = []
    for node, jobs in ((one, 1), (devnet_v29, 2)):
        with pytest.raises(MigrationError) as caught:
            _migrate(node, jobs=jobs, unit_chunk=2)
        reports.append(caught.value.report)  # type: ignore[attr-defined]
    assert reports[0].failures_total == 2
    assert reports[0].failures == reports[1].failures
    _same_report(reports[0], reports[1])


KILL_SCRIPT = """
import sys
from pathlib import Path
from bluegreen.engine.migrate import MigrationOptions, migrate_copy
node = Path(sys.argv[1])
migrate_copy(node / "byteball.sqlite", node / "rocksdb", node.parent / f"{node.name}-journal.json",
             MigrationOptions(unit_chunk=int(sys.argv[2]), jobs=2))
"""


def _workers_tagged(tag: str) -> list[int]:
    """Live processes whose environment carries `tag` (the killed run's workers, if any survived)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if tag.encode() in (entry / "environ").read_bytes() and b"poolworker" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _wait_no_workers(tag: str) -> list[int]:
    deadline = time.monotonic() + 10
    while (left := _workers_tagged(tag)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.parametrize("point", ["engine.mid_units_chunk@2", "engine.after_units_chunk_write@3",
                                   "engine.between_units_chunks@4"])
def test_killed_with_two_jobs_resumes_to_the_same_bytes(generated: Path, tmp_path: Path, point: str) -> None:
    ref = _copy(generated, tmp_path / "ref")
    assert _migrate(ref, jobs=1, unit_chunk=CHUNK).completed
    node = _copy(generated, tmp_path / "node")
    tag = f"BLUEGREEN_TEST_TAG={uuid.uuid4().hex}"
    env = {**os.environ, "BLUEGREEN_KILL_AT": point, "BLUEGREEN_TEST_TAG": tag}
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(node), str(CHUNK)], env=env, cwd=REPO)
    assert proc.returncode == -9, "the kill point was not reached"
    assert _wait_no_workers(tag) == [], "workers outlived the killed main process"
    report = _migrate(node, jobs=2, unit_chunk=CHUNK)
    assert report.completed and report.resumed and report.resumed_from_unit_rowid > 0
    assert list(iter_kv(node / "rocksdb")) == list(iter_kv(ref / "rocksdb"))


def _tamper_green(green: Path) -> None:
    """A changed joint, a missing j key and a stray j key: three different findings."""
    conn = apsw.Connection(str(green / "byteball.sqlite"))
    units = [r[0] for r in conn.execute("SELECT unit FROM units ORDER BY unit LIMIT 3 OFFSET 700")]
    conn.close()
    db = open_node_compatible(green / "rocksdb")
    try:
        key = b"j\n" + units[0].encode()
        db.put(key, db.get(key).replace(b'"alt":"1"', b'"alt":"2"'))
        db.delete(b"j\n" + units[1].encode())
        db.put(b"j\n" + units[2].encode() + b"x", b"{}")
    finally:
        db.close()


def test_verify_results_are_identical_with_one_or_two_jobs(generated: Path, tmp_path: Path) -> None:
    green = _copy(generated, tmp_path / "green")
    assert _migrate(green, jobs=2).completed
    passed = [verify_green(generated, green, jobs=j) for j in (1, 2)]
    assert all(r.passed for r in passed)
    _tamper_green(green)
    checks = []
    for jobs in (1, 2):
        report = verify_green(generated, green, jobs=jobs)
        [check] = [c for c in report.checks if c.name == CHECK_KV_UNITS]
        checks.append(check)
    assert not checks[0].passed and checks[0].failed == 3, checks[0]
    # the same findings in the same order; only the measured work time differs
    assert checks[0].model_dump(exclude={"seconds"}) == checks[1].model_dump(exclude={"seconds"})
    assert any("hashes to" in f for f in checks[0].first_failures)


# --- the pool itself (stdlib functions: a worker imports only what the pickles name) ---


def test_results_come_back_in_order_from_several_workers() -> None:
    with OrderedPool(3) as pool:
        assert list(pool.imap(abs, range(-40, 0))) == list(range(40, 0, -1))
    with open_pool(1) as inline:
        assert list(inline.imap(abs, [-1, -2])) == [1, 2]
    assert default_jobs() == len(os.sched_getaffinity(0))


def test_an_exception_in_a_worker_is_raised_with_its_traceback() -> None:
    with OrderedPool(2) as pool, pytest.raises(WorkerFailed, match="ValueError"):
        list(pool.imap(int, ["1", "2", "x", "4"]))


def test_a_worker_that_dies_is_reported_not_waited_for() -> None:
    with OrderedPool(2) as pool, pytest.raises(WorkerDied, match="exit 3"):
        list(pool.imap(os._exit, [3, 3]))


def test_the_default_runs_small_work_in_process_and_honours_an_explicit_jobs() -> None:
    from bluegreen.engine.pool import SMALL_WORK_UNITS, resolve_jobs

    assert resolve_jobs(None, SMALL_WORK_UNITS - 1) == 1  # workers would cost more than they save
    assert resolve_jobs(None, SMALL_WORK_UNITS) == default_jobs()
    assert resolve_jobs(None) == default_jobs()
    assert resolve_jobs(2, 10) == 2


def _damage_a_page_of(db: Path, table: str) -> None:
    """Overwrite one b-tree page of `table` with garbage (a damaged disk block under that table)."""
    conn = apsw.Connection(str(db))
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pageno = conn.execute("SELECT pageno FROM dbstat WHERE name=? AND pagetype='leaf' ORDER BY pageno LIMIT 1 OFFSET 3",
                          (table,)).fetchone()[0]
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with open(db, "r+b") as f:
        f.seek((pageno - 1) * page_size)
        f.write(b"\xa5" * page_size)


def test_a_damaged_page_read_by_a_worker_raises_the_same_sqlite_error_as_one_process(generated: Path,
                                                                                       tmp_path: Path) -> None:
    """Workers read the copy themselves: an SQLite error there reaches the caller as the same apsw type as
    with one process (the lifecycle classifies full disks and damage by type), not as a worker traceback."""
    errors = []
    for jobs in (1, 2):
        node = _copy(generated, tmp_path / f"j{jobs}")
        _damage_a_page_of(node / "byteball.sqlite", "outputs")
        with pytest.raises(apsw.Error) as caught:
            _migrate(node, jobs=jobs, unit_chunk=CHUNK)
        errors.append(type(caught.value))
    assert errors[0] is errors[1] and errors[0] is apsw.CorruptError, errors
