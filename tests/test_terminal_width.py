"""Text output on a terminal of any width: nothing cut, no line wider than the terminal.

Every shipped layout is checked at 60, 80 and 120 columns as a terminal gets it (FORCE_COLOR,
rich's "this is a terminal" switch, with COLUMNS as the width), and what the text shows is held
to the `--format json` output of the same run: each region's start, inclusive end, names and
read/write/fetch outcomes appear whole, in order, in the lines of that region.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from rich.cells import cell_len

from gpa_plan.cli import cli
from gpa_plan.report import fold, terminal

ROOT = Path(__file__).parent.parent
SHIPPED = sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "layouts").glob("**/*.yaml")
)
DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden" / "check" / "text"
SGR = re.compile(r"\x1b\[[0-9;]*m")
CLEAN_ENV = {"NO_COLOR": "1", "FORCE_COLOR": None, "TTY_COMPATIBLE": None, "COLUMNS": None}


def run(args: list[str], columns: int | None, terminal: bool = True) -> str:
    env = {**CLEAN_ENV, "COLUMNS": str(columns) if columns else None}
    if terminal:
        env["FORCE_COLOR"] = "1"
    result = CliRunner(env=env).invoke(cli, args)
    assert result.exit_code in (0, 1), result.output
    return SGR.sub("", result.stdout)


@pytest.fixture(autouse=True)
def at_the_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # Paths as a user gives them; a long absolute path would make every title wrap.
    monkeypatch.chdir(ROOT)


def json_results(path: str | Path) -> list[dict[str, Any]]:
    out = CliRunner(env=CLEAN_ENV).invoke(cli, ["check", "--format", "json", str(path)]).stdout
    results: list[dict[str, Any]] = json.loads(out)["results"]
    return results


def shown_hex(value: int) -> str:
    """How people read an address: ``0x0800_0000``, at least eight digits."""
    digits = f"{value:08x}"
    groups = [digits[max(0, i - 4) : i] for i in range(len(digits), 0, -4)]
    return "0x" + "_".join(reversed(groups))


def whole(word: str) -> re.Pattern[str]:
    """``word`` standing alone: not part of a longer name or outcome (``io-exit``)."""
    return re.compile(rf"(?<![\w-]){re.escape(word)}(?![\w-])")


def address(value: int) -> re.Pattern[str]:
    """An address standing alone (a stacked region's range is ``start-end``)."""
    return re.compile(rf"(?<!\w){shown_hex(value)}(?!\w)")


def region_chunks(text: str, regions: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], str]]:
    """Each region with the text from its start address up to the next region's."""
    at = 0
    starts = []
    for region in regions:
        found = address(region["start"]).search(text, at)
        assert found, f"start {shown_hex(region['start'])} not found whole after offset {at}"
        starts.append(found.start())
        at = found.end()
    for i, region in enumerate(regions):
        end = starts[i + 1] if i + 1 < len(regions) else len(text)
        yield region, text[starts[i] : end]


def assert_reads_in_full(text: str, results: list[dict[str, Any]], width: int) -> None:
    too_wide = [line for line in text.splitlines() if cell_len(line.rstrip()) > width]
    assert not too_wide, f"{len(too_wide)} lines wider than {width}: {too_wide[:3]}"
    for result in results:
        if not result["valid"]:
            continue
        title = text.index(f"{result['file']} ({result['arch']}")
        for region, chunk in region_chunks(text[title:], result["regions"]):
            assert address(region["end"] - 1).search(chunk), (region, chunk)
            for name in region["names"]:
                # A name may wrap between its words, never inside one.
                for word in name.split():
                    assert whole(word).search(chunk), (name, chunk)
            at = 0
            for access in ("read", "write", "fetch"):
                found = whole(region[access]).search(chunk, at)
                assert found, (access, region, chunk)
                at = found.end()


@pytest.mark.parametrize("width", [60, 80, 120])
@pytest.mark.parametrize("path", SHIPPED)
def test_a_shipped_layout_reads_in_full_on_a_terminal(path: str, width: int) -> None:
    text = run(["check", path], width)
    assert_reads_in_full(text, json_results(path), width)


