"""schemas/*.schema.json are exactly what the models produce (scripts/export-schemas --check), and a real
--json document of each command carries the fields its schema requires."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import REPO
from test_lifecycle_support import cli_json, make_node


def test_committed_schemas_are_up_to_date() -> None:
    proc = subprocess.run([str(REPO / "scripts" / "export-schemas"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_json_output_has_every_required_field_of_its_schema(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    for cmd, schema in (("status", "status-result"), ("stage", "stage-result"), ("abort", "abort-result"),
                        ("promote", "error-result")):
        rc, doc = cli_json(cmd, "--data-dir", str(node))
        required = json.loads((REPO / "schemas" / f"{schema}.schema.json").read_text())["required"]
        assert set(required) <= set(doc), (cmd, set(required) - set(doc))
