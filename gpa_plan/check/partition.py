"""The exact partition of ``[0, 2**pa_bits)`` into regions with one outcome per access kind.

One sweep over the sorted boundaries of every memslot (address space 0: what a vCPU outside
SMM sees), device and reserved range: O(n log n), plus the size of the output. Where memslots
overlap (KVM would refuse the later one with EEXIST), the one first in the file wins, as it would
have been registered first. Where devices overlap, the strongest handler wins: in-kernel, then
ioeventfd, then coalesced, then user.

A region names at most MAX_REGION_NAMES of the objects that claim it (memslots first, then
devices, then reserved ranges, each in file order) and counts the rest in ``more_names``: where
thousands of ranges overlap, listing every one in every region would make the output grow with
the square of the input.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from gpa_plan.arch.base import ArchSpec, Backing, Handler, HostFacts, Outcome
from gpa_plan.layout.resolved import DeviceEntry, MemslotEntry, ResolvedLayout
from gpa_plan.ranges import Range

MAX_REGION_NAMES = 10


class Region(NamedTuple):
    """A maximal range where kind, claiming objects and every outcome stay the same."""

    start: int
    end: int
    kind: str
    names: tuple[str, ...]
    read: Outcome
    write: Outcome
    fetch: Outcome
    backing: Backing
    handler: Handler
    # claiming objects beyond the MAX_REGION_NAMES listed in `names`
    more_names: int = 0

    @property
    def range(self) -> Range:
        return Range(self.start, self.end)

    @property
    def io(self) -> bool:
        return self.read.is_io or self.write.is_io or self.fetch.is_io

    def outcome(self, access: str) -> Outcome:
        value: Outcome = getattr(self, access)
        return value

    def same_as(self, other: Region) -> bool:
        return (
            self.kind == other.kind
            and self.names == other.names
            and self.more_names == other.more_names
            and self.read == other.read
            and self.write == other.write
            and self.fetch == other.fetch
            and self.backing == other.backing
            and self.handler == other.handler
        )


def _kind(backing: Backing, handler: Handler) -> str:
    if backing is Backing.RAM:
        return "ram"
    if backing is Backing.ROM:
        return "rom"
    return "unbacked" if handler is Handler.NONE else "device"


def device_handler(device: DeviceEntry, arch: ArchSpec) -> Handler:
    """The device's handler, except that a kernel device the arch does not have (a vGIC
    evaluated as x86) is not in the kernel: its accesses go to the VMM."""
    if device.handler is Handler.KERNEL and arch.name not in device.type.arches:
        return Handler.USER
    return device.handler


_START, _END = 1, 0  # at one address, ends sort before starts


def partition(layout: ResolvedLayout, arch: ArchSpec) -> list[Region]:
    """Regions covering ``[0, 2**pa_bits)`` exactly: sorted, contiguous, adjacent ones distinct."""
    limit = layout.limit
    # Objects are numbered in a fixed order (memslots, devices, reserved; file order within
    # each), which is also the order of `names`.
    objects: list[MemslotEntry | DeviceEntry | None] = []
    names: list[str] = []
    events: list[tuple[int, int, int]] = []

    def add(name: str, rng: Range, obj: MemslotEntry | DeviceEntry | None) -> None:
        start, end = max(rng.start, 0), min(rng.end, limit)
        if start >= end:
            return
        ident = len(objects)
        objects.append(obj)
        names.append(name)
        events.append((start, _START, ident))
        events.append((end, _END, ident))

    for m in layout.memslots:
        if m.as_id == 0:
            add(m.name, m.range, m)
    for d in layout.devices:
        add(d.name, d.range, d)
    for r in layout.reserved:
        add(r.name, r.range, None)
    events.sort()
    return list(_merge(_sweep(events, objects, names, limit, arch)))


def reached_beyond(
    layout: ResolvedLayout, arch: ArchSpec, host: HostFacts | None
) -> list[Region]:
    """The regions at and beyond 2**pa_bits that the guest reaches on ``host``
    (ArchSpec.reach_end: x86_64 with EPT/NPT that leaves a smaller guest MAXPHYADDR
    unenforced), as the partition up to the host's limit has them; empty where it reaches
    none (every host, without a profile)."""
    end = arch.reach_end(layout.pa_bits, host)
    if end is None:
        return []
    wider = layout._replace(pa_bits=end.bit_length() - 1)
    return [r for r in partition(wider, arch) if r.end > layout.limit]


def _sweep(
    events: list[tuple[int, int, int]],
    objects: list[MemslotEntry | DeviceEntry | None],
    names: list[str],
    limit: int,
    arch: ArchSpec,
) -> Iterator[Region]:
    active: set[int] = set()
    # Every started object, smallest number first; ended ones are dropped when met.
    started: list[int] = []
    slot_heap: list[int] = []
    peak = 0  # the most objects `active` has held since it was last rebuilt
    handler_count = {h: 0 for h in Handler}
    position, i = 0, 0
    while position < limit:
        while i < len(events) and events[i][0] == position:
            _, what, ident = events[i]
            obj = objects[ident]
            if what == _START:
                active.add(ident)
                if len(active) > peak:
                    peak = len(active)
                heapq.heappush(started, ident)
                if isinstance(obj, MemslotEntry):
                    heapq.heappush(slot_heap, ident)
                elif isinstance(obj, DeviceEntry):
                    handler_count[device_handler(obj, arch)] += 1
            else:
                active.discard(ident)
                if isinstance(obj, DeviceEntry):
                    handler_count[device_handler(obj, arch)] -= 1
            i += 1
        next_position = events[i][0] if i < len(events) else limit
        while slot_heap and slot_heap[0] not in active:
            heapq.heappop(slot_heap)  # lazy deletion of memslots that have ended
        backing = Backing.NONE
        if slot_heap:
            winner = objects[slot_heap[0]]
            assert isinstance(winner, MemslotEntry)
            backing = Backing.ROM if winner.readonly else Backing.RAM
        handler = max(
            (h for h, n in handler_count.items() if n),
            default=Handler.NONE,
            key=lambda h: h.strength,
        )
        effects = arch.effects(backing, handler)
        if len(active) <= MAX_REGION_NAMES:
            if peak > 4 * MAX_REGION_NAMES:
                # A set keeps the table of its largest size: walking one that once held
                # thousands costs that much every time, so it is rebuilt (paid for by the
                # objects that filled it).
                active, peak = set(active), len(active)
            first = sorted(active)
        else:
            first = _first_active(active, started)
        yield Region(
            position,
            next_position,
            _kind(backing, handler),
            tuple(names[j] for j in first),
            effects.read.outcome,
            effects.write.outcome,
            effects.fetch.outcome,
            backing,
            handler,
            max(len(active) - MAX_REGION_NAMES, 0),
        )
        position = next_position


def _first_active(active: set[int], started: list[int]) -> list[int]:
    """The MAX_REGION_NAMES smallest numbers in ``active``, from the heap ``started`` (which
    holds every active number, and ended ones that are dropped here for good): O(log n) a
    name, where sorting ``active`` would cost its size."""
    first: list[int] = []
    while started and len(first) < MAX_REGION_NAMES:
        ident = heapq.heappop(started)
        if ident in active:
            first.append(ident)
    for ident in first:
        heapq.heappush(started, ident)
    return first


def _merge(regions: Iterator[Region]) -> Iterator[Region]:
    pending: Region | None = None
    for region in regions:
        if pending is not None and pending.same_as(region):
            pending = Region(
                pending.start,
                region.end,
                pending.kind,
                pending.names,
                pending.read,
                pending.write,
                pending.fetch,
                pending.backing,
                pending.handler,
                pending.more_names,
            )
            continue
        if pending is not None:
            yield pending
        pending = region
    if pending is not None:
        yield pending


def _first_ending_after(regions: Sequence[Region], address: int) -> int:
    """Index of the first region whose end is beyond ``address`` (binary search)."""
    return bisect.bisect_right(regions, address, key=lambda r: r.end)


def region_at(regions: Sequence[Region], address: int) -> Region | None:
    """The region holding ``address``, or None beyond the space."""
    k = _first_ending_after(regions, address)
    if k < len(regions) and regions[k].start <= address:
        return regions[k]
    return None


def next_where(regions: Sequence[Region], test: Callable[[Region], bool]) -> list[int]:
    """For each index k (and len(regions)), the first index at or after k whose region passes
    ``test``, len(regions) where none does: one pass, so that `first_where` is a binary
    search whatever the range it asks about."""
    following = [len(regions)] * (len(regions) + 1)
    for k in range(len(regions) - 1, -1, -1):
        following[k] = k if test(regions[k]) else following[k + 1]
    return following


def first_where(regions: Sequence[Region], following: list[int], rng: Range) -> Region | None:
    """The first region intersecting ``rng`` that passes the test ``following`` was made with
    (by `next_where`)."""
    k = following[_first_ending_after(regions, rng.start)]
    return regions[k] if k < len(regions) and regions[k].start < rng.end else None


def region_span(regions: Sequence[Region], rng: Range) -> tuple[int, int]:
    """``(lo, hi)``: the regions that intersect ``rng`` are ``regions[lo:hi]`` (two binary
    searches)."""
    lo = _first_ending_after(regions, rng.start)
    hi = bisect.bisect_left(regions, rng.end, lo=lo, key=lambda r: r.start)
    return lo, max(lo, hi)


def regions_within(regions: Sequence[Region], rng: Range) -> list[Region]:
    """The regions of the sorted partition that intersect ``rng``; walks by index, since
    slicing would copy the rest of the partition on every call."""
    found = []
    for k in range(_first_ending_after(regions, rng.start), len(regions)):
        region = regions[k]
        if region.start >= rng.end:
            break
        found.append(region)
    return found
