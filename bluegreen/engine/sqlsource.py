"""Bulk reads from an ocore SQLite database, one query per table per chunk of units.

ocore's `readJointDirectly` runs ~15 queries per unit; on millions of units that is the slow part of
its migration. We load a chunk of units (by rowid) into a temp table and read every child table once
for the chunk, ordered so that rows of one unit come out exactly in the order ocore's per-unit
queries give them."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import apsw

# Column lists mirror storage.readJointDirectly; the order of columns is the order of keys in the JSON.
UNIT_COLUMNS = (
    "unit", "version", "alt", "witness_list_unit", "last_ball_unit", "last_ball", "is_stable",
    "content_hash", "headers_commission", "payload_commission", "main_chain_index", "timestamp",
    "received_timestamp",
)

_UNITS_SQL = """
SELECT units.rowid, units.unit, version, alt, witness_list_unit, last_ball_unit, balls.ball AS last_ball,
       is_stable, content_hash, headers_commission, payload_commission, main_chain_index, timestamp,
       strftime('%s', units.creation_date) AS received_timestamp
FROM units LEFT JOIN balls ON last_ball_unit=balls.unit
WHERE units.rowid > ? ORDER BY units.rowid LIMIT ?
"""

_IN_CHUNK = "IN (SELECT unit FROM temp.bg_chunk)"

# (name, sql) -- every query returns the unit first; ORDER BY reproduces ocore's per-unit order.
_CHILD_QUERIES: dict[str, str] = {
    "parents": f"SELECT child_unit, parent_unit FROM parenthoods WHERE child_unit {_IN_CHUNK} "
               "ORDER BY child_unit, parent_unit",
    "balls": f"SELECT unit, ball FROM balls WHERE unit {_IN_CHUNK}",
    "skiplist": f"SELECT unit, skiplist_unit FROM skiplist_units WHERE unit {_IN_CHUNK} ORDER BY unit, skiplist_unit",
    "witnesses": f"SELECT unit, address FROM unit_witnesses WHERE unit {_IN_CHUNK} ORDER BY unit, address",
    "ehcr": f"SELECT unit, address, earned_headers_commission_share FROM earned_headers_commission_recipients "
            f"WHERE unit {_IN_CHUNK} ORDER BY unit, address",
    "authors": f"SELECT unit, address, definition_chash FROM unit_authors WHERE unit {_IN_CHUNK} ORDER BY unit, address",
    # ocore has no ORDER BY here: SQLite walks the primary key (unit, address, path).
    "authentifiers": f"SELECT unit, address, path, authentifier FROM authentifiers WHERE unit {_IN_CHUNK} "
                     "ORDER BY unit, address, path",
    "definitions": "SELECT definition_chash, definition FROM definitions WHERE definition_chash IN "
                   f"(SELECT definition_chash FROM unit_authors WHERE unit {_IN_CHUNK} AND definition_chash IS NOT NULL)",
    "messages": f"SELECT unit, app, payload_hash, payload_location, payload, payload_uri, payload_uri_hash, message_index "
                f"FROM messages WHERE unit {_IN_CHUNK} ORDER BY unit, message_index",
    "spend_proofs": f"SELECT unit, message_index, spend_proof, address FROM spend_proofs WHERE unit {_IN_CHUNK} "
                    "ORDER BY unit, message_index, spend_proof_index",
    "definition_changes": f"SELECT unit, message_index, definition_chash, address FROM address_definition_changes "
                          f"WHERE unit {_IN_CHUNK} ORDER BY unit, message_index",
    "polls": f"SELECT unit, message_index, question FROM polls WHERE unit {_IN_CHUNK}",
    # poll_choices has no message_index column (a poll unit carries one poll: polls' key is the unit).
    # Current ocore's query filters on `message_index` and fails with "no such column" on any poll.
    "poll_choices": f"SELECT unit, choice FROM poll_choices WHERE unit {_IN_CHUNK} ORDER BY unit, choice_index",
    "votes": f"SELECT unit, message_index, poll_unit, choice FROM votes WHERE unit {_IN_CHUNK}",
    "assets": f"SELECT unit, message_index, cap, is_private, is_transferrable, auto_destroy, fixed_denominations, "
              "issued_by_definer_only, cosigned_by_definer, spender_attested, issue_condition, transfer_condition "
              f"FROM assets WHERE unit {_IN_CHUNK}",
    "asset_attestors": f"SELECT unit, message_index, attestor_address, asset FROM asset_attestors WHERE unit {_IN_CHUNK} "
                       "ORDER BY unit, message_index, attestor_address",
    "denominations": f"SELECT asset, denomination, count_coins FROM asset_denominations WHERE asset {_IN_CHUNK} "
                     "ORDER BY asset, denomination",
    # ocore has no ORDER BY: SQLite walks the primary key (unit, feed_name).
    "data_feeds": f"SELECT unit, message_index, feed_name, `value`, int_value FROM data_feeds WHERE unit {_IN_CHUNK} "
                  "ORDER BY unit, feed_name",
    "inputs": "SELECT inputs.unit, inputs.message_index, type, denomination, assets.fixed_denominations, "
              "src_unit, src_message_index, src_output_index, from_main_chain_index, to_main_chain_index, "
              "serial_number, amount, address, asset "
              f"FROM inputs LEFT JOIN assets ON asset=assets.unit WHERE inputs.unit {_IN_CHUNK} "
              "ORDER BY inputs.unit, inputs.message_index, input_index",
    "outputs": f"SELECT unit, message_index, address, amount, asset, denomination FROM outputs WHERE unit {_IN_CHUNK} "
               "ORDER BY unit, message_index, output_index",
}

# Child rows keyed by unit only; the others by (unit, message_index).
_BY_UNIT = {"parents", "balls", "skiplist", "witnesses", "ehcr", "authors", "authentifiers", "messages", "denominations",
            "poll_choices"}


@dataclass
class UnitChunk:
    """All rows needed to rebuild the joints of one chunk of units."""

    units: list[tuple[Any, ...]]  # (rowid, *UNIT_COLUMNS)
    by_unit: dict[str, dict[str, list[tuple[Any, ...]]]] = field(default_factory=dict)
    by_message: dict[str, dict[tuple[str, int], list[tuple[Any, ...]]]] = field(default_factory=dict)
    definitions: dict[str, str] = field(default_factory=dict)

    @property
    def last_rowid(self) -> int:
        return int(self.units[-1][0])

    def rows(self, table: str, unit: str) -> list[tuple[Any, ...]]:
        return self.by_unit[table].get(unit, [])

    def message_rows(self, table: str, unit: str, message_index: int) -> list[tuple[Any, ...]]:
        return self.by_message[table].get((unit, message_index), [])


class UnitChunkReader:
    """Reads `units` in rowid order, `chunk_size` units at a time, with all their child rows.

    Paging is by `rowid > last` (not by fixed rowid windows as ocore does), so gaps in rowids
    never end the walk early."""

    units_sql = _UNITS_SQL  # a subclass may restrict the walk (catch-up: only the units it rebuilds)

    def __init__(self, conn: apsw.Connection, chunk_size: int = 5000) -> None:
        self.conn = conn
        self.chunk_size = chunk_size
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS bg_chunk (unit TEXT PRIMARY KEY)")

    def read(self, after_rowid: int) -> UnitChunk | None:
        """The next chunk of units with rowid > after_rowid, or None when there are no more."""
        units = list(self.conn.execute(self.units_sql, (after_rowid, self.chunk_size)))
        if not units:
            return None
        conn = self.conn
        conn.execute("DELETE FROM temp.bg_chunk")
        conn.executemany("INSERT INTO temp.bg_chunk (unit) VALUES (?)", ((row[1],) for row in units))
        chunk = UnitChunk(units=units)
        for name, sql in _CHILD_QUERIES.items():
            if name == "definitions":
                chunk.definitions = {chash: definition for chash, definition in conn.execute(sql)}
                continue
            if name in _BY_UNIT:
                grouped: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
                for row in conn.execute(sql):
                    grouped[row[0]].append(row[1:])
                chunk.by_unit[name] = grouped
            else:
                grouped_m: dict[tuple[str, int], list[tuple[Any, ...]]] = defaultdict(list)
                for row in conn.execute(sql):
                    grouped_m[(row[0], row[1])].append(row[2:])
                chunk.by_message[name] = grouped_m
        return chunk


def count_units(conn: apsw.Connection) -> int:
    """Number of rows in `units`."""
    return int(conn.execute("SELECT COUNT(*) FROM units").fetchone()[0])


def count_data_feed_rows(conn: apsw.Connection) -> int:
    """Number of rows of ocore's data-feed migration query (data_feeds x units x unit_authors)."""
    return int(conn.execute(
        "SELECT COUNT(*) FROM data_feeds CROSS JOIN units USING(unit) CROSS JOIN unit_authors USING(unit)"
    ).fetchone()[0])


