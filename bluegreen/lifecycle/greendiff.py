"""What the node wrote to green after promote: rows added per table, KV keys added, removed or changed.

Rollback swaps the old blue back; anything the node wrote to green since promote would be lost, so promote
keeps a baseline and rollback compares against it. The baseline costs promote O(files), never O(rows/keys):
- row counts: taken by verify (`row_counts`; green is final once verified, and promote refuses when green
  changed since) or by the last catch-up, and copied into the state by promote;
- KV: a frozen copy of green's RocksDB as it goes live (`freeze_kv`, `<staging>/work/kv-at-promote/`). RocksDB
  never modifies an `.sst` file, so its `.sst` files are hard links and only the few small files (CURRENT,
  MANIFEST-*, OPTIONS-*, *.log, rocksdict-config.json) are copied. Rollback merge-compares that copy with the
  KV now, keys and values, only when the KV's files changed since promote.
No RocksDB dir of ours or the node's is ever opened in place: rocksdict writes into any dir it opens, so keys
are read from a scratch copy made the same way (`link_copy_kv`)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

from pydantic import BaseModel, Field

from bluegreen.durable import fsync_dir, fsync_file
from bluegreen.engine.kvwriter import KV_NOT_DATA, is_kv_data  # noqa: F401 - re-exported
from bluegreen.engine.kvwriter import link_copy_kv as kv_link_copy
from bluegreen.engine.rocks_options import open_read_only
from bluegreen.lifecycle import fingerprint as fpmod
from bluegreen.lifecycle.killpoints import killpoint
from bluegreen.ocore_facts import KV_DIR_NAME

FIRST_ITEMS = 20
Progress = Callable[[str, int, int], None]
KV_PROGRESS_EVERY = 10_000  # keys between two progress calls
STEP_ROW_COUNTS = "row counts"
STEP_KV_KEYS = "kv keys"
STEP_KV_FREEZE = "kv copy at promote"
KV_AT_PROMOTE = "kv-at-promote"  # in work/: green's KV as it went live (hard-linked .sst), rollback's baseline
KV_AT_PROMOTE_PARTIAL = KV_AT_PROMOTE + ".partial"  # being built; renamed to KV_AT_PROMOTE once complete
LEGACY_KV_KEYS_FILE = "green-kv-keys-at-promote.txt"  # the baseline of older bluegreens: every key, hex
# Files RocksDB itself rewrites or that carry no data: never part of a copy or of the "KV changed?" question.


class GreenChanges(BaseModel):
    """Differences between green now and green at promote."""

    changed: bool
    file_changes: list[str] = Field(default_factory=list)
    rows_added: dict[str, int] = Field(default_factory=dict)
    rows_removed: dict[str, int] = Field(default_factory=dict)
    kv_keys_added: int = 0
    kv_keys_removed: int = 0
    kv_first_added: list[str] = Field(default_factory=list)
    kv_values_changed: int = 0  # keys present at promote and now, with another value
    kv_first_changed: list[str] = Field(default_factory=list)
    # Why the KV keys could not be compared although its files changed (the baseline is missing); "" = compared
    kv_not_compared: str = ""

    def describe(self) -> str:
        """Operator text: what a rollback would lose."""
        lines = []
        for table, n in sorted(self.rows_added.items()):
            lines.append(f"    {table}: {n} rows added")
        for table, n in sorted(self.rows_removed.items()):
            lines.append(f"    {table}: {n} rows removed")
        if self.kv_keys_added or self.kv_keys_removed or self.kv_values_changed:
            lines.append(f"    KV: {self.kv_keys_added} keys added, {self.kv_keys_removed} removed"
                         + (f", {self.kv_values_changed} values changed" if self.kv_values_changed else ""))
            lines += [f"      + {k}" for k in self.kv_first_added]
            lines += [f"      ~ {k}" for k in self.kv_first_changed]
        if self.kv_not_compared:
            lines.append(f"    KV: files changed; keys not compared ({self.kv_not_compared})")
        if not lines:
            lines += [f"    {c}" for c in self.file_changes[:FIRST_ITEMS]]
        return "\n".join(lines)


def row_counts(db_path: Path, progress: Progress | None = None) -> dict[str, int]:
    """COUNT(*) of every table (read-only, no side files); progress("row counts", tables done, tables)."""
    from bluegreen.lifecycle.snapshot import open_readonly_quiet  # lazy: snapshot imports state, state this

    conn = open_readonly_quiet(db_path)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        out: dict[str, int] = {}
        for i, t in enumerate(tables):
            if progress:
                progress(STEP_ROW_COUNTS, i, len(tables))
            out[t] = int(conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0])
        if progress:
            progress(STEP_ROW_COUNTS, len(tables), len(tables))
        return out
    finally:
        conn.close()


def show_key(key: bytes) -> str:
    """A KV key as text (ocore keys are UTF-8 with newline separators)."""
    return key.decode("utf-8", "backslashreplace").replace("\n", "\\n")


def _estimate_keys(db: object) -> int:
    """RocksDB's own estimate of the key count (the total for progress; 0 when it has none)."""
    try:
        return int(db.property_int_value("rocksdb.estimate-num-keys") or 0)  # type: ignore[attr-defined]
    except Exception:  # an estimate only: progress without a total is still progress
        return 0


