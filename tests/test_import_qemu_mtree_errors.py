"""Every refusal of `gpa-plan import qemu-mtree` names FILE:LINE:COL, exit 1, nothing on stdout.

LINE and COL are 1-based, as editors count them. COL is where the problem starts on its line:
the start address of a range line (after its indent), the region type or end address that is
wrong, the byte that is not UTF-8; 1 for a line that is wrong as a whole, and for a problem of
a block or of the input, which is located at the line that starts the block or, for input that
ends too soon, at its last line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from gpa_plan.cli import cli

HEADER = 'FlatView #0\n AS "memory", root: system\n Root memory region: system\n'
FULL = "0000000000000000-00000000ffffffff"
TREE = f"address-space: memory\n  {FULL} (prio 0, container): system\n"

CASES = [
    # (id, input, extra arguments, LINE:COL, start of the message)
    ("empty input", "", [], "1:1", "the input holds no QEMU memory tree output"),
    ("only a prompt", "\n(qemu) info mtree -f\n\n", [], "2:1", "the input holds no QEMU"),
    ("other text", '\n{"return": ""}\n', [], "2:1", "this is not QEMU memory tree output"),
    (
        "malformed range",
        HEADER + "  00000000000a0000-00000000000bfff (prio 1, i/o): vga-lowmem\n",
        [],
        "4:3",
        "malformed range line",
    ),
    (
        "unknown type",
        HEADER + "  0000000000000000-0000000000000fff (prio 0, RW): pc.ram\n",
        [],
        "4:46",
        "unknown region type 'RW'",
    ),
    (
        "end before start",
        HEADER + "  0000000000002000-0000000000000fff (prio 0, ram): pc.ram\n",
        [],
        "4:20",
        "range ends (0000000000000fff) before it starts",
    ),
    (
        "overflow mark in a flat view",
        HEADER + "[DETECTED OVERFLOW!]   0000000000002000-0000000000000fff (prio 0, ram): r\n",
        [],
        "4:1",
        "'[DETECTED OVERFLOW!]' in a flat view",
    ),
    (
        "unexpected flat view line",
        HEADER + "  0000000000000000-000000000009ffff (prio 0, ram): pc.ram\n  stray\n",
        [],
        "5:1",
        "unexpected line '  stray' in a FlatView",
    ),
    (
        "unexpected dispatch line",
        HEADER + "  0000000000000000-000000000009ffff (prio 0, ram): pc.ram\n  Dispatch\n\tx\n",
        [],
        "6:1",
        "unexpected line '\\tx' in the dispatch tree",
    ),
    (
        "unexpected tree line",
        TREE + "\tstray\n",
        [],
        "3:1",
        "unexpected line '\\tstray' in the tree of address space 'memory'",
    ),
    (
        "no rendered memory view",
        "\n" + HEADER + "  No rendered FlatView\n",
        [],
        "2:1",
        'the FlatView of "memory" has no ranges',
    ),
    (
        "no memory address space",
        'FlatView #0\n AS "I/O", root: io\n Root memory region: io\n'
        "  0000000000000000-000000000000ffff (prio 0, i/o): io\n",
        [],
        "4:1",
        'no FlatView of the address space "memory"',
    ),
    (
        "tree without ranges",
        "address-space: memory\n",
        [],
        "1:1",
        'the tree of address space "memory" has no regions',
    ),
    (
        "tree that maps nothing",
        "address-space: memory\n  0000000000000000-0000000000000000 (prio 0, i/o): system\n",
        [],
        "1:1",
        'the tree of address space "memory" maps nothing',
    ),
    (
        "tree root indented",
        "address-space: memory\n    0000000000000000-0000000000000fff (prio 0, ram): pc.ram\n",
        [],
        "2:5",
        "malformed range line",
    ),
    (
        "tree line of odd indent",
        TREE + "     0000000000000000-0000000000000fff (prio 0, ram): pc.ram\n",
        [],
        "3:6",
        "malformed range line",
    ),
    (
        "tree line below no parent",
        TREE + "        0000000000000000-0000000000000fff (prio 0, ram): pc.ram\n",
        [],
        "3:9",
        "range line indented to no parent",
    ),
    (
        "alias without its target",
        TREE + f"    {FULL} (prio 0, i/o): alias ram-below-4g @pc.ram {FULL}\n",
        ["--arch", "x86_64"],
        "3:5",
        "alias 'ram-below-4g' points at region 'pc.ram'",
    ),
    (
        "aliases in a loop",
        TREE
        + f"    {FULL} (prio 0, i/o): alias to-a @a {FULL}\n"
        + f"memory-region: a\n  {FULL} (prio 0, container): a\n"
        + f"    {FULL} (prio 0, i/o): alias back @a {FULL}\n",
        ["--arch", "x86_64"],
        "6:5",
        "aliases refer to each other in a loop",
    ),
    (
        "the whole 64-bit space",
        HEADER + "  0000000000000000-ffffffffffffffff (prio 0, ram): x\n",
        ["--arch", "arm64"],
        "4:3",
        "range 'x' covers the whole 64-bit address space",
    ),
    (
        "an in-kernel device past 2**64",
        HEADER + "  fffffffffffff000-ffffffffffffffff (prio 0, i/o): gic_cpu\n",
        ["--arch", "arm64"],
        "4:3",
        "in-kernel device 'gic_cpu' at 0xfffffffffffff000 would end past 2**64",
    ),
    (
        "names of two architectures",
        HEADER
        + "  0000000000000000-000000000009ffff (prio 0, ram): pc.ram\n"
        + "  0000000008000000-000000000800ffff (prio 0, i/o): gicv3_dist\n",
        [],
        "5:3",
        "region names of two architectures",
    ),
    (
        "names of no architecture",
        HEADER + "  0000000000000000-000000000009ffff (prio 0, ram): ram\n",
        [],
        "1:1",
        "cannot tell the architecture",
    ),
    (
        "a page size the guest's architecture has not",
        HEADER
        + "  0000000000000000-000000000009ffff (prio 0, ram): ram\n"
        + "  0000000000100000-0000000001ffffff (prio 0, ram): pc.ram\n",
        ["--page-size", "64K"],
        "5:3",
        "host page size 64 KiB is not one x86_64 has (4K), and region 'pc.ram' here says the "
        "guest is x86_64; give the host's page size (--page-size)",
    ),
]


@pytest.mark.parametrize(
    ("text", "args", "where", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_a_refused_input_is_named_at_its_line_and_column(
    tmp_path: Path, text: str, args: list[str], where: str, message: str
) -> None:
    source = tmp_path / "mtree.txt"
    source.write_text(text)
    result = CliRunner().invoke(cli, ["import", "qemu-mtree", str(source), *args])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr.startswith(f"{source}:{where}: error[import] {message}")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (b"FlatView #0\n\xff\xfe\n", "2:1"),
        (b'FlatView #0\n AS "memory", root: \xe9\n', "2:21"),
        # Characters, not bytes, before it on its line: the e with an acute accent is one
        # character of two bytes, so the column is that of the plain "memory" line above.
        ('FlatView #0\n AS "m\u00e9mory", root: '.encode() + b"\xff\n", "2:21"),
    ],
    ids=["line start", "mid-line", "after a two-byte character"],
)
def test_bytes_that_are_not_utf8_are_named_at_their_line_and_column(
    tmp_path: Path, data: bytes, where: str
) -> None:
    source = tmp_path / "mtree.txt"
    source.write_bytes(data)
    result = CliRunner().invoke(cli, ["import", "qemu-mtree", str(source)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{source}:{where}: error[import] not UTF-8 text (byte ")


def test_a_page_size_the_given_arch_has_not_is_a_usage_error_before_reading(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "missing.txt"
    result = CliRunner().invoke(
        cli, ["import", "qemu-mtree", str(missing), "--arch", "x86_64", "--page-size", "64K"]
    )
    assert result.exit_code == 2
    assert "host page size 64 KiB is not one x86_64 has (4K) (--arch x86_64)" in result.stderr
