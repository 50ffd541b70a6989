"""verify's row-count check follows the effects the catalogue declares for the steps between blue's version and
the target (bluegreen.schema.steps), never the SQL text: emptied or dropped tables must be empty in green, tables
a step adds rows to must not lose any, every other table keeps blue's count. Real SQLite files of real schemas."""

from __future__ import annotations

from pathlib import Path

import apsw

from bluegreen.lifecycle.verify import check_row_counts, open_readonly, row_count_rules
from bluegreen.schema.reference import create_empty_database
from bluegreen.schema.steps import declared_effects

ASSET = "A" * 43 + "="


def db(path: Path, version: int, statements: list[str] = ()) -> Path:  # type: ignore[assignment]
    create_empty_database(path, version, light=False)
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA foreign_keys=OFF")
    for st in statements:
        conn.execute(st)
    conn.close()
    return path


def counts(blue: Path, green: Path, target: int, network: str | None = "mainnet"):  # type: ignore[no-untyped-def]
    b, g = open_readonly(blue), open_readonly(green)
    try:
        return check_row_counts(b, g, target_version=target, light=False, network=network)
    finally:
        b.close()
        g.close()


def metadata_rows(n: int) -> list[str]:
    return [f"INSERT INTO asset_metadata (asset, metadata_unit, name) VALUES ('{chr(65 + i) * 43}=', '{ASSET}', 'n{i}')"
            for i in range(n)]


def test_step_43_drops_asset_metadata_rows_and_verify_reports_how_many(tmp_path: Path) -> None:
    blue = db(tmp_path / "blue.sqlite", 42, metadata_rows(2))
    green = db(tmp_path / "green.sqlite", 42)
    result = counts(blue, green, 50)
    assert result.passed, result.first_failures
    assert "asset_metadata 2 -> 0 rows (step 43 drops and re-creates it)" in result.detail


def test_asset_metadata_rows_left_in_green_past_step_43_fail(tmp_path: Path) -> None:
    blue = db(tmp_path / "blue.sqlite", 42, metadata_rows(2))
    green = db(tmp_path / "green.sqlite", 42, metadata_rows(2))
    result = counts(blue, green, 50)
    assert not result.passed
    assert result.first_failures == [
        "asset_metadata: blue has 2 rows, green 2; expected 0 (step 43 drops and re-creates it)"]


def test_below_step_43_asset_metadata_keeps_its_rows(tmp_path: Path) -> None:
    blue = db(tmp_path / "blue.sqlite", 40, metadata_rows(2))
    green = db(tmp_path / "green.sqlite", 40)
    result = counts(blue, green, 42)
    assert result.first_failures == ["asset_metadata: blue has 2 rows, green 0; expected 2"]


def test_known_bad_joints_left_in_green_past_an_emptying_step_fail(tmp_path: Path) -> None:
    bad = ["INSERT INTO known_bad_joints (joint, json, error) VALUES ('j', '{}', 'e')"]
    blue = db(tmp_path / "blue.sqlite", 28, bad)
    green = db(tmp_path / "green.sqlite", 28, bad)
    result = counts(blue, green, 31)
    assert result.first_failures == [
        "known_bad_joints: blue has 1 rows, green 1; expected 0 (step 29 empties it)"]


def test_an_upserted_table_may_gain_rows_but_never_lose_them(tmp_path: Path) -> None:
    row = "INSERT INTO aa_balances (address, asset, balance) VALUES ('{a}', 'base', 1)"
    two = [row.format(a="A" * 32), row.format(a="B" * 32)]
    blue = db(tmp_path / "blue.sqlite", 34, two[:1])
    gained = db(tmp_path / "gained.sqlite", 34, two)
    assert counts(blue, gained, 35).passed
    lost = db(tmp_path / "lost.sqlite", 34)
    assert counts(blue, lost, 35).first_failures == [
        "aa_balances: blue has 1 rows, green 0; expected at least 1 (step 35 adds rows)"]


def test_network_conditions_of_effects_are_honoured() -> None:
    # step 44's upsert of aa_balances runs on testnet only (ocore's bTestnet)
    on_testnet = {(e.version, e.table) for e in declared_effects(43, 44, "full", "testnet")}
    on_mainnet = {(e.version, e.table) for e in declared_effects(43, 44, "full", "mainnet")}
    unknown = {(e.version, e.table) for e in declared_effects(43, 44, "full", None)}
    assert on_testnet == unknown == {(44, "aa_balances")}
    assert on_mainnet == set()


def test_light_nodes_take_only_the_effects_ocore_runs_on_light_nodes() -> None:
    assert "aa_balances" in row_count_rules(34, 50, light=False, network="mainnet")
    assert "aa_balances" not in row_count_rules(34, 50, light=True, network="mainnet")
