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

# softmmu/memory.c (system/memory.c since QEMU 8.1) mtree_print_flatview(), mtree_print_mr():
# headers, then one line per range with TARGET_FMT_plx / HWADDR_FMT_plx ("%016" PRIx64: 16 hex
# digits, inclusive end), indented by MTREE_INDENT ("  ") per level.
_FLATVIEW = re.compile(r"FlatView #\d+")
_FLAT_AS = re.compile(r' AS "(?P<name>.*)", root: .*')
_FLAT_ROOT = re.compile(r" Root memory region: .*")
_FLAT_EMPTY = "  No rendered FlatView"
_TREE_AS = re.compile(r"address-space: (?P<name>.*)")
_TREE_MR = re.compile(r"memory-region: (?P<name>.*)")
_RANGE = re.compile(
    r"(?P<overflow>\[DETECTED OVERFLOW!\] )?(?P<indent> *)"
    r"(?P<start>[0-9a-f]{16})-(?P<end>[0-9a-f]{16}) "
    r"\(prio (?P<prio>-?\d{1,10}), (?:nv-)?(?P<type>[^)]*)\): (?P<rest>.*)"
)
_RANGE_LIKE = re.compile(r"(?:\[DETECTED OVERFLOW!\] )?\s*[0-9a-fA-F]+-")
# `info mtree -f -d`: after the ranges of a FlatView, mtree_print_flatview() calls
# softmmu/physmem.c mtree_print_dispatch(), which prints "  Dispatch", "    Physical
# sections", one "      #N @START..END NAME[flags]" line per section, "    Nodes (...)", and
# per node "      [N]" then its entries from mtree_print_phys_entries(), indented with a TAB:
# "\t%3d      " or "\t%3d..%-3d ", then " skip=%d ", then " ptr=NIL", " ptr=#%d" or
# " ptr=[%d]". None of it says where a range is that the ranges above do not.
_DISPATCH = "  Dispatch"
_DISPATCH_LINES = (
    re.compile(r"    Physical sections"),
    re.compile(r"      #\d+ @[0-9a-f]{16}\.\.[0-9a-f]{16}(?: .*)?"),
    re.compile(r"    Nodes \(\d+ bits per level, \d+ levels\) ptr=\[\d+\] skip=\d+"),
    re.compile(r"      \[\d+\]"),
    # The TAB, or the eight spaces an editor may have expanded it to.
    re.compile(
        r"(?:\t| {8})[ \d]{2}\d(?: {6}|\.\.\d[\d ]{2} ) skip=\d+  ptr=(?:NIL|#\d+|\[\d+\])"
    ),
)
# mtree_print_mr_owner(), printed with -o: " orphan", " owner:{...}", " parent:{...}".
_ORPHAN = " orphan"
_OWNER_KEYS = (" owner:{", " parent:{")
_KVM = " KVM"
_OFFSET_DIGITS = 16


class Region(NamedTuple):
    """One range of the flat view: [start, end), QEMU's region name and type; ``line`` and
    ``column`` are where its range line (its start address) is in the input."""

    start: int
    end: int
    name: str
    type: str
    offset: int = 0
    kvm: bool = False
    line: int = 0
    column: int = 1


class Line(NamedTuple):
    number: int
    match: re.Match[str]

    @property
    def column(self) -> int:
        """Where the range begins: its start address, after the indent."""
        return self.match.start("start") + 1


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

# What a FlatView has printed so far decides which lines may follow.
_HEADER, _RANGES, _EMPTY, _DISPATCH_TREE = "header", "ranges", "empty", "dispatch"


def scan(text: str) -> list[Block]:
    blocks: list[Block] = []
    part = _HEADER
    last = 1  # the last line that holds text
    for number, raw in enumerate(LINE_END.split(text), 1):
        line = raw.rstrip()
        if line:
            last = number
        if not line or line.startswith(("(qemu)", "#")):
            continue
        current = blocks[-1] if blocks else None
        header = _header(line, number, current)
        if header is None:
            part = _body_line(current, part, line, number)
        elif header is not current:
            blocks.append(header)
            part = _HEADER
    if not blocks:
        # Reading stopped at the end of the input.
        raise ImportFailure("the input holds no QEMU memory tree output; " + HOW, last)
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


