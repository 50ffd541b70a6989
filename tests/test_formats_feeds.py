"""Data-feed keys: number reading and encoding, and the df/dfv puts of ocore's migration.

Scalar vectors were printed by ocore's string_utils.js under Node.js 20. The row-level test
rebuilds every df/dfv key of ocore's own migration output (expected-kv.jsonl) from the v29 SQL
rows, and the stable ones must also equal what the running v31 node wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import apsw
import pytest
from conftest import DEVNET_V29, DEVNET_V31, writable_copy
from rocksdict import AccessType, Options, Rdict

from bluegreen.formats.feeds import data_feed_entries, encode_double_lexicographic, encode_mci, get_numeric_feed_value

NUMERIC = [
    ("1", 1.0), ("-1.5", -1.5), ("1e3", 1000.0), ("1.23e-700", None), ("0001", 1.0),
    ("1234567890123456", None), ("123456789012345", 123456789012345.0), ("abc", None), ("1.", None),
    ("+5", 5.0), (".5", None), ("1e400", None), ("-0", 0.0), ("0e5", 0.0), ("00.000", 0.0), ("1 ", None),
    ("1\n", None), (" 1", None), ("1E+2", 100.0), ("12345678901234.5", None),
    ("1234.567e-70", 1.234567e-67), ("0.0e-700", 0.0), ("-1234.567e-70", -1.234567e-67),
    ("\u0661", None),  # a non-ASCII digit: JS \d is ASCII only
]


@pytest.mark.parametrize(("text", "expected"), NUMERIC)
def test_numeric_feed_value(text: str, expected: float | None) -> None:
    got = get_numeric_feed_value(text)
    assert got == expected and (got is None) == (expected is None)
    if got == 0:
        assert str(got) == "0.0"  # never -0


@pytest.mark.parametrize(
    ("number", "encoded"),
    [
        (0.0, "8000000000000000"), (-0.0, "8000000000000000"), (1, "bff0000000000000"),
        (-1, "400fffffffffffff"), (1.5, "bff8000000000000"), (-1.5, "4007ffffffffffff"),
        (1561049631284, "c276b75cf0a34000"), (5e-324, "8000000000000001"), (-5e-324, "7ffffffffffffffe"),
        (1.7976931348623157e308, "ffefffffffffffff"), (-1.7976931348623157e308, "0010000000000000"),
        (float("inf"), "fff0000000000000"), (float("-inf"), "000fffffffffffff"),
        (0.1, "bfb999999999999a"), (1e-300, "81a56e1fc2f8f359"),
    ],
)
def test_encode_double_lexicographic(number: float, encoded: str) -> None:
    assert encode_double_lexicographic(number) == encoded


def test_encoded_doubles_sort_like_numbers() -> None:
    numbers = [-1e300, -2.5, -1, -5e-324, 0, 5e-324, 1e-300, 0.1, 1, 1.5, 1561049631284, 1e300]
    assert sorted(numbers, key=encode_double_lexicographic) == numbers


def test_encode_mci() -> None:
    assert [encode_mci(m) for m in (0, 1, 12, 4294967295, None)] == [
        "ffffffff", "fffffffe", "fffffff3", "00000000", "ffffffff"
    ]
    with pytest.raises(ValueError):
        encode_mci(-1)


def test_entries_of_one_row_in_ocore_order() -> None:
    assert data_feed_entries("A", "price", "1.5", None, 3, "U") == [
        ("df\nA\nprice\ns\n1.5\nfffffffc", "U"),
        ("df\nA\nprice\nn\nbff8000000000000\nfffffffc", "U"),
        ("dfv\nA\nprice\nfffffffc", "1.5\nU"),
    ]
    assert data_feed_entries("A", "t", None, 2**53 + 1, None, "U") == [
        ("df\nA\nt\nn\nc340000000000000\nffffffff", "U"),
        ("dfv\nA\nt\nffffffff", "9007199254740992\nU"),
    ]
    assert data_feed_entries("A", "name", "abc", None, 0, "U") == [
        ("df\nA\nname\ns\nabc\nffffffff", "U"),
        ("dfv\nA\nname\nffffffff", "abc\nU"),
    ]


def _entries_from_v29_sql(db: Path, *, stable_only: bool = False) -> dict[str, str]:
    """Every df/dfv put of migrate_to_kv.js for the v29 fixture, later rows overwriting earlier."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    rows = conn.execute(
        "SELECT unit, address, feed_name, value, int_value, main_chain_index, is_stable "
        "FROM data_feeds CROSS JOIN units USING(unit) CROSS JOIN unit_authors USING(unit) "
        "ORDER BY data_feeds.rowid"
    ).fetchall()
    conn.close()
    assert rows
    kv: dict[str, str] = {}
    for unit, address, feed_name, value, int_value, mci, is_stable in rows:
        if stable_only and not is_stable:
            continue
        kv.update(data_feed_entries(address, feed_name, value, int_value, mci, unit))
    return kv


def test_feeds_reproduce_ocores_migration_output(tmp_path: Path) -> None:
    db = writable_copy(DEVNET_V29 / "byteball.sqlite", tmp_path / "byteball.sqlite")
    expected = {}
    with open(DEVNET_V29 / "expected-kv.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["k"].startswith(("df\n", "dfv\n")):
                expected[row["k"]] = row["v"]
    assert len(expected) == 48
    assert _entries_from_v29_sql(db) == expected


def test_stable_feeds_match_what_the_running_node_wrote(tmp_path: Path) -> None:
    db = writable_copy(DEVNET_V29 / "byteball.sqlite", tmp_path / "byteball.sqlite")
    kv_dir = writable_copy(DEVNET_V31 / "rocksdb", tmp_path / "rocksdb")
    store = Rdict(str(kv_dir), Options(raw_mode=True), access_type=AccessType.read_only())
    try:
        written = {
            bytes(k).decode(): bytes(v).decode()
            for k, v in store.items()
            if bytes(k).startswith((b"df\n", b"dfv\n"))
        }
    finally:
        store.close()
    assert len(written) == 44
    assert _entries_from_v29_sql(db, stable_only=True) == written
