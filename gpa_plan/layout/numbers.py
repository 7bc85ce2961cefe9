"""Addresses and sizes as layout files write them.

Accepted: YAML integers (``4096``, ``0x1000``, ``0x4000_0000``, ``0b1000``) and strings with a
binary unit (``4K``, ``64KiB``, ``2M``, ``1.5G``, ``1T``; K, M, G, T, P are powers of 1024 and an
optional ``iB`` or ``B`` suffix means the same). Refused: negatives, booleans, fractions that are
not whole bytes, values that do not fit in 64 bits, and YAML 1.1's traps: leading-zero integers
(``010`` is octal 8 to PyYAML) and base-60 forms (``1:30``).
"""

from __future__ import annotations

import re

U64_LIMIT = 1 << 64

_SCALES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_UNIT_RE = re.compile(
    r"(?P<num>[0-9][0-9_]*(?:\.[0-9_]+)?)\s*(?P<unit>[KMGTP]?)(?:iB|B)?", re.IGNORECASE
)
_HEX_RE = re.compile(r"0[xX][0-9a-fA-F][0-9a-fA-F_]*")
_BIN_RE = re.compile(r"0[bB][01][01_]*")
_DEC_RE = re.compile(r"(?:0|[1-9][0-9_]*)")


class NumberError(ValueError):
    """A value that is not a valid address or size; the message says why."""


class RejectedNumber(str):
    """The source text of a YAML integer gpa-plan refuses (``010``, ``1:30``, beyond 64 bits).

    The loader keeps it as text instead of failing on the spot, so the field it sits in
    reports ``reason`` together with every other problem of the file.
    """

    reason: str

    def __new__(cls, text: str, reason: str) -> RejectedNumber:
        self = super().__new__(cls, text)
        self.reason = reason
        return self


def refuse_rejected(value: object) -> object:
    """Pass ``value`` on, unless it is a RejectedNumber: then say why it was refused."""
    if isinstance(value, RejectedNumber):
        raise NumberError(value.reason)
    return value


def parse_number(text: str) -> int:
    """The byte count or address that ``text`` (a scalar's source text) stands for."""
    raw = text.strip()
    if raw.startswith("-"):
        raise NumberError(f"{raw!r} is negative; addresses and sizes are unsigned")
    if raw.startswith("+"):
        raw = raw[1:]
    if ":" in raw:
        raise NumberError(
            f"{raw!r} is a YAML 1.1 base-60 number; write the value in decimal or hex"
        )
    if _HEX_RE.fullmatch(raw):
        return _fit(int(raw.replace("_", ""), 16), raw)
    if _BIN_RE.fullmatch(raw):
        return _fit(int(raw.replace("_", ""), 2), raw)
    if _DEC_RE.fullmatch(raw):
        return _fit(int(raw.replace("_", "")), raw)
    if re.fullmatch(r"0[0-9_]+", raw):
        raise NumberError(
            f"{raw!r} has a leading zero, which YAML 1.1 reads as octal; "
            "write it without the zero, or as hex (0x...)"
        )
    match = _UNIT_RE.fullmatch(raw)
    if match is None:
        raise NumberError(
            f"{raw!r} is not a number: use an integer (4096, 0x1000) "
            "or a size with a binary unit (4K, 64KiB, 2M, 1G)"
        )
    num = match["num"].replace("_", "")
    if re.match(r"0[0-9]", num):
        raise NumberError(f"{raw!r} has a leading zero; write it without the zero")
    scale = _SCALES[match["unit"].upper()]
    if "." not in num:
        return _fit(int(num) * scale, raw)
    from fractions import Fraction  # only for sizes such as 1.5G

    value = Fraction(num) * scale
    if value.denominator != 1:
        raise NumberError(f"{raw!r} is not a whole number of bytes")
    return _fit(int(value), raw)


def _fit(value: int, raw: str) -> int:
    if value >= U64_LIMIT:
        raise NumberError(f"{raw!r} does not fit in 64 bits")
    return value


def coerce_number(value: object) -> int:
    """An int from a loaded YAML value (already strict for ints) or from a unit string."""
    if isinstance(value, bool):
        raise NumberError(
            f"{str(value).lower()} is a boolean, not a number (YAML reads true/false, yes/no "
            "and on/off as booleans)"
        )
    if isinstance(value, RejectedNumber):
        raise NumberError(value.reason)
    if isinstance(value, int):
        if value < 0:
            raise NumberError(f"{value} is negative; addresses and sizes are unsigned")
        return _fit(value, str(value))
    if isinstance(value, str):
        return parse_number(value)
    if value is None:
        raise NumberError("null (an empty value) is not a number; give one")
    if isinstance(value, float):
        raise NumberError(
            f"{value!r} is a fraction; write a whole number of bytes or use a unit (1.5K)"
        )
    raise NumberError(f"expected a number, got {type(value).__name__}")
