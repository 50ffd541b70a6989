"""A final-bad unit voided in the data exactly at min_retrievable_mci.

Older ocore voided final-bad units with `main_chain_index <= min_retrievable_mci`, while its joint reader takes a
unit for voided only when `main_chain_index < min_retrievable_mci`. Such a unit has its content_hash and no
messages or authentifiers left; ocore reads it as whole, drops the content_hash, and the joint no longer hashes to
the unit (ocore's migration crashes). We write its voided form and report it.

The database is real: a generated devnet node whose stability is rewound until the highest voided final-bad unit
sits exactly at min_retrievable_mci (the last stable main-chain unit's last ball)."""

from __future__ import annotations

import shutil
from pathlib import Path

import apsw
import pytest
from rocksdict import Options, Rdict

from bluegreen.engine.joints import is_voided
from bluegreen.engine.migrate import MigrationOptions, migrate_copy
from bluegreen.engine.sqlsource import read_min_retrievable_mci
from bluegreen.formats.hashing import get_unit_hash
from bluegreen.formats.jsvalues import js_parse
from bluegreen.formats.networks import DEVNET, with_genesis
from bluegreen.generator import generate_node_dir
from bluegreen.lifecycle.verify import find_genesis, verify_green

DB = "byteball.sqlite"


@pytest.fixture(scope="module")
def node_with_edge_voided_unit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("edge") / "node"
    generate_node_dir(out, units=600, version=28, network="devnet", seed=3)
    conn = apsw.Connection(str(out / DB))
    [(unit, mci)] = list(conn.execute(
        "SELECT unit, main_chain_index FROM units u WHERE content_hash IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM messages m WHERE m.unit=u.unit) ORDER BY main_chain_index DESC LIMIT 1"))
    # the first main-chain unit whose last ball is at that mci becomes the last stable one
    [(top,)] = list(conn.execute(
        "SELECT u.main_chain_index FROM units u JOIN units lb ON u.last_ball_unit=lb.unit "
        "WHERE u.is_on_main_chain=1 AND lb.main_chain_index=? ORDER BY u.main_chain_index LIMIT 1", (mci,)))
    conn.execute("UPDATE units SET is_stable=0 WHERE main_chain_index>?", (top,))
    assert read_min_retrievable_mci(conn) == mci
    conn.close()
    return out, str(unit)


def test_the_unit_is_voided_in_the_data_at_exactly_min_retrievable_mci(
        node_with_edge_voided_unit: tuple[Path, str]) -> None:
    node, unit = node_with_edge_voided_unit
    conn = apsw.Connection(str(node / DB))
    [(content_hash, mci)] = list(conn.execute("SELECT content_hash, main_chain_index FROM units WHERE unit=?", (unit,)))
    assert content_hash and mci == read_min_retrievable_mci(conn)
    assert list(conn.execute("SELECT count(*) FROM authentifiers WHERE unit=?", (unit,))) == [(0,)]
    conn.close()


def test_the_migration_writes_its_voided_form_which_hashes_to_the_unit_and_reports_it(
        node_with_edge_voided_unit: tuple[Path, str], tmp_path: Path) -> None:
    node, unit = node_with_edge_voided_unit
    green = tmp_path / "green"
    shutil.copytree(node, green)
    report = migrate_copy(green / DB, green / "rocksdb", tmp_path / "journal.json", MigrationOptions())
    assert report.completed and report.failures_total == 0
    assert report.voided_at_min_retrievable_mci == [unit]
    kv = Rdict(str(green / "rocksdb"), options=Options(raw_mode=True))
    joint = js_parse(kv[b"j\n" + unit.encode()].decode("utf-8"))
    kv.close()
    body = joint["unit"]
    assert body["content_hash"] and "messages" not in body and "headers_commission" not in body
    assert all(set(author) == {"address"} for author in body["authors"])
    conn = apsw.Connection(str(green / DB))
    network = with_genesis(DEVNET, find_genesis(conn))
    conn.close()
    assert get_unit_hash(body, network) == unit
    assert verify_green(node, green).passed


def test_a_final_bad_unit_at_min_retrievable_mci_that_still_has_its_messages_is_read_whole() -> None:
    assert is_voided("hash", 10, 10, has_messages=False)
    assert not is_voided("hash", 10, 10, has_messages=True)
    assert is_voided("hash", 9, 10, has_messages=True)  # ocore's own rule: below min_retrievable_mci
    assert not is_voided(None, 9, 10, has_messages=False)
    assert not is_voided("hash", 11, 10, has_messages=False)