def _body_line(block: Block | None, part: str, line: str, number: int) -> str:
    """Read ``line`` into ``block``; the part of a FlatView it leaves the block in."""
    if block is None:
        raise ImportFailure(
            f"this is not QEMU memory tree output: expected a 'FlatView #0' line (`info mtree "
            f"-f`) or an 'address-space: memory' line (`info mtree`), found {line[:60]!r}; " + HOW,
            number,
        )
    if block.kind == "flat":
        return _flat_line(block, part, line, number)
    if match := _RANGE.fullmatch(line):
        _check_range(match, number, block.kind)
        block.ranges.append(Line(number, match))
        return part
    if _RANGE_LIKE.match(line):
        raise ImportFailure(malformed(line), number, _content_column(line))
    what = "address space" if block.kind == "as" else "memory region"
    raise ImportFailure(
        f"unexpected line {line[:60]!r} in the tree of {what} {block.names[0]!r}: `info mtree` "
        "prints only range lines 'START-END (prio P, TYPE): NAME' there, indented two spaces "
        "a level; " + HOW,
        number,
    )


def _flat_line(block: Block, part: str, line: str, number: int) -> str:
    """Read a line of a FlatView: the lines mtree_print_flatview() prints, in its order."""
    if part == _DISPATCH_TREE:
        if any(pattern.fullmatch(line) for pattern in _DISPATCH_LINES):
            return part
        raise ImportFailure(
            f"unexpected line {line[:60]!r} in the dispatch tree of a FlatView (`info mtree -f "
            "-d`): expected 'Physical sections', '#N @START..END NAME', 'Nodes (...)', '[N]' "
            "or a TAB-indented node entry, as QEMU's mtree_print_dispatch() prints them; " + HOW,
            number,
        )
    if part != _EMPTY:
        if match := _RANGE.fullmatch(line):
            _check_range(match, number, block.kind)
            block.ranges.append(Line(number, match))
            return _RANGES
        if _RANGE_LIKE.match(line):
            raise ImportFailure(malformed(line), number, _content_column(line))
    if part == _HEADER:
        if as_line := _FLAT_AS.fullmatch(line):
            block.names.append(as_line["name"])
            return part
        if _FLAT_ROOT.fullmatch(line):
            return part
        if line == _FLAT_EMPTY:
            return _EMPTY
    if part == _RANGES and line == _DISPATCH:
        return _DISPATCH_TREE
    raise ImportFailure(_unexpected_in_flat_view(line, part), number)


def _unexpected_in_flat_view(line: str, part: str) -> str:
    expected = {
        _HEADER: "' AS \"NAME\", root: ROOT' and ' Root memory region: NAME' lines, then range "
        "lines '  START-END (prio P, TYPE): NAME' (or '  No rendered FlatView')",
        _RANGES: "more range lines '  START-END (prio P, TYPE): NAME' or, with -d, the "
        "'  Dispatch' tree",
        _EMPTY: "the next 'FlatView #N' after '  No rendered FlatView'",
    }[part]
    return (
        f"unexpected line {line[:60]!r} in a FlatView: expected {expected}, as `info mtree -f` "
        "prints them; " + HOW
    )


def _content_column(line: str) -> int:
    """The column of the first character of ``line`` that is not blank."""
    return len(line) - len(line.lstrip()) + 1


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
            match.start("type") + 1,
        )
    if not match["overflow"] and int(match["end"], 16) < int(match["start"], 16):
        raise ImportFailure(
            f"range ends ({match['end']}) before it starts ({match['start']}); " + HOW,
            number,
            match.start("end") + 1,
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
        raise ImportFailure(malformed(match.string), line.number, line.column)
    return Region(
        start=int(match["start"], 16),
        end=int(match["end"], 16) + 1,
        name=name,
        type=match["type"],
        offset=offset,
        kvm=kvm,
        line=line.number,
        column=line.column,
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
