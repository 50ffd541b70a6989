"""Promote's rollback baseline costs O(files), and rollback still tells exactly what the node wrote.

Promote counts no row (verify's counts are green's: green is final once verified) and reads no KV key (it keeps
green's KV as it goes live: `.sst` hard-linked, small files copied, in `<staging>/work/kv-at-promote/`).
Rollback compares only what changed since promote: the SQLite part by row counts, the KV part by a merge of
the frozen copy with the KV now. Real SQLite and RocksDB dirs throughout (the devnet v29 fixture)."""

from __future__ import annotations

import os
from pathlib import Path

import apsw
import pytest
from rocksdict import Options, Rdict

from bluegreen.errors import DriftError
from bluegreen.lifecycle import command, greendiff
from bluegreen.lifecycle.state import Phase, StateStore
from test_lifecycle_support import cli_json, make_node, run_cli, tree_hash

NEW_KEY = b"j\nNEWUNITNEWUNITNEWUNITNEWUNITNEWUNITNEWUNIT1="

Calls = list[tuple[str, int, int]]


def _recorder() -> tuple[Calls, object]:
    calls: Calls = []
    return calls, lambda step, done, total: calls.append((step, done, total))


def _steps(calls: Calls) -> set[str]:
    return {s for s, _d, _t in calls}


def _verified(tmp_path: Path) -> tuple[Path, Path]:
    node = make_node(tmp_path)
    command.stage(node)
    assert command.verify(node, sample=2, no_node_probe=True).passed
    return node, tmp_path / "node.bluegreen"


def _promoted(tmp_path: Path) -> tuple[Path, Path]:
    node, staging = _verified(tmp_path)
    assert command.promote(node).phase == Phase.PROMOTED
    return node, staging


def _frozen(staging: Path) -> Path:
    return staging / "work" / greendiff.KV_AT_PROMOTE / "rocksdb"


def _listing(d: Path) -> dict[str, tuple[int, int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino) for p in sorted(d.iterdir())}


def _node_writes_kv(node: Path, put: dict[bytes, bytes] | None = None, delete: tuple[bytes, ...] = ()) -> None:
    """What the node does to its KV: open it in place, write, close (RocksDB flushes on close)."""
    kv = Rdict(str(node / "rocksdb"), options=Options(raw_mode=True))
    for k, v in (put or {}).items():
        kv[k] = v
    for k in delete:
        del kv[k]
    kv.close()


def _node_writes_a_row(node: Path) -> None:
    conn = apsw.Connection(str(node / "byteball.sqlite"))
    conn.execute("INSERT INTO peer_hosts(peer_host) VALUES('new.peer.example')")
    conn.close()


# ---------------------------------------------------------------- promote: O(files)


def test_verify_keeps_green_row_counts_and_promote_copies_them_without_counting(tmp_path: Path) -> None:
    node, staging = _verified(tmp_path)
    state = StateStore(staging).load()
    assert state is not None and state.green_row_counts_verified is not None
    assert state.green_row_counts_verified == greendiff.row_counts(staging / "green" / "byteball.sqlite")
    calls, cb = _recorder()
    command.promote(node, progress=cb)  # type: ignore[arg-type]
    assert greendiff.STEP_ROW_COUNTS not in _steps(calls)
    state = StateStore(staging).load()
    assert state is not None and state.green_row_counts_promoted == state.green_row_counts_verified


def test_promote_does_not_read_any_kv_key_its_copy_hard_links_every_sst(tmp_path: Path) -> None:
    node, staging = _verified(tmp_path)
    calls, cb = _recorder()
    res = command.promote(node, progress=cb)  # type: ignore[arg-type]
    assert greendiff.STEP_KV_KEYS not in _steps(calls)
    frozen, live = _frozen(staging), node / "rocksdb"
    sst = {p.name: p.stat().st_ino for p in live.glob("*.sst")}
    assert sst and {p.name: p.stat().st_ino for p in frozen.glob("*.sst")} == sst  # the same files: links
    # The small files are copies with green's bytes; LOCK and info logs are no data and are left out.
    for p in frozen.iterdir():
        if p.suffix != ".sst":
            assert p.read_bytes() == (live / p.name).read_bytes() and p.stat().st_ino != (live / p.name).stat().st_ino
    assert not (frozen / "LOCK").exists() and (frozen / "CURRENT").exists()
    assert not (staging / "work" / greendiff.KV_AT_PROMOTE_PARTIAL).exists()
    state = StateStore(staging).load()
    assert state is not None and state.green_kv_frozen is not None and state.green_kv_frozen.path == frozen
    assert state.green_kv_frozen.sst_linked == len(sst)
    assert list(res.timings) == ["checks", "other files", "row counts", "ownership", "kv copy", "fingerprint",
                                 "set-aside record", "swap"]
    assert res.timings["row counts"] < 0.05  # copied from the state, not counted


