"""What operators expect of `upgrade status` and of an installed tool (issue 8): an ETA while a command runs,
no stale progress once the work is over, durations of work apart from the waits between commands, every
history entry, drift described in words, progress lines on promote, the JSON Schemas and reference schemas
in the wheel, and no repository paths (scripts/) in what the product says.

Real staging areas, a real lock held by this process, real child processes, a real wheel."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import apsw
import pytest

from conftest import REPO
from test_lifecycle_support import cli_json, make_node, run_cli

from bluegreen.lifecycle import command
from bluegreen.lifecycle import fingerprint as fpmod
from bluegreen.lifecycle.lock import StagingLock
from bluegreen.lifecycle.state import IN_FLIGHT, HistoryEntry, Phase, Progress, StagingState, StateStore, VerifyRecord


def _staging(node: Path) -> Path:
    return node.with_name(node.name + ".bluegreen")


# ------------------------------------------------------------------ ETA and stale progress


def test_status_gives_an_eta_while_a_command_runs(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    command.stage(node)
    store = StateStore(_staging(node))
    state = store.load()
    assert state is not None
    now = datetime.now(timezone.utc)
    # What a verify that runs for 100 s and has done a quarter of its step saves (through _progress_saver).
    state.progress = Progress(step="kv_units", done=250, total=1000, started_at=now - timedelta(seconds=130),
                              updated_at=now, step_started_at=now - timedelta(seconds=100), command="verify")
    store.save(state)
    with StagingLock(_staging(node) / "lock"):  # a command holds the lock: it runs now
        st = command.status(node)
        assert st.locked_by_pid == os.getpid() and st.progress is not None
        assert st.eta_seconds is not None and 250 < st.eta_seconds <= 300  # 750 left at 2.5 per second
        assert st.eta_at is not None and st.eta_at > now + timedelta(seconds=250)
        assert any(w.what == "VERIFYING" and w.running for w in st.work)
        assert st.step_of == (4, 7)  # kv_units is verify's 4th reported step (of 7: the last is green's row counts)
    st = command.status(node)  # nobody runs: the record is a leftover, no ETA and not shown as progress
    assert st.eta_seconds is None and st.progress is None


def test_no_stale_progress_once_the_work_is_over(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    seen: list[str] = []
    record = lambda step, done, total: seen.append(step) if step not in seen else None  # noqa: E731
    command.stage(node, progress=record)
    assert seen == [s for s in command.COMMAND_STEPS["stage"] if s in seen] and "units" in seen  # in that order
    state = StateStore(_staging(node)).load()
    assert state is not None and state.phase == Phase.MIGRATED and state.progress is None
    seen.clear()
    assert command.verify(node, no_node_probe=True, progress=record).passed
    assert seen == list(command.COMMAND_STEPS["verify"]), seen
    command.promote(node)
    state = StateStore(_staging(node)).load()
    assert state is not None and state.phase == Phase.PROMOTED and state.progress is None
    rc, st = cli_json("status", "--data-dir", str(node))
    assert rc == 0 and st["progress"] is None and st["eta_seconds"] is None
    assert "progress:" not in run_cli("status", "--data-dir", str(node), check=True).stdout


# ------------------------------------------------------------------ durations: work, not waits


def test_durations_are_work_and_the_waits_are_not_counted() -> None:
    t0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    at = lambda s: t0 + timedelta(seconds=s)  # noqa: E731
    hops = [(0, Phase.NONE, Phase.SNAPSHOTTING), (2, Phase.SNAPSHOTTING, Phase.SNAPSHOTTED),
            (2, Phase.SNAPSHOTTED, Phase.MIGRATING), (5, Phase.MIGRATING, Phase.MIGRATED),
            # the operator reads the stage result for 95 s, then verify runs 5 s
            (105, Phase.MIGRATED, Phase.VERIFIED),
            # an hour passes before promote (stopping the node), which takes 1 s
            (3705, Phase.VERIFIED, Phase.PROMOTING), (3706, Phase.PROMOTING, Phase.PROMOTED)]
    history = [HistoryEntry(at=at(s), from_phase=f, to_phase=t) for s, f, t in hops]
    history[5].work_started_at = at(3702)  # promote's checks and rollback baseline ran 3 s before the swap phase
    state = StagingState(data_dir=Path("/x"), staging_dir=Path("/x.bluegreen"), phase=Phase.PROMOTED,
                         history=history,
                         last_verify=VerifyRecord(report_path=Path("/nonexistent"), passed=True, finished_at=at(105),
                                                  sample=None, started_at=at(100)))
    timings, work = command._timings(state, running=False, now=at(9000))
    assert [(w.what, w.seconds) for w in work] == [("SNAPSHOTTING", 2), ("MIGRATING", 3), ("VERIFYING", 5),
                                                   ("PROMOTING", 4)]
    assert [t.work_seconds for t in timings] == [2, None, 3, None, None, 4, None]
    assert len(timings) == len(hops)
    waits = {t.phase: t.seconds for t in timings if not t.work}
    assert waits[Phase.MIGRATED] == 100 and waits[Phase.VERIFIED] == 3600  # in the record, labelled as waits
    assert all(t.work == (t.phase in IN_FLIGHT) for t in timings)


def test_status_prints_every_history_entry_and_work_durations(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    command.stage(node)
    assert command.verify(node, sample=2, no_node_probe=True).passed
    command.promote(node)
    command.rollback(node)
    state = StateStore(_staging(node)).load()
    assert state is not None and len(state.history) > 8
    out = run_cli("status", "--data-dir", str(node), check=True).stdout
    lines = [ln for ln in out.splitlines() if ln.startswith("history:")]
    assert len(lines) == len(state.history), out
    entered = [re.search(r"\d\d:\d\d:\d\d (?:\w+ -> )?(\w+)", ln).group(1) for ln in lines]  # type: ignore[union-attr]
    assert entered == [h.to_phase.value for h in state.history]
    assert all(("(took " in ln) == (Phase(e) in IN_FLIGHT) for ln, e in zip(lines, entered)), lines
    work = next(ln for ln in out.splitlines() if ln.startswith("work:"))
    for what in ("SNAPSHOTTING", "MIGRATING", "VERIFYING", "PROMOTING", "ROLLING_BACK"):
        assert what in work, work


# ------------------------------------------------------------------ drift in words


def test_drift_is_described_in_words(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    command.stage(node)
    conn = apsw.Connection(str(node / "byteball.sqlite"))
    conn.execute("INSERT INTO peer_hosts(peer_host) VALUES('drift.example')")
    conn.close()
    rc, st = cli_json("status", "--data-dir", str(node))
    drift = st["blue_drift"]
    assert drift and not any(c in d for d in drift for c in "{}'"), drift
    line = next(d for d in drift if d.startswith("database file changed: byteball.sqlite"))
    assert " bytes" in line or "modified " in line, line
    assert any("modified " in d and " UTC" in d for d in drift), drift
    # Every part of a fingerprint, changed: one sentence each, never a Python dict.
    a = fpmod.Fingerprint(db_files={"byteball.sqlite": fpmod.FileStat(size=1234, mtime_ns=0, inode=1, mode=0o100644)},
                          wal=fpmod.WalHeader(size=0, checkpoint_seq=1, salt1=1, salt2=2),
                          rocksdb=fpmod.RocksdbInfo(current="MANIFEST-000005", manifest_name="MANIFEST-000005",
                                                    manifest_size=100))
    b = fpmod.Fingerprint(db_files={"byteball.sqlite": fpmod.FileStat(size=5678, mtime_ns=189 * 10**9, inode=1,
                                                                      mode=0o100600)},
                          wal=fpmod.WalHeader(size=4152, checkpoint_seq=2, salt1=3, salt2=2),
                          rocksdb=fpmod.RocksdbInfo(current="MANIFEST-000009", manifest_name="MANIFEST-000009",
                                                    manifest_size=300))
    text = fpmod.diff_db(a, b) + fpmod.diff_db(fpmod.Fingerprint(), b) + fpmod.diff_db(b, fpmod.Fingerprint())
    assert not any(c in d for d in text for c in "{}'"), text
    assert ("database file changed: byteball.sqlite: size 1234 -> 5678 bytes, modified 00:00:00 -> 00:03:09 UTC, "
            "permissions -rw-r--r-- -> -rw-------") in text
    assert any(d.startswith("SQLite write-ahead log (-wal): size 0 -> 4152 bytes") for d in text), text
    assert any("MANIFEST-000005 -> MANIFEST-000009" in d for d in text), text


# ------------------------------------------------------------------ progress lines on the terminal


def test_promote_prints_progress_lines_with_done_total_and_eta(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    run_cli("stage", "--data-dir", str(node), check=True)
    run_cli("verify", "--data-dir", str(node), "--sample", "2", "--no-node-probe", check=True)
    proc = run_cli("promote", "--data-dir", str(node), "--yes", check=True)
    for step in ("other files", "ownership", "kv copy at promote", "swap"):  # no row counted, no key read
        line = next((ln for ln in proc.stderr.splitlines() if ln.startswith(step + ":")), None)
        assert line is not None and " ETA " in line and "/" in line, proc.stderr
    proc = run_cli("rollback", "--data-dir", str(node), "--yes", check=True)
    assert any(ln.startswith("swap: 1/1 (100.0%)") for ln in proc.stderr.splitlines()), proc.stderr


# ------------------------------------------------------------------ installed with pip


def _product_strings() -> list[tuple[str, int, str]]:
    """Every string constant of bluegreen/ that is not a docstring (messages, hints, help texts)."""
    found = []
    for f in sorted((REPO / "bluegreen").rglob("*.py")):
        tree = ast.parse(f.read_text())
        docs = {id(n.body[0].value) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for n in ast.walk(tree):
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs:
                found.append((str(f.relative_to(REPO)), n.lineno, n.value))
    return found


def test_product_messages_name_no_repository_scripts() -> None:
    strings = _product_strings()
    assert len(strings) > 500  # the walk really read the product
    bad = [(f, line, s[:80]) for f, line, s in strings if "scripts/" in s]
    assert not bad, bad


@pytest.mark.slow
def test_wheel_ships_the_schemas_and_finds_them_installed(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "-w", str(wheels), "--no-deps", "-q"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (whl,) = wheels.glob("bluegreen-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    committed = sorted(p.name for p in (REPO / "schemas").glob("*.schema.json"))
    assert sorted(n.split("/")[-1] for n in names if n.startswith("bluegreen/json_schemas/")) == committed
    assert any(n.startswith("bluegreen/schema/reference_data/full-v") for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(whl).extractall(site)
    # The installed copy, not the checkout: run outside the repository with only the wheel's files first.
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = ("import bluegreen, json; from bluegreen import jsonschemas; "
            "from bluegreen.schema.reference import load_reference; "
            "print(json.dumps([bluegreen.__file__, jsonschemas.names(), len(load_reference(29, False).tables)]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    import json

    where, schema_names, tables = json.loads(out.stdout)
    assert where.startswith(str(site)) and schema_names == [n[: -len(".schema.json")] for n in committed]
    assert tables > 20
    shown = subprocess.run([sys.executable, "-m", "bluegreen", "schema", "status-result"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and json.loads(shown.stdout)["title"] == "StatusResult", shown.stderr
