"""Names and paths from a layout never put raw control characters into human output.

A layout whose names and whose own file name hold ESC sequences, CR, NUL, newlines, a GitHub
Actions workflow command after a newline and a right-to-left override is run through every
human-readable output: the text tables (plain and rich), findings, `explain`, the stderr lines
of `map`, `allocate` and `import`, generated comments and ELF segment lines. Each must show the
characters as escapes, keep one logical line per line, and (rich) never read a name as markup.
"""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from gpa_plan.cli import cli
from gpa_plan.plan.emit import to_c, to_env, to_yaml
from gpa_plan.printable import printable

# Every character the sanitiser must catch; NUL only in names (no file name can hold it).
HOSTILE = "a\x1b[31mb\rc\x00d\n::error file=x::y\u202ee"
SHOWN = "a\\x1b[31mb\\rc\\x00d\\n::error file=x::y\\u202ee"
PATH_PART = "l\x1b[2J\r\n::error file=x::y\u202e"
PATH_SHOWN = "l\\x1b[2J\\r\\n::error file=x::y\\u202e"
SGR = re.compile(r"\x1b\[[0-9;]*m")
TINY_ELF = Path(__file__).parent / "data" / "elf" / "tiny-aarch64.elf"


def quoted(text: str) -> str:
    """``text`` as a double-quoted YAML scalar (escapes for every control character)."""
    kept = " :=[]/"
    return '"' + "".join(c if c.isalnum() or c in kept else f"\\u{ord(c):04x}" for c in text) + '"'


def layout_text(*names: str) -> str:
    entries = "".join(
        f"  - {{name: {quoted(name)}, base: {i}G, size: 1G}}\n" for i, name in enumerate(names)
    )
    return f"layout: 1\narch: arm64\npa_bits: 34\nmemslots:\n{entries}"


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    """A layout named with control characters, whose first memslot is named HOSTILE and
    overlaps another (so there is a finding naming it)."""
    path = tmp_path / f"{PATH_PART}.yaml"
    path.write_text(layout_text(HOSTILE, "[red]x", "[/]") + "  - {name: dup, base: 0, size: 4K}\n")
    return path


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def assert_printable(output: str) -> None:
    """No line of ``output`` holds a character printable() would escape, nor starts a
    workflow command."""
    for line in output.split("\n"):
        assert printable(line) == line, line
        assert not line.startswith("::"), line


def test_plain_text_output_escapes_names_and_the_file_path(hostile: Path) -> None:
    result = invoke("check", str(hostile))
    assert result.exit_code == 1
    assert_printable(result.stdout)
    title, _, first_row, *_ = result.stdout.splitlines()
    assert title == f"{hostile.parent}/{PATH_SHOWN}.yaml (arm64, 34-bit)"
    assert f"  ram       {SHOWN}, dup  memory" in first_row
    finding = next(line for line in result.stdout.splitlines() if "memslot-overlap" in line)
    assert finding.startswith(f"{hostile.parent}/{PATH_SHOWN}.yaml:")


def test_plain_columns_stay_aligned_after_escaping(hostile: Path) -> None:
    header, *rows = invoke("check", str(hostile)).stdout.splitlines()[1:5]
    assert [row.index(" memory ") + 1 for row in rows] == [header.index("read")] * 3


def test_rich_output_escapes_names_and_does_not_read_them_as_markup(hostile: Path) -> None:
    result = invoke("check", str(hostile), env={"FORCE_COLOR": "1", "COLUMNS": "300"})
    assert result.exit_code == 1, result.output
    assert SGR.search(result.stdout)  # rich drew it
    text = SGR.sub("", result.stdout)
    assert_printable(text)
    assert f"{PATH_SHOWN}.yaml (arm64, 34-bit)" in text
    assert SHOWN in text
    assert " [red]x " in text and " [/] " in text


