"""elf-over-device caps its findings as it makes them: what it gives is exactly what making
one finding per segment and device, then capping them all (cap_per_object), gave; and a
program of thousands of segments over thousands of devices costs no more than their sum."""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gpa_plan.arch import ARCHES
from gpa_plan.arch.base import Backing
from gpa_plan.check import findings as findings_module
from gpa_plan.check import program_rules
from gpa_plan.check.findings import Finding, cap_per_object
from gpa_plan.check.overlaps import RangeIndex
from gpa_plan.check.partition import first_where, next_where, partition
from gpa_plan.check.program_rules import (
    CAPPED_AS_MADE,
    _describe,
    _finding,
    _first_regions,
    _main_access,
    _memslot_names,
    _memslots_of,
    _runnable,
    _span,
    _what_happens,
)
from gpa_plan.check.rules import RULES, RuleContext
from gpa_plan.check.run import load_layout
from gpa_plan.elf import PHYSICAL, SELFTESTS
from gpa_plan.elf.program import Program, Segment
from gpa_plan.ranges import Range

PAGE = 0x1000
HEADER = "layout: 1\narch: x86_64\npa_bits: 48\npage_size: 4K\n"


def one_per_pair(ctx: RuleContext) -> Iterator[Finding]:
    """elf-over-device as it was: one finding per segment and device that overlap."""
    slots = _memslots_of(ctx)
    devices = RangeIndex([d.range for d in ctx.layout.devices])
    next_exposed = next_where(ctx.regions, lambda r: r.backing is Backing.NONE)
    for program in _runnable(ctx, PHYSICAL):
        for segment in program.segments:
            rng = segment.physical
            access = _main_access(segment)
            for index in devices.overlapping(rng):
                device = ctx.layout.devices[index]
                shared = device.range.intersection(rng)
                if shared is None:
                    continue
                exposed = first_where(ctx.regions, next_exposed, shared)
                if exposed is not None:
                    effect = (
                        f"the loader has no memory to copy into there, and "
                        f"{_what_happens(access, exposed.outcome(access))} instead of reaching "
                        "the program"
                    )
                else:
                    effect = (
                        "a memslot shadows the device there, so the program's bytes land in "
                        "memory but the device never sees the guest's accesses to that range"
                    )
                yield _finding(
                    RULES["elf-over-device"],
                    program,
                    f"{_describe(segment, 'p_paddr', rng)} overlaps {device.type.name} device "
                    f"{device.name!r} {device.range} at {_span(shared)}: {effect}; link the "
                    "segment clear of the device, or move the device",
                    (device.name, *_memslot_names(slots, _first_regions(ctx, shared))),
                )


def context(layout_text: str, programs: tuple[Program, ...], directory: Path) -> RuleContext:
    path = directory / "layout.yaml"
    path.write_text(layout_text)
    loaded = load_layout(path)
    arch = ARCHES["x86_64"]
    regions = partition(loaded.resolved, arch)
    return RuleContext(
        str(path), loaded.doc, loaded.resolved, arch, regions, (), programs, (), PHYSICAL
    )


PAGES = st.integers(min_value=0, max_value=12)


@st.composite
def layouts(draw: st.DrawFn) -> str:
    # Memslots apart from each other (overlapping ones are refused), devices anywhere; a
    # layout's names are unique.
    cuts = sorted(draw(st.sets(PAGES, max_size=8)))
    memslots = [
        f"name: m{k}, base: {lo * PAGE:#x}, "
        f"size: {(hi - lo) * PAGE:#x}" + (", readonly: true" if draw(st.booleans()) else "")
        for k, (lo, hi) in enumerate(itertools.pairwise(cuts))
        if draw(st.integers(0, 3))
    ]
    devices = [
        f"name: d{k}, type: mmio, base: {base * PAGE:#x}, "
        f"size: {draw(st.integers(1, 6)) * PAGE:#x}"
        for k, base in enumerate(draw(st.lists(PAGES, max_size=10)))
    ]
    text = HEADER
    if memslots:
        text += "memslots:\n" + "".join(f"  - {{{m}}}\n" for m in memslots)
    if devices:
        text += "devices:\n" + "".join(f"  - {{{d}}}\n" for d in devices)
    return text