def test_promote_of_a_green_verified_by_an_older_bluegreen_counts_rows_itself(tmp_path: Path) -> None:
    node, staging = _verified(tmp_path)
    store = StateStore(staging)
    state = store.load()
    assert state is not None
    state.green_row_counts_verified = None  # what an older bluegreen's verify left
    store.save(state)
    calls, cb = _recorder()
    command.promote(node, progress=cb)  # type: ignore[arg-type]
    assert greendiff.STEP_ROW_COUNTS in _steps(calls)
    state = store.load()
    assert state is not None and state.green_row_counts_promoted == greendiff.row_counts(node / "byteball.sqlite")


# ---------------------------------------------------------------- rollback: exact, and cheap when nothing changed


def test_rollback_accepts_when_nothing_changed_without_scanning(tmp_path: Path) -> None:
    node, staging = _promoted(tmp_path)
    calls, cb = _recorder()
    r = command.rollback(node, progress=cb)  # type: ignore[arg-type]
    assert r.phase == Phase.ROLLED_BACK and not r.forced
    assert not _steps(calls) & {greendiff.STEP_ROW_COUNTS, greendiff.STEP_KV_KEYS}
    # Green is not live any more: its KV copy is no baseline; the next promote makes a new one.
    assert not (staging / "work" / greendiff.KV_AT_PROMOTE).exists()
    assert command.promote(node).phase == Phase.PROMOTED and _frozen(staging).is_dir()


def test_rollback_refuses_and_lists_the_added_key_when_the_node_wrote_one_kv_key(tmp_path: Path) -> None:
    node, staging = _promoted(tmp_path)
    _node_writes_kv(node, {NEW_KEY: b"{}"})
    frozen_before = _listing(_frozen(staging))
    calls, cb = _recorder()
    with pytest.raises(DriftError) as e:
        command.rollback(node, progress=cb)  # type: ignore[arg-type]
    assert "KV: 1 keys added, 0 removed" in e.value.message and "+ j\\nNEWUNIT" in e.value.message
    assert "rows added" not in e.value.message
    # The SQLite files are as at promote: no row counted; the KV changed: its keys were merged.
    assert greendiff.STEP_ROW_COUNTS not in _steps(calls) and greendiff.STEP_KV_KEYS in _steps(calls)
    assert _listing(_frozen(staging)) == frozen_before  # never opened in place (rocksdict writes into any dir)
    assert not (staging / "work" / "kv-probe").exists()
    assert command.status(node).phase == Phase.PROMOTED


def test_rollback_lists_rows_without_reading_the_kv_when_only_sqlite_changed(tmp_path: Path) -> None:
    node, _ = _promoted(tmp_path)
    _node_writes_a_row(node)
    calls, cb = _recorder()
    with pytest.raises(DriftError, match="peer_hosts: 1 rows added") as e:
        command.rollback(node, progress=cb)  # type: ignore[arg-type]
    assert "KV:" not in e.value.message
    assert greendiff.STEP_KV_KEYS not in _steps(calls)  # the KV's files are as at promote: no key read


def test_rollback_lists_a_changed_value_and_a_removed_key(tmp_path: Path) -> None:
    node, staging = _promoted(tmp_path)
    keys = [k for k, _v in greendiff.iter_kv_items(node / "rocksdb", staging / "work" / "look")][:2]
    _node_writes_kv(node, {keys[0]: b"another value"}, delete=(keys[1],))
    r = command.rollback(node, force=True)
    ch = r.green_changes
    assert ch is not None and r.forced
    assert (ch.kv_keys_added, ch.kv_keys_removed, ch.kv_values_changed) == (0, 1, 1)
    assert ch.kv_first_changed == [greendiff.show_key(keys[0])]
    assert "0 keys added, 1 removed, 1 values changed" in ch.describe()


