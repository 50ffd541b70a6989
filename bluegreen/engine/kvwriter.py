"""Writing the KV store: RocksDB through rocksdict in raw mode, with options the node's RocksDB 6.17.3 reads.

Each chunk is one WriteBatch written with `sync=True` (the WAL is fsynced), so once `write_chunk`
returns the chunk is durable and the journal may record it."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from rocksdict import WriteBatch, WriteOptions

from bluegreen.engine.rocks_options import finish_for_node, open_node_compatible, open_read_only
from bluegreen import ocore_facts

# Keys the v31 step owns: everything under these prefixes is rebuilt from SQL.
MIGRATED_PREFIXES = ocore_facts.MIGRATED_PREFIXES


def owned_by_migration(key: bytes) -> bool:
    """True for keys the v31 step writes (`j`, `df`, `dfv`)."""
    return key.startswith(MIGRATED_PREFIXES)


class KvBuilder:
    """A RocksDB directory being built by the migration."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = open_node_compatible(path)
        self._sync = WriteOptions()
        self._sync.sync = True

    def write_chunk(self, items: Iterable[tuple[bytes, bytes]]) -> int:
        """Write one chunk as a single synced batch; returns the number of puts. Later puts win."""
        batch = WriteBatch(raw_mode=True)
        count = 0
        for key, value in items:
            batch.put(key, value)
            count += 1
        if count:
            self.db.write(batch, self._sync)
        return count

    def delete_chunk(self, keys: Iterable[bytes]) -> int:
        """Delete keys in one synced batch (catch-up); returns how many deletes were written."""
        batch = WriteBatch(raw_mode=True)
        count = 0
        for key in keys:
            batch.delete(key)
            count += 1
        if count:
            self.db.write(batch, self._sync)
        return count

    def scan(self, low: bytes, high: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) with low <= key <= high (bytes order), in key order."""
        it = self.db.iter()
        it.seek(low)
        while it.valid():
            key = it.key()
            if key > high:
                break
            yield key, it.value()
            it.next()
        del it

    def get(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def close(self) -> None:
        """Flush memtables to SST files and close; the directory is then complete on disk."""
        finish_for_node(self.db)


def iter_kv(path: Path, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of a KV dir in key order, optionally only under `prefix`.

    Opens the dir read-only, which still writes OPTIONS/config files into it: only call this on our
    own copies, never on the live node's `rocksdb/`."""
    db = open_read_only(path)
    try:
        it = db.iter()
        it.seek(prefix) if prefix else it.seek_to_first()
        while it.valid():
            key = it.key()
            if prefix and not key.startswith(prefix):
                break
            yield key, it.value()
            it.next()
        del it
    finally:
        db.close()


def remove_kv_dir(path: Path) -> None:
    """Delete a KV directory we built (never the live one)."""
    if path.exists():
        shutil.rmtree(path)


# RocksDB files that hold no data and that every open rewrites: never copied.
KV_NOT_DATA = ("LOCK", "LOG")


def is_kv_data(name: str) -> bool:
    """False for RocksDB's LOCK and info logs (LOG, LOG.old.*): no data, and rewritten by every open."""
    return name not in KV_NOT_DATA and not name.startswith("LOG.old.")


def link_copy_kv(src: Path, dst: Path) -> tuple[int, int, int]:
    """A copy of the KV dir `src` at `dst` in O(files): each `.sst` hard-linked (RocksDB never modifies an
    `.sst`, it only writes new ones and deletes old ones, so the two dirs can never change each other's
    data), every other data file copied (mode and times kept); LOCK and info logs left out; a file system
    that cannot link (another device, no links) gets a copy. Nothing is fsynced here: the caller syncs what
    it must. Returns (sst linked, files copied, bytes copied)."""
    linked = copied = bcopied = 0
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copystat(src, dst)
    with os.scandir(src) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        s, d = Path(e.path), dst / e.name
        if e.is_dir(follow_symlinks=False):
            sub = link_copy_kv(s, d)
            linked, copied, bcopied = linked + sub[0], copied + sub[1], bcopied + sub[2]
            continue
        if not e.is_file(follow_symlinks=False) or not is_kv_data(e.name):
            continue
        if e.name.endswith(".sst"):
            try:
                os.link(s, d)
                linked += 1
                continue
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
        shutil.copyfile(s, d, follow_symlinks=False)
        shutil.copystat(s, d, follow_symlinks=False)
        copied += 1
        bcopied += d.stat().st_size
    return linked, copied, bcopied
