"""`gpa-plan check` on real files: text and JSON output, --strict, colour and exit codes.

Run from ``tests/data/layouts`` so that file names in the output read as given. Expected output
lives in ``tests/data/golden/check``: JSON documents written from the layouts by hand, and
text renderings (compared line by line without trailing blanks, which the table pads).
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gpa_plan.cli import cli

DATA = Path(__file__).parent / "data"
LAYOUTS = DATA / "layouts"
GOLDEN = DATA / "golden" / "check"

# A fixed width, and no colour switch inherited from the environment running the tests.
PLAIN_ENV = {"COLUMNS": "160", "NO_COLOR": None, "FORCE_COLOR": None, "TTY_COMPATIBLE": None}


@pytest.fixture(autouse=True)
def in_layouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(LAYOUTS)


def run(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner(env={**PLAIN_ENV, **(env or {})}).invoke(cli, list(args))


def lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def golden_text(name: str) -> list[str]:
    return lines((GOLDEN / "text" / f"{name}.txt").read_text(encoding="utf-8"))


# --- text ---------------------------------------------------------------------------------------


def test_text_output_is_the_region_table_then_the_summary() -> None:
    result = run("check", "small-arm64.yaml")
    assert result.exit_code == 0
    assert lines(result.stdout) == golden_text("small-arm64")


def test_text_table_lists_each_region_with_its_outcomes() -> None:
    out = lines(run("check", "small-arm64.yaml").stdout)
    assert out[0] == "small-arm64.yaml (arm64, 32-bit)"
    # Off a terminal the table is plain columns, two spaces or more apart.
    cells = [re.split(r"\s{2,}", line) for line in out[1:14]]
    assert cells[0] == ["start", "end (incl.)", "size", "kind", "names", "read", "write", "fetch"]
    memory_row = ["memory", "io-exit", "memory"]
    assert cells[1] == ["0x0000_0000", "0x03ff_ffff", "64 MiB", "rom", "flash", *memory_row]
    gicd_row = ["io-kernel", "io-kernel", "guest-fault"]
    assert cells[3] == ["0x0800_0000", "0x0800_ffff", "64 KiB", "device", "gicd", *gicd_row]
    assert cells[5] == ["0x080a_0000", "0x080b_ffff", "128 KiB", "device", "gicr", *gicd_row]
    unbacked = ["0x8000_0000", "0xffff_ffff", "2 GiB", "unbacked", "io-exit", "io-exit"]
    assert cells[12] == [*unbacked, "guest-fault"]
    assert out[-1] == "1 file checked: 0 errors, 0 warnings"


@pytest.mark.parametrize("name", ["small-arm64", "ro-device-warning"])
def test_on_a_terminal_rich_draws_the_same_table(name: str) -> None:
    # FORCE_COLOR is rich's switch for "this is a terminal"; NO_COLOR drops the colours, and
    # the golden file leaves out the remaining styles (italic title, bold header).
    result = run("check", f"{name}.yaml", env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    out = lines(re.sub(r"\x1b\[[0-9;]*m", "", result.stdout))
    assert out == golden_text(f"{name}.terminal")
    header = re.split(r"\s*┃\s*", out[1].strip())
    assert header == ["start", "end (incl.)", "size", "kind", "names", "read", "write", "fetch"]
    piped = lines(run("check", f"{name}.yaml").stdout)
    plain_rows = [re.split(r"\s{2,}", line) for line in piped[2:]]
    rich_rows = [re.split(r"\s*│\s*", line.strip()) for line in out[3:] if "│" in line]
    # Same cells (an empty `names` cell has no column of its own in a plain split).
    assert [[c for c in row if c] for row in rich_rows] == plain_rows[: len(rich_rows)]


def test_two_arches_print_both_tables_the_findings_and_where_they_differ() -> None:
    result = run("check", "small-arm64.yaml", "--arch", "arm64", "--arch", "x86_64")
    assert result.exit_code == 0
    assert lines(result.stdout) == golden_text("small-arm64-two-arches")
    out = lines(result.stdout)
    start = out.index("small-arm64.yaml: where arm64 and x86_64 differ:")
    assert out[start + 1 : start + 7] == [
        "  0x0800_0000-0x0800_ffff read: arm64 io-kernel, x86_64 io-exit",
        "  0x080a_0000-0x080b_ffff read: arm64 io-kernel, x86_64 io-exit",
        "  0x0800_0000-0x0800_ffff write: arm64 io-kernel, x86_64 io-exit",
        "  0x080a_0000-0x080b_ffff write: arm64 io-kernel, x86_64 io-exit",
        "  0x0400_0000-0x3fff_ffff fetch: arm64 guest-fault, x86_64 vm-error",
        "  0x8000_0000-0xffff_ffff fetch: arm64 guest-fault, x86_64 vm-error",
    ]


def test_two_arches_that_agree_say_so(tmp_path: Path) -> None:
    # Without memslots every fetch would differ (guest-fault, vm-error): RAM covers the space.
    path = tmp_path / "ram-only.yaml"
    path.write_text(
        "layout: 1\narch: x86_64\npa_bits: 32\nmemslots:\n  - {name: ram, base: 0x0, size: 4G}\n"
    )
    result = run("check", str(path), "--arch", "x86_64", "--arch", "arm64")
    assert result.exit_code == 0
    assert f"{path}: x86_64 and arm64 agree on every access" in lines(result.stdout)


def test_warning_is_printed_as_a_finding_line_and_counted() -> None:
    result = run("check", "ro-device-warning.yaml")
    assert result.exit_code == 0
    assert lines(result.stdout) == golden_text("ro-device-warning")


def test_strict_turns_a_warning_into_exit_1() -> None:
    assert run("check", "ro-device-warning.yaml").exit_code == 0
    assert run("check", "--strict", "ro-device-warning.yaml").exit_code == 1
    assert run("check", "--strict", "small-arm64.yaml").exit_code == 0


FINDING_LINE = re.compile(r"^\S+:\d+:\d+: (error|warning|note)\[[a-z0-9-]+\] ")


@pytest.mark.parametrize(
    "args",
    [
        ["small-arm64.yaml"],
        ["ro-device-warning.yaml"],
        ["small-arm64.yaml", "--arch", "arm64", "--arch", "x86_64"],
        ["small-arm64.yaml", "ro-device-warning.yaml", "small-x86_64.yaml"],
    ],
)
@pytest.mark.parametrize("colour", [None, "1"])
def test_quiet_prints_the_findings_and_the_summary_only(
    args: list[str], colour: str | None
) -> None:
    full = run("check", *args, env={"FORCE_COLOR": colour})
    quiet = run("check", "-q", *args, env={"FORCE_COLOR": colour})
    assert quiet.exit_code == full.exit_code
    plain = [SGR.sub("", line) for line in lines(full.stdout)]
    # A finding line and, on a terminal, the indented lines it wraps onto.
    findings: list[str] = []
    in_finding = False
    for line in plain:
        in_finding = bool(FINDING_LINE.match(line)) or (in_finding and line.startswith("  "))
        if in_finding:
            findings.append(line)
    assert [SGR.sub("", line) for line in lines(quiet.stdout)] == [*findings, plain[-1]]


def test_quiet_leaves_the_machine_formats_as_they_are() -> None:
    for fmt in ("json", "github", "sarif"):
        args = ["check", "--format", fmt, "small-arm64.yaml", "--arch", "x86_64"]
        assert run(*args).stdout == run(*args[:1], "--quiet", *args[1:]).stdout


SGR = re.compile(r"\x1b\[([0-9;]*)m")


def colour_codes(text: str) -> set[str]:
    """Foreground/background colour parameters (30-39, 40-49, 90-107) in SGR sequences."""
    found = set()
    for params in SGR.findall(text):
        for p in params.split(";"):
            if p and (30 <= int(p) <= 49 or 90 <= int(p) <= 107):
                found.add(p)
    return found


def test_no_escape_sequences_when_stdout_is_not_a_terminal() -> None:
    result = run("check", "small-arm64.yaml", "--arch", "x86_64")
    assert "\x1b[" not in result.stdout


def test_forced_colour_colours_outcomes_and_no_color_removes_colour() -> None:
    forced = run("check", "small-arm64.yaml", env={"FORCE_COLOR": "1"})
    assert colour_codes(forced.stdout)  # the check below can fail
    both = run("check", "small-arm64.yaml", env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert colour_codes(both.stdout) == set()


def test_directory_argument_checks_every_layout_in_it(tmp_path: Path) -> None:
    for name in ("small-arm64.yaml", "ro-device-warning.yaml"):
        (tmp_path / name).write_text((LAYOUTS / name).read_text())
    result = run("check", "--format", "json", str(tmp_path))
    document = json.loads(result.stdout)
    assert [Path(r["file"]).name for r in document["results"]] == [
        "ro-device-warning.yaml",
        "small-arm64.yaml",
    ]
    assert document["summary"] == {"files": 2, "errors": 0, "warnings": 1}


# --- JSON ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["small-arm64", "small-x86_64", "ro-device-warning"])
def test_json_output_matches_the_hand_written_golden(name: str) -> None:
    result = run("check", "--format", "json", f"{name}.yaml")
    assert result.exit_code == 0
    golden = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    assert json.loads(result.stdout) == golden


def test_json_regions_partition_the_space_exactly() -> None:
    result = run("check", "--format", "json", "small-x86_64.yaml", "--arch", "arm64")
    (res,) = json.loads(result.stdout)["results"]
    regions = res["regions"]
    assert regions[0]["start"] == 0
    assert regions[-1]["end"] == 2 ** res["pa_bits"]
    for left, right in itertools.pairwise(regions):
        assert left["end"] == right["start"]
    io = [r["io"] for r in regions]
    assert io == [any(r[a].startswith("io-") for a in ("read", "write", "fetch")) for r in regions]


def test_json_has_one_result_per_arch_and_counts_findings_in_the_summary() -> None:
    result = run(
        "check", "--format", "json", "small-arm64.yaml", "--arch", "arm64", "--arch", "x86_64"
    )
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert [(r["arch"], r["valid"]) for r in document["results"]] == [
        ("arm64", True),
        ("x86_64", True),
    ]
    # The vGIC is not created under x86_64: one note, which no count of the summary includes.
    (finding,) = document["results"][1]["findings"]
    assert {k: finding[k] for k in ("rule", "severity", "line", "column", "objects")} == {
        "rule": "device-wrong-arch",
        "severity": "note",
        "line": 6,
        "column": 7,
        "objects": ["gicd", "gicr"],
    }
    assert document["summary"] == {"files": 1, "errors": 0, "warnings": 0}


# --- exit codes ---------------------------------------------------------------------------------


def test_missing_file_is_a_usage_error() -> None:
    result = run("check", "no-such-layout.yaml")
    assert result.exit_code == 2
    assert result.stderr == (
        "gpa-plan: cannot read no-such-layout.yaml: no such file or directory\n"
    )


@pytest.mark.parametrize(
    "args",
    [
        ["check", "--format", "xml", "small-arm64.yaml"],
        ["check", "--arch", "s390x", "small-arm64.yaml"],
        ["check", "--no-such-option", "small-arm64.yaml"],
        ["check"],
    ],
)
def test_bad_option_is_a_usage_error(args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Usage:" in result.stderr


def test_errors_exit_1_and_a_clean_file_exits_0() -> None:
    assert run("check", "small-x86_64.yaml").exit_code == 0
    assert run("check", "bad/empty.yaml").exit_code == 1
    # One bad file among good ones fails the run.
    assert run("check", "small-x86_64.yaml", "bad/empty.yaml").exit_code == 1


def test_a_table_too_long_for_rich_is_printed_as_aligned_columns(tmp_path: Path) -> None:
    # 1,100 memslots with a hole after each: 2,200 regions, past RICH_TABLE_ROWS.
    slots = "".join(f"  - {{name: m{i}, base: {hex(0x2000 * i)}, size: 4K}}\n" for i in range(1100))
    path = tmp_path / "many.yaml"
    path.write_text(f"layout: 1\narch: arm64\npa_bits: 32\nmemslots:\n{slots}")
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"{path} (arm64, 32-bit)"
    assert lines[1].split() == [
        "start",
        "end",
        "(incl.)",
        "size",
        "kind",
        "names",
        "read",
        "write",
        "fetch",
    ]
    assert lines[2].split() == [
        "0x0000_0000",
        "0x0000_0fff",
        "4",
        "KiB",
        "ram",
        "m0",
        "memory",
        "memory",
        "memory",
    ]
    assert lines[3].split() == [
        "0x0000_1000",
        "0x0000_1fff",
        "4",
        "KiB",
        "unbacked",
        "io-exit",
        "io-exit",
        "guest-fault",
    ]
    # Every row is aligned under its header: the `read` column starts at the same offset.
    read_at = lines[1].index("read")
    assert lines[2][read_at:].startswith("memory")
    assert lines[3][read_at:].startswith("io-exit")
    assert len(lines) == 2 + 2200 + 2  # title, header, rows, blank line, summary


@pytest.mark.parametrize(
    "columns",
    ["abc", "0", "-3", "1e3", "\u00b2", "\u0663\u0660\u0660", "9" * 5000],
    ids=["word", "zero", "negative", "exponent", "superscript", "arabic-digits", "5000-digits"],
)
def test_forced_rich_output_survives_a_columns_that_is_not_a_width(columns: str) -> None:
    # rich drew nothing at a width of 0 or less, and int() of "abc", "²" or 5,000 digits
    # was an internal error (rich reads COLUMNS and LINES on a terminal too).
    env = {"FORCE_COLOR": "1", "COLUMNS": columns, "LINES": columns}
    result = run("check", "small-arm64.yaml", env=env)
    assert result.exit_code == 0, result.output
    out = lines(re.sub(r"\x1b\[[0-9;]*m", "", result.stdout))
    assert out[0] == "small-arm64.yaml (arm64, 32-bit)"
    assert max(len(line) for line in out) <= 160
    assert out[-1] == "1 file checked: 0 errors, 0 warnings"


@pytest.mark.parametrize(
    ("written", "ours"),
    [
        ("aarch64", "arm64"),
        ("AArch64", "arm64"),
        ("amd64", "x86_64"),
        ("x86-64", "x86_64"),
        ("ARM64", "arm64"),
        ("X86_64", "x86_64"),
    ],
)
def test_another_tools_name_of_an_arch_is_told_ours(
    tmp_path: Path, written: str, ours: str
) -> None:
    path = tmp_path / "alias.yaml"
    path.write_text(f"layout: 1\narch: {written}\n")
    in_file = run("check", str(path))
    assert in_file.exit_code == 1
    assert lines(in_file.stdout)[0] == (
        f"{path}:2:7: error[schema] `arch` must be arm64, x86_64, riscv64 or loongarch64, "
        f"not {written!r}; "
        f"{written} is the architecture layouts call `{ours}`: write `arch: {ours}`"
    )
    option = run("check", "small-arm64.yaml", "--arch", written)
    assert option.exit_code == 2
    assert f"{written} is the architecture layouts call `{ours}`: write `--arch {ours}`" in (
        option.stderr
    )


def test_an_unknown_arch_gets_no_alias_hint(tmp_path: Path) -> None:
    path = tmp_path / "s390.yaml"
    path.write_text("layout: 1\narch: s390x\n")
    assert lines(run("check", str(path)).stdout)[0].endswith("not 's390x'")
    assert "layouts call" not in run("check", "small-arm64.yaml", "--arch", "s390x").stderr
