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
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import apsw
from pydantic import BaseModel, Field

from bluegreen.engine.sqlsource import open_frozen

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
    conn = open_frozen(db)
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


# ---------------------------------------------------------------- indexed page compare (row patch catch-up)
#
# The same argument as above, with two changes that keep the work with the node stopped O(what changed):
# - leaf roles come from walking each table b-tree's interior pages (a few thousand pages at 1M units), not
#   from dbstat over every page; a leaf is dirty when its bytes differ or it is a live leaf of the table in
#   one file only;
# - overflow pages: a changed row whose leaf is clean in both files starts its overflow chain at the same
#   page in both; the first page of the chain whose bytes differ was, in the old file, a page of that row's
#   chain (its predecessor is byte-identical, so it points to it in both). The old file's overflow owners
#   (`PageIndex`, built once with dbstat when that file was made, while the node still ran) name the row.

_U32 = struct.Struct(">I")
COMPARE_THREADS = 2  # preadv releases the GIL: two readers reach the page cache's copy rate on two cores
COMPARE_BLOCK = 1 << 20


class PageIndex(BaseModel):
    """What the indexed compare needs of the old snapshot and cannot afford to walk with the node stopped:
    the owner (table, rowid) of every overflow page of a rowid table. Tied to the file by size and mtime."""

    file_size: int
    mtime_ns: int
    page_size: int
    overflow: dict[int, tuple[str, int]] = Field(default_factory=dict)
    row_counts: dict[str, int] | None = None  # every table's COUNT(*) (None: not known)

    def matches(self, db: Path) -> bool:
        """Whether this index was built for `db` as it is now."""
        st = db.stat()
        return st.st_size == self.file_size and st.st_mtime_ns == self.mtime_ns


def build_page_index(db: Path, tables: list[str]) -> PageIndex:
    """Walk `db` with dbstat once and record the owner of every overflow page of `tables` (read only)."""
    st = db.stat()
    size = page_size(db)
    conn = open_frozen(db)
    overflow: dict[int, tuple[str, int]] = {}
    try:
        fd = os.open(db, os.O_RDONLY)
        try:
            for t in tables:
                pages = list(conn.execute("SELECT pageno, path FROM dbstat WHERE name=? AND pagetype='overflow'", (t,)))
                if not pages:
                    continue
                leaf_of = {str(path): int(p) for p, path in
                           conn.execute("SELECT pageno, path FROM dbstat WHERE name=? AND pagetype='leaf'", (t,))}
                for pageno, path in pages:
                    m = _OVERFLOW_PATH.match(str(path))
                    owner = leaf_of.get(m.group(1)) if m else None
                    if m is None or owner is None:
                        raise PageDiffUnavailable(f"overflow page {pageno} of {t}: no owner leaf for {path!r}")
                    rowids = leaf_rowids(os.pread(fd, size, (owner - 1) * size), owner)
                    overflow[int(pageno)] = (t, rowids[int(m.group(2), 16)])
        finally:
            os.close(fd)
        counts = {str(n): int(conn.execute(f"SELECT COUNT(*) FROM `{n}`").fetchone()[0])
                  for (n,) in list(conn.execute("SELECT name FROM sqlite_master WHERE type='table'"))}
    finally:
        conn.close()
    return PageIndex(file_size=st.st_size, mtime_ns=st.st_mtime_ns, page_size=size, overflow=overflow,
                     row_counts=counts)


