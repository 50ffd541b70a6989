"""The whole blue/green flow on a real node dir, and every refusal with a real condition.

After each step we compare sha256 of every file: blue is untouched until the swap, the swap puts
exactly green's bytes at the data dir path, and rollback puts exactly blue's bytes back."""

from __future__ import annotations

import json
from pathlib import Path

import apsw
import pytest
from rocksdict import Options, Rdict

from bluegreen.errors import DriftError, NodeRunningError, PreflightError, VerificationFailed
from bluegreen.lifecycle import command
from bluegreen.lifecycle.state import Phase
from test_lifecycle_support import holding, make_node, tree_hash


def _staged(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    node = make_node(tmp_path)
    blue = tree_hash(node)
    res = command.stage(node)
    assert res.phase == Phase.MIGRATED and res.source_version == 29
    assert tree_hash(node) == blue
    return node, blue


def test_full_flow_blue_untouched_until_swap(tmp_path: Path) -> None:
    node, blue = _staged(tmp_path)
    staging = tmp_path / "node.bluegreen"
    again = command.stage(node)
    assert again.noop and "already staged" in again.message

    v = command.verify(node)
    assert v.passed and v.phase == Phase.VERIFIED and v.report_path and v.report_path.exists()
    assert any(c.name == command.CHECK_BLUE_UNCHANGED and c.passed for c in v.report.checks)  # type: ignore[union-attr]
    assert tree_hash(node) == blue
    assert command.verify(node).noop

    green = tree_hash(staging / "green")
    p = command.promote(node)
    assert p.phase == Phase.PROMOTED and p.mechanism == "exchange"
    assert tree_hash(node) == green
    assert tree_hash(staging / "blue-previous") == blue
    assert command.promote(node).noop

    s = command.status(node)
    assert s.phase == Phase.PROMOTED and s.data_dir_version == 50 and s.last_swap and s.last_swap.mechanism == "exchange"
    assert "rollback" in s.next_step

    r = command.rollback(node)
    assert r.phase == Phase.ROLLED_BACK and r.green_changes and not r.green_changes.changed
    assert tree_hash(node) == blue and tree_hash(staging / "green") == green
    assert command.rollback(node).noop

    p2 = command.promote(node)  # rollback of a rollback is a promote
    assert p2.phase == Phase.PROMOTED and tree_hash(node) == green

    audit = [json.loads(line) for line in (staging / "audit.log").read_text().splitlines()]
    assert [a["to_phase"] for a in audit if a["event"] == "transition"][-2:] == ["PROMOTING", "PROMOTED"]


def test_abort_before_promote_removes_staging_only(tmp_path: Path) -> None:
    node, blue = _staged(tmp_path)
    a = command.abort(node)
    assert not (tmp_path / "node.bluegreen").exists() and tree_hash(node) == blue
    assert a.removed
    assert command.abort(node).noop
    assert command.status(node).phase == Phase.NONE


def test_abort_after_promote_refuses_and_points_to_rollback(tmp_path: Path) -> None:
    node, _ = _staged(tmp_path)
    command.verify(node)
    command.promote(node)
    with pytest.raises(PreflightError, match="promoted") as e:
        command.abort(node)
    assert "rollback" in (e.value.hint or "")


def test_stage_refuses_a_database_already_at_target(tmp_path: Path, devnet_v31: Path) -> None:
    with pytest.raises(PreflightError, match="already at version 31"):
        command.stage(devnet_v31, target_version=31)
    assert not (devnet_v31.parent / "devnet-v31.bluegreen").exists()  # nothing written


def test_changed_blue_after_stage_fails_verify_and_promote(tmp_path: Path) -> None:
    node, _ = _staged(tmp_path)
    conn = apsw.Connection(str(node / "byteball.sqlite"))
    conn.execute("INSERT INTO peer_hosts(peer_host) VALUES('written.after.stage')")
    conn.close()
    v = command.verify(node)
    assert not v.passed and v.exit_code == VerificationFailed.exit_code
    drift = next(c for c in v.report.checks if c.name == command.CHECK_BLUE_UNCHANGED)  # type: ignore[union-attr]
    assert not drift.passed and any("byteball.sqlite" in f for f in drift.first_failures)
    assert "re-stage" in v.next_step
    with pytest.raises(VerificationFailed):
        command.promote(node)
    assert command.status(node).blue_drift
    # Re-stage picks up the change, then everything passes again.
    command.stage(node)
    assert command.verify(node).passed


def test_drift_after_verify_refuses_promote(tmp_path: Path) -> None:
    node, _ = _staged(tmp_path)
    assert command.verify(node).passed
    conn = apsw.Connection(str(node / "byteball.sqlite"))
    conn.execute("INSERT INTO peer_hosts(peer_host) VALUES('written.after.verify')")
    conn.close()
    with pytest.raises(DriftError, match="changed since stage") as e:
        command.promote(node)
    assert "upgrade stage" in (e.value.hint or "")
    assert command.status(node).phase == Phase.VERIFIED  # nothing moved


def test_conf_edit_since_stage_survives_promote(tmp_path: Path) -> None:
    node, _ = _staged(tmp_path)
    command.verify(node)
    (node / "conf.json").write_text('{"edited": "after stage"}\n')
    (node / "keys.json").write_text('{"new": "file"}\n')
    p = command.promote(node)
    assert p.copied_files == ["conf.json", "keys.json"]
    assert (node / "conf.json").read_text() == '{"edited": "after stage"}\n'
    assert (node / "keys.json").read_text() == '{"new": "file"}\n'


def test_failed_verify_refuses_promote(tmp_path: Path) -> None:
    node, blue = _staged(tmp_path)
    green_db = tmp_path / "node.bluegreen" / "green" / "byteball.sqlite"
    conn = apsw.Connection(str(green_db))
    conn.execute("UPDATE balls SET ball='AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=' WHERE rowid=(SELECT max(rowid) FROM balls)")
    conn.close()
    v = command.verify(node)
    assert not v.passed and "balls" in v.message
    with pytest.raises(VerificationFailed, match="balls"):
        command.promote(node)
    assert tree_hash(node) == blue


def test_green_changed_after_verify_refuses_promote(tmp_path: Path) -> None:
    node, _ = _staged(tmp_path)
    command.verify(node)
    conn = apsw.Connection(str(tmp_path / "node.bluegreen" / "green" / "byteball.sqlite"))
    conn.execute("INSERT INTO peer_hosts(peer_host) VALUES('green.after.verify')")
    conn.close()
    with pytest.raises(DriftError, match="green changed after its last verify"):
        command.promote(node)


def test_promote_refuses_while_sqlite_is_held(tmp_path: Path) -> None:
    node, blue = _staged(tmp_path)
    command.verify(node)
    with holding(node / "byteball.sqlite", "sqlite-open") as pid:
        with pytest.raises(NodeRunningError, match=str(pid)):
            command.promote(node)
    assert tree_hash(node) == blue and command.status(node).phase == Phase.VERIFIED


def test_rollback_refuses_while_rocksdb_lock_is_held(tmp_path: Path) -> None:
    node, _ = _staged(tmp_path)
    command.verify(node)
    command.promote(node)
    green = tree_hash(node)
    with holding(node / "rocksdb" / "LOCK", "fcntl") as pid:
        with pytest.raises(NodeRunningError, match=str(pid)):
            command.rollback(node)
    assert tree_hash(node) == green


def test_rollback_refuses_after_node_wrote_and_force_overrides(tmp_path: Path) -> None:
    node, blue = _staged(tmp_path)
    command.verify(node)
    command.promote(node)
    # The "node" writes to the upgraded data: one SQL row and one KV key.
    conn = apsw.Connection(str(node / "byteball.sqlite"))
    conn.execute("INSERT INTO peer_hosts(peer_host) VALUES('new.peer.example')")
    conn.close()
    kv = Rdict(str(node / "rocksdb"), options=Options(raw_mode=True))
    kv[b"j\nNEWUNITNEWUNITNEWUNITNEWUNITNEWUNITNEWUNIT1="] = b"{}"
    kv.close()
    with pytest.raises(DriftError) as e:
        command.rollback(node)
    assert "peer_hosts: 1 rows added" in e.value.message
    assert "KV: 1 keys added" in e.value.message and "j\\nNEWUNIT" in e.value.message
    assert "--force" in (e.value.hint or "")
    assert command.status(node).phase == Phase.PROMOTED
    r = command.rollback(node, force=True)
    assert r.forced and r.green_changes and r.green_changes.rows_added == {"peer_hosts": 1}
    assert tree_hash(node) == blue
    # Green now differs from what was verified: promote asks for a new verify.
    with pytest.raises(DriftError, match="verify"):
        command.promote(node)


def test_verify_warns_when_the_node_is_running(tmp_path: Path) -> None:
    node, blue = _staged(tmp_path)
    with holding(node / "byteball.sqlite", "sqlite-open") as pid:
        v = command.verify(node)
    assert v.passed and any("node is running" in w and str(pid) in w for w in v.warnings)
    assert tree_hash(node) == blue
