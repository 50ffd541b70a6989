"""The node's own libraries read what we write: npm level-rocksdb 5 (RocksDB 6.17.3) and sqlite3 5.

Every test runs the real npm packages, built (or reused) by scripts/build-node-libs under .cache/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import apsw
import pytest
from rocksdict import BlockBasedOptions, ChecksumType, DBCompressionType, Options, Rdict, WriteOptions

from bluegreen.engine.rocks_options import finish_for_node, open_node_compatible
from bluegreen.errors import BadInputError
from bluegreen.nodecompat import find_node_modules, kv_digest, run_node_probe
from tests.conftest import DEVNET_V29, REPO

pytestmark = pytest.mark.node

UNIT = "pLzHaCisvxkfgwyBDzgvZzhPp37ZKnuMOxiI3QwXxqM="
ADDRESS = "ZQFHJXFWT2OCEBXF26GFXJU4MPASWPJT"


def sample_entries() -> dict[bytes, bytes]:
    """Keys and values shaped like the v31 step's: joints, string and numeric feeds, feed values.

    Includes non-ASCII text, a JSON-escaped control, and values far above a 4 KiB block and 64 KiB."""
    entries: dict[bytes, bytes] = {}
    for i in range(1500):
        unit = f"{i:04d}{UNIT[4:]}"
        joint = {"unit": {"unit": unit, "version": "2.0dev", "messages": [{"app": "text", "payload": f"héllo ✓ 日本 😀 #{i}\n"}]}}
        entries[f"j\n{unit}".encode()] = json.dumps(joint, ensure_ascii=False, separators=(",", ":")).encode()
        mci = f"{0xFFFFFFFF - i:08x}"
        entries[f"df\n{ADDRESS}\ntemp\ns\nZürich {i}°C\n{mci}".encode()] = unit.encode()
        entries[f"df\n{ADDRESS}\nprice\nn\n{0xC000000000000000 + i:016x}\n{mci}".encode()] = unit.encode()
        entries[f"dfv\n{ADDRESS}\ntemp\n{mci}".encode()] = f"Zürich {i}°C\n{unit}".encode()
    entries[f"j\nBIG{UNIT[3:]}".encode()] = ('{"payload":"' + "Ω" * 600_000 + '"}').encode()  # 1.2 MB
    entries[f"j\nMID{UNIT[3:]}".encode()] = ("x" * 70_000).encode()
    entries[b"dfv\n" + ADDRESS.encode() + b"\nnote\nffffffff"] = '"quoted" \\u0001 \t tab\n'.encode() + UNIT.encode()
    return entries


def write_kv(path: Path, entries: dict[bytes, bytes], chunk: int = 1000) -> None:
    """Write like the engine does: synced batches through node_compatible_options, then finish_for_node."""
    db = open_node_compatible(path)
    sync = WriteOptions()
    sync.sync = True
    for n, (key, value) in enumerate(entries.items()):
        db.put(key, value, sync)
        if n % chunk == chunk - 1:
            db.flush(True)  # several SST files, as a long migration leaves behind
    finish_for_node(db)


def files_of(path: Path, suffix: str) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.name.endswith(suffix))


def assert_node_read_exactly(result, entries: dict[bytes, bytes]) -> None:
    assert result.ok, (result.error_stage, result.error)
    assert result.entries is not None
    read = [(e.key, e.value) for e in result.entries]
    want = sorted(entries.items())
    assert [k for k, _ in read] == [k for k, _ in want]
    for (key, got), (_, expected) in zip(read, want):
        assert got == expected, key
    assert result.keys_read == len(entries)
    assert result.gets == len(entries) and result.get_mismatches == 0  # every key also by point lookup
    assert result.non_utf8_entries == 0
    assert result.kv_digest == kv_digest(want)


def test_node_reads_a_flushed_kv_byte_for_byte(tmp_path: Path, node_modules: Path) -> None:
    entries = sample_entries()
    kv = tmp_path / "rocksdb"
    write_kv(kv, entries)
    assert len(files_of(kv, ".sst")) >= 2
    # finish_for_node leaves no data in the write-ahead log: the node has nothing to replay.
    assert all(log.stat().st_size == 0 for log in files_of(kv, ".log"))
    result = run_node_probe(kv, None, node_modules, dump=True)
    assert_node_read_exactly(result, entries)
    assert result.rocksdb_version == "5.2.1" and result.level_rocksdb_version == "5.0.0"


WAL_ONLY_WRITER = """
import os, sys, json
from pathlib import Path
from rocksdict import WriteOptions
from bluegreen.engine.rocks_options import open_node_compatible
db = open_node_compatible(Path(sys.argv[1]))
sync = WriteOptions(); sync.sync = True
for k, v in json.loads(sys.stdin.read()):
    db.put(k.encode(), v.encode(), sync)