def _compare_range(a: Path, b: Path, size: int, lo: int, hi: int) -> list[int]:
    out: list[int] = []
    fa, fb = os.open(a, os.O_RDONLY), os.open(b, os.O_RDONLY)
    x, y = bytearray(COMPARE_BLOCK), bytearray(COMPARE_BLOCK)
    try:
        off = lo
        while off < hi:
            n = min(COMPARE_BLOCK, hi - off)
            ra, rb = os.preadv(fa, [x], off), os.preadv(fb, [y], off)
            if ra != rb or x[:ra] != y[:rb]:
                for i in range(0, max(ra, rb), size):
                    if x[i:min(i + size, ra)] != y[i:min(i + size, rb)]:
                        out.append((off + i) // size + 1)
            if max(ra, rb) < n:
                break
            off += n
    finally:
        os.close(fa)
        os.close(fb)
    return out


def dirty_pages(a: Path, b: Path, size: int, threads: int = COMPARE_THREADS) -> set[int]:
    """Page numbers whose bytes differ between a and b (pages past the end of one file count), read by
    `threads` readers in parallel, each over one part of the files."""
    total = max(a.stat().st_size, b.stat().st_size)
    block = max(COMPARE_BLOCK, size)
    step = ((total // max(threads, 1)) // block + 1) * block
    ranges = [(lo, min(total, lo + step)) for lo in range(0, total, step)] or [(0, 0)]
    with ThreadPoolExecutor(max(1, len(ranges))) as ex:
        parts = list(ex.map(lambda r: _compare_range(a, b, size, r[0], r[1]), ranges))
    return {p for part in parts for p in part}


def table_leaves(fd: int, size: int, root: int) -> set[int]:
    """The leaf pages of the table b-tree rooted at `root`, from its interior pages only (all leaves of a
    SQLite b-tree are at one depth; the first child of each interior page of the last level is checked)."""
    level = [root]
    while True:
        first = os.pread(fd, size, (level[0] - 1) * size)
        kind = first[100 if level[0] == 1 else 0]
        if kind == 0x0D:
            return set(level)
        if kind != 0x05:
            raise PageDiffUnavailable(f"page {level[0]} is not a table b-tree page (type {kind})")
        nxt: list[int] = []
        child = _U32.unpack_from
        for p in level:
            page = first if p == level[0] else os.pread(fd, size, (p - 1) * size)
            h = 100 if p == 1 else 0
            if page[h] != 0x05:
                raise PageDiffUnavailable(f"page {p} should be a table interior page (type {page[h]})")
            n = int.from_bytes(page[h + 3:h + 5], "big")
            # every cell starts with its left child's page number; the right-most child is in the header
            nxt.extend(child(page, off)[0] for off in struct.unpack_from(f">{n}H", page, h + 12))
            nxt.append(child(page, h + 8)[0])
        level = nxt


def changed_rowids_indexed(old: Path, new: Path, roots: dict[str, tuple[int, int]],
                           index: PageIndex) -> tuple[dict[str, set[int]], set[int]]:
    """Per table: the rowids that may differ between `old` and `new` (two page-verbatim copies of one
    database), and the pages whose bytes differ. `roots`: table -> (root page in old, root page in new);
    `index`: the old file's PageIndex. Raises PageDiffUnavailable when the files cannot be compared."""
    size = page_size(old)
    if size != page_size(new) or size < 512 or size != index.page_size:
        raise PageDiffUnavailable("the two files have different page sizes")
    if not index.matches(old):
        raise PageDiffUnavailable("the old snapshot's page index is not of this file")
    dirty = dirty_pages(old, new, size)
    out: dict[str, set[int]] = {t: set() for t in roots}
    fo, fn = os.open(old, os.O_RDONLY), os.open(new, os.O_RDONLY)
    try:
        for table, (ro, rn) in roots.items():
            lo, ln = table_leaves(fo, size, ro), table_leaves(fn, size, rn)
            for fd, mine, other in ((fo, lo, ln), (fn, ln, lo)):
                for p in (mine & dirty) | (mine - other):  # bytes differ, or a live leaf here only
                    out[table].update(leaf_rowids(os.pread(fd, size, (p - 1) * size), p))
        for p in dirty:
            owner = index.overflow.get(p)
            if owner is not None and owner[0] in out:
                out[owner[0]].add(owner[1])
    finally:
        os.close(fo)
        os.close(fn)
    return out, dirty


def prefetch(db: Path, pages: set[int], size: int) -> None:
    """Ask the kernel to read these pages of `db` ahead (POSIX_FADV_WILLNEED, asynchronous, many in flight):
    a later SQLite transaction that reads them one at a time then finds them in the page cache. A hint only."""
    if not hasattr(os, "posix_fadvise") or not pages:
        return
    fd = os.open(db, os.O_RDONLY)
    try:
        run_start = prev = -2
        for p in sorted(pages) + [-1]:
            if p != prev + 1:
                if run_start > 0:
                    os.posix_fadvise(fd, (run_start - 1) * size, (prev - run_start + 1) * size, os.POSIX_FADV_WILLNEED)
                run_start = p
            prev = p
    finally:
        os.close(fd)


def rowid_tables(db: Path) -> list[str]:
    """Every table of `db` stored in a rowid b-tree (read only)."""
    conn = open_frozen(db)
    try:
        out = []
        for (name,) in list(conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND rootpage>0")):
            try:
                conn.execute(f"SELECT rowid FROM `{name}` LIMIT 0").fetchall()
                out.append(str(name))
            except apsw.SQLError:
                continue  # WITHOUT ROWID
        return out
    finally:
        conn.close()
