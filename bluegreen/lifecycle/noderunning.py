"""Is the node (or anything else) using the data dir? Answered without touching live files.

Two independent probes: a POSIX lock test (F_GETLK) on `rocksdb/LOCK`, the SQLite file and its
-shm (RocksDB and SQLite both take fcntl locks; F_GETLK only asks, it never takes a lock), and a
scan of `/proc/*/fd` for open handles on any file of the dir. Files are opened O_RDONLY and only
if they exist (never created). Locks held by this very process are invisible to F_GETLK by POSIX
design, which is fine: we never lock live files ourselves."""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

from pydantic import BaseModel, Field

from bluegreen.errors import NodeRunningError
from bluegreen.lifecycle.fingerprint import DB_NAMES
from bluegreen.ocore_facts import KV_DIR_NAME

# struct flock on Linux (x86-64 and aarch64): short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid
_FLOCK = "hhqqi4x"


class Holder(BaseModel):
    """One sign of use: a lock or an open handle."""

    kind: str  # "lock" or "open"
    path: str
    pid: int | None = None
    command: str = ""


class NodeUsage(BaseModel):
    """Everything found; `running` is true when anything holds or opens the dir's database files."""

    running: bool
    holders: list[Holder] = Field(default_factory=list)
    unreadable_procs: int = 0

    def describe(self) -> str:
        """Operator text, one holder per line."""
        return "\n".join(f"    {h.kind} on {h.path} by pid {h.pid} {h.command}".rstrip() for h in self.holders)


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()[:200]


def lock_holder(path: Path) -> int | None:
    """Pid holding any POSIX lock on `path` (None if unlocked or absent). Opens O_RDONLY, never creates."""
    try:
        fd = os.open(str(path), os.O_RDONLY | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        probe = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)  # l_len 0 = whole file
        res = fcntl.fcntl(fd, fcntl.F_GETLK, probe)
    finally:
        os.close(fd)
    l_type, _, _, _, l_pid = struct.unpack(_FLOCK, res)
    if l_type == fcntl.F_UNLCK:
        return None
    return l_pid if l_pid > 0 else -1  # -1: an OFD lock (no owning pid)


def lock_probe_paths(data_dir: Path) -> list[Path]:
    """The files whose locks mean 'a node is running'."""
    paths = [data_dir / KV_DIR_NAME / "LOCK"]
    for name in DB_NAMES:
        paths += [data_dir / name, data_dir / f"{name}-shm"]
    return paths


def open_handles(data_dir: Path, exclude: frozenset[str] = frozenset()) -> tuple[list[Holder], int]:
    """Open handles of other processes on files inside `data_dir` (and count of /proc entries we could not read)."""
    root = os.path.realpath(data_dir)
    skip = {os.path.join(root, e) for e in exclude}
    me = os.getpid()
    found: list[Holder] = []
    unreadable = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            fds = os.listdir(f"/proc/{entry.name}/fd")
        except (PermissionError, FileNotFoundError, ProcessLookupError):
            unreadable += 1
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{entry.name}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(root + os.sep) and not any(target.startswith(s) for s in skip):
                found.append(Holder(kind="open", path=target, pid=int(entry.name), command=_cmdline(int(entry.name))))
    return found, unreadable


def detect(data_dir: Path, exclude: frozenset[str] = frozenset()) -> NodeUsage:
    """Probe locks and open handles on `data_dir` without writing anything."""
    holders: list[Holder] = []
    for path in lock_probe_paths(data_dir):
        pid = lock_holder(path)
        if pid is not None:
            holders.append(Holder(kind="lock", path=str(path), pid=pid, command=_cmdline(pid) if pid > 0 else ""))
    handles, unreadable = open_handles(data_dir, exclude)
    holders += handles
    return NodeUsage(running=bool(holders), holders=holders, unreadable_procs=unreadable)


def ensure_stopped(data_dir: Path, exclude: frozenset[str] = frozenset()) -> NodeUsage:
    """Raise NodeRunningError listing the holders when anything uses the data dir."""
    usage = detect(data_dir, exclude)
    if usage.running:
        raise NodeRunningError(
            f"the data dir {data_dir} is in use (a node is running?):\n{usage.describe()}",
            "stop the node (and any tool holding these files), then re-run",
        )
    return usage
