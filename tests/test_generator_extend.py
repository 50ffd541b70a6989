"""`generate --extend`: a generated node continued in small steps stays a sound node (ocore's DAG rules, every
unit and ball re-hashes, our own stage + verify pass), deterministically for a seed, one transaction per step."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bluegreen.errors import BadInputError
from bluegreen.formats.hashing import get_ball_hash
from bluegreen.generator import canonical_dump_sha256, generate_node_dir
from bluegreen.generator.extend import extend_node_dir
from bluegreen.lifecycle import command
from test_lifecycle_support import one, rows

REPO = Path(__file__).resolve().parent.parent
STEPS = [1, 7, 50, 2, 50, 50, 30, 50]



@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    g = generate_node_dir(tmp_path_factory.mktemp("ext") / "base", units=300, version=28, seed=3)
    return g.out


def _extended(base: Path, dst: Path, seed: int = 1, steps: list[int] = STEPS) -> list[Any]:
    shutil.copytree(base, dst)
    return [extend_node_dir(dst, units=k, seed=seed) for k in steps]


def test_extend_is_deterministic_for_a_seed(base: Path, tmp_path: Path) -> None:
    a = _extended(base, tmp_path / "a")
    _extended(base, tmp_path / "b")
    _extended(base, tmp_path / "c", seed=2)
    da, db_, dc = (canonical_dump_sha256(tmp_path / n / "byteball.sqlite") for n in "abc")
    assert da == db_ != dc
    assert da != canonical_dump_sha256(base / "byteball.sqlite")
    assert a[-1].units_after == 300 + sum(STEPS) == one(tmp_path / "a" / "byteball.sqlite", "SELECT COUNT(*) FROM units")


def test_extended_node_follows_the_dag_rules_and_passes_stage_and_verify(base: Path, tmp_path: Path) -> None:
    node = tmp_path / "node"
    results = _extended(base, node)
    db = node / "byteball.sqlite"
    before = rows(base / "byteball.sqlite", "SELECT COUNT(*), MAX(main_chain_index) FROM units WHERE is_stable=1")[0]
    # stability advanced and new units became stable, with balls; final-bad units got voided on the way
    assert results[-1].last_stable_mci > before[1]
    assert sum(r.newly_stable for r in results) > 0 and sum(r.voided for r in results) > 0
    assert sum(r.peers_added for r in results) > 0 and one(db, "SELECT COUNT(*) FROM peers") > 0
    # new units were inserted on arrival: rowids continue in arrival order
    assert [r[0] for r in rows(db, "SELECT rowid FROM units ORDER BY rowid")] == list(range(1, results[-1].units_after + 1))
    # free units are exactly those without children; stable ones have balls that re-hash
    assert one(db, "SELECT COUNT(*) FROM units WHERE is_free != (unit NOT IN (SELECT parent_unit FROM parenthoods))") == 0
    assert one(db, "SELECT COUNT(*) FROM balls") == one(db, "SELECT COUNT(*) FROM units WHERE is_stable=1")
    for ball, unit, sequence in rows(db, "SELECT ball, unit, sequence FROM balls JOIN units USING(unit)"):
        parent_balls = [r[0] for r in rows(db, "SELECT ball FROM parenthoods JOIN balls ON parent_unit=balls.unit "
                                               "WHERE child_unit=? ORDER BY ball", unit)]
        skip = [r[0] for r in rows(db, "SELECT ball FROM skiplist_units JOIN balls ON skiplist_unit=balls.unit "
                                       "WHERE skiplist_units.unit=? ORDER BY ball", unit)]
        assert get_ball_hash(unit, parent_balls, skip, sequence == "final-bad") == ball
    # the main chain: one unit per index from 0, stable ones a prefix, each MC unit's best parent the previous
    mc = rows(db, "SELECT main_chain_index, is_stable FROM units WHERE is_on_main_chain=1 ORDER BY main_chain_index")
    assert [m for m, _ in mc] == list(range(len(mc)))
    assert [s for _, s in mc] == sorted((s for _, s in mc), reverse=True)
    assert one(db, "SELECT COUNT(*) FROM units u JOIN units b ON b.unit=u.best_parent_unit WHERE u.is_on_main_chain=1 "
                   "AND (b.is_on_main_chain=0 OR b.main_chain_index != u.main_chain_index-1)") == 0
    # unit_authors._mci follows the units' mci; outputs spent by a good input are marked spent
    assert one(db, "SELECT COUNT(*) FROM unit_authors a JOIN units u USING(unit) WHERE a._mci IS NOT u.main_chain_index") == 0
    assert one(db, "SELECT COUNT(*) FROM inputs i JOIN outputs o ON o.unit=i.src_unit AND o.message_index="
                   "i.src_message_index AND o.output_index=i.src_output_index WHERE i.is_unique=1 AND o.is_spent=0") == 0
    # voided final-bad units keep their content hash, lose their content, and are archived
    last_mc_lb = rows(db, "SELECT last_ball_unit FROM units WHERE is_on_main_chain=1 AND is_stable=1 "
                          "ORDER BY main_chain_index DESC LIMIT 1")[0][0]
    mrm = one(db, "SELECT main_chain_index FROM units WHERE unit=?", last_mc_lb)
    assert mrm == results[-1].min_retrievable_mci
    voided = [r[0] for r in rows(db, "SELECT unit FROM units WHERE sequence='final-bad' AND main_chain_index < ?", mrm)]
    assert len(voided) == one(db, "SELECT COUNT(*) FROM archived_joints WHERE reason='voided'") > 1
    for unit in voided:
        assert one(db, "SELECT content_hash FROM units WHERE unit=?", unit) is not None
        assert one(db, "SELECT COUNT(*) FROM messages WHERE unit=?", unit) == 0
        assert one(db, "SELECT COUNT(*) FROM authentifiers WHERE unit=?", unit) == 0
    assert one(db, "PRAGMA integrity_check") == "ok" and rows(db, "PRAGMA foreign_key_check") == []
    # and our own tool: stage migrates it with every unit hash checked, verify passes every check
    command.stage(node)
    v = command.verify(node)
    assert v.passed, [c for c in v.report.checks if not c.passed] if v.report else v


def test_cli_extends_and_refuses_what_it_cannot_continue(base: Path, tmp_path: Path) -> None:
    node = tmp_path / "cli"
    shutil.copytree(base, node)
    cmd = [sys.executable, "-m", "bluegreen.generator.cli", "--extend", str(node), "--units", "12", "--seed", "4",
           "--json"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    r = json.loads(done.stdout)
    assert r["added_units"] == 12 and r["units_after"] == 312 == r["max_rowid"]
    both = subprocess.run([*cmd[:3], "--out", str(tmp_path / "x"), *cmd[3:]], cwd=REPO, capture_output=True, text=True)
    assert both.returncode == 2 and "exactly one of --out" in both.stderr
    stuck = generate_node_dir(tmp_path / "stuck", units=120, version=29, stuck_at_30=True)
    with pytest.raises(BadInputError, match="rocksdb"):
        extend_node_dir(stuck.out, units=3)
    light = generate_node_dir(tmp_path / "light", units=120, version=28, light=True)
    with pytest.raises(BadInputError, match="light"):
        extend_node_dir(light.out, units=3)


@pytest.mark.parametrize("version,network", [(16, "devnet"), (6, "testnet")])
def test_many_small_steps_on_old_schemas_stay_sound(tmp_path: Path, version: int, network: str) -> None:
    """Schemas without units.timestamp (< 28) or unit_authors._mci (< 16); 40 steps of 1..50 units."""
    import random

    g = generate_node_dir(tmp_path / "n", units=150, version=version, network=network, seed=version)
    rng = random.Random(version)
    results = [extend_node_dir(g.out, units=rng.randint(1, 50), seed=i) for i in range(40)]
    assert sum(r.voided for r in results) > 0 and results[-1].last_stable_mci > g.last_stable_mci
    assert one(g.db_path, "PRAGMA user_version") == version
    assert one(g.db_path, "PRAGMA integrity_check") == "ok" and rows(g.db_path, "PRAGMA foreign_key_check") == []
    command.stage(g.out)
    v = command.verify(g.out)
    assert v.passed, [c for c in v.report.checks if not c.passed] if v.report else v
