"""What operators expect of the `upgrade` command line: --version, -h, confirmations on a terminal, path
hints, signals handled like Ctrl-C, the tool version in every result and state file.

Real child processes; prompts are answered through a real pseudo-terminal (they only appear on a TTY)."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

from conftest import REPO
from test_lifecycle_support import PY, cli_json, make_node, run_cli

from bluegreen.version import tool_version


def test_version_flag_prints_the_package_version() -> None:
    out = run_cli("--version", check=True).stdout
    assert out.strip() == f"bluegreen {tool_version()}" and tool_version() not in ("", "0")


def test_dash_h_is_help_and_flags_have_no_bool_placeholder() -> None:
    out = run_cli("rollback", "-h", check=True).stdout
    assert "--force" in out and "--yes" in out
    for line in out.splitlines():
        if "--force" in line or "--json" in line or "--yes" in line:
            assert "<bool>" not in line and "--no-" not in line, line
    assert "--install-completion" in run_cli("--help", check=True).stdout


def test_results_and_state_record_the_tool_version(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    rc, doc = cli_json("stage", "--data-dir", str(node))
    assert rc == 0 and doc["tool_version"] == tool_version()
    state = json.loads((tmp_path / "node.bluegreen" / "state.json").read_text())
    assert state["tool_version"] == tool_version()
    rc, v = cli_json("verify", "--data-dir", str(node), "--sample", "2")
    assert rc == 0 and v["report"]["tool_version"] == tool_version()
    rc, err = cli_json("promote", "--data-dir", str(tmp_path / "nope"))
    assert rc == 2 and err["tool_version"] == tool_version()


def test_state_file_without_tool_version_still_loads(tmp_path: Path) -> None:
    from bluegreen.lifecycle.state import StateStore

    node = make_node(tmp_path)
    run_cli("stage", "--data-dir", str(node), check=True)
    path = tmp_path / "node.bluegreen" / "state.json"
    raw = json.loads(path.read_text())
    del raw["tool_version"]
    path.write_text(json.dumps(raw))
    assert StateStore(path.parent).load().tool_version is None  # type: ignore[union-attr]
    rc, st = cli_json("status", "--data-dir", str(node))
    assert rc == 0 and st["phase"] == "MIGRATED"


def test_path_mistakes_name_the_intended_dir(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    (node / "rocksdb").mkdir(exist_ok=True)
    for wrong in (node / "byteball.sqlite", node / "rocksdb"):
        rc, err = cli_json("status", "--data-dir", str(wrong))
        assert rc == 2 and f"did you mean --data-dir {node}?" in err["hint"], err
    rc, err = cli_json("stage", "--data-dir", "~/.config/obyte-hub")
    home = os.path.expanduser("~")
    assert rc == 2 and "did not expand" in err["message"] and f"{home}/.config/obyte-hub" in err["hint"]
    assert not (Path.cwd() / "~").exists()


def _pty_run(args: list[str], answer: bytes, timeout: float = 120) -> tuple[int, str]:
    """Run the CLI with stdin/stdout on a pty, type `answer` at the first prompt, return (rc, all output)."""
    master, slave = pty.openpty()
    child = subprocess.Popen([PY, "-m", "bluegreen", *args], cwd=REPO, stdin=slave, stdout=slave, stderr=slave,
                             close_fds=True)
    os.close(slave)
    out, sent, deadline = b"", False, time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.5)
        if r:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if not sent and b"[y/N]" in out:
                os.write(master, answer)
                sent = True
        elif child.poll() is not None:
            break
    rc = child.wait(timeout=timeout)
    os.close(master)
    return rc, out.decode(errors="replace")


def test_abort_asks_on_a_terminal_and_no_keeps_everything(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    run_cli("stage", "--data-dir", str(node), check=True)
    staging = tmp_path / "node.bluegreen"
    rc, out = _pty_run(["abort", "--data-dir", str(node)], b"n\n")
    assert rc == 1 and "[y/N]" in out and "nothing was done" in out and (staging / "state.json").exists()
    rc, out = _pty_run(["abort", "--data-dir", str(node)], b"y\n")
    assert rc == 0 and "aborted" in out and not staging.exists()


def test_promote_and_rollback_force_ask_and_yes_skips(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    run_cli("stage", "--data-dir", str(node), check=True)
    run_cli("verify", "--data-dir", str(node), check=True)
    rc, out = _pty_run(["promote", "--data-dir", str(node)], b"n\n")
    assert rc == 1 and "nothing was done" in out
    rc, st = cli_json("status", "--data-dir", str(node))
    assert st["phase"] == "VERIFIED"
    rc, out = _pty_run(["promote", "--data-dir", str(node), "--yes"], b"")
    assert rc == 0 and "[y/N]" not in out and "promoted" in out
    rc, out = _pty_run(["rollback", "--data-dir", str(node), "--force"], b"n\n")
    assert rc == 1 and "DISCARDING" in out
    rc, out = _pty_run(["rollback", "--data-dir", str(node), "-y"], b"")
    assert rc == 0 and "rolled back" in out


def test_non_tty_without_yes_proceeds_as_before(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    run_cli("stage", "--data-dir", str(node), check=True)
    proc = run_cli("abort", "--data-dir", str(node))
    assert proc.returncode == 0 and "aborted" in proc.stdout


def _signal_mid_stage(tmp_path: Path, sig: signal.Signals) -> tuple[int, str, Path, Path]:
    from faultkit import fresh_node, spawn

    node = fresh_node(tmp_path, "node", units=3000, seed=5)
    staging = tmp_path / "node.bluegreen"
    child = spawn("stage", "--data-dir", str(node))
    deadline = time.monotonic() + 240
    phase = ""
    while time.monotonic() < deadline and child.poll() is None:
        try:
            phase = json.loads((staging / "state.json").read_text()).get("phase", "")
        except (OSError, ValueError):
            phase = ""
        if phase == "MIGRATING":
            break
        time.sleep(0.05)
    assert phase == "MIGRATING" and child.poll() is None, f"stage ended before it could be signalled ({phase})"
    child.send_signal(sig)
    _out, err = child.communicate(timeout=120)
    return child.returncode, err, node, staging


def _resumes_and_verifies(node: Path, staging: Path) -> None:
    st = json.loads((staging / "state.json").read_text())
    assert st["phase"] == "MIGRATING", st["phase"]  # saved, resumable
    rc, res = cli_json("stage", "--data-dir", str(node))
    assert rc == 0 and res["phase"] == "MIGRATED", res
    rc, v = cli_json("verify", "--data-dir", str(node))
    assert rc == 0 and v["passed"], v["message"]


def test_sigterm_mid_stage_saves_state_exits_143_and_resumes(tmp_path: Path) -> None:
    rc, err, node, staging = _signal_mid_stage(tmp_path, signal.SIGTERM)
    assert rc == 143 and "interrupted by SIGTERM" in err and "Re-run `upgrade stage`" in err, (rc, err)
    _resumes_and_verifies(node, staging)


def test_sighup_mid_stage_saves_state_exits_129_and_resumes(tmp_path: Path) -> None:
    rc, err, node, staging = _signal_mid_stage(tmp_path, signal.SIGHUP)
    assert rc == 129 and "interrupted by SIGHUP" in err, (rc, err)
    _resumes_and_verifies(node, staging)


def test_json_holds_on_usage_errors(tmp_path: Path) -> None:
    from bluegreen.lifecycle.results import ErrorResult

    afile = tmp_path / "conf.json"
    afile.write_text("{}")
    for args, words in ((("verify", "--sample", "x"), "--sample"), (("stage", "--bogus"), "--bogus"),
                        (("status", "--data-dir", str(afile)), "is a file")):
        rc, doc = cli_json(*args)
        err = ErrorResult.model_validate(doc)
        assert rc == 2 and err.exit_code == 2 and words in err.message and err.hint, doc


def test_staging_dir_is_remembered_beside_the_data_dir(tmp_path: Path) -> None:
    from test_lifecycle_support import tree_hash

    node = make_node(tmp_path)
    blue = tree_hash(node)
    elsewhere = tmp_path / "stagings" / "hub"
    elsewhere.parent.mkdir()
    run_cli("stage", "--data-dir", str(node), "--staging-dir", str(elsewhere), check=True)
    ptr = tmp_path / "node.bluegreen-pointer"
    assert json.loads(ptr.read_text()) == {"data_dir": str(node), "staging_dir": str(elsewhere)}
    assert tree_hash(node) == blue and not (tmp_path / "node.bluegreen").exists()  # blue never written
    rc, st = cli_json("status", "--data-dir", str(node))
    assert rc == 0 and st["staging_dir"] == str(elsewhere) and st["phase"] == "MIGRATED"
    rc, v = cli_json("verify", "--data-dir", str(node), "--sample", "2")
    assert rc == 0 and v["passed"] and v["staging_dir"] == str(elsewhere)
    # A pointer to a staging area that was moved away is reported, not silently replaced by the default.
    elsewhere.rename(tmp_path / "stagings" / "moved")
    rc, err = cli_json("status", "--data-dir", str(node))
    assert rc == 2 and "does not exist any more" in err["message"] and str(ptr) in err["hint"]
    (tmp_path / "stagings" / "moved").rename(elsewhere)
    rc, ab = cli_json("abort", "--data-dir", str(node))
    assert rc == 0 and not elsewhere.exists() and not ptr.exists()


def test_log_file_in_the_staging_area_and_verbose_quiet(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    proc = run_cli("-q", "stage", "--data-dir", str(node), check=True)
    assert proc.stdout.strip().startswith("staged:") and len(proc.stdout.strip().splitlines()) == 1
    assert "next step" not in proc.stdout and proc.stderr == ""
    logp = tmp_path / "node.bluegreen" / "bluegreen.log"
    text = logp.read_text()
    assert "upgrade stage started" in text and "argv" in text and "upgrade stage ended: exit 0" in text
    assert "phase NONE -> SNAPSHOTTING" in text and "step " in text and " finished in " in text
    proc = run_cli("-v", "promote", "--data-dir", str(node))
    assert proc.returncode == 3 and "ERROR bluegreen.cli" in proc.stderr
    text = logp.read_text()
    assert "upgrade promote ended: exit 3" in text and "PreflightError" in text
