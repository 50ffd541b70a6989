"""The generator makes old node data dirs the way ocore stored them: every unit id and ball re-hashes,
the DAG follows ocore's main-chain rules, the schema is the requested version, and our own v31 step
migrates the result with every hash check on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rocksdict import Options, Rdict

from bluegreen.formats.chash import definition_address
from bluegreen.formats.hashing import get_ball_hash, get_unit_hash
from bluegreen.formats.networks import NETWORKS
from bluegreen.generator import GeneratedNode, canonical_dump_sha256, generate_node_dir
from test_lifecycle_support import one, rows

REPO = Path(__file__).resolve().parent.parent
APPS = ["payment", "data_feed", "data", "text", "profile", "attestation", "poll", "vote", "asset", "asset_attestors",
        "definition_template", "address_definition_change"]



@pytest.fixture(scope="module")
def default_node(tmp_path_factory: pytest.TempPathFactory) -> tuple[GeneratedNode, list[dict[str, Any]]]:
    """A full mainnet node at schema 28 of the default CLI size, with every unit as composed."""
    units: list[dict[str, Any]] = []
    g = generate_node_dir(tmp_path_factory.mktemp("gen") / "node", units=2000, version=28,
                          on_unit=lambda u: units.append(u))
    return g, units


def test_every_unit_id_is_the_hash_of_the_unit_built(default_node: tuple[GeneratedNode, list[dict[str, Any]]]) -> None:
    g, units = default_node
    assert len(units) == g.units == one(g.db_path, "SELECT COUNT(*) FROM units")
    for u in units:
        assert get_unit_hash(u, NETWORKS["mainnet"]) == u["unit"]
    assert {u["unit"] for u in units} == {r[0] for r in rows(g.db_path, "SELECT unit FROM units")}


def test_every_ball_is_the_hash_of_its_parent_and_skiplist_balls(default_node: tuple[GeneratedNode, Any]) -> None:
    g, _ = default_node
    db = g.db_path
    balls = rows(db, "SELECT ball, unit, sequence FROM balls JOIN units USING(unit)")
    assert len(balls) == one(db, "SELECT COUNT(*) FROM units WHERE is_stable=1")
    nonserial = 0
    for ball, unit, sequence in balls:
        parent_balls = [r[0] for r in rows(db, "SELECT ball FROM parenthoods JOIN balls ON parent_unit=balls.unit "
                                               "WHERE child_unit=? ORDER BY ball", unit)]
        skiplist_balls = [r[0] for r in rows(db, "SELECT ball FROM skiplist_units JOIN balls ON skiplist_unit=balls.unit "
                                                 "WHERE skiplist_units.unit=? ORDER BY ball", unit)]
        nonserial += sequence == "final-bad"
        assert get_ball_hash(unit, parent_balls, skiplist_balls, sequence == "final-bad") == ball
    assert nonserial > 0
    # skiplists: an MC unit at mci divisible by 10**k points at the MC units 10, 100, .. 10**k indexes back
    for unit, mci in rows(db, "SELECT unit, main_chain_index FROM units WHERE is_on_main_chain=1 AND is_stable=1 "
                              "AND main_chain_index>0 AND main_chain_index % 10 = 0"):
        want, divisor = set(), 10  # main_chain.js getSimilarMcis
        while mci % divisor == 0:
            want.add(mci - divisor)
            divisor *= 10
        got = {r[0] for r in rows(db, "SELECT main_chain_index FROM skiplist_units JOIN units "
                                      "ON skiplist_unit=units.unit WHERE skiplist_units.unit=?", unit)}
        assert got == want


def test_the_dag_follows_ocore_main_chain_rules(default_node: tuple[GeneratedNode, Any]) -> None:
    g, _ = default_node
    db = g.db_path
    genesis = rows(db, "SELECT unit, level, witnessed_level, main_chain_index, is_stable, is_on_main_chain FROM units "
                       "WHERE unit NOT IN (SELECT child_unit FROM parenthoods)")
    assert genesis == [(g.genesis_unit, 0, 0, 0, 1, 1)]
    assert one(db, "SELECT COUNT(*) FROM unit_witnesses WHERE unit=?", g.genesis_unit) == 12
    # level = max parent level + 1
    assert one(db, "SELECT COUNT(*) FROM units u WHERE level != 1 + (SELECT MAX(p.level) FROM parenthoods "
                   "JOIN units p ON p.unit=parent_unit WHERE child_unit=u.unit) AND u.unit != ?", g.genesis_unit) == 0
    # the main chain has one unit per index, consecutive from 0; stable ones form a prefix
    mc = rows(db, "SELECT main_chain_index, is_stable FROM units WHERE is_on_main_chain=1 ORDER BY main_chain_index")
    assert [m for m, _ in mc] == list(range(len(mc)))
    assert [s for _, s in mc] == sorted((s for _, s in mc), reverse=True)
    assert g.last_stable_mci == max(m for m, s in mc if s)
    # every MC unit's best parent is the previous MC unit
    assert one(db, "SELECT COUNT(*) FROM units u JOIN units b ON b.unit=u.best_parent_unit WHERE u.is_on_main_chain=1 "
                   "AND (b.is_on_main_chain=0 OR b.main_chain_index != u.main_chain_index-1)") == 0
    # an unstable tail, including units not yet on any MC index
    assert g.unstable > 0 and g.null_mci > 0
    assert one(db, "SELECT COUNT(*) FROM units WHERE main_chain_index IS NULL") == g.null_mci
    assert one(db, "SELECT COUNT(*) FROM units WHERE is_stable=0") == g.unstable
    # last balls are stable MC units with balls
    assert one(db, "SELECT COUNT(*) FROM units u JOIN units l ON l.unit=u.last_ball_unit JOIN balls b ON b.unit=l.unit "
                   "WHERE l.is_on_main_chain=1 AND l.is_stable=1") == g.units - 1
    # min_retrievable_mci as storage.initializeMinRetrievableMci computes it
    last_mc = rows(db, "SELECT last_ball_unit FROM units WHERE is_on_main_chain=1 AND is_stable=1 "
                       "ORDER BY main_chain_index DESC LIMIT 1")[0][0]
    assert one(db, "SELECT main_chain_index FROM units WHERE unit=?", last_mc) == g.min_retrievable_mci
    # free units are exactly those without children
    assert one(db, "SELECT COUNT(*) FROM units WHERE is_free != (unit NOT IN (SELECT parent_unit FROM parenthoods))") == 0


def test_default_size_has_every_message_type_and_storage_shape(default_node: tuple[GeneratedNode, Any]) -> None:
    g, _ = default_node
    db = g.db_path
    for app in APPS:
        assert one(db, "SELECT COUNT(*) FROM messages WHERE app=?", app) > 0, app
    for table in ["polls", "poll_choices", "votes", "attestations", "attested_fields", "assets", "asset_denominations",
                  "asset_attestors", "address_definition_changes", "spend_proofs", "earned_headers_commission_recipients",
                  "definitions", "witnessing_outputs", "headers_commission_outputs", "archived_joints", "skiplist_units"]:
        assert one(db, f"SELECT COUNT(*) FROM {table}") > 0, table
    for t in ["transfer", "issue", "headers_commission", "witnessing"]:
        assert one(db, "SELECT COUNT(*) FROM inputs WHERE type=?", t) > 0, t
    assert one(db, "SELECT COUNT(*) FROM inputs WHERE type='issue' AND serial_number=1 AND asset IS NOT NULL") > 0
    assert one(db, "SELECT COUNT(*) FROM inputs JOIN assets ON assets.unit=inputs.asset WHERE fixed_denominations=1") > 0
    assert one(db, "SELECT COUNT(*) FROM inputs WHERE type='witnessing' AND from_main_chain_index<=to_main_chain_index") > 0
    assert one(db, "SELECT COUNT(*) FROM messages WHERE payload_location='uri' AND payload_uri IS NOT NULL") > 0
    assert one(db, "SELECT COUNT(*) FROM messages WHERE payload_location='none' AND app='payment'") > 0
    assert one(db, "SELECT COUNT(*) FROM (SELECT unit FROM unit_authors GROUP BY unit HAVING COUNT(*) > 1)") > 0
    assert one(db, "SELECT COUNT(*) FROM outputs WHERE is_spent=1") > 0
    # data feeds: strings in `value`, integers in int_value, tricky numeric strings kept as strings
    assert one(db, "SELECT COUNT(*) FROM data_feeds WHERE int_value IS NOT NULL AND value IS NULL") > 0
    values = {r[0] for r in rows(db, "SELECT value FROM data_feeds WHERE value IS NOT NULL")}
    assert {"1e3", "007", "1.50", "123456789012345678", "-0", "1e400"} <= values
    # JS for-in order: "9" is stored before "10"
    for unit in [r[0] for r in rows(db, "SELECT unit FROM data_feeds WHERE feed_name='10'")]:
        names = [r[0] for r in rows(db, "SELECT feed_name FROM data_feeds WHERE unit=? ORDER BY rowid", unit)]
        assert names.index("9") < names.index("10") == 1
    # data payloads are JSON.stringify'd: integer-like keys first, JS number text
    data = rows(db, "SELECT payload FROM messages WHERE app='data' AND payload_location='inline' LIMIT 1")[0][0]
    assert data.startswith('{"9":2,"10":1,"a":3,') and '"big":1e+21' in data and '"small":1.5e-7' in data
    # both unit versions, the first with timestamp 0
    assert rows(db, "SELECT DISTINCT version FROM units ORDER BY version") == [("1.0",), ("2.0",)]
    assert one(db, "SELECT COUNT(*) FROM units WHERE version='1.0' AND timestamp != 0") == 0
    assert one(db, "SELECT COUNT(*) FROM units WHERE version='2.0' AND timestamp = 0") == 0
    # a definition change, then a unit by the new definition
    assert one(db, "SELECT COUNT(*) FROM unit_authors ua JOIN address_definition_changes c ON c.address=ua.address "
                   "AND c.definition_chash=ua.definition_chash WHERE ua.unit != c.unit") > 0
    for chash, definition in rows(db, "SELECT definition_chash, definition FROM definitions"):
        assert definition_address(json.loads(definition)) == chash
    assert one(db, "SELECT COUNT(*) FROM definitions WHERE has_references=1") > 0


def test_final_bad_units_below_min_retrievable_are_voided(default_node: tuple[GeneratedNode, Any]) -> None:
    g, _ = default_node
    db = g.db_path
    voided = [r[0] for r in rows(db, "SELECT unit FROM units WHERE sequence='final-bad' AND main_chain_index < ?",
                                 g.min_retrievable_mci)]
    assert len(voided) == g.voided > 0
    for unit in voided:
        assert one(db, "SELECT content_hash FROM units WHERE unit=?", unit) is not None
        for table in ["messages", "authentifiers", "inputs", "outputs", "spend_proofs", "data_feeds",
                      "earned_headers_commission_recipients"]:
            assert one(db, f"SELECT COUNT(*) FROM {table} WHERE unit=?", unit) == 0, table
        assert one(db, "SELECT COUNT(*) FROM unit_authors WHERE unit=? AND definition_chash IS NULL", unit) >= 1
        assert one(db, "SELECT reason FROM archived_joints WHERE unit=?", unit) == "voided"
    # the double-spent output is spent by a good unit too; the bad input is not unique
    assert one(db, "SELECT COUNT(*) FROM inputs WHERE is_unique IS NULL") == g.final_bad - g.voided


@pytest.mark.parametrize("version,light", [(6, False), (16, False), (20, False), (28, True), (29, False)])
def test_database_is_sound_at_each_version(tmp_path: Path, version: int, light: bool) -> None:
    g = generate_node_dir(tmp_path / "n", units=400, version=version, light=light, seed=3)
    db = g.db_path
    assert db.name == ("byteball-light.sqlite" if light else "byteball.sqlite")
    assert one(db, "PRAGMA user_version") == version == g.user_version
    assert one(db, "PRAGMA integrity_check") == "ok"
    assert rows(db, "PRAGMA foreign_key_check") == []
    cols = {r[1] for r in rows(db, "PRAGMA table_info(units)")}
    assert ("timestamp" in cols) == (version >= 28)
    assert one(db, "SELECT COUNT(*) FROM units") == 400
    if light:
        assert one(db, "SELECT COUNT(*) FROM balls") == 0
    else:
        assert one(db, "SELECT COUNT(*) FROM balls") == one(db, "SELECT COUNT(*) FROM units WHERE is_stable=1")
    assert json.loads(g.conf_path.read_text())["bLight"] is light
    assert set(json.loads(g.keys_path.read_text())) >= {"mnemonic_phrase", "temp_priv_key"}


def test_same_seed_same_data_other_seed_other_data(tmp_path: Path) -> None:
    a = generate_node_dir(tmp_path / "a", units=300, version=28, seed=7)
    b = generate_node_dir(tmp_path / "b", units=300, version=28, seed=7)
    c = generate_node_dir(tmp_path / "c", units=300, version=28, seed=8)
    assert canonical_dump_sha256(a.db_path) == canonical_dump_sha256(b.db_path)
    assert canonical_dump_sha256(a.db_path) != canonical_dump_sha256(c.db_path)
    assert a.genesis_unit == b.genesis_unit != c.genesis_unit
    assert a.conf_path.read_bytes() == b.conf_path.read_bytes()


@pytest.mark.parametrize("network,v1,v2,alt", [("testnet", "1.0t", "2.0t", "2"), ("devnet", "1.0dev", "2.0dev", "3")])
def test_network_selects_version_strings(tmp_path: Path, network: str, v1: str, v2: str, alt: str) -> None:
    units: list[dict[str, Any]] = []
    g = generate_node_dir(tmp_path / "n", units=200, version=28, network=network, on_unit=units.append)
    assert rows(g.db_path, "SELECT DISTINCT version, alt FROM units ORDER BY version") == [(v1, alt), (v2, alt)]
    for u in units:
        assert get_unit_hash(u, NETWORKS[network]) == u["unit"]


def test_stuck_at_30_has_v30_schema_and_a_partial_kv(tmp_path: Path) -> None:
    g = generate_node_dir(tmp_path / "n", units=300, version=28, stuck_at_30=True)
    db = g.db_path
    assert one(db, "PRAGMA user_version") == 30
    tables = {r[0] for r in rows(db, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"joints", "aa_addresses", "aa_triggers", "aa_balances", "aa_responses"} <= tables
    assert one(db, "SELECT COUNT(*) FROM data_feeds") > 0  # the SQL data is all still there
    assert g.kv_dir is not None
    kv = Rdict(str(g.kv_dir), Options(raw_mode=True))  # our own freshly generated dir, not a shared fixture
    try:
        keys = [k for k, _ in kv.items()]
        first = json.loads(kv[keys[0]])
    finally:
        kv.close()
    assert all(k.startswith(b"j\n") for k in keys)
    assert 0 < len(keys) == g.kv_joints < g.units
    assert "unit" in first and "authors" in first["unit"]


def test_our_v31_step_migrates_generated_dirs_with_every_hash_checked(tmp_path: Path) -> None:
    from bluegreen.engine.migrate import MigrationOptions, migrate_copy

    for name, kw in {"v28": {"version": 28}, "devnet-v16": {"version": 16, "network": "devnet"},
                     "stuck": {"version": 29, "stuck_at_30": True}}.items():
        g = generate_node_dir(tmp_path / name, units=600, **kw)
        report = migrate_copy(g.db_path, g.out / "rocksdb", tmp_path / f"{name}.journal",
                              MigrationOptions(genesis_unit=g.genesis_unit, check_hashes=True))
        assert report.completed
        assert report.min_retrievable_mci == g.min_retrievable_mci
        assert one(g.db_path, "PRAGMA user_version") == 31


def test_cli_generates_and_refuses_an_existing_database(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "bluegreen.generator.cli", "--out", str(out), "--units", "120", "--version", "27",
           "--network", "testnet", "--seed", "5", "--json"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    summary = json.loads(done.stdout)
    assert summary["units"] == 120 and summary["user_version"] == 27 and summary["network"] == "testnet"
    assert (out / "byteball.sqlite").exists() and (out / "conf.json").exists() and (out / "keys.json").exists()
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 2 and "already holds a node database" in again.stderr


@pytest.mark.parametrize("version,light,stuck", [(28, False, False), (28, True, False), (6, False, False),
                                                 (29, False, True)])
def test_schema_equals_the_reference_and_the_file_is_wal_after_the_bulk_load(
        tmp_path: Path, version: int, light: bool, stuck: bool) -> None:
    from bluegreen.schema.reference import compare, introspect_file, load_reference

    g = generate_node_dir(tmp_path / "n", units=300, version=version, light=light, stuck_at_30=stuck)
    # the generator drops secondary indexes while loading: every one must be back, with ocore's SQL text
    assert compare(load_reference(g.user_version, light), introspect_file(g.db_path), check_user_version=True) == []
    assert g.db_path.read_bytes()[18:20] == b"\x02\x02"  # file format: WAL, as ocore's pool leaves it
    assert one(g.db_path, "PRAGMA integrity_check") == "ok"
