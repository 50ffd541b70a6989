"""ocore's canonical strings: getSourceString and getJsonSourceString.

Expected strings were printed by ocore's own string_utils.js under Node.js 20 and pasted here.
"""

from __future__ import annotations

import math

import pytest

from bluegreen.formats.source_string import SourceStringError, get_json_source_string, get_source_string

NUL = "\x00"

MIXED = {
    "b": [1, 2.5, True, False],
    "a": "x",
    "\ue000": {"z": 1e21, "y": -0.0, "x": 1e-7},
    "\U0001f600": "\U0001f600\ud800\u00e9\u2028\"\\\n",
    "10": 1,
    "9": 2,
}


def test_classic_string_of_an_object_sorts_keys_by_utf16_units() -> None:
    expected = NUL.join(
        ["10", "n", "1", "9", "n", "2", "a", "s", "x", "b", "[", "n", "1", "n", "2.5", "b", "true", "b", "false", "]",
         "\U0001f600", "s", "\U0001f600\ud800\u00e9\u2028\"\\\n",
         "\ue000", "x", "n", "1e-7", "y", "n", "0", "z", "n", "1e+21"]
    )
    assert get_source_string(MIXED) == expected


def test_json_string_escapes_every_surrogate_unit() -> None:
    expected = (
        '{"10":1,"9":2,"a":"x","b":[1,2.5,true,false],'
        '"\\ud83d\\ude00":"\\ud83d\\ude00\\ud800\u00e9\u2028\\"\\\\\\n",'
        '"\ue000":{"x":1e-7,"y":0,"z":1e+21}}'
    )
    assert get_json_source_string(MIXED) == expected


def test_ocore_unit_test_vectors() -> None:
    # ocore test/string_utils.test.js: an array and an object, with their lengths
    arr = ["a", 81, "b", "c", 3.6903690369, True]
    assert get_source_string(arr) == NUL.join(
        ["[", "s", "a", "n", "81", "s", "b", "s", "c", "n", "3.6903690369", "b", "true", "]"]
    )
    assert len(get_source_string(arr)) == 42
    assert get_json_source_string(arr) == '["a",81,"b","c",3.6903690369,true]'
    obj = {"unit": "cluster", "bunch": 9, "witness": {"name": "axe", "index": 18}}
    assert get_source_string(obj) == NUL.join(
        ["bunch", "n", "9", "unit", "s", "cluster", "witness", "index", "n", "18", "name", "s", "axe"]
    )
    assert len(get_source_string(obj)) == 54
    assert get_json_source_string(obj) == '{"bunch":9,"unit":"cluster","witness":{"index":18,"name":"axe"}}'
    assert get_source_string(1.0) == "n\x001"
    assert get_source_string("simple test string") == "s\x00simple test string"


@pytest.mark.parametrize(
    ("bad", "classic_error", "json_error"),
    [
        (None, "null", "null"),
        ([], "empty", "empty"),
        ({}, "empty", "empty"),
        ({"a": None}, "null", "null"),
        ({"a": []}, "empty", "empty"),
        ({"a": {}}, "empty", "empty"),
        ("a\x00b", "00", None),  # the JSON form does not check for NUL (ocore neither)
        ({"a\x00": 1}, "00", None),
        ([math.nan], "invalid", "invalid"),
        ([math.inf], "invalid", "invalid"),
    ],
)
def test_refuses_what_ocore_refuses(bad: object, classic_error: str, json_error: str | None) -> None:
    with pytest.raises(SourceStringError, match=f"^{classic_error}"):
        get_source_string(bad)
    if json_error is None:
        get_json_source_string(bad)
    else:
        with pytest.raises(SourceStringError, match=f"^{json_error}"):
            get_json_source_string(bad)


def test_json_form_may_allow_empty() -> None:
    assert get_json_source_string({"a": [], "b": {}}, allow_empty=True) == '{"a":[],"b":{}}'


def test_source_string_error_is_a_value_error() -> None:
    assert issubclass(SourceStringError, ValueError)


def test_json_form_numbers_and_big_ints_follow_js() -> None:
    assert get_json_source_string([2**53 + 1, 0.1 + 0.2, 1e21, -0.0]) == "[9007199254740992,0.30000000000000004,1e+21,0]"
    assert get_source_string([2**53 + 1]) == NUL.join(["[", "n", "9007199254740992", "]"])


def test_json_form_fast_and_slow_paths_agree_on_tricky_strings() -> None:
    # strings that look like structure ('[]', '{}', ':null', ':1.5') must not confuse the fast path
    obj = {"k": ["[]", "{}", "a:null", "x:1.5", "y,12345678901234567"], "z": "\U0001f600"}
    assert get_json_source_string(obj) == (
        '{"k":["[]","{}","a:null","x:1.5","y,12345678901234567"],"z":"\\ud83d\\ude00"}'
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["a"], '["a"]'),  # an array of strings is not an empty array
        ({"a": ""}, '{"a":""}'),
        ({"b": 'x\\"', "a": 2111100000000000}, '{"a":2111100000000000,"b":"x\\\\\\""}'),
        ({"a": 9007199254740993}, '{"a":9007199254740992}'),
        ({"a": [0.5, 1.0]}, '{"a":[0.5,1]}'),
    ],
)
def test_json_form_fast_path_edges(value: object, expected: str) -> None:
    assert get_json_source_string(value) == expected
