"""Recorder and replayer for power-loss tests.

record(): a 64 MiB ext4 on a loop device whose backing file is served by ``fuseserve`` (which logs every write
and flush that reaches the "device"); a generated node and its staging area both live on it; one command runs
while recording. replay(): crash images at every flush boundary (all writes before it) and, between boundaries,
a seeded bounded sample of subsets of the writes after it; each image is mounted (ext4 journal replay) and checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from typer.testing import CliRunner

from bluegreen.cli import app
from bluegreen.lifecycle.state import Phase, StagingState

IMAGE_MIB = 128  # stage keeps a 64 MiB free-space margin
GEN = [sys.executable, "-m", "bluegreen.generator.cli", "--units", "200", "--version", "28", "--seed", "1"]


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def mechanism_available() -> str | None:
    """None when the recorder can run here, else why not."""
    if os.geteuid() != 0:
        return "not root"
    for need in ("fusermount3", "losetup", "mkfs.ext4", "mount"):
        if shutil.which(need) is None:
            return f"{need} missing (scripts/test installs fuse3)"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse missing"
    try:
        import mfusepy  # noqa: F401
    except Exception as exc:  # OSError when libfuse3 is absent
        return f"mfusepy unusable: {exc}"
    return None


@contextlib.contextmanager
def mounted(image: Path, where: Path) -> Iterator[Path]:
    """Mount an ext4 image through a loop device (journal replay happens here); always cleaned up."""
    where.mkdir(parents=True, exist_ok=True)
    sh("mount", "-t", "ext4", "-o", "loop", str(image), str(where))
    try:
        yield where
    finally:
        r = sh("umount", str(where), check=False)
        if r.returncode:
            sh("umount", "-l", str(where), check=False)


@contextlib.contextmanager
def recording_device(work: Path, base: Path, log: Path) -> Iterator[Path]:
    """Serve `base` through FUSE, put a loop device on it, mount ext4; yield the mount point."""
    fmnt, fs = work / "fuse", work / "fs"
    fmnt.mkdir(exist_ok=True)
    fs.mkdir(exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "tests.powerloss.fuseserve", str(base), str(fmnt), str(log)],
                            cwd=Path(__file__).resolve().parents[2], stderr=subprocess.PIPE)
    loop = ""
    try:
        for _ in range(100):
            if (fmnt / "disk.img").exists():
                break
            if proc.poll() is not None:
                raise RuntimeError(f"fuse server died: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.05)
        else:
            raise RuntimeError("fuse server did not come up")
        loop = sh("losetup", "--direct-io=off", "-f", "--show", str(fmnt / "disk.img")).stdout.strip()
        sh("mount", "-t", "ext4", loop, str(fs))
        try:
            yield fs
        finally:
            if sh("umount", str(fs), check=False).returncode:
                sh("umount", "-l", str(fs), check=False)
    finally:
        if loop:
            sh("losetup", "-d", loop, check=False)
        sh("fusermount3", "-u", str(fmnt), check=False) if sh("fusermount3", "-u", str(fmnt), check=False).returncode else None
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, BaseException | None]:
    """The real typer CLI, in this process (python startup would dominate the run time)."""
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        r = CliRunner().invoke(app, list(args))
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    exc = r.exception if r.exception and not isinstance(r.exception, SystemExit) else None
    return r.exit_code, r.output, exc


CHILD_TIMEOUT = 600


def child(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """`python -m bluegreen ARGS` in a child process, as an operator would run it after the power came back."""
    full = {k: v for k, v in os.environ.items() if k not in ("BLUEGREEN_KILL_AT", "BLUEGREEN_SWAP_MECHANISM")}
    full.update(env or {})
    r = subprocess.run([sys.executable, "-m", "bluegreen", *args], env=full, capture_output=True, text=True,
                       timeout=CHILD_TIMEOUT, cwd=Path(__file__).resolve().parents[2], stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout + r.stderr


def crashed(rc: int, out: str) -> bool:
    """A traceback or a death by signal: not an answer."""
    return rc < 0 or "Traceback" in out


def diagnostic_only(p: Path) -> bool:
    """RocksDB's info log (`LOG`, `LOG.old.<µs>`): diagnostics, written without fsync, renamed at every open.
    SQLite's `-shm`: the WAL index, shared memory mapped on a file, never synced; SQLite rebuilds it from the
    -wal when the first connection opens the database (a promote after an online catch-up leaves one)."""
    return (p.parent.name == "rocksdb" and (p.name == "LOG" or p.name.startswith("LOG.old."))) \
        or p.name.endswith(".sqlite-shm")


def logical_hash(root: Path, db_name: str = "byteball.sqlite") -> str | None:
    """Like tree_hash, but the SQLite database by its rows (read with its -wal from a scratch copy, as SQLite
    recovers it: uncommitted frames ignored) and rocksdb/ by its keys and values, not their bytes: an online
    catch-up changes green in place, and a re-run writes the same rows into other pages and files."""
    import tempfile

    import apsw

    from bluegreen.engine.kvwriter import iter_kv
    if not root.is_dir():
        return None
    h = hashlib.sha256()
    db = root / db_name
    with tempfile.TemporaryDirectory(prefix="power-logical-") as tmp:
        if db.exists():
            for suffix in ("", "-wal", "-journal"):
                if Path(str(db) + suffix).exists():
                    shutil.copyfile(str(db) + suffix, Path(tmp) / (db_name + suffix))
            conn = apsw.Connection(str(Path(tmp) / db_name))
            try:
                h.update(f"V {conn.execute('PRAGMA user_version').fetchall()[0][0]}\n".encode())
                for (t,) in list(conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")):
                    cols = "name, value" if t == "node_vars" else "*"  # node_vars: the moment a step ran
                    h.update(f"T {t}\n".encode())
                    for row in conn.execute(f"SELECT {cols} FROM `{t}` ORDER BY rowid"):
                        h.update(repr(row).encode())
            finally:
                conn.close()
        kv = root / "rocksdb"
        if kv.is_dir():
            shutil.copytree(kv, Path(tmp) / "kv", ignore=shutil.ignore_patterns("LOG", "LOG.old.*"))
            for k, v in iter_kv(Path(tmp) / "kv"):
                h.update(k + b"\0" + v + b"\0")
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if diagnostic_only(p) or rel.startswith(("rocksdb", db_name)):
            continue
        if p.is_file() and not p.is_symlink():
            h.update(f"F {rel}\n".encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def tree_hash(root: Path) -> str | None:
    """Names, sizes and bytes of every file under root (None when root is absent), RocksDB info logs left out."""
    if not root.is_dir():
        return None
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if diagnostic_only(p):
            continue
        rel = str(p.relative_to(root))
        if p.is_file() and not p.is_symlink():
            h.update(f"F {rel}\n".encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
        elif p.is_dir():
            h.update(f"D {rel}\n".encode())
    return h.hexdigest()


@dataclass
class Scenario:
    """One recorded command: `prepare` runs unrecorded, `command` runs recorded."""
    name: str
    prepare: list[list[str]]
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    # (command, BLUEGREEN_KILL_AT point): run after `prepare` in a child that must die by SIGKILL there;
    # `command` is then the resume. Unrecorded, like prepare; the page cache reaches the device at unmount.
    interrupted: tuple[list[str], str] | None = None
    # Units the "node" adds to blue after `prepare` (an online stage: the command catches green up first)
    extend: int = 0


@dataclass
class Recording:
    scenario: Scenario
    base: Path            # the device image when recording started
    epochs: list[list[tuple[int, bytes]]]   # writes between flushes; epochs[i] ends with flush i
    flushes: int
    blue: str             # the node's own data dir (tree hash) as generated, before any upgrade command
    greens: set[str]      # tree hashes of a complete green (staged, verified, promoted)
    after: str | None     # data dir after the command completed
    phase_before: Phase | None   # state.json's phase when the command started (None: no staging area)
    phase_after: Phase | None    # and when it finished
    phases: set[Phase]    # every phase the uninterrupted command passed through, incl. phase_before
    final_state: StagingState | None = None
    # online scenarios (`extend`): green/ changes in place, so it is checked by content (`logical_hash`):
    # before the catch-up, or caught up (= the data dir after the command)
    logical_greens: set[str] = field(default_factory=set)
    logical_after: str | None = None


def parse_log(log: Path) -> tuple[list[list[tuple[int, bytes]]], int]:
    data = log.read_bytes()
    epochs: list[list[tuple[int, bytes]]] = [[]]
    i = flushes = 0
    while i < len(data):
        tag = data[i:i + 1]
        if tag == b"F":
            flushes += 1
            epochs.append([])
            i += 1
        elif tag == b"W":
            off, n = struct.unpack_from("<QI", data, i + 1)
            epochs[-1].append((off, data[i + 13:i + 13 + n]))
            i += 13 + n
        else:
            raise ValueError(f"bad log record at {i}")
    return epochs, flushes


def args_for(sc: list[str], fs: Path) -> list[str]:
    return [a.replace("{D}", str(fs / "node")) for a in sc]


def read_state(staging: Path) -> StagingState | None:
    """state.json through the real model (None when absent); raises when unreadable."""
    p = staging / "state.json"
    if not p.exists():
        return None
    return StagingState.model_validate_json(p.read_bytes())


def audit_phases(mnt: Path) -> list[Phase]:
    """to_phase of every audit.log line, also from the copy abort keeps aside (`node.bluegreen-aborted-*`)."""
    logs = [mnt / "node.bluegreen" / "audit.log", *sorted(mnt.glob("node.bluegreen-aborted-*/audit.log"))]
    for log in logs:
        if log.exists():
            docs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            return [Phase(d["to_phase"]) for d in docs if d.get("to_phase")]
    return []


def record(sc: Scenario, work: Path) -> Recording:
    work.mkdir(parents=True, exist_ok=True)
    dev = work / "device.img"
    log = work / "writes.log"
    for p in (log, Path(str(log) + ".start")):
        p.unlink(missing_ok=True)
    with open(dev, "wb") as f:
        f.truncate(IMAGE_MIB << 20)
    sh("mkfs.ext4", "-q", "-F", str(dev))
    log.touch()
    with recording_device(work, dev, log) as fs:
        subprocess.run([*GEN, "--out", str(fs / "node")], check=True, capture_output=True)
        blue = tree_hash(fs / "node") or ""
        for step in sc.prepare:
            rc, out, exc = cli(*args_for(step, fs), env=sc.env)
            assert rc == 0 and exc is None, f"prepare {step}: {out} {exc}"
        if sc.extend:
            from bluegreen.generator.extend import extend_node_dir
            extend_node_dir(fs / "node", units=sc.extend, seed=7)
            blue = tree_hash(fs / "node") or ""  # the node wrote: this is the blue the command starts from
        if sc.interrupted:
            cmd, point = sc.interrupted
            rc, out = child(*args_for(cmd, fs), env={**sc.env, "BLUEGREEN_KILL_AT": point})
            assert rc == -9, f"{cmd} was to die at {point}, ended rc={rc}: {out[-500:]}"
        staging = fs / "node.bluegreen"
        st = read_state(staging)
        before = st.phase if st else None
        pre_node, pre_green = tree_hash(fs / "node"), tree_hash(staging / "green")
        pre_logical = logical_hash(staging / "green") if sc.extend else None
        audited = len(audit_phases(fs))
    subprocess.run(["cp", "--sparse=always", str(dev), str(work / "base.img")], check=True)  # device state when recording starts
    Path(str(log) + ".start").touch()
    with recording_device(work, dev, log) as fs:
        rc, out, exc = cli(*args_for(sc.command, fs), env=sc.env)
        assert rc == 0 and exc is None, f"{sc.command}: {out} {exc}"
        after = tree_hash(fs / "node")
        logical_after = logical_hash(fs / "node") if sc.extend else None
        final = read_state(fs / "node.bluegreen")
        post_green = tree_hash(fs / "node.bluegreen" / "green")
        passed = audit_phases(fs)[audited:]
    Path(str(log) + ".start").unlink()
    epochs, flushes = parse_log(log)
    assert flushes > 0, "the recorder saw no flush: the loop device did not pass the FS's flushes down"
    # A complete green: green/ once migrated (before or after the command), the data dir once promoted.
    greens = {h for h in (
        pre_green if before in (Phase.MIGRATED, Phase.VERIFIED, Phase.ROLLED_BACK) else None,
        pre_node if before == Phase.PROMOTED else None,
        post_green if final and final.phase in (Phase.MIGRATED, Phase.VERIFIED, Phase.ROLLED_BACK) else None,
        after if final and final.phase == Phase.PROMOTED else None) if h}
    # A fresh stage first saves a NONE state (the "created" audit line names no phase).
    phases = {before or Phase.NONE} | set(passed)
    logical: set[str] = set()
    if sc.extend:  # green before the catch-up is stale: the data dir may only become the caught-up green
        greens = {after} if after else set()
        logical = {h for h in (pre_logical, logical_after) if h}
    return Recording(sc, work / "base.img", epochs, flushes, blue, greens, after, before,
                     final.phase if final else None, phases, final, logical, logical_after)


def green_complete(rec: Recording, staging: Path) -> bool:
    """green/ is a complete green: byte for byte one of the recorded ones; for an online scenario its rows and
    keys are the old green's or the caught-up one's, or a catch-up journal says recovery finishes it."""
    green = staging / "green"
    if tree_hash(green) in rec.greens:
        return True
    if not rec.scenario.extend:
        return False
    return (staging / "work" / "catchup" / "journal.json").exists() or logical_hash(green) in rec.logical_greens


@dataclass
class CrashPoint:
    flush_index: int        # all writes before flush `flush_index` are applied
    subset: tuple[int, ...] | None   # indices of the following epoch's writes also applied (None: none)


def crash_points(rec: Recording, per_epoch: int, seed: int) -> list[CrashPoint]:
    """Every flush boundary, plus up to `per_epoch` seeded random non-empty proper subsets of each epoch."""
    rng = random.Random(seed)
    points: list[CrashPoint] = []
    for k in range(len(rec.epochs)):
        points.append(CrashPoint(k, None))
        n = len(rec.epochs[k])
        if n >= 2:
            seen: set[tuple[int, ...]] = set()
            for _ in range(per_epoch * 3):
                if len(seen) >= per_epoch:
                    break
                size = rng.randint(1, n - 1)
                s = tuple(sorted(rng.sample(range(n), size)))
                if s not in seen:
                    seen.add(s)
                    points.append(CrashPoint(k, s))
    return points


def build_image(rec: Recording, pt: CrashPoint, prefix: Path, out: Path) -> None:
    """`prefix` holds base + epochs[:k]; copy it and add the subset of epoch k."""
    subprocess.run(["cp", "--sparse=always", str(prefix), str(out)], check=True)
    if pt.subset:
        with open(out, "r+b") as f:
            ep = rec.epochs[pt.flush_index]
            for i in pt.subset:
                off, data = ep[i]
                f.seek(off)
                f.write(data)


# Phases in which the live path must hold the node's own data, byte for byte.
BLUE_PHASES = {Phase.NONE, Phase.SNAPSHOTTING, Phase.SNAPSHOTTED, Phase.MIGRATING, Phase.MIGRATED, Phase.VERIFIED,
               Phase.ROLLED_BACK, Phase.ABORTED, Phase.FAILED}
GREEN_COMPLETE_PHASES = {Phase.MIGRATED, Phase.VERIFIED, Phase.ROLLED_BACK}
SWAPPING = {Phase.PROMOTING, Phase.ROLLING_BACK}


def sqlite_user_version(db: Path) -> int | None:
    """user_version as SQLite sees it after recovery (WAL or hot journal), read from a scratch copy so that the
    image itself is left exactly as the crash left it (the -shm is rebuilt by SQLite, so it is not copied)."""
    import tempfile

    import apsw
    if not db.exists():
        return None
    with tempfile.TemporaryDirectory(prefix="power-sqlite-") as tmp:
        for suffix in ("", "-wal", "-journal"):
            if Path(str(db) + suffix).exists():
                shutil.copyfile(str(db) + suffix, Path(tmp) / (db.name + suffix))
        try:
            conn = apsw.Connection(str(Path(tmp) / db.name))
            try:
                return int(conn.execute("PRAGMA user_version").fetchall()[0][0])
            finally:
                conn.close()
        except apsw.Error:
            return None


def check_disk(rec: Recording, mnt: Path) -> list[str]:
    """What the image holds, before any command looks at it (status may recover, so it runs after)."""
    bad: list[str] = []
    node, staging = mnt / "node", mnt / "node.bluegreen"
    journal = (staging / "swap-journal.json").exists()
    now = tree_hash(node)
    may_swap = bool(rec.greens & {rec.after}) or rec.phase_before == Phase.PROMOTED
    if now is None:
        if not journal:
            bad.append("data dir missing and no swap journal")
    elif now != rec.blue and not (may_swap and now in rec.greens):
        bad.append("data dir is neither blue nor a complete green")
    if node.is_dir():  # the live path holds blue's or green's copy of them
        for f in ("conf.json", "keys.json"):
            p = node / f
            if not p.exists() or p.stat().st_size == 0:
                bad.append(f"data dir {f} missing or empty")
    if now != rec.blue and not any(tree_hash(staging / d) == rec.blue for d in ("blue-previous", "green")):
        # Swapped out (exchange leaves it in green/ until the rename to blue-previous): kept whole, other files too.
        bad.append("blue is neither the data dir nor kept whole in blue-previous/ or green/")
    try:
        st = read_state(staging)
    except Exception as exc:  # pydantic ValidationError, UnicodeDecodeError, OSError
        return bad + [f"state.json unreadable: {type(exc).__name__}: {str(exc)[:200]}"]
    if st is None:
        # Only a fresh stage (before its first save) or abort (after removing the staging area) has none.
        if rec.phase_before is not None and rec.scenario.command[0] != "abort":
            bad.append("state.json missing")
        elif now != rec.blue:
            bad.append("no state.json but the data dir is not blue")
        return bad
    ph = st.phase
    if ph not in rec.phases:
        bad.append(f"phase {ph.value} is not one the command passes through ({sorted(p.value for p in rec.phases)})")
    if ph in BLUE_PHASES and now != rec.blue and not journal:
        bad.append(f"phase {ph.value} but the data dir is not blue")
    if ph == Phase.PROMOTED:
        if now not in rec.greens:
            bad.append("phase PROMOTED but the data dir is not the complete green")
        if tree_hash(staging / "blue-previous") != rec.blue and not journal:
            bad.append("phase PROMOTED but blue-previous is not blue")
    if journal and ph not in SWAPPING | {Phase.PROMOTED, Phase.ROLLED_BACK}:
        bad.append(f"swap journal present in phase {ph.value}")
    green = staging / "green"
    if ph in GREEN_COMPLETE_PHASES and not green_complete(rec, staging):
        bad.append(f"phase {ph.value} but green/ is not the complete green")
    if ph in (Phase.SNAPSHOTTED, Phase.MIGRATING):
        v = sqlite_user_version(green / st.db_name)
        if v is None:
            bad.append(f"phase {ph.value} but green/{st.db_name} is missing or unreadable")
        elif ph == Phase.SNAPSHOTTED and v != st.source_version:
            bad.append(f"phase SNAPSHOTTED but green is at version {v}, not the source's {st.source_version}")
    return bad


def check_image(rec: Recording, mnt: Path, rerun: bool) -> list[str]:
    """The invariants; returns the violations found."""
    bad = check_disk(rec, mnt)
    node = mnt / "node"
    name = rec.scenario.command[0]
    rc, out = child("status", "--data-dir", str(node))
    if crashed(rc, out):
        bad.append(f"status crashed rc={rc}: {out[-300:]}")
    if rerun and not bad:
        rc, out = child(*args_for(rec.scenario.command, mnt), env=rec.scenario.env)
        if rc != 0 or crashed(rc, out):
            bad.append(f"re-run of {rec.scenario.name} failed rc={rc}: {out[-300:]}")
        else:
            same = (logical_hash(node) == rec.logical_after) if rec.scenario.extend else tree_hash(node) == rec.after
            if not same:
                bad.append("re-run finished but the data dir differs from the uninterrupted result")
            try:
                st = read_state(mnt / "node.bluegreen")
            except Exception as exc:
                st = None
                bad.append(f"state.json unreadable after the re-run: {exc}")
            if (st.phase if st else None) != rec.phase_after:
                bad.append(f"re-run ended in phase {st.phase if st else None}, uninterrupted in {rec.phase_after}")
            if name == "stage":
                rc, out = child("verify", "--data-dir", str(node))
                if rc != 0 or crashed(rc, out):
                    bad.append(f"verify after re-run failed rc={rc}: {out[-300:]}")
    return bad


def image_at(rec: Recording, k: int, out: Path) -> None:
    """The crash image at flush boundary k: the recorded base plus every write before flush k."""
    subprocess.run(["cp", "--sparse=always", str(rec.base), str(out)], check=True)
    with open(out, "r+b") as f:
        for ep in rec.epochs[:k]:
            for off, data in ep:
                f.seek(off)
                f.write(data)


def first_boundary(rec: Recording, work: Path, pred: Callable[[Path], bool]) -> int:
    """The first flush boundary whose image satisfies `pred` (a property that, once true, stays true)."""
    lo, hi = 0, len(rec.epochs) - 1
    img, mnt = work / "crash.img", work / "fs"
    while lo < hi:
        mid = (lo + hi) // 2
        image_at(rec, mid, img)
        with mounted(img, mnt):
            ok = pred(mnt)
        lo, hi = (lo, mid) if ok else (mid + 1, hi)
    return lo


def region_digest(img: Path, epoch: list[tuple[int, bytes]]) -> str:
    """Hash of the image where the epoch's writes land: differs between images with different subsets."""
    h = hashlib.sha256()
    with open(img, "rb") as f:
        for off, data in epoch:
            f.seek(off)
            h.update(f.read(len(data)))
    return h.hexdigest()