def test_rich_table_cells_are_text_not_markup() -> None:
    from io import StringIO

    from gpa_plan.report.terminal import write_rich
    from gpa_plan.report.text import Table, line

    stream = StringIO()
    row = ("0x0", "0xfff", "4 KiB", "ram", "[bold]x[/bold], [/]", "memory", "memory", "memory")
    write_rich([Table("[red]title", [row]), line("[/] done", "red")], stream)
    out = SGR.sub("", stream.getvalue())
    assert "[red]title" in out and "[bold]x[/bold], [/]" in out and "[/] done" in out


def test_explain_escapes_names_and_paths(hostile: Path) -> None:
    result = invoke("explain", str(hostile), "0", "--access", "read")
    assert result.exit_code == 0
    assert_printable(result.stdout)
    assert result.stdout.splitlines() == [
        f"0x0000_0000 read on arm64: memory [ram ({SHOWN}, dup)]",
        f"  memslot ({SHOWN}, dup): kvm_handle_guest_abort() -> user_mem_abort() maps the page "
        "at stage 2; no exit",
    ]


def test_explain_of_a_bad_layout_escapes_its_error_lines(tmp_path: Path) -> None:
    path = tmp_path / f"{PATH_PART}.yaml"
    path.write_text(layout_text(HOSTILE, HOSTILE))
    result = invoke("explain", str(path), "0")
    assert result.exit_code == 1
    assert_printable(result.stderr)
    assert result.stderr.startswith(f"{path.parent}/{PATH_SHOWN}.yaml:6:12: error[schema] ")


def test_map_escapes_the_error_lines_of_a_layout_that_does_not_load(tmp_path: Path) -> None:
    path = tmp_path / f"{PATH_PART}.yaml"
    path.write_text(layout_text(HOSTILE, HOSTILE))
    result = invoke("map", str(path))
    assert result.exit_code == 1
    assert_printable(result.stderr)
    assert f"{PATH_SHOWN}.yaml:6:12: error[schema] name " in result.stderr


def test_map_escapes_names_in_text_and_tooltips_and_stays_well_formed(hostile: Path) -> None:
    result = invoke("map", str(hostile))
    assert result.exit_code == 0
    assert "\u202e" not in result.stdout and "\x1b" not in result.stdout
    root = ET.fromstring(result.stdout)
    titles = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}title")]
    tooltip = next(t for t in titles if "dup" in t)
    # A tooltip keeps one line per fact; the name's own newline is an escape within its line.
    assert tooltip.splitlines()[0].endswith(f"ram ({SHOWN}, dup)")


def test_allocate_escapes_the_error_lines_of_a_layout_that_does_not_load(tmp_path: Path) -> None:
    path = tmp_path / f"{PATH_PART}.yaml"
    path.write_text(layout_text(HOSTILE, HOSTILE))
    result = invoke("allocate", str(path))
    assert result.exit_code == 1
    assert_printable(result.stderr)
    assert result.stderr.startswith(f"{path.parent}/{PATH_SHOWN}.yaml:6:12: error[schema] ")


def test_allocate_escapes_a_name_it_cannot_place(tmp_path: Path) -> None:
    path = tmp_path / "full.yaml"
    path.write_text(
        "layout: 1\narch: arm64\npa_bits: 32\nmemslots:\n"
        "  - {name: ram, base: 0, size: 4G}\n"
        f"devices:\n  - {{name: {quoted(HOSTILE)}, type: mmio, base: auto, size: 4K}}\n"
    )
    result = invoke("allocate", str(path))
    assert result.exit_code == 1
    assert_printable(result.stderr)
    assert f"cannot place device '{SHOWN}'" in result.stderr


def test_import_escapes_its_error_line(tmp_path: Path) -> None:
    path = tmp_path / f"{PATH_PART}.txt"
    path.write_text("garbage\x1b[2J\n")
    result = invoke("import", "qemu-mtree", str(path))
    assert result.exit_code == 1
    assert_printable(result.stderr)
    assert result.stderr.startswith(f"{path.parent}/{PATH_SHOWN}.txt:1:1: error[import] ")


