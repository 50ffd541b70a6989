"""engine/pagediff.py on real SQLite files: every row that differs between two backups is among the rowids
the page compare returns, whatever happened in between (in-place updates of the same size, deletes, pages
freed and reused, overflow rows whose tail changed), checked against a full EXCEPT of both tables. Both
compares are held to it: roles from dbstat (copy catch-up), and roles from interior walks plus the old
file's overflow owners (the row patch's `changed_rowids_indexed`)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import apsw
import pytest

from bluegreen.engine.pagediff import PageDiffUnavailable, _roles, build_page_index, changed_pages, changed_rowids, \
    changed_rowids_indexed, dirty_pages, page_size, table_leaves

TABLES = ["t", "u"]


def _open(path: Path) -> apsw.Connection:
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL")  # what ocore uses
    return conn


def _live(tmp: Path) -> apsw.Connection:
    conn = _open(tmp / "live.sqlite")
    conn.execute("CREATE TABLE t (a TEXT, b BLOB, n INTEGER)")
    conn.execute("CREATE INDEX t_a ON t(a)")
    conn.execute("CREATE TABLE u (x TEXT NOT NULL)")
    with conn:
        conn.executemany("INSERT INTO t VALUES (?, ?, ?)",
                         ((f"row-{i:06d}", bytes(40), i) for i in range(3000)))
        conn.executemany("INSERT INTO u VALUES (?)", ((f"u{i}" * 3,) for i in range(2000)))
    return conn


def _backup(live: apsw.Connection, dst: Path) -> Path:
    """A copy by the backup API, as stage and catch-up take them."""
    out = apsw.Connection(str(dst))
    with out.backup("main", live, "main") as b:
        b.step(-1)
    out.close()
    return dst


def _truth(old: Path, new: Path, table: str) -> set[int]:
    conn = apsw.Connection(str(new))
    conn.execute("ATTACH ? AS old", (str(old),))
    try:
        q = (f"SELECT rowid FROM (SELECT rowid, * FROM main.{table} EXCEPT SELECT rowid, * FROM old.{table}) "
             f"UNION SELECT rowid FROM (SELECT rowid, * FROM old.{table} EXCEPT SELECT rowid, * FROM main.{table})")
        return {r[0] for r in conn.execute(q)}
    finally:
        conn.close()


def _root(db: Path, table: str) -> int:
    conn = apsw.Connection(str(db))
    try:
        return int(conn.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (table,)).fetchone()[0])
    finally:
        conn.close()


def _indexed(old: Path, new: Path) -> dict[str, set[int]]:
    index = build_page_index(old, TABLES)
    got, _dirty = changed_rowids_indexed(old, new, {t: (_root(old, t), _root(new, t)) for t in TABLES}, index)
    return got


def _check(old: Path, new: Path) -> dict[str, set[int]]:
    got, _dirty = changed_rowids(old, new, TABLES)
    indexed = _indexed(old, new)
    for t in TABLES:
        truth = _truth(old, new, t)
        missing = truth - got[t]
        assert not missing, (t, sorted(missing)[:10])
        missing = truth - indexed[t]
        assert not missing, ("indexed", t, sorted(missing)[:10])
    return got


def _page_of(db: Path, table: str, rowid: int) -> int:
    """The leaf page holding `rowid` (dbstat's leaf pages of `table`, decoded)."""
    from bluegreen.engine.pagediff import leaf_rowids

    size = page_size(db)
    data = db.read_bytes()
    for p, (t, ptype, _path) in _roles(db, [table]).items():
        if t == table and ptype == "leaf" and rowid in leaf_rowids(data[(p - 1) * size:p * size], p):
            return p
    raise AssertionError("row not found")


def test_update_in_place_same_size_and_delete(tmp_path: Path) -> None:
    live = _live(tmp_path)
    old = _backup(live, tmp_path / "old.sqlite")
    with live:
        live.execute("UPDATE t SET a='row-00X500' WHERE rowid=1500")  # same length: the cell is rewritten in place
        live.execute("DELETE FROM t WHERE rowid=2222")
        live.execute("UPDATE u SET x='changed' WHERE rowid=7")
    new = _backup(live, tmp_path / "new.sqlite")
    got = _check(old, new)
    assert {1500, 2222} <= got["t"] and 7 in got["u"]
    assert len(got["t"]) < 300  # a few leaves, not the table (3000 rows)


def test_pages_freed_and_reused(tmp_path: Path) -> None:
    live = _live(tmp_path)
    old = _backup(live, tmp_path / "old.sqlite")
    with live:
        live.execute("DELETE FROM t WHERE rowid BETWEEN 100 AND 1400")  # frees many leaf pages
    with live:  # new rows take the freed pages (no vacuum): same page numbers, new owners
        live.executemany("INSERT INTO u VALUES (?)", ((f"reused-{i}" * 4,) for i in range(1500)))
        live.executemany("INSERT INTO t VALUES (?, ?, ?)", ((f"new-{i}", bytes(40), i) for i in range(200)))
    new = _backup(live, tmp_path / "new.sqlite")
    assert apsw.Connection(str(old)).execute("PRAGMA page_count").fetchone()[0] > 0
    got = _check(old, new)
    assert set(range(100, 1401)) <= got["t"]


def test_overflow_row_whose_tail_changed(tmp_path: Path) -> None:
    live = _live(tmp_path)
    big = bytes(range(256)) * 60  # 15 KiB: spills onto overflow pages (4 KiB pages)
    with live:
        live.execute("INSERT INTO t(rowid, a, b, n) VALUES (5000, 'big', ?, 0)", (big,))
    old = _backup(live, tmp_path / "old.sqlite")
    with live:  # same length, only the last bytes differ: the local part of the cell stays the same
        live.execute("UPDATE t SET b=? WHERE rowid=5000", (big[:-4] + b"tail",))
    new = _backup(live, tmp_path / "new.sqlite")
    got = _check(old, new)
    assert 5000 in got["t"]
    # the row's leaf page kept its bytes: only overflow pages told (the path this test is about)
    leaf = _page_of(new, "t", 5000)
    assert leaf == _page_of(old, "t", 5000)
    assert leaf not in changed_pages(old, new, page_size(new))
    # the indexed compare finds it through the old file's overflow owners alone
    index = build_page_index(old, TABLES)
    assert (("t", 5000) in index.overflow.values())
    assert 5000 in _indexed(old, new)["t"]


def test_interior_walk_finds_every_leaf_of_a_deep_tree(tmp_path: Path) -> None:
    """150k rows: a table b-tree three levels deep; the walk of its interior pages names exactly the leaves
    dbstat names; the threaded byte compare finds exactly the pages a plain compare finds."""
    live = _open(tmp_path / "deep.sqlite")
    live.execute("CREATE TABLE t (a TEXT, b BLOB, n INTEGER)")
    live.execute("CREATE TABLE u (x TEXT NOT NULL)")
    with live:
        live.executemany("INSERT INTO t VALUES (?, ?, ?)", ((f"r{i}", bytes(8), i) for i in range(150_000)))
    old = _backup(live, tmp_path / "old.sqlite")
    with live:
        live.execute("UPDATE t SET n=-1 WHERE rowid % 997 = 0")
    new = _backup(live, tmp_path / "new.sqlite")
    roles = _roles(new, ["t"])
    assert any(path.count("/") >= 3 for _t, ptype, path in roles.values() if ptype == "leaf")  # depth >= 3
    fd = os.open(new, os.O_RDONLY)
    try:
        walked = table_leaves(fd, page_size(new), _root(new, "t"))
    finally:
        os.close(fd)
    assert walked == {p for p, (_t, ptype, _path) in roles.items() if ptype == "leaf"}
    assert dirty_pages(old, new, page_size(new)) == changed_pages(old, new, page_size(new))
    assert dirty_pages(old, new, page_size(new), threads=3) == changed_pages(old, new, page_size(new))
    assert {r for r in range(1, 150_001) if r % 997 == 0} <= _indexed(old, new)["t"]


@pytest.mark.parametrize("seed", range(6))
def test_random_histories(tmp_path: Path, seed: int) -> None:
    """Rounds of mixed writes, a backup after each: every pair of consecutive backups is checked."""
    rng = random.Random(seed)
    live = _live(tmp_path)
    prev = _backup(live, tmp_path / "b0.sqlite")
    for rnd in range(1, 6):
        with live:
            for _ in range(rng.randrange(1, 60)):
                op = rng.random()
                rid = rng.randrange(1, 3500)
                if op < 0.3:
                    live.execute("UPDATE t SET n=n+1 WHERE rowid=?", (rid,))
                elif op < 0.45:
                    live.execute("DELETE FROM t WHERE rowid BETWEEN ? AND ?", (rid, rid + rng.randrange(0, 300)))
                elif op < 0.6:
                    size = rng.choice([10, 3000, 5000, 20000])
                    live.execute("INSERT OR REPLACE INTO t(rowid, a, b, n) VALUES (?, ?, ?, 0)",
                                 (rid, f"r{rid}", rng.randbytes(size)))
                elif op < 0.7:  # an overflow row's tail only
                    row = live.execute("SELECT rowid, b FROM t WHERE length(b) > 5000 LIMIT 1").fetchone()
                    if row:
                        b = bytearray(row[1])
                        b[-1] ^= 0xFF
                        live.execute("UPDATE t SET b=? WHERE rowid=?", (bytes(b), row[0]))
                elif op < 0.85:
                    live.executemany("INSERT INTO u VALUES (?)", ((f"x{rng.random()}",) for _ in range(rng.randrange(1, 200))))
                else:
                    live.execute("DELETE FROM u WHERE rowid % ? = 0", (rng.randrange(2, 50),))
        new = _backup(live, tmp_path / f"b{rnd}.sqlite")
        _check(prev, new)
        prev = new


def test_different_page_sizes_are_refused(tmp_path: Path) -> None:
    live = _live(tmp_path)
    old = _backup(live, tmp_path / "old.sqlite")
    other = apsw.Connection(str(tmp_path / "other.sqlite"))
    other.execute("PRAGMA page_size=8192")
    other.execute("CREATE TABLE t (a)")
    other.close()
    with pytest.raises(PageDiffUnavailable):
        changed_rowids(old, tmp_path / "other.sqlite", ["t"])


def test_a_path_with_uri_characters_is_opened_as_itself(tmp_path: Path) -> None:
    """'?', '#' and '%' in a data dir's path are percent-encoded in the SQLite URI, not read as its parts."""
    odd = tmp_path / "node?x=1#a%20b"
    odd.mkdir()
    live = _live(odd)
    old = _backup(live, odd / "old.sqlite")
    with live:
        live.execute("UPDATE t SET n=-5 WHERE rowid=42")
    new = _backup(live, odd / "new.sqlite")
    assert 42 in _indexed(old, new)["t"]
