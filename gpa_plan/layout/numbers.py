"""Addresses and sizes as layout files and the command line write them: one grammar for both.

Accepted (``docs/numbers.md`` has the grammar with examples):

* integers: decimal ``4096``, hex ``0x1000``, binary ``0b1000``, with ``_`` between digits as
  you like (``0x4000_0000``);
* sizes with a binary unit: ``K``, ``M``, ``G``, ``T``, ``P`` are powers of 1024, written in
  either case, alone or followed by ``iB`` (``4K``, ``4k``, ``64KiB``, ``2M``, ``1T``); a
  fraction of a unit when it comes out as whole bytes (``1.5G``, ``0.5M``).

Refused, each with the reason: a sign (``-0``, ``+8K``: everything is unsigned), values that
do not fit in 64 bits, fractions that are not whole bytes (``0.3K``) or have no unit
(``1.5``), ``0x`` or ``0b`` with no digits, decimal-looking units (``4KB``, ``4MB``, ``4kB``:
gpa-plan's units are binary, so ``4M`` or ``4MiB`` says what is meant), a bare ``B``, and YAML
1.1's traps: leading-zero integers (``010`` is octal 8 to PyYAML) and base-60 forms (``1:30``).

Digit strings are never converted beyond what 64 bits need: the significant digits are
counted first, so a value of thousands of digits is refused at once, and within Python's
limit on int() conversions.
"""

from __future__ import annotations

import re

from gpa_plan.ranges import U64_LIMIT

_SCALES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
# The most significant digits a value below 2**64 can have, per base.
_MAX_DIGITS = {16: 16, 2: 64, 10: 20}
# With a unit of at most 2**50, a fraction that is whole bytes has at most 50 decimals once its
# trailing zeros are dropped: x / 10**d * 2**s is whole only if 5**d divides x (so x ends in 5
# and is odd) and d <= s.
_MAX_FRACTION_DIGITS = 50

_PREFIXED_RE = re.compile(r"0(?P<base>[xXbB])(?P<digits>.*)")
_DIGITS_RE = {16: re.compile(r"[0-9a-fA-F][0-9a-fA-F_]*"), 2: re.compile(r"[01][01_]*")}
_DEC_RE = re.compile(r"(?:0|[1-9][0-9_]*)")
_HEX_RE = re.compile(r"0[xX][0-9a-fA-F][0-9a-fA-F_]*")
# YAML 1.1's base-60 integers and floats (1:30, 190:20:30.15), which PyYAML resolves as numbers.
_SEXAGESIMAL_RE = re.compile(r"[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?")
_UNIT_RE = re.compile(
    r"(?P<whole>[0-9][0-9_]*)(?:\.(?P<fraction>[0-9][0-9_]*))?[ \t]*(?P<unit>[A-Za-z]*)"
)
_BINARY_UNIT_RE = re.compile(r"(?P<prefix>[KMGTP])(?:iB)?", re.IGNORECASE)
_DECIMAL_UNIT_RE = re.compile(r"[KMGTP]B", re.IGNORECASE)

HOW = "write an integer (4096, 0x1000, 0b1000) or a size with a binary unit (4K, 64KiB, 2M, 1G)"


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


def shown(text: str) -> str:
    """``text`` quoted for a message, its middle left out when it is long."""
    if len(text) <= 40:
        return repr(text)
    return f"{text[:16]!r}...{text[-8:]!r} ({len(text)} characters)"


def parse_number(text: str) -> int:
    """The byte count or address that ``text`` (a scalar's source text, or a command-line
    argument) stands for; raises NumberError saying why it is refused."""
    # Spaces and tabs only: str.strip() and \s also took line breaks, NEL, the C0 separators
    # and Unicode spaces, so a control character inside a number passed unnoticed.
    raw = text.strip(" \t")
    if raw[:1] in ("-", "+"):
        raise NumberError(
            f"{shown(raw)} has a sign: addresses, sizes and counts are unsigned, "
            "written without '-' or '+'"
        )
    if _SEXAGESIMAL_RE.fullmatch(raw):
        raise NumberError(
            f"{shown(raw)} is a YAML 1.1 base-60 number; write the value in decimal or hex"
        )
    if _HEX_RE.fullmatch(raw):  # the common case, first
        return _integer(raw, raw[2:], 16)
    prefixed = _PREFIXED_RE.fullmatch(raw)
    if prefixed is not None:
        base = 16 if prefixed["base"] in "xX" else 2
        return _prefixed(raw, prefixed["digits"], base)
    if _DEC_RE.fullmatch(raw):
        return _integer(raw, raw, 10)
    if re.fullmatch(r"0[0-9_]+", raw):
        raise NumberError(
            f"{shown(raw)} has a leading zero, which YAML 1.1 reads as octal; "
            "write it without the zero, or as hex (0x...)"
        )
    match = _UNIT_RE.fullmatch(raw)
    if match is None:
        raise NumberError(f"{shown(raw)} is not a number: {HOW}")
    return _with_unit(raw, match["whole"], match["fraction"], match["unit"])