@pytest.mark.parametrize("width", [60, 80, 120])
@pytest.mark.parametrize("path", SHIPPED)
def test_a_table_too_long_for_rich_reads_in_full_too(
    path: str, width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past RICH_TABLE_ROWS rows a terminal gets the plain writer's columns or blocks.
    monkeypatch.setattr(terminal, "RICH_TABLE_ROWS", 0)
    text = run(["check", str(path)], width)
    assert "┃" not in text
    assert_reads_in_full(text, json_results(path), width)


def crowded_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A 52-bit space and one page where a read-only memslot and six devices meet."""
    monkeypatch.chdir(tmp_path)
    devices = "".join(
        f"  - {{name: device-number-{i}, type: mmio, base: 0x1000_0000, size: 4K}}\n"
        for i in range(6)
    )
    path = Path("crowded.yaml")
    path.write_text(
        "layout: 1\narch: arm64\npa_bits: 52\npage_size: 4K\n"
        "memslots:\n  - {name: flash, base: 0x1000_0000, size: 64K, readonly: true}\n"
        f"devices:\n{devices}"
    )
    return path


def test_every_width_from_24_columns_up_cuts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = crowded_layout(tmp_path, monkeypatch)
    results = json_results(path)
    assert len(results[0]["regions"][1]["names"]) == 7
    layouts = set()
    for width in range(24, 201, 4):
        text = run(["check", str(path)], width)
        assert_reads_in_full(text, results, width)
        layouts.add("table" if "┃" in text else "stacked")
    assert layouts == {"table", "stacked"}


def test_names_wrap_inside_their_column_before_the_table_gives_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = crowded_layout(tmp_path, monkeypatch)
    wide = run(["check", str(path)], 300)
    natural = max(len(line.rstrip()) for line in wide.splitlines() if "│" in line)
    narrower = run(["check", str(path)], natural - 40)
    assert "┃" in narrower  # still a table ...
    rows = [line for line in narrower.splitlines() if "│" in line]
    assert len(rows) > len(json_results(path)[0]["regions"])  # ... whose names take more lines
    assert_reads_in_full(narrower, json_results(path), natural - 40)


@pytest.mark.parametrize("writer", ["rich", "plain"])
def test_wide_characters_in_names_take_two_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str
) -> None:
    # Terminals give a CJK character two cells: a table measured in characters would be
    # wider than the terminal, and rich would cut the names to fit.
    if writer == "plain":
        monkeypatch.setattr(terminal, "RICH_TABLE_ROWS", 0)
    monkeypatch.chdir(tmp_path)
    Path("wide.yaml").write_text(
        "layout: 1\narch: arm64\npa_bits: 40\nmemslots:\n"
        "  - {name: 内存内存内存内存内存内存, base: 0x4000_0000, size: 1G}\n"
        "devices:\n  - {name: 串口控制器串口控制器, type: mmio, base: 0x0900_0000, size: 4K}\n"
        # in the memslot: a finding line that names it, to wrap as well
        "  - {name: 内存里的设备, type: mmio, base: 0x4000_0000, size: 4K}\n",
        encoding="utf-8",
    )
    results = json_results("wide.yaml")
    assert results[0]["findings"]
    seen = set()
    for width in range(40, 161, 3):
        text = run(["check", "wide.yaml"], width)
        assert_reads_in_full(text, results, width)
        seen.add("table" if "start" in text.splitlines()[1] else "stacked")
    assert seen == {"table", "stacked"}


def test_at_80_columns_a_layout_is_stacked_as_the_golden_file_shows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(DATA / "layouts")
    text = run(["check", "small-arm64.yaml"], 80)
    expected = (GOLDEN / "small-arm64.80.terminal.txt").read_text(encoding="utf-8")
    assert [line.rstrip() for line in text.splitlines()] == expected.splitlines()


def test_a_pipe_keeps_one_region_per_line_whatever_columns_says() -> None:
    path = ROOT / "layouts" / "qemu-virt-arm64.yaml"
    narrow, wide = run(["check", str(path)], 80, False), run(["check", str(path)], None, False)
    assert narrow == wide
    regions = json_results(path)[0]["regions"]
    assert len(narrow.splitlines()) == 1 + 1 + len(regions) + 2  # title, header, rows, summary
    assert max(len(line) for line in narrow.splitlines()) > 80


def test_forced_colour_in_a_log_keeps_each_finding_on_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # FORCE_COLOR without COLUMNS: colour into a CI log, at a guessed width of 160.
    monkeypatch.chdir(DATA / "layouts")
    text = run(["check", "ro-device-warning.yaml"], None)
    finding = next(line for line in text.splitlines() if "warning[device-shadowed]" in line)
    assert len(finding) > 160
    assert finding.endswith("move the device if it must answer reads")
    assert all(len(line.rstrip()) <= 160 for line in text.splitlines() if line != finding)


@pytest.mark.parametrize("width", [60, 80])
def test_explain_wraps_its_lines_and_keeps_each_outcome_whole(width: int) -> None:
    path = ROOT / "layouts" / "qemu-virt-arm64.yaml"
    args = ["explain", str(path), "0x0800_0000", "0x4000_0000", "0x9000_0000"]
    text = run(args, width)
    answers = json.loads(run([*args, "--format", "json"], None, False))["answers"]
    assert max(len(line.rstrip()) for line in text.splitlines()) <= width
    for answer in answers:
        head = f"{shown_hex(answer['address'])} {answer['access']} on {answer['arch']}: "
        assert f"{head}{answer['outcome']}" in text
        assert " ".join(answer["detail"].split()) in " ".join(text.split())


# --- the wrapping itself ------------------------------------------------------------------


words = st.text(
    st.one_of(st.characters(min_codepoint=33, max_codepoint=126), st.sampled_from("内存串口é")),
    min_size=1,
    max_size=30,
)


@given(
    st.lists(st.tuples(words, st.sampled_from(["", "red"])), min_size=1, max_size=30),
    st.integers(min_value=4, max_value=50),
    st.integers(min_value=0, max_value=6),
)
def test_wrapping_loses_nothing_and_keeps_within_the_width(
    parts: list[tuple[str, str]], width: int, indent: int
) -> None:
    spaced = [(f"{text} ", style) for text, style in parts]
    lines = fold.wrap(fold.words(spaced), width, indent)
    texts = ["".join(t for t, _ in line) for line in lines]
    assert all(cell_len(t) <= width for t in texts), texts
    assert all(t.strip() for t in texts), texts  # no empty line
    assert "".join("".join(texts).split()) == "".join(t for t, _ in parts)
    # A word is only ever broken when it is longer than a line.
    if all(cell_len(t) <= width - min(indent, width // 2) for t, _ in parts):
        assert [w for t in texts for w in t.split()] == [t for t, _ in parts]
