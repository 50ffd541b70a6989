"""Bulk reads from an ocore SQLite database, one query per table per chunk of units.

ocore's `readJointDirectly` runs ~15 queries per unit; on millions of units that is the slow part of
its migration. We load a chunk of units (by rowid) into a temp table and read every child table once
for the chunk, ordered so that rows of one unit come out exactly in the order ocore's per-unit
queries give them."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import apsw
import apsw.ext

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
_UNITS_BY_LIST_SQL = _UNITS_SQL.replace("WHERE units.rowid > ? ORDER BY units.rowid LIMIT ?",
                                        f"WHERE units.unit {_IN_CHUNK} ORDER BY units.rowid")
assert _UNITS_BY_LIST_SQL != _UNITS_SQL

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


class TableRows(NamedTuple):
    """The rows of one query for one chunk, with the query's column names (what each position holds).

    Plain tuples plus the column list, which the grouping checks against the shape it expects
    (`UnitChunk.from_raw`): rows are named shapes, not positions trusted blindly."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


@dataclass
class RawChunk:
    """One chunk of units as read from SQLite, not yet grouped by unit: `units` (rowid first, then
    UNIT_COLUMNS) and one `TableRows` per child query (unit first, then message_index for per-message tables)."""

    units: TableRows
    tables: dict[str, TableRows]

    @property
    def last_rowid(self) -> int:
        return int(self.units.rows[-1][0])

    def __len__(self) -> int:
        return len(self.units.rows)


# The leading columns each child query must return (grouping keys); checked when a chunk is grouped.
UNITS_LEADING = ("rowid", *UNIT_COLUMNS)
_KEY_BY_UNIT = ("unit", "child_unit", "asset")


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

    @classmethod
    def from_raw(cls, raw: RawChunk) -> UnitChunk:
        """Group a chunk's rows by unit (and message), checking each query's columns first."""
        if raw.units.columns != UNITS_LEADING:
            raise ValueError(f"units rows have columns {raw.units.columns}, expected {UNITS_LEADING}")
        chunk = cls(units=raw.units.rows)
        for name in _CHILD_QUERIES:
            table = raw.tables[name]
            cols = table.columns
            if name == "definitions":
                if cols != ("definition_chash", "definition"):
                    raise ValueError(f"definitions rows have columns {cols}")
                chunk.definitions = dict(table.rows)
                continue
            if cols[0] not in _KEY_BY_UNIT:
                raise ValueError(f"{name} rows start with column {cols[0]!r}, not the unit")
            if name in _BY_UNIT:
                grouped: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
                for row in table.rows:
                    grouped[row[0]].append(row[1:])
                chunk.by_unit[name] = grouped
            else:
                if cols[1] != "message_index":
                    raise ValueError(f"{name} rows have columns {cols}, expected unit, message_index first")
                grouped_m: dict[tuple[str, int], list[tuple[Any, ...]]] = defaultdict(list)
                for row in table.rows:
                    grouped_m[(row[0], row[1])].append(row[2:])
                chunk.by_message[name] = grouped_m
        return chunk


# Page cache of a fill reader (per process): the chunk queries walk indexes of most tables at once; 64 MiB
# keeps their upper levels cached without growing with the database (the peak RSS must not).
READER_CACHE_KIB = 65_536


def sqlite_uri(path: Path, *, read_only: bool = True, immutable: bool = False) -> str:
    """An SQLite URI for `path`, percent-encoded (a data dir may hold '?', '#' or '%' in its path)."""
    params = [p for p, on in (("mode=ro", read_only), ("immutable=1", immutable)) if on]
    return f"file:{quote(str(path))}" + ("?" + "&".join(params) if params else "")


def open_frozen(db_path: Path) -> apsw.Connection:
    """Read-only, immutable connection to a file nobody writes meanwhile (a snapshot of ours, or blue with the
    node stopped and every commit in its main file): no locks, no -wal/-shm created."""
    return apsw.Connection(sqlite_uri(db_path, immutable=True),
                           flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)


def open_chunk_reader_connection(db_path: Path) -> apsw.Connection:
    """A read-only connection to a copy being migrated, for `UnitChunkReader` in any process.

    Only used while no write transaction is open on the copy (the fill runs between the commit of the SQL
    steps below 31 and the transaction of steps 32..N); its temp table `bg_chunk` lives in its own temp
    database, which a read-only connection may write."""
    conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    conn.setbusytimeout(5000)
    conn.execute(f"PRAGMA cache_size=-{READER_CACHE_KIB}")
    return conn


