"""Checksummed hashes and addresses (chash.js, object_hash.getChash160).

Expected values were printed by ocore's chash.js / string_utils.js under Node.js 20 and pasted here;
the fixture's own author addresses are checked against its definitions table.
"""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest
from conftest import DEVNET_V31, writable_copy

from bluegreen.formats.chash import definition_address, get_chash160, get_chash288, is_chash_valid
from bluegreen.formats.jsvalues import js_parse

DEFINITIONS = [
    (["sig", {"pubkey": "A7eh3aYQSbipaL6m+TGhocqPFW95Pcd0G00BSb6nW3sM"}], "ZQFHJXFWT2OCEBXF26GFXJU4MPASWPJT"),
    (
        ["autonomous agent", {"bounce_fees": {"base": 10000}, "messages": [{"app": "payment", "payload": {
            "asset": "base", "outputs": [{"address": "{trigger.address}",
                                          "amount": "{trigger.output[[asset=base]] - 500}"}]}}]}],
        "X2SCCQECSCMV4X4MJ3YSQNA4VE73NT5A",
    ),
    (
        ["or", [["sig", {"pubkey": "Aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}],
                ["and", [["address", "ZQFHJXFWT2OCEBXF26GFXJU4MPASWPJT"],
                         ["in data feed", [["ZQFHJXFWT2OCEBXF26GFXJU4MPASWPJT"], "timestamp", ">", 1.5e12]]]]]],
        "P46KUAJNV5MEYLTYONKWD7WYYNZCIAZ7",
    ),
    (
        ["autonomous agent", {"init": '{$x = "\U0001f600";}',
                              "messages": {"cases": [{"messages": [{"app": "data", "payload": {"x": 0.1}}]}]}}],
        "G5KNQBBZC4YYGKDHGOFNECMLPB4RGD6T",
    ),
]


@pytest.mark.parametrize(("definition", "address"), DEFINITIONS)
def test_definition_addresses_match_ocore(definition: object, address: str) -> None:
    assert definition_address(definition) == address
    assert is_chash_valid(address)


@pytest.mark.parametrize(
    ("source", "c160", "c288"),
    [
        ("s\x00abc", "DEYK32X36MRVWDBFKAN6N2CZ2OVPZVP4", "NuHRBIvP6PBIXpZekbrpRcm03H4vb/rpQqeH2SS73rO0NBJu"),
        ("", "4S7J36ESDBSQBRF2L54RLLIILKBGY5HR", "4dgYlClF8LhUTT7+mQmXfcSJJ9cwfI5E3kackktjIbfCmuCV"),
        ("\u00e9", "MGNICQGWP6GNV6WJ3ER43ZYSUK4BFLQA", "SU5Kt+QAz4aTTri9bLR1AL9V1PyVT++wOJNQr40P9uFdOnCs"),
        ("a\ud800", "PEIQT6I5MHFOKMAXNFIV5IDD24HYJ6WP", "UOiO5RDckn8X2VfCWnhUnibsIFFI5/Sh1Ofe9Yd3Jxv6Cnzt"),
    ],
)
def test_chash_of_strings_match_ocore(source: str, c160: str, c288: str) -> None:
    assert get_chash160(source) == c160
    assert get_chash288(source) == c288
    assert is_chash_valid(c160) and is_chash_valid(c288)


@pytest.mark.parametrize(
    ("encoded", "valid"),
    [
        ("ZQFHJXFWT2OCEBXF26GFXJU4MPASWPJT", True),
        ("ZQFHJXFWT2OCEBXF26GFXJU4MPASWPJU", False),  # ocore: false
        ("AQFHJXFWT2OCEBXF26GFXJU4MPASWPJT", False),  # ocore: false
        ("ZQFHJXFWT2OCEBXF26GFXJU4MPASWPJ", False),  # wrong length (ocore throws)
        ("zqfhjxfwt2ocebxf26gfxju4mpaswpj!", False),  # not base32
    ],
)
def test_is_chash_valid(encoded: str, valid: bool) -> None:
    assert is_chash_valid(encoded) is valid


def test_every_checksum_bit_matters() -> None:
    good = get_chash160("s\x00abc")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    for i, ch in enumerate(good):
        flipped = alphabet[(alphabet.index(ch) + 1) % 32]
        assert not is_chash_valid(good[:i] + flipped + good[i + 1:]), i


def test_fixture_authors_are_the_addresses_of_their_definitions(tmp_path: Path) -> None:
    db = writable_copy(DEVNET_V31 / "byteball.sqlite", tmp_path / "byteball.sqlite")
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    rows = conn.execute(
        "SELECT ua.address, d.definition_chash, d.definition FROM units u "
        "JOIN unit_authors ua USING(unit) JOIN definitions d ON d.definition_chash = ua.definition_chash "
        "WHERE u.unit NOT IN (SELECT child_unit FROM parenthoods)"  # the genesis unit
    ).fetchall()
    conn.close()
    assert rows, "the genesis unit's author has a definition"
    for address, definition_chash, definition in rows:
        assert definition_address(js_parse(definition)) == definition_chash == address
        assert is_chash_valid(address)
