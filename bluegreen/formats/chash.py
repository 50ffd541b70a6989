"""ocore's checksummed hashes (chash.js): 160-bit addresses in base32, 288-bit in base64.

A chash is a truncated hash (RIPEMD-160 minus its first 4 bytes, or SHA-256) with 32 checksum
bits (bytes 5, 13, 21, 29 of the SHA-256 of the clean data) interleaved at offsets taken from the
digits of pi.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from bluegreen.formats.jsvalues import utf8_like_node
from bluegreen.formats.source_string import get_json_source_string, get_source_string

__all__ = ["definition_address", "get_chash160", "get_chash288", "is_chash_valid"]

_PI = "14159265358979323846264338327950288419716939937510"


def _offsets(length: int) -> tuple[int, ...]:
    """Bit positions of the 32 checksum bits in a chash of `length` bits."""
    out: list[int] = []
    offset = 0
    for ch in _PI:
        rel = int(ch)
        if rel == 0:
            continue
        offset += rel + (4 if length == 288 else 0)
        if offset >= length:
            break
        out.append(offset)
    if len(out) != 32:  # pragma: no cover - a property of the constants
        raise AssertionError("wrong number of checksum bits")
    return tuple(out)


_OFFSETS = {160: _offsets(160), 288: _offsets(288)}


def _ripemd160(data: bytes) -> bytes:
    return hashlib.new("ripemd160", data).digest()


def _checksum(clean: bytes) -> bytes:
    h = hashlib.sha256(clean).digest()
    return bytes((h[5], h[13], h[21], h[29]))


def _to_bits(b: bytes) -> str:
    return bin(int.from_bytes(b, "big"))[2:].zfill(len(b) * 8)


def _from_bits(bits: str) -> bytes:
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


def _chash(data: str, length: int) -> bytes:
    raw = utf8_like_node(data)  # as Node encodes the string
    clean = _ripemd160(raw)[4:] if length == 160 else hashlib.sha256(raw).digest()
    clean_bits = _to_bits(clean)
    check_bits = _to_bits(_checksum(clean))
    parts: list[str] = []
    start = 0
    for i, offset in enumerate(_OFFSETS[length]):
        end = offset - i  # position in the clean data where checksum bit i goes
        parts.append(clean_bits[start:end])
        parts.append(check_bits[i])
        start = end
    parts.append(clean_bits[start:])
    return _from_bits("".join(parts))


def get_chash160(source: str) -> str:
    """`chash.getChash160(source)`: 32-character base32 chash of a string (an address)."""
    return base64.b32encode(_chash(source, 160)).decode("ascii")


def get_chash288(source: str) -> str:
    """`chash.getChash288(source)`: 48-character base64 chash of a string."""
    return base64.b64encode(_chash(source, 288)).decode("ascii")


def is_chash_valid(encoded: str) -> bool:
    """True if `encoded` (32 base32 or 48 base64 characters) carries a correct checksum.

    ocore throws on other lengths; we return False so callers can report instead of crash.
    """
    try:
        if len(encoded) == 32:
            raw = base64.b32decode(encoded)
        elif len(encoded) == 48:
            raw = base64.b64decode(encoded, validate=True)
        else:
            return False
    except (binascii.Error, ValueError):
        return False
    bits = _to_bits(raw)
    offsets = _OFFSETS[len(bits)]
    checksum = "".join(bits[o] for o in offsets)
    taken = set(offsets)
    clean = "".join(b for i, b in enumerate(bits) if i not in taken)
    return _to_bits(_checksum(_from_bits(clean))) == checksum


def definition_address(definition: Any) -> str:
    """The address of a definition: `object_hash.getChash160(definition)`.

    Autonomous-agent definitions (`['autonomous agent', {...}]`) hash their JSON source string,
    all others the classic source string.
    """
    is_aa = isinstance(definition, list) and len(definition) == 2 and definition[0] == "autonomous agent"
    source = get_json_source_string(definition) if is_aa else get_source_string(definition)
    return get_chash160(source)