def _prefixed(raw: str, digits: str, base: int) -> int:
    if not _DIGITS_RE[base].fullmatch(digits):
        if not digits:
            raise NumberError(f"{shown(raw)} has no digits after {raw}: {HOW}")
        kind = "hex digits (0x4000_0000)" if base == 16 else "binary digits (0b1000)"
        raise NumberError(f"{shown(raw)} is not a number: {raw[:2]} needs {kind}")
    return _integer(raw, digits, base)


def _integer(raw: str, digits: str, base: int) -> int:
    significant = digits.replace("_", "").lstrip("0")
    if len(significant) > _MAX_DIGITS[base]:
        raise NumberError(f"{shown(raw)} does not fit in 64 bits")
    return _fit(int(significant or "0", base), raw)


def _with_unit(raw: str, whole: str, fraction: str | None, unit: str) -> int:
    number = raw[: len(raw) - len(unit)].rstrip(" \t")
    whole = whole.replace("_", "")
    if re.match(r"0[0-9]", whole):
        raise NumberError(f"{shown(raw)} has a leading zero; write it without the zero")
    if _DECIMAL_UNIT_RE.fullmatch(unit):
        prefix = unit[0].upper()
        raise NumberError(
            f"{shown(raw)}: {unit!r} looks like a decimal unit, but gpa-plan's units are "
            f"binary (1{prefix} is {_SCALES[prefix]:,} bytes); write {number}{prefix} or "
            f"{number}{prefix}iB"
        )
    binary = _BINARY_UNIT_RE.fullmatch(unit)
    if unit and binary is None:
        hint = " (a plain number is already bytes)" if unit.upper() == "B" else ""
        raise NumberError(f"{shown(raw)} is not a number: {unit!r} is not a unit{hint}; {HOW}")
    if fraction is not None and binary is None:
        raise NumberError(
            f"{shown(raw)} is not a whole number of bytes: a fraction needs a unit (1.5K)"
        )
    if len(whole) > _MAX_DIGITS[10]:
        raise NumberError(f"{shown(raw)} does not fit in 64 bits")
    decimals = (fraction or "").replace("_", "").rstrip("0")
    if len(decimals) > _MAX_FRACTION_DIGITS:
        raise NumberError(f"{shown(raw)} is not a whole number of bytes")
    scale = _SCALES[binary["prefix"].upper()] if binary else 1
    value, remainder = divmod(int(whole + decimals) * scale, 10 ** len(decimals))
    if remainder:
        raise NumberError(f"{shown(raw)} is not a whole number of bytes")
    return _fit(value, raw)


def _fit(value: int, raw: str) -> int:
    if value >= U64_LIMIT:
        raise NumberError(f"{shown(raw)} does not fit in 64 bits")
    return value


def _decimal(value: int) -> str:
    # Python refuses to print an int of more than 4,300 digits in decimal (and it would bury
    # the message): such a value is shown by its size.
    if abs(value).bit_length() <= 128:
        return str(value)
    return f"a {abs(value).bit_length()}-bit {'negative ' if value < 0 else ''}integer"


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
            raise NumberError(f"{_decimal(value)} is negative; addresses and sizes are unsigned")
        if value >= U64_LIMIT:
            raise NumberError(f"{_decimal(value)} does not fit in 64 bits")
        return value
    if isinstance(value, str):
        return parse_number(value)
    if value is None:
        raise NumberError("null (an empty value) is not a number; give one")
    if isinstance(value, float):
        raise NumberError(
            f"{value!r} is a fraction; write a whole number of bytes or use a unit (1.5K)"
        )
    raise NumberError(f"expected a number, got {type(value).__name__}")
