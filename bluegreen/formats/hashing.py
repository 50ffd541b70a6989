"""ocore's unit, content and ball hashes (object_hash.js), as pure functions.

`network` decides which unit version is the first one (`versionWithoutTimestamp`): such units hash
their classic source string and leave `timestamp` out; later versions hash the JSON source string.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any

from bluegreen.formats.jsvalues import utf8_like_node
from bluegreen.formats.networks import Network
from bluegreen.formats.source_string import SourceStringError, get_json_source_string, get_source_string

__all__ = [
    "get_ball_hash",
    "get_base64_hash",
    "get_naked_unit",
    "get_stripped_unit",
    "get_unit_content_hash",
    "get_unit_hash",
    "js_truthy",
    "utf8_like_node",
]

# fields a unit's content hash does not cover (object_hash.js getNakedUnit)
_NOT_IN_NAKED = frozenset(
    ("unit", "headers_commission", "payload_commission", "oversize_fee", "actual_tps_fee", "main_chain_index")
)
_NOT_IN_NAKED_MESSAGE = frozenset(("payload", "payload_uri"))


def js_truthy(v: Any) -> bool:
    """JavaScript truthiness: arrays and objects are true even when empty."""
    if v is None or v is False:
        return False
    if type(v) is str:
        return v != ""
    if type(v) is int or type(v) is float:
        return v == v and v != 0
    return True


def get_base64_hash(obj: Any, json_based: bool = False) -> str:
    """Base64 SHA-256 of the classic (default) or JSON-based source string of `obj`."""
    source = get_json_source_string(obj) if json_based else get_source_string(obj)
    return base64.b64encode(hashlib.sha256(utf8_like_node(source)).digest()).decode("ascii")


def get_naked_unit(unit: dict[str, Any], network: Network) -> dict[str, Any]:
    """The unit without the fields its content hash leaves out, and messages without payloads.

    Returns a new top-level dict and new message dicts; deeper values are shared with `unit`
    (ocore deep-copies; we never mutate, so sharing is enough and much faster).
    """
    naked = {k: v for k, v in unit.items() if k not in _NOT_IN_NAKED}
    if unit.get("version") == network.version_without_timestamp:
        naked.pop("timestamp", None)
    messages = naked.get("messages")
    if js_truthy(messages):
        naked["messages"] = [
            {k: v for k, v in m.items() if k not in _NOT_IN_NAKED_MESSAGE} if type(m) is dict else m
            for m in messages
        ]
    return naked


def get_unit_content_hash(unit: dict[str, Any], network: Network) -> str:
    """`getUnitContentHash`: hash of the naked unit (JSON-based from the second unit version on)."""
    return get_base64_hash(get_naked_unit(unit, network), unit.get("version") != network.version_without_timestamp)


def get_stripped_unit(unit: dict[str, Any], network: Network) -> dict[str, Any]:
    """`getStrippedUnit`: what a unit's id hashes when the unit still has its content."""
    authors = unit.get("authors")
    if not isinstance(authors, list):
        raise SourceStringError(f"unit has no authors list: {unit.get('unit')!r}")
    stripped: dict[str, Any] = {
        "content_hash": get_unit_content_hash(unit, network),
        "version": unit.get("version"),
        "alt": unit.get("alt"),
        "authors": [{"address": a.get("address")} for a in authors],
    }
    if js_truthy(unit.get("witness_list_unit")):
        stripped["witness_list_unit"] = unit["witness_list_unit"]
    elif js_truthy(unit.get("witnesses")):
        stripped["witnesses"] = unit["witnesses"]
    if js_truthy(unit.get("parent_units")):
        stripped["parent_units"] = unit["parent_units"]
        # missing values stay as None: the source string refuses them, as ocore refuses undefined
        stripped["last_ball"] = unit.get("last_ball")
        stripped["last_ball_unit"] = unit.get("last_ball_unit")
    if unit.get("version") != network.version_without_timestamp:
        stripped["timestamp"] = unit.get("timestamp")
    return stripped


def get_unit_hash(unit: dict[str, Any], network: Network) -> str:
    """`getUnitHash`: the unit id. A unit carrying `content_hash` (voided) hashes its naked form."""
    json_based = unit.get("version") != network.version_without_timestamp
    if js_truthy(unit.get("content_hash")):
        return get_base64_hash(get_naked_unit(unit, network), json_based)
    return get_base64_hash(get_stripped_unit(unit, network), json_based)


def get_ball_hash(
    unit: str,
    parent_balls: Sequence[str] | None = None,
    skiplist_balls: Sequence[str] | None = None,
    is_nonserial: bool = False,
) -> str:
    """`getBallHash`: classic hash of `{unit, parent_balls?, skiplist_balls?, is_nonserial?}`.

    Pass the balls already in ocore's order: parent balls sorted (`ORDER BY ball`), skiplist balls
    sorted (JS default sort); for base64 balls both are plain string order.
    """
    ball: dict[str, Any] = {"unit": unit}
    if parent_balls:
        ball["parent_balls"] = list(parent_balls)
    if skiplist_balls:
        ball["skiplist_balls"] = list(skiplist_balls)
    if is_nonserial:
        ball["is_nonserial"] = True
    return get_base64_hash(ball)
