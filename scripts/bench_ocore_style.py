"""A per-unit joint reader in ocore's style, for scripts/bench only (comparison, not product code).

ocore's `storage.readJointDirectly` reads one unit at a time: the `units` row, then one query per table
for that unit (parents, ball, skiplist, witnesses, commission recipients, authors, per author its
authentifiers and definition, messages, per message its spend proofs and payload tables). bluegreen's
engine (`engine/sqlsource.py`) instead reads every table once per chunk of 5,000 units. This module
reproduces ocore's query pattern so the bench can show what the chunked reads buy on the same node, in
the same run. It builds each joint with our own `build_joint` (fed with the rows of one unit), so the
joints are the engine's; it neither hashes nor writes anything: it is a lower bound on ocore's cost.

Run as a child of the bench (so its CPU and RSS are measured like the CLI's):
    python scripts/bench_ocore_style.py --db BLUE/byteball.sqlite [--limit N] [--check N]
prints one JSON document (`OcoreStyleResult`)."""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import apsw
from pydantic import BaseModel

from bluegreen.engine.joints import ReadContext, build_joint
from bluegreen.engine.sqlsource import UnitChunk, UnitChunkReader, read_min_retrievable_mci
from bluegreen.ocore_facts import network_of

# ocore's units query of readJointDirectly (the same columns as the engine's, for one unit)
_UNIT_SQL = """
SELECT units.rowid, units.unit, version, alt, witness_list_unit, last_ball_unit, balls.ball AS last_ball,
       is_stable, content_hash, headers_commission, payload_commission, main_chain_index, timestamp,
       strftime('%s', units.creation_date) AS received_timestamp
FROM units LEFT JOIN balls ON last_ball_unit=balls.unit WHERE units.unit=?
"""
# Per unit. Each returns the row shape the engine's grouped chunk holds (without the leading unit).
_PARENTS = "SELECT parent_unit FROM parenthoods WHERE child_unit=? ORDER BY parent_unit"
_BALL = "SELECT ball FROM balls WHERE unit=?"
_SKIPLIST = "SELECT skiplist_unit FROM skiplist_units WHERE unit=? ORDER BY skiplist_unit"
_WITNESSES = "SELECT address FROM unit_witnesses WHERE unit=? ORDER BY address"
_EHCR = ("SELECT address, earned_headers_commission_share FROM earned_headers_commission_recipients "
         "WHERE unit=? ORDER BY address")
_AUTHORS = "SELECT address, definition_chash FROM unit_authors WHERE unit=? ORDER BY address"
_MESSAGES = ("SELECT app, payload_hash, payload_location, payload, payload_uri, payload_uri_hash, message_index "
             "FROM messages WHERE unit=? ORDER BY message_index")
# Per author
_AUTHENTIFIERS = "SELECT path, authentifier FROM authentifiers WHERE unit=? AND address=?"
_DEFINITION = "SELECT definition FROM definitions WHERE definition_chash=?"
# Per message (unit, message_index)
_SPEND_PROOFS = ("SELECT spend_proof, address FROM spend_proofs WHERE unit=? AND message_index=? "
                 "ORDER BY spend_proof_index")
_PAYLOAD_SQL: dict[str, list[tuple[str, str]]] = {
    # app -> [(engine table name, query)]
    "address_definition_change": [("definition_changes", "SELECT definition_chash, address FROM "
                                   "address_definition_changes WHERE unit=? AND message_index=?")],
    "poll": [("polls", "SELECT question FROM polls WHERE unit=? AND message_index=?")],
    "vote": [("votes", "SELECT poll_unit, choice FROM votes WHERE unit=? AND message_index=?")],
    "asset": [("assets", "SELECT cap, is_private, is_transferrable, auto_destroy, fixed_denominations, "
               "issued_by_definer_only, cosigned_by_definer, spender_attested, issue_condition, transfer_condition "
               "FROM assets WHERE unit=? AND message_index=?")],
    "asset_attestors": [("asset_attestors", "SELECT attestor_address, asset FROM asset_attestors "
                         "WHERE unit=? AND message_index=? ORDER BY attestor_address")],
    "data_feed": [("data_feeds", "SELECT feed_name, `value`, int_value FROM data_feeds WHERE unit=? AND message_index=?")],
    "payment": [
        ("inputs", "SELECT type, denomination, assets.fixed_denominations, src_unit, src_message_index, "
                   "src_output_index, from_main_chain_index, to_main_chain_index, serial_number, amount, address, asset "
                   "FROM inputs LEFT JOIN assets ON asset=assets.unit WHERE inputs.unit=? AND inputs.message_index=? "
                   "ORDER BY input_index"),
        ("outputs", "SELECT address, amount, asset, denomination FROM outputs WHERE unit=? AND message_index=? "
                    "ORDER BY output_index"),
    ],
}
_POLL_CHOICES = "SELECT choice FROM poll_choices WHERE unit=? ORDER BY choice_index"
_ASSET_ATTESTORS = ("SELECT attestor_address, asset FROM asset_attestors WHERE unit=? AND message_index=? "
                    "ORDER BY attestor_address")
