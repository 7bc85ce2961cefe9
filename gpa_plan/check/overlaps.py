"""Which range, among those taken so far, a new range overlaps: O(log n) a question.

KVM meets a layout's entries one at a time, in file order: a memslot is refused when it
overlaps one already accepted, and a device shares the io bus with every device registered
before it. The overlap rules ask the same question in the same order.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from gpa_plan.ranges import Range

_NONE = (-1, 0)


def any_overlap(ranges: Sequence[Range]) -> bool:
    """Whether two of ``ranges`` overlap (empty ones overlap nothing): one sort, so the usual
    layout, where nothing overlaps, skips the slower search for what overlaps what."""
    reach = -1
    for rng in sorted(r for r in ranges if r.start < r.end):
        if rng.start < reach:
            return True
        reach = max(reach, rng.end)
    return False


class TakenRanges:
    """Ranges taken one by one, each known in advance (``candidates``, to number their starts).

    A Fenwick tree over the sorted starts keeps, for every prefix of starts, the taken range
    that reaches furthest: a range ``r`` overlaps some taken range exactly when the one that
    reaches furthest among those starting before ``r.end`` ends after ``r.start``.
    """

    def __init__(self, candidates: Sequence[Range]) -> None:
        self._starts = sorted({r.start for r in candidates})
        # (end, -index): the furthest end, and of equal ends the range taken with the lowest index
        self._tree = [_NONE] * (len(self._starts) + 1)

    def take(self, index: int, rng: Range) -> None:
        """Record ``rng`` (one of the candidates) as taken, under ``index``."""
        value = (rng.end, -index)
        position = bisect.bisect_left(self._starts, rng.start) + 1
        tree = self._tree
        while position < len(tree):
            if value > tree[position]:
                tree[position] = value
            position += position & -position

    def overlapping(self, rng: Range) -> int | None:
        """The index of a taken range that overlaps ``rng`` (of those, the one reaching
        furthest, then the lowest index), or None."""
        position = bisect.bisect_left(self._starts, rng.end)
        best = _NONE
        tree = self._tree
        while position > 0:
            if tree[position] > best:
                best = tree[position]
            position -= position & -position
        end, negative_index = best
        return -negative_index if end > rng.start else None


class RangeIndex:
    """Fixed ranges, asked which of them overlap a range: O((m + 1) log n) for m found.

    A tournament tree over the ranges sorted by start keeps the furthest end of each block;
    a question visits only blocks that start before the range ends and reach past its start.
    """

    def __init__(self, ranges: Sequence[Range]) -> None:
        self._order = sorted(range(len(ranges)), key=lambda i: ranges[i].start)
        self._starts = [ranges[i].start for i in self._order]
        size = 1
        while size < len(ranges):
            size *= 2
        self._size = size
        # Empty ranges overlap nothing: their end is below every start.
        tree = [-1] * (2 * size)
        for k, i in enumerate(self._order):
            rng = ranges[i]
            tree[size + k] = rng.end if rng.start < rng.end else -1
        for node in range(size - 1, 0, -1):
            tree[node] = max(tree[2 * node], tree[2 * node + 1])
        self._tree = tree

    def overlapping(self, rng: Range, *, starting_at: int | None = None) -> list[int]:
        """The indexes (into the ranges given) of those that overlap ``rng``, ascending; with
        ``starting_at``, only those that start there or later."""
        if rng.start >= rng.end:
            return []
        limit = bisect.bisect_left(self._starts, rng.end)  # sorted positions [0, limit)
        first = 0 if starting_at is None else bisect.bisect_left(self._starts, starting_at)
        found: list[int] = []
        stack = [(1, 0, self._size)]
        tree = self._tree
        while stack:
            node, low, high = stack.pop()
            if low >= limit or high <= first or tree[node] <= rng.start:
                continue
            if node >= self._size:
                found.append(self._order[node - self._size])
                continue
            middle = (low + high) // 2
            stack.append((2 * node + 1, middle, high))
            stack.append((2 * node, low, middle))
        return sorted(found)


class LiveRanges(RangeIndex):
    """A RangeIndex whose ranges can be taken out and put back, O(log n) each: those left
    in are the ones `overlapping` finds."""

    def __init__(self, ranges: Sequence[Range], *, present: bool = True) -> None:
        super().__init__(ranges)
        self._ends = [r.end if r.start < r.end else -1 for r in ranges]
        self._leaf = [0] * len(ranges)
        for k, i in enumerate(self._order):
            self._leaf[i] = self._size + k
        if not present:
            for i in range(len(ranges)):
                self.remove(i)

    def remove(self, index: int) -> None:
        self._set(index, -1)

    def add(self, index: int) -> None:
        self._set(index, self._ends[index])

    def set_end(self, index: int, end: int) -> None:
        """Puts the range back ending at ``end`` instead."""
        self._set(index, end)

    def _set(self, index: int, end: int) -> None:
        tree = self._tree
        node = self._leaf[index]
        tree[node] = end
        node //= 2
        while node:
            tree[node] = max(tree[2 * node], tree[2 * node + 1])
            node //= 2
