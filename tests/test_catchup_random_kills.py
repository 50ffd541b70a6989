"""SIGKILL at random instants of `catch-up` and of promote's catch-up (the row patch): the data dir is blue or a
complete green, never a mix; green is its old self or the caught-up one (a started patch is finished by the
next command); the next command recovers, and the end result is a fresh migration's, byte for byte.

Each kill is timed at a seeded random fraction of the same command's uninterrupted duration from the moment its
catch-up build appears, measured on a twin node. Where it landed is read back from the disk (no catch-up dir / a build without journal / a journal / the
swap done) and the test asserts the kills spread over those stages: the faults land where it claims."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bluegreen.generator import generate_node_dir
from bluegreen.generator.extend import extend_node_dir
from bluegreen.lifecycle import command
from bluegreen.lifecycle.state import Phase, StateStore
from test_catchup import REPO, _db_fingerprint, _oracle, _rows, assert_same_as_oracle

pytestmark = pytest.mark.slow


def _staged(root: Path, seed: int) -> Path:
    g = generate_node_dir(root / "node", units=400, version=28, seed=seed)
    command.stage(g.out, online=True, target_version=31)
    assert command.verify(g.out).passed
    extend_node_dir(g.out, units=150, seed=seed + 1)
    return g.out


def _run(args: list[str]) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "BLUEGREEN_KILL_AT"}
    extra = ["--yes"] if args[0] == "promote" else []
    return subprocess.Popen([sys.executable, "-m", "bluegreen", *args, "--json", *extra], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _duration(root: Path, cmd: str) -> float:
    """How long the command runs from the moment its catch-up build appears (`work/catchup/`) to its end."""
    node = _staged(root, seed=900)
    proc = _run([cmd, "--data-dir", str(node)])
    t0 = _wait_for_build(node, proc)
    assert proc.wait(timeout=600) == 0
    return time.monotonic() - t0


def _wait_for_build(node: Path, proc: subprocess.Popen[bytes]) -> float:
    cu = node.parent / "node.bluegreen" / "work" / "catchup"
    while not cu.exists():
        assert proc.poll() is None, "the command ended before its catch-up began"
        time.sleep(0.0005)
    return time.monotonic()


def _landed(node: Path) -> str:
    """Where the kill landed, read from the disk."""
    staging = node.parent / "node.bluegreen"
    cu = staging / "work" / "catchup"
    state = StateStore(staging).load()
    if state is not None and state.phase in (Phase.PROMOTING, Phase.PROMOTED):
        return "swap"
    if (cu / "journal.json").exists():
        return "journal written"
    if cu.exists():
        return "building"
    return "before or after the catch-up"


@pytest.mark.parametrize("cmd", ["catch-up", "promote"])
def test_random_sigkills_leave_blue_or_a_complete_green_and_recover(tmp_path: Path, cmd: str) -> None:
    full = _duration(tmp_path / "timing", cmd)
    rng = random.Random(4242)
    landed: dict[str, int] = {}
    for i in range(8):
        root = tmp_path / f"k{i}"
        node = _staged(root, seed=100 + i)
        staging = root / "node.bluegreen"
        blue_before = _db_fingerprint(node / "byteball.sqlite")
        oracle = _oracle(node / "byteball.sqlite", root / "oracle", 31)  # blue is final: the node is "stopped"
        proc = _run([cmd, "--data-dir", str(node)])
        _wait_for_build(node, proc)  # then a random instant of the rest (the twin's duration)
        time.sleep(full * rng.uniform(0.0, 1.0))
        proc.send_signal(signal.SIGKILL)
        rc = proc.wait(timeout=60)
        where = _landed(node) if rc == -9 else "finished first"
        landed[where] = landed.get(where, 0) + 1
        # blue is never written; the data dir is blue, or (promote's swap done) the complete green
        if _rows(node / "byteball.sqlite", "PRAGMA user_version")[0][0] == 31:
            assert where in ("swap", "finished first"), where
            assert_same_as_oracle(node, oracle)
        else:
            assert _db_fingerprint(node / "byteball.sqlite") == blue_before
            assert not (node / "rocksdb").exists()
        # the next command recovers (finishing or discarding the catch-up) and completes the work
        if cmd == "catch-up":
            command.catch_up(node)
        p = command.promote(node)
        assert p.phase == Phase.PROMOTED
        assert_same_as_oracle(node, oracle)
    # the kills really landed inside the command (most of its time is the build; the named kill points of
    # test_catchup.py cover the short stretches after the journal one by one)
    inside = {k: v for k, v in landed.items() if k != "finished first"}
    assert sum(inside.values()) >= 5, landed
    assert "building" in inside, landed