def read_min_retrievable_mci(conn: apsw.Connection) -> int:
    """ocore's `initializeMinRetrievableMci`: the mci of the last ball of the last stable MC unit (0 if none)."""
    row = conn.execute(
        "SELECT main_chain_index FROM units WHERE is_on_main_chain=1 AND is_stable=1 "
        "ORDER BY main_chain_index DESC LIMIT 1"
    ).fetchone()
    if row is None or not row[0]:
        return 0
    rows = list(conn.execute(
        "SELECT lb_units.main_chain_index, lb_units.is_on_main_chain FROM units "
        "JOIN units AS lb_units ON units.last_ball_unit=lb_units.unit "
        "WHERE units.is_on_main_chain=1 AND units.main_chain_index=?",
        (row[0],),
    ))
    if len(rows) != 1 or rows[0][1] != 1:
        from bluegreen.errors import SourceDataError

        raise SourceDataError(
            f"cannot compute min_retrievable_mci: the main-chain unit at mci {row[0]} has "
            f"{len(rows)} last-ball rows (expected exactly one, on the main chain)",
            hint="the source database's main chain is damaged; restore it from a backup or resync the node",
        )
    return int(rows[0][0])


def read_voided_at(conn: apsw.Connection, mci: int) -> list[str]:
    """Final-bad units at main chain index `mci` whose data is voided (content_hash set, no messages left)."""
    return [str(r[0]) for r in conn.execute(
        "SELECT unit FROM units WHERE main_chain_index=? AND content_hash IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM messages WHERE messages.unit=units.unit) ORDER BY rowid", (mci,))]


