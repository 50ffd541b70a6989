"""Run our Node.js probe (`probe.js`) with the node's own npm libraries against a KV dir and a SQLite file.

This answers "will the node read what we wrote?" with the node's real code path: level-rocksdb 5
(RocksDB 6.17.3) and sqlite3 5. The probe always works on copies: opening a RocksDB dir writes into it,
and SQLite creates `-wal`/`-shm` files beside a WAL-mode database even when opened read-only."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from bluegreen.errors import BadInputError
from bluegreen.nodecompat.ocore import OcoreInfo, ocore_dir_for, read_ocore

PROBE_JS = Path(__file__).with_name("probe.js")

# Where operators put a node's program (see find_node_modules and docs/compatibility.md).
SYSTEM_APP_ROOTS: tuple[Path, ...] = (
    Path("/opt"),
    Path("/srv"),
    Path("/usr/local/lib/node_modules"),
    Path("/usr/lib/node_modules"),
)


class KvEntry(BaseModel):
    """One key/value pair as the node read it (exact bytes)."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    key: bytes
    value: bytes


class NodeProbeResult(BaseModel):
    """What the node's own libraries read. `ok` is False when any stage failed (`error_stage`, `error`)."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    ok: bool
    error: str | None = None
    error_stage: str | None = None  # load | open | read | write | close | sqlite | args | probe
    node_version: str | None = None
    level_rocksdb_version: str | None = None
    rocksdb_version: str | None = None
    sqlite3_version: str | None = None
    keys_read: int = 0
    bytes_read: int = 0
    non_utf8_entries: int = 0  # entries the node (which reads UTF-8 strings) would see altered
    gets: int = 0  # point lookups done (see get_every)
    get_mismatches: int = 0  # point lookups that disagreed with iteration
    kv_digest: str | None = None  # see kv_digest()
    write_check: bool | None = None  # None: not asked
    sqlite_user_version: int | None = None
    sqlite_units: int | None = None
    sqlite_rows: list[dict[str, Any]] = []
    entries: list[KvEntry] | None = None  # only with dump=True


def kv_digest(pairs: Iterable[tuple[bytes, bytes]]) -> str:
    """SHA-256 (hex) over every (key, value) in key order, each part prefixed by its u64 big-endian length.

    The probe computes the same over what the node read, so a KV dir can be compared with the node's
    view without moving every entry (e.g. `kv_digest(bluegreen.engine.kvwriter.iter_kv(path))`)."""
    h = hashlib.sha256()
    for key, value in pairs:
        h.update(len(key).to_bytes(8, "big"))
        h.update(key)
        h.update(len(value).to_bytes(8, "big"))
        h.update(value)
    return h.hexdigest()


def _make_writable(path: Path) -> None:
    """The node opens its store read-write; copies of read-only sources must be writable for it."""
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


def _copy_kv_dir(src: Path, dst: Path) -> None:
    """Copy a RocksDB dir with every file (the WAL `*.log` files can hold all of its data)."""
    # LOCK is RocksDB's lock file; copying it is harmless but pointless.
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("LOCK"))
    _make_writable(dst)


def _copy_sqlite(src: Path, dst_dir: Path) -> Path:
    """Copy a SQLite file and its `-wal` (committed data may live only there); `-shm` is rebuilt."""
    dst = dst_dir / src.name
    shutil.copy2(src, dst)
    wal = src.with_name(src.name + "-wal")
    if wal.exists():
        shutil.copy2(wal, dst.with_name(dst.name + "-wal"))
    _make_writable(dst_dir)
    return dst


def _check_inputs(kv_dir: Path | None, sqlite_path: Path | None, node_modules: Path, node: str) -> str:
    node_path = shutil.which(node)
    if node_path is None:
        raise BadInputError(f"Node.js executable {node!r} not found", hint="install Node.js (with npm) or pass the path of `node`")
    if kv_dir is not None and not (kv_dir / "CURRENT").is_file():
        raise BadInputError(f"{kv_dir} is not a RocksDB directory (no CURRENT file)", hint="pass the KV dir the migration wrote (green/rocksdb)")
    if sqlite_path is not None and not sqlite_path.is_file():
        raise BadInputError(f"{sqlite_path} does not exist", hint="pass the green copy's byteball.sqlite")
    wanted = (["level-rocksdb"] if kv_dir is not None else []) + (["sqlite3"] if sqlite_path is not None else [])
    # The probe resolves like Node does: from node_modules, then the node_modules of its ancestors.
    for name in wanted:
        if not any((base / name / "package.json").is_file() for base in _resolution_dirs(node_modules)):
            raise BadInputError(
                f"{name} is not installed under {node_modules}",
                hint="pass the node_modules of the node's own app dir (where ocore is installed), or install "
                     "the node's storage libraries in an empty dir (`npm install level-rocksdb@5.0.0 rocksdb@5.2.1 "
                     "sqlite3@5.1.7`) and pass its node_modules",
            )
    return node_path


def _resolution_dirs(node_modules: Path) -> list[Path]:
    """The node_modules dirs Node searches from a module that sits in `node_modules`' parent."""
    dirs = [node_modules]
    for parent in node_modules.parent.parents:
        dirs.append(parent / "node_modules")
    return dirs


