"""Bad input through the real CLI: paths that are not a usable data dir, read-only data dirs, databases
already past the target, staging areas left by other runs, and two `upgrade` processes at once.

Already proven elsewhere with the same real condition (not repeated here): not an ocore dir (exit 2,
test_cli_upgrade), symlinked data dir (test_lifecycle_units), data dir that is a mount point
(test_lifecycle_mount), staging on another filesystem (test_lifecycle_units), database at the target
(test_lifecycle_flow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from bluegreen.errors import BadInputError, LockedError, PreflightError
from bluegreen.lifecycle.lock import is_locked
from faultkit import fresh_node, manifest, modes, need_root, record, sh, spawn, sql
from test_lifecycle_support import cli_json


def test_data_dir_that_does_not_exist(tmp_path: Path) -> None:
    for cmd in ("stage", "promote", "rollback", "verify", "status", "abort"):
        rc, err = cli_json(cmd, "--data-dir", str(tmp_path / "nowhere"))
        assert rc == BadInputError.exit_code and "does not exist" in err["message"] and err["hint"], (cmd, err)
    assert os.listdir(tmp_path) == []


def test_database_above_the_target_is_refused_untouched(tmp_path: Path) -> None:
    node = fresh_node(tmp_path)
    sql(node / "byteball.sqlite", "PRAGMA user_version=32")
    blue = manifest(node)
    rc, err = cli_json("stage", "--data-dir", str(node), "--to", "31")
    assert rc == PreflightError.exit_code and "at version 32, above the target 31" in err["message"], err
    assert manifest(node) == blue and not (tmp_path / "node.bluegreen").exists()


def test_chmod_read_only_data_dir_stages_without_repairing_modes(tmp_path: Path) -> None:
    node = fresh_node(tmp_path)
    subprocess.run(["chmod", "-R", "a-w", str(node)], check=True)
    blue, blue_modes = manifest(node), modes(node)
    try:
        rc, res = cli_json("stage", "--data-dir", str(node))
        assert rc == 0 and res["phase"] == "MIGRATED", res  # stage only reads blue
        rc, v = cli_json("verify", "--data-dir", str(node))
        assert rc == 0 and v["passed"], v["message"]
        assert manifest(node) == blue and modes(node) == blue_modes
        # The copy keeps the operator's modes (green becomes the live dir at promote).
        green = tmp_path / "node.bluegreen" / "green"
        assert os.stat(green / "conf.json").st_mode == os.stat(node / "conf.json").st_mode
        if os.geteuid() != 0:  # permission bits stop a non-root operator's rename; root ignores them
            rc, err = cli_json("promote", "--data-dir", str(node))
            assert rc == PreflightError.exit_code and "cannot promote" in err["message"], err
            assert manifest(node) == blue
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(node)], check=True)


def test_immutable_data_dir_stages_and_promote_refuses_clearly(tmp_path: Path) -> None:
    need_root()
    node = fresh_node(tmp_path)
    blue = manifest(node)
    sh("chattr", "+i", str(node))
    try:
        rc, res = cli_json("stage", "--data-dir", str(node))
        assert rc == 0 and res["phase"] == "MIGRATED", res
        rc, v = cli_json("verify", "--data-dir", str(node))
        assert rc == 0 and v["passed"]
        green = manifest(tmp_path / "node.bluegreen" / "green")
        rc, err = cli_json("promote", "--data-dir", str(node))
        assert rc == PreflightError.exit_code and err["error"] == "PreflightError", err
        assert "cannot promote" in err["message"] and "nothing was moved" in err["message"]
        assert "chattr -i" in err["hint"]
        assert manifest(node) == blue and manifest(tmp_path / "node.bluegreen" / "green") == green
        rc, st = cli_json("status", "--data-dir", str(node))
        assert rc == 0 and st["phase"] == "VERIFIED" and not (tmp_path / "node.bluegreen" / "blue-previous").exists()
    finally:
        sh("chattr", "-i", str(node))
    rc, p = cli_json("promote", "--data-dir", str(node))
    assert rc == 0 and p["phase"] == "PROMOTED" and manifest(node) == green


def test_data_dir_behind_a_read_only_bind_mount_is_refused_before_writing(tmp_path: Path) -> None:
    need_root()
    real, ro = tmp_path / "real", tmp_path / "ro"
    real.mkdir()
    ro.mkdir()
    fresh_node(real)
    sh("mount", "--bind", str(real), str(ro))
    try:
        sh("mount", "-o", "remount,bind,ro", str(ro))
        node = ro / "node"
        blue = manifest(node)
        rc, err = cli_json("stage", "--data-dir", str(node))
        assert rc == PreflightError.exit_code and "cannot create the staging area" in err["message"], err
        # A staging area on the writable path to the same filesystem: same st_dev, but renames cannot cross
        # mounts, so it could never be promoted: refused before anything is written.
        rc, err = cli_json("stage", "--data-dir", str(node), "--staging-dir", str(real / "node.bluegreen"))
        assert rc == PreflightError.exit_code and "another mount" in err["message"], err
        assert manifest(node) == blue and sorted(os.listdir(real)) == ["node"]
    finally:
        subprocess.run(["umount", str(ro)], check=False)


def _write_state(staging: Path, doc: dict) -> None:
    staging.mkdir()
    (staging / "state.json").write_text(json.dumps(doc))


def test_state_file_of_another_format_is_refused_and_abort_clears_it(tmp_path: Path) -> None:
    node = fresh_node(tmp_path)
    staging = tmp_path / "node.bluegreen"
    blue = manifest(node)
    _write_state(staging, {"format": 99, "phase": "MIGRATED", "data_dir": str(node), "staging_dir": str(staging)})
    for cmd in ("stage", "promote", "status"):
        rc, err = cli_json(cmd, "--data-dir", str(node))
        assert rc == BadInputError.exit_code and "format 99" in err["message"] and "abort" in err["hint"], (cmd, err)
    rc, a = cli_json("abort", "--data-dir", str(node))
    assert rc == 0 and not staging.exists(), a
    rc, res = cli_json("stage", "--data-dir", str(node))
    assert rc == 0 and res["phase"] == "MIGRATED"
    assert manifest(node) == blue


def test_state_file_of_an_older_schema_is_refused_and_abort_clears_it(tmp_path: Path) -> None:
    node = fresh_node(tmp_path)
    staging = tmp_path / "node.bluegreen"
    _write_state(staging, {"format": 1, "phase": "STAGED", "source": str(node)})  # not our fields
    (staging / "green").mkdir()
    rc, err = cli_json("stage", "--data-dir", str(node))
    assert rc == BadInputError.exit_code and "unreadable" in err["message"], err
    rc, a = cli_json("abort", "--data-dir", str(node))
    assert rc == 0 and not staging.exists(), a
    rc, res = cli_json("stage", "--data-dir", str(node))
    assert rc == 0 and res["phase"] == "MIGRATED"


def test_unreadable_state_next_to_blue_previous_is_never_aborted(tmp_path: Path) -> None:
    node = fresh_node(tmp_path)
    staging = tmp_path / "node.bluegreen"
    _write_state(staging, {"format": 1, "phase": "??"})
    (staging / "blue-previous").mkdir()
    (staging / "blue-previous" / "byteball.sqlite").write_bytes(b"old data")
    rc, err = cli_json("abort", "--data-dir", str(node))
    assert rc == PreflightError.exit_code and "blue-previous" in err["message"], err
    assert (staging / "blue-previous" / "byteball.sqlite").read_bytes() == b"old data"


def test_stray_green_without_state_is_replaced_by_a_fresh_snapshot(tmp_path: Path) -> None:
    node = fresh_node(tmp_path)
    staging = tmp_path / "node.bluegreen"
    (staging / "green" / "rocksdb").mkdir(parents=True)
    (staging / "green" / "byteball.sqlite").write_bytes(b"left by an older run")
    (staging / "green" / "rocksdb" / "CURRENT").write_text("MANIFEST-000001\n")
    blue = manifest(node)
    rc, res = cli_json("stage", "--data-dir", str(node))
    assert rc == 0 and res["phase"] == "MIGRATED", res
    rc, v = cli_json("verify", "--data-dir", str(node))
    assert rc == 0 and v["passed"], v["message"]
    assert manifest(node) == blue


def test_two_upgrade_processes_at_once(tmp_path: Path) -> None:
    node = fresh_node(tmp_path)
    staging = tmp_path / "node.bluegreen"
    blue = manifest(node)
    # A real `upgrade stage`, frozen (SIGSTOP) while it holds the staging lock.
    first = spawn("stage", "--data-dir", str(node), "--json")
    try:
        deadline = time.monotonic() + 60
        while not is_locked(staging / "lock"):
            assert first.poll() is None, "stage finished before it could be caught holding the lock"
            assert time.monotonic() < deadline
            time.sleep(0.002)
        os.kill(first.pid, signal.SIGSTOP)
        for cmd in ("stage", "verify", "promote", "abort"):
            rc, err = cli_json(cmd, "--data-dir", str(node))
            assert rc == LockedError.exit_code and f"pid {first.pid}" in err["message"], (cmd, err)
        rc, st = cli_json("status", "--data-dir", str(node))
        assert rc == 0 and st["locked_by_pid"] == first.pid, st
        os.kill(first.pid, signal.SIGCONT)
        out, _ = first.communicate(timeout=120)
        assert first.returncode == 0 and json.loads(out)["phase"] == "MIGRATED"
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
            first.kill()
            first.wait()
    # Two started at the same instant: one stages, the other is locked out or finds the work done.
    node2 = fresh_node(tmp_path, "node2")
    a, b = spawn("stage", "--data-dir", str(node2), "--json"), spawn("stage", "--data-dir", str(node2), "--json")
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in (a, b)]
    codes = sorted([a.returncode, b.returncode])
    assert codes in ([0, 0], [0, LockedError.exit_code]), outs
    assert sum(1 for o in outs if o.get("phase") == "MIGRATED" and not o.get("noop")) == 1, outs
    rc, v = cli_json("verify", "--data-dir", str(node2))
    assert rc == 0 and v["passed"]
    assert manifest(node) == blue
    record(tmp_path, "two_processes", simultaneous_exit_codes=codes)
