"""Joint reconstruction: ocore's `storage.readJointDirectly` plus the two deletions of `migrate_to_kv.js`.

Dict insertion order here is the order in which ocore builds the object, because JSON.stringify
writes keys in that order (after integer-like keys, which `js_stringify` puts first as JS does).
Every rule is documented in docs/ocore-v31-semantics.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bluegreen.engine.sqlsource import UnitChunk
from bluegreen.formats.hashing import get_base64_hash, get_unit_hash
from bluegreen.formats.jsvalues import js_parse
from bluegreen.formats.networks import Network

_ASSET_FLAGS = (
    "is_private", "is_transferrable", "auto_destroy", "fixed_denominations",
    "issued_by_definer_only", "cosigned_by_definer", "spender_attested",
)
_ASSET_COLUMNS = (
    "cap", "is_private", "is_transferrable", "auto_destroy", "fixed_denominations",
    "issued_by_definer_only", "cosigned_by_definer", "spender_attested", "issue_condition", "transfer_condition",
)
_JSON_PAYLOAD_APPS = {"profile", "attestation", "data", "definition_template"}
_INPUT_KEYS = (
    "type", "unit", "message_index", "output_index", "from_main_chain_index", "to_main_chain_index",
    "serial_number", "amount", "address",
)


class JointError(Exception):
    """A unit that cannot be rebuilt as ocore would (ocore throws on it). `reason` is a short code."""

    def __init__(self, unit: str, reason: str, detail: str) -> None:
        super().__init__(f"{unit}: {reason}: {detail}")
        self.unit = unit
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ReadContext:
    """What stays fixed during one migration run."""

    network: Network
    min_retrievable_mci: int
    light: bool = False

    def is_genesis(self, unit: str) -> bool:
        return unit == self.network.genesis_unit


def _clean_nulls(obj: dict[str, Any]) -> None:
    for key in [k for k, v in obj.items() if v is None]:
        del obj[key]


def _js_lt(a: int | None, b: int) -> bool:
    """JavaScript `a < b` where a may be null (null compares as 0)."""
    return (0 if a is None else a) < b


def is_voided(content_hash: str | None, mci: int | None, min_retrievable_mci: int, has_messages: bool) -> bool:
    """Whether a unit's stored data is its voided form (content_hash kept, messages and authentifiers gone).

    ocore's reader says voided when `content_hash && mci < min_retrievable_mci`. Older ocore voided the data
    with `mci <= min_retrievable_mci`, so a final-bad unit exactly at min_retrievable_mci can be voided in the
    data while the reader takes it for whole: ocore then drops its content_hash, the rebuilt joint no longer
    hashes to its id, and ocore's migration crashes on it. We take such a unit (at min_retrievable_mci, its
    messages gone; every unit carries at least one message) for voided, so its joint hashes to its id."""
    if not content_hash:
        return False
    if _js_lt(mci, min_retrievable_mci):
        return True
    return mci == min_retrievable_mci and not has_messages


def _parse_json_column(unit: str, what: str, text: Any) -> Any:
    try:
        return js_parse(text)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a data error of this unit
        raise JointError(unit, "bad_json", f"{what} is not valid JSON: {exc}") from exc


def build_joint(row: tuple[Any, ...], chunk: UnitChunk, ctx: ReadContext) -> dict[str, Any]:
    """Rebuild the joint of one `units` row (as read by UnitChunkReader), exactly as ocore would read it,
    before the migration's deletions. Raises JointError where ocore would throw."""
    unit_obj: dict[str, Any] = dict(zip(
        ("unit", "version", "alt", "witness_list_unit", "last_ball_unit", "last_ball", "is_stable",
         "content_hash", "headers_commission", "payload_commission", "main_chain_index", "timestamp",
         "received_timestamp"),
        row[1:],
    ))
    unit: str = unit_obj["unit"]
    joint: dict[str, Any] = {"unit": unit_obj}
    mci = unit_obj["main_chain_index"]
    raw_ts = unit_obj["received_timestamp"] if unit_obj["version"] == ctx.network.version_without_timestamp \
        else unit_obj["timestamp"]
    try:
        unit_obj["timestamp"] = int(raw_ts)  # parseInt
    except (TypeError, ValueError) as exc:
        raise JointError(unit, "bad_timestamp", f"timestamp {raw_ts!r} is not an integer") from exc
    del unit_obj["received_timestamp"]
    del unit_obj["is_stable"]
    _clean_nulls(unit_obj)
    voided = is_voided(unit_obj.get("content_hash"), mci, ctx.min_retrievable_mci, bool(chunk.rows("messages", unit)))
    retrievable = mci is None or mci >= ctx.min_retrievable_mci
    genesis = ctx.is_genesis(unit)
    if not ctx.light and not unit_obj.get("last_ball") and not genesis:
        raise JointError(unit, "no_last_ball", f"last_ball_unit {unit_obj.get('last_ball_unit')!r} has no ball")
    if voided:
        unit_obj.pop("headers_commission", None)
        unit_obj.pop("payload_commission", None)
    else:
        unit_obj.pop("content_hash", None)

    parents = chunk.rows("parents", unit)
    if parents:
        unit_obj["parent_units"] = [p[0] for p in parents]
    if not retrievable or genesis:
        balls = chunk.rows("balls", unit)
        if balls:
            joint["ball"] = balls[0][0]
    if not retrievable:
        skiplist = chunk.rows("skiplist", unit)
        if skiplist:
            joint["skiplist_units"] = [s[0] for s in skiplist]
    witnesses = chunk.rows("witnesses", unit)
    if witnesses:
        unit_obj["witnesses"] = [w[0] for w in witnesses]
    if not voided:
        recipients = chunk.rows("ehcr", unit)
        if recipients:
            unit_obj["earned_headers_commission_recipients"] = [
                {"address": a, "earned_headers_commission_share": s} for a, s in recipients
            ]
    unit_obj["authors"] = authors = []
    sigs_by_address: dict[str, list[tuple[Any, ...]]] = {}
    if not voided:
        for address, path, authentifier in chunk.rows("authentifiers", unit):
            sigs_by_address.setdefault(address, []).append((path, authentifier))
    for address, definition_chash in chunk.rows("authors", unit):
        author: dict[str, Any] = {"address": address}
        if not voided:
            author["authentifiers"] = {path: sig for path, sig in sigs_by_address.get(address, [])}
            if definition_chash:
                text = chunk.definitions.get(definition_chash)
                if text is None:
                    raise JointError(unit, "missing_definition", f"definition {definition_chash} of author {address} not found")
                author["definition"] = _parse_json_column(unit, f"definition {definition_chash}", text)
        authors.append(author)
    if not voided:
        message_rows = chunk.rows("messages", unit)
        if message_rows:
            unit_obj["messages"] = [
                _build_message(unit, m, chunk, single_author=len(authors) == 1, light=ctx.light)
                for m in message_rows
            ]
    return joint


