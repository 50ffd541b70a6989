"""JavaScript value semantics that ocore's bytes depend on.

- `js_number_to_string`: `Number.prototype.toString()` (shortest round-trip digits, JS exponent rules).
- `js_parse`: `JSON.parse` (numbers are doubles, object key order as V8 keeps it).
- `js_stringify`: `JSON.stringify` bytes (JS escaping, JS key order, JS number text).
- `utf16_key`: a sort key that orders strings like JavaScript's default `Array.prototype.sort`.

Python values model JS values like this: `dict` = object, `list`/`tuple` = array, `str` = string,
`int`/`float` = number (a double: ints beyond 2**53 are read as the double JS would hold),
`bool` = boolean, `None` = null.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from json.encoder import encode_basestring as _c_encode_basestring  # type: ignore[attr-defined]
from typing import Any

__all__ = [
    "JsValue",
    "is_array_index",
    "js_number_to_string",
    "json_structure",
    "numbers_print_like_js",
    "js_parse",
    "js_property_order",
    "js_quote",
    "js_sorted_keys",
    "c_output_is_js",
    "js_stringify",
    "utf16_key",
    "utf8_like_node",
]

JsValue = Any  # dict | list | str | int | float | bool | None, nested

_MAX_SAFE = 2**53
_MAX_ARRAY_INDEX = 4294967294  # array indices are 0 .. 2**32 - 2


# ---------------------------------------------------------------------------------------------
# numbers


def js_number_to_string(x: int | float) -> str:
    """Return the text JavaScript's `Number.prototype.toString()` gives for the double `x`.

    Python ints are first turned into the double JS would hold (beyond 2**53 they round).
    NaN and infinities print as JS prints them (`NaN`, `Infinity`, `-Infinity`).
    """
    if type(x) is int:
        if -_MAX_SAFE < x < _MAX_SAFE:
            return str(x)
        x = float(x)  # rounds to the nearest double, like JS reading the number
    elif isinstance(x, bool):
        raise TypeError("a boolean is not a number")
    else:
        x = float(x)
    if x != x:
        return "NaN"
    if x in (_INF, _NINF):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "0"  # also for -0
    if x.is_integer() and -_MAX_SAFE < x < _MAX_SAFE:
        return str(int(x))  # exact and already the shortest form
    r = repr(x)  # shortest round-trip digits (same choice as ECMAScript's Number::toString)
    if "e" not in r and not r.endswith(".0") and abs(x) >= 1e-6:
        return r  # plain decimal with a fraction, e.g. '0.30000000000000004'
    return _format_js(r)


_INF = float("inf")
_NINF = float("-inf")


def _format_js(r: str) -> str:
    """Reformat Python's shortest repr `r` with the layout rules of ECMAScript Number::toString."""
    sign = ""
    if r[0] == "-":
        sign, r = "-", r[1:]
    mant, _, exp_s = r.partition("e")
    exp = int(exp_s) if exp_s else 0
    ip, _, fp = mant.partition(".")
    digits = ip + fp
    # value = 0.<digits> * 10**n ; n counts the digits left of the point
    n = len(ip) + exp
    stripped = digits.lstrip("0")
    n -= len(digits) - len(stripped)
    digits = stripped.rstrip("0") or "0"
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    e = n - 1
    es = ("+" if e >= 0 else "-") + str(abs(e))
    if k == 1:
        return sign + digits + "e" + es
    return sign + digits[0] + "." + digits[1:] + "e" + es


# ---------------------------------------------------------------------------------------------
# key order


def is_array_index(key: str) -> bool:
    """True if `key` is an array index ("0".."4294967294" in canonical form): JS lists those first."""
    return (
        key.isascii()
        and key.isdigit()
        and (key == "0" or key[0] != "0")
        and len(key) <= 10
        and int(key) <= _MAX_ARRAY_INDEX
    )


def js_property_order(d: dict[str, Any]) -> dict[str, Any]:
    """Return `d` with its keys in the order a JS object with these insertions would list them.

    Array-index keys come first in ascending numeric order, then the others in insertion order.
    Returns `d` itself when the order is already right.
    """
    idx = [k for k in d if is_array_index(k)]
    if not idx:
        return d
    idx.sort(key=int)
    out = {k: d[k] for k in idx}
    for k, v in d.items():
        if k not in out:
            out[k] = v
    return out


