"""Disk full, on a real small tmpfs (root): the copy fits but the migration's growth does not.

Two ways to get there: (1) the filesystem is too small for stage's estimate from the start: stage
refuses before writing anything, naming the space needed; after a remount with more room it succeeds.
(2) the room goes away after the copy was made (another program fills the disk while stage runs; here:
stage is SIGKILLed after its snapshot, a filler file takes all but a little space, stage is re-run):
the migration hits ENOSPC in the KV fill or in SQLite, and must say so with OutOfSpaceError (exit 10),
keep blue untouched, leave the staging area resumable, and finish after space is freed."""

from __future__ import annotations

import subprocess
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
