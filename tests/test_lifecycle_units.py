"""Building blocks of the lifecycle, each against real files and real processes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import apsw
import pytest

from bluegreen.errors import BadInputError, LockedError, NodeRunningError, OutOfSpaceError, PreflightError
from bluegreen.lifecycle import fingerprint as fpmod
from bluegreen.lifecycle import layout, noderunning, snapshot, swap
from bluegreen.lifecycle.lock import StagingLock, is_locked
from bluegreen.lifecycle.state import Phase, StagingState, StateStore
from test_lifecycle_support import PY, holding, make_node, tree_hash

ROOT = os.geteuid() == 0


# ------------------------------------------------------------------ state


def test_state_transitions_follow_the_table_and_are_audited(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    st = StagingState(data_dir=tmp_path / "d", staging_dir=tmp_path)
    seen: list[tuple[Phase, Phase]] = []
    store.hooks.append(lambda a, b, s: seen.append((a, b)))
    store.transition(st, Phase.SNAPSHOTTING, "go")
    with pytest.raises(PreflightError, match="cannot go to PROMOTED"):
        store.transition(st, Phase.PROMOTED)
    assert store.load().phase == Phase.SNAPSHOTTING  # type: ignore[union-attr]
    lines = store.audit_path.read_text().splitlines()
    assert len(lines) == 1 and '"to_phase":"SNAPSHOTTING"' in lines[0]
    assert seen == [(Phase.NONE, Phase.SNAPSHOTTING)]
    assert not (tmp_path / "state.json.tmp").exists()


# ------------------------------------------------------------------ lock


def test_second_process_gets_locked_error(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    code = ("import sys,time; from pathlib import Path; from bluegreen.lifecycle.lock import StagingLock\n"
            f"l=StagingLock(Path({str(lock)!r})); l.acquire(); print('locked', flush=True); time.sleep(600)")
    child = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"  # type: ignore[union-attr]
        assert is_locked(lock)
        with pytest.raises(LockedError, match=f"pid {child.pid}"):
            StagingLock(lock).acquire()
    finally:
        child.kill()
        child.wait()
    # The SIGKILLed holder left no stale lock behind.
    assert not is_locked(lock)
    with StagingLock(lock):
        pass


# ------------------------------------------------------------------ layout


def test_layout_defaults_and_refusals(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    lay = layout.resolve(node, None)
    assert lay.staging_dir == tmp_path / "node.bluegreen" and lay.db_name == "byteball.sqlite"
    link = tmp_path / "link"
    link.symlink_to(node)
    with pytest.raises(BadInputError, match="symlink"):
        layout.resolve(link, None)
    with pytest.raises(BadInputError, match="inside the data dir"):
        layout.resolve(node, node / "staging")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInputError, match="holds no ocore database"):
        layout.resolve(empty, None)


def test_discovery_lists_several_candidates(tmp_path: Path) -> None:
    home = tmp_path / "home"
    for app in ("obyte-hub", "headless-obyte"):
        make_node(home / ".config", app)
    (home / ".config" / "other").mkdir()
    assert [d.name for d in layout.discover_data_dirs(home)] == ["headless-obyte", "obyte-hub"]
    with pytest.raises(BadInputError, match="several node data dirs") as e:
        layout.default_data_dir(home)
    assert "obyte-hub" in e.value.message and "--data-dir" in (e.value.hint or "")


@pytest.mark.skipif(not ROOT, reason="needs root to mount a tmpfs")
def test_staging_on_another_filesystem_is_refused(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(other)], check=True)
    try:
        with pytest.raises(PreflightError, match="another filesystem"):
            layout.resolve(node, other / "staging")
    finally:
        subprocess.run(["umount", str(other)], check=True)


# ------------------------------------------------------------------ fingerprint


def test_fingerprint_names_what_changed(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    before = fpmod.take(node)
    assert before.sqlite is not None and before.sqlite.user_version == 29
    assert "conf.json" in before.other_files and "byteball.sqlite" in before.db_files
    conn = apsw.Connection(str(node / "byteball.sqlite"))
    conn.execute("INSERT INTO peer_hosts(peer_host) VALUES('drift.example')")
    conn.close()
    (node / "conf.json").write_text('{"changed": true}\n')
    after = fpmod.take(node)
    db = fpmod.diff_db(before, after)
    assert any("byteball.sqlite" in d for d in db)
    assert any(d.startswith("SQLite header change_counter") for d in db)
    assert fpmod.changed_other_files(before, after) == (["conf.json"], [])
    assert fpmod.diff_db(after, fpmod.take(node)) == []


# ------------------------------------------------------------------ node detection


def test_detects_child_holding_rocksdb_lock_with_fcntl(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    (node / "rocksdb").mkdir()
    (node / "rocksdb" / "LOCK").write_bytes(b"")
    assert not noderunning.detect(node).running
    with holding(node / "rocksdb" / "LOCK", "fcntl") as pid:
        usage = noderunning.detect(node)
        assert usage.running
        assert any(h.kind == "lock" and h.pid == pid and h.path.endswith("rocksdb/LOCK") for h in usage.holders)
        with pytest.raises(NodeRunningError, match=str(pid)):
            noderunning.ensure_stopped(node)
    before = sorted(os.listdir(node))
    assert not noderunning.detect(node).running
    assert sorted(os.listdir(node)) == before  # the probe created nothing


def test_detects_process_with_sqlite_file_open(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    with holding(node / "byteball.sqlite", "sqlite-open") as pid:
        usage = noderunning.detect(node)
        assert any(h.kind == "open" and h.pid == pid for h in usage.holders)
    with holding(node / "byteball.sqlite", "sqlite-write-lock") as pid:
        usage = noderunning.detect(node)
        assert any(h.kind == "lock" and h.pid == pid for h in usage.holders)


# ------------------------------------------------------------------ snapshot


def test_snapshot_is_consistent_with_wal_and_leaves_blue_untouched(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    (node / "rocksdb").mkdir()
    (node / "rocksdb" / "000007.sst").write_bytes(b"immutable table")
    (node / "rocksdb" / "000008.log").write_bytes(b"wal with data")
    (node / "rocksdb" / "CURRENT").write_text("MANIFEST-000001\n")
    (node / "rocksdb" / "MANIFEST-000001").write_bytes(b"m")
    (node / "keys.json").write_text("{}")
    os.chmod(node / "keys.json", 0o600)
    writer = apsw.Connection(str(node / "byteball.sqlite"))
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("INSERT INTO peer_hosts(peer_host) VALUES('only-in-the-wal.example')")
    assert (node / "byteball.sqlite-wal").stat().st_size > 0
    blue = tree_hash(node)
    lay = layout.resolve(node, None)
    lay.staging_dir.mkdir()
    rep = snapshot.take_snapshot(lay)
    assert tree_hash(node) == blue  # read through the backup API only (the -shm is excluded: not data)
    writer.close()
    green = lay.green_dir
    check = apsw.Connection(str(green / "byteball.sqlite"))
    assert check.execute("SELECT count(*) FROM peer_hosts WHERE peer_host='only-in-the-wal.example'").fetchone()[0] == 1
    check.close()
    assert os.stat(green / "rocksdb" / "000007.sst").st_ino == os.stat(node / "rocksdb" / "000007.sst").st_ino
    assert (green / "rocksdb" / "000008.log").read_bytes() == b"wal with data"
    assert (green / "keys.json").stat().st_mode & 0o777 == 0o600
    assert rep.files_linked == 1 and not (lay.staging_dir / "green.partial").exists()


def test_snapshot_of_clean_wal_db_creates_no_side_files_in_blue(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    c = apsw.Connection(str(node / "byteball.sqlite"))
    c.execute("PRAGMA journal_mode=WAL")
    c.close()  # clean close: no -wal, no -shm, header says WAL
    assert sorted(os.listdir(node)) == ["byteball.sqlite", "conf.json"]
    blue = tree_hash(node)
    lay = layout.resolve(node, None)
    lay.staging_dir.mkdir()
    rep = snapshot.take_snapshot(lay)
    assert rep.immutable_read
    assert sorted(os.listdir(node)) == ["byteball.sqlite", "conf.json"]
    assert tree_hash(node) == blue


@pytest.mark.skipif(not ROOT, reason="needs root to mount a small tmpfs")
def test_enospc_mid_copy_is_a_clean_out_of_space_error(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1400k", "tmpfs", str(mnt)], check=True)
    try:
        node = make_node(mnt)  # 0.9 MB of blue on a 1.4 MB filesystem: the copy cannot fit
        blue = tree_hash(node)
        lay = layout.resolve(node, None)
        with pytest.raises(OutOfSpaceError, match="not enough space") as pre:
            snapshot.check_space(lay)
        assert "MiB" in pre.value.message
        lay.staging_dir.mkdir()
        with pytest.raises(OutOfSpaceError, match="filled up") as e:
            snapshot.take_snapshot(lay)
        assert "blue is untouched" in e.value.message
        assert not (lay.staging_dir / "green.partial").exists() and not lay.green_dir.exists()
        assert tree_hash(node) == blue
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# ------------------------------------------------------------------ swap


def _two_dirs(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    target, incoming = tmp_path / "data", tmp_path / "st" / "green"
    incoming.mkdir(parents=True)
    target.mkdir()
    for d, tag in ((target, "blue"), (incoming, "green")):
        (d / "byteball.sqlite").write_text(tag)
        (d / f"only-{tag}").write_text(tag)
        (d / "rocksdb").mkdir()
        (d / "rocksdb" / "CURRENT").write_text(tag)
    return target, incoming, tmp_path / "st" / "blue-previous", tmp_path / "st" / "swap.json"


@pytest.mark.parametrize("mechanism", ["exchange", "fallback"])
def test_swap_moves_whole_dirs(tmp_path: Path, mechanism: str, monkeypatch: pytest.MonkeyPatch) -> None:
    target, incoming, outgoing, journal = _two_dirs(tmp_path)
    blue, green = tree_hash(target), tree_hash(incoming)
    if mechanism == "fallback":
        monkeypatch.setenv(swap.MECHANISM_ENV, "fallback")
    out = swap.swap("promote", target, incoming, outgoing, journal)
    assert out.mechanism == mechanism
    assert tree_hash(target) == green and tree_hash(outgoing) == blue and not incoming.exists()
    assert swap.recover(journal) is not None  # journal kept until the caller records the outcome
    swap.finish(journal)
    assert swap.recover(journal) is None


def test_renameat2_exchange_is_atomic_pair(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    ia, ib = a.stat().st_ino, b.stat().st_ino
    swap.rename_exchange(a, b)
    assert (a.stat().st_ino, b.stat().st_ino) == (ib, ia)


@pytest.mark.parametrize("point,expect", [
    ("promote.swap.after_journal", "undone"),
    ("promote.swap.fallback_mid", "undone"),
    ("promote.swap.after_exchange", "completed"),
])
def test_swap_killed_midway_is_recovered(tmp_path: Path, point: str, expect: str) -> None:
    target, incoming, outgoing, journal = _two_dirs(tmp_path)
    blue, green = tree_hash(target), tree_hash(incoming)
    env = dict(os.environ, BLUEGREEN_KILL_AT=point)
    if "fallback" in point:
        env[swap.MECHANISM_ENV] = "fallback"
    code = ("from pathlib import Path; from bluegreen.lifecycle import swap\n"
            f"swap.swap('promote', Path({str(target)!r}), Path({str(incoming)!r}), Path({str(outgoing)!r}), "
            f"Path({str(journal)!r}))")
    proc = subprocess.run([PY, "-c", code], env=env)
    assert proc.returncode == -9
    if "fallback" in point:  # the one mechanism whose intermediate state is mixed until recovery
        assert tree_hash(target) not in (blue, green)
    else:
        assert tree_hash(target) in (blue, green)
    out = swap.recover(journal)
    assert out is not None and out.result == expect and out.recovered
    if expect == "completed":
        assert tree_hash(target) == green and tree_hash(outgoing) == blue and not incoming.exists()
    else:
        assert tree_hash(target) == blue and tree_hash(incoming) == green and not outgoing.exists()


def test_filesystem_refusing_exchange_falls_back_to_journaled_renames(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No filesystem available here refuses RENAME_EXCHANGE, so the kernel's EINVAL is injected at the
    syscall wrapper; everything after it (journal rewrite, entry renames) runs for real."""
    import errno

    target, incoming, outgoing, journal = _two_dirs(tmp_path)
    blue, green = tree_hash(target), tree_hash(incoming)

    def refuse(a: Path, b: Path) -> None:
        raise OSError(errno.EINVAL, "Invalid argument", str(a))

    monkeypatch.setattr(swap, "rename_exchange", refuse)
    out = swap.swap("promote", target, incoming, outgoing, journal)
    assert out.mechanism == "fallback"
    assert swap.load_journal(journal).mechanism == "fallback"  # type: ignore[union-attr]
    assert tree_hash(target) == green and tree_hash(outgoing) == blue and not incoming.exists()
