"""SQL storage of units the way ocore's writer.js (0.2.95 and older) stored them, in bulk.

Rows are buffered per table and written with `executemany` inside the caller's single transaction.
Columns a schema version lacks (`units.timestamp` before 28, `unit_authors._mci` before 16, the
`attested_fields` table before 18) are left out, as the writer of that era did not have them."""

from __future__ import annotations

from typing import Any, Iterable

import apsw

from bluegreen.formats.jsvalues import js_property_order, js_stringify

# table -> columns we may write, in order; "or ignore" tables mirror writer.js's INSERT IGNORE
TABLES: dict[str, tuple[str, ...]] = {
    "units": ("unit", "creation_date", "version", "alt", "witness_list_unit", "last_ball_unit", "timestamp",
              "content_hash", "headers_commission", "payload_commission", "is_free", "is_on_main_chain",
              "main_chain_index", "latest_included_mc_index", "level", "witnessed_level", "is_stable", "sequence",
              "best_parent_unit"),
    "balls": ("ball", "creation_date", "unit"),
    "skiplist_units": ("unit", "skiplist_unit"),
    "parenthoods": ("child_unit", "parent_unit"),
    "definitions": ("definition_chash", "definition", "has_references"),
    "addresses": ("address", "creation_date"),
    "unit_authors": ("unit", "address", "definition_chash", "_mci"),
    "authentifiers": ("unit", "address", "path", "authentifier"),
    "unit_witnesses": ("unit", "address"),
    "witness_list_hashes": ("witness_list_unit", "witness_list_hash", "creation_date"),
    "earned_headers_commission_recipients": ("unit", "address", "earned_headers_commission_share"),
    "messages": ("unit", "message_index", "app", "payload_hash", "payload_location", "payload", "payload_uri",
                 "payload_uri_hash"),
    "address_definition_changes": ("unit", "message_index", "address", "definition_chash"),
    "polls": ("unit", "message_index", "question"),
    "poll_choices": ("unit", "choice_index", "choice"),
    "votes": ("unit", "message_index", "poll_unit", "choice"),
    "attestations": ("unit", "message_index", "attestor_address", "address"),
    "attested_fields": ("unit", "message_index", "attestor_address", "address", "field", "value"),
    "assets": ("unit", "message_index", "cap", "is_private", "is_transferrable", "auto_destroy", "fixed_denominations",
               "issued_by_definer_only", "cosigned_by_definer", "spender_attested", "issue_condition",
               "transfer_condition"),
    "asset_attestors": ("unit", "message_index", "asset", "attestor_address"),
    "asset_denominations": ("asset", "denomination", "count_coins"),
    "data_feeds": ("unit", "message_index", "feed_name", "value", "int_value"),
    "spend_proofs": ("unit", "message_index", "spend_proof_index", "spend_proof", "address"),
    "inputs": ("unit", "message_index", "input_index", "type", "src_unit", "src_message_index", "src_output_index",
               "from_main_chain_index", "to_main_chain_index", "denomination", "amount", "serial_number", "asset",
               "is_unique", "address"),
    "outputs": ("unit", "message_index", "output_index", "address", "amount", "asset", "denomination", "is_serial"),
    "witnessing_outputs": ("main_chain_index", "address", "amount", "is_spent", "creation_date"),
    "headers_commission_outputs": ("main_chain_index", "address", "amount", "is_spent", "creation_date"),
    "archived_joints": ("unit", "reason", "json", "creation_date"),
}
OR_IGNORE = {"definitions", "addresses", "witness_list_hashes"}
MAX_PROFILE_FIELD_LENGTH = 50
MAX_PROFILE_VALUE_LENGTH = 100
FLUSH_UNITS = 2000  # units of content (about 20,000 rows) between executemany rounds


def has_references(definition: Any) -> bool:
    """Definition.hasReferences: whether a definition refers to other addresses, feeds or units."""
    if isinstance(definition, list) and definition:
        op = definition[0]
        if op in ("address", "definition template", "seen address", "seen", "in data feed", "in merkle",
                  "mci", "age", "has", "has one", "seen definition change", "attested", "cosigned by",
                  "not", "has equal", "has one equal", "sum"):
            return True
        args = definition[1] if len(definition) > 1 else None
        if op in ("or", "and"):
            return any(has_references(d) for d in args)
        if op in ("r of set", "weighted and"):
            items = args.get("set") if isinstance(args, dict) else None
            return any(has_references(d.get("value", d) if isinstance(d, dict) else d) for d in items or [])
    return False


