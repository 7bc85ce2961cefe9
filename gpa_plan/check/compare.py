"""Where one layout behaves differently under two architectures."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from gpa_plan.arch.base import ACCESSES, Outcome
from gpa_plan.check.partition import Region
from gpa_plan.ranges import Range


@dataclass(frozen=True, slots=True)
class Difference:
    """A range where some access kind has a different outcome under arch ``a`` and ``b``."""

    range: Range
    access: str
    a: Outcome
    b: Outcome


def differences(left: Sequence[Region], right: Sequence[Region]) -> list[Difference]:
    """Ranges where the outcomes differ, by access kind then address; adjacent ranges with the
    same pair of outcomes are merged."""
    found: list[Difference] = []
    for access in ACCESSES:
        found.extend(_differences_for(left, right, access))
    return found


def _differences_for(
    left: Sequence[Region], right: Sequence[Region], access: str
) -> Iterator[Difference]:
    pending: Difference | None = None
    i = j = 0
    while i < len(left) and j < len(right):
        lhs, rhs = left[i], right[j]
        start, end = max(lhs.start, rhs.start), min(lhs.end, rhs.end)
        a, b = lhs.outcome(access), rhs.outcome(access)
        if a is not b:
            current = Difference(Range(start, end), access, a, b)
            if (
                pending is not None
                and pending.range.end == start
                and (pending.a, pending.b) == (a, b)
            ):
                pending = Difference(Range(pending.range.start, end), access, a, b)
            else:
                if pending is not None:
                    yield pending
                pending = current
        if lhs.end == end:
            i += 1
        if rhs.end == end:
            j += 1
    if pending is not None:
        yield pending