@dataclass
class ReplayResult:
    name: str
    flushes: int
    images: int
    distinct: int
    violations: list[tuple[CrashPoint, list[str]]]
    reruns: int = 0


def replay(rec: Recording, work: Path, per_epoch: int, seed: int, rerun_every: int,
           keep_bad: Path | None = None, stride: int = 1, points: list[CrashPoint] | None = None,
           progress: Callable[[str], None] | None = None) -> ReplayResult:
    """Check crash images: every `stride`-th of the seeded crash points (or exactly `points`), re-running the
    interrupted command on every `rerun_every`-th checked image."""
    pts = points if points is not None else crash_points(rec, per_epoch, seed)[::stride]
    reruns = 0
    prefix = work / "prefix.img"
    subprocess.run(["cp", "--sparse=always", str(rec.base), str(prefix)], check=True)
    applied = 0
    # Same mount point as the recording: state.json and the swap journal hold absolute paths.
    img, mnt = work / "crash.img", work / "fs"
    violations: list[tuple[CrashPoint, list[str]]] = []
    digests: set[str] = set()
    for n, pt in enumerate(pts):
        while applied < pt.flush_index:
            with open(prefix, "r+b") as f:
                for off, data in rec.epochs[applied]:
                    f.seek(off)
                    f.write(data)
            applied += 1
        build_image(rec, pt, prefix, img)
        digests.add(region_digest(img, rec.epochs[pt.flush_index]) + str(pt.flush_index))
        rerun = n % rerun_every == 0
        reruns += rerun
        with mounted(img, mnt):
            bad = check_image(rec, mnt, rerun=rerun)
        if progress and (n + 1) % 25 == 0:
            progress(f"  {rec.scenario.name}: {n + 1}/{len(pts)} images, {len(violations) + bool(bad)} violations")
        if bad:
            violations.append((pt, bad))
            if keep_bad is not None:
                keep_bad.mkdir(parents=True, exist_ok=True)
                build_image(rec, pt, prefix, keep_bad / f"{rec.scenario.name}-f{pt.flush_index}-{n}.img")
    return ReplayResult(rec.scenario.name, rec.flushes, len(pts), len(digests), violations, reruns)


