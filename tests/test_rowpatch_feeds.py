"""engine/rowpatch.py `rewrite_feeds_by_mci`: the data-feed keys after a catch-up are exactly a full fill of
the new rows, whatever happened to the changed units' feeds: new rows, a unit that became stable (its mci
goes from NULL, keyed as 0, to a number), rows removed (a voided unit), a value posted again at the same mci
by another unit (the later row is the last writer), and a feed name holding a newline (every key rewritten)."""

from __future__ import annotations

import random
from pathlib import Path

import apsw
import pytest

from bluegreen.engine.catchup import CatchUpStats
from bluegreen.engine.kvwriter import KvBuilder, iter_kv
from bluegreen.engine.rowpatch import rewrite_feeds_by_mci
from bluegreen.formats.feeds import data_feed_entries

SCHEMA = """
CREATE TABLE units (unit TEXT PRIMARY KEY, main_chain_index INT);
CREATE INDEX byMci ON units(main_chain_index);
CREATE TABLE unit_authors (unit TEXT, address TEXT);
CREATE TABLE data_feeds (unit TEXT, message_index INT, feed_name TEXT, `value` TEXT, int_value INT);
"""


def _db(path: Path, units: dict[str, int | None], authors: dict[str, list[str]],
        feeds: list[tuple[str, str, str | None, int | None]]) -> Path:
    conn = apsw.Connection(str(path))
    conn.execute(SCHEMA)
    with conn:
        conn.executemany("INSERT INTO units VALUES (?, ?)", units.items())
        conn.executemany("INSERT INTO unit_authors VALUES (?, ?)", ((u, a) for u, al in authors.items() for a in al))
        conn.executemany("INSERT INTO data_feeds VALUES (?, 0, ?, ?, ?)", feeds)
    conn.close()
    return path


def _full_fill(db: Path, kv_dir: Path) -> None:
    conn = apsw.Connection(str(db))
    kv = KvBuilder(kv_dir)
    rows = conn.execute("SELECT d.unit, a.address, d.feed_name, d.`value`, d.int_value, u.main_chain_index "
                        "FROM data_feeds d CROSS JOIN units u USING(unit) CROSS JOIN unit_authors a USING(unit) "
                        "ORDER BY d.rowid, a.address")
    for unit, address, name, value, int_value, mci in rows:
        kv.write_chunk([(k.encode(), v.encode()) for k, v in data_feed_entries(address, name, value, int_value, mci, unit)])
    kv.close()
    conn.close()


def _catch_up(old: Path, new: Path, kv_dir: Path, changed: set[str]) -> CatchUpStats:
    conn = apsw.Connection(str(new))
    conn.execute("ATTACH ? AS old", (str(old),))
    conn.execute("CREATE TEMP TABLE cu_units (unit TEXT PRIMARY KEY)")
    conn.executemany("INSERT INTO temp.cu_units VALUES (?)", ((u,) for u in changed))
    stats = CatchUpStats(started_at_unix=0, from_units_rowid=0, to_units_rowid=0, units_before=0, units_after=0)
    kv = KvBuilder(kv_dir)
    rewrite_feeds_by_mci(conn, kv, stats)
    kv.close()
    conn.close()
    return stats


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("newline", [False, True])
def test_feed_keys_after_catch_up_are_a_full_fill_of_the_new_rows(tmp_path: Path, seed: int, newline: bool) -> None:
    rng = random.Random(seed)
    addrs = ["ADDR_A", "ADDR_B", "ADDR_C"]
    names = ["price", "temp", "x\ny" if newline else "vol"]
    values = ["1", "2.5", "abc", "1e3", "x"]
    units: dict[str, int | None] = {}
    authors: dict[str, list[str]] = {}
    feeds = []
    for i in range(120):
        u = f"u{i:03d}"
        units[u] = i // 3 + 1 if i < 100 else None  # several units per mci; the last ones unstable
        authors[u] = rng.sample(addrs, rng.choice([1, 1, 2]))
        for _ in range(rng.choice([0, 1, 2])):
            v = rng.choice(values)
            feeds.append((u, rng.choice(names), v, None))
    old = _db(tmp_path / "old.sqlite", units, authors, feeds)
    changed: set[str] = set()
    units2 = dict(units)
    for u in [f"u{i:03d}" for i in range(100, 120)]:  # most unstable units become stable
        if rng.random() < 0.7:
            units2[u] = 40
            changed.add(u)
    feeds2 = [f for f in feeds if not (f[0] in {"u010", "u050"})]  # two units voided: their feeds go
    changed |= {"u010", "u050"}
    for i in range(120, 160):  # new units, some repeating an old (pair, value) at an existing mci
        u = f"u{i:03d}"
        units2[u] = rng.choice([None, 40, 41, 42, 20])
        authors[u] = rng.sample(addrs, 1)
        changed.add(u)
        for _ in range(rng.choice([1, 2])):
            feeds2.append((u, rng.choice(names), rng.choice(values), None))
    new = _db(tmp_path / "new.sqlite", units2, authors, feeds2)
    kv = tmp_path / "kv"
    _full_fill(old, kv)
    stats = _catch_up(old, new, kv, changed)
    assert stats.feeds_full_rebuild == newline
    oracle = tmp_path / "oracle"
    _full_fill(new, oracle)
    assert list(iter_kv(kv)) == list(iter_kv(oracle))
