"""Addresses and sizes: the forms docs/numbers.md accepts, and the YAML 1.1 traps it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from gpa_plan.check.run import check_file, load_layout
from gpa_plan.cli import cli
from gpa_plan.layout.errors import LayoutError
from gpa_plan.layout.loader import load_text
from gpa_plan.layout.numbers import NumberError, coerce_number, parse_number
from gpa_plan.layout.validate import validate_layout
from gpa_plan.printable import printable

SELFTESTS = Path(__file__).parent.parent / "layouts" / "selftests-arm64.yaml"

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
        ("4kib", 4 * KiB),
        ("4KIB", 4 * KiB),
        ("4m", 4 * MiB),
        ("0B1000", 8),
        ("0x0000_0000_0000_0000_0001", 1),
        ("4 K", 4 * KiB),
        ("2M", 2 * MiB),
        ("1G", GiB),
        ("1T", TiB),
        ("1P", PiB),
        ("1.5K", 1536),
        ("0.5M", 512 * KiB),
        ("1.5G", 3 * GiB // 2),
        ("0.000_976_562_5M", KiB),
        ("1.50000G", 3 * GiB // 2),
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
        ("-1", "has a sign"),
        ("-4K", "has a sign"),
        ("-0", "has a sign"),
        ("+0", "has a sign"),
        ("+8K", "has a sign"),
        ("1.1K", "not a whole number of bytes"),
        ("0.3K", "not a whole number of bytes"),
        ("1.5", "not a whole number of bytes: a fraction needs a unit"),
        ("2.0", "not a whole number of bytes: a fraction needs a unit"),
        ("0b", "has no digits after 0b"),
        ("0B", "has no digits after 0B"),
        ("0x", "has no digits after 0x"),
        ("0b12", "0b needs binary digits"),
        ("0x1K", "0x needs hex digits"),
        ("4KB", "'KB' looks like a decimal unit, .* write 4K or 4KiB"),
        ("4kB", "'kB' looks like a decimal unit, .* write 4K or 4KiB"),
        ("4MB", r"binary \(1M is 1,048,576 bytes\); write 4M or 4MiB"),
        ("1.5gb", "write 1.5G or 1.5GiB"),
        ("4TB", "write 4T or 4TiB"),
        ("4pb", "write 4P or 4PiB"),
        ("4096B", "'B' is not a unit \\(a plain number is already bytes\\)"),
        ("4iB", "'iB' is not a unit"),
        ("0x1_0000_0000_0000_0000", "does not fit in 64 bits"),
        ("18446744073709551616", "does not fit in 64 bits"),
        ("16384P", "does not fit in 64 bits"),
        ("4X", "not a number"),
        ("1e3", "not a number"),
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
        ("1.5G", 3 * GiB // 2),
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
        ("-4096", "`size` of memslot 'ram': '-4096' has a sign: addresses, sizes and counts"),
        ("-0", "`size` of memslot 'ram': '-0' has a sign"),
        ("+8K", "`size` of memslot 'ram': '+8K' has a sign"),
        ("0b", "`size` of memslot 'ram': '0b' has no digits after 0b"),
        ("4MB", "`size` of memslot 'ram': '4MB': 'MB' looks like a decimal unit"),
        ("1.5", "`size` of memslot 'ram': '1.5' is not a whole number of bytes"),
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


# --- beyond 64 bits, however many digits -------------------------------------------------------

# More digits than Python converts with int() (4,300), which once ended as "internal error:
# ValueError" with no position.
HUGE = "9" * 5000


@pytest.mark.parametrize(
    "text", [HUGE, f"{HUGE}K", f"0x{'f' * 5000}", f"0b{'1' * 5000}", f"{HUGE}.5K", f"1{HUGE}_0"]
)
def test_a_number_of_thousands_of_digits_does_not_fit_in_64_bits(text: str) -> None:
    with pytest.raises(NumberError, match=r"\(\d+ characters\) does not fit in 64 bits"):
        parse_number(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0x" + "0" * 5000 + "1000", 0x1000),
        ("0b" + "0_" * 5000 + "1", 1),
        ("1." + "0" * 5000 + "K", KiB),
        ("0." + "5" + "0" * 5000 + "K", 512),
    ],
)
def test_leading_zeros_and_trailing_decimal_zeros_do_not_count(text: str, value: int) -> None:
    assert parse_number(text) == value


def test_a_fraction_of_thousands_of_digits_is_not_whole_bytes() -> None:
    with pytest.raises(NumberError, match="not a whole number of bytes"):
        parse_number("1." + "1" * 5000 + "K")


def test_a_refused_number_is_quoted_by_its_ends_not_in_full() -> None:
    with pytest.raises(NumberError) as err:
        parse_number(HUGE)
    assert str(err.value) == (
        "'9999999999999999'...'99999999' (5000 characters) does not fit in 64 bits"
    )


def test_coerce_describes_a_huge_python_int_by_its_size() -> None:
    with pytest.raises(NumberError, match="a 16610-bit integer does not fit in 64 bits"):
        coerce_number(10**5000)


HUGE_FIELDS = [
    ("pa_bits: {n}", "`pa_bits`"),
    ("page_size: {n}", "`page_size`"),
    ("guest_page_size: {n}", "`guest_page_size`"),
    ("memslots:\n  - {{name: r, base: 0, size: {n}}}", "`size` of memslot 'r'"),
    ("memslots:\n  - {{name: r, base: {n}, size: 4K}}", "`base` of memslot 'r'"),
    ("memslots:\n  - {{name: r, base: 0, size: 4K, slot: {n}}}", "`slot` of memslot 'r'"),
    ("memslots:\n  - {{name: r, base: 0, size: 4K, as_id: {n}}}", "`as_id` of memslot 'r'"),
    ("memslots:\n  - {{name: r, base: auto, size: 4K, align: {n}}}", "`align` of memslot 'r'"),
    (
        "memslots:\n  - {{name: r, base: auto, size: 4K, within: [0, {n}]}}",
        "`within` of memslot 'r'",
    ),
    (
        "devices:\n  - {{name: g, type: vgic-v3-redist, base: 0, vcpus: {n}}}",
        "`vcpus` of device 'g'",
    ),
    ("devices:\n  - {{name: u, type: mmio, base: 0, size: {n}}}", "`size` of device 'u'"),
    ("reserved:\n  - {{name: h, base: {n}, size: 4K}}", "`base` of reserved range 'h'"),
]


@pytest.mark.parametrize(("field", "subject"), HUGE_FIELDS)
def test_a_huge_integer_in_any_numeric_field_is_refused_at_its_position(
    tmp_path: Path, field: str, subject: str
) -> None:
    path = tmp_path / "huge.yaml"
    text = "layout: 1\narch: arm64\n" + field.format(n=HUGE) + "\n"
    path.write_text(text)
    last = text.splitlines()[-1]
    (result,) = check_file(path)
    (finding,) = result.findings
    assert (finding.rule, finding.line, finding.column) == (
        "schema",
        len(text.splitlines()),
        last.index(HUGE) + 1,
    )
    assert finding.message == (
        f"{subject}: '9999999999999999'...'99999999' (5000 characters) does not fit in 64 bits"
    )


def test_a_huge_layout_version_is_refused_at_its_position(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text(f"layout: {HUGE}\narch: arm64\n")
    (result,) = check_file(path)
    assert [(f.line, f.column, f.message[:10]) for f in result.findings] == [(1, 9, "`layout`: ")]


def test_a_huge_value_in_a_text_field_is_shown_by_its_ends(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text(f"layout: 1\narch: {HUGE}\n")
    (result,) = check_file(path)
    (finding,) = result.findings
    assert finding.message == (
        "`arch` must be arm64, x86_64, riscv64 or loongarch64, not "
        "'9999999999999999'...'99999999' (5000 characters)"
    )


# --- one grammar for files and the command line -----------------------------------------------

WRITTEN = st.text(alphabet="0123456789xXbBkKmMgGiI_.+-", min_size=1, max_size=10).filter(
    lambda s: s[0] not in "._" and not s.startswith("- ")
)


@settings(max_examples=150, deadline=None)
@given(WRITTEN)
def test_a_layout_and_the_command_line_read_a_number_alike(written: str) -> None:
    try:
        expected: int | str = parse_number(written)
    except NumberError as err:
        expected = f"`size` of memslot 'r': {err}"
    text = f"layout: 1\narch: arm64\nmemslots:\n  - {{name: r, base: 0, size: {written}}}\n"
    try:
        got: int | str = validate_layout(load_text(text, "n.yaml")).memslots[0].size
    except LayoutError as err:
        (problem,) = err.problems
        got = problem.message
    assert got == expected
    assert cli_number(written) == expected


def cli_number(written: str) -> int | str:
    """What `import --page-size` makes of ``written``: the value, or the reason it refused."""
    from gpa_plan.cli import _size

    try:
        return _size(written, "--page-size")
    except click.BadParameter as err:
        return f"`size` of memslot 'r': {err.message}"


@pytest.mark.parametrize("written", ["0b", "-0", "+8K", "4MB", "1.5", HUGE, f"0x{'f' * 5000}"])
def test_explain_refuses_an_address_as_a_layout_does(written: str) -> None:
    result = CliRunner().invoke(cli, ["explain", str(SELFTESTS), "--", written])
    with pytest.raises(NumberError) as err:
        parse_number(written)
    assert result.exit_code == 2
    assert f"Invalid value for ADDR: {err.value}" in result.stderr
    assert "internal error" not in result.stderr


def test_import_refuses_a_huge_page_size_as_a_usage_error(tmp_path: Path) -> None:
    source = tmp_path / "mtree.txt"
    source.write_text("")
    result = CliRunner().invoke(cli, ["import", "qemu-mtree", str(source), "--page-size", HUGE])
    assert result.exit_code == 2
    assert "Invalid value for --page-size: '9999999999999999'...'99999999'" in result.stderr
    assert "does not fit in 64 bits" in result.stderr


@pytest.mark.parametrize(
    "written",
    [
        "4096",
        "0x1000",
        "0b1000",
        "4K",
        "4 kib",
        "1.5G",
        "0x",
        "0b",
        "-0",
        "+8K",
        "4MB",
        "4096B",
        "1.5",
        "010",
        "04K",
        "0x1K",
        "4\tK",
        " 4K ",
        "4\x1cK",
        "4\u3000K",
        "\u00a04K",
    ],
)
def test_the_json_schema_pattern_accepts_the_forms_the_parser_accepts(written: str) -> None:
    import re

    from gpa_plan.layout.models import _NUMBER_TEXT

    try:
        parse_number(written)
        accepted = True
    except NumberError:
        accepted = False
    assert (re.search(_NUMBER_TEXT, written) is not None) == accepted


@pytest.mark.parametrize(
    "written",
    ["4\x1cK", "4\u3000K", "4\u00a0K", "\u20284K", "4K\x85", "4\nK", "\x1f4096", "4096\x0b"],
    ids=["fs", "ideographic", "nbsp", "line-separator", "nel", "newline", "us", "vt"],
)
def test_only_spaces_and_tabs_may_stand_around_a_number(written: str) -> None:
    # str.strip() and \s read these as spaces: a control character inside a number passed.
    with pytest.raises(NumberError, match="is not a number") as err:
        parse_number(written)
    assert printable(str(err.value)) == str(err.value)
    assert cli_number(written) == f"`size` of memslot 'r': {err.value}"
    text = (
        "layout: 1\narch: arm64\nmemslots:\n"
        f"  - {{name: r, base: 0, size: {json.dumps(written)}}}\n"
    )
    with pytest.raises(LayoutError) as refused:
        validate_layout(load_text(text, "n.yaml"))
    (problem,) = refused.value.problems
    assert (problem.line, problem.column) == (4, 30)
    assert problem.message == f"`size` of memslot 'r': {err.value}"


@pytest.mark.parametrize("written", [" 4K", "4K\t", "4 \tK", "\t0x1000 "])
def test_spaces_and_tabs_around_a_number_are_read_over(written: str) -> None:
    assert parse_number(written) == 4096


@pytest.mark.parametrize("written", ["::error::x", "0x10:20", "fe80::1", "1:", "1:75"])
def test_only_base_60_forms_are_called_base_60(written: str) -> None:
    # Any value holding a colon was called a YAML 1.1 base-60 number.
    with pytest.raises(NumberError, match="is not a number") as err:
        parse_number(written)
    assert "base-60" not in str(err.value)


@pytest.mark.parametrize("written", ["1:30", "190:20:30", "1_0:05", "190:20:30.15"])
def test_base_60_forms_are_refused_as_such(written: str) -> None:
    with pytest.raises(NumberError, match=r"is a YAML 1\.1 base-60 number"):
        parse_number(written)
