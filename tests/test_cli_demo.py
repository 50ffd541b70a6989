"""scripts/demo runs the whole flow on a generated v28 node and checks the data dir's bytes after each step."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import REPO


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    proc = subprocess.run([str(REPO / "scripts" / "demo"), str(tmp_path / "demo"), "60"], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for line in ("ok: blue untouched by stage", "ok: blue untouched by verify", "ok: data dir now holds exactly green",
                 "ok: data dir holds exactly blue again", "ok: data dir holds exactly green again",
                 "ok: target is the default", "target from: highest known"):
        assert line in out
    assert "warning: target version 50, the highest bluegreen knows" in proc.stderr
    assert "MISMATCH" not in out + proc.stderr
