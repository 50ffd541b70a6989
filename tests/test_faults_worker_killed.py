"""A worker process killed mid-command (as the kernel's out-of-memory killer would) is named, with the next
step, and loses nothing: stage stays resumable from its last durable chunk, verify leaves promote gated.

Real CLI children, real worker processes, a real SIGKILL (the worker's own kill point)."""

from __future__ import annotations

from pathlib import Path

from bluegreen.engine.kvwriter import iter_kv
from faultkit import fresh_node, manifest, state_phase
from test_lifecycle_support import cli_json


def test_a_fill_worker_killed_mid_stage_is_named_and_the_next_stage_resumes_to_the_same_kv(tmp_path: Path) -> None:
    ref = fresh_node(tmp_path, "ref")
    rc, res = cli_json("stage", "--data-dir", str(ref), "--jobs", "1")
    assert rc == 0, res
    want = list(iter_kv(tmp_path / "ref.bluegreen" / "green" / "rocksdb"))

    node = fresh_node(tmp_path, "node")
    blue = manifest(node)
    # the first chunk a worker reads (resuming from a later durable chunk: tests/test_engine_jobs.py)
    rc, res = cli_json("stage", "--data-dir", str(node), "--jobs", "2",
                       env_extra={"BLUEGREEN_KILL_AT": "fillworker.after_read@1"})
    assert rc == 1 and res["error"] == "WorkerDied", res
    assert "worker" in res["message"] and "killed by signal 9" in res["message"]
    assert "--jobs 1" in res["hint"] and "dmesg" in res["hint"]
    assert state_phase(tmp_path / "node.bluegreen") == "MIGRATING"  # not FAILED: nothing is lost
    assert manifest(node) == blue

    rc, res = cli_json("stage", "--data-dir", str(node), "--jobs", "2")
    assert rc == 0 and res["phase"] == "MIGRATED", res
    assert list(iter_kv(tmp_path / "node.bluegreen" / "green" / "rocksdb")) == want


def test_a_verify_worker_killed_is_named_and_promote_stays_refused_until_a_verify_passes(tmp_path: Path) -> None:
    node = fresh_node(tmp_path, "node")
    rc, res = cli_json("stage", "--data-dir", str(node))
    assert rc == 0, res
    rc, res = cli_json("verify", "--data-dir", str(node), "--jobs", "2",
                       env_extra={"BLUEGREEN_KILL_AT": "verify_tasks.worker_task@3"})
    assert rc == 1 and res["error"] == "WorkerDied", res
    rc, res = cli_json("promote", "--data-dir", str(node), "--yes")
    assert rc != 0 and "verif" in res["message"], res
    rc, res = cli_json("verify", "--data-dir", str(node), "--jobs", "2")
    assert rc == 0 and res["passed"], res
