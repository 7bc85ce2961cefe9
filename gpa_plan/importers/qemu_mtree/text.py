"""Reading `info mtree` output: its lines, the blocks they form (FlatViews, tree view address
spaces, alias targets), and the regions of a flat view; with the messages every module of the
importer shares."""

from __future__ import annotations

import re
from typing import NamedTuple

from gpa_plan.importers import ImportFailure

HOW = "run `info mtree -f` in the QEMU monitor (HMP) and save everything it prints"
_MAX_LISTED = 6

# system/memory.c memory_region_type(); the flat view prints "rom" for any read-only range.
_TYPES = frozenset({"ram", "rom", "romd", "ramd", "i/o", "container"})
MEMORY_TYPES = frozenset({"ram", "rom", "romd", "ramd"})

# system/memory.c mtree_info_flatview() / mtree_print_flatview(), mtree_info_as() /
# mtree_print_mr(): headers, then one line per range with HWADDR_FMT_plx (16 hex digits,
# inclusive end), indented by MTREE_INDENT per level.
_FLATVIEW = re.compile(r"FlatView #\d+")
_FLAT_AS = re.compile(r' AS "(?P<name>.*)", root: .*')
_TREE_AS = re.compile(r"address-space: (?P<name>.*)")
_TREE_MR = re.compile(r"memory-region: (?P<name>.*)")
_RANGE = re.compile(
    r"(?P<overflow>\[DETECTED OVERFLOW!\] )?(?P<indent> *)"
    r"(?P<start>[0-9a-f]{16})-(?P<end>[0-9a-f]{16}) "
    r"\(prio (?P<prio>-?\d{1,10}), (?:nv-)?(?P<type>[^)]*)\): (?P<rest>.*)"
)
_RANGE_LIKE = re.compile(r"(?:\[DETECTED OVERFLOW!\] )?\s*[0-9a-fA-F]+-")
# mtree_print_mr_owner(), printed with -o: " orphan", " owner:{...}", " parent:{...}".
_ORPHAN = " orphan"
_OWNER_KEYS = (" owner:{", " parent:{")
_KVM = " KVM"
_OFFSET_DIGITS = 16


class Region(NamedTuple):
    """One range of the flat view: [start, end), QEMU's region name and type."""

    start: int
    end: int
    name: str
    type: str
    offset: int = 0
    kvm: bool = False
    line: int = 0


class Line(NamedTuple):
    number: int
    match: re.Match[str]


class Block(NamedTuple):
    """``flat``: a FlatView; ``as``: a tree view address space; ``mr``: a tree view alias
    target. ``names``: the address spaces (flat, as) or the region (mr)."""

    kind: str
    names: list[str]
    line: int
    ranges: list[Line]


# Lines end as an editor ends them. str.splitlines() also splits at the C0 separators
# (\x1c-\x1e), NEL and U+2028, so a name holding one was read as two lines and every later
# line number was off.
LINE_END = re.compile("\r\n|\r|\n")


def scan(text: str) -> list[Block]:
    blocks: list[Block] = []
    for number, raw in enumerate(LINE_END.split(text), 1):
        line = raw.rstrip()
        if not line or line.startswith(("(qemu)", "#")):
            continue
        current = blocks[-1] if blocks else None
        header = _header(line, number, current)
        if header is None:
            _body_line(current, line, number)
        elif header is not current:
            blocks.append(header)
    return blocks


def _header(line: str, number: int, current: Block | None) -> Block | None:
    if _FLATVIEW.fullmatch(line):
        return Block("flat", [], number, [])
    if match := _TREE_AS.fullmatch(line):
        # mtree_print_as(): every address space sharing a root is listed before its tree.
        if current is not None and current.kind == "as" and not current.ranges:
            current.names.append(match["name"])
            return current
        return Block("as", [match["name"]], number, [])
    if match := _TREE_MR.fullmatch(line):
        return Block("mr", [match["name"]], number, [])
    return None


def _body_line(block: Block | None, line: str, number: int) -> None:
    if block is None:
        raise ImportFailure(
            f"this is not QEMU memory tree output: expected a 'FlatView #0' line (`info mtree "
            f"-f`) or an 'address-space: memory' line (`info mtree`), found {line[:60]!r}; " + HOW,
            number,
        )
    if match := _RANGE.fullmatch(line):
        _check_range(match, number, block.kind)
        block.ranges.append(Line(number, match))
    elif _RANGE_LIKE.match(line):
        raise ImportFailure(malformed(line), number)
    elif block.kind == "flat" and line.startswith(" "):
        as_line = _FLAT_AS.fullmatch(line)
        if as_line and not block.ranges:
            block.names.append(as_line["name"])
        # else the root line, "No rendered FlatView" or a dispatch tree (-d): nothing to read
    else:
        raise ImportFailure(
            f"unexpected line in QEMU memory tree output: {line[:60]!r}; " + HOW, number
        )


