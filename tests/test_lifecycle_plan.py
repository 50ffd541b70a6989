"""`upgrade plan` / `upgrade stage --dry-run`: writes nothing anywhere, and shows the right numbers.

Also: the free-space estimate is close to what stage really uses (measured with st_blocks, hard links once)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bluegreen.generator import generate_node_dir
from bluegreen.lifecycle import layout as layoutmod
from bluegreen.lifecycle import plan as planmod
from bluegreen.lifecycle import command, snapshot
from conftest import REPO
from test_lifecycle_support import cli_json, holding, make_node, run_cli


def _exact_tree(root: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Every entry under root: (mode, size, mtime_ns, content) - files and dirs, nothing excluded."""
    out: dict[str, tuple[int, int, int, bytes]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            data = p.read_bytes() if p.is_file() and not p.is_symlink() else b""
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, data)
    return out


def _allocated(root: Path, seen: set[tuple[int, int]]) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def test_plan_and_dry_run_write_nothing_not_even_the_staging_dir(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    before = _exact_tree(tmp_path)
    result = planmod.plan(node)
    assert result.ok and not result.staging_exists
    for args in (("plan",), ("stage", "--dry-run"), ("plan", "--json"), ("stage", "--dry-run", "--json")):
        proc = run_cli(*args, "--data-dir", str(node))
        assert proc.returncode == 0, proc.stderr
        assert "nothing was written" in proc.stdout
    assert _exact_tree(tmp_path) == before
    assert not (tmp_path / "node.bluegreen").exists()


def test_plan_writes_nothing_while_the_node_holds_its_files(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    with holding(node / "byteball.sqlite", "fcntl"):
        before = _exact_tree(tmp_path)
        result = planmod.plan(node)
        assert _exact_tree(tmp_path) == before
    assert result.node is not None and result.node.running
    assert any("node is running" in w for w in result.warnings)


def test_plan_shows_versions_steps_units_space_and_time(tmp_path: Path) -> None:
    node = tmp_path / "node"
    gen = generate_node_dir(node, units=150, version=27, seed=4, network="devnet")
    result = planmod.plan(node, target_version=31)
    assert result.source_version == 27 and result.target_version == 31 and result.target_origin == "--to"
    assert [s.version for s in result.steps] == [28, 29, 30, 31]
    assert all(s.description for s in result.steps)
    assert result.units == 150 and gen.user_version == 27
    assert result.space is not None and result.space_enough
    assert result.space.needed_bytes == (result.space.copy_bytes + result.space.kv_estimate_bytes
                                         + result.space.margin_bytes)
    assert "0.25 x SQLite size" in result.space_method
    assert result.stage_seconds_estimate == result.units / planmod.STAGE_UNITS_PER_SECOND
    assert result.node is not None and not result.node.running
    text = planmod.describe(result)
    for needle in ("source 27 -> target 31", "step:        28", "units:       150", "how:", "node:        not "
                   "running", "ocore:", "time:"):
        assert needle in text, needle


def test_plan_without_a_node_program_goes_to_50_and_lists_every_step_with_a_note(tmp_path: Path) -> None:
    node = tmp_path / "node"
    generate_node_dir(node, units=50, version=29, seed=4, network="devnet")
    result = planmod.plan(node)
    assert (result.source_version, result.target_version) == (29, 50)
    assert [s.version for s in result.steps] == list(range(30, 51))
    assert "highest known" in result.target_origin
    assert any("the highest bluegreen knows" in w for w in result.warnings), result.warnings
    assert "target from: highest known" in planmod.describe(result)


def test_plan_of_an_upgraded_node_says_nothing_to_do(devnet_v31: Path) -> None:
    result = planmod.plan(devnet_v31, target_version=31)
    assert result.source_version == 31 and result.steps == []
    assert "nothing to do" in result.message


def test_plan_finds_ocore_version_from_its_package_json(tmp_path: Path) -> None:
    nm = tmp_path / "app" / "node_modules"
    (nm / "ocore").mkdir(parents=True)
    (nm / "ocore" / "package.json").write_text(json.dumps({"name": "ocore", "version": "0.4.6"}))
    assert planmod.ocore_version(nm) == "0.4.6"
    assert planmod.ocore_version(None) is None
    assert planmod.ocore_version(tmp_path) is None


def test_plan_json_carries_every_field_its_schema_requires(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    rc, doc = cli_json("plan", "--data-dir", str(node))
    assert rc == 0
    schema = json.loads((REPO / "schemas" / "plan-result.schema.json").read_text())
    assert set(schema["required"]) <= set(doc)
    assert set(doc) <= set(schema["properties"])
    assert doc["command"] == "plan" and doc["steps"][-1]["version"] == 50 and doc["target_version"] == 50


def test_space_estimate_is_within_25_percent_of_what_stage_really_uses(tmp_path: Path) -> None:
    node = tmp_path / "node"
    generate_node_dir(node, units=2000, version=28, seed=7, network="devnet")
    est = snapshot.estimate_space(layoutmod.resolve(node, None))
    command.stage(node)
    seen: set[tuple[int, int]] = set()
    _allocated(node, seen)  # blue's blocks first, so hard-linked .sst count as already there
    used = _allocated(tmp_path / "node.bluegreen", seen)
    footprint = est.copy_bytes + est.kv_estimate_bytes
    assert 0.75 * used <= footprint <= 1.25 * used, (footprint, used)
    assert est.needed_bytes >= used  # with the margin, stage never runs short on this node