class SqlWriter:
    """Buffered inserts into one open apsw connection (the caller owns BEGIN/COMMIT)."""

    def __init__(self, conn: apsw.Connection) -> None:
        self.conn = conn
        present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        self.sql: dict[str, str] = {}
        self.keep: dict[str, list[int]] = {}
        for table, cols in TABLES.items():
            if table not in present:
                continue
            have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
            idx = [i for i, c in enumerate(cols) if c in have]
            names = ", ".join(f"`{cols[i]}`" for i in idx)
            verb = "INSERT OR IGNORE" if table in OR_IGNORE else "INSERT"
            self.sql[table] = f"{verb} INTO {table} ({names}) VALUES ({', '.join('?' * len(idx))})"
            self.keep[table] = idx
        # before a later schema fix, asset_attestors' key was (unit, message_index): one attestor per message
        pk = [r[1] for r in conn.execute("PRAGMA table_info(asset_attestors)") if r[5]]
        self.multi_attestors = "attestor_address" in pk
        # every table of TABLES gets a list, so `add` is a bare append; rows of tables this schema lacks
        # are dropped, and missing columns cut out, at flush time
        self.buf: dict[str, list[tuple[Any, ...]]] = {t: [] for t in TABLES}
        self.units_queued = 0
        self.counts: dict[str, int] = {t: 0 for t in self.sql}
        self.deferred_indexes: list[str] = []  # CREATE INDEX statements dropped for the bulk load

    def defer_indexes(self) -> None:
        """Drop the non-unique secondary indexes until `restore_indexes`: building each index once from
        sorted data is far cheaper than updating ~50 b-trees keyed by random base64 on every insert.
        Unique indexes and table constraints stay, so OR IGNORE and constraint errors behave as before."""
        rows = list(self.conn.execute(
            "SELECT m.name, m.sql, l.\"unique\" FROM sqlite_master m JOIN pragma_index_list(m.tbl_name) l "
            "ON l.name = m.name WHERE m.type='index' AND m.sql IS NOT NULL ORDER BY m.rowid"))
        for name, sql, unique in rows:
            if unique:
                continue
            self.conn.execute(f'DROP INDEX "{name}"')
            self.deferred_indexes.append(sql)

    def restore_indexes(self) -> None:
        """Write every queued row, then re-create the indexes `defer_indexes` dropped (same SQL text)."""
        self.flush()
        for sql in self.deferred_indexes:
            self.conn.execute(sql)
        self.deferred_indexes = []

    def has_table(self, table: str) -> bool:
        """Whether this schema version has `table`."""
        return table in self.sql

    def add(self, table: str, row: tuple[Any, ...]) -> None:
        """Queue one row of a TABLES table, given in TABLES column order (columns the schema lacks are
        dropped when written)."""
        self.buf[table].append(row)

    def flush(self) -> None:
        """Write every queued row (per table in insertion order, so rowids are as if written one by one)."""
        for table, rows in self.buf.items():
            if not rows:
                continue
            if table in self.sql:
                idx = self.keep[table]
                if len(idx) != len(TABLES[table]):
                    rows[:] = [tuple(r[i] for i in idx) for r in rows]
                self.conn.executemany(self.sql[table], rows)
                self.counts[table] += len(rows)
            rows.clear()
        self.units_queued = 0

    def executemany(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> None:
        """Run a fix-up statement (after flushing so it sees every row)."""
        self.flush()
        rows = list(rows)
        if rows:
            self.conn.executemany(sql, rows)

    # ----- unit content, as saveJoint wrote it when the unit arrived
    def write_content(self, unit: dict[str, Any], payments: list[Any], creation_date: str) -> None:
        """Rows of one unit that do not change when it becomes stable: parents, witnesses, authors'
        definitions and signatures, messages and their per-app tables, inputs, outputs."""
        u = unit["unit"]
        add = self.add
        buf = self.buf
        if "parent_units" in unit:
            buf["parenthoods"].extend([(u, p) for p in unit["parent_units"]])
        if "witnesses" in unit:
            from bluegreen.formats.hashing import get_base64_hash
            for w in unit["witnesses"]:
                add("unit_witnesses", (u, w))
            add("witness_list_hashes", (u, get_base64_hash(unit["witnesses"]), creation_date))
        authors = unit["authors"]
        first_author = authors[0]["address"]
        single = len(authors) == 1
        for a in authors:
            if "definition" in a:
                from bluegreen.formats.chash import definition_address as get_chash160
                chash = get_chash160(a["definition"])
                add("definitions", (chash, js_stringify(a["definition"]), 1 if has_references(a["definition"]) else 0))
                if chash == a["address"]:
                    add("addresses", (a["address"], creation_date))
            if "content_hash" not in unit:
                address = a["address"]
                buf["authentifiers"].extend([(u, address, path, sig) for path, sig in a["authentifiers"].items()])
        messages_rows = buf["messages"]
        for i, m in enumerate(unit.get("messages", ())):
            app = m["app"]
            payload = m.get("payload")
            text_payload = None
            if "payload" in m:
                if app == "text":
                    text_payload = payload
                elif app in ("data", "profile", "attestation", "definition_template"):
                    text_payload = js_stringify(payload)
            messages_rows.append((u, i, app, m["payload_hash"], m["payload_location"], text_payload,
                                  m.get("payload_uri"), m.get("payload_uri_hash")))
            if m["payload_location"] == "inline":
                self._inline(u, i, app, payload, first_author)
            for j, sp in enumerate(m.get("spend_proofs", ())):
                add("spend_proofs", (u, i, j, sp["spend_proof"], sp.get("address") or first_author))
        if "earned_headers_commission_recipients" in unit:
            for r in unit["earned_headers_commission_recipients"]:
                add("earned_headers_commission_recipients", (u, r["address"], r["earned_headers_commission_share"]))
        inputs_rows, outputs_rows = buf["inputs"], buf["outputs"]
        for pm in payments:
            mi = pm.message_index
            pl = unit["messages"][mi]["payload"]
            asset = pl.get("asset")
            denomination = pm.denomination
            for j, inp in enumerate(pl["inputs"]):
                t = inp.get("type", "transfer")
                if t == "transfer":
                    inputs_rows.append((u, mi, j, t, inp["unit"], inp["message_index"], inp["output_index"], None, None,
                                        denomination, inp.get("amount"), inp.get("serial_number"), asset,
                                        pm.is_unique, first_author if single else pm.input_addresses[j]))
                else:
                    hc = t in ("witnessing", "headers_commission")
                    inputs_rows.append((u, mi, j, t, None, None, None, inp["from_main_chain_index"] if hc else None,
                                        inp["to_main_chain_index"] if hc else None, denomination, inp.get("amount"),
                                        inp.get("serial_number"), asset, pm.is_unique,
                                        first_author if single else inp["address"]))
            outputs_rows.extend([(u, mi, j, out["address"], int(out["amount"]), asset, denomination, 1)
                                 for j, out in enumerate(pl["outputs"])])
        self.units_queued += 1
        if self.units_queued >= FLUSH_UNITS:
            self.flush()

    def _inline(self, u: str, i: int, app: str, payload: Any, first_author: str) -> None:
        add = self.add
        if app == "address_definition_change":
            add("address_definition_changes", (u, i, payload.get("address") or first_author, payload["definition_chash"]))
        elif app == "poll":
            add("polls", (u, i, payload["question"]))
            for j, c in enumerate(payload["choices"]):
                add("poll_choices", (u, j, c))
        elif app == "vote":
            add("votes", (u, i, payload["unit"], payload["choice"]))
        elif app == "attestation":
            add("attestations", (u, i, first_author, payload["address"]))
            for f, v in js_property_order(payload["profile"]).items():  # JS for-in order
                if len(f) <= MAX_PROFILE_FIELD_LENGTH and isinstance(v, str) and len(v) <= MAX_PROFILE_VALUE_LENGTH:
                    add("attested_fields", (u, i, first_author, payload["address"], f, v))
        elif app == "asset":
            p = payload
            add("assets", (u, i, p.get("cap"), int(bool(p.get("is_private"))), int(bool(p.get("is_transferrable"))),
                           int(bool(p.get("auto_destroy"))), int(bool(p.get("fixed_denominations"))),
                           int(bool(p.get("issued_by_definer_only"))), int(bool(p.get("cosigned_by_definer"))),
                           int(bool(p.get("spender_attested"))),
                           js_stringify(p["issue_condition"]) if p.get("issue_condition") else None,
                           js_stringify(p["transfer_condition"]) if p.get("transfer_condition") else None))
            for a in p.get("attestors", ()):
                add("asset_attestors", (u, i, u, a))
            for d in p.get("denominations", ()):
                add("asset_denominations", (u, d["denomination"], d.get("count_coins")))
        elif app == "asset_attestors":
            for a in payload["attestors"]:
                add("asset_attestors", (u, i, payload["asset"], a))
        elif app == "data_feed":
            for name, value in js_property_order(payload).items():  # JS for-in order = rowid order
                # writer.js: strings go to `value`, anything else to int_value
                if isinstance(value, str):
                    add("data_feeds", (u, i, name, value, None))
                else:
                    add("data_feeds", (u, i, name, None, value))
