"""The tree view (plain `info mtree`) flattened into the regions a flat view would list, the
way QEMU's render_memory_region() does; the package docstring says what is guessed."""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from typing import NamedTuple

from gpa_plan.importers import ImportFailure
from gpa_plan.importers.qemu_mtree.text import (
    HOW,
    MEMORY_TYPES,
    Block,
    Line,
    Region,
    listing,
    malformed,
    owners_start,
)
from gpa_plan.ranges import U64_LIMIT

# Flattening a tree view: regions visited plus painted intervals stepped over. Real trees
# need a few per range line; aliases that fan out (each rendering its target again) could
# need 2**depth.
_WORK_BUDGET = 1_000_000
# Alias hops on one path; QEMU's machines nest two or three.
_MAX_ALIAS_HOPS = 64
# mtree_print_mr(): "alias NAME @TARGET START-END" with the offsets into TARGET; matched
# against a line's head only, once its tail is split off, so it cannot backtrack far.
_ALIAS_OFFSETS = re.compile(r" (?P<start>[0-9a-f]{16})-(?P<end>[0-9a-f]{16})")
_ALIAS_OFFSETS_LENGTH = 34
_DISABLED = " [disabled]"
_ALIAS = "alias "


class _TreeRest(NamedTuple):
    name: str
    disabled: bool
    alias: tuple[str, int] | None  # (target, offset into it)


def _split_tree_rest(rest: str) -> _TreeRest:
    """What mtree_print_mr() prints after the type: NAME or "alias NAME @TARGET START-END",
    then " [disabled]" when the region is not enabled, then the owner (with -o). Read from
    the right, so a line costs time in proportion to its length."""
    end = owners_start(rest, len(rest))
    disabled = rest.endswith(_DISABLED, 0, end)
    if disabled:
        end -= len(_DISABLED)
    head = rest[:end]
    if not head.startswith(_ALIAS):
        return _TreeRest(head, disabled, None)
    offsets_at = max(len(head) - _ALIAS_OFFSETS_LENGTH, 0)
    offsets = _ALIAS_OFFSETS.fullmatch(head, offsets_at)
    # The name is the shortest that leaves " @TARGET" before the offsets.
    at = head.find(" @", len(_ALIAS), offsets_at) if offsets else -1
    if offsets is None or at < 0:
        return _TreeRest(head, disabled, None)
    target = (head[at + 2 : offsets_at], int(offsets["start"], 16))
    return _TreeRest(head[len(_ALIAS) : at], disabled, target)


def tree_region_name(rest: str) -> str:
    """The region's name in what mtree_print_mr() prints after a range's type."""
    return _split_tree_rest(rest).name


class _Node(NamedTuple):
    start: int
    end: int  # exclusive; equal to start for the zero-size regions
    priority: int
    type: str
    name: str
    alias: tuple[str, int] | None  # target region, offset into it
    rendered: bool  # enabled and not an overflow QEMU flagged
    line: int
    column: int  # of its start address
    children: list[_Node]


def tree_regions(block: Block, targets: list[Block], notes: list[str]) -> list[Region]:
    root = _tree(block)
    if root is None:
        raise ImportFailure(
            'the tree of address space "memory" has no regions: nothing to import; ' + HOW,
            block.line,
        )
    regions_by_name: dict[str, _Node] = {}
    for target in targets:
        tree = _tree(target)
        if tree is not None:
            regions_by_name.setdefault(target.names[0], tree)
    painter = _Painter()
    _render(root, regions_by_name, painter)
    skipped = list(dict.fromkeys(painter.skipped))
    regions = painter.regions()
    if not regions:
        raise ImportFailure('the tree of address space "memory" maps nothing; ' + HOW, block.line)
    notes.append(
        "Read from the tree view (`info mtree`), flattened as QEMU's render_memory_region() "
        "does: leaf i/o regions are taken as devices (an empty container looks the same), "
        "overlaps of equal priority in printed order; `info mtree -f` is exact."
    )
    if skipped:
        notes.append(f"Skipped zero-size, disabled or overflowing regions: {listing(skipped)}.")
    return regions


