"""The fixes findings suggest work: applied to the layout, the finding goes away."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpa_plan.check.findings import Finding
from gpa_plan.check.run import check_file

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
