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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gpa_plan.check.partition import Region, regions_within
from gpa_plan.elf import ELF_MODES, PHYSICAL, SELFTESTS
from gpa_plan.elf.program import Program, Segment
from gpa_plan.layout.resolved import DeviceEntry, MemslotEntry, ResolvedLayout
from gpa_plan.ranges import Range, align_down, align_up


@dataclass(frozen=True, slots=True)
class SegmentPlacement:
    """One segment's range (physical: p_paddr .. + p_memsz; selftests: the page-rounded
    p_vaddr range) and the region kinds and object names it lands on, in address order."""

    index: int
    flags: str
    range: Range
    kinds: tuple[str, ...]
    names: tuple[str, ...]


@dataclass(frozen=True)
class ProgramPlacement:
    file: str
    machine: str
    mode: str
    segments: tuple[SegmentPlacement, ...]


def program_placements(
    programs: Sequence[Program], layout: ResolvedLayout, regions: list[Region], mode: str
) -> tuple[ProgramPlacement, ...]:
    return tuple(segment_placements(p, layout, regions, mode) for p in programs)


def segment_placements(
    program: Program, layout: ResolvedLayout, regions: list[Region], mode: str
) -> ProgramPlacement:
    """Where every segment of ``program`` lands when ``mode`` loads it into ``layout``."""
    if mode == PHYSICAL:
        placed = tuple(_physical(s, layout, regions) for s in program.segments)
    elif mode == SELFTESTS:
        mapped = _IdentityMapped(layout)
        placed = tuple(_selftests(s, layout, mapped) for s in program.segments)
    else:
        raise ValueError(f"unknown ELF load mode {mode!r}; expected one of {ELF_MODES}")
    return ProgramPlacement(program.path, program.machine, mode, placed)


def _physical(segment: Segment, layout: ResolvedLayout, regions: list[Region]) -> SegmentPlacement:
    rng = segment.physical
    found = regions_within(regions, rng)
    kinds = [r.kind for r in found]
    if rng.end > layout.limit:
        kinds.append("unbacked")  # beyond the guest's physical address size
    names = (n for r in found for n in r.names)
    return SegmentPlacement(
        segment.index, segment.flag_letters, rng, _unique(kinds), _unique(names)
    )


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
    return SegmentPlacement(
        segment.index, segment.flag_letters, rng, _unique(kinds), _unique(names)
    )


def code_memslot(layout: ResolvedLayout) -> MemslotEntry | None:
    """The memslot kvm_vm_elf_load() takes the program's pages from: __vm_create() adds slot 0
    and points every MEM_REGION_* (code included) at it. Read as the lowest-numbered read-write
    memslot of address space 0; None when there is none."""
    candidates = [m for m in layout.memslots if m.as_id == 0 and not m.readonly]
    return min(candidates, key=lambda m: m.slot, default=None)


def identity_mapped(layout: ResolvedLayout) -> list[DeviceEntry]:
    """Devices the guest reaches through a VA = GPA mapping (`identity_map: true`)."""
    return [d for d in layout.devices if d.identity_map]


def identity_pages(device: DeviceEntry, page_size: int) -> Range:
    """The virtual pages an identity mapping of ``device`` takes: virt_map() maps whole guest
    pages, so the device range rounded out to ``page_size``."""
    return Range(align_down(device.range.start, page_size), align_up(device.range.end, page_size))


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
