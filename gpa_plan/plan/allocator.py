"""Place ranges in a guest-physical address space: find free, aligned room and take it.

:class:`AddressAllocator` knows nothing about layouts or memslots. A caller marks the
ranges that are already taken with :meth:`AddressAllocator.occupy` (they may overlap each
other) and asks :meth:`AddressAllocator.allocate` for new ranges of a given size and
alignment, lowest-first or highest-first, optionally inside a window.

The free space, the complement of the union of everything occupied, is kept as a set of
disjoint gaps in a treap ordered by address. For every alignment that has been asked for,
each node also records the most room any gap in its subtree has after its first aligned
address, so a search skips whole subtrees that cannot hold the request.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterator
from typing import NamedTuple

from gpa_plan.ranges import Range, align_down, align_up, hex_addr, human_size

__all__ = ["AddressAllocator", "AllocationError", "Occupant", "Policy"]

# How many occupants an AllocationError message names before summarising the rest.
_NAMED_OCCUPANTS = 3


class Policy(enum.Enum):
    """Which fitting address :meth:`AddressAllocator.allocate` picks."""

    FIRST = "first"
    """The lowest aligned start that fits."""
    LAST = "last"
    """The highest aligned start that fits."""


class Occupant(NamedTuple):
    """An occupied range and the label it was occupied under."""

    range: Range
    label: str


class AllocationError(Exception):
    """No free range satisfies an allocation request.

    Attributes a caller gets:

    * ``size``, ``align``, ``policy``: the request as made;
    * ``window``: the window asked for (the whole space when none was given);
    * ``occupants``: the occupied ranges that overlap the searched part of the window,
      sorted by address;
    * ``largest_gap``: the largest free gap inside the searched window (the lowest one
      if several tie), or ``None`` when nothing in it is free;
    * ``message`` (also ``str(error)``): which constraint failed, e.g.
      ``no free 64 KiB-aligned range of 128 KiB in [0x0000_0000, 0x1000_0000): 3 occupied
      ranges cover it: ram [...), gic [...), uart [...); largest free gap 64 KiB at
      0x0800_0000``.
    """

    def __init__(
        self,
        message: str,
        *,
        size: int,
        align: int,
        window: Range,
        policy: Policy,
        occupants: tuple[Occupant, ...],
        largest_gap: Range | None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.size = size
        self.align = align
        self.window = window
        self.policy = policy
        self.occupants = occupants
        self.largest_gap = largest_gap


class _Gap:
    """A treap node: one maximal free gap ``[start, end)``.

    ``room[i]`` is, over the gaps in this subtree, the largest ``end - align_up(start,
    aligns[i])`` (negative when a gap holds no aligned address), where ``aligns`` is the
    allocator's list of alignments seen so far: a request of ``size`` at ``aligns[i]``
    fits somewhere in the subtree exactly when ``room[i] >= size``.
    """

    __slots__ = ("end", "left", "parent", "priority", "right", "room", "start")

    def __init__(self, start: int, end: int, priority: float, aligns: list[int]) -> None:
        self.start = start
        self.end = end
        self.priority = priority
        self.left: _Gap | None = None
        self.right: _Gap | None = None
        self.parent: _Gap | None = None
        self.room: list[int] = [end + start // -a * a for a in aligns]

    def recompute(self, aligns: list[int]) -> None:
        start, end = self.start, self.end
        # end + start // -a * a == end - align_up(start, a)
        own = [end + start // -a * a for a in aligns]
        left, right = self.left, self.right
        if left is None:
            self.room = own if right is None else list(map(max, own, right.room))
        elif right is None:
            self.room = list(map(max, own, left.room))
        else:
            self.room = list(map(max, own, left.room, right.room))


class AddressAllocator:
    """Free-space bookkeeping for the address space ``[0, limit)``.

    Costs, with *n* the number of free gaps (at most one more than the number of
    occupied ranges) and *m* the number of distinct alignments asked for so far (at most
    ``log2(limit) + 2``, a handful in practice). They are expected costs: the tree is a
    treap, whose height is O(log n) whatever the order of the calls.

    * :meth:`occupy`: O(m log n), plus O(m log n) for every free gap it swallows; each
      call creates at most one gap, so this is amortised O(m log n).
    * :meth:`allocate`: O(m log n). The first request at an alignment not seen before
      also adds that alignment to every node, O(m n), once.
    * A failed :meth:`allocate` also scans the occupied ranges and the free gaps in the
      window, O(n), to say why it failed.
    * :meth:`is_free`: O(log n). :meth:`free_ranges`: O(n).
    """

    def __init__(self, limit: int) -> None:
        """Start with all of ``[0, limit)`` free; ``limit`` is e.g. ``2**pa_bits``."""
        if limit <= 0:
            raise ValueError(f"address space limit must be positive, not {limit}")
        self.limit = limit
        # Fixed seed: the same calls always build the same tree, so runs are reproducible.
        self._random = random.Random(0x6770_6170)
        self._aligns: list[int] = []
        self._align_cap = 1 << (limit - 1).bit_length()
        self._align_slot: dict[int, int] = {}
        self._root: _Gap | None = self._new_gap(0, limit)
        self._occupants: list[Occupant] = []

    # -- public API -------------------------------------------------------------------

    @property
    def space(self) -> Range:
        """The whole address space, ``[0, limit)``."""
        return Range(0, self.limit)

    def occupied(self) -> list[Occupant]:
        """Every occupied range with its label, in the order they were occupied."""
        return list(self._occupants)

    def occupy(self, rng: Range, label: str) -> None:
        """Mark ``rng`` as taken under ``label``.

        ``rng`` may overlap ranges occupied earlier, and may reach outside the address
        space: only its part inside ``[0, limit)`` affects the free space. Raises
        ``ValueError`` for an empty range.
        """
        if rng.start >= rng.end:
            raise ValueError(f"cannot occupy an empty range {rng} ({label})")
        self._occupants.append(Occupant(rng, label))
        clipped = rng.intersection(self.space)
        if clipped is not None:
            self._take(clipped.start, clipped.end)

    def allocate(
        self,
        size: int,
        align: int,
        *,
        window: Range | None = None,
        policy: Policy = Policy.FIRST,
        label: str,
    ) -> Range:
        """Find, occupy (under ``label``) and return a free range of ``size`` bytes.

        The result ``[s, s + size)`` has ``s % align == 0``, lies inside ``window`` (the
        whole space when ``None``) and inside ``[0, limit)``, and overlaps no occupied
        range. ``Policy.FIRST`` returns the lowest such ``s``, ``Policy.LAST`` the
        highest.

        Raises ``ValueError`` if ``size`` is not positive, ``align`` is not a positive
        power of two or ``window`` is empty, and :class:`AllocationError` if no such
        range exists.

        The search walks the gaps in address order (from the right for ``LAST``) and
        skips every subtree in which no gap has ``size`` bytes after its first
        ``align``-aligned address; the tree keeps that maximum per alignment. So a gap
        that is long enough but where no aligned start fits is never visited: the only
        gaps the search can reject after reaching them are the two cut by the window's
        edges, and a search visits O(log n) nodes. (Keeping only the longest gap per
        subtree would be cheaper to maintain, but a 2 MiB-aligned request among many
        4 KiB-aligned gaps would then try each of them in turn, O(n) per request.)
        """
        if size <= 0:
            raise ValueError(f"allocation size must be positive, not {size}")
        if align <= 0 or align & (align - 1):
            raise ValueError(f"alignment must be a positive power of two, not {align}")
        if window is not None and window.start >= window.end:
            raise ValueError(f"allocation window {window} is empty")
        asked = self.space if window is None else window
        searched = asked.intersection(self.space)
        start: int | None = None
        if searched is not None:
            # Every alignment >= limit admits the same starts (only 0), so they share a slot.
            slot = self._slot_for(min(align, self._align_cap))
            if policy is Policy.FIRST:
                start = self._find_first(size, align, slot, searched.start, searched.end)
            else:
                start = self._find_last(size, align, slot, searched.start, searched.end)
        if start is None:
            raise self._failure(size, align, asked, searched, policy)
        result = Range(start, start + size)
        self._occupants.append(Occupant(result, label))
        self._take(result.start, result.end)
        return result

    def is_free(self, rng: Range) -> bool:
        """Whether all of the non-empty ``rng`` is inside ``[0, limit)`` and unoccupied."""
        if rng.start >= rng.end:
            raise ValueError(f"cannot test an empty range {rng}")
        gap = self._first_ending_after(rng.start)
        return gap is not None and gap.start <= rng.start and rng.end <= gap.end

    def free_ranges(self) -> Iterator[Range]:
        """The free space (the complement of the occupied union), as maximal ranges sorted
        by address. The ranges are collected when the iterator starts, so occupying or
        allocating while iterating does not disturb it."""
        gaps: list[Range] = []
        stack: list[_Gap] = []
        node = self._root
        while stack or node is not None:
            while node is not None:
                stack.append(node)
                node = node.left
            node = stack.pop()
            gaps.append(Range(node.start, node.end))
            node = node.right
        yield from gaps

    # -- searches ---------------------------------------------------------------------

    def _slot_for(self, align: int) -> int:
        """Index of ``align`` in every node's ``room``, adding it (O(n), once) if new."""
        slot = self._align_slot.get(align)
        if slot is not None:
            return slot
        slot = len(self._aligns)
        self._aligns.append(align)
        self._align_slot[align] = slot
        # Post-order walk: children get their new entry before their parent.
        stack: list[tuple[_Gap, bool]] = [] if self._root is None else [(self._root, False)]
        while stack:
            node, children_done = stack.pop()
            if children_done:
                node.recompute(self._aligns)
                continue
            stack.append((node, True))
            if node.left is not None:
                stack.append((node.left, False))
            if node.right is not None:
                stack.append((node.right, False))
        return slot

    def _find_first(self, size: int, align: int, slot: int, lo: int, hi: int) -> int | None:
        """Lowest aligned start of ``size`` free bytes inside ``[lo, hi)``, or ``None``."""
        stack: list[_Gap] = []
        node = self._root
        while True:
            # Walk down the left edge of the part of the subtree that may hold a fit.
            while node is not None and node.room[slot] >= size:
                if node.end <= lo:
                    node = node.right
                elif node.start >= hi:
                    node = node.left
                else:
                    stack.append(node)
                    node = node.left
            if not stack:
                return None
            node = stack.pop()
            if node.end - node.start >= size:
                start = align_up(max(node.start, lo), align)
                if start + size <= min(node.end, hi):
                    return start
            node = node.right

    def _find_last(self, size: int, align: int, slot: int, lo: int, hi: int) -> int | None:
        """Highest aligned start of ``size`` free bytes inside ``[lo, hi)``, or ``None``."""
        stack: list[_Gap] = []
        node = self._root
        while True:
            while node is not None and node.room[slot] >= size:
                if node.start >= hi:
                    node = node.left
                elif node.end <= lo:
                    node = node.right
                else:
                    stack.append(node)
                    node = node.right
            if not stack:
                return None
            node = stack.pop()
            if node.end - node.start >= size:
                start = align_down(min(node.end, hi) - size, align)
                if start >= max(node.start, lo):
                    return start
            node = node.left

    def _first_ending_after(self, addr: int) -> _Gap | None:
        """The lowest gap with ``end > addr``: the gap holding ``addr`` if it is free."""
        best: _Gap | None = None
        node = self._root
        while node is not None:
            if node.end > addr:
                best = node
                node = node.left
            else:
                node = node.right
        return best

    @staticmethod
    def _successor(node: _Gap) -> _Gap | None:
        if node.right is not None:
            node = node.right
            while node.left is not None:
                node = node.left
            return node
        parent = node.parent
        while parent is not None and node is parent.right:
            node, parent = parent, parent.parent
        return parent

    # -- updates ----------------------------------------------------------------------

    def _take(self, start: int, end: int) -> None:
        """Remove ``[start, end)`` (inside the space) from the free gaps."""
        hit: list[_Gap] = []
        gap = self._first_ending_after(start)
        while gap is not None and gap.start < end:
            hit.append(gap)
            gap = self._successor(gap)
        for gap in hit:
            keep_low = gap.start < start
            keep_high = gap.end > end
            if keep_low and keep_high:
                high_end = gap.end
                gap.end = start
                self._refresh_upwards(gap)
                self._insert(end, high_end)
            elif keep_low:
                gap.end = start
                self._refresh_upwards(gap)
            elif keep_high:
                # The gap keeps its neighbours, so moving its start keeps the tree ordered.
                gap.start = end
                self._refresh_upwards(gap)
            else:
                self._delete(gap)

    def _new_gap(self, start: int, end: int) -> _Gap:
        return _Gap(start, end, self._random.random(), self._aligns)

    def _refresh_upwards(self, node: _Gap | None) -> None:
        """Recompute ``room`` from ``node`` towards the root, stopping once a node's comes
        out unchanged (nothing above it can change then)."""
        aligns = self._aligns
        while node is not None:
            before = node.room
            node.recompute(aligns)
            if node.room == before:
                return
            node = node.parent

    def _replace_child(self, parent: _Gap | None, old: _Gap, new: _Gap | None) -> None:
        if parent is None:
            self._root = new
        elif parent.left is old:
            parent.left = new
        else:
            parent.right = new
        if new is not None:
            new.parent = parent

    def _rotate_up(self, node: _Gap) -> None:
        """Rotate ``node`` above its parent, keeping the order and both ``room``."""
        parent = node.parent
        assert parent is not None
        if parent.left is node:
            moved = node.right
            parent.left = moved
            node.right = parent
        else:
            moved = node.left
            parent.right = moved
            node.left = parent
        if moved is not None:
            moved.parent = parent
        self._replace_child(parent.parent, parent, node)
        parent.parent = node
        parent.recompute(self._aligns)
        node.recompute(self._aligns)

    def _insert(self, start: int, end: int) -> None:
        """Add the gap ``[start, end)``, disjoint from and not adjacent to the others."""
        new = self._new_gap(start, end)
        parent: _Gap | None = None
        node = self._root
        while node is not None:
            parent = node
            node = node.left if start < node.start else node.right
        if parent is None:
            self._root = new
            return
        if start < parent.start:
            parent.left = new
        else:
            parent.right = new
        new.parent = parent
        while new.parent is not None and new.priority > new.parent.priority:
            self._rotate_up(new)
        self._refresh_upwards(new.parent)

    def _delete(self, node: _Gap) -> None:
        # Rotate the node down until it has at most one child, then splice it out.
        while node.left is not None and node.right is not None:
            if node.left.priority > node.right.priority:
                self._rotate_up(node.left)
            else:
                self._rotate_up(node.right)
        child = node.left if node.left is not None else node.right
        parent = node.parent
        self._replace_child(parent, node, child)
        node.parent = node.left = node.right = None
        self._refresh_upwards(parent)

    # -- failure reports --------------------------------------------------------------

    def _failure(
        self,
        size: int,
        align: int,
        asked: Range,
        searched: Range | None,
        policy: Policy,
    ) -> AllocationError:
        aligned = f"{human_size(align)}-aligned " if align > 1 else ""
        head = f"no free {aligned}range of {human_size(size)} in {asked}"
        occupants: tuple[Occupant, ...] = ()
        largest: Range | None = None
        if searched is None:
            reason = f"the window lies outside the address space {self.space}"
        else:
            if searched != asked:
                head += f" (clipped to the address space: {searched})"
            occupants = tuple(
                sorted(
                    (o for o in self._occupants if o.range.overlaps(searched)),
                    key=lambda o: (o.range.start, o.range.end),
                )
            )
            largest = self._largest_gap_in(searched)
            reason = self._explain(size, align, searched, occupants, largest)
        return AllocationError(
            f"{head}: {reason}",
            size=size,
            align=align,
            window=asked,
            policy=policy,
            occupants=occupants,
            largest_gap=largest,
        )

    def _largest_gap_in(self, window: Range) -> Range | None:
        largest: Range | None = None
        gap = self._first_ending_after(window.start)
        while gap is not None and gap.start < window.end:
            clipped = Range(max(gap.start, window.start), min(gap.end, window.end))
            if largest is None or clipped.size > largest.size:
                largest = clipped
            gap = self._successor(gap)
        return largest

    @staticmethod
    def _explain(
        size: int,
        align: int,
        window: Range,
        occupants: tuple[Occupant, ...],
        largest: Range | None,
    ) -> str:
        if window.size < size:
            return f"the window is only {human_size(window.size)}"
        parts: list[str] = []
        if occupants:
            count = len(occupants)
            noun = "occupied range covers" if count == 1 else "occupied ranges cover"
            named = ", ".join(f"{o.label} {o.range}" for o in occupants[:_NAMED_OCCUPANTS])
            if count > _NAMED_OCCUPANTS:
                named += f" and {count - _NAMED_OCCUPANTS} more"
            parts.append(f"{count} {noun} it: {named}")
        if largest is None:
            parts.append("nothing in it is free")
        else:
            gap = f"largest free gap {human_size(largest.size)} at {hex_addr(largest.start)}"
            if largest.size >= size:
                gap += (
                    f", but no free gap holds {human_size(size)} at a "
                    f"{human_size(align)}-aligned start"
                )
            parts.append(gap)
        return "; ".join(parts)