class FrozenKv(BaseModel):
    """Green's KV as promote froze it (`<staging>/work/kv-at-promote/rocksdb/`): rollback's KV baseline."""

    path: Path
    sst_linked: int  # .sst files hard-linked (the bulk of the data; no byte copied)
    files_copied: int  # CURRENT, MANIFEST-*, OPTIONS-*, *.log, rocksdict-config.json (each fsynced)
    bytes_copied: int


def link_copy_kv(kv_dir: Path, dst_root: Path) -> tuple[int, int, int]:
    """Copy the RocksDB dir `kv_dir` to `dst_root/rocksdb/` in O(files) (`kvwriter.link_copy_kv`: `.sst`
    hard-linked, other data files copied; LOCK and info logs left out), then fsync every copied file.
    Returns (sst linked, files copied, bytes copied). The copy's dirs are not fsynced (`freeze_kv` does)."""
    dst = dst_root / KV_DIR_NAME
    linked, copied, bcopied = kv_link_copy(kv_dir, dst)
    for rel in fpmod.walk_files(dst):
        if not rel.endswith(".sst"):
            fsync_file(dst / rel)
    return linked, copied, bcopied


def freeze_kv(kv_dir: Path, work_dir: Path, progress: Progress | None = None) -> FrozenKv:
    """Keep green's KV as it goes live: `work_dir/kv-at-promote/` (see `link_copy_kv`), complete and durable
    before it gets its name, so a kill leaves only `kv-at-promote.partial/` (discarded by the next command)."""
    final, partial = work_dir / KV_AT_PROMOTE, work_dir / KV_AT_PROMOTE_PARTIAL
    for d in (partial, final):  # an earlier promote's (rolled back) or an interrupted build
        if d.exists():
            shutil.rmtree(d)
    work_dir.mkdir(parents=True, exist_ok=True)
    if progress:
        progress(STEP_KV_FREEZE, 0, 1)
    linked, copied, bcopied = link_copy_kv(kv_dir, partial)
    killpoint("promote.mid_kv_copy")
    # Copied files are fsynced one by one; the links and names become durable with their directories.
    fsync_dir(partial / KV_DIR_NAME)
    fsync_dir(partial)
    os.rename(partial, final)
    fsync_dir(work_dir)
    if progress:
        progress(STEP_KV_FREEZE, 1, 1)
    return FrozenKv(path=final / KV_DIR_NAME, sst_linked=linked, files_copied=copied, bytes_copied=bcopied)


def discard_frozen_kv(work_dir: Path) -> list[str]:
    """Remove the frozen KV copy and any unfinished one (no longer needed once green is not live); what went."""
    gone = []
    for d in (work_dir / KV_AT_PROMOTE_PARTIAL, work_dir / KV_AT_PROMOTE):
        if d.exists():
            shutil.rmtree(d)
            gone.append(d.name)
    if gone:
        fsync_dir(work_dir)
    return gone


KvItem = tuple[bytes, bytes | None]  # (key, value); value None: only the key is known (older baselines)


def iter_kv_items(kv_dir: Path, scratch: Path, progress: Progress | None = None) -> Iterator[KvItem]:
    """Every (key, value) of the RocksDB at `kv_dir`, sorted by key, read from a scratch copy (removed
    afterwards; `kv_dir` itself is never opened).

    progress("kv keys", keys read, RocksDB's estimate of the count): `done` stays below the estimate until
    the last key, then both are the real count."""
    if not (kv_dir / "CURRENT").exists():
        return
    if scratch.exists():
        shutil.rmtree(scratch)
    link_copy_kv(kv_dir, scratch)
    db = open_read_only(scratch / KV_DIR_NAME)
    try:
        est = _estimate_keys(db) if progress else 0
        n = 0
        if progress:
            progress(STEP_KV_KEYS, 0, max(est, 1))
        for key, value in db.items():
            yield bytes(key), bytes(value)
            n += 1
            if progress and n % KV_PROGRESS_EVERY == 0:
                est = max(est, n + 1)
                progress(STEP_KV_KEYS, n, est)
        if progress:
            progress(STEP_KV_KEYS, max(n, 1), max(n, 1))
    finally:
        db.close()
        shutil.rmtree(scratch, ignore_errors=True)