def _build_message(unit: str, m: tuple[Any, ...], chunk: UnitChunk, *, single_author: bool, light: bool) -> dict[str, Any]:
    app, payload_hash, payload_location, payload, payload_uri, payload_uri_hash, message_index = m
    msg: dict[str, Any] = {
        "app": app, "payload_hash": payload_hash, "payload_location": payload_location, "payload": payload,
        "payload_uri": payload_uri, "payload_uri_hash": payload_uri_hash,
    }
    _clean_nulls(msg)

    def rows(table: str) -> list[tuple[Any, ...]]:
        return chunk.message_rows(table, unit, message_index)

    def fail(reason: str, detail: str) -> JointError:
        return JointError(unit, reason, f"message {message_index} ({app}): {detail}")

    if payload_location == "inline":
        if app == "address_definition_change":
            dch = rows("definition_changes")
            if not dch:
                raise fail("missing_payload_rows", "no address_definition_changes row")
            p: dict[str, Any] = {"definition_chash": dch[0][0], "address": dch[0][1]}
            if single_author:
                del p["address"]
            msg["payload"] = p
        elif app == "poll":
            polls = rows("polls")
            if len(polls) != 1:
                raise fail("missing_payload_rows", f"{len(polls)} polls rows (expected 1)")
            choices = chunk.rows("poll_choices", unit)
            if not choices:
                raise fail("missing_payload_rows", "no poll_choices rows")
            msg["payload"] = {"question": polls[0][0], "choices": [c[0] for c in choices]}
        elif app == "vote":
            votes = rows("votes")
            if len(votes) != 1:
                raise fail("missing_payload_rows", f"{len(votes)} votes rows (expected 1)")
            msg["payload"] = {"unit": votes[0][0], "choice": votes[0][1]}
        elif app == "asset":
            msg["payload"] = _asset_payload(unit, rows("assets"), rows("asset_attestors"), chunk, fail)
        elif app == "asset_attestors":
            att = rows("asset_attestors")
            if not att:
                raise fail("missing_payload_rows", "no asset_attestors rows")
            asset = att[0][1]
            if any(a[1] != asset for a in att):
                raise fail("inconsistent_rows", "different assets in attestor list")
            msg["payload"] = {"asset": asset, "attestors": [a[0] for a in att]}
        elif app == "data_feed":
            feeds = rows("data_feeds")
            if not feeds:
                raise fail("missing_payload_rows", "no data_feeds rows")
            msg["payload"] = {
                name: (value if isinstance(value, str) else _js_number(int_value))
                for name, value, int_value in feeds
            }
        elif app in _JSON_PAYLOAD_APPS:
            if payload is None:
                raise fail("missing_payload_rows", "payload column is NULL")
            msg["payload"] = _parse_json_column(unit, f"payload of message {message_index}", payload)
        elif app == "payment":
            msg["payload"] = _payment_payload(rows("inputs"), rows("outputs"), single_author=single_author,
                                              light=light, fail=fail)
    proofs = rows("spend_proofs")
    if proofs:
        msg["spend_proofs"] = [
            {"spend_proof": sp} if single_author else {"spend_proof": sp, "address": addr} for sp, addr in proofs
        ]
    return msg


