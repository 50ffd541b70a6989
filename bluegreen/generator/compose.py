"""The generation loop: picks each unit's kind, authors and parents, composes it, hashes it, hands its rows
to the writer, and writes the `units` / `unit_authors` / `balls` rows when the DAG planner stabilizes it."""

from __future__ import annotations

import datetime as dt
import functools
import random
from bisect import bisect_left, insort
from dataclasses import dataclass, field
from typing import Any, Callable

from bluegreen.formats.chash import definition_address as get_chash160
from bluegreen.formats.hashing import get_base64_hash, get_unit_content_hash, get_unit_hash
from bluegreen.formats.jsvalues import js_stringify
from bluegreen.formats.networks import Network
from bluegreen.generator.model import Dag, Node
from bluegreen.generator.units import (
    TOTAL_WHITEBYTES, Address, Built, ContentBuilder, PaymentMeta, Utxo, b64, nested_data, sig_definition,
)
from bluegreen.generator.writer import SqlWriter

BASE_TIMESTAMP = 1_500_000_000  # 2017-07-14: every generated date is derived from it, for determinism
SECONDS_PER_UNIT = 17
STABILITY_LAG = 8
SPECIALS = [
    "data", "text", "profile", "attestation", "poll", "vote", "asset0", "asset1", "asset2", "asset_attestors",
    "issue", "asset_pay", "definition_template", "adc", "private", "uri", "witnesses_list", "final_bad", "hc",
    "witnessing", "multi_ehcr", "shared_pay", "data_feed",
]

# archiving.js 'voided': what a final-bad unit below min_retrievable_mci loses (one parameter: the unit)
VOID_STATEMENTS = [
    "DELETE FROM witness_list_hashes WHERE witness_list_unit=?",
    "DELETE FROM earned_headers_commission_recipients WHERE unit=?",
    "DELETE FROM authentifiers WHERE unit=?",
    "UPDATE unit_authors SET definition_chash=NULL WHERE unit=?",
    "DELETE FROM address_definition_changes WHERE unit=?",
    "DELETE FROM inputs WHERE unit=?",
    "DELETE FROM outputs WHERE unit=?",
    "DELETE FROM spend_proofs WHERE unit=?",
    "DELETE FROM data_feeds WHERE unit=?",
    "DELETE FROM poll_choices WHERE unit=?",
    "DELETE FROM polls WHERE unit=?",
    "DELETE FROM votes WHERE unit=?",
    "DELETE FROM attested_fields WHERE unit=?",
    "DELETE FROM attestations WHERE unit=?",
    "DELETE FROM asset_metadata WHERE asset=?",
    "DELETE FROM asset_denominations WHERE asset=?",
    "DELETE FROM asset_attestors WHERE unit=?",
    "DELETE FROM assets WHERE unit=?",
    "DELETE FROM messages WHERE unit=?",
]


def void_table(sql: str) -> str:
    """The table a VOID_STATEMENTS entry touches."""
    return sql.split(" FROM ")[1].split()[0] if " FROM " in sql else "unit_authors"


def _seq(asset: dict[str, Any]) -> int:
    return asset["seq"]


def sql_date(ts: int) -> str:
    """SQLite's CURRENT_TIMESTAMP text for a unix time."""
    day, sec = divmod(ts, 86400)  # UTC days have 86400 s in unix time
    return f"{_sql_day(day)} {sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}"


@functools.lru_cache(maxsize=64)
def _sql_day(day: int) -> str:
    return dt.datetime.fromtimestamp(day * 86400, dt.timezone.utc).strftime("%Y-%m-%d")


@dataclass
class Pending:
    """What the `units` row of a not-yet-stable unit needs."""

    creation_date: str
    version: str
    alt: str
    witness_list_unit: str | None
    last_ball_unit: str | None
    timestamp: int
    headers_commission: int
    payload_commission: int
    authors: list[tuple[str, str | None]]
    outputs: list[Utxo]
    unit: dict[str, Any] | None = None  # kept only for final-bad units (content hash, archiving)


@dataclass
class Stats:
    """Counts the generator reports."""

    units: int = 0
    messages: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)
    final_bad: int = 0
    voided: int = 0
    unstable: int = 0
    null_mci: int = 0