def utf16_key(s: str) -> bytes:
    """Sort key ordering strings by UTF-16 code units, like JavaScript's default sort.

    Python orders by code points; the two differ only when a string holds characters beyond
    U+FFFF (surrogate pairs in JS sort below U+E000..U+FFFF). UTF-16BE bytes compare exactly
    like the code-unit sequences.
    """
    return s.encode("utf-16-be", "surrogatepass")


def js_sorted_keys(d: dict[str, Any]) -> list[str]:
    """Keys of `d` sorted as JS `Object.keys(d).sort()` sorts them."""
    keys = list(d)
    for k in keys:
        if not k.isascii() and max(k) >= "\ud800":
            keys.sort(key=utf16_key)
            return keys
    keys.sort()  # code point order == UTF-16 order below U+D800
    return keys


# ---------------------------------------------------------------------------------------------
# JSON.parse


def _parse_int(s: str) -> int:
    # JSON ints are doubles in JS: beyond 2**53 they round to the nearest double
    if len(s) < 16:
        return int(s)
    v = int(s)
    if -_MAX_SAFE < v < _MAX_SAFE:
        return v
    return int(float(s))


def _parse_float(s: str) -> int | float:
    f = float(s)
    if f.is_integer():
        return int(f)  # integral values as int (-0 becomes 0: JS prints it as 0 anyway)
    return f  # non-integral, or +-inf for out-of-range literals like 1e400


def _parse_constant(name: str) -> None:
    raise ValueError(f"invalid JSON token {name!r} (JSON.parse rejects it)")


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # dict(pairs) already keeps the first position and the last value of a duplicate key
    d = dict(pairs)
    for k, _ in pairs:
        if k[:1].isdigit():
            return js_property_order(d)
    return d


# Full decoder: JS key order and rounding of long integers, at the cost of Python hooks.
_decoder = json.JSONDecoder(
    object_pairs_hook=_object_pairs,
    parse_float=_parse_float,
    parse_int=_parse_int,
    parse_constant=_parse_constant,
    strict=True,
)
# Fast decoder: dicts built in C. Right whenever no key is all digits (only those can need
# reordering); `_PARSE_NEEDS_FULL` finds such keys (false positives only cost time).
_fast_decoder = json.JSONDecoder(
    parse_float=_parse_float, parse_int=_parse_int, parse_constant=_parse_constant, strict=True
)
_PARSE_NEEDS_FULL = re.compile(r'"[0-9]+"[ \t\n\r]*:')