def _js_number(value: Any) -> Any:
    """JS `Number(x)` of an SQLite value (int stays int; None -> 0 as Number(null))."""
    if value is None:
        return 0
    return value


def _asset_payload(unit: str, assets: list[tuple[Any, ...]], attestors: list[tuple[Any, ...]],
                   chunk: UnitChunk, fail: Any) -> dict[str, Any]:
    if len(assets) != 1:
        raise fail("missing_payload_rows", f"{len(assets)} assets rows (expected 1)")
    p: dict[str, Any] = dict(zip(_ASSET_COLUMNS, assets[0]))
    _clean_nulls(p)
    for flag in _ASSET_FLAGS:
        p[flag] = bool(p.get(flag))
    for cond in ("issue_condition", "transfer_condition"):
        if p.get(cond):
            p[cond] = _parse_json_column(unit, cond, p[cond])
    if p["spender_attested"]:
        if not attestors:
            raise fail("missing_payload_rows", "spender_attested but no asset_attestors rows")
        p["attestors"] = [a[0] for a in attestors]
    if p["fixed_denominations"]:
        denoms = chunk.rows("denominations", unit)
        if not denoms:
            raise fail("missing_payload_rows", "fixed_denominations but no asset_denominations rows")
        p["denominations"] = [
            {"denomination": d} if not c else {"denomination": d, "count_coins": c} for d, c in denoms
        ]
    return p


