"""What the node wrote to green after promote: rows added per table and KV keys added.

Rollback swaps the old blue back; anything the node wrote to green since promote would be lost,
so promote records a baseline (row counts, every KV key) and rollback compares against it.
The live RocksDB is never opened in place: rocksdict writes into any dir it opens, so we list keys
from a scratch copy (immutable .sst hard-linked, everything else copied)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import BaseModel, Field

from bluegreen.durable import fsync_dir, fsync_file
from bluegreen.engine.rocks_options import open_read_only
from bluegreen.lifecycle import fingerprint as fpmod
from bluegreen.ocore_facts import KV_DIR_NAME

FIRST_ITEMS = 20
Progress = Callable[[str, int, int], None]
KV_PROGRESS_EVERY = 10_000  # keys between two progress calls
STEP_ROW_COUNTS = "row counts"
STEP_KV_KEYS = "kv keys"


class GreenChanges(BaseModel):
    """Differences between green now and green at promote."""

    changed: bool
    file_changes: list[str] = Field(default_factory=list)
    rows_added: dict[str, int] = Field(default_factory=dict)
    rows_removed: dict[str, int] = Field(default_factory=dict)
    kv_keys_added: int = 0
    kv_keys_removed: int = 0
    kv_first_added: list[str] = Field(default_factory=list)

    def describe(self) -> str:
        """Operator text: what a rollback would lose."""
        lines = []
        for table, n in sorted(self.rows_added.items()):
            lines.append(f"    {table}: {n} rows added")
        for table, n in sorted(self.rows_removed.items()):
            lines.append(f"    {table}: {n} rows removed")
        if self.kv_keys_added or self.kv_keys_removed:
            lines.append(f"    KV: {self.kv_keys_added} keys added, {self.kv_keys_removed} removed")
            lines += [f"      + {k}" for k in self.kv_first_added]
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


def iter_kv_keys(kv_dir: Path, scratch: Path, progress: Progress | None = None) -> Iterator[bytes]:
    """Every key of the RocksDB at `kv_dir`, sorted, read from a scratch copy (removed afterwards).

    progress("kv keys", keys read, RocksDB's estimate of the count): `done` stays below the estimate until
    the last key, then both are the real count."""
    from bluegreen.lifecycle.snapshot import copy_tree_files  # lazy: snapshot imports state, state this

    if not (kv_dir / "CURRENT").exists():
        return
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    rels = ["rocksdb/" + r for r in fpmod.walk_files(kv_dir) if r != "LOCK"]
    copy_tree_files(kv_dir.parent, scratch, rels, link_sst=True)
    db = open_read_only(scratch / KV_DIR_NAME)
    try:
        est = _estimate_keys(db) if progress else 0
        n = 0
        if progress:
            progress(STEP_KV_KEYS, 0, max(est, 1))
        for key in db.keys():
            yield bytes(key)
            n += 1
            if progress and n % KV_PROGRESS_EVERY == 0:
                est = max(est, n + 1)
                progress(STEP_KV_KEYS, n, est)
        if progress:
            progress(STEP_KV_KEYS, max(n, 1), max(n, 1))
    finally:
        db.close()
        shutil.rmtree(scratch, ignore_errors=True)


def save_kv_keys(kv_dir: Path, scratch: Path, out: Path, progress: Progress | None = None) -> int:
    """Write every key (hex, one a line, sorted) to `out`; returns the count."""
    n = 0
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w") as f:
        for key in iter_kv_keys(kv_dir, scratch, progress):
            f.write(key.hex() + "\n")
            n += 1
    fsync_file(tmp)
    tmp.replace(out)
    fsync_dir(out.parent)
    return n


def _read_keys(path: Path) -> Iterator[bytes]:
    if not path.exists():
        return
    with open(path) as f:
        for line in f:
            yield bytes.fromhex(line.strip())


def diff_kv(baseline: Path, kv_dir: Path, scratch: Path,
            progress: Progress | None = None) -> tuple[int, int, list[str]]:
    """(added, removed, first added keys) between the baseline key file and the KV now (sorted merge)."""
    added = removed = 0
    first: list[str] = []
    old = _read_keys(baseline)
    new = iter_kv_keys(kv_dir, scratch, progress)
    a, b = next(old, None), next(new, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a < b):
            removed += 1
            a = next(old, None)
        elif a is None or b < a:
            added += 1
            if len(first) < FIRST_ITEMS:
                first.append(show_key(b))
            b = next(new, None)
        else:
            a, b = next(old, None), next(new, None)
    return added, removed, first


def compare(baseline_fp: fpmod.Fingerprint, baseline_rows: dict[str, int], baseline_keys: Path,
            data_dir: Path, db_name: str, scratch: Path, progress: Progress | None = None) -> GreenChanges:
    """Compare green (now at `data_dir`) with its promote-time baseline; cheap when nothing changed."""
    now = fpmod.take(data_dir)
    file_changes = fpmod.diff_db(baseline_fp, now)
    if not file_changes:
        return GreenChanges(changed=False)
    rows = row_counts(data_dir / db_name, progress)
    added = {t: rows.get(t, 0) - baseline_rows.get(t, 0) for t in set(rows) | set(baseline_rows)
             if rows.get(t, 0) > baseline_rows.get(t, 0)}
    removed = {t: baseline_rows.get(t, 0) - rows.get(t, 0) for t in set(rows) | set(baseline_rows)
               if rows.get(t, 0) < baseline_rows.get(t, 0)}
    kv_added, kv_removed, first = diff_kv(baseline_keys, data_dir / KV_DIR_NAME, scratch, progress)
    return GreenChanges(changed=True, file_changes=file_changes, rows_added=added, rows_removed=removed,
                        kv_keys_added=kv_added, kv_keys_removed=kv_removed, kv_first_added=first)