def js_parse(text: str | bytes) -> JsValue:
    """Parse JSON text with `JSON.parse` semantics.

    Numbers become doubles: integral values are returned as `int` (rounded through a double),
    others as `float`. Objects are dicts in JS property order (array-index keys first,
    ascending, then insertion order; a duplicate key keeps its first position and last value).
    Raises `ValueError` (json.JSONDecodeError) on invalid input.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text).decode("utf-8")
    if _PARSE_NEEDS_FULL.search(text) is None:
        return _fast_decoder.decode(text)
    return _decoder.decode(text)


# ---------------------------------------------------------------------------------------------
# JSON.stringify

_c_dumps: Callable[[Any], str] = json.JSONEncoder(
    ensure_ascii=False, check_circular=False, allow_nan=False, separators=(",", ":")
).encode

_LONG_DIGITS = re.compile(r"[0-9]{16,}")
_DIGIT_KEY = re.compile(r'"[0-9]+":')


def json_structure(out: str) -> str:
    """The text of JSON `out` outside its strings (numbers, literals, punctuation; `"` per string)."""
    # drop escaped backslashes and quotes so that every remaining `"` delimits a string
    plain = out.replace("\\\\", "").replace('\\"', "") if "\\" in out else out
    # each string leaves one `"` behind, so `["a"]` stays distinct from `[]`
    return '"'.join(plain.split('"')[0::2])


def c_output_is_js(out: str) -> bool:
    """True if the C encoder's output `out` is already what JSON.stringify writes for the value.

    It differs only for lone surrogates, floats (Python repr), ints of 16+ digits (may exceed 2**53)
    and all-digit keys (JS may reorder). Checked with C-speed string operations; false
    negatives only cost the slow path. Also used for sorted output (then digit keys are harmless
    but still reported).
    """
    if not out.isascii() and _SURROGATE.search(out):
        return False
    if _DIGIT_KEY.search(out):  # raw `"` only delimits strings, so `"digits":` is always a key
        return False
    return numbers_print_like_js(json_structure(out))


def numbers_print_like_js(structure: str) -> bool:
    """True if the numbers in `structure` (see `json_structure`) are as JS prints them.

    Python writes ints exactly and floats with '.' or a signed exponent; JS agrees on ints
    below 2**53 and on nothing else.
    """
    if "." in structure or "e+" in structure or "e-" in structure:
        return False
    for m in _LONG_DIGITS.finditer(structure):
        if int(m.group()) >= _MAX_SAFE:
            return False
    return True


_SURROGATE = re.compile(r"[\ud800-\udfff]")
_SURROGATE_PAIR_OR_LONE = re.compile(r"[\ud800-\udbff][\udc00-\udfff]|[\ud800-\udfff]")


def _fix_surrogates(m: re.Match[str]) -> str:
    s = m.group()
    if len(s) == 2:  # a well-formed pair split into two code points: JS writes the character
        return s.encode("utf-16-be", "surrogatepass").decode("utf-16-be")
    return "\\u%04x" % ord(s)


def utf8_like_node(s: str) -> bytes:
    """UTF-8 bytes of `s` as Node's `update(s, 'utf8')` makes them (lone surrogates become U+FFFD)."""
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError:
        # pairs split into two code points are one character in JS; the rest are lone
        joined = s.encode("utf-16-be", "surrogatepass").decode("utf-16-be", "surrogatepass")
        return _SURROGATE.sub("\ufffd", joined).encode("utf-8")


def js_quote(s: str) -> str:
    """`JSON.stringify(s)` for a string: JS escaping, lone surrogates as `\\udxxx`."""
    q: str = _c_encode_basestring(s)  # same escapes as JS for everything but surrogates
    if not q.isascii() and _SURROGATE.search(q):
        q = _SURROGATE_PAIR_OR_LONE.sub(_fix_surrogates, q)
    return q


def js_stringify(value: JsValue) -> str:
    """Return exactly what `JSON.stringify(value)` returns in JavaScript (no indentation).

    Dict keys are emitted in JS property order; numbers as JS prints them; non-finite numbers
    as `null`. Raises `TypeError` for values JSON cannot hold.
    """
    if type(value) is dict or type(value) is list:
        try:
            out = _c_dumps(value)
        except ValueError:  # NaN or an infinity: JS writes null, the slow path handles it
            pass
        else:
            if c_output_is_js(out):
                return out
    parts: list[str] = []
    _encode(value, parts.append)
    return "".join(parts)


def _encode(v: Any, w: Callable[[str], Any]) -> None:
    t = type(v)
    if t is str:
        w(js_quote(v))
    elif t is dict:
        d = js_property_order(v)
        w("{")
        first = True
        for k, x in d.items():
            if not isinstance(k, str):
                raise TypeError(f"object keys must be strings, got {type(k).__name__}")
            if first:
                first = False
            else:
                w(",")
            w(js_quote(k))
            w(":")
            _encode(x, w)
        w("}")
    elif t is list or t is tuple:
        w("[")
        first = True
        for x in v:
            if first:
                first = False
            else:
                w(",")
            _encode(x, w)
        w("]")
    elif v is None:
        w("null")
    elif v is True:
        w("true")
    elif v is False:
        w("false")
    elif t is int or t is float:
        if t is float and (v != v or v in (_INF, _NINF)):
            w("null")  # JSON.stringify writes non-finite numbers as null
        else:
            w(js_number_to_string(v))
    elif isinstance(v, str):
        _encode(str(v), w)
    elif isinstance(v, dict):
        _encode(dict(v), w)
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        _encode(int(v) if isinstance(v, int) else float(v), w)
    else:
        raise TypeError(f"JSON.stringify cannot encode {t.__name__}")