@st.composite
def programs(draw: st.DrawFn) -> tuple[Program, ...]:
    machine = ARCHES["x86_64"].elf_machine
    found = []
    for _ in range(draw(st.integers(1, 3))):
        segments = tuple(
            Segment(k, 0, draw(PAGES) * PAGE, draw(st.integers(1, 8)) * PAGE, 0, flags)
            for k, flags in enumerate(draw(st.lists(st.sampled_from([4, 5, 6]), max_size=7)))
        )
        found.append(Program(draw(st.sampled_from(["p.elf", "q.elf"])), machine, segments))
    return tuple(found)


# A memslot fills in the middle of a segment, before a device under it whose segments were
# being counted under another memslot: from that device on, they are left out under this one.
MIDDLE_OF_A_SEGMENT = (
    HEADER
    + "memslots:\n  - {name: m0, base: 0x0, size: 4K}\n  - {name: m1, base: 0x1000, size: 4K}\n"
    + "devices:\n  - {name: d0, type: mmio, base: 0x0, size: 4K}\n"
    + "  - {name: d1, type: mmio, base: 0x0, size: 8K}\n"
    + "  - {name: d2, type: mmio, base: 0x1000, size: 4K}\n",
    (
        Program(
            "p.elf",
            ARCHES["x86_64"].elf_machine,
            tuple(
                Segment(k, 0, start * PAGE, size * PAGE, 0, 6)
                for k, (start, size) in enumerate([(1, 1), (1, 1), (0, 2), (0, 2), (0, 2)])
            ),
        ),
    ),
    2,
)


# A segment starts inside devices whose findings there are left out under m1, counted
# together; a device before them fills m0, which their findings name before m1: from
# there on they are left out under m0.
ACROSS_THE_START = (
    HEADER
    + "memslots:\n  - {name: m0, base: 0x0, size: 8K}\n  - {name: m1, base: 0x2000, size: 8K}\n"
    + "devices:\n  - {name: d0, type: mmio, base: 0x1000, size: 0x800}\n"
    + "  - {name: d1, type: mmio, base: 0x800, size: 0x3800}\n"
    + "  - {name: d2, type: mmio, base: 0x800, size: 0x3800}\n"
    + "  - {name: d3, type: mmio, base: 0x0, size: 0x800}\n",
    (
        Program(
            "p.elf",
            ARCHES["x86_64"].elf_machine,
            tuple(
                Segment(k, 0, start, size, 0, 6)
                for k, (start, size) in enumerate(
                    [(0, 0x800), (0x2000, 0x1000), (0x2000, 0x1000), (0x1000, 0x3000)]
                )
            ),
        ),
    ),
    2,
)


@settings(max_examples=500, deadline=None)
@given(layouts(), programs(), st.sampled_from([1, 2, 3, 10]))
@example(*MIDDLE_OF_A_SEGMENT)
@example(*ACROSS_THE_START)
def test_capping_as_made_gives_what_capping_every_finding_gave(
    layout_text: str, programs: tuple[Program, ...], cap: int
) -> None:
    check = RULES["elf-over-device"].check
    assert check is not None
    with tempfile.TemporaryDirectory() as directory, mock.patch.object(
        findings_module, "MAX_FINDINGS_PER_OBJECT", cap
    ), mock.patch.object(program_rules, "MAX_FINDINGS_PER_OBJECT", cap):
        ctx = context(layout_text, programs, Path(directory))
        before = cap_per_object(sorted(one_per_pair(ctx), key=Finding.sort_key))
        after = cap_per_object(
            sorted(check(ctx), key=Finding.sort_key), capped_as_made=CAPPED_AS_MADE
        )
    assert after == before


def segments_over_devices(directory: Path, n: int, memslot: bool) -> RuleContext:
    """n devices of a page each, and n segments each over all of them; with ``memslot``, RAM
    under them all, whose findings fill first."""
    text = HEADER
    if memslot:
        text += "memslots:\n  - {name: ram, base: 0x0, size: 1G}\n"
    text += "devices:\n" + "".join(
        f"  - {{name: d{i}, type: mmio, base: {(i + 1) * PAGE:#x}, size: 4K}}\n"
        for i in range(n)
    )
    segments = tuple(Segment(i, 0, 0, (n + 2) * PAGE, 0, 6) for i in range(n))
    program = Program("guest.elf", ARCHES["x86_64"].elf_machine, segments)
    return context(text, (program,), directory)


