"""The `upgrade` command line: exit codes of docs/exit-codes.md, --json documents, --help text.

Every case runs `python -m bluegreen` as a real child process."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bluegreen.lifecycle.results import ErrorResult, StageResult, StatusResult, VerifyResult
from test_lifecycle_support import PY, cli_json, holding, make_node, run_cli


def test_help_says_what_is_and_is_not_touched() -> None:
    out = run_cli("--help", check=True).stdout
    assert "only ever READ" in out and "staging area" in out
    for cmd in ("stage", "verify", "promote", "rollback", "status", "abort"):
        assert cmd in out
    assert "hard-linked" in run_cli("stage", "--help", check=True).stdout
    assert "--force" in run_cli("rollback", "--help", check=True).stdout
    assert "--sample" in run_cli("verify", "--help", check=True).stdout


def test_json_documents_follow_the_models(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    rc, st = cli_json("status", "--data-dir", str(node))
    assert rc == 0 and StatusResult.model_validate(st).phase.value == "NONE"
    rc, sg = cli_json("stage", "--data-dir", str(node))
    assert rc == 0 and StageResult.model_validate(sg).migration["completed"] is True  # type: ignore[index]
    rc, again = cli_json("stage", "--data-dir", str(node))
    assert rc == 0 and again["noop"] is True
    rc, v = cli_json("verify", "--data-dir", str(node), "--sample", "3")
    assert rc == 0 and VerifyResult.model_validate(v).report.sample == 3  # type: ignore[union-attr]


def test_text_output_prints_next_step(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    out = run_cli("stage", "--data-dir", str(node), check=True).stdout
    assert "staged:" in out and "next step: upgrade verify" in out


def test_exit_codes_of_refusals(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    # 2: not an ocore data dir
    rc, err = cli_json("stage", "--data-dir", str(tmp_path))
    assert rc == 2 and ErrorResult.model_validate(err).error == "BadInputError"
    # 3: promote before anything is staged
    rc, err = cli_json("promote", "--data-dir", str(node))
    assert rc == 3 and "nothing is staged" in err["message"] and err["hint"]
    run_cli("stage", "--data-dir", str(node), check=True)
    # 3: promote before verify
    rc, err = cli_json("promote", "--data-dir", str(node))
    assert rc == 3 and "verify" in err["hint"]
    run_cli("verify", "--data-dir", str(node), check=True)
    # 4: node running (a process holds the SQLite write lock)
    with holding(node / "byteball.sqlite", "sqlite-write-lock"):
        rc, err = cli_json("promote", "--data-dir", str(node))
        assert rc == 4 and err["error"] == "NodeRunningError"
    # 9: another upgrade process holds the staging lock
    lock = tmp_path / "node.bluegreen" / "lock"
    code = ("import time; from pathlib import Path; from bluegreen.lifecycle.lock import StagingLock\n"
            f"l=StagingLock(Path({str(lock)!r})); l.acquire(); print('locked', flush=True); time.sleep(600)")
    child = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"  # type: ignore[union-attr]
        rc, err = cli_json("promote", "--data-dir", str(node))
        assert rc == 9 and err["error"] == "LockedError"
        rc, st = cli_json("status", "--data-dir", str(node))  # status still answers, read-only
        assert rc == 0 and st["locked_by_pid"] == child.pid
    finally:
        child.kill()
        child.wait()
    # 3: rollback before promote
    proc = run_cli("rollback", "--data-dir", str(node))
    assert proc.returncode == 3 and "nothing to roll back" in proc.stderr and "next step:" in proc.stderr


def test_failed_verify_exits_7_and_drift_exits_8(tmp_path: Path) -> None:
    import apsw

    node = make_node(tmp_path)
    run_cli("stage", "--data-dir", str(node), check=True)
    conn = apsw.Connection(str(node / "byteball.sqlite"))
    conn.execute("INSERT INTO peer_hosts(peer_host) VALUES('drift.example')")
    conn.close()
    proc = run_cli("verify", "--data-dir", str(node))
    assert proc.returncode == 7 and "[FAIL] blue_unchanged_since_stage" in proc.stdout
    rc, err = cli_json("promote", "--data-dir", str(node))
    assert rc == 7 and err["error"] == "VerificationFailed"
    run_cli("stage", "--data-dir", str(node), check=True)  # re-stage
    run_cli("verify", "--data-dir", str(node), check=True)
    conn = apsw.Connection(str(node / "byteball.sqlite"))
    conn.execute("INSERT INTO peer_hosts(peer_host) VALUES('drift2.example')")
    conn.close()
    rc, err = cli_json("promote", "--data-dir", str(node))
    assert rc == 8 and err["error"] == "DriftError"
