"""`allocate --in-place` rewrites a layout safely: the result always loads to the same plan."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gpa_plan.check.run import check_file
from gpa_plan.cli import cli
from gpa_plan.layout.loader import load_text
from gpa_plan.layout.validate import validate_layout
from gpa_plan.plan import allocate_file
from gpa_plan.plan.allocate import allocate
from gpa_plan.plan.inplace import InPlaceError, verify

LAYOUT = "layout: 1\narch: arm64\nmemslots:\n  - name: ram\n    base: auto\n    size: 1G\n"
RAM = "layout: 1\narch: arm64\nmemslots:\n  - name: ram\n    base: 0x0000_0000\n    size: 1G\n"
UCALL_SLOT = (
    "  - name: ucall-slot\n    slot: 1\n    base: 0x4000_0000\n    size: 4096\n"
    "    readonly: true\n"
)
UCALL_DEVICE = "devices:\n  - name: ucall\n    type: ucall\n    base: 0x4000_0000\n"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def in_place(*args: str) -> Result:
    return CliRunner().invoke(cli, ["allocate", "--in-place", *args], catch_exceptions=False)


def entries(path: str) -> list[str]:
    return sorted(os.listdir(os.path.dirname(path) or "."))


def assert_checks_clean(path: str) -> None:
    (result,) = check_file(path)
    assert result.valid
    assert result.findings == ()


# -- source shapes the rewriter handles ---------------------------------------------------


def indented(text: str) -> str:
    return "".join("  " + line for line in text.splitlines(keepends=True))


BLOCK_SCALAR = LAYOUT.replace("  - name: ram\n", "  - size: 1G\n").replace(
    "    size: 1G\n", "    name: |-\n      ram\n"
)
SHAPES = {
    # source -> what --in-place --ucall-memslot makes of it
    "cr line ends": (LAYOUT.replace("\n", "\r"), (RAM + UCALL_SLOT + UCALL_DEVICE).replace(
        "\n", "\r"
    )),
    "nel line ends": (LAYOUT.replace("\n", "\x85"), (RAM + UCALL_SLOT + UCALL_DEVICE).replace(
        "\n", "\x85"
    )),
    "last entry a block scalar": (
        BLOCK_SCALAR + "# reserved ranges\nreserved: []\n",
        BLOCK_SCALAR.replace("auto", "0x0000_0000")
        + UCALL_SLOT
        + "# reserved ranges\nreserved: []\n"
        + UCALL_DEVICE,
    ),
    "last entry a folded scalar before blank lines": (
        BLOCK_SCALAR.replace("|-", ">") + "\n\n",
        BLOCK_SCALAR.replace("|-", ">").replace("auto", "0x0000_0000")
        + UCALL_SLOT
        + "\n\n"
        + UCALL_DEVICE,
    ),
    "document end marker": (LAYOUT + "...\n", RAM + UCALL_SLOT + UCALL_DEVICE + "...\n"),
    "document indented as a whole": (
        indented(LAYOUT),
        indented(RAM + UCALL_SLOT + UCALL_DEVICE),
    ),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_in_place_rewrites_each_source_shape_into_a_file_that_checks_clean(
    workdir: Path, shape: str
) -> None:
    source, expected = SHAPES[shape]
    Path("layout.yaml").write_bytes(source.encode())
    result = in_place("--ucall-memslot", "layout.yaml")
    assert result.exit_code == 0, result.output
    assert Path("layout.yaml").read_bytes().decode() == expected
    assert_checks_clean("layout.yaml")


def test_a_kept_block_scalar_keeps_its_trailing_lines(workdir: Path) -> None:
    source = BLOCK_SCALAR.replace("|-", "|+") + "\n"
    Path("layout.yaml").write_text(source)
    assert in_place("--ucall-memslot", "layout.yaml").exit_code == 0
    after = Path("layout.yaml").read_text()
    assert after == source.replace("auto", "0x0000_0000") + UCALL_SLOT + UCALL_DEVICE
    assert_checks_clean("layout.yaml")
    assert load_text(after, "layout.yaml").data["memslots"][0]["name"] == "ram\n\n"


# -- the guard: nothing is written that does not load to the same plan -----------------------


def test_a_shared_auto_anchor_is_refused_and_the_file_left_as_it_was(workdir: Path) -> None:
    source = (
        "layout: 1\narch: arm64\nmemslots:\n  - {name: a, base: &x auto, size: 1G}\n"
        "  - {name: b, base: *x, size: 1G}\n"
    )
    Path("layout.yaml").write_text(source)
    result = in_place("layout.yaml")
    assert result.exit_code == 1
    assert result.stderr == (
        "layout.yaml: error: cannot fill in the `auto` values of this file in place (it would "
        "not load: line 5, column 21: found undefined alias); the file is left as it was: "
        "fill them in by hand, or write the resolved layout to another file with -o\n"
    )
    assert Path("layout.yaml").read_text() == source
    assert entries("layout.yaml") == ["layout.yaml"]


def test_a_rewrite_that_breaks_the_file_is_never_written(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Path("layout.yaml").write_text(LAYOUT)
    monkeypatch.setattr(allocate_file, "rewrite", lambda text, doc, allocation: text + "  x\n")
    result = in_place("layout.yaml")
    assert result.exit_code == 1
    assert "(it would not load: line 8, column 1:" in result.stderr
    assert Path("layout.yaml").read_text() == LAYOUT
    assert entries("layout.yaml") == ["layout.yaml"]


def planned(text: str) -> allocate_file.Allocation:
    return allocate(validate_layout(load_text(text, "layout.yaml")), ucall=True)


@pytest.mark.parametrize(
    ("rewritten", "why"),
    [
        (RAM + "devices:\n- name: ucall\n  type: ucall\n base: 0x4000_0000\n", "would not load"),
        (RAM + UCALL_DEVICE.replace("0x4000_0000", "auto"), "`auto` would be left in device "
                                                              "'ucall'"),
        (RAM + UCALL_DEVICE.replace("0x4000_0000", "0x5000_0000"), "would not resolve to the "
                                                                     "same plan"),
        (RAM.replace("base: 0x0000_0000", "slot: auto\n    base: 0x0000_0000") + UCALL_DEVICE,
         "`auto` would be left in memslot 'ram'"),
    ],
)
def test_verify_refuses_text_that_does_not_load_the_same_plan(rewritten: str, why: str) -> None:
    with pytest.raises(InPlaceError, match=why):
        verify(rewritten, "layout.yaml", planned(LAYOUT))
    verify(RAM + UCALL_DEVICE, "layout.yaml", planned(LAYOUT))  # the right text passes
