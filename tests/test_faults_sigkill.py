"""SIGKILL at random instants (seeded), not only at the named kill points: the real CLI runs stage, verify,
promote and rollback on a generated devnet node (600 units) and is killed after a delay drawn in each
slice of the command's measured duration (from half the CLI's bare start-up time to the end).

The promises: right after the kill, the data dir path holds exactly blue's files or exactly green's
(sha256 of every file vs the manifests recorded before); `upgrade status` then recovers whatever was in
flight, and re-running the interrupted command finishes the job with the right bytes in the right place.
A verify killed half-way never lets promote through; the next verify passes and promote then works.
Counts (kills tried, where they landed, files checksummed) go to <basetemp>/faults-summary.jsonl."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from bluegreen.lifecycle import command
from faultkit import (COUNTS, fresh_node, manifest, record, run_and_kill, spread, startup_seconds, state_phase,
                      timed_run)
from test_lifecycle_support import cli_json

SEED = 20240531
FALLBACK = {"BLUEGREEN_SWAP_MECHANISM": "fallback"}


def _args(cmd: str, node: Path) -> list[str]:
    return [cmd, "--data-dir", str(node), "--json"]


def test_stage_killed_at_random_instants_recovers_and_finishes(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    # The command's duration, measured on its own copy (the kill delays are spread over it).
    ref = fresh_node(tmp_path, "ref")
    duration, proc = timed_run(*_args("stage", ref))
    assert proc.returncode == 0, proc.stderr
    delays = spread(rng, 10, startup_seconds() / 2, duration * 1.05)
    landed: Counter[str] = Counter()
    for i, delay in enumerate(delays):
        node = fresh_node(tmp_path, f"n{i}")
        staging = tmp_path / f"n{i}.bluegreen"
        blue = manifest(node)
        rc = run_and_kill(_args("stage", node), delay)
        landed[state_phase(staging) if rc == -9 else f"finished rc={rc}"] += 1
        assert rc in (-9, 0), f"delay {delay}: stage exited {rc}"
        assert manifest(node) == blue, f"delay {delay}: blue changed after SIGKILL of stage"
        rc, st = cli_json("status", "--data-dir", str(node))
        assert rc == 0, st
        assert not (staging / "green.partial").exists(), f"delay {delay}: status left green.partial"
        assert st["phase"] in ("NONE", "FAILED", "SNAPSHOTTED", "MIGRATING", "MIGRATED"), st
        # Promote can never go through a half-staged green.
        if st["phase"] != "MIGRATED":
            rc, err = cli_json(*_args("promote", node)[:-1])
            assert rc == 3, err
        rc, res = cli_json(*_args("stage", node)[:-1])
        assert rc == 0 and res["phase"] == "MIGRATED", f"delay {delay}: {res}"
        assert manifest(node) == blue
        rc, v = cli_json(*_args("verify", node)[:-1])
        assert rc == 0 and v["passed"], f"delay {delay}: verify after recovered stage: {v.get('message')}"
    record(tmp_path, "stage_sigkill", duration_s=round(duration, 2), delays=delays, kills=len(delays),
           landed=dict(landed))


def test_stage_with_two_jobs_killed_at_random_instants_resumes_to_the_same_kv(tmp_path: Path) -> None:
    """`stage --jobs 2`: a SIGKILL of the main process mid-fill takes its workers with it (none outlives it)
    and the re-run ends with the same KV, key for key, as an uninterrupted one-process stage."""
    from bluegreen.engine.kvwriter import iter_kv
    from test_engine_jobs import _wait_no_workers

    rng = random.Random(SEED + 4)
    ref = fresh_node(tmp_path, "ref")
    command.stage(ref, jobs=1)
    want = list(iter_kv(tmp_path / "ref.bluegreen" / "green" / "rocksdb"))
    timing = fresh_node(tmp_path, "timing")
    duration, proc = timed_run(*_args("stage", timing), "--jobs", "2")
    assert proc.returncode == 0, proc.stderr
    delays = spread(rng, 4, startup_seconds() / 2, duration * 1.05)
    landed: Counter[str] = Counter()
    for i, delay in enumerate(delays):
        node = fresh_node(tmp_path, f"n{i}")
        staging = tmp_path / f"n{i}.bluegreen"
        blue = manifest(node)
        tag = f"sigkill-jobs2-{SEED}-{i}"
        rc = run_and_kill([*_args("stage", node), "--jobs", "2"], delay, env_extra={"BLUEGREEN_TEST_TAG": tag})
        landed[state_phase(staging) if rc == -9 else f"finished rc={rc}"] += 1
        assert rc in (-9, 0), f"delay {delay}: stage exited {rc}"
        assert _wait_no_workers(tag) == [], f"delay {delay}: workers outlived the killed stage"
        assert manifest(node) == blue, f"delay {delay}: blue changed after SIGKILL of stage"
        rc, res = cli_json(*_args("stage", node)[:-1], "--jobs", "2")
        assert rc == 0 and res["phase"] == "MIGRATED", f"delay {delay}: {res}"
        assert list(iter_kv(staging / "green" / "rocksdb")) == want, f"delay {delay}: KV differs"
    record(tmp_path, "stage_jobs2_sigkill", duration_s=round(duration, 2), delays=delays, kills=len(delays),
           landed=dict(landed))


def test_verify_killed_at_random_instants_keeps_promote_gated(tmp_path: Path) -> None:
    rng = random.Random(SEED + 1)
    ref = fresh_node(tmp_path, "ref")
    command.stage(ref)
    duration, proc = timed_run(*_args("verify", ref))
    assert proc.returncode == 0, proc.stderr
    delays = spread(rng, 4, startup_seconds() / 2, duration * 1.05)
    landed: Counter[str] = Counter()
    for i, delay in enumerate(delays):
        node = fresh_node(tmp_path, f"n{i}")
        command.stage(node)
        blue = manifest(node)
        rc = run_and_kill(_args("verify", node), delay)
        landed["killed" if rc == -9 else f"finished rc={rc}"] += 1
        assert rc in (-9, 0), f"delay {delay}: verify exited {rc}"
        assert manifest(node) == blue
        rc, st = cli_json("status", "--data-dir", str(node))
        assert rc == 0 and st["phase"] in ("MIGRATED", "VERIFIED"), st
        if st["phase"] == "MIGRATED":
            rc, err = cli_json(*_args("promote", node)[:-1])
            assert rc == 3 and "verif" in (err["message"] + err["hint"]), err
            assert manifest(node) == blue
        rc, v = cli_json(*_args("verify", node)[:-1])
        assert rc == 0 and v["passed"], v.get("message")
        green = manifest(tmp_path / f"n{i}.bluegreen" / "green")
        rc, p = cli_json(*_args("promote", node)[:-1])
        assert rc == 0 and p["phase"] == "PROMOTED", p
        assert manifest(node) == green
        assert manifest(tmp_path / f"n{i}.bluegreen" / "blue-previous") == blue
    record(tmp_path, "verify_sigkill", duration_s=round(duration, 2), delays=delays, kills=len(delays),
           landed=dict(landed))


def _swap_chain(tmp_path: Path, env: dict[str, str], kills: int, seed: int) -> dict[str, object]:
    """One staged+verified node; promote and rollback alternately killed at random instants, each time
    recovered by `status` and then finished by re-running the same command."""
    rng = random.Random(seed)
    node = fresh_node(tmp_path)
    staging = tmp_path / "node.bluegreen"
    command.stage(node)
    assert command.verify(node).passed
    blue, green = manifest(node), manifest(staging / "green")
    # Durations of both commands, measured on this node (promote, then rollback back to the start).
    d_promote, p = timed_run(*_args("promote", node), env_extra=env)
    assert p.returncode == 0, p.stderr
    d_rollback, r = timed_run(*_args("rollback", node), env_extra=env)
    assert r.returncode == 0, r.stderr
    assert manifest(node) == blue
    exchange = not env
    landed: Counter[str] = Counter()
    t0 = startup_seconds() / 2
    delays = {"promote": spread(rng, kills, t0, d_promote * 1.05),
              "rollback": spread(rng, kills, t0, d_rollback * 1.05)}
    for k in range(kills):
        # An undone promote lands in VERIFIED (the phase it is promotable from), an undone rollback in PROMOTED.
        for op, before, after, done_phase, undone_phases in (
                ("promote", blue, green, "PROMOTED", ("ROLLED_BACK", "VERIFIED")),
                ("rollback", green, blue, "ROLLED_BACK", ("PROMOTED",))):
            delay = delays[op][k]
            rc = run_and_kill(_args(op, node), delay, env_extra=env)
            assert rc in (-9, 0), f"{op} delay {delay}: exit {rc}"
            landed[f"{op}:{state_phase(staging) if rc == -9 else 'finished'}"] += 1
            if exchange:  # one atomic exchange: no instant shows a mix
                now = manifest(node)
                assert now in (before, after), f"{op} killed after {delay}s: data dir is neither blue nor green"
            rc, st = cli_json("status", "--data-dir", str(node), env_extra=env)
            assert rc == 0, st
            assert st["phase"] in (done_phase, *undone_phases), f"{op} delay {delay}: {st['phase']}"
            assert manifest(node) == (after if st["phase"] == done_phase else before), f"{op} delay {delay}"
            rc, res = cli_json(op, "--data-dir", str(node), env_extra=env)
            assert rc == 0 and res["phase"] == done_phase, res
            assert manifest(node) == after
            assert manifest(staging / ("blue-previous" if op == "promote" else "green")) == before
    return {"durations_s": {"promote": round(d_promote, 2), "rollback": round(d_rollback, 2)},
            "delays": delays, "kills": 2 * kills, "landed": dict(landed)}


def test_promote_and_rollback_killed_at_random_instants_exchange(tmp_path: Path) -> None:
    facts = _swap_chain(tmp_path, {}, kills=6, seed=SEED + 2)
    record(tmp_path, "promote_rollback_sigkill_exchange", **facts)


def test_promote_and_rollback_killed_at_random_instants_fallback(tmp_path: Path) -> None:
    """The journaled fallback has mixed instants; after `status` the path holds one side entirely."""
    facts = _swap_chain(tmp_path, FALLBACK, kills=3, seed=SEED + 3)
    record(tmp_path, "promote_rollback_sigkill_fallback", **facts, total_files_checksummed=COUNTS["files_checksummed"])