def _legacy_keys(path: Path) -> Iterator[KvItem]:
    """The key file an older bluegreen wrote at promote (hex, one a line, sorted): keys without values."""
    with open(path) as f:
        for line in f:
            yield bytes.fromhex(line.strip()), None


class KvDiff(BaseModel):
    """A merge-compare of two sorted (key, value) streams."""

    added: int = 0
    removed: int = 0
    changed: int = 0
    first_added: list[str] = Field(default_factory=list)
    first_changed: list[str] = Field(default_factory=list)


def diff_kv(old: Iterator[KvItem], new: Iterator[KvItem]) -> KvDiff:
    """Keys added and removed, and values changed (when `old` knows them), between two key-sorted streams."""
    out = KvDiff()
    a, b = next(old, None), next(new, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            out.removed += 1
            a = next(old, None)
        elif a is None or b[0] < a[0]:
            out.added += 1
            if len(out.first_added) < FIRST_ITEMS:
                out.first_added.append(show_key(b[0]))
            b = next(new, None)
        else:
            if a[1] is not None and a[1] != b[1]:
                out.changed += 1
                if len(out.first_changed) < FIRST_ITEMS:
                    out.first_changed.append(show_key(b[0]))
            a, b = next(old, None), next(new, None)
    return out


_FileKey = tuple[int, int, int]


def _kv_part(fp: fpmod.Fingerprint) -> dict[str, _FileKey]:
    """The KV's data files (size, mtime, inode): equal at promote and now = the KV holds the same keys."""
    return {rel: (st.size, st.mtime_ns, st.inode) for rel, st in fp.db_files.items()
            if rel.startswith(KV_DIR_NAME + "/") and is_kv_data(rel.rsplit("/", 1)[-1])}


def _sqlite_part(fp: fpmod.Fingerprint) -> tuple[dict[str, _FileKey], object, object]:
    """The SQLite files (size, mtime, inode) and headers: equal at promote and now = the same rows."""
    files = {rel: (st.size, st.mtime_ns, st.inode) for rel, st in fp.db_files.items()
             if not rel.startswith(KV_DIR_NAME + "/")}
    return files, fp.sqlite, fp.wal


def compare(baseline_fp: fpmod.Fingerprint, baseline_rows: dict[str, int], kv_baseline: Path | None,
            data_dir: Path, db_name: str, scratch: Path, progress: Progress | None = None,
            legacy_keys: Path | None = None) -> GreenChanges:
    """Compare green (now at `data_dir`) with its promote-time baseline: the fingerprint taken at promote,
    the row counts, and the frozen KV copy `kv_baseline` (its rocksdb/ dir; None: promoted by an older
    bluegreen, whose key file `legacy_keys` is the baseline).

    Whether green changed is the fingerprint's answer, as before; the counts and the KV merge only say what
    changed, and each is skipped when its files are exactly as at promote (no row counted, no key read)."""
    now = fpmod.take(data_dir)
    file_changes = fpmod.diff_db(baseline_fp, now)
    if not file_changes:
        return GreenChanges(changed=False)
    out = GreenChanges(changed=True, file_changes=file_changes)
    if _sqlite_part(baseline_fp) != _sqlite_part(now):
        rows = row_counts(data_dir / db_name, progress)
        tables = set(rows) | set(baseline_rows)
        out.rows_added = {t: rows.get(t, 0) - baseline_rows.get(t, 0) for t in tables
                          if rows.get(t, 0) > baseline_rows.get(t, 0)}
        out.rows_removed = {t: baseline_rows.get(t, 0) - rows.get(t, 0) for t in tables
                            if rows.get(t, 0) < baseline_rows.get(t, 0)}
    if _kv_part(baseline_fp) == _kv_part(now):
        return out
    old: Iterator[KvItem]
    if kv_baseline is not None and (kv_baseline / "CURRENT").exists():
        old = iter_kv_items(kv_baseline, scratch / "at-promote")
    elif kv_baseline is None and legacy_keys is not None and legacy_keys.exists():
        old = _legacy_keys(legacy_keys)
    else:
        out.kv_not_compared = (f"the copy of the KV made at promote, {kv_baseline or legacy_keys}, is missing")
        return out
    try:
        with closing(old), closing(iter_kv_items(data_dir / KV_DIR_NAME, scratch / "now", progress)) as new:
            d = diff_kv(old, new)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    out.kv_keys_added, out.kv_keys_removed, out.kv_first_added = d.added, d.removed, d.first_added
    out.kv_values_changed, out.kv_first_changed = d.changed, d.first_changed
    return out
