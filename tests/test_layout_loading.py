"""Bad layout files are refused with exit 1 and one ``file:line:col: error[rule] message`` line per
problem, placed at the offending value, never with a traceback.

Each ``tests/data/layouts/bad/NAME.yaml`` has its expected lines in
``tests/data/golden/check/NAME.txt``, checked through the library (``check_file``) and through the
command line, both run from ``tests/data/layouts`` so that the file names read ``bad/NAME.yaml``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpa_plan.check.run import check_file
from gpa_plan.cli import cli
from gpa_plan.inputs import InputError

DATA = Path(__file__).parent / "data"
LAYOUTS = DATA / "layouts"
GOLDEN = DATA / "golden" / "check"
BAD = sorted(p.stem for p in (LAYOUTS / "bad").glob("*.yaml"))

LINE = re.compile(
    r"(?P<file>[^:]+):(?P<line>\d+):(?P<column>\d+): "
    r"(?P<severity>error|warning)\[(?P<rule>[a-z0-9-]+)\] (?P<message>.+)"
)


def golden_lines(name: str) -> list[str]:
    return (GOLDEN / f"{name}.txt").read_text(encoding="utf-8").splitlines()


def parsed(line: str) -> tuple[str, int, int, str, str, str]:
    match = LINE.fullmatch(line)
    assert match is not None, f"not a finding line: {line!r}"
    return (
        match["file"],
        int(match["line"]),
        int(match["column"]),
        match["severity"],
        match["rule"],
        match["message"],
    )


def summary(errors: int) -> str:
    return f"1 file checked: {errors} error{'s' if errors != 1 else ''}, 0 warnings"


@pytest.fixture
def in_layouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(LAYOUTS)


def test_every_bad_layout_has_a_golden_file_and_every_golden_text_a_layout() -> None:
    goldens = {p.stem for p in GOLDEN.glob("*.txt")}
    assert len(BAD) >= 30
    assert set(BAD) == goldens


@pytest.mark.parametrize("name", BAD)
@pytest.mark.usefixtures("in_layouts")
def test_library_reports_bad_layout_at_the_golden_position(name: str) -> None:
    (result,) = check_file(f"bad/{name}.yaml")
    assert not result.valid
    assert result.regions == ()
    got = [(f.file, f.line, f.column, f.severity, f.rule, f.message) for f in result.findings]
    assert got == [parsed(line) for line in golden_lines(name)]


@pytest.mark.parametrize("name", BAD)
@pytest.mark.usefixtures("in_layouts")
def test_cli_exits_1_with_exactly_the_golden_lines(name: str) -> None:
    result = CliRunner().invoke(cli, ["check", f"bad/{name}.yaml"])
    lines = golden_lines(name)
    assert result.exit_code == 1
    assert result.stdout == "\n".join(lines) + "\n\n" + summary(len(lines)) + "\n"
    assert result.stderr == ""


@pytest.mark.parametrize("name", ["duplicate-key", "alias-bomb", "not-utf8", "number-boolean"])
@pytest.mark.usefixtures("in_layouts")
def test_json_output_of_a_bad_layout_is_invalid_with_no_regions(name: str) -> None:
    import json

    result = CliRunner().invoke(cli, ["check", "--format", "json", f"bad/{name}.yaml"])
    assert result.exit_code == 1
    (expected,) = [parsed(line) for line in golden_lines(name)]
    file, line, column, severity, rule, message = expected
    assert json.loads(result.stdout) == {
        "format": 1,
        "results": [
            {
                "file": file,
                "arch": None,
                "pa_bits": None,
                "valid": False,
                "regions": [],
                "findings": [
                    {
                        "rule": rule,
                        "severity": severity,
                        "message": message,
                        "file": file,
                        "line": line,
                        "column": column,
                        "objects": [],
                    }
                ],
            }
        ],
        "summary": {"files": 1, "errors": 1, "warnings": 0},
    }


def test_bad_layout_under_two_arches_gives_one_invalid_result_per_arch() -> None:
    results = check_file(LAYOUTS / "bad" / "empty.yaml", ["arm64", "x86_64"])
    assert [(r.arch, r.valid, [f.rule for f in r.findings]) for r in results] == [
        ("arm64", False, ["schema"]),
        ("x86_64", False, ["schema"]),
    ]


# --- nesting: the composer must never see more than it can handle -----------------------------


def write_nested(tmp_path: Path, opener: str, closer: str, depth: int) -> Path:
    path = tmp_path / "nested.yaml"
    path.write_text(f"layout: 1\narch: arm64\nname: {opener * depth}{closer * depth}\n")
    return path


def test_nesting_of_63_brackets_inside_the_layout_is_allowed(tmp_path: Path) -> None:
    # The root mapping is level 1, so 63 brackets make 64 levels: the limit, still loaded
    # (and then refused by the schema, since a name is a string).
    (result,) = check_file(write_nested(tmp_path, "[", "]", 63))
    assert [(f.rule, f.line, f.column) for f in result.findings] == [("schema", 3, 7)]


def test_nesting_of_64_brackets_is_refused_at_the_64th(tmp_path: Path) -> None:
    path = write_nested(tmp_path, "[", "]", 64)
    (result,) = check_file(path)
    assert [(f.rule, f.line, f.column, f.message) for f in result.findings] == [
        ("yaml-syntax", 3, 7 + 63, "nesting deeper than 64 levels")
    ]


@pytest.mark.parametrize(
    ("text", "column"),
    [
        # 200,000 flow sequences: the first `[` is at column 7, the 64th at 7 + 63.
        ("name: " + "[" * 200_000 + "\n", 70),
        # 200,000 flow mappings `{a: ` (4 characters each).
        ("name: " + "{a: " * 200_000 + "\n", 7 + 63 * 4),
    ],
    ids=["flow-sequences", "flow-mappings"],
)
def test_200000_open_brackets_do_not_crash_the_process(
    tmp_path: Path, text: str, column: int
) -> None:
    # libyaml's C composer recurses once per level and overflows the C stack long before
    # 200,000: run in a child process, so a crash fails this test instead of the test run.
    path = tmp_path / "deep.yaml"
    path.write_text("layout: 1\narch: arm64\n" + text)
    done = subprocess.run(
        [sys.executable, "-m", "gpa_plan", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    first = done.stdout.splitlines()[0]
    # libyaml 0.2.5 as bundled by PyYAML >= 6.0.4 stops on its own at 1,000 levels while it
    # scans ahead, before the loader's event walk reaches level 65; older ones do not.
    limit_column = 7 + 999 * (column - 7) // 63
    assert first in (
        f"{path}:3:{column}: error[yaml-syntax] nesting deeper than 64 levels",
        f"{path}:3:{limit_column}: error[yaml-syntax] nesting deeper than 64 levels",
    )
    assert "Traceback" not in done.stderr


def test_deep_block_nesting_on_one_long_line_is_refused(tmp_path: Path) -> None:
    # `- - - ...`: block sequences nest two columns at a time; the first `-` is at column 3
    # of line 4, the 64th at 3 + 63 * 2.
    path = tmp_path / "block.yaml"
    path.write_text("layout: 1\narch: arm64\nname:\n  " + "- " * 100_000 + "x\n")
    (result,) = check_file(path)
    assert [(f.rule, f.line, f.column) for f in result.findings] == [("yaml-syntax", 4, 129)]


# --- aliases ----------------------------------------------------------------------------------


def test_a_few_aliases_that_do_not_blow_up_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "aliases.yaml"
    path.write_text(
        "layout: 1\n"
        "arch: arm64\n"
        "memslots:\n"
        "  - name: ram\n"
        "    base: &ram_base 0x4000_0000\n"
        "    size: &one_gib 1G\n"
        "reserved:\n"
        "  - name: after-ram\n"
        "    base: 0x8000_0000\n"
        "    size: *one_gib\n"
    )
    (result,) = check_file(path)
    assert result.valid
    assert result.findings == ()


def test_missing_file_raises_input_error_for_the_library(tmp_path: Path) -> None:
    # Not a finding: nothing of a layout was read, and the command line reports it as a usage
    # error (exit 2) rather than as a layout that fails to load (exit 1).
    missing = tmp_path / "absent.yaml"
    with pytest.raises(InputError) as raised:
        check_file(missing)
    assert (raised.value.path, raised.value.reason) == (str(missing), "no such file or directory")


@pytest.mark.parametrize(
    ("text", "line", "column", "char", "escape"),
    [
        ("layout: 1\narch: arm64\nname: a\x00b\n", 3, 8, "0000", "\\x00"),
        ("layout: 1\narch: arm64\nname: a\x1b[31mb\n", 3, 8, "001B", "\\x1b"),
        # Characters before it that take several bytes in UTF-8 count as one column each.
        ("layout: 1\narch: arm64\nname: \u00e9\u00e9\u00e9\x7f\n", 3, 10, "007F", "\\x7f"),
        # CRLF and CR end lines as the YAML reader counts them.
        ("layout: 1\r\narch: arm64\r\nname: x\x01\r\n", 3, 8, "0001", "\\x01"),
        ("layout: 1\rarch: arm64\rname: x\x9b\r", 3, 8, "009B", "\\x9b"),
    ],
)
def test_a_character_yaml_refuses_is_reported_at_its_line_and_column(
    tmp_path: Path, text: str, line: int, column: int, char: str, escape: str
) -> None:
    path = tmp_path / "control.yaml"
    path.write_bytes(text.encode("utf-8"))
    (result,) = check_file(path)
    (finding,) = result.findings
    assert (finding.rule, finding.line, finding.column) == ("yaml-syntax", line, column)
    assert finding.message == (
        f"character U+{char} ({escape}) is not allowed in YAML text; remove it, or write it as "
        f'the escape "{escape}" inside a double-quoted string'
    )


def test_a_refused_character_is_one_escaped_line_on_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "esc.yaml"
    path.write_bytes(
        b"layout: 1\narch: arm64\nmemslots:\n  - {name: r\x1b[2Jx, base: 0, size: 4K}\n"
    )
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == (
        f"{path}:4:13: error[yaml-syntax] character U+001B (\\x1b) is not allowed in YAML text; "
        'remove it, or write it as the escape "\\x1b" inside a double-quoted string'
    )
    assert "\x1b" not in result.stdout


@pytest.mark.parametrize(
    ("bom", "newline"),
    [(b"", b"\n"), (b"\xef\xbb\xbf", b"\n"), (b"", b"\r"), (b"", b"\r\n"), (b"", b"\xc2\x85")],
    ids=["plain", "byte-order-mark", "cr", "crlf", "nel"],
)
def test_a_byte_that_is_not_utf8_is_said_at_its_place_whatever_the_line_ends(
    tmp_path: Path, bom: bytes, newline: bytes
) -> None:
    # With a BOM the offset was three bytes short: another byte was named, at another column;
    # with CR or NEL line ends (which YAML counts as lines) it was said at line 1.
    path = tmp_path / "vm.yaml"
    path.write_bytes(bom + b'layout: 1\narch: arm64\nname: "ab\xffc"\n'.replace(b"\n", newline))
    (result,) = check_file(path)
    (finding,) = result.findings
    assert (finding.line, finding.column) == (3, 10)
    assert finding.message == "byte 0xff is not UTF-8; layout files must be UTF-8 text"