def decided_pairs(ctx: RuleContext) -> tuple[list[Finding], int]:
    """The rule's findings, and how many segment and device pairs it looked at one by one."""
    from gpa_plan.ranges import Range

    intersection = Range.intersection
    calls: list[int] = []

    def counted(self: Range, other: Range) -> Range | None:
        calls.append(1)
        return intersection(self, other)

    check = RULES["elf-over-device"].check
    assert check is not None
    with mock.patch.object(Range, "intersection", counted):
        found = list(check(ctx))
    return found, len(calls)


def test_segments_over_unbacked_devices_show_ten_each_and_count_the_rest(
    tmp_path: Path,
) -> None:
    n = 2_000
    ctx = segments_over_devices(tmp_path, n, memslot=False)
    found, pairs = decided_pairs(ctx)
    cap = findings_module.MAX_FINDINGS_PER_OBJECT
    shown = [f for f in found if "more elf-over-device" not in f.message]
    more = [f for f in found if "more elf-over-device" in f.message]
    assert len(shown) == cap * n
    assert [f.objects for f in more] == [(f"d{i}",) for i in range(n)]
    assert all(f.message.startswith(f"{n - cap} more elf-over-device findings") for f in more)
    # One by one, every pair would be n * n.
    assert pairs < 30 * n


def test_segments_over_devices_in_ram_count_what_the_full_memslot_leaves_out(
    tmp_path: Path,
) -> None:
    n = 2_000
    ctx = segments_over_devices(tmp_path, n, memslot=True)
    found, pairs = decided_pairs(ctx)
    cap = findings_module.MAX_FINDINGS_PER_OBJECT
    assert len(found) == cap + 1
    assert found[-1].objects == ("ram",)
    assert found[-1].message.startswith(f"{n * n - cap} more elf-over-device findings")
    assert pairs < 30 * n


def one_per_collision(ctx: RuleContext) -> Iterator[Finding]:
    """elf-va-collision as it was: one finding per segment and identity-mapped device."""
    from gpa_plan.elf.placement import identity_mapped, identity_pages

    page = ctx.layout.guest_page_size
    devices = identity_mapped(ctx.layout)
    index = RangeIndex([identity_pages(d, page) for d in devices])
    for program in _runnable(ctx, SELFTESTS):
        for segment in program.segments:
            pages = segment.virtual_pages(page)
            for k in index.overlapping(pages):
                device = devices[k]
                shared = identity_pages(device, page).intersection(pages)
                if shared is None:
                    continue
                yield _finding(
                    RULES["elf-va-collision"],
                    program,
                    f"segment {segment.index} ({segment.flag_letters}, p_vaddr "
                    f"{_span(Range(segment.vaddr, segment.vaddr + segment.memsz))}, mapped as "
                    f"pages {_span(pages)}) shares virtual pages {_span(shared)} with the "
                    f"identity mapping of {device.type.name} device {device.name!r} "
                    f"(VA = GPA {device.range}): kvm_vm_elf_load() maps the program there and "
                    "virt_map() maps the device at the same addresses, so whichever comes "
                    "second fails a TEST_ASSERT or silently takes over the page-table entry "
                    "and the guest reaches the device where it expects its code or data; "
                    f"link the program at virtual addresses clear of {_span(shared)}",
                    (device.name,),
                )


BYTES = st.integers(0, 12 * PAGE)  # addresses at any byte, so pages round both ways


@st.composite
def identity_layouts(draw: st.DrawFn) -> str:
    devices = [
        f"name: d{k}, type: mmio, base: {base:#x}, size: {size:#x}"
        + (", identity_map: true" if draw(st.integers(0, 3)) else "")
        for k, (base, size) in enumerate(
            draw(st.lists(st.tuples(BYTES, st.integers(1, 3 * PAGE)), max_size=8))
        )
    ]
    text = HEADER + "memslots:\n  - {name: ram, base: 0x100000, size: 1M}\n"
    if devices:
        text += "devices:\n" + "".join(f"  - {{{d}}}\n" for d in devices)
    return text


@st.composite
def virtual_programs(draw: st.DrawFn) -> tuple[Program, ...]:
    machine = ARCHES["x86_64"].elf_machine
    found = []
    for _ in range(draw(st.integers(1, 3))):
        segments = tuple(
            Segment(k, vaddr, 0, memsz, 0, 5)
            for k, (vaddr, memsz) in enumerate(
                draw(st.lists(st.tuples(BYTES, st.integers(1, 6 * PAGE)), max_size=7))
            )
        )
        found.append(Program(draw(st.sampled_from(["p.elf", "q.elf"])), machine, segments))
    return tuple(found)