def run_node_probe(
    kv_dir: Path | None,
    sqlite_path: Path | None,
    node_modules: Path,
    node: str = "node",
    *,
    dump: bool = False,
    write_check: bool = False,
    sqlite_rows: int = 5,
    work_dir: Path | None = None,
    timeout: float | None = None,
    get_every: int = 1,
) -> NodeProbeResult:
    """Read a KV dir (and optionally a SQLite file) with the node's own npm libraries, on temporary copies.

    kv_dir: a RocksDB dir (None: SQLite only). It must not be open by a writer while it is copied.
    node_modules: a dir holding `level-rocksdb` (and `sqlite3`), e.g. from scripts/build-node-libs or
    `find_node_modules`. dump: also return every entry as read. write_check: let the node also write,
    compact, close and re-open the copy, then read everything again. work_dir: where the copies go
    (default: the system temp dir; a mainnet KV needs room for a full copy). timeout: seconds after which
    the probe is killed and reported as failed (None: no limit). get_every: also `get` every N-th key
    (1: all, the default; 0: none). Measured here: 200,000 keys in 4 s iterating only, 21 s with a
    `get` per key.
    Raises BadInputError when node, the libraries or the inputs are missing; read failures are reported
    in the result (`ok=False`)."""
    node_path = _check_inputs(kv_dir, sqlite_path, node_modules, node)
    with tempfile.TemporaryDirectory(prefix="bluegreen-probe-", dir=work_dir) as tmp:
        args = [node_path, str(PROBE_JS), "--node-modules", str(node_modules.resolve())]
        if kv_dir is not None:
            kv_copy = Path(tmp) / "rocksdb"
            _copy_kv_dir(kv_dir, kv_copy)
            args += ["--kv", str(kv_copy), "--get-every", str(get_every)]
            if dump:
                args.append("--dump")
            if write_check:
                args.append("--write-check")
        if sqlite_path is not None:
            db_dir = Path(tmp) / "sqlite"
            db_dir.mkdir()
            args += ["--sqlite", str(_copy_sqlite(sqlite_path, db_dir)), "--sqlite-rows", str(sqlite_rows)]
        return _run(args, dump, timeout)


def _run(args: Sequence[str], dump: bool, timeout: float | None) -> NodeProbeResult:
    entries: list[KvEntry] | None = [] if dump else None
    messages: list[dict[str, Any]] = []
    stray: list[str] = []
    # stderr goes to a file, not a pipe: a chatty native module must not block the probe while we
    # stream stdout (a dump of a full KV is never held twice in memory).
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as err_file:
        with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err_file, text=True, env=_probe_env()) as proc:
            timed_out = threading.Event()

            def kill() -> None:
                timed_out.set()
                proc.kill()

            watchdog = threading.Timer(timeout, kill) if timeout is not None else None
            if watchdog is not None:
                watchdog.start()
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    _take_line(line, entries, messages, stray)
                rc = proc.wait()
            finally:
                if watchdog is not None:
                    watchdog.cancel()
        err_file.seek(0)
        stderr = err_file.read()
    if timed_out.is_set():
        return NodeProbeResult(ok=False, error_stage="probe", error=f"probe killed after the {timeout} s timeout", entries=entries)
    if not messages:
        # The probe died before it could say why (crash in a native module, killed, bad node).
        detail = (stderr.strip() + " " + " ".join(stray)).strip()[-2000:]
        return NodeProbeResult(ok=False, error_stage="probe", error=f"probe exited {rc} without a result: {detail}", entries=entries)
    last = messages[-1]
    fields = {k: v for k, v in last.items() if k in NodeProbeResult.model_fields}
    if last.get("t") == "error":
        return NodeProbeResult(ok=False, error=last.get("message"), error_stage=last.get("stage"), entries=entries, **fields)
    ok = rc == 0 and last.get("get_mismatches", 0) == 0 and last.get("write_check") is not False
    return NodeProbeResult(ok=ok, entries=entries, **fields)


