"""Unit and joint construction: addresses and definitions, payloads of every message type, fees.

Everything comes from one `random.Random(seed)`; nothing here depends on set or hash order, so a seed
always gives the same units. Units are built the way a wallet composes them (authors sorted by address,
outputs sorted, payload_hash = getBase64Hash(payload, version != versionWithoutTimestamp))."""

from __future__ import annotations

import base64
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from bluegreen.formats.chash import definition_address as get_chash160
from bluegreen.formats.hashing import get_base64_hash
from bluegreen.formats.networks import Network

# network name -> (versionWithoutTimestamp, timestamped version, alt) as ocore's constants.js has them
NETWORK_VERSIONS: dict[str, tuple[str, str, str]] = {
    "mainnet": ("1.0", "2.0", "1"),
    "testnet": ("1.0t", "2.0t", "2"),
    "devnet": ("1.0dev", "2.0dev", "3"),
}
TOTAL_WHITEBYTES = 10**15
COUNT_WITNESSES = 12

# data feed string values that look like numbers to some parser but not to others (getNumericFeedValue)
TRICKY_FEED_STRINGS = [
    "1e3", "007", "1.50", "123456789012345678", "-0", "1e400", "0.1", "-1.5e-7", "+5", "1E+2", "12345678901234567890",
    "NaN", "Infinity", " 12", "0x10", "1.", ".5", "9007199254740993", "0e5", "0.0e1", "тест", "€ 5", "2019-06-20",
]
TRICKY_FEED_INTS = [0, 1, -1, 42, 1561049631284, -9007199254740991, 9007199254740991, 10**15]
TRICKY_TEXTS = [
    "hello", "ünïcödé ✓ — 中文 русский", "emoji 😀🚀👍🏽", 'quotes " and \' and `', "back\\slash",
    "control \n \t \r \b \f \x01 \x1f \x7f", "line\u2028sep\u2029para", "  padded  ", "<script>alert(1)</script>",
]


def b64(rng: random.Random, nbytes: int) -> str:
    """Random base64 text of `nbytes` bytes (33 -> a 44-char pubkey, 64 -> an 88-char signature)."""
    return base64.b64encode(rng.getrandbits(8 * nbytes).to_bytes(nbytes, "big")).decode("ascii")


@dataclass
class Address:
    """An address with the definition it currently answers to and its signing paths."""

    address: str
    definition: list[Any]
    paths: list[str]
    revealed: bool = False
    reveal_next: list[Any] | None = None  # a new definition to reveal in the next unit (after a change)
    locked_until_mci: int = -1  # waiting for its definition change to become stable
    is_witness: bool = False


def sig_definition(rng: random.Random) -> list[Any]:
    """A single-signature definition with a fresh compressed-looking pubkey."""
    return ["sig", {"pubkey": "A" + b64(rng, 33)[1:]}]


def make_address(definition: list[Any], paths: list[str], is_witness: bool = False) -> Address:
    """An address from its definition (chash160)."""
    return Address(get_chash160(definition), definition, paths, is_witness=is_witness)


@dataclass(slots=True)
class Utxo:
    """A spendable output."""

    unit: str
    message_index: int
    output_index: int
    amount: int
    address: str
    asset: str | None = None
    denomination: int = 1


@dataclass
class PaymentMeta:
    """What the writer needs beyond the payload: input owners, uniqueness, denomination."""

    message_index: int
    asset: str | None
    denomination: int
    input_addresses: list[str]
    spent: list[Utxo] = field(default_factory=list)
    is_unique: int | None = 1


@dataclass
class Built:
    """A composed unit before its id is known, plus what only the writer needs."""

    unit: dict[str, Any]
    payments: list[PaymentMeta]
    revealed: dict[str, list[Any]]  # address -> definition revealed in this unit
    new_outputs: list[Utxo]
    kind: str
    final_bad: bool = False


def payload_hash(payload: Any, version2: bool) -> str:
    """validation.js: getBase64Hash(payload, version != versionWithoutTimestamp)."""
    return get_base64_hash(payload, version2)


def nested_data(rng: random.Random) -> dict[str, Any]:
    """A data payload with integer-like keys, floats JS prints in exponent form, unicode keys, nesting."""
    return {
        "10": 1, "9": 2, "a": 3,
        "float": 0.1, "big": 1e21, "small": 1.5e-7, "neg": -2.5, "int": 123456789012345,
        "nested": {"b": [1, "two", {"3": True, "x": False}], "ключ": "значение", "emoji😀": "ok"},
        "list": [0.5, 100, "s", [1, [2, [3]]]],
        "id": rng.randrange(10**9),
    }


