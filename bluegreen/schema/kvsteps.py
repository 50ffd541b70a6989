"""The KV parts of ocore's steps 34 and 39 (sqlite_migrations.js `initStorageSizes`, `addTypesToStateVars`).

Both read the `st` range ocore reads (`st\\n` .. `st\\n\\uFFFF`, UTF-8 bytes, inclusive) through a `StateVarStore`
(the engine's KV dir). Lengths are JavaScript string lengths (UTF-16 code units) of the UTF-8-decoded
key and value, as level-rocksdb hands them to ocore."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import apsw
from pydantic import BaseModel

from bluegreen.formats.feeds import get_numeric_feed_value
from bluegreen.ocore_facts import STATE_VAR_PREFIX

ST_LOW = STATE_VAR_PREFIX
ST_HIGH = "st\n\uffff".encode("utf-8")


class StateVarStore(Protocol):
    """What the KV steps need from a KV dir."""

    def scan(self, low: bytes, high: bytes) -> Iterator[tuple[bytes, bytes]]: ...

    def write_chunk(self, items: Iterable[tuple[bytes, bytes]]) -> int: ...


class KvOperationResult(BaseModel):
    """What a KV operation did."""

    state_vars: int = 0
    rows_changed: int = 0
    kv_puts: int = 0
    typed_numeric: int = 0
    typed_string: int = 0
    skipped_already_typed: bool = False


def js_length(text: str) -> int:
    """JavaScript `String.prototype.length` (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")  # level's utf8 decoding replaces invalid bytes too


def storage_sizes(store: StateVarStore) -> dict[str, int]:
    """Step 34: per AA address, the sum of JS lengths of var name + value over its `st` keys."""
    sizes: dict[str, int] = {}
    for key, value in store.scan(ST_LOW, ST_HIGH):
        k = _decode(key)
        # ocore: address = key.substr(3, 32), var_name = key.substr(36), in UTF-16 units
        units = k.encode("utf-16-le")
        address = units[6:70].decode("utf-16-le", errors="replace")
        var_name = units[72:].decode("utf-16-le", errors="replace")
        sizes[address] = sizes.get(address, 0) + js_length(var_name) + js_length(_decode(value))
    return sizes


def init_storage_sizes(conn: apsw.Connection, store: StateVarStore | None) -> KvOperationResult:
    """Step 34: UPDATE aa_addresses.storage_size for every AA that has state variables."""
    result = KvOperationResult()
    if store is None:
        return result
    for address, size in storage_sizes(store).items():
        result.state_vars += 1
        conn.execute("UPDATE aa_addresses SET storage_size=? WHERE address=?", (size, address))
        result.rows_changed += conn.changes()
    return result


def type_state_vars(conn: apsw.Connection, store: StateVarStore | None, chunk: int = 20000) -> KvOperationResult:
    """Step 39: prefix every `st` value with `n\\n` or `s\\n` (getNumericFeedValue), unless every value
    already holds a newline (ocore then takes the store as already upgraded and writes nothing)."""
    result = KvOperationResult()
    if store is None:
        return result
    old_format = False
    for _key, value in store.scan(ST_LOW, ST_HIGH):
        result.state_vars += 1
        if b"\n" not in value:
            old_format = True
            break
    if not old_format:
        result.skipped_already_typed = result.state_vars > 0
        return result
    result.state_vars = 0
    puts: list[tuple[bytes, bytes]] = []
    for key, value in list(store.scan(ST_LOW, ST_HIGH)):
        text = _decode(value)
        kind = "n" if get_numeric_feed_value(text) is not None else "s"
        if kind == "n":
            result.typed_numeric += 1
        else:
            result.typed_string += 1
        result.state_vars += 1
        puts.append((key, (kind + "\n" + text).encode("utf-8")))
    for i in range(0, len(puts), chunk):
        result.kv_puts += store.write_chunk(puts[i:i + chunk])
    return result


KV_OPERATIONS = {"init_storage_sizes": init_storage_sizes, "type_state_vars": type_state_vars}
