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


def tree_hash(root: Path) -> str | None:
    """Names, sizes and bytes of every file under root (None when root is absent)."""
    if not root.is_dir():
        return None
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
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


@dataclass
class Recording:
    scenario: Scenario
    base: Path            # the device image when recording started
    epochs: list[list[tuple[int, bytes]]]   # writes between flushes; epochs[i] ends with flush i
    flushes: int
    blue: str             # data dir tree hash before the command
    green: str | None     # complete green: green/ before promote, or the data dir after the command
    after: str | None     # data dir after the command completed


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
    green: str | None = None
    with recording_device(work, dev, log) as fs:
        subprocess.run([*GEN, "--out", str(fs / "node")], check=True, capture_output=True)
        for step in sc.prepare:
            rc, out, exc = cli(*args_for(step, fs), env=sc.env)
            assert rc == 0 and exc is None, f"prepare {step}: {out} {exc}"
        blue = tree_hash(fs / "node")
        green = tree_hash(fs / "node.bluegreen" / "green")
    subprocess.run(["cp", "--sparse=always", str(dev), str(work / "base.img")], check=True)  # device state when recording starts
    Path(str(log) + ".start").touch()
    with recording_device(work, dev, log) as fs:
        rc, out, exc = cli(*args_for(sc.command, fs), env=sc.env)
        assert rc == 0 and exc is None, f"{sc.command}: {out} {exc}"
        after = tree_hash(fs / "node")
    Path(str(log) + ".start").unlink()
    epochs, flushes = parse_log(log)
    assert flushes > 0, "the recorder saw no flush: the loop device did not pass the FS's flushes down"
    return Recording(sc, work / "base.img", epochs, flushes, blue or "", green, after)


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


def check_image(rec: Recording, mnt: Path, rerun: bool) -> list[str]:
    """The invariants; returns the violations found."""
    bad: list[str] = []
    node, staging = mnt / "node", mnt / "node.bluegreen"
    name = rec.scenario.name
    now = tree_hash(node)
    allowed = {rec.blue} if name in ("stage", "stage-resume", "verify", "abort") else {rec.blue, rec.green, rec.after}
    if now is None:
        if not (staging / "swap-journal.json").exists():
            bad.append("data dir missing and no swap journal")
    elif now not in allowed:
        bad.append("data dir is neither blue nor a complete green")
    if node.is_dir():
        for f in ("conf.json", "keys.json"):
            p = node / f
            if not p.exists() or p.stat().st_size == 0:
                bad.append(f"data dir {f} missing or empty")
    st = staging / "state.json"
    if st.exists():
        try:
            doc = json.loads(st.read_text())
            if "phase" not in doc:
                bad.append("state.json names no phase")
        except (ValueError, UnicodeDecodeError) as exc:
            bad.append(f"state.json unreadable: {exc}")
    rc, out, exc = cli("status", "--data-dir", str(node))
    if exc is not None:
        bad.append(f"status raised {type(exc).__name__}: {exc}")
    if rerun and not bad:
        rc, out, exc = cli(*args_for(rec.scenario.command, mnt), env=rec.scenario.env)
        if exc is not None or rc != 0:
            bad.append(f"re-run of {name} failed rc={rc}: {out[-300:]} {exc or ''}")
        else:
            final = tree_hash(node)
            if final != rec.after:
                bad.append("re-run finished but the data dir differs from the uninterrupted result")
            if name in ("stage", "stage-resume"):
                rc, out, exc = cli("verify", "--data-dir", str(node))
                if rc != 0 or exc is not None:
                    bad.append(f"verify after re-run failed rc={rc}: {out[-300:]}")
    return bad


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


def replay(rec: Recording, work: Path, per_epoch: int, seed: int, rerun_every: int,
           keep_bad: Path | None = None) -> ReplayResult:
    pts = crash_points(rec, per_epoch, seed)
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
        with mounted(img, mnt):
            bad = check_image(rec, mnt, rerun=(n % rerun_every == 0))
        if bad:
            violations.append((pt, bad))
            if keep_bad is not None:
                keep_bad.mkdir(parents=True, exist_ok=True)
                build_image(rec, pt, prefix, keep_bad / f"{rec.scenario.name}-f{pt.flush_index}-{n}.img")
    return ReplayResult(rec.scenario.name, rec.flushes, len(pts), len(digests), violations)


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
]


def run_all(work: Path, per_epoch: int, seed: int, rerun_every: int, only: list[str] | None = None,
            report: Callable[[str], None] = print) -> list[ReplayResult]:
    results = []
    for sc in SCENARIOS:
        if only and sc.name not in only:
            continue
        t0 = time.monotonic()
        rec = record(sc, work / sc.name)
        r = replay(rec, work / sc.name, per_epoch, seed, rerun_every, keep_bad=work / "bad")
        results.append(r)
        report(f"{sc.name}: {r.flushes} flushes, {r.images} crash images ({r.distinct} distinct), "
               f"{len(r.violations)} violations, {time.monotonic() - t0:.0f}s")
        for pt, bad in r.violations[:5]:
            report(f"  flush {pt.flush_index} subset {pt.subset and len(pt.subset)}: {'; '.join(bad)}")
    return results