class ContentBuilder:
    """Composes units: authors, payments balanced against fees, and one message of the requested kind."""

    def __init__(self, rng: random.Random, network: Network, n_users: int = 40) -> None:
        self.rng = rng
        self.network = network
        self.v1, self.v2, self.alt = NETWORK_VERSIONS[network.name]
        self.witnesses = sorted(
            (make_address(sig_definition(rng), ["r"], True) for _ in range(COUNT_WITNESSES)), key=lambda a: a.address
        )
        self.users = [make_address(sig_definition(rng), ["r"]) for _ in range(n_users)]
        # a 2-of-3 shared address whose third member is another address: has_references=1
        shared_def = ["r of set", {"required": 2, "set": [sig_definition(rng), sig_definition(rng),
                                                         ["address", self.users[0].address]]}]
        self.shared = make_address(shared_def, ["r.0", "r.1"])
        self.by_address: dict[str, Address] = {a.address: a for a in [*self.witnesses, *self.users, self.shared]}
        self.pool: dict[tuple[str, str | None], deque[Utxo]] = {}
        # asset -> users holding a stable unspent output of it: "can anyone pay this asset" without a scan
        self.asset_holders: dict[str, set[str]] = {}
        self.user_addresses = frozenset(a.address for a in self.users)
        self.witness_list = [w.address for w in self.witnesses]
        self.oracle = self.users[1]
        self.attestor = self.users[2]
        self.assets: list[dict[str, Any]] = []  # {"unit", "fixed", "denominations", "definer", "attested", "issued"}
        self.polls: list[tuple[str, list[str]]] = []
        self.hc_claimed: dict[str, int] = {}  # address -> last mci claimed by witnessing/hc inputs
        self.feed_counter = 0
        self.multi_attestors = True  # False for schemas whose asset_attestors allow one row per message

    # ----- pools
    def add_utxo(self, u: Utxo) -> None:
        """Make an output spendable (called when its unit becomes stable)."""
        key = (u.address, u.asset)
        q = self.pool.get(key)
        if q is None:
            q = self.pool[key] = deque()
        q.append(u)
        if u.asset is not None and u.address in self.user_addresses:
            self.asset_holders.setdefault(u.asset, set()).add(u.address)

    def has_funds(self, address: str, asset: str | None = None) -> bool:
        """Whether `address` has a stable unspent output of `asset`."""
        q = self.pool.get((address, asset))
        return bool(q)

    def take(self, address: str, asset: str | None = None) -> Utxo:
        """Spend the oldest stable output of `address`."""
        q = self.pool[(address, asset)]
        u = q.popleft()
        if not q and asset is not None:
            self.asset_holders.get(asset, set()).discard(address)
        return u

    # ----- common parts
    def _authors(self, addrs: list[Address], revealed: dict[str, list[Any]]) -> list[dict[str, Any]]:
        out = []
        for a in sorted(addrs, key=lambda x: x.address):
            author: dict[str, Any] = {"address": a.address, "authentifiers": {p: b64(self.rng, 64) for p in a.paths}}
            if not a.revealed or a.reveal_next is not None:
                d = a.reveal_next if a.reveal_next is not None else a.definition
                author["definition"] = d
                revealed[a.address] = d
            out.append(author)
        return out

    def header(self, version: str, addrs: list[Address], revealed: dict[str, list[Any]]) -> dict[str, Any]:
        """Unit fields in the order a composer builds them (the order matters only for JSON bytes)."""
        return {"version": version, "alt": self.alt, "messages": [], "authors": self._authors(addrs, revealed)}

    def fees(self) -> tuple[int, int]:
        """Plausible headers and payload commissions (ocore derives them from sizes; nothing re-checks them)."""
        return 300 + self.rng.randrange(150), 150 + self.rng.randrange(900)

    def base_payment(self, unit: dict[str, Any], payers: list[Address], fee: int, version2: bool,
                     recipients: list[str], extra_inputs: list[dict[str, Any]] | None = None,
                     extra_owners: list[str] | None = None, extra_amount: int = 0) -> tuple[dict[str, Any], PaymentMeta, list[Utxo]]:
        """A bytes payment: one stable output per payer, sends to `recipients`, change back to payer 0."""
        inputs: list[dict[str, Any]] = list(extra_inputs or [])
        owners: list[str] = list(extra_owners or [])
        spent: list[Utxo] = []
        total = extra_amount
        for p in payers:
            u = self.take(p.address)
            spent.append(u)
            inputs.append({"unit": u.unit, "message_index": u.message_index, "output_index": u.output_index})
            owners.append(p.address)
            total += u.amount
        avail = total - fee
        outputs: list[dict[str, Any]] = []
        for r in recipients:
            amt = min(avail // 4, 1000 + self.rng.randrange(10**6))
            if amt <= 0:
                break
            outputs.append({"address": r, "amount": amt})
            avail -= amt
        outputs.append({"address": payers[0].address if payers else owners[0], "amount": avail})
        outputs.sort(key=lambda o: (o["address"], o["amount"]))
        payload = {"inputs": inputs, "outputs": outputs}
        msg = {"app": "payment", "payload_location": "inline", "payload_hash": payload_hash(payload, version2),
               "payload": payload}
        meta = PaymentMeta(len(unit["messages"]), None, 1, owners, spent)
        unit["messages"].append(msg)
        return msg, meta, []

    # ----- payloads of the other message types
    def simple_message(self, app: str, payload: Any, version2: bool) -> dict[str, Any]:
        """An inline message with its payload hash."""
        return {"app": app, "payload_location": "inline", "payload_hash": payload_hash(payload, version2), "payload": payload}

    def data_feed_payload(self) -> dict[str, Any]:
        """A data feed mixing plain, tricky-numeric strings and integers (ints go to int_value)."""
        rng = self.rng
        self.feed_counter += 1
        d: dict[str, Any] = {
            "BTC_USD": str(5000 + rng.randrange(5000)) + "." + str(rng.randrange(100)),
            "tricky": TRICKY_FEED_STRINGS[self.feed_counter % len(TRICKY_FEED_STRINGS)],
            "counter": self.feed_counter,
            "int_edge": TRICKY_FEED_INTS[self.feed_counter % len(TRICKY_FEED_INTS)],
            "text feed": TRICKY_TEXTS[self.feed_counter % len(TRICKY_TEXTS)].replace("\x00", "")[:64],
        }
        if self.feed_counter % 3 == 0:
            d["10"] = "ten"
            d["9"] = 9
        return d

    def text_payload(self) -> str:
        """A text message payload."""
        return TRICKY_TEXTS[self.rng.randrange(len(TRICKY_TEXTS))] + " #" + str(self.rng.randrange(10**6))

    def profile_payload(self) -> dict[str, Any]:
        """A profile message payload."""
        return {"name": "Пользователь " + str(self.rng.randrange(1000)), "about": "😀 \"quoted\"", "age": 30}

    def attestation_payload(self, address: str) -> dict[str, Any]:
        """An attestation: string fields go to attested_fields; long or non-string ones do not."""
        return {"address": address, "profile": {
            "email": f"user{self.rng.randrange(10**6)}@example.com", "user_id": b64(self.rng, 33),
            "reputation": 5, "verified": True, "bio": "x" * 120, "x" * 51: "too long field",
        }}

    def poll_payload(self) -> dict[str, Any]:
        """A poll with three choices."""
        return {"question": "Which? " + str(self.rng.randrange(10**6)), "choices": ["yes", "no", "абстейн 🤷"]}

    def definition_template_payload(self) -> list[Any]:
        """A definition template with a parameter."""
        return ["and", [["sig", {"pubkey": "$pubkey@" + "A" * 31}], ["in data feed", [[self.oracle.address], "BTC_USD", ">", 5000]]]]

    def asset_payload(self, variant: int) -> dict[str, Any]:
        """Asset definitions: capped divisible, fixed denominations, and spender-attested with conditions."""
        if variant == 0:
            return {"cap": 10**12, "is_private": False, "is_transferrable": True, "auto_destroy": False,
                    "fixed_denominations": False, "issued_by_definer_only": True, "cosigned_by_definer": False,
                    "spender_attested": False}
        if variant == 1:
            return {"is_private": False, "is_transferrable": True, "auto_destroy": False,
                    "fixed_denominations": True, "issued_by_definer_only": True, "cosigned_by_definer": False,
                    "spender_attested": False,
                    "denominations": [{"denomination": 1, "count_coins": 10**6}, {"denomination": 10, "count_coins": 10**5},
                                      {"denomination": 100}]}
        return {"cap": 5 * 10**9, "is_private": False, "is_transferrable": False, "auto_destroy": True,
                "fixed_denominations": False, "issued_by_definer_only": False, "cosigned_by_definer": True,
                "spender_attested": True, "attestors": self.attestor_list([self.attestor.address, self.users[3].address]),
                "issue_condition": ["in data feed", [[self.oracle.address], "BTC_USD", ">", 1000]],
                "transfer_condition": ["has", {"what": "output", "asset": "base"}]}

    def attestor_list(self, addresses: list[str]) -> list[str]:
        """Sorted attestors; only the first one where the schema keeps one attestor per message."""
        out = sorted(addresses)
        return out if self.multi_attestors else out[:1]