def _payment_payload(inputs: list[tuple[Any, ...]], outputs: list[tuple[Any, ...]], *, single_author: bool,
                     light: bool, fail: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"inputs": []}
    prev_asset: Any = _UNDEFINED
    prev_denomination: Any = _UNDEFINED
    for i, row in enumerate(inputs):
        type_, denomination, fixed_denominations = row[0], row[1], row[2]
        asset = row[11]
        if row[10] is None and not light:
            raise fail("inconsistent_rows", "input address is NULL")
        if i > 0:
            if asset != prev_asset:
                raise fail("inconsistent_rows", "different assets in inputs")
            if denomination != prev_denomination:
                raise fail("inconsistent_rows", "different denominations in inputs")
        if i == 0 and asset:
            payload["asset"] = asset
            if fixed_denominations:
                payload["denomination"] = denomination
        inp = {k: v for k, v in zip(_INPUT_KEYS, (type_, *row[3:11])) if v is not None}
        if type_ == "transfer" or single_author:
            inp.pop("address", None)
        if type_ == "transfer":
            del inp["type"]
        payload["inputs"].append(inp)
        if i == 0:
            prev_asset, prev_denomination = asset, denomination
    outs: list[dict[str, Any]] = []
    for address, amount, asset, denomination in outputs:
        # JS compares with `!==` against undefined when there were no inputs: always "different".
        if prev_asset is _UNDEFINED or asset != prev_asset:
            raise fail("inconsistent_rows", "different assets in outputs")
        if denomination != prev_denomination:
            raise fail("inconsistent_rows", "different denominations in outputs")
        outs.append({"address": address, "amount": amount})
    payload["outputs"] = outs
    # ocore assigns `outputs` after the inputs loop: key order inputs, asset?, denomination?, outputs.
    return payload


class _Undefined:
    def __repr__(self) -> str:  # pragma: no cover
        return "undefined"


_UNDEFINED = _Undefined()


def check_unit_hash(joint: dict[str, Any], ctx: ReadContext) -> str | None:
    """None when the unit hashes to its id; otherwise the computed hash (or the reason it cannot be computed)."""
    unit_obj = joint["unit"]
    try:
        computed = get_unit_hash(unit_obj, ctx.network)
    except Exception as exc:  # noqa: BLE001 - ocore's isCorrectHash treats any error as a mismatch
        return f"<cannot hash: {exc}>"
    return None if computed == unit_obj["unit"] else computed


def strip_for_kv(joint: dict[str, Any], ctx: ReadContext) -> dict[str, Any]:
    """migrate_to_kv's deletions (full nodes only): `main_chain_index`, and `timestamp` of version-1 units."""
    if not ctx.light:
        unit_obj = joint["unit"]
        if unit_obj.get("version") == ctx.network.version_without_timestamp:
            unit_obj.pop("timestamp", None)
        unit_obj.pop("main_chain_index", None)
    return joint


def check_payload_hashes(joint: dict[str, Any], ctx: ReadContext) -> list[str]:
    """Messages whose rebuilt inline payload does not hash to their `payload_hash`.

    ocore does not check this when it migrates (the unit hash covers `payload_hash`, not the payload),
    so a payload row changed on disk would be copied into the KV silently. The node's validation
    (`hasValidPayloadHashes`) computes it the same way."""
    unit_obj = joint["unit"]
    json_based = unit_obj.get("version") != ctx.network.version_without_timestamp
    bad: list[str] = []
    for index, msg in enumerate(unit_obj.get("messages", ())):
        if msg.get("payload_location") != "inline" or "payload" not in msg:
            continue
        payload = msg["payload"]
        if msg.get("app") == "temp_data" and isinstance(payload, dict):
            payload = {k: v for k, v in payload.items() if k != "data"}
        try:
            computed = get_base64_hash(payload, json_based)
        except Exception as exc:  # noqa: BLE001 - an unhashable payload is a mismatch
            computed = f"<cannot hash: {exc}>"
        if computed != msg.get("payload_hash"):
            bad.append(f"message {index} ({msg.get('app')}): payload_hash {msg.get('payload_hash')}, "
                       f"rebuilt payload hashes to {computed}")
    return bad
