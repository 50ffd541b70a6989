"""Owner, group and mode of the data dir and everything in it: record blue's, apply them to a tree,
check a tree against them, and say up front whether this process can.

Run as root (`sudo upgrade ...`), every copy we make is root-owned; the node, running as its own user,
could then not open its own data. So green gets blue's owner/group/mode path by path before it goes
live. Paths blue does not have (rocksdb/ and the files the migration creates, a new SQLite -wal) get
the data dir's owner and group; dirs get the data dir's mode, files the data dir's mode without
execute and special bits (`mode & 0o666`: a 700 dir gives 600 files, 755 gives 644).

O(paths): lstat, lchown, chmod only (never follows symlinks, never reads content). chown/chmod are
inode metadata; rather than fsync every file we call syncfs() once on the tree's filesystem after
changing anything, so the changes are on disk before the swap that makes them live."""

from __future__ import annotations

import ctypes
import os
import stat
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field

from bluegreen.durable import atomic_write_json
from bluegreen.errors import PreflightError
from bluegreen.lifecycle.verify_models import VerifyCheck

RECORD_NAME = "blue-ownership.json"
STEP_OWNERSHIP = "ownership"
PROGRESS_EVERY = 500  # paths between two progress calls
CAP_CHOWN, CAP_DAC_READ_SEARCH, CAP_FOWNER = 0, 2, 3
FIRST = 10


class Owner(BaseModel):
    """Owner, group and permission bits (S_IMODE) of one path."""

    uid: int
    gid: int
    mode: int


class OwnershipMap(BaseModel):
    """Blue's ownership: the data dir itself (`root`) and every path in it (relative, '/'-separated)."""

    root: Owner
    entries: dict[str, Owner] = Field(default_factory=dict)

    def wanted(self, rel: str, is_dir: bool) -> Owner:
        """What `rel` must have: blue's own, else the data dir's rule (see module doc)."""
        if rel == "":
            return self.root
        got = self.entries.get(rel)
        if got is not None:
            return got
        mode = self.root.mode & 0o7777 if is_dir else self.root.mode & 0o666
        return Owner(uid=self.root.uid, gid=self.root.gid, mode=mode)


class Change(BaseModel):
    """One path whose owner/group/mode differ from what it must have."""

    rel: str
    current: Owner
    wanted: Owner
    is_link: bool = False


def _owner(st: os.stat_result) -> Owner:
    return Owner(uid=st.st_uid, gid=st.st_gid, mode=stat.S_IMODE(st.st_mode))


def _walk(root: Path, exclude: frozenset[str]):  # type: ignore[no-untyped-def]
    """(rel, lstat) of root ('') and of every path under it; never follows symlinks."""
    yield "", os.lstat(root)
    stack = [("", str(root))]
    while stack:
        rel_dir, path = stack.pop()
        with os.scandir(path) as it:
            for e in it:
                if rel_dir == "" and e.name in exclude:
                    continue
                rel = e.name if rel_dir == "" else f"{rel_dir}/{e.name}"
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:  # a running node's transient file (a -journal) went away meanwhile
                    continue
                yield rel, st
                if stat.S_ISDIR(st.st_mode):
                    stack.append((rel, e.path))


def record(root: Path, exclude: frozenset[str] = frozenset()) -> OwnershipMap:
    """Blue's ownership map (lstat only)."""
    m: OwnershipMap | None = None
    entries: dict[str, Owner] = {}
    for rel, st in _walk(root, exclude):
        if rel == "":
            m = OwnershipMap(root=_owner(st))
        else:
            entries[rel] = _owner(st)
    assert m is not None
    m.entries = entries
    return m


def plan(tree: Path, m: OwnershipMap, exclude: frozenset[str] = frozenset()) -> list[Change]:
    """Every path of `tree` (itself included) whose ownership differs from `m`'s."""
    out: list[Change] = []
    for rel, st in _walk(tree, exclude):
        is_link = stat.S_ISLNK(st.st_mode)
        cur = _owner(st)
        want = m.wanted(rel, stat.S_ISDIR(st.st_mode))
        if is_link:  # a symlink has no mode of its own on Linux
            want = want.model_copy(update={"mode": cur.mode})
        if cur != want:
            out.append(Change(rel=rel, current=cur, wanted=want, is_link=is_link))
    return out


def _caps() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return ~0 if os.geteuid() == 0 else 0


def _has(caps: int, cap: int) -> bool:
    return bool(caps >> cap & 1)


def why_not(current: Owner, wanted: Owner, caps: int | None = None) -> str | None:
    """Why this process cannot turn `current` into `wanted` (None when it can)."""
    caps = _caps() if caps is None else caps
    euid, groups = os.geteuid(), set(os.getgroups()) | {os.getegid()}
    if current.uid != euid and not _has(caps, CAP_FOWNER) and current != wanted:
        return f"it is owned by uid {current.uid}, not by us (uid {euid})"
    if wanted.uid != current.uid and not _has(caps, CAP_CHOWN):
        return f"it must be owned by uid {wanted.uid}, and only root can give a file to another user"
    if wanted.gid != current.gid and not _has(caps, CAP_CHOWN) and wanted.gid not in groups:
        return f"it must have group {wanted.gid}, which we (uid {euid}) are not a member of"
    return None


