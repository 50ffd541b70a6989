"""JavaScript value semantics: number text, JSON.parse, JSON.stringify, key order.

Every expected string below was produced by Node.js 20 (`x.toString()`, `JSON.stringify`,
`JSON.parse`, `Array.prototype.sort`) and pasted here; the tests do not need node.
"""

from __future__ import annotations

import json
import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bluegreen.formats.jsvalues import (
    _decoder,
    _encode,
    is_array_index,
    js_number_to_string,
    js_parse,
    js_stringify,
    utf16_key,
)

# (value, Number.prototype.toString) from node, for the cases the brief names
NAMED_NUMBERS = [
    (0.1 + 0.2, "0.30000000000000004"),
    (1e21, "1e+21"),
    (1e-7, "1e-7"),
    (123e-20, "1.23e-18"),
    (2**53 + 1, "9007199254740992"),  # an int JS cannot hold: rounds to 2**53
    (-0.0, "0"),
    (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (100, "100"),
    (1e20, "100000000000000000000"),
    (0.000001, "0.000001"),
    (0.0000012345, "0.0000012345"),
    (123456789012345680000, "123456789012345680000"),
    (1.2345678901234567, "1.2345678901234567"),  # 17 significant digits
    (1.0000000000000002, "1.0000000000000002"),
    (-1.5e-7, "-1.5e-7"),
    (999999999999999900000, "999999999999999900000"),
    (1.5e21, "1.5e+21"),
    (2**63, "9223372036854776000"),
    (12345678901234567890, "12345678901234567000"),
    (-123.456e30, "-1.23456e+32"),
    (2.5e-5, "0.000025"),
    (1e16, "10000000000000000"),
    (1.0, "1"),
]


@pytest.mark.parametrize(("value", "text"), NAMED_NUMBERS)
def test_number_text_matches_javascript(value: float, text: str) -> None:
    assert js_number_to_string(value) == text


# (8-byte big-endian double, toString) from node: every layout JS uses, both signs,
# exponents from subnormal to near overflow
NODE_NUMBER_TABLE = [
    ("0000000000000000", "0"), ("8000000000000000", "0"), ("0000000000000002", "1e-323"),
    ("8000000000000002", "-1e-323"), ("0000000000000001", "5e-324"), ("8000000000000001", "-5e-324"),
    ("000012688b70e62b", "1e-310"), ("800012688b70e62b", "-1e-310"), ("00001b9cd1295941", "1.5e-310"),
    ("80001b9cd1295941", "-1.5e-310"), ("000016b9f4d3cd48", "1.23456789012346e-310"), ("800016b9f4d3cd48", "-1.23456789012346e-310"),
    ("0000b8157268fdaf", "1e-309"), ("8000b8157268fdaf", "-1e-309"), ("00003739a252b281", "3e-310"),
    ("80003739a252b281", "-3e-310"), ("01a56e1fc2f8f359", "1e-300"), ("81a56e1fc2f8f359", "-1e-300"),
    ("01b01297d23ab683", "1.5e-300"), ("81b01297d23ab683", "-1.5e-300"), ("01aa74fe1c1e8908", "1.2345678901234568e-300"),
    ("81aa74fe1c1e8908", "-1.2345678901234568e-300"), ("01dac9a7b3b7302e", "9.999999999999999e-300"), ("81dac9a7b3b7302e", "-9.999999999999999e-300"),
    ("01c01297d23ab683", "3e-300"), ("81c01297d23ab683", "-3e-300"), ("358dee7a4ad4b81f", "1e-50"),
    ("b58dee7a4ad4b81f", "-1e-50"), ("359672dbb81f8a17", "1.5e-50"), ("b59672dbb81f8a17", "-1.5e-50"),
    ("359279eca9d265bd", "1.2345678901234566e-50"), ("b59279eca9d265bd", "-1.2345678901234566e-50"), ("35c2b50c6ec4f312", "9.999999999999997e-50"),
    ("b5c2b50c6ec4f312", "-9.999999999999997e-50"), ("35a672dbb81f8a18", "3.0000000000000004e-50"), ("b5a672dbb81f8a18", "-3.0000000000000004e-50"),
    ("3b92e3b40a0e9b4f", "1e-21"), ("bb92e3b40a0e9b4f", "-1e-21"), ("3b9c558e0f15e8f7", "1.5e-21"),
    ("bb9c558e0f15e8f7", "-1.5e-21"), ("3b97520105bbfffa", "1.2345678901234566e-21"), ("bb97520105bbfffa", "-1.2345678901234566e-21"),
    ("3bc79ca10c924222", "9.999999999999998e-21"), ("bbc79ca10c924222", "-9.999999999999998e-21"), ("3bac558e0f15e8f8", "3.0000000000000003e-21"),
    ("bbac558e0f15e8f8", "-3.0000000000000003e-21"), ("3bc79ca10c924223", "1e-20"), ("bbc79ca10c924223", "-1e-20"),
    ("3bd1b578c96db19b", "1.5e-20"), ("bbd1b578c96db19b", "-1.5e-20"), ("3bcd2681472afff9", "1.2345678901234567e-20"),
    ("bbcd2681472afff9", "-1.2345678901234567e-20"), ("3bfd83c94fb6d2ab", "9.999999999999999e-20"), ("bbfd83c94fb6d2ab", "-9.999999999999999e-20"),
    ("3be1b578c96db19b", "3e-20"), ("bbe1b578c96db19b", "-3e-20"), ("3e45798ee2308c3a", "1e-8"),
    ("be45798ee2308c3a", "-1e-8"), ("3e501b2b29a4692b", "1.5e-8"), ("be501b2b29a4692b", "-1.5e-8"),
    ("3e4a831bd731a289", "1.2345678901234567e-8"), ("be4a831bd731a289", "-1.2345678901234567e-8"), ("3e7ad7f29abcaf47", "9.999999999999998e-8"),
    ("be7ad7f29abcaf47", "-9.999999999999998e-8"), ("3e601b2b29a4692c", "3.0000000000000004e-8"), ("be601b2b29a4692c", "-3.0000000000000004e-8"),
    ("3e7ad7f29abcaf48", "1e-7"), ("be7ad7f29abcaf48", "-1e-7"), ("3e8421f5f40d8376", "1.5e-7"),
    ("be8421f5f40d8376", "-1.5e-7"), ("3e8091f1667f0595", "1.2345678901234566e-7"), ("be8091f1667f0595", "-1.2345678901234566e-7"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"), ("beb0c6f7a0b5ed8c", "-9.999999999999997e-7"), ("3e9421f5f40d8377", "3.0000000000000004e-7"),
    ("be9421f5f40d8377", "-3.0000000000000004e-7"), ("3eb0c6f7a0b5ed8d", "0.000001"), ("beb0c6f7a0b5ed8d", "-0.000001"),
    ("3eb92a737110e454", "0.0000015"), ("beb92a737110e454", "-0.0000015"), ("3eb4b66dc01ec6fb", "0.0000012345678901234567"),
    ("beb4b66dc01ec6fb", "-0.0000012345678901234567"), ("3ee4f8b588e368ef", "0.000009999999999999997"), ("bee4f8b588e368ef", "-0.000009999999999999997"),
    ("3ec92a737110e455", "0.0000030000000000000005"), ("bec92a737110e455", "-0.0000030000000000000005"), ("3ee4f8b588e368f1", "0.00001"),
    ("bee4f8b588e368f1", "-0.00001"), ("3eef75104d551d69", "0.000015"), ("beef75104d551d69", "-0.000015"),
    ("3ee9e409302678ba", "0.000012345678901234568"), ("bee9e409302678ba", "-0.000012345678901234568"), ("3f1a36e2eb1c432b", "0.00009999999999999998"),
    ("bf1a36e2eb1c432b", "-0.00009999999999999998"), ("3eff75104d551d6a", "0.000030000000000000004"), ("beff75104d551d6a", "-0.000030000000000000004"),
    ("3f847ae147ae147b", "0.01"), ("bf847ae147ae147b", "-0.01"), ("3f8eb851eb851eb8", "0.015"),
    ("bf8eb851eb851eb8", "-0.015"), ("3f8948b0f90591e5", "0.012345678901234567"), ("bf8948b0f90591e5", "-0.012345678901234567"),
    ("3fb9999999999998", "0.09999999999999998"), ("bfb9999999999998", "-0.09999999999999998"), ("3f9eb851eb851eb9", "0.030000000000000002"),
    ("bf9eb851eb851eb9", "-0.030000000000000002"), ("3fb999999999999a", "0.1"), ("bfb999999999999a", "-0.1"),
    ("3fc3333333333333", "0.15"), ("bfc3333333333333", "-0.15"), ("3fbf9add3746f65e", "0.12345678901234566"),
    ("bfbf9add3746f65e", "-0.12345678901234566"), ("3feffffffffffffe", "0.9999999999999998"), ("bfeffffffffffffe", "-0.9999999999999998"),
    ("3fd3333333333334", "0.30000000000000004"), ("bfd3333333333334", "-0.30000000000000004"), ("3ff0000000000000", "1"),
    ("bff0000000000000", "-1"), ("3ff8000000000000", "1.5"), ("bff8000000000000", "-1.5"),
    ("3ff3c0ca428c59fb", "1.2345678901234567"), ("bff3c0ca428c59fb", "-1.2345678901234567"), ("4023ffffffffffff", "9.999999999999998"),
    ("c023ffffffffffff", "-9.999999999999998"), ("4008000000000001", "3.0000000000000004"), ("c008000000000001", "-3.0000000000000004"),
    ("4024000000000000", "10"), ("c024000000000000", "-10"), ("402e000000000000", "15"),
    ("c02e000000000000", "-15"), ("4028b0fcd32f707a", "12.345678901234567"), ("c028b0fcd32f707a", "-12.345678901234567"),
    ("4058ffffffffffff", "99.99999999999999"), ("c058ffffffffffff", "-99.99999999999999"), ("403e000000000001", "30.000000000000004"),
    ("c03e000000000001", "-30.000000000000004"), ("4059000000000000", "100"), ("c059000000000000", "-100"),
    ("4062c00000000000", "150"), ("c062c00000000000", "-150"), ("405edd3c07fb4c98", "123.45678901234567"),
    ("c05edd3c07fb4c98", "-123.45678901234567"), ("408f3ffffffffffe", "999.9999999999998"), ("c08f3ffffffffffe", "-999.9999999999998"),
    ("4072c00000000001", "300.00000000000006"), ("c072c00000000001", "-300.00000000000006"), ("40f86a0000000000", "100000"),
    ("c0f86a0000000000", "-100000"), ("41024f8000000000", "150000"), ("c1024f8000000000", "-150000"),
    ("40fe240c9fcb68cd", "123456.78901234567"), ("c0fe240c9fcb68cd", "-123456.78901234567"), ("412e847ffffffffe", "999999.9999999998"),
    ("c12e847ffffffffe", "-999999.9999999998"), ("41124f8000000001", "300000.00000000006"), ("c1124f8000000001", "-300000.00000000006"),
    ("42d6bcc41e900000", "100000000000000"), ("c2d6bcc41e900000", "-100000000000000"), ("42e10d9316ec0000", "150000000000000"),
    ("c2e10d9316ec0000", "-150000000000000"), ("42dc12218377de6b", "123456789012345.67"), ("c2dc12218377de6b", "-123456789012345.67"),
    ("430c6bf52633fffe", "999999999999999.8"), ("c30c6bf52633fffe", "-999999999999999.8"), ("42f10d9316ec0001", "300000000000000.06"),
    ("c2f10d9316ec0001", "-300000000000000.06"), ("430c6bf526340000", "1000000000000000"), ("c30c6bf526340000", "-1000000000000000"),
    ("431550f7dca70000", "1500000000000000"), ("c31550f7dca70000", "-1500000000000000"), ("43118b54f22aeb03", "1234567890123456.8"),
    ("c3118b54f22aeb03", "-1234567890123456.8"), ("4341c37937e07fff", "9999999999999998"), ("c341c37937e07fff", "-9999999999999998"),
    ("432550f7dca70001", "3000000000000000.5"), ("c32550f7dca70001", "-3000000000000000.5"), ("4341c37937e08000", "10000000000000000"),
    ("c341c37937e08000", "-10000000000000000"), ("434aa535d3d0c000", "15000000000000000"), ("c34aa535d3d0c000", "-15000000000000000"),
    ("4345ee2a2eb5a5c4", "12345678901234568"), ("c345ee2a2eb5a5c4", "-12345678901234568"), ("4376345785d89fff", "99999999999999980"),
    ("c376345785d89fff", "-99999999999999980"), ("435aa535d3d0c001", "30000000000000004"), ("c35aa535d3d0c001", "-30000000000000004"),
    ("4376345785d8a000", "100000000000000000"), ("c376345785d8a000", "-100000000000000000"), ("4380a741a4627800", "150000000000000000"),
    ("c380a741a4627800", "-150000000000000000"), ("437b69b4ba630f34", "123456789012345660"), ("c37b69b4ba630f34", "-123456789012345660"),
    ("43abc16d674ec7fe", "999999999999999700"), ("c3abc16d674ec7fe", "-999999999999999700"), ("4390a741a4627801", "300000000000000060"),
    ("c390a741a4627801", "-300000000000000060"), ("43abc16d674ec800", "1000000000000000000"), ("c3abc16d674ec800", "-1000000000000000000"),
    ("43b4d1120d7b1600", "1500000000000000000"), ("c3b4d1120d7b1600", "-1500000000000000000"), ("43b12210f47de981", "1234567890123456800"),
    ("c3b12210f47de981", "-1234567890123456800"), ("43e158e460913cff", "9999999999999998000"), ("c3e158e460913cff", "-9999999999999998000"),
    ("43c4d1120d7b1601", "3000000000000000500"), ("c3c4d1120d7b1601", "-3000000000000000500"), ("4415af1d78b58c40", "100000000000000000000"),
    ("c415af1d78b58c40", "-100000000000000000000"), ("442043561a882930", "150000000000000000000"), ("c42043561a882930", "-150000000000000000000"),
    ("441ac53a7e04bcd9", "123456789012345670000"), ("c41ac53a7e04bcd9", "-123456789012345670000"), ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("c44b1ae4d6e2ef4e", "-999999999999999700000"), ("443043561a882931", "300000000000000070000"), ("c43043561a882931", "-300000000000000070000"),
    ("444b1ae4d6e2ef50", "1e+21"), ("c44b1ae4d6e2ef50", "-1e+21"), ("4454542ba12a337c", "1.5e+21"),
    ("c454542ba12a337c", "-1.5e+21"), ("4450bb448ec2f608", "1.2345678901234568e+21"), ("c450bb448ec2f608", "-1.2345678901234568e+21"),
    ("4480f0cf064dd591", "9.999999999999998e+21"), ("c480f0cf064dd591", "-9.999999999999998e+21"), ("4464542ba12a337d", "3.0000000000000005e+21"),
    ("c464542ba12a337d", "-3.0000000000000005e+21"), ("4480f0cf064dd592", "1e+22"), ("c480f0cf064dd592", "-1e+22"),
    ("448969368974c05b", "1.5e+22"), ("c48969368974c05b", "-1.5e+22"), ("4484ea15b273b38a", "1.2345678901234568e+22"),
    ("c484ea15b273b38a", "-1.2345678901234568e+22"), ("44b52d02c7e14af5", "9.999999999999997e+22"), ("c4b52d02c7e14af5", "-9.999999999999997e+22"),
    ("449969368974c05c", "3.0000000000000004e+22"), ("c49969368974c05c", "-3.0000000000000004e+22"), ("4a511b0ec57e649a", "1e+50"),
    ("ca511b0ec57e649a", "-1e+50"), ("4a59a896283d96e6", "1.5e+50"), ("ca59a896283d96e6", "-1.5e+50"),
    ("4a551e3e78882b6c", "1.2345678901234567e+50"), ("ca551e3e78882b6c", "-1.2345678901234567e+50"), ("4a8561d276ddfdbf", "9.999999999999998e+50"),
    ("ca8561d276ddfdbf", "-9.999999999999998e+50"), ("4a69a896283d96e7", "3.0000000000000002e+50"), ("ca69a896283d96e7", "-3.0000000000000002e+50"),
    ("7e37e43c8800759c", "1e+300"), ("fe37e43c8800759c", "-1e+300"), ("7e41eb2d66005835", "1.5e+300"),
    ("fe41eb2d66005835", "-1.5e+300"), ("7e3d7ee8bcbbd351", "1.2345678901234567e+300"), ("fe3d7ee8bcbbd351", "-1.2345678901234567e+300"),
    ("7e6ddd4baa009301", "9.999999999999998e+300"), ("fe6ddd4baa009301", "-9.999999999999998e+300"), ("7e51eb2d66005835", "3e+300"),
    ("fe51eb2d66005835", "-3e+300"), ("7fe1ccf385ebc8a0", "1e+308"), ("ffe1ccf385ebc8a0", "-1e+308"),
    ("7feab36d48e1acf0", "1.5e+308"), ("ffeab36d48e1acf0", "-1.5e+308"), ("7fe5f9dd9edb185d", "1.2345678901234567e+308"),
    ("ffe5f9dd9edb185d", "-1.2345678901234567e+308"), ("7ff0000000000000", "Infinity"), ("fff0000000000000", "-Infinity"),
    ("4340000000000000", "9007199254740992"), ("4340000000000001", "9007199254740994"), ("43f0000000000000", "18446744073709552000"),
    ("4450000000000000", "1.1805916207174113e+21"), ("3fd3333333333334", "0.30000000000000004"), ("3fd5555555555555", "0.3333333333333333"),
    ("3fe5555555555555", "0.6666666666666666"), ("3c36b082c2148b8e", "1.23e-18"), ("0000000000000001", "5e-324"),
    ("0010000000000000", "2.2250738585072014e-308"), ("444b1ae4d6e2ef50", "1e+21"), ("444b1ae4d6e2ef50", "1e+21"),
]


def test_number_text_table_from_node() -> None:
    wrong = []
    for hexbytes, text in NODE_NUMBER_TABLE:
        x = struct.unpack(">d", bytes.fromhex(hexbytes))[0]
        if js_number_to_string(x) != text:
            wrong.append((x, js_number_to_string(x), text))
    assert wrong == []


def test_non_finite_number_text() -> None:
    assert js_number_to_string(math.inf) == "Infinity"
    assert js_number_to_string(-math.inf) == "-Infinity"
    assert js_number_to_string(math.nan) == "NaN"


def test_booleans_are_not_numbers() -> None:
    with pytest.raises(TypeError):
        js_number_to_string(True)


def _significant_digits(text: str) -> int:
    mantissa = text.lstrip("-").split("e")[0].replace(".", "")
    return len(mantissa.strip("0")) or 1


@settings(max_examples=1000)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_number_text_round_trips_with_minimal_digits(x: float) -> None:
    text = js_number_to_string(x)
    assert float(text) == x  # JS text reads back as the same double
    # as few significant digits as Python's shortest repr (the same shortest round-trip digits)
    assert _significant_digits(text) == _significant_digits(repr(abs(x))) or x == 0
    assert "e" not in text or abs(x) >= 1e21 or abs(x) < 1e-6


@given(st.integers(min_value=-(2**80), max_value=2**80))
def test_ints_print_like_the_double_js_holds(n: int) -> None:
    assert js_number_to_string(n) == js_number_to_string(float(n))
    if abs(n) < 2**53:
        assert js_number_to_string(n) == str(n)


# ---------------------------------------------------------------- key order

KEYS_JSON = '{"b":1,"10":2,"9":3,"a":4,"01":5,"-1":6,"4294967295":7,"4294967294":8,"1.5":9,"0":10,"b":11}'
# node: Object.keys(JSON.parse(KEYS_JSON)) and JSON.stringify of it
KEYS_NODE = ["0", "9", "10", "4294967294", "b", "a", "01", "-1", "4294967295", "1.5"]
KEYS_STRINGIFY_NODE = (
    '{"0":10,"9":3,"10":2,"4294967294":8,"b":11,"a":4,"01":5,"-1":6,"4294967295":7,"1.5":9}'
)


def test_parse_orders_keys_like_v8() -> None:
    obj = js_parse(KEYS_JSON)
    assert list(obj) == KEYS_NODE
    assert obj["b"] == 11  # duplicate: first position, last value


def test_stringify_applies_js_key_order_to_python_dicts() -> None:
    d = {"b": 11, "10": 2, "9": 3, "a": 4, "01": 5, "-1": 6, "4294967295": 7, "4294967294": 8, "1.5": 9, "0": 10}
    assert js_stringify(d) == KEYS_STRINGIFY_NODE
    assert js_stringify(js_parse(KEYS_JSON)) == KEYS_STRINGIFY_NODE


@pytest.mark.parametrize(
    ("key", "expected"),
    [("0", True), ("9", True), ("10", True), ("4294967294", True), ("4294967295", False),
     ("01", False), ("-1", False), ("1.5", False), ("", False), ("a", False), ("\u0661", False)],
)
def test_array_index_keys(key: str, expected: bool) -> None:
    assert is_array_index(key) is expected


def test_utf16_sort_order() -> None:
    # node: ["\ud83d\ude00", "\uffff", "\ue000", "a"].sort() -> ["a","😀","\ue000","\uffff"]
    assert sorted(["\U0001f600", "\uffff", "\ue000", "a"], key=utf16_key) == ["a", "\U0001f600", "\ue000", "\uffff"]
    # Python's own order differs: that is the trap
    assert sorted(["\U0001f600", "\ue000"]) == ["\ue000", "\U0001f600"]


# ---------------------------------------------------------------- JSON.stringify / JSON.parse


def test_stringify_escapes_like_javascript() -> None:
    s = "\u0000\u0001\u001f\u007f\b\f\n\r\t\"\\/\u2028\ud800x\udc00\U0001f600\u00e9"
    # node: JSON.stringify of the same string (with a real surrogate pair for the emoji)
    expected = '"\\u0000\\u0001\\u001f\u007f\\b\\f\\n\\r\\t\\"\\\\/\u2028\\ud800x\\udc00\U0001f600\u00e9"'
    assert js_stringify(s) == expected
    assert js_stringify([s]) == "[" + expected + "]"
    assert js_stringify({s: 1}) == "{" + expected + ":1}"


def test_surrogate_pair_given_as_two_code_points_is_one_character() -> None:
    assert js_stringify(["\ud83d\ude00"]) == '["\U0001f600"]'


def test_parse_numbers_as_doubles() -> None:
    # node: JSON.stringify(JSON.parse('[1.0, 1e3, -0, 12345678901234567890, 0.5, 1e400, -1e400]'))
    text = "[1.0, 1e3, -0, 12345678901234567890, 0.5, 1e400, -1e400]"
    assert js_stringify(js_parse(text)) == "[1,1000,0,12345678901234567000,0.5,null,null]"
    values = js_parse(text)
    assert [type(v) for v in values[:5]] == [int, int, int, int, float]
    assert values[3] == 12345678901234567168  # the double nearest to the literal


@pytest.mark.parametrize("bad", ["NaN", "[Infinity]", "[1,]", "{'a':1}", '"\x01"', "01", "[1] x"])
def test_parse_rejects_what_json_parse_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        js_parse(bad)


def test_parse_accepts_bytes() -> None:
    assert js_parse('{"a":"\u00e9"}'.encode()) == {"a": "\u00e9"}


def test_stringify_scalars() -> None:
    assert js_stringify(None) == "null"
    assert js_stringify(True) == "true"
    assert js_stringify(1.5) == "1.5"
    assert js_stringify(math.nan) == "null"
    assert js_stringify((1, 2)) == "[1,2]"
    with pytest.raises(TypeError):
        js_stringify({1, 2})


# values JSON can carry, with the awkward parts: digit keys, floats, big ints, surrogates
_keys = st.one_of(
    st.text(max_size=6),
    st.integers(min_value=0, max_value=2**33).map(str),
    st.sampled_from(["01", "-1", "4294967295", "4294967294", "\ud800", "a\udc00"]),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(["\ud83d", "\ud83d\ude00", "x\udfff", "\x7f\u2028"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=500)
@given(_values)
def test_fast_path_agrees_with_the_reference_encoder(value: object) -> None:
    # js_stringify takes the C encoder when its output provably needs no JS fix-up;
    # the element-by-element encoder is the reference for every value
    parts: list[str] = []
    _encode(value, parts.append)
    assert js_stringify(value) == "".join(parts)


@settings(max_examples=500)
@given(_values)
def test_stringify_then_parse_is_stable(value: object) -> None:
    text = js_stringify(value)
    assert js_stringify(js_parse(text)) == text


@given(st.dictionaries(_keys, st.integers(), max_size=8))
def test_stringified_keys_follow_js_order(d: dict[str, int]) -> None:
    keys = list(json.loads(js_stringify(d), object_pairs_hook=lambda pairs: [k for k, _ in pairs]))
    index_keys = [k for k in keys if is_array_index(k)]
    other_keys = [k for k in keys if not is_array_index(k)]
    assert keys == index_keys + other_keys
    assert index_keys == sorted(index_keys, key=int)
    assert other_keys == [k for k in d if not is_array_index(k)]


@pytest.mark.parametrize(
    "value",
    [
        {"a": 'x\\"1.5', "b": 1},  # backslash then escaped quote before number-like text
        {"a": "\\", "b": 1.5},  # a string ending in a backslash, then a float
        {"a": '"', "10": 1},  # an escaped quote, then a digit key
        ["[]", "{}", "null", ":1.5", ",12345678901234567890", '":', '"1":'],
        [2111100000000000, -9007199254740991, 9007199254740993, "9007199254740993"],
        {"k": [1e-7, 1e21, 1.0, 0.5]},
    ],
)
def test_fast_path_edges(value: object) -> None:
    parts: list[str] = []
    _encode(value, parts.append)
    assert js_stringify(value) == "".join(parts)


@settings(max_examples=400)
@given(_values)
def test_parse_fast_path_agrees_with_the_full_decoder(value: object) -> None:
    text = js_stringify(value)
    fast, full = js_parse(text), _decoder.decode(text)
    assert fast == full
    assert js_stringify(fast) == js_stringify(full) == text
