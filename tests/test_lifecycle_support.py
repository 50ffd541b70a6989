"""Helpers shared by the lifecycle and CLI tests: tree hashes, node dirs, CLI runs, lock-holding children.

Real files and real processes only: a "running node" is a child process that really holds an fcntl
lock or an open handle."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw

from conftest import DEVNET_V29, REPO, writable_copy

PY = sys.executable


def tree_hash(root: Path) -> dict[str, str]:
    """sha256 of every file under root (relative path -> hex), SQLite -shm excluded (never data)."""
    out: dict[str, str] = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            rel = str(p.relative_to(root))
            if rel.endswith("-shm") or p.is_symlink():
                continue
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def make_node(tmp: Path, name: str = "node") -> Path:
    """A writable version-29 devnet node dir (the real fixture, minus the test-only expected-kv file)."""
    d = writable_copy(DEVNET_V29, tmp / name)
    (d / "expected-kv.jsonl").unlink()
    return d


def run_cli(*args: str, env_extra: dict[str, str] | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run `python -m bluegreen <args>` in a real child process."""
    env = dict(os.environ)
    env.pop("BLUEGREEN_KILL_AT", None)
    env.update(env_extra or {})
    proc = subprocess.run([PY, "-m", "bluegreen", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def cli_json(*args: str, **kw: object) -> tuple[int, dict]:
    """Run with --json and parse the document."""
    proc = run_cli(*args, "--json", **kw)  # type: ignore[arg-type]
    return proc.returncode, json.loads(proc.stdout)


_HOLD = r"""
import fcntl, os, sys, time, sqlite3
path, how = sys.argv[1], sys.argv[2]
if how == "fcntl":
    f = open(path, "r+b")
    fcntl.lockf(f, fcntl.LOCK_EX)
elif how == "sqlite-open":
    c = sqlite3.connect(path)
    c.execute("select count(*) from sqlite_master").fetchall()
elif how == "sqlite-write-lock":
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("BEGIN IMMEDIATE")
print("holding", flush=True)
time.sleep(600)
"""


@contextmanager
def holding(path: Path, how: str) -> Iterator[int]:
    """A child process that holds `path` (fcntl lock, open SQLite handle, or SQLite write lock) until exit."""
    child = subprocess.Popen([PY, "-c", _HOLD, str(path), how], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "holding"
        yield child.pid
    finally:
        child.kill()
        child.wait()


def rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Every row of a read-only query on a SQLite file."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return list(conn.execute(sql, args))
    finally:
        conn.close()


def one(db: Path, sql: str, *args: Any) -> Any:
    """The first column of the first row of a read-only query."""
    return rows(db, sql, *args)[0][0]
