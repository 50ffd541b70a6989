"""Issue 8 (items 2, 3): rollback swaps back only the blue promote set aside; nothing runs inside a staging
area; abort never silently deletes the node's writes that a forced rollback set aside in green/.

Real promotes and rollbacks on the devnet v29 fixture; "the node" writing is a real SQLite write."""

from __future__ import annotations

import os
import pty
import select
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import apsw
import pytest

from bluegreen.errors import BadInputError, BluePreviousChangedError, UnsavedDataError
from bluegreen.lifecycle import command
from bluegreen.lifecycle.state import Phase
from conftest import REPO
from test_lifecycle_support import PY, make_node, run_cli, tree_hash


def _promoted(tmp_path: Path, wal: bool = False) -> tuple[Path, Path, dict[str, str]]:
    """A promoted node: (data dir, staging area, hashes of the old blue)."""
    node = make_node(tmp_path)
    if wal:  # a node that ran in WAL mode (ocore's default)
        conn = apsw.Connection(str(node / "byteball.sqlite"))
        conn.execute("PRAGMA journal_mode=WAL")
        conn.close()
    blue = tree_hash(node)
    command.stage(node)
    assert command.verify(node).passed
    command.promote(node)
    return node, tmp_path / "node.bluegreen", blue


def _node_writes(db: Path) -> None:
    conn = apsw.Connection(str(db))
    conn.execute("INSERT INTO peer_hosts(peer_host) VALUES('new.peer.example')")
    conn.close()


def test_rollback_refuses_when_blue_previous_was_written_to(tmp_path: Path) -> None:
    node, staging, _ = _promoted(tmp_path)
    green = tree_hash(node)
    _node_writes(staging / "blue-previous" / "byteball.sqlite")  # e.g. a node started there by mistake
    with pytest.raises(BluePreviousChangedError) as e:
        command.rollback(node)
    assert "no longer what promote set aside" in e.value.message
    assert "changed: byteball.sqlite" in e.value.message and "change_counter" in e.value.message
    assert "inspect" in (e.value.hint or "") and "keep the upgrade" in (e.value.hint or "")
    assert tree_hash(node) == green
    st = command.status(node)
    assert st.phase == Phase.PROMOTED and st.blue_previous_problems and "no longer matches" in st.message
    assert "inspect" in st.next_step


def test_rollback_refuses_a_nested_staging_area_and_a_wal_with_content_listing_ten(tmp_path: Path) -> None:
    node, staging, _ = _promoted(tmp_path)
    green = tree_hash(node)
    prev = staging / "blue-previous"
    nested = prev / "node.bluegreen"
    nested.mkdir()
    (nested / "state.json").write_text("{}")
    for i in range(12):
        (nested / f"f{i}").write_text("x")
    (prev / "byteball.sqlite-wal").write_bytes(b"\x37\x7f\x06\x82" + b"\0" * 4092)
    with pytest.raises(BluePreviousChangedError) as e:
        command.rollback(node)
    msg = e.value.message
    assert "added: node.bluegreen (dir) - a nested staging area?" in msg
    assert "added: byteball.sqlite-wal (file, 4096 bytes)" in msg
    assert "... and " in msg and msg.count("\n    added:") == 10
    assert tree_hash(node) == green and command.status(node).phase == Phase.PROMOTED
    # Taking the additions away again makes blue-previous/ exactly what was set aside: rollback proceeds.
    shutil.rmtree(nested)
    (prev / "byteball.sqlite-wal").unlink()
    assert command.rollback(node).phase == Phase.ROLLED_BACK


def test_a_read_only_sqlite3_look_at_blue_previous_is_harmless(tmp_path: Path) -> None:
    node, staging, blue = _promoted(tmp_path, wal=True)
    old_db = staging / "blue-previous" / "byteball.sqlite"
    conn = sqlite3.connect(f"file:{old_db}?mode=ro", uri=True)
    assert conn.execute("SELECT count(*) FROM units").fetchone()[0] > 0
    conn.close()
    # A read-only connection cannot remove its side files: an empty -wal and the -shm stay behind.
    assert (old_db.with_name("byteball.sqlite-wal")).stat().st_size == 0
    assert (old_db.with_name("byteball.sqlite-shm")).exists()
    r = command.rollback(node)
    assert r.phase == Phase.ROLLED_BACK
    now = {k: v for k, v in tree_hash(node).items() if not (k.endswith("-wal") and (node / k).stat().st_size == 0)}
    assert now == blue


def test_missing_blue_previous_is_a_clear_refusal_and_status_says_so(tmp_path: Path) -> None:
    node, staging, _ = _promoted(tmp_path)
    green = tree_hash(node)
    shutil.move(str(staging / "blue-previous"), str(tmp_path / "archived"))
    st = command.status(node)
    assert st.blue_previous_problems and "is missing" in st.message and "keep the upgrade" in st.next_step
    with pytest.raises(BluePreviousChangedError, match="is missing") as e:
        command.rollback(node)
    assert e.value.exit_code == 11 and "put the old data dir back" in (e.value.hint or "")
    assert tree_hash(node) == green