def read_data_feed_rows(conn: apsw.Connection, after_rowid: int, chunk_rows: int) -> tuple[list[tuple[Any, ...]], int | None]:
    """The data-feed rows (as in migrate_to_kv.js) of the next `chunk_rows` data_feeds rowids after
    `after_rowid`: (rows, last data_feeds rowid) or ([], None) at the end. A multi-author unit yields one
    row per author; a chunk never splits one data_feeds row between two chunks."""
    bound = conn.execute(
        "SELECT rowid FROM data_feeds WHERE rowid > ? ORDER BY rowid LIMIT 1 OFFSET ?",
        (after_rowid, chunk_rows - 1),
    ).fetchone()
    if bound is None:
        last = conn.execute("SELECT MAX(rowid) FROM data_feeds WHERE rowid > ?", (after_rowid,)).fetchone()[0]
        if last is None:
            return [], None
        upper = int(last)
    else:
        upper = int(bound[0])
    rows = list(conn.execute(
        "SELECT data_feeds.rowid, unit, address, feed_name, `value`, int_value, main_chain_index "
        "FROM data_feeds CROSS JOIN units USING(unit) CROSS JOIN unit_authors USING(unit) "
        "WHERE data_feeds.rowid > ? AND data_feeds.rowid <= ? ORDER BY data_feeds.rowid, unit_authors.address",
        (after_rowid, upper),
    ))
    return rows, upper
