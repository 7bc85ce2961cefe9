"""Where each loadable segment of a guest program lands in a layout.

Two loaders, two answers:

- ``physical``: a VMM kernel loader (rust-vmm linux-loader's Elf::load, QEMU's load_elf)
  writes each PT_LOAD segment to guest memory at ``[p_paddr, p_paddr + p_memsz)``.
- ``selftests``: KVM selftests' kvm_vm_elf_load() (tools/testing/selftests/kvm/lib/elf.c)
  ignores p_paddr: it maps the page-rounded ``p_vaddr`` range in the guest page tables, backed
  by pages taken from the code memslot (``vm->memslots[MEM_REGION_CODE]``, slot 0 unless a
  test moves it).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gpa_plan.check.partition import MAX_REGION_NAMES, Region, region_span
from gpa_plan.elf import ELF_MODES, PHYSICAL, SELFTESTS
from gpa_plan.elf.program import Program, Segment
from gpa_plan.layout.resolved import DeviceEntry, MemslotEntry, ResolvedLayout
from gpa_plan.ranges import Range, align_down, align_up
from gpa_plan.selftests import code_memslot as selftests_code_memslot


@dataclass(frozen=True, slots=True)
class SegmentPlacement:
    """One segment's range (physical: p_paddr .. + p_memsz; selftests: the page-rounded
    p_vaddr range) and the region kinds and object names it lands on, in address order."""

    index: int
    flags: str
    range: Range
    kinds: tuple[str, ...]
    # The first MAX_REGION_NAMES names, and how many more the regions under it name.
    names: tuple[str, ...]
    more_names: int = 0


@dataclass(frozen=True)
class ProgramPlacement:
    file: str
    machine: str
    mode: str
    segments: tuple[SegmentPlacement, ...]


def program_placements(
    programs: Sequence[Program], layout: ResolvedLayout, regions: list[Region], mode: str
) -> tuple[ProgramPlacement, ...]:
    return _placements(programs, layout, regions, mode)


def segment_placements(
    program: Program, layout: ResolvedLayout, regions: list[Region], mode: str
) -> ProgramPlacement:
    """Where every segment of ``program`` lands when ``mode`` loads it into ``layout``."""
    return _placements((program,), layout, regions, mode)[0]


def _placements(
    programs: Sequence[Program], layout: ResolvedLayout, regions: list[Region], mode: str
) -> tuple[ProgramPlacement, ...]:
    if mode == PHYSICAL:
        names = _RegionNames(regions, [s.physical for p in programs for s in p.segments])
        kinds = _RegionKinds(regions)
        return tuple(
            ProgramPlacement(
                p.path,
                p.machine,
                mode,
                tuple(_physical(s, layout, regions, names, kinds) for s in p.segments),
            )
            for p in programs
        )
    return tuple(_other(p, layout, mode) for p in programs)


def _other(program: Program, layout: ResolvedLayout, mode: str) -> ProgramPlacement:
    if mode == SELFTESTS:
        mapped = _IdentityMapped(layout)
        placed = tuple(_selftests(s, layout, mapped) for s in program.segments)
    else:
        raise ValueError(f"unknown ELF load mode {mode!r}; expected one of {ELF_MODES}")
    return ProgramPlacement(program.path, program.machine, mode, placed)


def _physical(
    segment: Segment,
    layout: ResolvedLayout,
    regions: list[Region],
    names: _RegionNames,
    kinds: _RegionKinds,
) -> SegmentPlacement:
    rng = segment.physical
    lo, hi = region_span(regions, rng)
    found = kinds.within(lo, hi)
    if rng.end > layout.limit and "unbacked" not in found:
        found.append("unbacked")  # beyond the guest's physical address size
    listed, total = names.within(lo, hi)
    return SegmentPlacement(
        segment.index,
        segment.flag_letters,
        rng,
        tuple(found),
        listed,
        total - len(listed),
    )


class _RegionKinds:
    """The kinds of the regions in a span, in the order they first come: per kind, the
    indexes of its regions, searched once each (there are a handful of kinds)."""

    def __init__(self, regions: Sequence[Region]) -> None:
        self.at: dict[str, list[int]] = {}
        for k, region in enumerate(regions):
            self.at.setdefault(region.kind, []).append(k)

    def within(self, lo: int, hi: int) -> list[str]:
        first = []
        for kind, indexes in self.at.items():
            k = bisect.bisect_left(indexes, lo)
            if k < len(indexes) and indexes[k] < hi:
                first.append((indexes[k], kind))
        return [kind for _, kind in sorted(first)]


class _RegionNames:
    """The names the regions of a span list, without walking the span: the first
    MAX_REGION_NAMES of them, and how many different ones there are.

    Every name of every region is one entry of a flat list, each knowing where the entry
    before it of the same name is; an entry is a name's first in a span when that one lies
    before the span. A tree of the least such position per block finds the first few, and
    the counts for all the spans asked (``spans``, given up front) come from one sweep.
    """

    def __init__(self, regions: Sequence[Region], spans: Sequence[Range]) -> None:
        self.regions = regions
        self.offsets = [0]
        self.names: list[str] = []
        previous: list[int] = []
        last: dict[str, int] = {}
        for region in regions:
            for name in region.names:
                previous.append(last.get(name, -1))
                last[name] = len(self.names)
                self.names.append(name)
            self.offsets.append(len(self.names))
        size = 1
        while size < len(self.names):
            size *= 2
        self.size = size
        tree = [len(self.names)] * (2 * size)
        tree[size : size + len(previous)] = previous
        for node in range(size - 1, 0, -1):
            tree[node] = min(tree[2 * node], tree[2 * node + 1])
        self.tree = tree
        self.counts = self._distinct([self._flat(region_span(regions, r)) for r in spans], previous)

    def _flat(self, span: tuple[int, int]) -> tuple[int, int]:
        return self.offsets[span[0]], self.offsets[span[1]]

    def within(self, lo: int, hi: int) -> tuple[tuple[str, ...], int]:
        a, b = self._flat((lo, hi))
        listed: list[str] = []
        k = self._first_new(a, a, b)
        while k < b and len(listed) < MAX_REGION_NAMES:
            listed.append(self.names[k])
            k = self._first_new(k + 1, a, b)
        return tuple(listed), self.counts.get((a, b), len(listed))

    def _first_new(self, start: int, a: int, b: int) -> int:
        """The first entry at or after ``start`` and before ``b`` whose name has no entry in
        [a, entry); ``b`` when there is none."""
        tree, size = self.tree, self.size
        node, low, high = 1, 0, size
        stack = [(node, low, high)]
        while stack:
            node, low, high = stack.pop()
            if high <= start or low >= b or tree[node] >= a:
                continue
            if node >= size:
                return low
            middle = (low + high) // 2
            stack.append((2 * node + 1, middle, high))
            stack.append((2 * node, low, middle))
        return b

    @staticmethod
    def _distinct(spans: list[tuple[int, int]], previous: list[int]) -> dict[tuple[int, int], int]:
        """For each flat span [a, b), how many entries in it have their previous entry before
        a: spans by a, entries by previous, a Fenwick tree over the entries let in."""
        by_previous = sorted(range(len(previous)), key=previous.__getitem__)
        tree = [0] * (len(previous) + 1)

        def prefix(k: int) -> int:
            total = 0
            while k > 0:
                total += tree[k]
                k -= k & -k
            return total

        counts: dict[tuple[int, int], int] = {}
        let_in = 0
        for a, b in sorted(set(spans)):
            while let_in < len(by_previous) and previous[by_previous[let_in]] < a:
                k = by_previous[let_in] + 1
                while k < len(tree):
                    tree[k] += 1
                    k += k & -k
                let_in += 1
            counts[(a, b)] = prefix(b) - prefix(a)
        return counts


class _IdentityMapped:
    """The identity-mapped devices and the pages they take, indexed once per program: a
    scan of every device per segment made thousands of segments cost their product."""

    def __init__(self, layout: ResolvedLayout) -> None:
        from gpa_plan.check.overlaps import RangeIndex

        self.code_slot = code_memslot(layout)
        self.devices = identity_mapped(layout)
        pages = [identity_pages(d, layout.guest_page_size) for d in self.devices]
        self.index = RangeIndex(pages)

    def names_within(self, rng: Range) -> list[str]:
        """The devices whose pages overlap ``rng``, in file order."""
        return [self.devices[k].name for k in self.index.overlapping(rng)]


def _selftests(
    segment: Segment, layout: ResolvedLayout, mapped: _IdentityMapped
) -> SegmentPlacement:
    rng = segment.virtual_pages(layout.guest_page_size)
    slot = mapped.code_slot
    kinds, names = (["ram"], [slot.name]) if slot is not None else (["unbacked"], [])
    devices = mapped.names_within(rng)
    if devices:
        kinds.append("device")
        names += devices
    unique = _unique(names)
    return SegmentPlacement(
        segment.index,
        segment.flag_letters,
        rng,
        _unique(kinds),
        unique[:MAX_REGION_NAMES],
        max(len(unique) - MAX_REGION_NAMES, 0),
    )


def code_memslot(layout: ResolvedLayout) -> MemslotEntry | None:
    """The memslot kvm_vm_elf_load() takes the program's pages from (None when there is
    none): selftests' code memslot, as gpa_plan.selftests.code_memslot reads it."""
    return selftests_code_memslot((m.slot, m.as_id, m.readonly, m) for m in layout.memslots)


def identity_mapped(layout: ResolvedLayout) -> list[DeviceEntry]:
    """Devices the guest reaches through a VA = GPA mapping (`identity_map: true`)."""
    return [d for d in layout.devices if d.identity_map]


def identity_pages(device: DeviceEntry, page_size: int) -> Range:
    """The virtual pages an identity mapping of ``device`` takes: virt_map() maps whole guest
    pages, so the device range rounded out to ``page_size``."""
    return Range(align_down(device.range.start, page_size), align_up(device.range.end, page_size))


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