def test_commands_refuse_a_data_dir_inside_a_staging_area(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    staging = tmp_path / "node.bluegreen"
    command.stage(node)
    with pytest.raises(BadInputError) as e:
        command.verify(staging / "green")
    assert str(staging) in e.value.message and str(node) in e.value.message
    assert f"--data-dir {node}" in (e.value.hint or "")
    command.verify(node)
    command.promote(node)
    prev = staging / "blue-previous"
    for fn in (command.stage, command.verify, command.promote, command.rollback):
        with pytest.raises(BadInputError, match="inside the bluegreen staging area") as e:
            fn(prev)
        assert "blue-previous" in e.value.message and str(node) in e.value.message
    # e.g. `upgrade stage --data-dir .` from a shell left in blue-previous/: nothing was created
    assert not (staging / "blue-previous.bluegreen").exists()
    assert sorted(p.name for p in prev.iterdir()) == ["byteball.sqlite", "conf.json"]
    assert command.rollback(node).phase == Phase.ROLLED_BACK


def _forced_rollback_with_node_writes(tmp_path: Path) -> tuple[Path, Path]:
    node, staging, _ = _promoted(tmp_path)
    _node_writes(node / "byteball.sqlite")
    r = command.rollback(node, force=True)
    assert r.forced
    return node, staging


def test_abort_refuses_to_delete_the_node_writes_a_forced_rollback_set_aside(tmp_path: Path) -> None:
    node, staging = _forced_rollback_with_node_writes(tmp_path)
    with pytest.raises(UnsavedDataError) as e:
        command.abort(node)
    assert "peer_hosts: 1 rows added" in e.value.message and str(staging / "green") in e.value.message
    assert e.value.exit_code == 12 and "--yes" in (e.value.hint or "")
    assert (staging / "green" / "byteball.sqlite").exists() and (staging / "state.json").exists()
    st = command.status(node)
    assert st.green_unique_changes is not None and st.green_unique_changes.rows_added == {"peer_hosts": 1}
    a = command.abort(node, discard_node_writes=True)
    assert not staging.exists()
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("node.bluegreen-aborted-")]
    assert len(kept) == 1 and (kept[0] / "audit.log").exists() and str(kept[0]) in a.message


def test_abort_without_forced_discard_needs_no_confirmation(tmp_path: Path) -> None:
    node, staging, _ = _promoted(tmp_path)
    command.rollback(node)
    command.abort(node)
    assert not staging.exists()


def test_cli_abort_refuses_without_yes_and_deletes_with_yes(tmp_path: Path) -> None:
    node, staging = _forced_rollback_with_node_writes(tmp_path)
    p = run_cli("abort", "--data-dir", str(node))  # no terminal, no --yes: the refusal, not a silent delete
    assert p.returncode == 12 and "exists nowhere else" in p.stderr and "peer_hosts" in p.stderr
    assert (staging / "green").is_dir()
    p = run_cli("abort", "--data-dir", str(node), "--yes")
    assert p.returncode == 0, p.stderr
    assert not staging.exists()


def test_stage_refuses_to_replace_a_green_holding_the_node_writes(tmp_path: Path) -> None:
    node, staging = _forced_rollback_with_node_writes(tmp_path)
    _node_writes(node / "byteball.sqlite")  # the node ran again on the old data: blue drifted, stage re-copies
    green = tree_hash(staging / "green")
    with pytest.raises(UnsavedDataError, match="peer_hosts: 1 rows added") as e:
        command.stage(node)
    assert "abort --yes" in (e.value.hint or "")
    assert tree_hash(staging / "green") == green


def _pty_answers(args: list[str], answers: list[bytes], timeout: float = 120) -> tuple[int, str]:
    """Run the CLI on a pty, typing answers[i] at the i-th `[y/N]` prompt; (rc, all output)."""
    master, slave = pty.openpty()
    child = subprocess.Popen([PY, "-m", "bluegreen", *args], cwd=REPO, stdin=slave, stdout=slave, stderr=slave,
                             close_fds=True)
    os.close(slave)
    out, sent, deadline = b"", 0, time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.5)
        if r:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if sent < len(answers) and out.count(b"[y/N]") > sent:
                os.write(master, answers[sent])
                sent += 1
        elif child.poll() is not None:
            break
    rc = child.wait(timeout=timeout)
    os.close(master)
    return rc, out.decode(errors="replace")


def test_cli_abort_on_a_terminal_asks_about_the_node_writes(tmp_path: Path) -> None:
    node, staging = _forced_rollback_with_node_writes(tmp_path)
    rc, out = _pty_answers(["abort", "--data-dir", str(node)], [b"y\n", b"n\n"])
    assert rc == 1 and "exists nowhere else" in out and "DELETE" in out and "nothing was done" in out
    assert (staging / "green" / "byteball.sqlite").exists()
    rc, out = _pty_answers(["abort", "--data-dir", str(node)], [b"y\n", b"y\n"])
    assert rc == 0 and "aborted" in out and not staging.exists()


def test_abort_with_an_unreadable_state_file_still_keeps_the_node_writes(tmp_path: Path) -> None:
    node, staging = _forced_rollback_with_node_writes(tmp_path)
    (staging / "state.json").write_text("{ edited by hand")
    with pytest.raises(UnsavedDataError, match="forced rollback"):
        command.abort(node)
    assert (staging / "green" / "byteball.sqlite").exists()
    command.abort(node, discard_node_writes=True)
    assert not staging.exists()
