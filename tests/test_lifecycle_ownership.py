"""Run as root on a data dir owned by the node's user: after promote and after rollback, every path has
blue's owner, group and mode (new paths: the data dir's owner/group; dirs its mode, files its mode
without execute bits), and a real process running as the node's user opens its own data."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from bluegreen.lifecycle.state import Phase
from bluegreen.nodecompat.probe import PROBE_JS
from test_lifecycle_support import make_node, run_cli

NODE_UID = NODE_GID = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")


def _owners(root: Path) -> dict[str, tuple[int, int, int]]:
    out = {".": _own(root)}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = Path(dirpath) / n
            out[str(p.relative_to(root))] = _own(p)
    return out


def _own(p: Path) -> tuple[int, int, int]:
    st = os.lstat(p)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def _node_owned(tmp_path: Path) -> Path:
    node = make_node(tmp_path)
    (node / "keys.json").write_text('{"mnemonic_phrase": "x"}')
    (node / "extra").mkdir()
    (node / "extra" / "notes.txt").write_text("n")
    for dirpath, dirs, files in os.walk(node):
        for n in [dirpath, *(os.path.join(dirpath, x) for x in dirs + files)]:
            os.lchown(n, NODE_UID, NODE_GID)
    os.chmod(node, 0o700)
    os.chmod(node / "keys.json", 0o600)
    os.chmod(node / "conf.json", 0o640)
    os.chmod(node / "byteball.sqlite", 0o660)
    os.chmod(node / "extra", 0o750)
    os.chmod(node / "extra" / "notes.txt", 0o604)
    return node


def _as_node_user(*cmd: str) -> subprocess.CompletedProcess[str]:
    """A real process running as the node's user (uid/gid 65534, no supplementary groups)."""
    def drop() -> None:
        os.setgroups([])
        os.setgid(NODE_GID)
        os.setuid(NODE_UID)
    return subprocess.run(list(cmd), preexec_fn=drop, capture_output=True, text=True, timeout=120, cwd="/")


def test_promote_and_rollback_keep_blues_owners_and_modes(tmp_path: Path, node_modules: Path) -> None:
    node = _node_owned(tmp_path)
    blue = _owners(node)
    for cmd in ("stage", "verify", "promote"):
        p = run_cli(cmd, "--data-dir", str(node))
        assert p.returncode == 0, (cmd, p.stdout, p.stderr)
    now = _owners(node)
    for rel, own in now.items():
        if rel in blue:
            assert own == blue[rel], rel
        else:  # new path: the data dir's owner/group; dir mode 700, files 600
            is_dir = (node / rel).is_dir()
            assert own == (NODE_UID, NODE_GID, 0o700 if is_dir else 0o600), rel
    assert "rocksdb" in now and now["rocksdb"] == (NODE_UID, NODE_GID, 0o700)
    assert now["keys.json"] == (NODE_UID, NODE_GID, 0o600)

    # The node's user opens its data for write (a copy: rollback must find green as promote left it).
    # pytest's tmp dirs are root-only (700): the copy goes to a dir the node's user can reach.
    outer = Path(tempfile.mkdtemp(prefix="bluegreen-own-"))
    os.chmod(outer, 0o755)
    copy = outer / "as-node"
    subprocess.run(["cp", "-a", str(node), str(copy)], check=True)
    # SQLite opened for write by the sqlite3 CLI, the KV dir by the node's own level-rocksdb (read-write;
    # --write-check also writes, compacts and re-opens it), both as the node's user.
    r = _as_node_user("sqlite3", str(copy / "byteball.sqlite"),
                      "CREATE TABLE owner_probe(x); INSERT INTO owner_probe VALUES (1); PRAGMA user_version;")
    assert r.returncode == 0 and r.stdout.strip() == "50", (r.stdout, r.stderr)  # default target
    r = _as_node_user("node", str(PROBE_JS), "--node-modules", str(node_modules), "--kv", str(copy / "rocksdb"),
                      "--write-check")
    assert r.returncode == 0 and '"t":"summary"' in r.stdout, (r.stdout, r.stderr)
    shutil.rmtree(outer)

    p = run_cli("rollback", "--data-dir", str(node))
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert _owners(node) == blue


def test_green_ownership_check_in_verify(tmp_path: Path) -> None:
    from bluegreen.lifecycle import command

    node = _node_owned(tmp_path)
    command.stage(node)
    green = tmp_path / "node.bluegreen" / "green"
    assert _own(green) == (NODE_UID, NODE_GID, 0o700)
    os.chmod(green / "keys.json", 0o644)  # something loosened a mode after stage
    v = command.verify(node)
    check = next(c for c in v.report.checks if c.name == command.CHECK_OWNERSHIP)  # type: ignore[union-attr]
    assert check.passed and "1 path" in check.detail and v.phase == Phase.VERIFIED
    assert _own(green / "keys.json") == (NODE_UID, NODE_GID, 0o600)


def test_stage_refuses_up_front_when_copies_cannot_keep_owners() -> None:
    """Not root (euid 65534, no capabilities), data dir owned by us but one file owned by root (readable):
    refused before anything is created, naming the file, the reason and the next step."""
    from bluegreen.errors import PreflightError
    from bluegreen.lifecycle import command

    base = Path(tempfile.mkdtemp(prefix="bluegreen-own-"))  # pytest's tmp dirs are root-only (mode 700)
    try:
        node = _node_owned(base)
        os.chmod(base, 0o777)
        os.lchown(node / "extra" / "notes.txt", 0, 0)
        groups = os.getgroups()
        os.setgroups([])
        os.setegid(NODE_GID)
        os.seteuid(NODE_UID)  # the kernel drops the effective capabilities with it
        try:
            with pytest.raises(PreflightError) as e:
                command.stage(node)
        finally:
            os.seteuid(0)
            os.setegid(0)
            os.setgroups(groups)
        assert "notes.txt" in e.value.message and "only root" in e.value.message and "sudo" in (e.value.hint or "")
        assert not (base / "node.bluegreen").exists()
    finally:
        shutil.rmtree(base)