def malformed(line: str) -> str:
    return (
        f"malformed range line {line.strip()[:80]!r}: expected "
        "'START-END (prio P, TYPE): NAME' with 16-digit hex addresses, as "
        "`info mtree -f` prints it; " + HOW
    )


def _check_range(match: re.Match[str], number: int, kind: str) -> None:
    if match["overflow"] and kind == "flat":
        # mtree_print_mr() marks overflows; mtree_print_flatview() prints none.
        raise ImportFailure(
            "'[DETECTED OVERFLOW!]' in a flat view, where QEMU never prints it; " + HOW, number
        )
    if match["type"] not in _TYPES:
        raise ImportFailure(
            f"unknown region type {match['type']!r}: expected one of "
            f"{', '.join(sorted(_TYPES))} (QEMU's memory_region_type()); output of a QEMU "
            "older than that is not read; " + HOW,
            number,
        )
    if not match["overflow"] and int(match["end"], 16) < int(match["start"], 16):
        raise ImportFailure(
            f"range ends ({match['end']}) before it starts ({match['start']}); " + HOW, number
        )


def listing(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def flat_regions(block: Block, notes: list[str]) -> list[Region]:
    if not block.ranges:
        raise ImportFailure(
            'the FlatView of "memory" has no ranges (QEMU printed "No rendered FlatView"): '
            "nothing to import; " + HOW,
            block.line,
        )
    regions = [_flat_region(line) for line in block.ranges]
    if not any(r.kvm for r in regions):
        notes.append(
            "No range carries QEMU's KVM mark (mtree_print_flatview() prints it after every "
            "range KVM holds as a memslot): the output is from TCG or an older QEMU; it is "
            "imported as KVM would map it."
        )
    return regions


def _flat_region(line: Line) -> Region:
    match = line.match
    name, offset, kvm = split_flat_rest(match["rest"])
    if not name:
        raise ImportFailure(malformed(match.string), line.number)
    return Region(
        start=int(match["start"], 16),
        end=int(match["end"], 16) + 1,
        name=name,
        type=match["type"],
        offset=offset,
        kvm=kvm,
        line=line.number,
    )


# The tails of a range line are read from the right, token by token, so every line costs time
# in proportion to its length: a regular expression with a lazy name before repeated owner
# tokens backtracks quadratically on a line of many tokens that does not end as expected.


def split_flat_rest(rest: str) -> tuple[str, int, bool]:
    """NAME, OFFSET (0 when absent) and whether KVM holds the range, from what
    mtree_print_flatview() prints after the type: NAME, " @OFFSET" when offset_in_region is
    not 0, the owner, then the accelerator's name for each address space it holds the range as
    memory in (AccelClass has_memory(); accel/kvm/kvm-all.c kvm_accel_has_memory(), ac->name
    "KVM"). The name is what is left, possibly empty."""
    end = len(rest)
    while rest.endswith(_KVM, 0, end):
        end -= len(_KVM)
    kvm = end < len(rest)
    end = owners_start(rest, end)
    offset = 0
    digits_at = end - _OFFSET_DIGITS
    if digits_at >= 2 and rest.startswith(" @", digits_at - 2):
        digits = rest[digits_at:end]
        if all(c in "0123456789abcdef" for c in digits):
            offset, end = int(digits, 16), digits_at - 2
    return rest[:end], offset, kvm


def owners_start(text: str, end: int) -> int:
    """Where the owner tokens that ``text[:end]`` ends with begin (``end`` when there are
    none): " orphan", " owner:{...}" or " parent:{...}", braces not nested."""
    while True:
        if text.endswith(_ORPHAN, 0, end):
            end -= len(_ORPHAN)
            continue
        if end == 0 or text[end - 1] != "}":
            return end
        brace = text.rfind("{", 0, end - 1)
        if brace < 0 or text.find("}", brace, end - 1) >= 0:
            return end
        key = next((k for k in _OWNER_KEYS if text.endswith(k, 0, brace + 1)), None)
        if key is None:
            return end
        end = brace + 1 - len(key)
