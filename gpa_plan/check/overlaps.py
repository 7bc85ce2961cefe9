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