_DENOMINATIONS = "SELECT denomination, count_coins FROM asset_denominations WHERE asset=? ORDER BY denomination"
# assets' columns in _PAYLOAD_SQL["asset"]: spender_attested and fixed_denominations decide the extra queries
_ASSET_SPENDER_ATTESTED, _ASSET_FIXED_DENOMINATIONS = 7, 4


class OcoreStyleResult(BaseModel):
    """What one pass of the per-unit reader did."""

    units: int  # units read (the first `limit` by rowid, or all)
    sample: bool  # True when `limit` cut the walk short of every unit
    queries: int  # SQL statements executed for the units (ocore's pattern: ~15 per unit)
    unit_keys: int  # sum of the units' top-level key counts: the joints were built, not just read
    seconds: float  # the walk only (opening and reading the network are not counted)
    units_per_second: float
    checked_against_engine: int = 0  # units whose joint was compared with the engine's chunked reader


def open_readonly(db: Path) -> apsw.Connection:
    """The node's SQLite opened read-only and immutable: no lock, no -shm/-wal is created beside the
    cached blue (it must stay byte-identical), as stage's snapshot reads it."""
    conn = apsw.Connection(f"file:{db}?immutable=1", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    conn.execute("PRAGMA cache_size=-400000")  # the engine's cache size, so the page cache is not the difference
    return conn


class OcoreStyleReader:
    """Reads one unit at a time with ocore's per-table queries and builds its joint."""

    def __init__(self, conn: apsw.Connection, ctx: ReadContext) -> None:
        self.conn = conn
        self.ctx = ctx
        self.queries = 0

    def _q(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        self.queries += 1
        return list(self.conn.execute(sql, params))  # apsw caches prepared statements, as node-sqlite3 does not

    def read_joint(self, unit: str) -> dict[str, Any]:
        """The joint of `unit`, read the way readJointDirectly reads it: every query is for this unit alone."""
        rows = self._q(_UNIT_SQL, unit)
        if not rows:
            raise KeyError(unit)
        row = rows[0]
        mci, content_hash = row[11], row[8]
        # build_joint reads the rows from a chunk; here the chunk holds this unit only, filled query by query
        chunk = UnitChunk(units=[row], by_unit=defaultdict(dict), by_message=defaultdict(dict))
        by_unit, by_message = chunk.by_unit, chunk.by_message
        retrievable = mci is None or mci >= self.ctx.min_retrievable_mci
        voided = bool(content_hash) and not retrievable  # ocore's test; build_joint refines the edge case
        by_unit["parents"][unit] = self._q(_PARENTS, unit)
        if not retrievable or self.ctx.is_genesis(unit):
            by_unit["balls"][unit] = self._q(_BALL, unit)
        if not retrievable:
            by_unit["skiplist"][unit] = self._q(_SKIPLIST, unit)
        by_unit["witnesses"][unit] = self._q(_WITNESSES, unit)
        if not voided:
            by_unit["ehcr"][unit] = self._q(_EHCR, unit)
        authors = self._q(_AUTHORS, unit)
        by_unit["authors"][unit] = authors
        sigs: list[tuple[Any, ...]] = []
        for address, definition_chash in authors:
            if voided:
                continue
            sigs.extend((address, *r) for r in self._q(_AUTHENTIFIERS, unit, address))
            if definition_chash:
                found = self._q(_DEFINITION, definition_chash)
                if found:
                    chunk.definitions[definition_chash] = found[0][0]
        by_unit["authentifiers"][unit] = sigs
        if not voided:
            messages = self._q(_MESSAGES, unit)
            by_unit["messages"][unit] = messages
            for message in messages:
                self._read_message(unit, message, chunk)
        return build_joint(row, chunk, self.ctx)

    def _read_message(self, unit: str, message: tuple[Any, ...], chunk: UnitChunk) -> None:
        """The payload tables of one message, as ocore queries them (only those its app needs)."""
        app, payload_location, message_index = message[0], message[2], message[6]
        key = (unit, message_index)
        if payload_location == "inline":
            for table, sql in _PAYLOAD_SQL.get(app, ()):
                chunk.by_message[table][key] = self._q(sql, unit, message_index)
            if app == "poll":
                chunk.by_unit["poll_choices"][unit] = self._q(_POLL_CHOICES, unit)
            elif app == "asset":
                assets = chunk.by_message["assets"][key]
                if assets and assets[0][_ASSET_SPENDER_ATTESTED]:
                    chunk.by_message["asset_attestors"][key] = self._q(_ASSET_ATTESTORS, unit, message_index)
                if assets and assets[0][_ASSET_FIXED_DENOMINATIONS]:
                    chunk.by_unit["denominations"][unit] = self._q(_DENOMINATIONS, unit)
        chunk.by_message["spend_proofs"][key] = self._q(_SPEND_PROOFS, unit, message_index)


def check_against_engine(conn: apsw.Connection, reader: OcoreStyleReader, units: int) -> int:
    """Compare the first `units` joints with the engine's chunked reader: the comparison is only fair if
    both build the same joints. Raises AssertionError on the first difference; returns units compared."""
    bulk = UnitChunkReader(conn, chunk_size=min(units, 5000))
    compared, after = 0, 0
    while compared < units:
        chunk = bulk.read(after)
        if chunk is None:
            break
        for row in chunk.units[: units - compared]:
            theirs = build_joint(row, chunk, reader.ctx)
            ours = reader.read_joint(row[1])
            assert ours == theirs, f"unit {row[1]}: per-unit joint differs from the chunked reader's"
            compared += 1
        after = chunk.last_rowid
    return compared


def run(db: Path, limit: int | None, check: int) -> OcoreStyleResult:
    """Read the first `limit` units by rowid (all when None) one by one; time the walk."""
    conn = open_readonly(db)
    ctx = ReadContext(network=network_of(conn, None), min_retrievable_mci=read_min_retrievable_mci(conn))
    total = int(conn.execute("SELECT COUNT(*) FROM units").fetchone()[0])
    reader = OcoreStyleReader(conn, ctx)
    checked = check_against_engine(conn, OcoreStyleReader(conn, ctx), check) if check else 0
    wanted = total if limit is None else min(limit, total)
    # ocore's migration walks rowid ranges and reads the unit hashes first: the list is not part of the timing
    unit_ids = [r[0] for r in conn.execute("SELECT unit FROM units ORDER BY rowid LIMIT ?", (wanted,))]
    keys = 0
    t0 = time.monotonic()
    for unit in unit_ids:
        keys += len(reader.read_joint(unit)["unit"])
    seconds = time.monotonic() - t0
    return OcoreStyleResult(units=len(unit_ids), sample=len(unit_ids) < total, queries=reader.queries,
                            unit_keys=keys, seconds=round(seconds, 3),
                            units_per_second=round(len(unit_ids) / seconds, 1) if seconds > 0 else 0.0,
                            checked_against_engine=checked)


def main(argv: list[str]) -> None:
    """CLI for the bench's child process: one JSON document on stdout."""
    ap = argparse.ArgumentParser(prog="bench_ocore_style.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", type=Path, required=True, help="the node's byteball.sqlite (opened immutable)")
    ap.add_argument("--limit", type=int, default=None, help="read the first N units by rowid (default: all)")
    ap.add_argument("--check", type=int, default=0,
                    help="first compare N joints with the engine's chunked reader (not timed)")
    args = ap.parse_args(argv)
    print(run(args.db, args.limit, args.check).model_dump_json())


if __name__ == "__main__":
    main(sys.argv[1:])