D = "{D}"
SCENARIOS: list[Scenario] = [
    Scenario("stage", [], ["stage", "--data-dir", D]),
    Scenario("verify", [["stage", "--data-dir", D]], ["verify", "--data-dir", D]),
    Scenario("promote", [["stage", "--data-dir", D], ["verify", "--data-dir", D]], ["promote", "--data-dir", D]),
    Scenario("promote-fallback", [["stage", "--data-dir", D], ["verify", "--data-dir", D]],
             ["promote", "--data-dir", D], {"BLUEGREEN_SWAP_MECHANISM": "fallback"}),
    Scenario("rollback", [["stage", "--data-dir", D], ["verify", "--data-dir", D], ["promote", "--data-dir", D]],
             ["rollback", "--data-dir", D]),
    Scenario("abort", [["stage", "--data-dir", D]], ["abort", "--data-dir", D]),
    # Online: staged and verified while the node ran, then the node wrote 40 units; promote catches green up
    # in place (the row patch, reading blue's own file) and swaps.
    Scenario("promote-online", [["stage", "--online", "--data-dir", D], ["verify", "--data-dir", D]],
             ["promote", "--data-dir", D], extend=40),
    # A stage SIGKILLed in the middle of the KV fill (every unit written, no data feed yet), then the resume.
    Scenario("stage-resume", [], ["stage", "--data-dir", D],
             interrupted=(["stage", "--data-dir", D], "engine.mid_feeds_chunk@1")),
]


def run_all(work: Path, per_epoch: int, seed: int, rerun_every: int, only: list[str] | None = None,
            report: Callable[[str], None] = print, stride: int = 1) -> list[ReplayResult]:
    results = []
    for sc in SCENARIOS:
        if only and sc.name not in only:
            continue
        t0 = time.monotonic()
        rec = record(sc, work / sc.name)
        r = replay(rec, work / sc.name, per_epoch, seed, rerun_every, keep_bad=work / "bad", stride=stride,
                   progress=lambda m: print(m, file=sys.stderr, flush=True))
        results.append(r)
        report(f"{sc.name}: {r.flushes} flushes, {r.images} crash images ({r.distinct} distinct, {r.reruns} re-run), "
               f"{len(r.violations)} violations, {time.monotonic() - t0:.0f}s")
        for pt, bad in r.violations[:5]:
            report(f"  flush {pt.flush_index} subset {pt.subset and len(pt.subset)}: {'; '.join(bad)}")
    return results