HINT = ("run the upgrade as root (`sudo upgrade ...`), or as the data dir's owner with every file in it owned by "
        "that user (`sudo -u <node user> upgrade ...`)")


def _refuse(what: str, problems: list[str]) -> PreflightError:
    more = f"\n    ... and {len(problems) - FIRST} more" if len(problems) > FIRST else ""
    return PreflightError(f"{what}:\n    " + "\n    ".join(problems[:FIRST]) + more, HINT)


def preflight_blue(root: Path, exclude: frozenset[str] = frozenset()) -> OwnershipMap:
    """Before copying anything: every path of blue readable by us, and our copies able to carry its owner.
    Raises PreflightError naming the paths; returns blue's map."""
    caps = _caps()
    mine = Owner(uid=os.geteuid(), gid=os.getegid(), mode=0)
    problems: list[str] = []
    m = record(root, exclude)
    for rel, own in [("", m.root), *m.entries.items()]:
        p = root / rel if rel else root
        is_dir = p.is_dir() and not p.is_symlink()
        if not p.is_symlink():
            need = os.R_OK | (os.X_OK if is_dir else 0)
            if not os.access(p, need, effective_ids=os.access in os.supports_effective_ids) and os.path.lexists(p):
                problems.append(f"{p}: not readable by us (uid {mine.uid}; owner {own.uid}, mode {oct(own.mode)})")
                continue
        reason = why_not(mine, own.model_copy(update={"mode": 0}), caps)
        if reason:
            problems.append(f"{p}: our copy could not keep its owner/group ({own.uid}:{own.gid}): {reason}")
    if problems:
        raise _refuse(f"cannot copy {root} keeping every owner, group and mode; nothing was created", problems)
    return m


def ensure_can_apply(tree: Path, m: OwnershipMap, exclude: frozenset[str] = frozenset()) -> list[Change]:
    """The changes `apply` would make; PreflightError (nothing changed) if any cannot be made by us."""
    changes = plan(tree, m, exclude)
    caps = _caps()
    problems = [f"{tree / c.rel if c.rel else tree}: {r}" for c in changes if (r := why_not(c.current, c.wanted, caps))]
    if problems:
        raise _refuse(f"cannot give {tree} the data dir's owners, groups and modes", problems)
    return changes


def _syncfs(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if getattr(libc, "syncfs", None) is None or libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def apply(tree: Path, m: OwnershipMap, exclude: frozenset[str] = frozenset(),
          progress: Callable[[str, int, int], None] | None = None) -> int:
    """Give every path of `tree` its owner/group/mode from `m` (refusing first if we cannot); returns how many
    paths changed. chown before chmod: chown clears setuid/setgid bits. progress("ownership", paths done, paths
    to change)."""
    changes = ensure_can_apply(tree, m, exclude)
    for i, c in enumerate(changes):
        if progress and i % PROGRESS_EVERY == 0:
            progress(STEP_OWNERSHIP, i, len(changes))
        p = tree / c.rel if c.rel else tree
        if (c.current.uid, c.current.gid) != (c.wanted.uid, c.wanted.gid):
            os.lchown(p, c.wanted.uid, c.wanted.gid)
        if not c.is_link:
            os.chmod(p, c.wanted.mode)
    if changes:
        _syncfs(tree)
    if progress:
        progress(STEP_OWNERSHIP, len(changes), len(changes))
    return len(changes)


def save(m: OwnershipMap, path: Path) -> None:
    """Persist blue's map (promote keeps it for rollback)."""
    atomic_write_json(path, m.model_dump(mode="json"))


def load(path: Path) -> OwnershipMap | None:
    """The map saved at promote, if any."""
    if not path.exists():
        return None
    return OwnershipMap.model_validate_json(path.read_bytes())


def verify_check(name: str, green: Path, blue: Path, exclude: frozenset[str] = frozenset()) -> VerifyCheck:
    """verify's check: give green blue's ownership now (verify's probes may have added files), so what is
    fingerprinted and promoted already carries it; fails, naming the paths, when this process cannot."""
    m = record(blue, exclude)
    try:
        changed = apply(green, m)
    except PreflightError as exc:
        lines = exc.message.splitlines()[1:]
        return VerifyCheck(name=name, passed=False, checked=len(m.entries) + 1, failed=len(lines),
                           first_failures=[x.strip() for x in lines], detail=exc.hint or "")
    left = plan(green, m)
    return VerifyCheck(name=name, passed=not left, checked=len(m.entries) + 1, failed=len(left),
                       first_failures=[f"{c.rel or '.'}: {c.current} != {c.wanted}" for c in left],
                       detail=f"{changed} path(s) given blue's owner/group/mode" if changed else "")


def restore_before_rollback(previous: Path, record_path: Path,
                            progress: Callable[[str, int, int], None] | None = None) -> int:
    """The old blue, still in the staging area, checked against the map saved at promote and restored
    where it differs (it should not). Returns how many paths were restored; refuses (PreflightError,
    nothing moved) when this process cannot restore them."""
    m = load(record_path)
    if m is None:  # promoted by a version that kept no map: nothing to compare with
        return 0
    return apply(previous, m, progress=progress)
