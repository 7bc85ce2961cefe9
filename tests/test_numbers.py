"""Addresses and sizes: the forms SPEC section 1 accepts, and the YAML 1.1 traps it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpa_plan.check.run import check_file, load_layout
from gpa_plan.layout.numbers import NumberError, coerce_number, parse_number

KiB, MiB, GiB, TiB, PiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40, 1 << 50


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("4096", 4096),
        ("0x1000", 0x1000),
        ("0X1000", 0x1000),
        ("0x4000_0000", 1 << 30),
        ("0b1000", 8),
        ("1_000", 1000),
        ("4K", 4 * KiB),
        ("4k", 4 * KiB),
        ("4KiB", 4 * KiB),
        ("4KB", 4 * KiB),
        ("4 K", 4 * KiB),
        ("2M", 2 * MiB),
        ("1G", GiB),
        ("1T", TiB),
        ("1P", PiB),
        ("1.5K", 1536),
        ("0.5M", 512 * KiB),
        ("15P", 15 * PiB),
        ("0xffff_ffff_ffff_ffff", (1 << 64) - 1),
        ("18446744073709551615", (1 << 64) - 1),
    ],
)
def test_accepted_forms_give_the_byte_count(text: str, value: int) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("010", "leading zero"),
        ("09", "leading zero"),
        ("0_10", "leading zero"),
        ("04K", "leading zero"),
        ("1:30", "base-60"),
        ("-1", "negative"),
        ("-4K", "negative"),
        ("1.1K", "not a whole number of bytes"),
        ("1.5", "not a whole number of bytes"),
        ("0x1_0000_0000_0000_0000", "does not fit in 64 bits"),
        ("18446744073709551616", "does not fit in 64 bits"),
        ("16384P", "does not fit in 64 bits"),
        ("4X", "not a number"),
        ("1e3", "not a number"),
        ("0x", "not a number"),
        ("four", "not a number"),
        ("", "not a number"),
    ],
)
def test_refused_forms_say_why(text: str, words: str) -> None:
    with pytest.raises(NumberError, match=words):
        parse_number(text)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (True, "boolean"),
        (False, "boolean"),
        (-1, "negative"),
        (1 << 64, "does not fit in 64 bits"),
        (1.0, "fraction"),
        (None, "an empty value"),
        ([4096], "expected a number, got list"),
    ],
)
def test_coerce_refuses_values_that_are_not_unsigned_64_bit_numbers(
    value: object, words: str
) -> None:
    with pytest.raises(NumberError, match=words):
        coerce_number(value)


def test_coerce_passes_integers_and_parses_strings() -> None:
    assert coerce_number(0) == 0
    assert coerce_number((1 << 64) - 1) == (1 << 64) - 1
    assert coerce_number("64K") == 64 * KiB


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("4096", 4096),
        ("0x1000", 0x1000),
        ("0x4000_0000", 0x4000_0000),
        ("0b1_0000_0000_0000", 0x1000),
        ("64K", 64 * KiB),
        ("'64KiB'", 64 * KiB),
        ('"0x2000"', 0x2000),
        ("1.5M", 1536 * KiB),
        ("+8K", 8 * KiB),
    ],
)
def test_numbers_written_in_a_layout_load_as_that_many_bytes(
    tmp_path: Path, written: str, value: int
) -> None:
    path = tmp_path / "layout.yaml"
    path.write_text(
        "layout: 1\narch: arm64\nmemslots:\n"
        f"  - name: ram\n    base: 0x4000_0000\n    size: {written}\n"
    )
    assert load_layout(path).layout.memslots[0].size == value


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("010", "`size` of memslot 'ram': '010' has a leading zero"),
        ("'010'", "`size` of memslot 'ram': '010' has a leading zero"),
        ("1:30", "`size` of memslot 'ram': '1:30' is a YAML 1.1 base-60 number"),
        (
            "0x1_0000_0000_0000_0000",
            "`size` of memslot 'ram': '0x1_0000_0000_0000_0000' does not fit in 64 bits",
        ),
        ("-4096", "`size` of memslot 'ram': -4096 is negative"),
        ("1.1K", "`size` of memslot 'ram': '1.1K' is not a whole number of bytes"),
        ("yes", "`size` of memslot 'ram': true is a boolean"),
        ("off", "`size` of memslot 'ram': false is a boolean"),
        ("~", "`size` of memslot 'ram': null (an empty value) is not a number; give one"),
    ],
)
def test_numbers_refused_in_a_layout_point_at_the_value(
    tmp_path: Path, written: str, message: str
) -> None:
    path = tmp_path / "layout.yaml"
    path.write_text(
        "layout: 1\narch: arm64\nmemslots:\n"
        f"  - name: ram\n    base: 0x4000_0000\n    size: {written}\n"
    )
    (result,) = check_file(path)
    assert not result.valid
    (finding,) = result.findings
    assert (finding.rule, finding.line, finding.column) == ("schema", 6, 11)
    assert finding.message.startswith(message)