class Generator:
    """Builds a whole DAG of `n_units` units into `writer` (one transaction is the caller's)."""

    def __init__(self, writer: SqlWriter, *, n_units: int, schema_version: int, light: bool, network: Network,
                 seed: int, on_unit: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.w = writer
        self.n_units = max(n_units, 2)
        self.schema_version = schema_version
        self.light = light
        self.network = network
        self.rng = random.Random(seed)
        self.b = ContentBuilder(self.rng, network)
        self.b.multi_attestors = writer.multi_attestors
        self.dag = Dag(STABILITY_LAG, self._on_stable)
        self.pending: dict[int, Pending] = {}
        self.on_unit = on_unit
        self.stats = Stats()
        self.spent: list[tuple[str, int, int]] = []
        self.flushed_free: list[int] = []
        self.final_bad_nodes: list[int] = []
        self.final_bad_units: dict[int, dict[str, Any]] = {}
        self.spent_by: list[tuple[Utxo, int]] = []  # recent good spends a double spend can conflict with
        self.locked: dict[str, int] = {}  # address -> node idx of its unstable definition change
        self.special_i = 0
        # assets by state, each list in creation order (= b.assets order), kept up to date instead of
        # re-scanning every asset for each asset unit (quadratic at 1M units)
        self.asset_of_node: dict[int, dict[str, Any]] = {}
        self.stable_unissued: list[dict[str, Any]] = []  # stable, variant 0/1, not issued yet
        self.stable_v2: list[dict[str, Any]] = []  # stable, variant 2 (attested)
        self.issued_assets: list[dict[str, Any]] = []
        self.last_parents: list[int] = []
        self.prev_parents: list[int] = []
        self.genesis = ""
        # the first units of a schema >= 28 database are of the first version; timestamps came with 2.0
        self.v2_from = self.n_units * 3 // 10 if schema_version >= 28 else self.n_units + 1

    # ----- stabilization callback: the `units` row and its companions
    def _on_stable(self, group: list[Node]) -> None:
        for n in group:
            self._emit_unit_row(n)

    def _emit_unit_row(self, n: Node) -> None:
        p = self.pending.pop(n.idx)
        w, light = self.w, self.light
        content_hash = None
        sequence = "good"
        if n.final_bad:
            sequence = "final-bad"
            if n.is_stable and p.unit is not None:
                content_hash = get_unit_content_hash(p.unit, self.network)
        w.add("units", (
            n.unit, p.creation_date, p.version, p.alt, p.witness_list_unit, p.last_ball_unit, p.timestamp, content_hash,
            p.headers_commission, p.payload_commission, 1 if n.is_free else 0,
            0 if light else (1 if n.is_on_mc else 0), n.mci, None if light else n.limci,
            None if light else n.level, None if light else n.witnessed_level, 1 if n.is_stable else 0, sequence,
            None if light else (self.dag.nodes[n.best_parent].unit if n.best_parent is not None else None),
        ))
        for address, chash in p.authors:
            w.add("unit_authors", (n.unit, address, chash, n.mci))
        if n.is_stable and not light:
            w.add("balls", (n.ball, p.creation_date, n.unit))
            for s in n.skiplist:
                w.add("skiplist_units", (n.unit, self.dag.nodes[s].unit))
        if n.is_stable and not n.final_bad:
            for u in p.outputs:
                self.b.add_utxo(u)
        if n.is_stable:
            if self.locked:
                for addr, idx in list(self.locked.items()):
                    if idx == n.idx:
                        del self.locked[addr]
            if n.idx in self.asset_of_node:
                self._asset_became_stable(self.asset_of_node.pop(n.idx))
        n.flushed = True
        if n.is_free:
            self.flushed_free.append(n.idx)

    # ----- asset bookkeeping
    def _asset_became_stable(self, asset: dict[str, Any]) -> None:
        insort(self.stable_v2 if asset["variant"] == 2 else self.stable_unissued, asset, key=_seq)

    def _asset_payable(self, asset: dict[str, Any]) -> bool:
        """any(_usable(u, asset) for u in users + [definer]), from the holder sets."""
        unit, locked = asset["unit"], self.locked
        holders = self.b.asset_holders.get(unit)
        if holders and (not locked or any(h not in locked for h in holders)):
            return True
        definer = asset["definer"]
        return definer not in locked and self.b.has_funds(definer, unit)

    # ----- helpers
    def _version(self, i: int) -> str:
        return self.b.v2 if i >= self.v2_from else self.b.v1

    def _usable(self, a: Address, asset: str | None = None) -> bool:
        return a.address not in self.locked and self.b.has_funds(a.address, asset)

    def _pick_users(self, k: int) -> list[Address] | None:
        users = self.b.users
        start = self.rng.randrange(len(users))
        out = []
        for j in range(len(users)):
            a = users[(start + j) % len(users)]
            if self._usable(a):
                out.append(a)
                if len(out) == k:
                    return out
        return None

    def _pick_witness(self) -> Address | None:
        ws = self.b.witnesses
        start = self.rng.randrange(len(ws))
        for j in range(len(ws)):
            a = ws[(start + j) % len(ws)]
            if self._usable(a):
                return a
        return None

    def _choose_parents(self, force_sibling: bool = False) -> list[int]:
        dag, rng = self.dag, self.rng
        if force_sibling and self.prev_parents:
            return self.prev_parents
        if self.last_parents and rng.random() < 0.3:
            return self.last_parents  # arrived at the same time as the previous unit: same parents, a sibling
        best = dag.best_free()
        nodes = dag.nodes
        top = nodes[best].level
        # free units left behind are picked up at once, so no branch can reach back to the stable point
        stale = [f for f in dag.free if f != best and nodes[f].level < top - 1]
        recent = [f for f in dag.free if f != best and nodes[f].level >= top - 1]
        if recent and not stale and rng.random() < 0.12:
            return [rng.choice(recent)]  # a short side branch
        rng.shuffle(recent)
        picked = [best, *stale[:14], *recent[: rng.randrange(0, 3)]]
        return dag.sort_parents(picked)

    def _recipients(self, k: int) -> list[str]:
        pool = self.b.users + self.b.witnesses
        return [pool[self.rng.randrange(len(pool))].address for _ in range(k)]

    # ----- one unit
    def _compose(self, i: int, kind: str) -> tuple[Built | None, str]:
        """Return the composed unit (without parents/last ball) or None when the kind cannot be made now."""
        b, rng = self.b, self.rng
        version = self._version(i)
        v2 = version != b.v1
        revealed: dict[str, list[Any]] = {}
        payments: list[PaymentMeta] = []
        new_outputs: list[Utxo] = []
        final_bad = False
        hc, pc = b.fees()
        fee = hc + pc

        def unit_for(authors: list[Address]) -> dict[str, Any]:
            return b.header(version, authors, revealed)

        def pay(unit: dict[str, Any], payers: list[Address], recipients: int = 1, **kw: Any) -> PaymentMeta:
            _, meta, _ = b.base_payment(unit, payers, fee, v2, self._recipients(recipients), **kw)
            payments.append(meta)
            return meta

        if kind == "witness":
            a = self._pick_witness()
            if a is None:
                return None, kind
            unit = unit_for([a])
            pay(unit, [a], recipients=rng.randrange(0, 2))
        elif kind in ("user", "multi", "multi_ehcr", "adc", "final_bad"):
            k = 2 if kind in ("multi", "multi_ehcr") or (kind == "adc" and self.special_i % 2) else 1
            authors = self._pick_users(k)
            if authors is None:
                return None, kind
            if kind == "final_bad":
                cands = [(u, s) for (u, s) in self.spent_by if self.dag.nodes[s].is_stable and u.address not in self.locked]
                if not cands:
                    return None, kind
                u, _ = cands[rng.randrange(len(cands))]
                authors = [b.by_address[u.address]]
                unit = unit_for(authors)
                meta = pay(unit, [], extra_inputs=[{"unit": u.unit, "message_index": u.message_index,
                                                     "output_index": u.output_index}],
                           extra_owners=[u.address], extra_amount=u.amount)
                meta.is_unique = None  # writer.js: NULL for inputs of a double spend
                unit["messages"].append(b.simple_message("text", "double spend " + str(i), v2))
                final_bad = True
            else:
                unit = unit_for(authors)
                meta = pay(unit, authors, recipients=2)
                if kind != "adc" and len(authors) == 1:
                    for s in meta.spent:
                        self.spent_by.append((s, -1))
                if kind == "multi_ehcr":
                    shares = sorted([(authors[0].address, 60), (authors[1].address, 40)])
                    unit["earned_headers_commission_recipients"] = [
                        {"address": ad, "earned_headers_commission_share": sh} for ad, sh in shares]
                if kind == "adc":
                    target = authors[-1]
                    new_def = sig_definition(rng)
                    payload: dict[str, Any] = {"definition_chash": get_chash160(new_def)}
                    if len(authors) > 1:
                        payload["address"] = target.address
                    unit["messages"].append(b.simple_message("address_definition_change", payload, v2))
                    target.reveal_next = new_def
                    target.definition = new_def
                    self.locked[target.address] = -1  # set to the node index once known
        elif kind == "shared_pay":
            a = b.shared
            if not self._usable(a):
                return None, kind
            unit = unit_for([a])
            pay(unit, [a], recipients=1)
        elif kind in ("hc", "witnessing"):
            a = self._pick_witness() if kind == "witnessing" else (self._pick_users(1) or [None])[0]
            if a is None:
                return None, kind
            frm = b.hc_claimed.get(a.address, 0) + 1
            to = min(frm + 4, self.dag.last_stable_mci - 1)
            if to < frm:
                return None, kind
            b.hc_claimed[a.address] = to
            amounts = [100 + rng.randrange(1000) for _ in range(frm, to + 1)]
            table = "witnessing_outputs" if kind == "witnessing" else "headers_commission_outputs"
            for mci, amt in zip(range(frm, to + 1), amounts):
                self.w.add(table, (mci, a.address, amt, 1, sql_date(BASE_TIMESTAMP + mci * SECONDS_PER_UNIT)))
            unit = unit_for([a])
            pay(unit, [a], recipients=1,
                extra_inputs=[{"type": kind if kind == "witnessing" else "headers_commission",
                               "from_main_chain_index": frm, "to_main_chain_index": to}],
                extra_owners=[a.address], extra_amount=sum(amounts))
        else:
            author = {"attestation": b.attestor, "data_feed": b.oracle}.get(kind)
            if kind in ("issue", "asset_pay", "asset_attestors"):
                return self._compose_asset_use(i, kind, version, v2, revealed, payments, fee)
            if author is None:
                got = self._pick_users(1)
                if got is None:
                    return None, kind
                author = got[0]
            if not self._usable(author):
                return None, kind
            if kind == "vote" and not self.b.polls:
                return None, kind
            if kind == "witnesses_list":
                unit = unit_for([author])
                pay(unit, [author])
                unit["witnesses"] = list(b.witness_list)
            else:
                unit = unit_for([author])
                pay(unit, [author])
                msgs = unit["messages"]
                if kind == "data":
                    msgs.append(b.simple_message("data", nested_data(rng), v2))
                elif kind == "text":
                    msgs.append(b.simple_message("text", b.text_payload(), v2))
                elif kind == "profile":
                    msgs.append(b.simple_message("profile", b.profile_payload(), v2))
                elif kind == "attestation":
                    target = b.users[rng.randrange(len(b.users))].address
                    msgs.append(b.simple_message("attestation", b.attestation_payload(target), v2))
                elif kind == "poll":
                    msgs.append(b.simple_message("poll", b.poll_payload(), v2))
                elif kind == "vote":
                    poll_unit, choices = b.polls[rng.randrange(len(b.polls))]
                    msgs.append(b.simple_message("vote", {"unit": poll_unit, "choice": choices[rng.randrange(len(choices))]}, v2))
                elif kind.startswith("asset"):
                    msgs.append(b.simple_message("asset", b.asset_payload(int(kind[-1])), v2))
                elif kind == "definition_template":
                    msgs.append(b.simple_message("definition_template", b.definition_template_payload(), v2))
                elif kind == "data_feed":
                    msgs.append(b.simple_message("data_feed", b.data_feed_payload(), v2))
                elif kind == "private":
                    msgs.append({"app": "payment", "payload_location": "none",
                                 "payload_hash": get_base64_hash({"private": b64(rng, 32)}),
                                 "spend_proofs": [{"spend_proof": get_base64_hash({"sp": b64(rng, 32)})},
                                                  {"spend_proof": get_base64_hash({"sp": b64(rng, 32)})}]})
                elif kind == "uri":
                    uri = f"https://example.com/payload/{rng.randrange(10**9)}.json"
                    msgs.append({"app": "data", "payload_location": "uri",
                                 "payload_hash": get_base64_hash({"uri": uri}),
                                 "payload_uri": uri, "payload_uri_hash": get_base64_hash(uri)})
        for pm in payments:
            m = unit["messages"][pm.message_index]
            for j, o in enumerate(m["payload"]["outputs"]):
                new_outputs.append(Utxo("", pm.message_index, j, o["amount"], o["address"], pm.asset, pm.denomination))
        unit["headers_commission"], unit["payload_commission"] = hc, pc
        return Built(unit, payments, revealed, new_outputs, kind, final_bad), kind

    def _compose_asset_use(self, i: int, kind: str, version: str, v2: bool, revealed: dict[str, list[Any]],
                           payments: list[PaymentMeta], fee: int) -> tuple[Built | None, str]:
        b, rng = self.b, self.rng
        # each list holds stable assets in creation order, as a filter of b.assets would
        if kind == "issue":
            candidates = self.stable_unissued
        elif kind == "asset_pay":
            candidates = [a for a in self.issued_assets if self._asset_payable(a)]
        else:
            candidates = self.stable_v2
        if not candidates:
            return None, kind
        asset = candidates[rng.randrange(len(candidates))]
        if kind == "asset_pay":
            payer = next(u for u in [b.by_address[asset["definer"]]] + b.users if self._usable(u, asset["unit"]))
        else:
            payer = b.by_address[asset["definer"]]
        if not self._usable(payer):
            return None, kind
        unit = b.header(version, [payer], revealed)
        _, meta, _ = b.base_payment(unit, [payer], fee, v2, self._recipients(1))
        payments.append(meta)
        denom = 1
        if kind == "asset_attestors":
            unit["messages"].append(b.simple_message("asset_attestors", {
                "asset": asset["unit"], "attestors": b.attestor_list([b.attestor.address, b.users[4].address, b.users[5].address])}, v2))
        else:
            if kind == "issue":
                amount = 10**12 if asset["variant"] == 0 else 10**6
                inputs: list[dict[str, Any]] = [{"type": "issue", "serial_number": 1, "amount": amount}]
                asset["issued"] = True
                del self.stable_unissued[bisect_left(self.stable_unissued, asset["seq"], key=_seq)]
                insort(self.issued_assets, asset, key=_seq)
            else:
                src = self.b.take(payer.address, asset["unit"])
                inputs = [{"unit": src.unit, "message_index": src.message_index, "output_index": src.output_index}]
                amount = src.amount
                self.spent.append((src.unit, src.message_index, src.output_index))
            other = b.users[rng.randrange(len(b.users))].address
            send = max(1, amount // 3)
            outs = sorted([{"address": other, "amount": send}, {"address": payer.address, "amount": amount - send}],
                          key=lambda o: (o["address"], o["amount"]))
            payload: dict[str, Any] = {"asset": asset["unit"]}
            if asset["variant"] == 1:
                payload["denomination"] = 1
            payload["inputs"] = inputs
            payload["outputs"] = outs
            unit["messages"].append(b.simple_message("payment", payload, v2))
            payments.append(PaymentMeta(len(unit["messages"]) - 1, asset["unit"], denom, [payer.address]))
        new_outputs: list[Utxo] = []
        for pm in payments:
            m = unit["messages"][pm.message_index]
            for j, o in enumerate(m["payload"]["outputs"]):
                new_outputs.append(Utxo("", pm.message_index, j, o["amount"], o["address"], pm.asset, pm.denomination))
        unit["headers_commission"], unit["payload_commission"] = fee - fee // 3, fee // 3
        return Built(unit, payments, revealed, new_outputs, kind), kind

    def _finish_unit(self, i: int, built: Built, parents: list[int] | None) -> Node:
        """Attach parents and last ball, hash, write content rows, add to the DAG."""
        b, dag, unit = self.b, self.dag, built.unit
        ts = BASE_TIMESTAMP + i * SECONDS_PER_UNIT
        v2 = unit["version"] != b.v1
        last_ball_unit = None
        lb_node = None
        if parents is not None:
            lb_node = dag.last_stable_mc_node()
            unit["parent_units"] = [dag.nodes[p].unit for p in parents]
            unit["last_ball"] = lb_node.ball
            unit["last_ball_unit"] = last_ball_unit = lb_node.unit
            if "witnesses" not in unit:
                unit["witness_list_unit"] = self.genesis
        hc, pc = unit["headers_commission"], unit["payload_commission"]
        if v2:
            unit["timestamp"] = ts
        unit["unit"] = get_unit_hash(unit, self.network)
        creation_ts = ts + (1 + self.rng.randrange(3) if v2 else 0)
        creation_date = sql_date(creation_ts)
        # every spend is known now; outputs get the unit id
        for pm in built.payments:
            for s in pm.spent:
                if pm.is_unique is not None:
                    self.spent.append((s.unit, s.message_index, s.output_index))
        for o in built.new_outputs:
            o.unit = unit["unit"]
        self.w.write_content(unit, built.payments, creation_date)
        for a in unit["authors"]:
            addr = b.by_address[a["address"]]
            addr.revealed = True
            if "definition" in a:
                addr.reveal_next = None if addr.reveal_next is a["definition"] else addr.reveal_next
        authors = [(a["address"], get_chash160(a["definition"]) if "definition" in a else None) for a in unit["authors"]]
        self.pending[len(dag.nodes)] = Pending(
            creation_date, unit["version"], unit["alt"], unit.get("witness_list_unit"), last_ball_unit,
            ts if v2 else 0, hc, pc, authors, built.new_outputs, unit if built.final_bad else None)
        wa = tuple(a for a, _ in authors if b.by_address[a].is_witness)
        if parents is None:
            node = dag.add_genesis(unit["unit"], wa)
        else:
            assert lb_node is not None
            node = dag.add(unit["unit"], parents, wa, lb_node.idx, final_bad=built.final_bad)
        for addr, idx in self.locked.items():
            if idx == -1:
                self.locked[addr] = node.idx
        if built.final_bad:
            self.final_bad_nodes.append(node.idx)
            self.final_bad_units[node.idx] = unit
            self.stats.final_bad += 1
        spent_by = self.spent_by
        if spent_by and spent_by[-1][1] == -1:
            # the unresolved spends are this unit's, all at the tail
            j = len(spent_by) - 1
            while j >= 0 and spent_by[j][1] == -1:
                spent_by[j] = (spent_by[j][0], node.idx)
                j -= 1
            del spent_by[:-64]
        for m in unit.get("messages", ()):
            self.stats.messages[m["app"]] = self.stats.messages.get(m["app"], 0) + 1
            if m["app"] == "poll":
                self.b.polls.append((unit["unit"], m["payload"]["choices"]))
            if m["app"] == "asset":
                p = m["payload"]
                variant = 1 if p.get("fixed_denominations") else (2 if p.get("spender_attested") else 0)
                asset = {"unit": unit["unit"], "node": node.idx, "variant": variant,
                         "definer": unit["authors"][0]["address"], "issued": False, "seq": len(self.b.assets)}
                self.b.assets.append(asset)
                if node.is_stable:
                    self._asset_became_stable(asset)
                else:
                    self.asset_of_node[node.idx] = asset
        self.stats.kinds[built.kind] = self.stats.kinds.get(built.kind, 0) + 1
        if self.on_unit is not None:
            self.on_unit(unit)
        return node

    def _genesis(self) -> None:
        b = self.b
        authors = [b.witnesses[0], b.witnesses[1]]
        revealed: dict[str, list[Any]] = {}
        unit = b.header(b.v1, authors, revealed)
        unit["witnesses"] = list(b.witness_list)
        recipients = [a.address for a in [*b.witnesses, *b.users, b.shared] for _ in range(2)]
        each = TOTAL_WHITEBYTES // (len(recipients) + 1)
        outputs = sorted(({"address": r, "amount": each} for r in recipients), key=lambda o: (o["address"], o["amount"]))
        hc, pc = b.fees()
        outputs.append({"address": authors[0].address, "amount": TOTAL_WHITEBYTES - each * len(recipients) - hc - pc})
        outputs.sort(key=lambda o: (o["address"], o["amount"]))
        payload = {"inputs": [{"type": "issue", "serial_number": 1, "amount": TOTAL_WHITEBYTES,
                               "address": authors[0].address}], "outputs": outputs}
        unit["messages"].append(b.simple_message("payment", payload, False))
        unit["headers_commission"], unit["payload_commission"] = hc, pc
        meta = PaymentMeta(0, None, 1, [authors[0].address])
        new_outputs = [Utxo("", 0, j, o["amount"], o["address"]) for j, o in enumerate(outputs)]
        node = self._finish_unit(0, Built(unit, [meta], revealed, new_outputs, "genesis"), None)
        self.genesis = node.unit

    def run(self) -> Stats:
        """Generate every unit, write the stable and unstable rows, void old final-bad units."""
        self._genesis()
        n = self.n_units
        rng = self.rng
        special_every = 8
        for i in range(1, n):
            kind = "witness"
            if i > 20 and i % special_every == 0 and i < n - 3:
                kind = SPECIALS[self.special_i % len(SPECIALS)]
                if self.light and kind == "final_bad":
                    kind = "data"
            else:
                r = rng.random()
                kind = "witness" if r < 0.5 else ("user" if r < 0.85 else ("multi" if r < 0.95 else "data_feed"))
            built, _ = self._compose(i, kind)
            if built is None and kind != "witness":
                built, _ = self._compose(i, "witness")
            elif built is not None and kind in SPECIALS and i % special_every == 0:
                self.special_i += 1
            if built is None:
                built, _ = self._compose(i, "user")
            if built is None:
                raise RuntimeError(f"no author with stable funds at unit {i}")
            parents = self._choose_parents(force_sibling=i == n - 1)  # the last two are siblings: one tip has no mci
            self.last_parents = [] if parents is self.last_parents else parents
            self.prev_parents = parents
            self._finish_unit(i, built, parents)
        self._finalize()
        return self.stats

    def _finalize(self) -> None:
        dag, w = self.dag, self.w
        for n in dag.finish():
            self.stats.unstable += 1
            if n.mci is None:
                self.stats.null_mci += 1
            self._emit_unit_row(n)
        self.stats.units = len(dag.nodes)
        w.executemany("UPDATE units SET is_free=0 WHERE unit=?",
                      [(dag.nodes[i].unit,) for i in self.flushed_free if not dag.nodes[i].is_free])
        w.executemany("UPDATE outputs SET is_spent=1 WHERE unit=? AND message_index=? AND output_index=?", self.spent)
        w.restore_indexes()  # before voiding: its DELETEs look rows up by unit in every table
        if not self.light:
            self._void()
        w.flush()

    def _void(self) -> None:
        """Strip final-bad units below min_retrievable_mci the way archiving.js 'voided' does."""
        dag = self.dag
        units = [dag.nodes[i] for i in self.final_bad_nodes]
        voided = [n for n in units if n.is_stable and n.mci is not None and n.mci < dag.min_retrievable_mci]
        if not voided:
            return
        w = self.w
        keys = [(n.unit,) for n in voided]
        w.flush()
        for sql in VOID_STATEMENTS:
            if self._has(void_table(sql)):
                w.executemany(sql, keys)
        for n in voided:
            p_unit = self.final_bad_units.get(n.idx)
            w.add("archived_joints", (n.unit, "voided", js_stringify({"unit": p_unit}) if p_unit else "{}",
                                      sql_date(BASE_TIMESTAMP + (n.mci or 0) * SECONDS_PER_UNIT)))
        self.stats.voided = len(voided)

    def _has(self, table: str) -> bool:
        return bool(list(self.w.conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,))))