@settings(max_examples=300, deadline=None)
@given(identity_layouts(), virtual_programs(), st.sampled_from([1, 2, 3, 10]))
def test_collisions_capped_as_made_are_what_capping_every_one_gave(
    layout_text: str, programs: tuple[Program, ...], cap: int
) -> None:
    check = RULES["elf-va-collision"].check
    assert check is not None
    with tempfile.TemporaryDirectory() as directory, mock.patch.object(
        findings_module, "MAX_FINDINGS_PER_OBJECT", cap
    ), mock.patch.object(program_rules, "MAX_FINDINGS_PER_OBJECT", cap):
        ctx = context(layout_text, programs, Path(directory))._replace(elf_mode=SELFTESTS)
        before = cap_per_object(sorted(one_per_collision(ctx), key=Finding.sort_key))
        after = cap_per_object(
            sorted(check(ctx), key=Finding.sort_key), capped_as_made=CAPPED_AS_MADE
        )
    assert after == before


def test_segments_ending_inside_devices_in_ram_are_counted_not_decided(tmp_path: Path) -> None:
    n = 2_000
    # Every device runs past the end of every segment; RAM under them fills first.
    big = (n + 10) * PAGE
    text = HEADER + "memslots:\n  - {name: ram, base: 0x0, size: 1G}\ndevices:\n" + "".join(
        f"  - {{name: d{i}, type: mmio, base: {(i + 1) * PAGE:#x}, size: {big:#x}}}\n"
        for i in range(n)
    )
    segments = tuple(Segment(i, 0, 0, (n + 2) * PAGE, 0, 6) for i in range(n))
    program = Program("guest.elf", ARCHES["x86_64"].elf_machine, segments)
    found, pairs = decided_pairs(context(text, (program,), tmp_path))
    cap = findings_module.MAX_FINDINGS_PER_OBJECT
    assert found[-1].message.startswith(f"{n * n - cap} more elf-over-device findings")
    assert pairs < 30 * n


def test_segments_over_identity_mapped_devices_show_ten_each(tmp_path: Path) -> None:
    n = 2_000
    text = HEADER + "devices:\n" + "".join(
        f"  - {{name: d{i}, type: mmio, base: {i * PAGE:#x}, size: 4K, identity_map: true}}\n"
        for i in range(n)
    )
    segments = tuple(Segment(i, 0, 0, n * PAGE, 0, 5) for i in range(n))
    program = Program("guest.elf", ARCHES["x86_64"].elf_machine, segments)
    ctx = context(text, (program,), tmp_path)._replace(elf_mode=SELFTESTS)
    check = RULES["elf-va-collision"].check
    assert check is not None
    from gpa_plan.ranges import Range as Counted

    intersection = Counted.intersection
    calls: list[int] = []

    def counted(self: Range, other: Range) -> Range | None:
        calls.append(1)
        return intersection(self, other)

    with mock.patch.object(Counted, "intersection", counted):
        found = list(check(ctx))
    cap = findings_module.MAX_FINDINGS_PER_OBJECT
    more = [f for f in found if "more elf-va-collision" in f.message]
    assert len(found) - len(more) == cap * n
    assert len(more) == n
    assert all(f.message.startswith(f"{n - cap} more") for f in more)
    assert len(calls) < 30 * n


def test_segments_starting_inside_devices_in_ram_are_counted_not_decided(
    tmp_path: Path,
) -> None:
    n = 2_000
    big = (n + 10) * PAGE
    text = HEADER + "memslots:\n  - {name: ram, base: 0x0, size: 1G}\ndevices:\n" + "".join(
        f"  - {{name: d{i}, type: mmio, base: {(i + 1) * PAGE:#x}, size: {big:#x}}}\n"
        for i in range(n)
    )
    # Every segment starts past every device's start and inside it.
    segments = tuple(Segment(i, 0, (n + 2) * PAGE, big, 0, 6) for i in range(n))
    program = Program("guest.elf", ARCHES["x86_64"].elf_machine, segments)
    found, pairs = decided_pairs(context(text, (program,), tmp_path))
    cap = findings_module.MAX_FINDINGS_PER_OBJECT
    assert found[-1].message.startswith(f"{n * n - cap} more elf-over-device findings")
    assert pairs < 30 * n
