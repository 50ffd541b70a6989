"""schema/patchplan.py: which step ranges catch-up's row patch may follow, read from the catalogue, and the
copy catch-up taking over (exactly) when the files do not allow a row patch."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from bluegreen.generator import generate_node_dir
from bluegreen.generator.extend import extend_node_dir
from bluegreen.lifecycle import command
from bluegreen.schema.patchplan import row_patch_plan
from bluegreen.schema.steps import MAX_KNOWN_VERSION, STEPS, steps_between
from test_catchup import _oracle, assert_same_as_oracle


@pytest.mark.parametrize("source", [24, 25, 26, 27, 28, 29, 30])
@pytest.mark.parametrize("node", ["full", "light"])
@pytest.mark.parametrize("network", ["mainnet", "testnet", "devnet"])
def test_the_field_path_can_be_patched_to_every_target(source: int, node: str, network: str) -> None:
    for target in range(31, MAX_KNOWN_VERSION + 1):
        plan = row_patch_plan(source, target, node, network)
        assert plan.possible, (source, target, plan.why_not)
        if source < 29:
            assert "known_bad_joints" in plan.not_carried  # step 29 empties it: green's rows are the step's
        if target >= 43:
            assert "asset_metadata" in plan.not_carried  # step 43 drops it and creates it again


def test_the_aa_statements_need_their_tables_empty() -> None:
    plan = row_patch_plan(28, 50, "full", "mainnet")
    assert {"aa_addresses", "aa_responses", "aa_balances", "wallet_arbiter_contracts", "node_vars"} <= \
        set(plan.must_be_empty)
    assert row_patch_plan(28, 34, "full", "mainnet").must_be_empty == ()  # none of them runs below 35


@pytest.mark.parametrize("source, step", [(6, 10), (10, 14), (13, 14), (17, 18), (20, 24), (23, 24)])
def test_table_copies_and_cross_table_updates_are_not_row_local(source: int, step: int) -> None:
    plan = row_patch_plan(source, 31, "full", "mainnet")
    assert not plan.possible and plan.why_not.startswith(f"step {step}:"), plan


def test_a_source_already_on_the_kv_store_is_not_patched() -> None:
    assert not row_patch_plan(31, 50, "full", "mainnet").possible


def test_every_statement_the_plan_passes_is_ddl_a_declared_emptying_or_declares_what_it_reads() -> None:
    """The plan's view of each statement from 24 up: nothing else slips through as 'row-local'."""
    from bluegreen.schema.patchplan import _statement_kind
    from bluegreen.schema.steps import AtomicBlock, DataOperation, KvOperation, StatementGroup

    kinds: dict[str, int] = {}
    not_local: set[int] = set()
    for step in steps_between(23, MAX_KNOWN_VERSION):
        for item in step.items:
            if isinstance(item, (DataOperation, KvOperation)):
                continue
            parts = item.statements if isinstance(item, (AtomicBlock, StatementGroup)) else (item,)
            for st in parts:
                kind, _tables = _statement_kind(st, item.depends_on if isinstance(item, AtomicBlock) else ())
                kinds[kind] = kinds.get(kind, 0) + 1
                if kind == "no":
                    not_local.add(step.version)
                if kind == "ok" and st.action != "user_version":
                    head = st.sql.lstrip().upper()
                    assert head.startswith(("CREATE", "ALTER TABLE", "DROP INDEX")), st.sql
                    assert "RENAME" not in head and " SELECT " not in head.replace("\n", " "), st.sql
    assert not_local == {24}  # asset_attestors copied into a new table: the only one from 24 up
    assert kinds["drops"] >= 3 and kinds["depends"] >= 6


def test_steps_list_is_what_the_plan_reads() -> None:
    assert STEPS[0].version == 1 and steps_between(28, 31)[0].version == 29


def test_blue_creating_a_table_after_the_snapshot_falls_back_to_the_copy_catch_up(tmp_path: Path) -> None:
    """A node app creating its own table changes blue's schema: the row patch cannot carry it, the copy
    catch-up does, and says why; the result is still a fresh migration's."""
    g = generate_node_dir(tmp_path / "node", units=200, version=28, seed=51)
    node, staging = g.out, tmp_path / "node.bluegreen"
    command.stage(node, online=True, target_version=31)
    assert command.verify(node).passed
    conn = apsw.Connection(str(node / "byteball.sqlite"))
    conn.execute("CREATE TABLE my_app_notes (note TEXT)")
    conn.execute("INSERT INTO my_app_notes VALUES ('hello')")
    conn.close()
    extend_node_dir(node, units=15, seed=5)
    c = command.catch_up(node)
    assert c.stats is not None and c.stats.diff_method == "pages" and "schema changed" in c.stats.copy_reason
    extend_node_dir(node, units=10, seed=6)  # the next one patches again: both snapshots have the table
    c2 = command.catch_up(node)
    assert c2.stats is not None and c2.stats.diff_method == "pages (row patch)" and not c2.stats.copy_reason
    assert command.verify(node).passed
    assert command.promote(node).catch_up is None  # nothing left to catch up
    assert_same_as_oracle(node, _oracle(staging / "blue-previous" / "byteball.sqlite", tmp_path / "oracle", 31))
