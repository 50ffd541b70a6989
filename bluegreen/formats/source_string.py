"""ocore's canonical strings of objects (string_utils.js): what unit, ball and address hashes hash.

- `get_source_string`: the classic form, components joined by NUL (`getSourceString`).
- `get_json_source_string`: JSON with keys sorted by UTF-16 code units and every surrogate code unit
  escaped (`getJsonSourceString`), used from unit version 2 on.

Both refuse what ocore refuses (null, empty arrays/objects, non-finite numbers; the classic form
also NUL inside strings and keys) with `SourceStringError`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from bluegreen.formats.jsvalues import js_number_to_string, js_quote, js_sorted_keys, js_stringify, json_structure, numbers_print_like_js

__all__ = ["SourceStringError", "get_json_source_string", "get_source_string"]

_NUL = "\x00"


class SourceStringError(ValueError):
    """The object cannot be turned into ocore's canonical string (ocore throws on it too)."""


def _show(obj: Any) -> str:
    """A short JSON rendering of `obj` for error messages."""
    try:
        text = js_stringify(obj)
    except (TypeError, ValueError, RecursionError):
        text = repr(obj)
    return text if len(text) <= 300 else text[:300] + "..."


# ---------------------------------------------------------------------------------------------
# classic: getSourceString


def get_source_string(obj: Any) -> str:
    """Return ocore's `getSourceString(obj)`.

    Strings give `s`,value; numbers `n`,JS text; booleans `b`,`true|false`; arrays `[`,items,`]`;
    objects each key (sorted by UTF-16 code units) followed by its value; all joined by NUL.
    """
    parts: list[str] = []
    _extract(obj, obj, parts.append)
    return _NUL.join(parts)


def _extract(v: Any, root: Any, w: Callable[[str], Any]) -> None:
    t = type(v)
    if t is str:
        if _NUL in v:
            raise SourceStringError(f"00 byte in string value in {_show(root)}")
        w("s")
        w(v)
    elif t is dict:
        if not v:
            raise SourceStringError(f"empty object in {_show(root)}")
        for k in js_sorted_keys(v):
            if _NUL in k:
                raise SourceStringError(f"00 byte in object key in {_show(root)}")
            w(k)
            _extract(v[k], root, w)
    elif t is list or t is tuple:
        if not v:
            raise SourceStringError(f"empty array in {_show(root)}")
        w("[")
        for x in v:
            _extract(x, root, w)
        w("]")
    elif v is None:
        raise SourceStringError(f"null value in {_show(root)}")
    elif v is True:
        w("b")
        w("true")
    elif v is False:
        w("b")
        w("false")
    elif t is int:
        w("n")
        w(js_number_to_string(v))
    elif t is float:
        if not math.isfinite(v):
            raise SourceStringError(f"invalid number: {js_number_to_string(v)}")
        w("n")
        w(js_number_to_string(v))
    elif isinstance(v, (str, dict, int, float)):  # subclasses: treat as the base type
        base = next(b for b in (str, dict, int, float) if isinstance(v, b))
        _extract(base(v), root, w)
    else:
        raise SourceStringError(f"getSourceString: unknown type={t.__name__} of {v!r}")


# ---------------------------------------------------------------------------------------------
# JSON based: getJsonSourceString

_c_sorted_dumps: Callable[[Any], str] = json.JSONEncoder(
    ensure_ascii=False, check_circular=False, allow_nan=False, sort_keys=True, separators=(",", ":")
).encode

# non-BMP characters and surrogates are escaped as code units and sort differently in UTF-16
_NEEDS_UNITS = re.compile(r"[\ud800-\udfff\U00010000-\U0010ffff]")


def _sorted_output_is_source_string(out: str) -> bool:
    """True if the C encoder's sorted output is exactly getJsonSourceString (and ocore accepts it)."""
    if not out.isascii() and _NEEDS_UNITS.search(out):
        return False
    structure = json_structure(out)
    if "null" in structure or "[]" in structure or "{}" in structure:
        return False  # ocore refuses these: let the slow path raise
    return numbers_print_like_js(structure)


_ESCAPE_UNITS = re.compile(r"[\ud800-\udfff\U00010000-\U0010ffff]")


def _escape_units(m: re.Match[str]) -> str:
    b = m.group().encode("utf-16-be", "surrogatepass")
    return "".join("\\u%02x%02x" % (b[i], b[i + 1]) for i in range(0, len(b), 2))


def _json_src_quote(s: str) -> str:
    # JSON.stringify, then every surrogate code unit (paired or not) as \uXXXX, as ocore does
    q = js_quote(s)
    if q.isascii():
        return q
    return _ESCAPE_UNITS.sub(_escape_units, q)


def get_json_source_string(obj: Any, allow_empty: bool = False) -> str:
    """Return ocore's `getJsonSourceString(obj, allow_empty)`.

    Like JSON.stringify with object keys sorted by UTF-16 code units, numbers as JS prints them and
    every surrogate code unit escaped as `\\uXXXX` (lowercase hex).
    """
    if type(obj) is dict or type(obj) is list:
        try:
            out = _c_sorted_dumps(obj)
        except ValueError:  # non-finite number: the slow path raises ocore's error
            pass
        else:
            if _sorted_output_is_source_string(out):
                return out
    return _json_src(obj, obj, allow_empty)


def _json_src(v: Any, root: Any, allow_empty: bool) -> str:
    t = type(v)
    if t is str:
        return _json_src_quote(v)
    if t is dict:
        if not v and not allow_empty:
            raise SourceStringError(f"empty object in {_show(root)}")
        return (
            "{"
            + ",".join(_json_src_quote(k) + ":" + _json_src(v[k], root, allow_empty) for k in js_sorted_keys(v))
            + "}"
        )
    if t is list or t is tuple:
        if not v and not allow_empty:
            raise SourceStringError(f"empty array in {_show(root)}")
        return "[" + ",".join(_json_src(x, root, allow_empty) for x in v) + "]"
    if v is None:
        raise SourceStringError(f"null value in {_show(root)}")
    if v is True:
        return "true"
    if v is False:
        return "false"
    if t is int:
        return js_number_to_string(v)
    if t is float:
        if not math.isfinite(v):
            raise SourceStringError(f"invalid number: {js_number_to_string(v)}")
        return js_number_to_string(v)
    for base in (str, dict, int, float):
        if isinstance(v, base):
            return _json_src(base(v), root, allow_empty)
    raise SourceStringError(f"getJsonSourceString: unknown type={t.__name__} of {v!r}")