def _tree(block: Block) -> _Node | None:
    """The region tree of a tree view block, its first line the root (level 1), subregions
    in the order QEMU renders them; None when the block has no range lines."""
    stack: list[_Node] = []
    root: _Node | None = None
    nodes: list[_Node] = []
    for line in block.ranges:
        level, node = _node(line)
        if root is None:
            if level != 1:
                raise ImportFailure(malformed(line.match.string), line.number, line.column)
            root = node
        elif level < 2 or level > len(stack) + 1:
            raise ImportFailure(
                f"range line indented to no parent: {line.match.string.strip()[:80]!r}; " + HOW,
                line.number,
                line.column,
            )
        else:
            stack[level - 2].children.append(node)
        del stack[level - 1 :]
        stack.append(node)
        nodes.append(node)
    for node in nodes:
        # Printed order is address, then priority; a stable sort keeps it among equal
        # priorities (the docstring says why that is a guess).
        node.children.sort(key=lambda child: -child.priority)
    return root


def _node(line: Line) -> tuple[int, _Node]:
    match = line.match
    indent = len(match["indent"])
    rest = _split_tree_rest(match["rest"])
    if indent % 2 or not rest.name:
        raise ImportFailure(malformed(match.string), line.number, line.column)
    start, last = int(match["start"], 16), int(match["end"], 16)
    node = _Node(
        start=start,
        # MR_SIZE(): a zero-size region prints as START-START, like a one-byte one.
        end=last + 1 if last > start else start,
        priority=int(match["prio"]),
        type=match["type"],
        name=rest.name,
        alias=rest.alias,
        rendered=not rest.disabled and not match["overflow"],
        line=line.number,
        column=line.column,
        children=[],
    )
    return indent // 2, node


class _Painter:
    """The flat view being built: what is painted first stays on top.

    ``_starts``/``_ends`` hold the painted space as sorted, disjoint, non-adjacent intervals:
    finding the gaps a range may fill (or that it has none) takes a bisection, and every
    interval stepped over is merged away, so painting is O(log n) per piece amortised, with
    no scan of all pieces and no re-sort (the pieces are sorted once, by regions()).
    """

    def __init__(self) -> None:
        self._pieces: list[Region] = []
        self._starts: list[int] = []
        self._ends: list[int] = []
        self.skipped: list[str] = []  # zero-size, disabled or overflowing regions met
        self.work = 0  # regions visited and painted intervals stepped over, for _WORK_BUDGET

    def covered(self, start: int, end: int) -> bool:
        """Whether [start, end) is painted already, all of it."""
        index = bisect_right(self._starts, start) - 1
        return index >= 0 and self._ends[index] >= end

    def paint(self, start: int, end: int, node: _Node, region_start: int) -> None:
        # system/memory.c render_memory_region(): a range only fills the gaps left between
        # the ranges rendered before it. Intervals that merely touch [start, end) are taken
        # too, so that they merge with it.
        first = bisect_left(self._ends, start)
        last = bisect_right(self._starts, end)
        cursor = start
        for low, high in zip(self._starts[first:last], self._ends[first:last], strict=True):
            if low > cursor:
                self._piece(cursor, low, node, region_start)
            cursor = max(cursor, high)
        if cursor < end:
            self._piece(cursor, end, node, region_start)
        self.work += last - first
        if first < last:
            start, end = min(start, self._starts[first]), max(end, self._ends[last - 1])
        self._starts[first:last] = [start]
        self._ends[first:last] = [end]

    def _piece(self, low: int, high: int, node: _Node, region_start: int) -> None:
        offset = low - region_start
        self._pieces.append(
            Region(low, high, node.name, node.type, offset, False, node.line, node.column)
        )

    def regions(self) -> list[Region]:
        """The pieces by address, adjacent ones of one region merged (flatview_simplify())."""
        merged: list[Region] = []
        for piece in sorted(self._pieces):
            last = merged[-1] if merged else None
            if (
                last is not None
                and last.end == piece.start
                and last.line == piece.line
                and last.offset + (last.end - last.start) == piece.offset
            ):
                merged[-1] = last._replace(end=piece.end)
            else:
                merged.append(piece)
        return merged