def chunk_starts(conn: apsw.Connection, after_rowid: int, chunk_size: int) -> list[int]:
    """The `after_rowid` of every chunk of `chunk_size` units from `after_rowid` on, in order: the first is
    `after_rowid` itself, each next one the last rowid of the chunk before (what `read_raw` pages by)."""
    cuts = [int(r[0]) for r in conn.execute(
        "SELECT rowid FROM (SELECT rowid, row_number() OVER (ORDER BY rowid) AS n FROM units WHERE rowid > ?) "
        "WHERE n % ? = 0", (after_rowid, chunk_size))]
    starts = [after_rowid, *cuts]
    total = int(conn.execute("SELECT count(*) FROM units WHERE rowid > ?", (after_rowid,)).fetchone()[0])
    if total and total % chunk_size == 0:
        starts.pop()  # the last cut ends the last full chunk: no chunk starts after it
    return starts if total else []


def _columns(conn: apsw.Connection, sql: str) -> tuple[str, ...]:
    """Column names of a query's result, from SQLite's prepared statement (nothing is executed)."""
    return tuple(name for name, _type in apsw.ext.query_info(conn, sql).description or ())


class UnitChunkReader:
    """Reads `units` in rowid order, `chunk_size` units at a time, with all their child rows.

    Paging is by `rowid > last` (not by fixed rowid windows as ocore does), so gaps in rowids
    never end the walk early."""

    units_sql = _UNITS_SQL  # a subclass may restrict the walk (catch-up: only the units it rebuilds)

    def __init__(self, conn: apsw.Connection, chunk_size: int = 5000) -> None:
        self.conn = conn
        self.chunk_size = chunk_size
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS bg_chunk (unit TEXT PRIMARY KEY)")
        # the column lists travel with the rows; SQLite names them from the statements themselves
        self._unit_columns = ("rowid", *_columns(conn, _UNITS_SQL)[1:])
        self._child_columns = {name: _columns(conn, sql) for name, sql in _CHILD_QUERIES.items()}

    def read_raw(self, after_rowid: int) -> RawChunk | None:
        """The next chunk of units with rowid > after_rowid as ungrouped rows, or None when there are no more.
        Only SQLite work happens here (the grouping is left to whoever transforms the chunk)."""
        conn = self.conn
        units = list(conn.execute(self.units_sql, (after_rowid, self.chunk_size)))
        if not units:
            return None
        conn.execute("DELETE FROM temp.bg_chunk")
        conn.executemany("INSERT INTO temp.bg_chunk (unit) VALUES (?)", ((row[1],) for row in units))
        tables = {name: TableRows(self._child_columns[name], list(conn.execute(sql)))
                  for name, sql in _CHILD_QUERIES.items()}
        return RawChunk(units=TableRows(self._unit_columns, units), tables=tables)

    def read_units_raw(self, units: list[str]) -> RawChunk | None:
        """These units (in rowid order) with all their child rows, ungrouped; None when none of them exists."""
        conn = self.conn
        conn.execute("DELETE FROM temp.bg_chunk")
        conn.executemany("INSERT OR IGNORE INTO temp.bg_chunk (unit) VALUES (?)", ((u,) for u in units))
        rows = list(conn.execute(_UNITS_BY_LIST_SQL))
        if not rows:
            return None
        tables = {name: TableRows(self._child_columns[name], list(conn.execute(sql)))
                  for name, sql in _CHILD_QUERIES.items()}
        return RawChunk(units=TableRows(self._unit_columns, rows), tables=tables)

    def read(self, after_rowid: int) -> UnitChunk | None:
        """The next chunk of units with rowid > after_rowid, grouped, or None when there are no more."""
        raw = self.read_raw(after_rowid)
        return None if raw is None else UnitChunk.from_raw(raw)


def count_units(conn: apsw.Connection) -> int:
    """Number of rows in `units`."""
    return int(conn.execute("SELECT COUNT(*) FROM units").fetchone()[0])


def count_data_feed_rows(conn: apsw.Connection) -> int:
    """Number of rows of ocore's data-feed migration query (data_feeds x units x unit_authors)."""
    return int(conn.execute(
        "SELECT COUNT(*) " + FEED_JOIN
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


# ocore migrate_to_kv.js's data-feed join: one row per (data_feeds row, author); a feed row without its unit
# or authors yields nothing (CROSS JOIN), as in ocore. Engine and verify read feed rows through these.
FEED_ROW_COLUMNS = "data_feeds.rowid, unit, address, feed_name, `value`, int_value, main_chain_index"
FEED_JOIN = "FROM data_feeds CROSS JOIN units USING(unit) CROSS JOIN unit_authors USING(unit) "
FEED_ROWS_SQL = f"SELECT {FEED_ROW_COLUMNS} {FEED_JOIN}"


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
        FEED_ROWS_SQL + "WHERE data_feeds.rowid > ? AND data_feeds.rowid <= ? "
        "ORDER BY data_feeds.rowid, unit_authors.address",
        (after_rowid, upper),
    ))
    return rows, upper