def test_import_comments_escape_names_and_the_source_path(tmp_path: Path) -> None:
    path = tmp_path / f"{PATH_PART}.txt"
    path.write_text(
        'FlatView #0\n AS "memory", root: system\n Root memory region: system\n'
        "  0000000000000000-000000003fffffff (prio 0, ram): ram\x1b[2J\u202e KVM\n"
    )
    result = invoke("import", "qemu-mtree", "--arch", "arm64", str(path))
    assert result.exit_code == 0
    comments = [line for line in result.stdout.splitlines() if line.startswith("#")]
    assert (
        comments[0]
        == f"# Imported by gpa-plan import qemu-mtree from {path.parent}/{PATH_SHOWN}.txt."
    )
    assert_printable("\n".join(comments))
    assert yaml.safe_load(result.stdout)["memslots"][0]["name"] == "ram\x1b[2J\u202e"


@pytest.mark.parametrize("render", ["yaml", "c", "env"])
def test_generated_comments_hold_one_escaped_line_per_note(render: str) -> None:
    note = f"skipped {HOSTILE} */ end"
    if render == "yaml":
        text = to_yaml({"layout": 1, "arch": "arm64"}, [note], PATH_PART)
        assert yaml.safe_load(text) == {"layout": 1, "arch": "arm64"}
    elif render == "c":
        text = to_c([("ram", 0, 0x1000)], "x", [note], PATH_PART)
    else:
        text = to_env([("ram", 0, 0x1000)], [note], PATH_PART)
    lines = text.splitlines()
    assert_printable(text)
    assert any(f"skipped {SHOWN} *_/ end" in line for line in lines)
    assert all(line.count("*/") <= 1 for line in lines)
    assert sum(PATH_SHOWN in line for line in lines) == 1


def test_elf_segment_lines_escape_the_program_path(tmp_path: Path) -> None:
    layout = tmp_path / "vm.yaml"
    layout.write_text(layout_text("ram"))
    elf = tmp_path / f"{PATH_PART}.elf"
    shutil.copy(TINY_ELF, elf)
    result = invoke("check", str(layout), "--elf", str(elf))
    assert_printable(result.stdout)
    assert f"{PATH_SHOWN}.elf (" in result.stdout


def test_usage_errors_and_internal_errors_quote_paths_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpa_plan.cli import main

    layout = tmp_path / f"{PATH_PART}.yaml"
    layout.write_text("layout: 1\narch: arm64\n")
    assert main(["allocate", "--arch", "arm64", str(layout)]) == 2
    err = capsys.readouterr().err
    assert PATH_SHOWN in err and "\x1b" not in err and "\r" not in err

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError(HOSTILE)

    monkeypatch.setattr("gpa_plan.check.batch.check_file", broken)
    assert main(["check", str(layout)]) == 2
    err = capsys.readouterr().err
    assert err == f"gpa-plan: internal error: RuntimeError: {SHOWN}\n"


@pytest.mark.parametrize("command", ["map", "import"])
def test_the_hard_link_note_of_a_written_file_escapes_its_path(
    tmp_path: Path, command: str
) -> None:
    layout = tmp_path / "vm.yaml"
    layout.write_text(layout_text("ram"))
    mtree = tmp_path / "mtree.txt"
    mtree.write_text(
        "FlatView #0\n AS \"memory\", root: system\n Root memory region: system\n"
        "  0000000040000000-000000007fffffff (prio 0, ram): mach-virt.ram\n"
    )
    out = tmp_path / f"{PATH_PART}.out"
    out.write_text("old\n")
    (tmp_path / "other-name").hardlink_to(out)
    if command == "map":
        result = invoke("map", str(layout), "--svg", str(out))
    else:
        result = invoke("import", "qemu-mtree", str(mtree), "--arch", "arm64", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert_printable(result.stderr)
    assert f"note: {tmp_path}/{PATH_SHOWN}.out had 1 other hard link(s)" in result.stderr