class _Visit(NamedTuple):
    """Render ``node`` at its printed addresses + ``shift``, within [clip)."""

    node: _Node
    shift: int
    clip: tuple[int, int]
    aliases: tuple[str, ...]  # the alias targets followed to reach it, outermost first


class _Fill(NamedTuple):
    """Paint a terminating region's range, once its subregions are rendered."""

    node: _Node
    start: int
    end: int
    region_start: int


def _render(root: _Node, targets: dict[str, _Node], painter: _Painter) -> None:
    """Paint the tree under ``root`` as QEMU's render_memory_region() does: subregions by
    descending priority, then the region itself if it terminates; an alias renders its
    target, shifted so that its offset lands where the alias is. A stack of tasks stands in
    for the recursion, so nesting may be as deep as the input has it."""
    todo: list[_Visit | _Fill] = [_Visit(root, 0, (0, U64_LIMIT), ())]
    while todo:
        task = todo.pop()
        painter.work += 1
        if painter.work > _WORK_BUDGET:
            raise ImportFailure(_too_much_work(task.node), task.node.line, task.node.column)
        if isinstance(task, _Fill):
            painter.paint(task.start, task.end, task.node, task.region_start)
        else:
            todo += reversed(_visit(task, targets, painter))


def _visit(task: _Visit, targets: dict[str, _Node], painter: _Painter) -> list[_Visit | _Fill]:
    """What rendering ``task`` takes next, in order."""
    node, shift, clip, aliases = task
    if not node.rendered or node.end == node.start:
        painter.skipped.append(node.name)
        return []
    start, end = max(node.start + shift, clip[0]), min(node.end + shift, clip[1])
    # What is painted stays on top: below a range painted all over, nothing can show.
    if start >= end or painter.covered(start, end):
        return []
    if node.alias is not None:
        return [_follow(task, node.alias, (start, end), targets)]
    tasks: list[_Visit | _Fill] = [_Visit(c, shift, (start, end), aliases) for c in node.children]
    if _terminates(node):
        tasks.append(_Fill(node, start, end, node.start + shift))
    return tasks


def _follow(
    task: _Visit, alias: tuple[str, int], clip: tuple[int, int], targets: dict[str, _Node]
) -> _Visit:
    """The alias ``task.node`` (to ``alias``: target name, offset) rendered as its target,
    within ``clip``."""
    node, shift, _, aliases = task
    name, offset = alias
    target = targets.get(name)
    if target is None:
        raise ImportFailure(
            f"alias {node.name!r} points at region {name!r}, but the input has no "
            f"'memory-region: {name}' block; save the whole `info mtree` output",
            node.line,
            node.column,
        )
    if name in aliases:
        loop = " -> ".join((*aliases[aliases.index(name) :], name))
        raise ImportFailure(
            f"aliases refer to each other in a loop: alias {node.name!r} leads back into "
            f"region {name!r}, which it lies in ({loop}); " + HOW,
            node.line,
            node.column,
        )
    if len(aliases) >= _MAX_ALIAS_HOPS:
        raise ImportFailure(
            f"alias {node.name!r} is reached through {len(aliases)} aliases, each inside the "
            f"target of the one before ({aliases[0]} -> ... -> {name}); more than "
            f"{_MAX_ALIAS_HOPS} is not read; " + HOW,
            node.line,
            node.column,
        )
    return _Visit(target, node.start + shift - offset - target.start, clip, (*aliases, name))


def _too_much_work(node: _Node) -> str:
    return (
        f"flattening the tree view took more than {_WORK_BUDGET:,} steps (stopped at region "
        f"{node.name!r}): aliases that render the same regions again and again multiply the "
        "work; " + HOW + " (the flat view is QEMU's own flattening)"
    )


def _terminates(node: _Node) -> bool:
    # memory_region_type() says "container" for any region without a parent, such as a PCI
    # window with unassigned_io_ops: only children tell a container from a device here.
    return node.type in MEMORY_TYPES or not node.children
