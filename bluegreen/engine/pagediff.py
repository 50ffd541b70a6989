"""Which rows of which tables may differ between two backups of the same SQLite database, from their pages.

The backup API copies pages verbatim (page N of the copy is page N of the source), so two backups of one
database taken at different times differ exactly in the pages the database changed meanwhile. Comparing the
two files page by page is a sequential read; the rows to compare are then only those with a cell on a
"dirty" leaf page. docs/catch-up.md "Why nothing is missed" has the argument; in short:

- a page is dirty when its bytes differ, or when its role (which b-tree, leaf/interior/overflow, from the
  `dbstat` virtual table of each file) differs: a page freed and reused may keep identical bytes while its
  liveness changed;
- a row that differs has its cell on a live leaf of its table. If that leaf is not dirty, it is a live leaf
  of the same table in the other file with the same bytes: the same local payload and the same first
  overflow page. Overflow pages chain through their own first 4 bytes, so an unchanged chain of non-dirty
  pages is the same payload. So a differing row has a dirty leaf or a dirty overflow page, in one of the
  two files; a dirty overflow page is traced to its leaf through dbstat's path.

`changed_rowids` returns, per table, every rowid with a cell on a dirty leaf (or a leaf owning a dirty
overflow page) in either file: a superset of the rows that differ, for an exact compare by rowid."""

from __future__ import annotations

import os
import re
from pathlib import Path

import apsw

BLOCK_PAGES = 256  # pages compared per read (1 MiB at 4 KiB pages): equal blocks cost one memcmp
_OVERFLOW_PATH = re.compile(r"^(.*/)([0-9a-f]+)\+[0-9a-f]+$")  # dbstat: <leaf path><cell hex>+<index hex>


class PageDiffUnavailable(Exception):
    """The two files are not page-comparable (different page size, not a rowid table, ...): diff rows fully."""


def page_size(db: Path) -> int:
    """The page size from the SQLite header (bytes 16-17, big-endian; 1 means 65536)."""
    with open(db, "rb") as f:
        raw = f.read(18)[16:18]
    v = int.from_bytes(raw, "big") if len(raw) == 2 else 0
    return 65536 if v == 1 else v


def changed_pages(a: Path, b: Path, size: int) -> set[int]:
    """Page numbers (1-based) whose bytes differ between files a and b; pages past the end of one file count."""
    out: set[int] = set()
    block = size * BLOCK_PAGES
    with open(a, "rb", buffering=0) as fa, open(b, "rb", buffering=0) as fb:
        first = 0  # 0-based page number of the block
        while True:
            x, y = fa.read(block), fb.read(block)
            if not x and not y:
                break
            if x != y:
                for i in range(0, max(len(x), len(y)), size):
                    if x[i:i + size] != y[i:i + size]:
                        out.add(first + i // size + 1)
            first += BLOCK_PAGES
    return out


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    """SQLite varint at buf[i]: (value, next offset)."""
    v = 0
    for k in range(8):
        c = buf[i + k]
        v = (v << 7) | (c & 0x7F)
        if c < 0x80:
            return v, i + k + 1
    return (v << 8) | buf[i + 8], i + 9


def leaf_rowids(page: bytes, pageno: int) -> list[int]:
    """Rowids of the cells of a table b-tree leaf page (type 13); page 1 has the 100-byte file header first."""
    h = 100 if pageno == 1 else 0
    if page[h] != 0x0D:
        raise PageDiffUnavailable(f"page {pageno} is not a table leaf (type {page[h]})")
    n = int.from_bytes(page[h + 3:h + 5], "big")
    out = []
    for c in range(n):
        off = int.from_bytes(page[h + 8 + 2 * c:h + 10 + 2 * c], "big")
        _payload, off = _varint(page, off)
        rowid, _ = _varint(page, off)
        out.append(rowid - (1 << 64) if rowid >= 1 << 63 else rowid)  # rowids are signed 64-bit
    return out


def _roles(db: Path, tables: list[str]) -> dict[int, tuple[str, str, str]]:
    """pageno -> (table, pagetype, path) for every page of the given tables' b-trees (dbstat walks them)."""
    conn = apsw.Connection(f"file:{db}?mode=ro", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:
        out: dict[int, tuple[str, str, str]] = {}
        for t in tables:  # one name at a time: dbstat walks only that b-tree for `name=`
            for pageno, ptype, path in conn.execute("SELECT pageno, pagetype, path FROM dbstat WHERE name=?", (t,)):
                out[int(pageno)] = (t, str(ptype), str(path))
        return out
    finally:
        conn.close()


def changed_rowids(old: Path, new: Path, tables: list[str]) -> tuple[dict[str, set[int]], int]:
    """(per table: rowids that may differ between the two backups, number of dirty pages). See the module doc.

    Raises PageDiffUnavailable when the files cannot be compared page by page."""
    size = page_size(old)
    if size != page_size(new) or size < 512:
        raise PageDiffUnavailable("the two files have different page sizes")
    bytes_dirty = changed_pages(old, new, size)
    ro, rn = _roles(old, tables), _roles(new, tables)
    dirty = set(bytes_dirty)
    dirty.update(p for p in ro.keys() | rn.keys() if (ro.get(p) or ())[:2] != (rn.get(p) or ())[:2])
    out: dict[str, set[int]] = {t: set() for t in tables}
    for path, roles in ((old, ro), (new, rn)):
        leaves: dict[tuple[str, str], int] = {}  # (table, path) -> pageno of the leaves (overflow owners)
        wanted: set[int] = set()
        for p in dirty:
            role = roles.get(p)
            if role is None:
                continue
            table, ptype, ppath = role
            if ptype == "leaf":
                wanted.add(p)
            elif ptype == "overflow":
                m = _OVERFLOW_PATH.match(ppath)
                if m is None:
                    raise PageDiffUnavailable(f"unexpected dbstat path {ppath!r} of overflow page {p}")
                if not leaves:
                    leaves = {(t, pp): q for q, (t, pt, pp) in roles.items() if pt == "leaf"}
                owner = leaves.get((table, m.group(1)))
                if owner is None:
                    raise PageDiffUnavailable(f"no leaf page at {m.group(1)!r} owns overflow page {p}")
                wanted.add(owner)
            # interior pages hold only child pointers and rowid keys (no row data): nothing to compare
        fd = os.open(path, os.O_RDONLY)
        try:
            for p in wanted:
                page = os.pread(fd, size, (p - 1) * size)
                out[roles[p][0]].update(leaf_rowids(page, p))
        finally:
            os.close(fd)
    return out, len(dirty)
