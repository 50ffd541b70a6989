"""The v31 engine on generated old nodes: every message type, versions 28, 29 and stuck-at-30."""

from __future__ import annotations

import re
import struct
from typing import Any

import apsw
import pytest

from bluegreen.engine.kvwriter import iter_kv
from bluegreen.engine.migrate import MigrationOptions, migrate_copy
from bluegreen.formats.hashing import get_unit_hash
from bluegreen.formats.jsvalues import js_parse
from bluegreen.formats.networks import network_for_version, with_genesis
from bluegreen.generator import generate_node_dir

UNITS = 1200
MESSAGE_TYPES = {
    "payment", "data_feed", "data", "text", "profile", "attestation", "poll", "vote", "asset",
    "asset_attestors", "definition_template", "address_definition_change",
}


# --- an independent recomputation of migrate_to_kv's data-feed keys, from the generator's own units ---

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d+)?)([eE][+-]?(\d+))?$")


def _numeric(value: str) -> float | None:
    m = _NUMBER.match(value)
    if not m:
        return None
    f = float(value)
    if f in (float("inf"), float("-inf")):
        return None
    if f == 0 and float(m.group(1)) > 0 and m.group(4) and int(m.group(4)) > 0:
        return None
    if len(m.group(1)) > 15:
        return None
    return 0.0 if f == 0 else f


def _lexi(f: float) -> str:
    raw = bytearray(struct.pack(">d", 0.0 if f == 0 else f))
    if f >= 0:
        raw[0] ^= 0x80
    else:
        raw = bytearray(b ^ 0xFF for b in raw)
    return raw.hex()


def _mci(mci: int | None) -> str:
    return format(0xFFFFFFFF - (mci or 0), "08x")


def _js_int_text(v: int) -> str:
    return str(v) if abs(v) < 2**53 else repr(float(v))


def expected_feed_keys(units: list[dict[str, Any]], voided: set[str], mcis: dict[str, int | None]) -> dict[bytes, bytes]:
    """Keys from the generator's in-memory units (values, authors); only the final mci comes from SQL."""
    out: dict[str, str] = {}
    for u in units:
        if u["unit"] in voided:
            continue
        for msg in u.get("messages", []):
            if msg["app"] != "data_feed":
                continue
            for author in sorted(a["address"] for a in u["authors"]):
                for name in sorted(msg["payload"]):
                    value, m = msg["payload"][name], _mci(mcis[u["unit"]])
                    prefix = f"df\n{author}\n{name}\n"
                    if isinstance(value, str):
                        out[f"{prefix}s\n{value}\n{m}"] = u["unit"]
                        num = _numeric(value)
                        text = value
                    else:
                        num, text = float(value), _js_int_text(value)
                    if num is not None:
                        out[f"{prefix}n\n{_lexi(num)}\n{m}"] = u["unit"]
                    out[f"dfv\n{author}\n{name}\n{m}"] = f"{text}\n{u['unit']}"
    return {k.encode(): v.encode() for k, v in out.items()}


@pytest.fixture(scope="module", params=["v28", "v29", "stuck-at-30"])
def migrated(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    node = tmp_path_factory.mktemp(request.param) / "node"
    units: list[dict[str, Any]] = []
    kw = {"v28": dict(version=28), "v29": dict(version=29), "stuck-at-30": dict(version=29, stuck_at_30=True)}
    gen = generate_node_dir(node, units=UNITS, seed=11, on_unit=lambda u: units.append(u), **kw[request.param])
    report = migrate_copy(node / "byteball.sqlite", node / "rocksdb", node.parent / "journal.json", MigrationOptions())
    return {"node": node, "gen": gen, "units": units, "report": report, "kv": dict(iter_kv(node / "rocksdb"))}


def test_every_message_type_is_present(migrated: dict[str, Any]) -> None:
    present = {app for app, n in migrated["gen"].messages.items() if n > 0}
    assert MESSAGE_TYPES <= present, MESSAGE_TYPES - present
    assert migrated["gen"].voided > 0 and migrated["gen"].null_mci > 0


def test_migration_completes_with_zero_failures(migrated: dict[str, Any]) -> None:
    report = migrated["report"]
    assert report.completed and report.failures_total == 0
    assert report.units_written == report.units_total == migrated["gen"].unit_list_size
    conn = apsw.Connection(str(migrated["node"] / "byteball.sqlite"))
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 31
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_every_unit_has_one_joint_that_hashes_to_it(migrated: dict[str, Any]) -> None:
    kv = migrated["kv"]
    joints = {k[2:].decode(): v for k, v in kv.items() if k.startswith(b"j\n")}
    assert set(joints) == {u["unit"] for u in migrated["units"]}
    genesis = migrated["gen"].genesis_unit
    for unit, text in joints.items():
        joint = js_parse(text)
        network = with_genesis(network_for_version(joint["unit"]["version"]), genesis)
        assert get_unit_hash(joint["unit"], network) == unit
        assert "main_chain_index" not in joint["unit"]


def test_polls_survive_although_current_ocore_fails_on_them(migrated: dict[str, Any]) -> None:
    polls = [u for u in migrated["units"] if any(m["app"] == "poll" for m in u.get("messages", []))]
    assert polls
    for u in polls:
        joint = js_parse(migrated["kv"][b"j\n" + u["unit"].encode()])
        if "messages" not in joint["unit"]:
            continue  # voided
        [poll] = [m for m in joint["unit"]["messages"] if m["app"] == "poll"]
        [original] = [m for m in u["messages"] if m["app"] == "poll"]
        assert poll["payload"] == original["payload"]


def test_data_feed_keys_equal_an_independent_recomputation(migrated: dict[str, Any]) -> None:
    kv = migrated["kv"]
    voided = {k[2:].decode() for k, v in kv.items() if k.startswith(b"j\n") and b'"content_hash"' in v}
    conn = apsw.Connection(str(migrated["node"] / "byteball.sqlite"))
    mcis = dict(conn.execute("SELECT unit, main_chain_index FROM units"))
    want = expected_feed_keys(migrated["units"], voided, mcis)
    got = {k: v for k, v in kv.items() if k.startswith((b"df\n", b"dfv\n"))}
    assert want and got == want


def test_a_half_filled_kv_of_a_stuck_node_is_replaced_not_merged(migrated: dict[str, Any]) -> None:
    gen, report = migrated["gen"], migrated["report"]
    if gen.stuck_at_30:
        assert gen.user_version == 30 and gen.kv_joints > 0
        assert report.stale_kv_keys_dropped == gen.kv_joints
    else:
        assert report.stale_kv_keys_dropped == 0 and gen.kv_joints == 0
