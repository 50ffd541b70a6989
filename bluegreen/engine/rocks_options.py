"""RocksDB options for every KV dir we write, so that the node's own RocksDB can read it.

The node reads its `rocksdb/` with npm `level-rocksdb` 5 -> `rocksdb` 5.2.1, which bundles RocksDB 6.17.3;
we write with rocksdict 0.3.29, which bundles RocksDB 9.8.4. Each choice below avoids an error measured
with the node's library (docs/compatibility.md has the matrix and the exact messages)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from rocksdict import AccessType, BlockBasedOptions, ChecksumType, DBCompressionType, Options, Rdict

# RocksDB 9.8.4 writes table format_version 6 by default; 6.17.3 knows up to 5
# ("Corruption: Unknown Footer version"). 2..5 all read back (measured); 4 is what the node's own
# RocksDB 6.17.3 writes itself, so its readers see exactly the format they produce.
TABLE_FORMAT_VERSION = 4

# The node's binding builds a 10 bits/key full bloom filter; ours lets its point lookups
# (`j\n<unit>` for units it does not have yet) skip our files the same way.
BLOOM_BITS_PER_KEY = 10

# rocksdict files that are ours, not RocksDB's; the node ignores them (RocksDB skips unknown names).
ROCKSDICT_CONFIG_FILE = "rocksdict-config.json"


def node_compatible_table_options() -> BlockBasedOptions:
    """Block-based table options the node's RocksDB 6.17.3 reads back."""
    table = BlockBasedOptions()
    table.set_format_version(TABLE_FORMAT_VERSION)
    # 9.x defaults to xxh3 checksums, which 6.17.3 rejects ("unknown checksum type 4"); crc32c is the
    # checksum every RocksDB version reads, and the one level-rocksdb itself writes.
    table.set_checksum_type(ChecksumType.crc32c())
    table.set_bloom_filter(BLOOM_BITS_PER_KEY, False)
    return table


def node_compatible_options(*, create_if_missing: bool = True) -> Options:
    """rocksdict Options for writing a KV dir the node (level-rocksdb 5 / RocksDB 6.17.3) can read and write.

    raw_mode: keys and values are plain bytes (the node stores UTF-8 strings, no pickling).
    Compression: snappy, the only codec the node's RocksDB build carries (level-rocksdb's default
    `compression: true` means snappy), set explicitly so no other codec is ever chosen."""
    opts = Options(raw_mode=True)
    opts.create_if_missing(create_if_missing)
    opts.set_block_based_table_factory(node_compatible_table_options())
    opts.set_compression_type(DBCompressionType.snappy())
    opts.set_bottommost_compression_type(DBCompressionType.snappy())
    return opts


def open_node_compatible(path: Path) -> Rdict:
    """Open (or create) a KV dir for writing with `node_compatible_options`.

    Create every KV dir the node will read through here: a dir created with rocksdict defaults gets table
    format 6 / xxh3 files the node cannot read. (Re-opening an existing dir, rocksdict takes the table
    options from the dir's latest OPTIONS file, measured, so they stay node-compatible.)"""
    return Rdict(str(path), node_compatible_options())


def open_read_only(path: Path) -> Rdict:
    """Open a KV dir read-only in raw mode (keys and values are plain bytes).

    Even read-only, rocksdict writes OPTIONS/config files into the dir: only call this on our own
    copies, never on the live node's `rocksdb/`. Opens are serialised across processes by an flock on the
    dir itself (verify's workers open the same dir at once; rocksdict rewrites `rocksdict-config.json` on
    every open, and one process must not read it while another has it truncated)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
    finally:
        os.close(fd)  # closing drops the flock


def finish_for_node(db: Rdict) -> None:
    """Leave a KV dir in the state the node reads best: memtables flushed to SST files, then closed.

    After the flush the data no longer depends on the write-ahead log. The node's RocksDB also replays
    a 9.8.4 WAL (measured), but then its first open must rewrite everything into new files; flushed,
    the node opens the dir with nothing to replay."""
    try:
        db.flush(True)
        db.flush_wal(True)
    finally:
        db.close()  # even when the flush fails (disk full): else the process keeps the dir's LOCK
