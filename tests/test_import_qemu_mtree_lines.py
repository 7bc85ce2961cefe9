"""`info mtree` range lines are read in time linear in their length, and read as before.

The tails of a range line (owner tokens of `info mtree -o`, " KVM" marks, " @OFFSET",
" [disabled]", an alias's "@TARGET START-END") were matched by regular expressions with a lazy
name in front of repeated owner tokens; a long line of owner tokens that did not end as
expected made them backtrack quadratically (a 200 KB line took half a minute). The regular
expressions are kept here as the oracle for what a line means.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gpa_plan.importers.qemu_mtree.text import split_flat_rest
from gpa_plan.importers.qemu_mtree.tree import _split_tree_rest

_OWNER = r"(?: orphan| (?:owner|parent):\{[^{}]*\})*"
_FLAT_REST = re.compile(
    rf"(?P<name>.*?)(?: @(?P<offset>[0-9a-f]{{16}}))?{_OWNER}(?P<kvm>(?: KVM)*)"
)
_TREE_ALIAS = re.compile(
    rf"alias (?P<name>.*?) @(?P<target>.*) (?P<start>[0-9a-f]{{16}})-(?P<end>[0-9a-f]{{16}})"
    rf"(?P<disabled> \[disabled\])?{_OWNER}"
)
_TREE_REST = re.compile(rf"(?P<name>.*?)(?P<disabled> \[disabled\])?{_OWNER}")

# Pieces a line's tail is made of, and pieces that look like them but are not.
_PIECES = st.sampled_from(
    [
        "n",
        " ",
        "@",
        " @",
        " @0000000000001000",
        " @000000000000100",
        " orphan",
        "orphan",
        " owner:{dev id=uart0}",
        " parent:{obj path=/machine}",
        " owner:{",
        "}",
        "{",
        " owner:{a} b}",
        " KVM",
        "KVM",
        " [disabled]",
        "alias ",
        "alias x",
        " 0000000000000000-0000000000000fff",
        " 0000000000000000-000000000000fff",
    ]
)
_TAILS = st.lists(_PIECES, max_size=8).map("".join)


@settings(max_examples=600, deadline=None)
@given(_TAILS)
def test_a_flat_view_tail_means_what_the_regular_expression_said(rest: str) -> None:
    match = _FLAT_REST.fullmatch(rest)
    assert match is not None  # the lazy name takes whatever the tail cannot
    expected = (
        match["name"],
        int(match["offset"], 16) if match["offset"] else 0,
        bool(match["kvm"]),
    )
    assert split_flat_rest(rest) == expected


@settings(max_examples=600, deadline=None)
@given(_TAILS)
def test_a_tree_view_tail_means_what_the_regular_expressions_said(rest: str) -> None:
    alias = _TREE_ALIAS.fullmatch(rest)
    match = alias or _TREE_REST.fullmatch(rest)
    assert match is not None
    got = _split_tree_rest(rest)
    assert got.name == match["name"]
    assert got.disabled == bool(match["disabled"])
    assert got.alias == ((alias["target"], int(alias["start"], 16)) if alias else None)


def _run_import(
    tmp_path: Path, text: str, timeout: float = 10
) -> subprocess.CompletedProcess[str]:
    mtree = tmp_path / "mtree.txt"
    mtree.write_text(text)
    # A quadratic reading of these 200 KB lines takes 15 to 30 s; a linear one, a fraction
    # of a second. The guard leaves room for a slow machine.
    return subprocess.run(
        [sys.executable, "-m", "gpa_plan", "import", "qemu-mtree", str(mtree), "--arch", "arm64"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


_HOSTILE_TAIL = " owner:{x}" * 20_000 + " x"


def test_a_long_flat_view_line_of_owner_tokens_is_read_in_bounded_time(tmp_path: Path) -> None:
    done = _run_import(
        tmp_path,
        'FlatView #0\n AS "memory", root: system\n Root memory region: system\n'
        "  0000000040000000-000000007fffffff (prio 0, ram): mach-virt.ram KVM\n"
        f"  0000000009000000-0000000009000fff (prio 0, i/o): pl011{_HOSTILE_TAIL}\n",
    )
    assert done.returncode == 0, done.stderr
    # The tail does not end in owner tokens, so all of it is the region's name.
    assert f"pl011{_HOSTILE_TAIL}" in done.stdout


def test_a_long_tree_view_alias_line_of_owner_tokens_is_read_in_bounded_time(
    tmp_path: Path,
) -> None:
    done = _run_import(
        tmp_path,
        "address-space: memory\n"
        "  0000000000000000-ffffffffffffffff (prio 0, container): system\n"
        "    0000000040000000-000000007fffffff (prio 0, ram): mach-virt.ram\n"
        "    0000000009000000-0000000009000fff (prio 0, i/o): alias pl011 @t "
        f"0000000000000000-0000000000000fff{_HOSTILE_TAIL}\n",
    )
    assert done.returncode == 0, done.stderr
    assert f"alias pl011 @t 0000000000000000-0000000000000fff{_HOSTILE_TAIL}" in done.stdout


def test_thousands_of_ranges_of_one_name_at_one_base_are_named_in_bounded_time(
    tmp_path: Path,
) -> None:
    n = 40_000
    done = _run_import(
        tmp_path,
        'FlatView #0\n AS "memory", root: system\n Root memory region: system\n'
        "  0000000040000000-000000007fffffff (prio 0, ram): mach-virt.ram KVM\n"
        + "  0000000009000000-0000000009000fff (prio 0, i/o): x\n" * n,
        # Trying every suffix taken before for each range took about 100 s here.
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "name: x-0x9000000\n" in done.stdout
    assert f"name: x-0x9000000-{n}\n" in done.stdout


def test_lines_end_at_line_ends_only_not_at_separators_inside_a_name(tmp_path: Path) -> None:
    # str.splitlines() cut a name at \x1d or U+2028 and counted each piece as a line.
    name = "pl\x1d011\u2028x"
    done = _run_import(
        tmp_path,
        'FlatView #0\r\n AS "memory", root: system\x1c\r\n Root memory region: system\r\n'
        f"  0000000009000000-0000000009000fff (prio 0, i/o): {name}\r\n",
    )
    assert done.returncode == 0, done.stderr
    assert 'name: "pl\\u001d011\\u2028x"\n' in done.stdout
    done = _run_import(
        tmp_path,
        'FlatView #0\n AS "memory", root: system\n Root memory region: system\n'
        f"  0000000009000000-0000000009000fff (prio 0, i/o): {name}\nnot mtree\n",
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"{tmp_path / 'mtree.txt'}:5:1: error[import] ")


def test_a_byte_that_is_not_utf8_is_said_at_its_line_whatever_the_line_ends(
    tmp_path: Path,
) -> None:
    mtree = tmp_path / "mtree.txt"
    mtree.write_bytes(b'FlatView #0\r AS "memory", root: system\r \xff\r')
    done = subprocess.run(
        [sys.executable, "-m", "gpa_plan", "import", "qemu-mtree", str(mtree)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"{mtree}:3:2: error[import] not UTF-8 text (byte 0xff at offset 40): "
    )
