"""`gpa-plan map`: the address map as an SVG drawing or an HTML page.

Run from ``tests/data/layouts`` so that file names in the output read as given. The SVG of
small-arm64.yaml is kept as a golden file (``GPA_PLAN_UPDATE_GOLDEN=1`` rewrites it).
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from gpa_plan.check.run import check_file
from gpa_plan.cli import cli
from gpa_plan.report.svg import FINDING_STROKE, ROW_MAX, ROW_MIN, row_height

DATA = Path(__file__).parent / "data"
LAYOUTS = DATA / "layouts"
GOLDEN = DATA / "golden" / "map"
SVG = "{http://www.w3.org/2000/svg}"

# Two memslots over one range: a finding that names both.
OVERLAP = """\
layout: 1
arch: arm64
pa_bits: 32
memslots:
  - {name: ram, base: 0x4000_0000, size: 1G}
  - {name: shadow, base: 0x4000_0000, size: 4K}
"""


@pytest.fixture(autouse=True)
def in_layouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(LAYOUTS)


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["map", *args])


def region_groups(svg_text: str) -> list[ET.Element]:
    root = ET.fromstring(svg_text)
    return root.findall(f"{SVG}g")


def test_svg_matches_golden() -> None:
    result = run("small-arm64.yaml")
    assert result.exit_code == 0, result.output
    path = GOLDEN / "small-arm64.svg"
    if os.environ.get("GPA_PLAN_UPDATE_GOLDEN"):
        path.write_text(result.stdout)
    assert result.stdout == path.read_text()


def test_svg_has_one_group_per_region_with_its_outcomes_in_the_tooltip() -> None:
    (checked,) = check_file("small-arm64.yaml")
    groups = region_groups(run("small-arm64.yaml").stdout)
    assert len(groups) == len(checked.regions)
    gicd = next(g for g in groups if "gicd" in (g.findtext(f"{SVG}title") or ""))
    assert gicd.findtext(f"{SVG}title") == (
        "[0x0800_0000, 0x0801_0000) 64 KiB device (gicd)\n"
        "read io-kernel, write io-kernel, fetch guest-fault"
    )
    cells = [t.text for t in gicd.findall(f"{SVG}text")]
    assert cells == [
        "0x0800_0000",
        "device: gicd",
        "64 KiB",
        "io-kernel",
        "io-kernel",
        "guest-fault",
    ]


def test_arch_option_draws_that_architecture() -> None:
    result = run("small-arm64.yaml", "--arch", "x86_64")
    assert result.exit_code == 0
    root = ET.fromstring(result.stdout)
    assert root.findtext(f"{SVG}title") == "small-arm64.yaml (x86_64, 32-bit)"
    fetches = {[t.text for t in g.findall(f"{SVG}text")][-1] for g in region_groups(result.stdout)}
    assert fetches == {"memory", "vm-error"}  # x86: a fetch outside memory is vm-error


def test_regions_named_by_a_finding_are_outlined_and_say_why(tmp_path: Path) -> None:
    layout = tmp_path / "overlap.yaml"
    layout.write_text(OVERLAP)
    groups = region_groups(run(str(layout)).stdout)
    outlined = [
        g for g in groups if any(r.get("stroke") == FINDING_STROKE for r in g.findall(f"{SVG}rect"))
    ]
    titles = [g.findtext(f"{SVG}title") or "" for g in outlined]
    assert [t.splitlines()[0] for t in titles] == [
        "[0x4000_0000, 0x4000_1000) 4 KiB ram (ram, shadow)",
        "[0x4000_1000, 0x8000_0000) ~1024 MiB ram (ram)",
    ]
    assert all("error[memslot-overlap]" in t for t in titles)


def test_html_page_has_the_findings_the_drawing_and_every_region(tmp_path: Path) -> None:
    layout = tmp_path / "overlap.yaml"
    layout.write_text(OVERLAP)
    out = tmp_path / "map.html"
    result = run(str(layout), "--html", str(out))
    assert (result.exit_code, result.stdout) == (0, "")
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert f"<h1>{layout} (arm64, 32-bit)</h1>" in page
    assert re.search(r"<li class='error'>[^<]*error\[memslot-overlap\]", page)
    (checked,) = check_file(layout)
    assert page.count("<tr><td>") == len(checked.regions)
    assert page.count("<svg ") == 1


def test_svg_option_writes_the_file_and_nothing_to_stdout(tmp_path: Path) -> None:
    out = tmp_path / "map.svg"
    result = run("small-arm64.yaml", "--svg", str(out))
    assert (result.exit_code, result.stdout) == (0, "")
    assert out.read_text() == run("small-arm64.yaml").stdout


def test_svg_and_html_together_are_a_usage_error(tmp_path: Path) -> None:
    result = run("small-arm64.yaml", "--svg", str(tmp_path / "a"), "--html", str(tmp_path / "b"))
    assert result.exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_a_layout_that_does_not_load_is_exit_1_with_positions_and_no_file(
    tmp_path: Path,
) -> None:
    out = tmp_path / "map.svg"
    out.write_text("previous map\n")
    result = run("bad/missing-arch.yaml", "--svg", str(out))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert re.match(r"bad/missing-arch\.yaml:\d+:\d+: error\[schema\] ", result.stderr)
    assert out.read_text() == "previous map\n"


def test_a_file_that_cannot_be_written_is_exit_2_not_a_traceback(tmp_path: Path) -> None:
    result = run("small-arm64.yaml", "--svg", str(tmp_path / "missing" / "map.svg"))
    assert result.exit_code == 2
    assert result.stderr.endswith(
        f"cannot write {tmp_path}/missing/map.svg: the directory {tmp_path}/missing does not "
        "exist; create it first, or give a path in an existing directory\n"
    )


def test_characters_xml_forbids_are_shown_escaped(tmp_path: Path) -> None:
    layout = tmp_path / "control.yaml"
    layout.write_text(
        "layout: 1\narch: arm64\npa_bits: 32\nmemslots:\n"
        '  - {name: "r\\x01am", base: 0, size: 1G}\n'
    )
    result = run(str(layout))
    assert result.exit_code == 0
    ET.fromstring(result.stdout)  # well-formed, so a browser renders it
    assert "ram: r\\x01am" in result.stdout


def test_names_are_escaped(tmp_path: Path) -> None:
    layout = tmp_path / "odd.yaml"
    layout.write_text(
        "layout: 1\narch: arm64\npa_bits: 32\nmemslots:\n"
        "  - {name: '<ram & \"co\">', base: 0x4000_0000, size: 1G}\n"
    )
    result = run(str(layout))
    assert "&lt;ram &amp; &quot;co&quot;&gt;" in result.stdout
    ET.fromstring(result.stdout)  # still well-formed


@given(st.integers(min_value=1, max_value=2**64))
def test_row_height_stays_in_bounds_and_never_shrinks_as_size_grows(size: int) -> None:
    height = row_height(size)
    assert ROW_MIN <= height <= ROW_MAX
    assert row_height(size * 2) >= height


def test_a_tooltip_gives_three_findings_in_full_and_counts_the_rest(tmp_path: Path) -> None:
    # A memslot over thousands of devices is in thousands of rows: each repeated every
    # finding naming it (15 MB of SVG for 110 KB of layout).
    devices = "".join(
        f"  - {{name: d{i}, type: mmio, base: {0x4000_0000 + 2 * i * 0x1000:#x}, size: 4K}}\n"
        for i in range(5)
    )
    layout = tmp_path / "shadowed.yaml"
    layout.write_text(
        "layout: 1\narch: arm64\nmemslots:\n  - {name: ram, base: 0x4000_0000, size: 1G}\n"
        f"devices:\n{devices}"
    )
    titles = [g.findtext(f"{SVG}title") or "" for g in region_groups(run(str(layout)).stdout)]
    gap = next(t for t in titles if t.startswith("[0x4000_1000, 0x4000_2000)"))
    lines = gap.splitlines()
    assert [line.split("]")[0] for line in lines[2:5]] == ["error[device-shadowed"] * 3
    assert "'d0'" in lines[2] and "'d2'" in lines[4]
    assert lines[5:] == [
        "and 2 more findings naming this region's objects (gpa-plan check, or map --html, "
        "lists them all)"
    ]
    device = next(t for t in titles if t.startswith("[0x4000_4000, 0x4000_5000)"))
    assert len(device.splitlines()) == 6  # range, outcomes, three findings, the count
