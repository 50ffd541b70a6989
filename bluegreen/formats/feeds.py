"""Data-feed keys of ocore's key-value store (string_utils.js, migrate_to_kv.js).

Per `data_feeds` row (joined with its unit and author) ocore writes, in this order:
`df\\n<address>\\n<feed>\\ns\\n<value>\\n<mci>` -> unit (string values),
`df\\n<address>\\n<feed>\\nn\\n<encoded number>\\n<mci>` -> unit (values that read as numbers),
`dfv\\n<address>\\n<feed>\\n<mci>` -> `<value>\\n<unit>`.
"""

from __future__ import annotations

import math
import re
import struct

from bluegreen.formats.jsvalues import js_number_to_string

__all__ = ["data_feed_entries", "encode_double_lexicographic", "encode_mci", "get_numeric_feed_value"]

_MAX_MCI = 0xFFFFFFFF
# JS regex semantics: \d is ASCII only and `$` does not accept a trailing newline (use fullmatch)
_NUMERIC = re.compile(r"[+-]?([0-9]+(\.[0-9]+)?)([eE][+-]?([0-9]+))?")


def encode_mci(mci: int | None) -> str:
    """`encodeMci`: `0xFFFFFFFF - mci` as 8 lowercase hex digits (so the newest sorts first).

    `None` counts as 0, as JavaScript's `0xFFFFFFFF - null` does.
    """
    m = 0 if mci is None else mci
    if not 0 <= m <= _MAX_MCI:
        raise ValueError(f"main chain index out of range: {mci!r}")
    return format(_MAX_MCI - m, "08x")


def get_numeric_feed_value(value: str) -> float | None:
    """`getNumericFeedValue(value)`: the number a feed string reads as, or None to keep it a string.

    Accepts `[+-]digits[.digits][e[+-]digits]` with at most 15 mantissa characters; refuses values
    out of the double range (overflow, or underflow to 0 of a non-zero mantissa). `-0` becomes 0.
    """
    if not isinstance(value, str):
        raise TypeError(f"getNumericFeedValue of not a string: {value!r}")
    m = _NUMERIC.fullmatch(value)
    if m is None:
        return None
    f = float(value)  # same correctly rounded result as JS parseFloat for this grammar
    if not math.isfinite(f):
        return None
    mantissa, abs_exp = m.group(1), m.group(4)
    if f == 0 and float(mantissa) > 0 and abs_exp is not None and int(abs_exp) > 0:
        return None  # underflow such as 1.23e-700
    if len(mantissa) > 15:  # counts the point and leading zeros too, as ocore does
        return None
    return 0.0 if f == 0 else f


def encode_double_lexicographic(f: float) -> str:
    """`encodeDoubleInLexicograpicOrder`: 16 hex digits whose string order is the numeric order."""
    f = float(f)
    if f == 0:
        f = 0.0  # one zero: -0 encodes as +0
    b = bytearray(struct.pack(">d", f))
    if f >= 0:
        b[0] ^= 0x80
    else:  # negatives (and NaN, as in JS where NaN >= 0 is false): flip every bit
        b = bytearray(x ^ 0xFF for x in b)
    return b.hex()


def data_feed_entries(
    address: str,
    feed_name: str,
    value: str | None,
    int_value: int | float | None,
    mci: int | None,
    unit: str,
) -> list[tuple[str, str]]:
    """The (key, value) puts ocore's migration makes for one joined `data_feeds` row, in its order.

    `value` is the string column, `int_value` the numeric one (exactly one is normally set).
    Later rows overwrite earlier ones in the store; the caller applies them in rowid order.
    """
    str_mci = encode_mci(mci)
    prefix = f"df\n{address}\n{feed_name}\n"
    out: list[tuple[str, str]] = []
    if value is not None:
        out.append((f"{prefix}s\n{value}\n{str_mci}", unit))
        num = get_numeric_feed_value(value)
        if num is not None:
            out.append((f"{prefix}n\n{encode_double_lexicographic(num)}\n{str_mci}", unit))
        text = value
    else:
        # ocore encodes int_value as a JS number; a row with both columns NULL encodes null as 0
        # and stores the text "null" (Buffer.writeDoubleBE(null) writes 0)
        out.append((f"{prefix}n\n{encode_double_lexicographic(0.0 if int_value is None else int_value)}\n{str_mci}", unit))
        text = "null" if int_value is None else js_number_to_string(int_value)
    out.append((f"dfv\n{address}\n{feed_name}\n{str_mci}", f"{text}\n{unit}"))
    return out
