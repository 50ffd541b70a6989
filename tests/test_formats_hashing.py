"""Unit, content and ball hashes against real ocore data.

The devnet v31 fixture holds 14 joints written by a running ocore node (`j\\n<unit>` keys) and a
`balls` table ocore filled; every hash here must reproduce ocore's bytes.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import apsw
import pytest
from conftest import DEVNET_V31, writable_copy
from rocksdict import AccessType, Options, Rdict

from bluegreen.formats.hashing import (
    get_ball_hash,
    get_base64_hash,
    get_naked_unit,
    get_stripped_unit,
    get_unit_content_hash,
    get_unit_hash,
    utf8_like_node,
)
from bluegreen.formats.jsvalues import js_parse, js_stringify
from bluegreen.formats.networks import DEVNET, MAINNET
from bluegreen.formats.source_string import SourceStringError

NUL = "\x00"


@pytest.fixture(scope="module")
def v31_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return writable_copy(DEVNET_V31, tmp_path_factory.mktemp("formats") / "devnet-v31")


@pytest.fixture(scope="module")
def stored_joints(v31_dir: Path) -> dict[str, bytes]:
    """unit id -> the joint bytes the node stored under `j\\n<unit>`."""
    db = Rdict(str(v31_dir / "rocksdb"), Options(raw_mode=True), access_type=AccessType.read_only())
    try:
        joints = {k[2:].decode(): bytes(v) for k, v in db.items() if k.startswith(b"j\n")}
    finally:
        db.close()
    assert len(joints) == 14
    return joints


def _b64sha(s: str) -> str:
    return base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()


def test_mainnet_genesis_ball() -> None:
    # byteballcore's public unit test asserts this pair
    assert get_ball_hash("oj8yEksX9Ubq7lLc+p6F2uyHUuynugeVq4+ikT67X6E=") == "CxK1luSnAk5+MaGyaE9wl26JdwAkSPFDqWJdYs9gRng="


def test_stored_joints_parse_and_stringify_to_the_same_bytes(stored_joints: dict[str, bytes]) -> None:
    for unit, raw in stored_joints.items():
        assert js_stringify(js_parse(raw)).encode("utf-8") == raw, unit


def test_stored_joints_hash_to_their_keys(stored_joints: dict[str, bytes]) -> None:
    for unit, raw in stored_joints.items():
        joint = js_parse(raw)
        assert "main_chain_index" not in joint["unit"]  # the node strips it before storing
        assert get_unit_hash(joint["unit"], DEVNET) == unit


def test_any_change_breaks_the_hash(stored_joints: dict[str, bytes]) -> None:
    unit, raw = next(iter(stored_joints.items()))
    joint = js_parse(raw)
    joint["unit"]["timestamp"] += 1
    assert get_unit_hash(joint["unit"], DEVNET) != unit
    joint = js_parse(raw)
    joint["unit"]["messages"][0]["payload_hash"] = "x" + joint["unit"]["messages"][0]["payload_hash"][1:]
    assert get_unit_hash(joint["unit"], DEVNET) != unit


def _voided(unit: dict[str, Any]) -> dict[str, Any]:
    """The stripped form ocore keeps for a voided unit (storage.js readJointDirectly, voided)."""
    v = {k: x for k, x in unit.items() if k not in ("messages", "headers_commission", "payload_commission")}
    v["authors"] = [{"address": a["address"]} for a in unit["authors"]]
    v.pop("earned_headers_commission_recipients", None)
    v["content_hash"] = get_unit_content_hash(unit, DEVNET)
    return v


def test_voided_units_still_hash_to_their_id(stored_joints: dict[str, bytes]) -> None:
    for unit, raw in stored_joints.items():
        voided = _voided(js_parse(raw)["unit"])
        assert get_unit_hash(voided, DEVNET) == unit


def test_naked_unit_leaves_out_what_the_content_hash_does_not_cover(stored_joints: dict[str, bytes]) -> None:
    unit = js_parse(next(iter(stored_joints.values())))["unit"]
    unit.update(unit="U", headers_commission=1, payload_commission=2, main_chain_index=3)
    naked = get_naked_unit(unit, DEVNET)
    assert not {"unit", "headers_commission", "payload_commission", "main_chain_index"} & set(naked)
    assert "timestamp" in naked  # a version-2 unit keeps it
    assert all("payload" not in m for m in naked["messages"])
    assert all("payload" in m for m in unit["messages"])  # the input is not mutated


def test_ball_hashes_of_the_fixture(v31_dir: Path) -> None:
    conn = apsw.Connection(str(v31_dir / "byteball.sqlite"), flags=apsw.SQLITE_OPEN_READONLY)
    rows = conn.execute(
        "SELECT balls.unit, ball, sequence FROM balls JOIN units USING(unit) ORDER BY main_chain_index"
    ).fetchall()
    assert len(rows) == 13
    checked_skiplist = 0
    for unit, ball, sequence in rows:
        # ocore main_chain.js: parent balls ORDER BY ball; skiplist balls sorted
        parent_balls = [
            r[0]
            for r in conn.execute(
                "SELECT ball FROM parenthoods LEFT JOIN balls ON parent_unit=unit WHERE child_unit=? ORDER BY ball",
                (unit,),
            )
        ]
        skiplist_balls = sorted(
            r[0]
            for r in conn.execute(
                "SELECT ball FROM skiplist_units JOIN balls ON skiplist_unit=balls.unit WHERE skiplist_units.unit=?",
                (unit,),
            )
        )
        checked_skiplist += bool(skiplist_balls)
        assert get_ball_hash(unit, parent_balls, skiplist_balls, sequence == "final-bad") == ball, unit
    assert checked_skiplist == 1  # the fixture has one unit with a skiplist
    conn.close()


def test_ball_object_fields() -> None:
    assert get_ball_hash("U", [], [], False) == get_ball_hash("U") == _b64sha("unit\x00s\x00U")
    assert get_ball_hash("U", ["P2", "P1"], ["S"], True) == _b64sha(
        NUL.join(["is_nonserial", "b", "true", "parent_balls", "[", "s", "P2", "s", "P1", "]",
                  "skiplist_balls", "[", "s", "S", "]", "unit", "s", "U"])
    )


V1_UNIT = {
    "unit": "X",
    "version": "1.0",
    "alt": "1",
    "timestamp": 1500000000,
    "witness_list_unit": "W",
    "last_ball_unit": "LBU",
    "last_ball": "LB",
    "headers_commission": 100,
    "payload_commission": 50,
    "main_chain_index": 5,
    "parent_units": ["P"],
    "authors": [{"address": "A", "authentifiers": {"r": "sig"}}],
    "messages": [{"app": "text", "payload_location": "inline", "payload_hash": "h", "payload": "hello"}],
}


def test_first_version_units_hash_the_classic_string_without_timestamp() -> None:
    # hand-written from object_hash.js: naked unit, classic source string, no timestamp
    content = NUL.join(
        ["alt", "s", "1", "authors", "[", "address", "s", "A", "authentifiers", "r", "s", "sig", "]",
         "last_ball", "s", "LB", "last_ball_unit", "s", "LBU",
         "messages", "[", "app", "s", "text", "payload_hash", "s", "h", "payload_location", "s", "inline", "]",
         "parent_units", "[", "s", "P", "]", "version", "s", "1.0", "witness_list_unit", "s", "W"]
    )
    content_hash = _b64sha(content)
    assert get_unit_content_hash(V1_UNIT, MAINNET) == content_hash
    stripped = NUL.join(
        ["alt", "s", "1", "authors", "[", "address", "s", "A", "]", "content_hash", "s", content_hash,
         "last_ball", "s", "LB", "last_ball_unit", "s", "LBU", "parent_units", "[", "s", "P", "]",
         "version", "s", "1.0", "witness_list_unit", "s", "W"]
    )
    assert get_unit_hash(V1_UNIT, MAINNET) == _b64sha(stripped)
    assert "timestamp" not in get_stripped_unit(V1_UNIT, MAINNET)


def test_the_network_decides_which_version_is_the_first() -> None:
    # on devnet '1.0' is not the first version: JSON-based, timestamp included
    assert get_stripped_unit(V1_UNIT, DEVNET)["timestamp"] == 1500000000
    assert get_unit_hash(V1_UNIT, DEVNET) != get_unit_hash(V1_UNIT, MAINNET)


def test_genesis_like_unit_without_parents_has_no_last_ball_fields() -> None:
    genesis = {k: v for k, v in V1_UNIT.items() if k not in ("parent_units", "last_ball", "last_ball_unit")}
    stripped = get_stripped_unit(genesis, MAINNET)
    assert "last_ball" not in stripped and "parent_units" not in stripped


def test_missing_fields_are_refused_like_undefined_in_ocore() -> None:
    broken = {k: v for k, v in V1_UNIT.items() if k != "last_ball"}
    with pytest.raises(SourceStringError):
        get_unit_hash(broken, MAINNET)


def test_witnesses_when_no_witness_list_unit() -> None:
    u = {k: v for k, v in V1_UNIT.items() if k != "witness_list_unit"}
    u["witnesses"] = ["W1", "W2"]
    assert get_stripped_unit(u, MAINNET)["witnesses"] == ["W1", "W2"]


def test_base64_hash_encodes_lone_surrogates_like_node() -> None:
    # Node's utf8 encoder writes a lone surrogate as U+FFFD
    assert utf8_like_node("a\ud800") == "a\ufffd".encode()
    assert utf8_like_node("\ud83d\ude00") == "\U0001f600".encode()
    assert get_base64_hash("a\ud800") == _b64sha("s\x00a\ufffd")
    assert get_base64_hash({"a": 1}, json_based=True) == _b64sha('{"a":1}')
