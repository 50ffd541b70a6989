"""Progress callbacks are really called for the long single-statement phases: quick_check, the SQL schema
steps, integrity_check and foreign_key_check (a real callback recording calls, on a real generated db)."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from bluegreen.generator import generate_node_dir
from bluegreen.lifecycle import snapshot, verify
from bluegreen.lifecycle.state import StateStore
from bluegreen.schema.runner import apply_schema_steps

Calls = list[tuple[str, int, int]]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("progress") / "node"
    generate_node_dir(out, units=2000, version=27, seed=11, network="devnet")
    return out


def _recorder() -> tuple[Calls, "callable"]:
    calls: Calls = []
    return calls, lambda step, done, total: calls.append((step, done, total))


def _assert_runs_from_zero_to_total(calls: Calls, step: str, min_between: int = 1) -> None:
    mine = [c for c in calls if c[0] == step]
    assert mine, calls
    total = mine[0][2]
    assert mine[0][1] == 0 and mine[-1] == (step, total, total)
    between = [c for c in mine[1:-1]]
    assert len(between) >= min_between, mine  # called while the PRAGMA ran, not only before/after
    assert all(0 <= d < total for _s, d, _t in between)
    assert [d for _s, d, _t in mine] == sorted(d for _s, d, _t in mine)


def test_quick_check_reports_progress_while_it_runs(node: Path) -> None:
    calls, cb = _recorder()
    assert snapshot.quick_check(node / "byteball.sqlite", cb) == []
    _assert_runs_from_zero_to_total(calls, "quick_check")


def test_integrity_and_foreign_key_checks_report_progress(node: Path) -> None:
    conn = apsw.Connection(str(node / "byteball.sqlite"), flags=apsw.SQLITE_OPEN_READONLY)
    calls, cb = _recorder()
    assert verify.check_integrity(conn, cb).passed
    _assert_runs_from_zero_to_total(calls, verify.CHECK_INTEGRITY)
    calls.clear()
    assert verify.check_foreign_keys(conn, conn, cb).passed
    _assert_runs_from_zero_to_total(calls, verify.CHECK_FOREIGN_KEYS, min_between=0)
    # green has no violation: blue is not read at all
    assert not any(step == verify.CHECK_FOREIGN_KEYS + " (blue)" for step, _d, _t in calls)


def test_schema_steps_report_one_call_per_step(node: Path, tmp_path: Path) -> None:
    db = tmp_path / "copy.sqlite"
    db.write_bytes((node / "byteball.sqlite").read_bytes())
    conn = apsw.Connection(str(db))
    calls, cb = _recorder()
    conn.execute("BEGIN")
    report = apply_schema_steps(conn, 27, light=False, progress=cb)
    conn.execute("ROLLBACK")
    assert report.steps == [28, 29, 30]
    assert calls == [("schema steps", 0, 3), ("schema steps", 1, 3), ("schema steps", 2, 3), ("schema steps", 3, 3)]


# ------------------------------------------------------------------ promote / rollback (the swap and its passes)


def _staged_and_verified(tmp_path: Path) -> Path:
    from test_lifecycle_support import make_node

    from bluegreen.lifecycle import command

    node = make_node(tmp_path)
    command.stage(node)
    assert command.verify(node, sample=2, no_node_probe=True).passed
    return node


def _steps(calls: Calls) -> list[str]:
    return list(dict.fromkeys(s for s, _d, _t in calls))


def test_promote_and_rollback_report_every_long_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bluegreen.lifecycle import command

    node = _staged_and_verified(tmp_path)
    (node / "conf.json").write_text('{"edited": "after stage"}\n')  # promote copies it: the "other files" pass
    calls, cb = _recorder()
    command.promote(node, progress=cb)
    # No row counted, no key read: the baseline is verify's row counts and a hard-linked copy of green's KV.
    assert _steps(calls) == ["other files", "ownership", "kv copy at promote", "swap"], _steps(calls)
    assert set(_steps(calls)) <= set(command.COMMAND_STEPS["promote"])  # what status counts "step k of n" in
    for step in ("other files", "kv copy at promote", "swap"):
        _assert_runs_from_zero_to_total(calls, step, min_between=0)
    # The journaled fallback moves every entry one by one: its progress counts them.
    monkeypatch.setenv("BLUEGREEN_SWAP_MECHANISM", "fallback")
    calls.clear()
    command.rollback(node, progress=cb)
    assert "ownership" in _steps(calls) and _steps(calls)[-1] == "swap"
    _assert_runs_from_zero_to_total(calls, "swap", min_between=2)
