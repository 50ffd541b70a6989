"""A full verify split into tasks over several processes finds exactly what one process finds.

`verify --jobs N` runs integrity_check, the FK checks, the hash pass (by unit-id range), the balls (by rowid
range) and the rest as independent tasks in worker processes (`lifecycle/verify_tasks.py`). The ranges must
cover every unit, key and ball exactly once, and the merged report must equal the one-process report item
for item: real generated node, real migration, real worker processes."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import apsw
import pytest

from bluegreen.engine.migrate import MigrationOptions, migrate_copy
from bluegreen.engine.pool import OrderedPool, open_pool
from bluegreen.engine.rocks_options import open_node_compatible
from bluegreen.generator import generate_node_dir
from bluegreen.lifecycle import verify_tasks
from bluegreen.lifecycle.verify import (
    CHECK_BALLS, CHECK_FOREIGN_KEYS, CHECK_INTEGRITY, CHECK_KV_DATA_FEEDS, CHECK_KV_UNITS, CHECK_ROW_COUNTS,
    verify_green,
)
from bluegreen.lifecycle.verify_models import VerifyReport

UNITS = 1200


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("verify-jobs")
    blue = base / "blue"
    generate_node_dir(blue, units=UNITS, version=28, seed=41)
    green = base / "green"
    shutil.copytree(blue, green)
    report = migrate_copy(green / "byteball.sqlite", green / "rocksdb", base / "journal.json",
                          MigrationOptions(jobs=1, target_version=50))
    assert report.completed
    return blue, green


def _findings(report: VerifyReport) -> list[dict[str, object]]:
    """Everything a report says about each check except how long it took."""
    return [c.model_dump(exclude={"seconds"}) for c in report.checks]


def _tamper(green: Path) -> None:
    """One defect per split check, at both open ends of the unit-id space and in the middle."""
    conn = apsw.Connection(str(green / "byteball.sqlite"))
    units = [r[0] for r in conn.execute("SELECT unit FROM units ORDER BY unit")]
    ball_unit = conn.execute("SELECT unit FROM balls ORDER BY rowid LIMIT 1 OFFSET 500").fetchall()[0][0]
    conn.execute("UPDATE balls SET ball='x'||substr(ball,2) WHERE unit=?", (ball_unit,))
    unstable = conn.execute("SELECT unit FROM units WHERE unit NOT IN (SELECT unit FROM balls) LIMIT 1").fetchall()
    conn.execute("PRAGMA foreign_keys=OFF")  # a new FK violation (and one more parenthoods row than blue)
    conn.execute("INSERT INTO parenthoods (child_unit, parent_unit) VALUES (?, 'no-such-parent')", unstable[0])
    conn.close()
    db = open_node_compatible(green / "rocksdb")
    try:
        first, middle, last = units[0], units[len(units) // 2], units[-1]
        key = b"j\n" + middle.encode()
        db.put(key, db.get(key).replace(b'"version":"', b'"version":"9'))
        db.delete(b"j\n" + first.encode())
        db.delete(b"j\n" + last.encode())
        db.put(b"j\n!below-every-unit-id", b"{}")  # '!' sorts before '+', the first base64 character
        db.put(b"j\n~above-every-unit-id", b"{}")  # '~' sorts after 'z'
        db.put(b"j\n" + middle.encode() + b"x", b"{}")
        some_feed = next(k for k, _ in db.items(from_key=b"df\n") if k.startswith(b"df\n"))
        db.put(some_feed, b"wrong")
    finally:
        db.close()


def test_one_two_and_three_processes_give_the_same_report_on_a_good_green(migrated: tuple[Path, Path]) -> None:
    blue, green = migrated
    reports = [verify_green(blue, green, target_version=50, jobs=j) for j in (1, 2, 3)]
    assert all(r.passed for r in reports), [r.summary() for r in reports if not r.passed]
    assert _findings(reports[0]) == _findings(reports[1]) == _findings(reports[2])
    units = next(c for c in reports[0].checks if c.name == CHECK_KV_UNITS)
    assert units.checked == UNITS


def test_every_defect_is_found_once_and_in_order_whatever_the_number_of_processes(
        migrated: tuple[Path, Path], tmp_path: Path) -> None:
    blue, good = migrated
    green = tmp_path / "green"
    shutil.copytree(good, green)
    _tamper(green)
    one, two, three = (verify_green(blue, green, target_version=50, jobs=j) for j in (1, 2, 3))
    assert _findings(one) == _findings(two) == _findings(three)
    failed = {c.name: c for c in one.checks if not c.passed}
    assert set(failed) == {CHECK_KV_UNITS, CHECK_BALLS, CHECK_FOREIGN_KEYS, CHECK_KV_DATA_FEEDS, CHECK_ROW_COUNTS}
    units = failed[CHECK_KV_UNITS]
    # two missing keys (first and last unit), three strays (both open ends and the middle), one bad hash
    assert units.failed == 6, units.first_failures
    assert "2 stray" not in units.detail and "3 stray j key(s)" in units.detail
    assert units.first_failures[0].startswith("j key without a units row: j\\n!below")
    assert units.first_failures[-1].startswith("j key without a units row: j\\n~above")
    assert failed[CHECK_BALLS].failed >= 1  # the changed ball, and the balls of its children built on it
    assert next(c for c in one.checks if c.name == CHECK_INTEGRITY).passed


def test_each_check_reports_its_work_time(migrated: tuple[Path, Path]) -> None:
    blue, green = migrated
    report = verify_green(blue, green, target_version=50, jobs=2)
    assert all(c.seconds is not None and c.seconds >= 0 for c in report.checks)


def test_unit_id_ranges_cover_every_string_exactly_once() -> None:
    rng = random.Random(5)
    alphabet = verify_tasks.B64_BYTE_ORDER + "!~\n é"
    for parts in (1, 2, 7, 64, 1000, 5000):
        ranges = verify_tasks.unit_ranges(parts)
        assert len(ranges) == min(parts, verify_tasks.MAX_RANGES)
        assert ranges[0][0] is None and ranges[-1][1] is None
        for (_, hi), (lo, _) in zip(ranges, ranges[1:]):
            assert hi == lo  # contiguous, half-open
        for _ in range(300):
            s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 5)))
            b = s.encode()
            inside = [r for r in ranges if (r[0] is None or b >= r[0].encode()) and (r[1] is None or b < r[1].encode())]
            assert len(inside) == 1, (s, inside)


def test_rowid_ranges_cover_every_rowid_exactly_once() -> None:
    for lo, hi, parts in ((1, 1, 4), (1, 100, 3), (5, 1_000_003, 16), (-10, 10, 7)):
        ranges = verify_tasks.rowid_ranges(lo, hi, parts)
        for rowid in [lo - 5, lo, hi, hi + 5, (lo + hi) // 2]:
            inside = [r for r in ranges if (r[0] is None or rowid >= r[0]) and (r[1] is None or rowid < r[1])]
            assert len(inside) == 1, (rowid, ranges)
    assert verify_tasks.rowid_ranges(None, None, 4) == [(None, None)]


def test_an_idle_worker_takes_the_next_task_while_a_long_one_runs() -> None:
    # time.sleep is a stdlib function: the worker imports only what the pickle names
    items = [3.0] + [0.01] * 6
    with OrderedPool(2) as pool:
        order = [i for i, _ in pool.imap_unordered(time.sleep, items)]
    assert sorted(order) == list(range(len(items)))
    assert order[-1] == 0  # the six short tasks all finished on the other worker first
    with open_pool(1) as inline:
        assert list(inline.imap_unordered(abs, [-1, -2])) == [(0, 1), (1, 2)]


def test_balls_checked_in_small_windows_give_the_same_report(migrated: tuple[Path, Path], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The balls check reads its range in windows of rowids (memory bounded on any node); windows smaller
    than a range, and ranges smaller than a window, see every ball once."""
    from bluegreen.lifecycle import verify

    blue, good = migrated
    green = tmp_path / "green"
    shutil.copytree(good, green)
    _tamper(green)
    whole = verify_green(blue, green, target_version=50, jobs=2)
    monkeypatch.setattr(verify, "BALLS_PER_QUERY", 7)
    windowed = verify_green(blue, green, target_version=50, jobs=1)
    assert _findings(windowed) == _findings(whole)
