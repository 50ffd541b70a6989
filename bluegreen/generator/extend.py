"""Continue an existing (generated or real-shaped) pre-31 SQLite node: add K units the way a running node
would store them, in one SQLite transaction per call, so a concurrent reader always sees a whole node.

Per call (`extend_node_dir`):
- a bounded window of the DAG is loaded from the database (unstable and free units, the last WINDOW_MCIS
  stable MCIs and their parents, the old MC units new skiplists point to) into the generator's planner;
- K new units are composed on top of the current free units (payments from stable unspent outputs of
  revealed single-signature addresses, data feeds, data, text, profiles, double spends that end final-bad);
- their `units` rows are inserted at arrival (rowids in arrival order, as writer.js does); units that
  become stable get main_chain_index, is_stable, balls and skiplist_units; earlier rows are UPDATEd
  (is_free, MC position, stability, `unit_authors._mci`, content_hash of final-bad units);
- outputs spent by the new units get is_spent=1; final-bad units that fall below min_retrievable_mci are
  voided with the generator's own statements (compose.VOID_STATEMENTS) and archived;
- now and then a new peer host / peer row (the node learning peers).
Deterministic: the same database, seed and K give the same result."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import apsw
from pydantic import BaseModel

from bluegreen.engine.joints import ReadContext, build_joint
from bluegreen.engine.sqlsource import UnitChunkReader
from bluegreen.errors import BadInputError
from bluegreen.formats.chash import definition_address
from bluegreen.formats.hashing import get_unit_content_hash, get_unit_hash
from bluegreen.formats.jsvalues import js_parse, js_stringify
from bluegreen.formats.networks import Network, detect_network, with_genesis
from bluegreen.generator.compose import (
    BASE_TIMESTAMP, SECONDS_PER_UNIT, STABILITY_LAG, VOID_STATEMENTS, Generator, sql_date, void_table,
)
from bluegreen.generator.model import Dag, Node, PlanningError, similar_mcis
from bluegreen.generator.units import Address, Utxo
from bluegreen.generator.writer import SqlWriter
from bluegreen import ocore_facts

MAX_EXTEND_UNITS = 10_000  # one transaction; the planner holds the whole DAG in memory
BUSY_TIMEOUT_MS = 30_000
# unit kinds of an extension: mostly witness and user payments, a special every 8th unit
WINDOW_MCIS = 100  # stable main chain indexes below the stable point loaded with their units
OUTPUTS_PER_ADDRESS = 20
EXT_SPECIALS = ["data_feed", "data", "text", "final_bad", "profile", "multi_ehcr", "peer"]


class ExtendResult(BaseModel):
    """What one `extend_node_dir` call added (printed by `generate --extend --json`)."""

    data_dir: Path
    db_path: Path
    seed: int
    added_units: int
    units_before: int
    units_after: int
    max_rowid: int  # units rowid of the last unit added
    newly_stable: int
    voided: int
    peers_added: int
    last_stable_mci: int
    min_retrievable_mci: int
    kinds: dict[str, int]
    seconds: float


def _similar(mci: int) -> list[int]:
    return similar_mcis(mci) if mci > 0 else []


class _WindowMc(list):  # type: ignore[type-arg]
    """The main chain by index, holding only the indexes the window loaded: reading another one is a bug
    (a plain list would hand back a wrong node)."""

    MISSING = -1

    def put(self, mci: int, node: int) -> None:
        """Set the node of `mci`, padding unknown lower indexes."""
        while len(self) <= mci:
            self.append(self.MISSING)
        list.__setitem__(self, mci, node)

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        v = list.__getitem__(self, i)
        if isinstance(i, int) and v == self.MISSING:
            raise PlanningError(f"main chain index {i} is outside the loaded window")
        return v


class _Extender(Generator):
    """The generator's composer and planner, started from a database's state instead of a genesis."""

    def __init__(self, conn: apsw.Connection, network: Network, seed: int, start_index: int, k: int) -> None:
        writer = SqlWriter(conn)
        super().__init__(writer, n_units=2, schema_version=28, light=False, network=network, seed=seed)
        self.conn = conn
        self.start_index = start_index
        self.loaded = 0  # nodes loaded from the database (indexes below this are existing rows)
        self.was_stable: set[int] = set()
        self.was_free: set[int] = set()
        self.newly_stable: list[Node] = []
        self.unstable_outputs: dict[str, list[Utxo]] = {}  # existing unstable unit -> its base outputs
        self.fb_units: dict[int, dict[str, Any]] = {}  # existing unstable final-bad node -> unit object
        self.dag = Dag(STABILITY_LAG, self._ext_on_stable)
        self.peers_added = 0
        self.k = k

    # ----- loading
    def load(self, genesis: str) -> None:
        """Read the recent DAG (the window the planner can touch), the addresses we can author with, and
        their unspent outputs. Bounded: the unstable units, free units, stable units of the last
        WINDOW_MCIS main chain indexes and their parents, plus the old MC units new skiplists point to."""
        conn, b, dag = self.conn, self.b, self.dag
        self.genesis = genesis
        lsm = int(next(conn.execute("SELECT MAX(main_chain_index) FROM units WHERE is_stable=1"))[0])
        n_unstable = int(next(conn.execute("SELECT COUNT(*) FROM units WHERE is_stable=0"))[0])
        window_start = max(0, lsm - WINDOW_MCIS)
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS bg_ext_units (unit TEXT PRIMARY KEY)")
        conn.execute("DELETE FROM temp.bg_ext_units")
        conn.execute("INSERT OR IGNORE INTO temp.bg_ext_units SELECT unit FROM units WHERE is_stable=0 "
                     "UNION SELECT unit FROM units WHERE is_free=1 "
                     "UNION SELECT unit FROM units WHERE is_stable=1 AND main_chain_index >= ?", (window_start,))
        conn.execute("INSERT OR IGNORE INTO temp.bg_ext_units SELECT parent_unit FROM parenthoods "
                     "WHERE child_unit IN (SELECT unit FROM temp.bg_ext_units)")
        # MC units of old indexes that the skiplists of the MCIs this step can stabilize point to
        needed = sorted({m2 for m in range(lsm + 1, lsm + n_unstable + self.k + STABILITY_LAG + 2)
                         for m2 in _similar(m) if m2 < window_start})
        conn.executemany("INSERT OR IGNORE INTO temp.bg_ext_units SELECT unit FROM units WHERE is_on_main_chain=1 "
                         "AND main_chain_index=?", [(m,) for m in needed])
        cols = ("SELECT u.rowid, u.unit, level, witnessed_level, best_parent_unit, is_free, is_on_main_chain, "
                "main_chain_index, latest_included_mc_index, is_stable, sequence, last_ball_unit, version FROM units u ")
        rows = list(conn.execute(cols + "JOIN temp.bg_ext_units USING(unit) ORDER BY level, u.rowid"))
        parents: dict[str, list[str]] = {}
        for child, parent in conn.execute("SELECT child_unit, parent_unit FROM parenthoods "
                                          "WHERE child_unit IN (SELECT unit FROM temp.bg_ext_units) ORDER BY rowid"):
            parents.setdefault(child, []).append(parent)
        balls = dict(conn.execute("SELECT unit, ball FROM balls WHERE unit IN (SELECT unit FROM temp.bg_ext_units)"))
        witness_list = [r[0] for r in conn.execute(
            "SELECT address FROM unit_witnesses WHERE unit=? ORDER BY address", (genesis,))]
        wset = set(witness_list)
        wauthors: dict[str, list[str]] = {}
        for unit, address in conn.execute("SELECT unit, address FROM unit_authors WHERE unit IN "
                                          "(SELECT unit FROM temp.bg_ext_units) ORDER BY rowid"):
            if address in wset:
                wauthors.setdefault(unit, []).append(address)
        idx: dict[str, int] = {}
        mc = _WindowMc()
        for (_rowid, unit, level, wl, bp, is_free, on_mc, mci, limci, is_stable, seq, lbu, _v) in rows:
            i = len(dag.nodes)
            idx[unit] = i
            # parents / best parent outside the window are stable and never walked into (PlanningError if so)
            n = Node(i, unit, [idx[p] for p in parents.get(unit, []) if p in idx], tuple(wauthors.get(unit, ())),
                     level, wl, idx.get(bp) if bp is not None else None, final_bad=seq == "final-bad",
                     is_free=bool(is_free))
            n.parents = dag.sort_parents(n.parents)
            n.flushed = True
            if on_mc:
                n.mc_pos = mci
                mc.put(mci, i)
            if is_stable:
                n.mci, n.limci, n.is_on_mc, n.is_stable, n.ball = mci, limci, bool(on_mc), True, balls.get(unit)
                self.was_stable.add(i)
            elif lbu is not None:
                dag.last_ball_of_mc[i] = idx[lbu]
            if is_free:
                dag.free.append(i)
                self.was_free.add(i)
            dag.nodes.append(n)
        dag.mc = mc
        dag.last_stable_mci = lsm
        lbu = next(conn.execute("SELECT last_ball_unit FROM units WHERE is_on_main_chain=1 AND main_chain_index=?",
                                (lsm,)))[0]
        dag.min_retrievable_mci = int(next(conn.execute(
            "SELECT IFNULL(main_chain_index, 0) FROM units WHERE unit=?", (lbu,)))[0]) if lbu is not None else 0
        self.loaded = len(dag.nodes)
        self.idx = idx
        self.mrm_at_load = dag.min_retrievable_mci
        # the version the node composes with now: the one of its newest unit
        newest = next(conn.execute("SELECT version FROM units ORDER BY rowid DESC LIMIT 1"))[0]
        self.v2_from = 0 if newest == b.v2 else 1 << 62
        self.schema_version = 28 if self._has_column("units", "timestamp") else 27
        self._load_addresses(witness_list)
        self._load_outputs(idx)
        self._load_unstable_final_bad(idx)

    def _has_column(self, table: str, column: str) -> bool:
        return any(r[1] == column for r in self.conn.execute(f"PRAGMA table_info({table})"))

    def _load_addresses(self, witness_list: list[str]) -> None:
        """Addresses that revealed a single-sig definition and never changed it: we can author with them."""
        conn, b = self.conn, self.b
        changed = {r[0] for r in conn.execute("SELECT address FROM address_definition_changes")}
        usable: list[Address] = []
        # writer.js adds an `addresses` row when an address first reveals its own definition
        for address, definition in conn.execute(
                "SELECT a.address, d.definition FROM addresses a JOIN definitions d ON d.definition_chash = a.address "
                "ORDER BY a.address"):
            if address in changed:
                continue
            d = js_parse(definition)
            if not (isinstance(d, list) and d and d[0] == "sig") or definition_address(d) != address:
                continue
            usable.append(Address(address, d, ["r"], revealed=True, is_witness=address in witness_list))
        b.witnesses = [a for a in usable if a.is_witness]
        b.users = [a for a in usable if not a.is_witness]
        if not b.users:
            b.users = list(b.witnesses)
        b.by_address = {a.address: a for a in usable}
        b.witness_list = witness_list
        b.pool = {}
        b.asset_holders = {}
        b.user_addresses = frozenset(a.address for a in b.users)
        # the oracle: the author of the newest data feed (scanned from the end, not counted over all messages)
        feeders = list(conn.execute(
            "SELECT ua.address FROM (SELECT unit FROM messages WHERE app='data_feed' ORDER BY rowid DESC LIMIT 1) m "
            "JOIN unit_authors ua USING(unit) ORDER BY ua.address LIMIT 1"))
        b.oracle = b.by_address.get(feeders[0][0], b.users[0]) if feeders else b.users[0]
        b.feed_counter = int(next(conn.execute("SELECT IFNULL(MAX(rowid), 0) FROM data_feeds"))[0])

    def _load_outputs(self, idx: dict[str, int]) -> None:
        """Unspent base outputs of our addresses: stable ones spendable now, unstable ones once stable."""
        b = self.b
        # per address, its oldest OUTPUTS_PER_ADDRESS unspent stable outputs (index outputsByAddressSpent):
        # enough for one step, without reading every unspent output of the node
        for a in sorted(b.by_address):
            for unit, mi, oi, amount, address in self.conn.execute(
                    "SELECT o.unit, o.message_index, o.output_index, o.amount, o.address FROM outputs o "
                    "JOIN units u USING(unit) WHERE o.address=? AND o.is_spent=0 AND o.asset IS NULL "
                    "AND u.sequence='good' AND u.is_stable=1 ORDER BY o.rowid LIMIT ?", (a, OUTPUTS_PER_ADDRESS)):
                b.add_utxo(Utxo(unit, mi, oi, amount, address))
        for unit, mi, oi, amount, address in self.conn.execute(
                # units first (byStableMci), not every 'good' unit by bySequence: O(unstable), not O(units)
                "SELECT o.unit, o.message_index, o.output_index, o.amount, o.address FROM units u CROSS JOIN "
                "outputs o ON o.unit=u.unit WHERE u.is_stable=0 AND +u.sequence='good' AND o.is_spent=0 "
                "AND o.asset IS NULL ORDER BY u.rowid, o.message_index, o.output_index"):
            if address in b.by_address:
                self.unstable_outputs.setdefault(unit, []).append(Utxo(unit, mi, oi, amount, address))
        # recent good single-author spends: what a double spend (final-bad) can conflict with
        for src_unit, mi, oi, amount, address, spender in self.conn.execute(
                "SELECT i.src_unit, i.src_message_index, i.src_output_index, o.amount, o.address, i.unit "
                "FROM inputs i JOIN outputs o ON o.unit=i.src_unit AND o.message_index=i.src_message_index "
                "AND o.output_index=i.src_output_index JOIN units u ON u.unit=i.unit "
                "WHERE i.type='transfer' AND i.asset IS NULL AND i.is_unique=1 AND u.sequence='good' "
                "AND (SELECT COUNT(*) FROM unit_authors a WHERE a.unit=i.unit)=1 "
                "ORDER BY i.rowid DESC LIMIT 64"):
            if address in b.by_address and spender in idx:
                self.spent_by.insert(0, (Utxo(src_unit, mi, oi, amount, address), idx[spender]))

    def _load_unstable_final_bad(self, idx: dict[str, int]) -> None:
        """The unit objects of unstable final-bad units: their content hash is set when they become stable."""
        rowids = [r[0] for r in self.conn.execute(
            "SELECT rowid FROM units WHERE sequence='final-bad' AND is_stable=0 ORDER BY rowid")]
        if not rowids:
            return
        for rowid in rowids:
            unit = self._unit_object(rowid)
            if get_unit_hash(unit, self.network) != unit["unit"]:
                raise BadInputError(f"final-bad unit {unit['unit']} does not hash to its id",
                                    "extend only continues a sound node (stage + verify it first)")
            self.fb_units[idx[unit["unit"]]] = unit

    def _unit_object(self, rowid: int) -> dict[str, Any]:
        """The whole unit object of one existing unit, rebuilt by the engine's joint reader (content rows
        still present). Schemas before 28 lack `units.timestamp`, which the reader selects: a temp view
        shadows `units` for the read (version-1 units take their timestamp from creation_date anyway)."""
        shadow = not self._has_column("units", "timestamp")
        if shadow:
            self.conn.execute("CREATE TEMP VIEW units AS SELECT rowid AS rowid, *, 0 AS timestamp FROM main.units")
        try:
            chunk = UnitChunkReader(self.conn, chunk_size=1).read(rowid - 1)
        finally:
            if shadow:
                self.conn.execute("DROP VIEW temp.units")
        assert chunk is not None
        # min_retrievable_mci 0: read it whole (never as voided)
        unit = build_joint(chunk.units[0], chunk, ReadContext(network=self.network, min_retrievable_mci=0))["unit"]
        unit.pop("main_chain_index", None)
        unit.pop("content_hash", None)
        return unit

    # ----- planner callback
    def _ext_on_stable(self, group: list[Node]) -> None:
        for n in group:
            self.newly_stable.append(n)
            if n.idx >= self.loaded:
                p = self.pending[n.idx]
                if not n.final_bad:
                    for u in p.outputs:
                        if u.asset is None and u.address in self.b.by_address:
                            self.b.add_utxo(u)
            elif not n.final_bad:
                for u in self.unstable_outputs.pop(n.unit, ()):
                    self.b.add_utxo(u)

    # ----- one step
    def extend(self, k: int) -> dict[str, int]:
        """Compose and plan `k` units; write every row change; return counts per kind."""
        rng = self.rng
        kinds: dict[str, int] = {}
        for j in range(k):
            i = self.start_index + j
            r = rng.random()
            kind = "witness" if r < 0.5 else ("user" if r < 0.85 else ("multi" if r < 0.95 else "data_feed"))
            if i % 8 == 0:
                kind = EXT_SPECIALS[(i // 8) % len(EXT_SPECIALS)]
            if kind == "peer":
                self._add_peer(i)
                kind = "witness"
            built, _ = self._compose(i, kind)
            if built is None:
                built, kind = self._compose(i, "witness")
            if built is None:
                built, kind = self._compose(i, "user")
            if built is None:
                raise BadInputError(f"no author with stable funds for unit {i}",
                                    "extend needs a node whose own addresses hold stable outputs")
            parents = self._choose_parents()
            self.last_parents = [] if parents is self.last_parents else parents
            self.prev_parents = parents
            self._finish_unit(i, built, parents)
            kinds[kind] = kinds.get(kind, 0) + 1
        return kinds

    def _add_peer(self, i: int) -> None:
        present = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"peers", "peer_hosts"} <= present:
            return
        host = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        date = sql_date(BASE_TIMESTAMP + i * SECONDS_PER_UNIT)
        self.conn.execute("INSERT OR IGNORE INTO peer_hosts (peer_host, creation_date) VALUES (?, ?)", (host, date))
        learnt = next(self.conn.execute("SELECT peer_host FROM peer_hosts WHERE peer_host != ? ORDER BY rowid LIMIT 1",
                                        (host,)), (None,))[0]
        self.conn.execute("INSERT OR IGNORE INTO peers (peer, peer_host, learnt_from_peer_host, creation_date) "
                          "VALUES (?, ?, ?, ?)", (f"wss://{host}:6611", host, learnt, date))
        self.peers_added += 1

    def write(self) -> int:
        """Every row change of this step (inside the caller's transaction); returns the units voided."""
        dag, w, net = self.dag, self.w, self.network
        dag.finish()  # unstable tail: mci of the units the current MC includes, NULL otherwise
        # new units, in arrival order, with their final flags (the planner only touched memory so far)
        for i in range(self.loaded, len(dag.nodes)):
            self._emit_unit_row(dag.nodes[i])
        w.flush()
        has_mci = self._has_column("unit_authors", "_mci")
        updates, author_mci, content = [], [], []
        for n in dag.nodes[:self.loaded]:
            if n.idx in self.was_stable:
                if n.idx in self.was_free and not n.is_free:
                    updates.append((0, 1 if n.is_on_mc else 0, n.mci, n.limci, 1, n.unit))
                continue
            updates.append((1 if n.is_free else 0, 1 if n.is_on_mc else 0, n.mci, n.limci,
                            1 if n.is_stable else 0, n.unit))
            author_mci.append((n.mci, n.unit))
            if n.is_stable and n.final_bad:
                content.append((get_unit_content_hash(self.fb_units[n.idx], net), n.unit))
        w.executemany("UPDATE units SET is_free=?, is_on_main_chain=?, main_chain_index=?, "
                      "latest_included_mc_index=?, is_stable=? WHERE unit=?", updates)
        if has_mci:
            w.executemany("UPDATE unit_authors SET _mci=? WHERE unit=?", author_mci)
        w.executemany("UPDATE units SET content_hash=? WHERE unit=?", content)
        for n in self.newly_stable:
            if n.idx < self.loaded:  # new units got their balls from _emit_unit_row
                w.add("balls", (n.ball, sql_date(BASE_TIMESTAMP + (n.mci or 0) * SECONDS_PER_UNIT), n.unit))
                for s in n.skiplist:
                    w.add("skiplist_units", (n.unit, dag.nodes[s].unit))
        w.executemany("UPDATE outputs SET is_spent=1 WHERE unit=? AND message_index=? AND output_index=?",
                      self.spent)
        w.flush()
        return self._void_below_min_retrievable()

    def _void_below_min_retrievable(self) -> int:
        conn = self.conn
        rows = list(conn.execute(
            # only the range min_retrievable_mci moved over in this step (everything below was voided before)
            "SELECT rowid, unit, main_chain_index FROM units WHERE is_stable=1 AND main_chain_index >= ? "
            "AND main_chain_index < ? AND sequence='final-bad' AND unit NOT IN (SELECT unit FROM archived_joints) "
            "ORDER BY rowid", (self.mrm_at_load, self.dag.min_retrievable_mci)))
        if not rows:
            return 0
        archived = []
        for rowid, unit, mci in rows:
            node_unit = self.final_bad_units.get(self.idx.get(unit, -1)) if unit in self.idx else None
            if node_unit is None:
                obj = self._unit_object(rowid)
            else:
                obj = node_unit
            archived.append((unit, "voided", js_stringify({"unit": obj}),
                             sql_date(BASE_TIMESTAMP + (mci or 0) * SECONDS_PER_UNIT)))
        keys = [(r[1],) for r in rows]
        present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for sql in VOID_STATEMENTS:
            if void_table(sql) in present:
                self.w.executemany(sql, keys)
        self.w.executemany("INSERT INTO archived_joints (unit, reason, json, creation_date) VALUES (?, ?, ?, ?)",
                         archived)
        return len(rows)


def find_db(data_dir: Path) -> Path:
    """The full node's SQLite file of `data_dir` (light nodes and KV-era nodes are refused)."""
    db = data_dir / ocore_facts.FULL_DB_NAME
    if not db.exists():
        if (data_dir / ocore_facts.LIGHT_DB_NAME).exists():
            raise BadInputError(f"{data_dir} is a light node; extend continues full nodes only",
                                "extend a full node data dir")
        raise BadInputError(f"{data_dir} holds no byteball.sqlite", "give a data dir made by `generate --out`")
    kv = data_dir / ocore_facts.KV_DIR_NAME
    if kv.is_dir() and any(kv.iterdir()):
        raise BadInputError(f"{data_dir} has a rocksdb/ store; extend continues SQLite-only (pre-31) nodes",
                            "extend a node generated without --stuck-at-30")
    return db


def extend_node_dir(data_dir: Path, *, units: int, seed: int = 1,
                    busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> ExtendResult:
    """Add `units` units to the pre-31 SQLite-only full node in `data_dir`, in one IMMEDIATE transaction.

    Safe while other processes read the database (they see the node before or after the whole step) and
    while another writer waits (busy timeout). Deterministic for (database content, seed, units)."""
    data_dir = Path(data_dir)
    if not 1 <= units <= MAX_EXTEND_UNITS:
        raise BadInputError(f"--units {units} is out of range for --extend", f"give 1..{MAX_EXTEND_UNITS}")
    db = find_db(data_dir)
    t0 = time.perf_counter()
    conn = apsw.Connection(str(db))
    try:
        conn.set_busy_timeout(busy_timeout_ms)
        version = int(next(conn.execute("PRAGMA user_version"))[0])
        if version >= 31:
            raise BadInputError(f"{db} is at schema version {version}: its joints live in the KV store; extend "
                                "continues SQLite-only nodes below 31", "extend a node generated with --version 6..29")
        conn.execute("BEGIN IMMEDIATE")  # the write lock first: everything read below stays true until COMMIT
        try:
            versions = [r[0] for r in conn.execute(  # the oldest and newest units name the network
                "SELECT DISTINCT version FROM (SELECT version FROM units WHERE rowid IN "
                "(SELECT MIN(rowid) FROM units UNION SELECT MAX(rowid) FROM units))")]
            before, max_before = next(conn.execute("SELECT COUNT(*), MAX(rowid) FROM units"))
            genesis = next(conn.execute("SELECT unit FROM units ORDER BY rowid LIMIT 1"))[0]
            net = with_genesis(detect_network(versions), genesis)
            ext = _Extender(conn, net, 0, int(max_before) + 1, units)
            ext.rng = random.Random(f"extend-{seed}-{before}-{max_before}")
            ext.b.rng = ext.rng
            ext.load(genesis)
            kinds = ext.extend(units)
            voided = ext.write()
            after, max_rowid = next(conn.execute("SELECT COUNT(*), MAX(rowid) FROM units"))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    return ExtendResult(data_dir=data_dir, db_path=db, seed=seed, added_units=units, units_before=int(before),
                        units_after=int(after), max_rowid=int(max_rowid), newly_stable=len(ext.newly_stable),
                        voided=voided, peers_added=ext.peers_added, last_stable_mci=ext.dag.last_stable_mci,
                        min_retrievable_mci=ext.dag.min_retrievable_mci, kinds=dict(sorted(kinds.items())),
                        seconds=round(time.perf_counter() - t0, 3))
