"""The fixes findings suggest work: applied to the layout, the finding goes away."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from gpa_plan.check.findings import Finding
from gpa_plan.check.run import check_file
from gpa_plan.cli import cli

_ROUNDED = re.compile(r"round it (?:up|down) to (0x[0-9a-f_]+)")
PAGE_SIZES = {"4K": 0x1000, "16K": 0x4000, "64K": 0x1_0000}


def _misaligned(path: Path) -> list[Finding]:
    (result,) = check_file(path)
    assert result.valid, result.findings
    return [f for f in result.findings if f.rule == "memslot-misaligned"]


def _memslot_layout(page: str, base: int, size: int) -> str:
    return textwrap.dedent(
        f"""\
        layout: 1
        arch: arm64
        page_size: {page}
        memslots:
          - name: ram
            base: {base:#x}
            size: {size:#x}
        """
    )


def _first_suggestion(finding: Finding) -> int:
    match = _ROUNDED.search(finding.message)
    assert match, finding.message
    return int(match.group(1).replace("_", ""), 16)


def test_a_size_below_one_page_is_rounded_up_to_one_page(tmp_path: Path) -> None:
    path = tmp_path / "layout.yaml"
    path.write_text(_memslot_layout("4K", 0x4000_0000, 0x800))
    (finding,) = _misaligned(path)
    assert "round it up to 0x0000_1000" in finding.message
    assert "0x0000_0000" not in finding.message  # a size of 0 deletes the slot


@settings(max_examples=60, deadline=None)
@given(
    page=st.sampled_from(sorted(PAGE_SIZES)),
    base=st.integers(min_value=0, max_value=1 << 36),
    size=st.integers(min_value=1, max_value=1 << 32),
)
def test_applying_every_suggestion_leaves_the_memslot_aligned(
    tmp_path_factory: pytest.TempPathFactory, page: str, base: int, size: int
) -> None:
    directory = tmp_path_factory.mktemp("misaligned")
    path = directory / "layout.yaml"
    path.write_text(_memslot_layout(page, base, size))
    fields = {"base": base, "size": size}
    for finding in _misaligned(path):
        field = "base" if finding.message.startswith("base ") else "size"
        fields[field] = _first_suggestion(finding)
    assert fields["size"] > 0
    path.write_text(_memslot_layout(page, fields["base"], fields["size"]))
    assert _misaligned(path) == []


# --- ucall-not-io: the address it suggests is free ---------------------------------------------

ROOT = Path(__file__).parent.parent
_SUGGESTED_BASE = re.compile(
    r":(\d+):(\d+): error\[ucall-not-io\] .*set its base to (0x[0-9a-f_]+)"
)

UCALL_UNDER_IOEVENTFD = """\
layout: 1
arch: arm64
memslots:
  - {name: code, base: 0x0, size: 2M}
devices:
  - {name: doorbell, type: mmio, handler: ioeventfd, base: 0x20_0000, size: 4K}
  - {name: ucall, type: ucall, base: 0x20_0000}
"""


def _apply_suggested_base(path: Path) -> str:
    """Check ``path``, write the ucall base the finding suggests into it; the suggestion."""
    result = CliRunner().invoke(cli, ["check", "-q", str(path)])
    assert result.exit_code == 1, result.output
    match = _SUGGESTED_BASE.search(result.stdout)
    assert match, result.stdout
    line, column, address = int(match[1]), int(match[2]), match[3]
    lines = path.read_text().splitlines(keepends=True)
    old = lines[line - 1]
    value = re.match(r"0x[0-9a-fA-F_]+", old[column - 1 :])
    assert value, old
    lines[line - 1] = old[: column - 1] + address + old[column - 1 + value.end() :]
    path.write_text("".join(lines))
    return address


@pytest.mark.parametrize(
    "text",
    [
        (ROOT / "layouts/broken/ucall-clobbered-by-memslot.yaml").read_text(),
        UCALL_UNDER_IOEVENTFD,
    ],
    ids=["memslot-over-ucall", "ioeventfd-over-ucall"],
)
def test_the_suggested_ucall_base_makes_check_pass(tmp_path: Path, text: str) -> None:
    path = tmp_path / "layout.yaml"
    path.write_text(text)
    _apply_suggested_base(path)
    result = CliRunner().invoke(cli, ["check", "-q", str(path)])
    assert (result.exit_code, result.stdout.splitlines()[-1]) == (
        0,
        "1 file checked: 0 errors, 0 warnings",
    ), result.stdout


def test_the_suggested_ucall_base_follows_the_selftests_convention(tmp_path: Path) -> None:
    # Slot 0 ends at 0x29_1000 and the test's memslot covers [0x29_1000, 0x49_1000): the first
    # free page past slot 0, where selftests would have put the ucall page, is 0x49_1000.
    path = tmp_path / "layout.yaml"
    path.write_text((ROOT / "layouts/broken/ucall-clobbered-by-memslot.yaml").read_text())
    assert _apply_suggested_base(path) == "0x0049_1000"



@pytest.mark.parametrize(
    ("over", "why"),
    [
        ("{name: co, type: mmio, handler: coalesced, base: 0x0a00_0000, size: 8}", "ring"),
        ("{name: kdev, type: mmio, handler: kernel, base: 0x0a00_0000, size: 4K}", "in-kernel"),
    ],
)
def test_a_ucall_under_a_device_is_not_told_to_make_a_memslot_read_only(
    tmp_path: Path, over: str, why: str
) -> None:
    path = tmp_path / "layout.yaml"
    path.write_text(
        "layout: 1\narch: arm64\nmemslots:\n  - {name: ram, base: 0x4000_0000, size: 1G}\n"
        "devices:\n  - {name: ucall, type: ucall, base: 0x0a00_0000}\n"
        f"  - {over}\n"
    )
    result = CliRunner().invoke(cli, ["check", "-q", "--select", "ucall-not-io", str(path)])
    assert result.exit_code == 1, result.output
    (line,) = [ln for ln in result.output.splitlines() if "ucall-not-io" in ln]
    assert why in line
    assert "set its base to 0x8000_0000" in line  # the fix that does work is still offered
    assert "read-only" not in line  # no memslot is involved: a read-only one would not help
