"""Writing the KV store: RocksDB through rocksdict in raw mode, with options the node's RocksDB 6.17.3 reads.

Each chunk is one WriteBatch written with `sync=True` (the WAL is fsynced), so once `write_chunk`
returns the chunk is durable and the journal may record it."""

from __future__ import annotations

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