def test_rollback_refuses_even_when_the_kv_copy_from_promote_is_gone(tmp_path: Path) -> None:
    """The copy only lists what changed; whether green changed is the fingerprint's answer, as before."""
    node, staging = _promoted(tmp_path)
    _node_writes_kv(node, {NEW_KEY: b"{}"})
    greendiff.discard_frozen_kv(staging / "work")
    with pytest.raises(DriftError, match="keys not compared"):
        command.rollback(node)


def test_rollback_of_a_promote_by_an_older_bluegreen_uses_its_key_file(tmp_path: Path) -> None:
    """An older bluegreen listed every key at promote (no frozen copy): rollback still lists what was added."""
    node, staging = _promoted(tmp_path)
    work = staging / "work"
    keys = [k for k, _v in greendiff.iter_kv_items(node / "rocksdb", work / "look")]
    (work / greendiff.LEGACY_KV_KEYS_FILE).write_text("".join(k.hex() + "\n" for k in keys))
    greendiff.discard_frozen_kv(work)
    store = StateStore(staging)
    state = store.load()
    assert state is not None
    state.green_kv_frozen, state.green_kv_keys_promoted = None, len(keys)
    store.save(state)
    _node_writes_kv(node, {NEW_KEY: b"{}"})
    with pytest.raises(DriftError, match="KV: 1 keys added, 0 removed"):
        command.rollback(node)


def test_diff_kv_merges_two_sorted_streams() -> None:
    old = iter([(b"a", b"1"), (b"b", b"2"), (b"d", b"4")])
    new = iter([(b"a", b"1"), (b"b", b"X"), (b"c", b"3"), (b"e", b"5")])
    d = greendiff.diff_kv(old, new)
    assert (d.added, d.removed, d.changed, d.first_added, d.first_changed) == (2, 1, 1, ["c", "e"], ["b"])
    # keys only (an older baseline): values are not compared
    d = greendiff.diff_kv(iter([(b"a", None)]), iter([(b"a", b"1")]))
    assert (d.added, d.removed, d.changed) == (0, 0, 0)


# ---------------------------------------------------------------- crash safety and the staging area


def test_promote_killed_while_copying_the_kv_is_recovered(tmp_path: Path) -> None:
    node, staging = _verified(tmp_path)
    blue = tree_hash(node)
    proc = run_cli("promote", "--data-dir", str(node), env_extra={"BLUEGREEN_KILL_AT": "promote.mid_kv_copy"})
    assert proc.returncode == -9, proc.stderr
    work = staging / "work"
    assert (work / greendiff.KV_AT_PROMOTE_PARTIAL).is_dir() and not (work / greendiff.KV_AT_PROMOTE).exists()
    assert tree_hash(node) == blue
    rc, v = cli_json("verify", "--data-dir", str(node))  # any command (but status) discards the partial copy
    assert rc == 0 and any("partial copy was removed" in n for n in v["recovered"]), v
    assert not (work / greendiff.KV_AT_PROMOTE_PARTIAL).exists()
    rc, p = cli_json("promote", "--data-dir", str(node))
    assert rc == 0 and p["phase"] == "PROMOTED" and _frozen(staging).is_dir()
    assert command.rollback(node).phase == Phase.ROLLED_BACK and tree_hash(node) == blue


def test_rollback_killed_after_its_swap_leaves_the_copy_to_recovery(tmp_path: Path) -> None:
    node, staging = _promoted(tmp_path)
    proc = run_cli("rollback", "--data-dir", str(node), env_extra={"BLUEGREEN_KILL_AT": "rollback.after_swap"})
    assert proc.returncode == -9, proc.stderr
    assert _frozen(staging).is_dir()
    rc, v = cli_json("verify", "--data-dir", str(node))
    assert rc == 0 and v["phase"] == "VERIFIED", v
    assert not (staging / "work" / greendiff.KV_AT_PROMOTE).exists()
    state = StateStore(staging).load()
    assert state is not None and state.green_kv_frozen is None


def test_cleanup_removes_the_kv_copy(tmp_path: Path) -> None:
    node, staging = _promoted(tmp_path)
    frozen_sst = next(_frozen(staging).glob("*.sst"))
    assert os.stat(frozen_sst).st_nlink >= 2
    live_sst = node / "rocksdb" / frozen_sst.name
    res = command.cleanup(node)
    assert res.phase == Phase.CLEANED_UP and not staging.exists()
    assert live_sst.stat().st_nlink == 1  # the live file stays; only the copy's link went
