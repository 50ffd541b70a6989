"""Disk full, on a real small tmpfs (root): the copy fits but the migration's growth does not.

Two ways to get there: (1) the filesystem is too small for stage's estimate from the start: stage
refuses before writing anything, naming the space needed; after a remount with more room it succeeds.
(2) the room goes away after the copy was made (another program fills the disk while stage runs; here:
stage is SIGKILLed after its snapshot, a filler file takes all but a little space, stage is re-run):
the migration hits ENOSPC in the KV fill or in SQLite, and must say so with OutOfSpaceError (exit 10),
keep blue untouched, leave the staging area resumable, and finish after space is freed."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from bluegreen.errors import OutOfSpaceError
from faultkit import fill, fresh_node, manifest, record, sh, tmpfs
from test_lifecycle_support import cli_json, run_cli

MiB = 1 << 20


def _du(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_too_small_for_the_migration_refuses_before_copying_then_works_after_remount(tmp_path: Path) -> None:
    src = fresh_node(tmp_path, "src")
    size = _du(src)
    # Room for blue and its copy, but not for the KV growth and margin stage budgets.
    with tmpfs(tmp_path / "fs", 2 * size + 4 * MiB) as fs:
        node = fs / "node"
        subprocess.run(["cp", "-a", str(src), str(node)], check=True)
        blue = manifest(node)
        rc, err = cli_json("stage", "--data-dir", str(node))
        assert rc == OutOfSpaceError.exit_code and err["error"] == "OutOfSpaceError", err
        assert "not enough space" in err["message"] and "needs about" in err["message"] and "MiB" in err["hint"]
        assert manifest(node) == blue
        assert not (fs / "node.bluegreen").exists()  # nothing written before the check
        sh("mount", "-o", f"remount,size={2 * size + 100 * MiB}", str(fs))
        rc, res = cli_json("stage", "--data-dir", str(node))
        assert rc == 0 and res["phase"] == "MIGRATED", res
        assert manifest(node) == blue
    record(tmp_path, "disk_full_precheck", blue_bytes=size)


@pytest.mark.parametrize("leave_free_kib", [256, 16])
def test_disk_filled_during_migration_is_out_of_space_and_resumable(tmp_path: Path, leave_free_kib: int) -> None:
    src = fresh_node(tmp_path, "src")
    size = _du(src)
    with tmpfs(tmp_path / "fs", 2 * size + 80 * MiB) as fs:
        node = fs / "node"
        subprocess.run(["cp", "-a", str(src), str(node)], check=True)
        staging = fs / "node.bluegreen"
        blue = manifest(node)
        proc = run_cli("stage", "--data-dir", str(node), env_extra={"BLUEGREEN_KILL_AT": "stage.before_migration"})
        assert proc.returncode == -9, proc.stderr
        assert (staging / "green" / "byteball.sqlite").exists()  # the copy fitted
        filler = fill(fs, leave_free_kib * 1024)
        rc, err = cli_json("stage", "--data-dir", str(node))
        assert rc == OutOfSpaceError.exit_code and err["error"] == "OutOfSpaceError", err
        assert "filled up while migrating" in err["message"] and "needs about" in err["message"], err["message"]
        assert "MiB" in err["hint"] and "upgrade stage" in err["hint"]
        assert manifest(node) == blue
        rc, st = cli_json("status", "--data-dir", str(node))
        assert rc == 0 and st["phase"] in ("MIGRATING", "SNAPSHOTTED"), st  # resumable, not promotable
        rc, p = cli_json("promote", "--data-dir", str(node))
        assert rc == 3, p
        filler.unlink()  # the operator frees space
        rc, res = cli_json("stage", "--data-dir", str(node))
        assert rc == 0 and res["phase"] == "MIGRATED", res
        rc, v = cli_json("verify", "--data-dir", str(node))
        assert rc == 0 and v["passed"], v["message"]
        assert manifest(node) == blue
    record(tmp_path, f"disk_full_mid_migration_{leave_free_kib}k", error=err["message"][:200])


def _online_staged_with_tail(fs: Path, src: Path) -> tuple[Path, Path]:
    """A node on the small filesystem, staged online and verified, then 40 more units written to blue."""
    from bluegreen.generator.extend import extend_node_dir
    from bluegreen.lifecycle import command

    node = fs / "node"
    subprocess.run(["cp", "-a", str(src), str(node)], check=True)
    command.stage(node, online=True, target_version=31)
    assert command.verify(node).passed
    extend_node_dir(node, units=40, seed=1)
    return node, fs / "node.bluegreen"


def test_catch_up_without_room_refuses_before_building_then_catches_up(tmp_path: Path) -> None:
    src = fresh_node(tmp_path, "src")
    size = _du(src)
    with tmpfs(tmp_path / "fs", 6 * size + 120 * MiB) as fs:
        node, staging = _online_staged_with_tail(fs, src)
        sql = (node / "byteball.sqlite").stat().st_size
        green, blue = manifest(staging / "green"), manifest(node)
        # room for one copy of blue's SQLite and a bit, not for the two a catch-up makes plus its margin
        filler = fill(fs, sql + 2 * MiB)
        rc, err = cli_json("catch-up", "--data-dir", str(node))
        assert rc == OutOfSpaceError.exit_code and err["error"] == "OutOfSpaceError", err
        assert "not enough space" in err["message"] and "needs about" in err["message"], err["message"]
        assert "MiB" in err["hint"] and str(staging) in err["hint"] and "catch-up" in err["hint"], err["hint"]
        assert not (staging / "work" / "catchup").exists()  # nothing built before the check
        assert manifest(staging / "green") == green and manifest(node) == blue
        # promote's last catch-up makes the same check before anything is swapped
        rc, err = cli_json("promote", "--data-dir", str(node), "--yes")
        assert rc == OutOfSpaceError.exit_code and "not enough space" in err["message"], err
        assert manifest(staging / "green") == green and manifest(node) == blue
        filler.unlink()  # the operator frees space
        rc, res = cli_json("catch-up", "--data-dir", str(node))
        assert rc == 0 and not res["noop"] and res["stats"]["joints_rebuilt"] >= 40, res
    record(tmp_path, "disk_full_catch_up_precheck", blue_sqlite_bytes=sql)


def test_disk_filled_during_a_catch_up_discards_the_build(tmp_path: Path) -> None:
    """The room goes away after the check passed (another program fills the disk while the catch-up builds):
    OutOfSpaceError, the half build removed at once, green and blue unchanged; later it works."""
    import threading

    from bluegreen.lifecycle import command

    src = fresh_node(tmp_path, "src")
    size = _du(src)
    with tmpfs(tmp_path / "fs", 6 * size + 120 * MiB) as fs:
        node, staging = _online_staged_with_tail(fs, src)
        green, blue = manifest(staging / "green"), manifest(node)
        build = staging / "work" / "catchup"
        fillers: list[Path] = []

        def filler() -> None:  # as soon as the build starts, take all but 64 KiB
            deadline = time.monotonic() + 60
            while not build.exists() and time.monotonic() < deadline:
                time.sleep(0.0005)
            leave = 64 * 1024
            while True:  # the build writes meanwhile: the free space may shrink under fallocate
                try:
                    fillers.append(fill(fs, leave))
                    return
                except OSError:
                    (fs / "filler").unlink(missing_ok=True)
                    leave *= 2

        t = threading.Thread(target=filler)
        t.start()
        try:
            with pytest.raises(OutOfSpaceError) as ei:
                command.catch_up(node)
        finally:
            t.join()
        assert "filled up" in ei.value.message and ei.value.hint and "MiB" in ei.value.hint, ei.value
        assert not build.exists()  # the half build is gone, its space given back
        assert manifest(staging / "green") == green
        # the online snapshot's read may leave an empty -wal/-shm beside blue's database (as the node's own does)
        empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        now = manifest(node)
        assert {k: v for k, v in now.items() if not (k.startswith("byteball.sqlite-") and v == empty)} == blue
        fillers[0].unlink()
        res = command.catch_up(node)
        assert res.stats is not None and res.stats.joints_rebuilt >= 40
    record(tmp_path, "disk_full_mid_catch_up", error=ei.value.message[:200])