os._exit(0)  # no flush, no close: everything stays in the write-ahead log, as after a crash
"""


def test_node_reads_a_kv_whose_data_is_only_in_the_write_ahead_log(tmp_path: Path, node_modules: Path) -> None:
    entries = sample_entries()
    kv = tmp_path / "rocksdb"
    payload = json.dumps([[k.decode(), v.decode()] for k, v in entries.items()])
    subprocess.run([sys.executable, "-c", WAL_ONLY_WRITER, str(kv)], input=payload, text=True, check=True, cwd=REPO)
    assert files_of(kv, ".sst") == []
    assert sum(log.stat().st_size for log in files_of(kv, ".log")) > 1_000_000
    assert_node_read_exactly(run_node_probe(kv, None, node_modules, dump=True), entries)


def test_node_reads_compaction_output_then_writes_compacts_and_reopens(tmp_path: Path, node_modules: Path) -> None:
    entries = sample_entries()
    kv = tmp_path / "rocksdb"
    write_kv(kv, entries, chunk=500)
    db = open_node_compatible(kv)
    db.compact_range(None, None)  # our compaction output, not just flush output
    finish_for_node(db)
    result = run_node_probe(kv, None, node_modules, dump=True, write_check=True)
    assert result.write_check is True
    assert_node_read_exactly(result, entries)


def test_the_probe_leaves_the_kv_dir_it_reads_untouched(tmp_path: Path, node_modules: Path) -> None:
    kv = tmp_path / "rocksdb"
    write_kv(kv, {b"j\nx": b"{}"})
    before = {p.name: p.read_bytes() for p in kv.iterdir()}
    assert run_node_probe(kv, None, node_modules, write_check=True).ok
    assert {p.name: p.read_bytes() for p in kv.iterdir()} == before


def _options(format_version: int | None, checksum: bool, compression: DBCompressionType | None) -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    if format_version is not None or checksum:
        table = BlockBasedOptions()
        if format_version is not None:
            table.set_format_version(format_version)
        if checksum:
            table.set_checksum_type(ChecksumType.crc32c())
        opts.set_block_based_table_factory(table)
    if compression is not None:
        opts.set_compression_type(compression)
    return opts


@pytest.mark.parametrize(
    ("what", "options", "message"),
    [
        ("rocksdict defaults (table format 6)", lambda: _options(None, False, None), "Unknown Footer version"),
        ("format 4 without crc32c (xxh3)", lambda: _options(4, False, None), "unknown checksum type 4"),
        ("lz4 compression", lambda: _options(4, True, DBCompressionType.lz4()), "Unsupported compression method"),
        ("zstd compression", lambda: _options(4, True, DBCompressionType.zstd()), "Unsupported compression method"),
    ],
)
def test_options_the_node_cannot_read_fail_the_probe(tmp_path: Path, node_modules: Path, what: str, options, message: str) -> None:
    """Each choice in node_compatible_options avoids one of these failures (docs/compatibility.md)."""
    kv = tmp_path / "rocksdb"
    db = Rdict(str(kv), options())
    for key, value in list(sample_entries().items())[:200]:
        db.put(key, value)
    db.close()  # flushes to an SST file written with these options
    result = run_node_probe(kv, None, node_modules)
    assert not result.ok, what
    assert result.error_stage == "read"
    assert message in (result.error or ""), result.error


def make_units_db(path: Path, user_version: int, units: list[str]) -> apsw.Connection:
    """A small WAL-mode SQLite file whose rows sit only in the -wal file while the returned connection lives."""
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE units (unit CHAR(44) PRIMARY KEY, version VARCHAR(10), alt VARCHAR(3), main_chain_index INT, is_stable TINYINT)")
    for i, unit in enumerate(units):
        conn.execute("INSERT INTO units VALUES (?, '2.0dev', '3', ?, 1)", (unit, i))
    conn.execute(f"PRAGMA user_version={user_version}")
    return conn


def test_node_sqlite3_reads_user_version_and_units_including_rows_only_in_the_wal(tmp_path: Path, node_modules: Path) -> None:
    db = tmp_path / "byteball.sqlite"
    units = [UNIT, "GRzA4D/ElsiwivoUrkCg36s+CoOr6rLsSH2F0EOes64=", "ünïcode-unit"]
    conn = make_units_db(db, 31, units)
    try:
        assert (tmp_path / "byteball.sqlite-wal").stat().st_size > 0
        result = run_node_probe(None, db, node_modules, sqlite_rows=2)
    finally:
        conn.close()
    assert result.ok, result.error
    assert result.sqlite3_version == "5.1.7"
    assert result.sqlite_user_version == 31
    assert result.sqlite_units == 3
    assert [r["unit"] for r in result.sqlite_rows] == units[:2]
    assert result.sqlite_rows[1]["main_chain_index"] == 1


def test_node_sqlite3_reads_the_real_devnet_database_without_touching_it(devnet_v29: Path, node_modules: Path) -> None:
    before = sorted(p.name for p in devnet_v29.iterdir())
    result = run_node_probe(None, devnet_v29 / "byteball.sqlite", node_modules, sqlite_rows=1)
    assert result.ok, result.error
    assert (result.sqlite_user_version, result.sqlite_units) == (29, 14)
    assert result.sqlite_rows[0]["unit"] == UNIT  # the genesis unit is the first row
    assert sorted(p.name for p in devnet_v29.iterdir()) == before  # no -wal/-shm appeared


def test_a_missing_library_or_store_is_a_bad_input(tmp_path: Path, node_modules: Path) -> None:
    kv = tmp_path / "rocksdb"
    write_kv(kv, {b"k": b"v"})
    with pytest.raises(BadInputError, match="level-rocksdb is not installed"):
        run_node_probe(kv, None, tmp_path / "node_modules")
    with pytest.raises(BadInputError, match="not a RocksDB directory"):
        run_node_probe(tmp_path, None, node_modules)
    with pytest.raises(BadInputError, match="not found"):
        run_node_probe(kv, None, node_modules, node="no-such-node-binary")


def _app(root: Path, name: str, nested: bool, lib_from: Path | None = None) -> Path:
    """A node program dir: package.json with `name`, level-rocksdb under node_modules (or ocore's)."""
    root.mkdir(parents=True)
    (root / "package.json").write_text(json.dumps({"name": name}))
    nm = root / "node_modules" / "ocore" / "node_modules" if nested else root / "node_modules"
    nm.mkdir(parents=True)
    if lib_from is not None:
        for lib in os.listdir(lib_from):
            (nm / lib).symlink_to(lib_from / lib)
    else:
        (nm / "level-rocksdb").mkdir()
        (nm / "level-rocksdb" / "package.json").write_text('{"name": "level-rocksdb", "version": "5.0.0"}')
    return nm


def test_find_node_modules_follows_the_app_name_of_the_data_dir(tmp_path: Path) -> None:
    home = tmp_path / "home"
    data_dir = home / ".config" / "bluegreen-test-hub"
    data_dir.mkdir(parents=True)
    _app(home / "other-app", "some-other-app", nested=False)
    # The clone's dir name differs from the package name; ocore keeps its own copy under node_modules/ocore.
    want = _app(home / "src" / "hub-clone", "bluegreen-test-hub", nested=True)
    assert find_node_modules(data_dir) == want


def test_find_node_modules_prefers_the_dir_named_after_the_app_and_returns_none_without_one(tmp_path: Path) -> None:
    home = tmp_path / "home"
    data_dir = home / ".config" / "bluegreen-test-wallet"
    data_dir.mkdir(parents=True)
    assert find_node_modules(data_dir) is None
    _app(home / "aaa" / "copy", "bluegreen-test-wallet", nested=False)
    want = _app(home / "bluegreen-test-wallet", "bluegreen-test-wallet", nested=False)
    assert find_node_modules(data_dir) == want


def test_probe_with_the_node_modules_found_for_a_data_dir(tmp_path: Path, node_modules: Path) -> None:
    """The operator's path: find the app's own libraries from its data dir, then read the KV with them."""
    home = tmp_path / "home"
    data_dir = home / ".config" / "bluegreen-test-node"
    kv = data_dir / "rocksdb"
    data_dir.mkdir(parents=True)
    _app(home / "bluegreen-test-node", "bluegreen-test-node", nested=True, lib_from=node_modules)
    entries = {b"j\n" + UNIT.encode(): b'{"unit":{}}'}
    write_kv(kv, entries)
    found = find_node_modules(data_dir)
    assert found is not None
    assert_node_read_exactly(run_node_probe(kv, None, found, dump=True), entries)


def test_node_reads_the_kv_the_engine_migrated_from_the_real_devnet_node(devnet_v29: Path, node_modules: Path) -> None:
    """The full path: our v31 step on the real devnet data, read back by the node's own RocksDB."""
    from bluegreen.engine.migrate import MigrationOptions, migrate_copy

    report = migrate_copy(devnet_v29 / "byteball.sqlite", devnet_v29 / "rocksdb", devnet_v29.parent / "journal.json", MigrationOptions())
    assert report.completed and report.failures_total == 0
    lines = (DEVNET_V29 / "expected-kv.jsonl").read_text("utf-8").splitlines()
    expected = {json.loads(l)["k"].encode(): json.loads(l)["v"].encode() for l in lines}
    result = run_node_probe(devnet_v29 / "rocksdb", devnet_v29 / "byteball.sqlite", node_modules, dump=True, write_check=True)
    assert_node_read_exactly(result, expected)
    assert result.write_check is True
    assert (result.sqlite_user_version, result.sqlite_units) == (31, 14)


def test_a_probe_that_overruns_its_timeout_is_killed_and_reported(tmp_path: Path, node_modules: Path) -> None:
    kv = tmp_path / "rocksdb"
    write_kv(kv, sample_entries())
    result = run_node_probe(kv, None, node_modules, timeout=0.01)
    assert not result.ok and result.error_stage == "probe" and "timeout" in (result.error or "")