def _take_line(line: str, entries: list[KvEntry] | None, messages: list[dict[str, Any]], stray: list[str]) -> None:
    """Sort one stdout line: a dumped entry, a summary/error message, or stray text from a library."""
    try:
        msg = json.loads(line)
    except ValueError:
        stray.append(line.rstrip("\n"))
        return
    if not isinstance(msg, dict):
        stray.append(line.rstrip("\n"))
    elif msg.get("t") == "kv":
        if entries is not None:
            entries.append(KvEntry(key=base64.b64decode(msg["k"]), value=base64.b64decode(msg["v"])))
    else:
        messages.append(msg)


def _probe_env() -> dict[str, str]:
    env = dict(os.environ)
    # The probe resolves its libraries itself; an operator's NODE_PATH must not substitute others.
    env.pop("NODE_PATH", None)
    return env


class NodeApp(BaseModel):
    """The operator's node program found for a data dir: its dir, the node_modules holding level-rocksdb
    (None when it has none), and the ocore it loads (None when it has none)."""

    app_dir: Path
    node_modules: Path | None = None
    ocore: OcoreInfo | None = None


def find_node_app(data_dir: Path, extra_roots: Sequence[Path] = ()) -> NodeApp | None:
    """Find the node program whose data dir this is, with its node_modules and its ocore.

    ocore names its data dir after the topmost package.json of the node program
    (`$HOME/.config/<name>`), so we look for a program dir whose package.json has that name, in:
    `extra_roots`, the data dir owner's home (`<home>/<name>`, then every dir up to two levels below
    home, hidden dirs skipped), then /opt, /srv and the global npm dirs. In a program dir the library is
    looked up where ocore's `require` finds it: `node_modules/ocore/node_modules`, then `node_modules`.
    The first program dir with level-rocksdb wins; failing that, the first with an ocore."""
    app_name = data_dir.name
    home = data_dir.parent.parent if data_dir.parent.name == ".config" else Path.home()
    ocore_only: NodeApp | None = None
    for app_dir in _candidate_app_dirs(app_name, home, extra_roots):
        app = _node_app_of(app_dir, app_name)
        if app is None:
            continue
        if app.node_modules is not None:
            return app
        if ocore_only is None and app.ocore is not None:
            ocore_only = app
    return ocore_only


def find_node_modules(data_dir: Path, extra_roots: Sequence[Path] = ()) -> Path | None:
    """The node_modules the operator's node loads `level-rocksdb` from (see `find_node_app`), or None."""
    app = find_node_app(data_dir, extra_roots)
    return app.node_modules if app is not None else None


def _candidate_app_dirs(app_name: str, home: Path, extra_roots: Sequence[Path]) -> Iterable[Path]:
    yield from (root for root in extra_roots)
    for root in extra_roots:
        yield from _subdirs(root, depth=2)
    yield home / app_name
    yield from _subdirs(home, depth=2)
    for root in SYSTEM_APP_ROOTS:
        yield root / app_name
        yield from _subdirs(root, depth=1)


def _subdirs(root: Path, depth: int) -> Iterable[Path]:
    """Non-hidden dirs below root up to `depth` levels, sorted, never descending into node_modules."""
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "node_modules")
    except OSError:
        return
    for child in children:
        yield child
        if depth > 1:
            yield from _subdirs(child, depth - 1)


def _node_app_of(app_dir: Path, app_name: str) -> NodeApp | None:
    try:
        name = json.loads((app_dir / "package.json").read_text(encoding="utf-8")).get("name")
    except (OSError, ValueError, AttributeError):
        return None
    if name != app_name:
        return None
    nm = next((nm for nm in (app_dir / "node_modules" / "ocore" / "node_modules", app_dir / "node_modules")
               if (nm / "level-rocksdb" / "package.json").is_file()), None)
    ocore_dir = ocore_dir_for(app_dir / "node_modules")
    app = NodeApp(app_dir=app_dir, node_modules=nm, ocore=read_ocore(ocore_dir) if ocore_dir else None)
    return app if (nm is not None or app.ocore is not None) else None
