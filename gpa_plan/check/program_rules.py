"""Rules for guest programs given with `check --elf`: can the loader put every segment where
the layout has memory for it, and does the guest then reach its code and data?

An ELF file has no YAML position: findings point at the ELF file itself (line 1, column 1),
and name the layout entries involved in `objects` and in the message.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from gpa_plan.arch.base import Backing, Outcome
from gpa_plan.check.findings import MAX_FINDINGS_PER_OBJECT, Finding, left_out_finding
from gpa_plan.check.overlaps import LiveRanges, TakenRanges
from gpa_plan.check.partition import Region, first_where, next_where, region_span
from gpa_plan.check.rules import ERROR, Rule, RuleContext, rule
from gpa_plan.elf import ELF64_HEADER_SIZES, PHYSICAL, SELFTESTS
from gpa_plan.layout.resolved import DeviceEntry, MemslotEntry
from gpa_plan.ranges import Range, hex_addr, human_size

# The ELF modules are imported where a program is at hand: a check without `--elf` does
# not load them.
if TYPE_CHECKING:
    from gpa_plan.elf.program import Program, Segment

# What a guest access of one kind becomes, said of plural accesses ("guest writes there ...").
_OUTCOME_TEXT = {
    Outcome.MEMORY: "are served from memory",
    Outcome.IO_EXIT: "exit to the VMM as KVM_EXIT_MMIO",
    Outcome.IO_KERNEL: "go to an in-kernel device on the KVM IO bus",
    Outcome.IO_COALESCED: "are buffered in the coalesced-MMIO ring",
    Outcome.GUEST_FAULT: "fault (KVM injects an exception into the guest)",
    Outcome.VM_ERROR: "fail (KVM_RUN exits with KVM_EXIT_INTERNAL_ERROR)",
}
_ACCESS_TEXT = {"fetch": "instruction fetches", "write": "writes", "read": "reads"}


def _finding(rule: Rule, program: Program, message: str, objects: Iterable[str]) -> Finding:
    return rule.finding_at(program.path, 1, 1, message, objects)


def _span(rng: Range) -> str:
    """Inclusive, for people: ``0x4000_0000-0x4000_ffff``."""
    return f"{hex_addr(rng.start)}-{hex_addr(rng.end - 1)}"


def _spans(ranges: Iterable[Range]) -> str:
    return ", ".join(_span(r) for r in ranges)


def _describe(segment: Segment, field: str, rng: Range) -> str:
    return f"segment {segment.index} ({segment.flag_letters}, {field} {_span(rng)})"


def _main_access(segment: Segment) -> str:
    """The access the program is sure to make to the segment: code is fetched, data written."""
    if segment.executable:
        return "fetch"
    return "write" if segment.writable else "read"


def _what_happens(access: str, outcome: Outcome) -> str:
    return f"guest {_ACCESS_TEXT[access]} there {_OUTCOME_TEXT[outcome]}"


def _runnable(ctx: RuleContext, mode: str) -> Iterator[Program]:
    """The programs loaded in ``mode`` whose machine is this arch's; elf-wrong-arch reports
    the others."""
    if ctx.elf_mode != mode:
        return
    for program in ctx.programs:
        if program.machine == ctx.arch.elf_machine:
            yield program


def _ram_hint(ctx: RuleContext) -> str:
    """Names the largest read-write memslot of address space 0, the likely guest RAM."""
    ram = [m for m in ctx.layout.memslots if m.as_id == 0 and not m.readonly]
    if not ram:
        return ""
    best = max(ram, key=lambda m: m.range.size)
    return f" such as {best.name!r} {best.range}"


def _merge(ranges: Iterable[Range]) -> list[Range]:
    merged: list[Range] = []
    for rng in sorted(ranges):
        if merged and merged[-1].end >= rng.start:
            merged[-1] = Range(merged[-1].start, max(merged[-1].end, rng.end))
        else:
            merged.append(rng)
    return merged


# Regions a message lists (and takes names from) for one segment, before it counts the rest.
_MAX_LISTED = 10


class _Matching:
    """The regions of the partition that pass a test, found within a range without a scan:
    the first few, and how many there are."""

    def __init__(self, regions: Sequence[Region], test: Callable[[Region], bool]) -> None:
        self.regions = regions
        self.following = next_where(regions, test)
        self.counts = [0]
        for region in regions:
            self.counts.append(self.counts[-1] + (1 if test(region) else 0))

    def within(self, rng: Range) -> tuple[list[Region], int]:
        lo, hi = region_span(self.regions, rng)
        found: list[Region] = []
        k = self.following[lo]
        while k < hi and len(found) < _MAX_LISTED:
            found.append(self.regions[k])
            k = self.following[k + 1]
        return found, self.counts[hi] - self.counts[lo]


def _more(shown: int, total: int, what: str) -> str:
    return f" and {total - shown} more {what}" if total > shown else ""


def _first_regions(ctx: RuleContext, rng: Range) -> list[Region]:
    lo, hi = region_span(ctx.regions, rng)
    return list(ctx.regions[lo : min(hi, lo + _MAX_LISTED)])


def _memslots_of(ctx: RuleContext) -> set[str]:
    """The names of the memslots of address space 0: once per rule, not per segment."""
    return {m.name for m in ctx.layout.memslots if m.as_id == 0}


def _memslot_names(slots: set[str], regions: Iterable[Region]) -> list[str]:
    return list(dict.fromkeys(n for r in regions for n in r.names if n in slots))


@rule("elf-unreadable", ERROR, "a file given with --elf is not an ELF executable gpa-plan can read")
def elf_unreadable(ctx: RuleContext) -> Iterator[Finding]:
    """The file is not ELF, is truncated or corrupt, or has no PT_LOAD segment (an object file
    or a core dump); a file that cannot be read at all is a usage error, exit 2, instead. No
    loader can place it: neither a VMM kernel loader nor KVM selftests' kvm_vm_elf_load().
    Fix: pass the guest's linked executable."""
    for err in ctx.program_errors:
        yield ctx.running.finding_at(
            err.path,
            err.line,
            err.column,
            f"{err.reason}: no loader can place it in guest memory, so the program was not "
            "checked; pass the guest's linked ELF executable (not an object file or a core dump)",
        )


@rule(
    "elf-wrong-arch", ERROR, "a guest program built for another architecture than the one checked"
)
def elf_wrong_arch(ctx: RuleContext) -> Iterator[Finding]:
    """The ELF header's e_machine is not the architecture the layout is checked under
    (EM_AARCH64 for arm64, EM_X86_64 for x86_64, EM_RISCV for riscv64, EM_LOONGARCH for
    loongarch64): the vCPU would decode the program's
    instructions as its own and fault or run garbage. Its segments are not checked further
    under this architecture. Fix: build the program for the layout's architecture, or check
    it with the matching --arch."""
    expected = ctx.arch.elf_machine
    for program in ctx.programs:
        if program.machine != expected:
            yield _finding(
                ctx.running,
                program,
                f"ELF machine {program.machine} is not {expected}, the machine of the "
                f"{ctx.arch.name} vCPU this layout is checked for: the vCPU would decode the "
                "program's bytes as its own instructions and take undefined-instruction "
                f"exceptions or run garbage; build the program for {ctx.arch.name} or check "
                "it with the --arch it was built for",
                (),
            )


@rule(
    "elf-unbacked",
    ERROR,
    "part of a guest program's segment (at p_paddr) lies outside every memslot",
)
def elf_unbacked(ctx: RuleContext) -> Iterator[Finding]:
    """--elf-mode physical: a VMM kernel loader (rust-vmm linux-loader, QEMU load_elf) copies
    each PT_LOAD segment to guest memory at [p_paddr, p_paddr + p_memsz). Where no memslot of
    address space 0 backs that range (or it lies beyond the guest's physical address size)
    there is no memory to copy into, and the guest's own accesses there exit to the VMM or
    fault instead of reaching its code or data. Parts that a device claims are left to
    elf-over-device. Fix: link the segment at a physical address inside a memslot (the linker
    script's AT() / load address) or add a memslot there."""
    if not ctx.programs:
        return
    hint = _ram_hint(ctx)
    unbacked = _Matching(ctx.regions, lambda r: r.kind == "unbacked")
    for program in _runnable(ctx, PHYSICAL):
        for segment in program.segments:
            finding = _unbacked(ctx, program, segment, hint, unbacked)
            if finding is not None:
                yield finding


def _unbacked(
    ctx: RuleContext, program: Program, segment: Segment, hint: str, unbacked: _Matching
) -> Finding | None:
    rng = segment.physical
    access = _main_access(segment)
    # Parts a device claims are reported once, by elf-over-device.
    holes, total = unbacked.within(rng)
    gaps = [hole.range.intersection(rng) for hole in holes]
    outcomes = [hole.outcome(access) for hole in holes]
    if rng.end > ctx.layout.limit:
        gaps.append(Range(max(rng.start, ctx.layout.limit), rng.end))
        outcomes.append(ctx.arch.beyond(access).outcome)
    parts = _merge(g for g in gaps if g is not None)
    if not parts:
        return None
    where = (
        "the whole segment is"
        if parts == [rng]
        else f"{_spans(parts)}{_more(len(holes), total, 'unbacked ranges')} "
        f"{'is' if len(parts) == 1 and total == len(holes) else 'are'}"
    )
    names = list(dict.fromkeys(n for hole in holes for n in hole.names))
    return _finding(
        ctx.running,
        program,
        f"{_describe(segment, 'p_paddr', rng)}: {where} outside every memslot: the loader "
        f"has no guest memory to copy the segment into, and {_what_happens(access, outcomes[0])}"
        f" instead of reaching the program; link the segment at a physical address inside a "
        f"memslot{hint}, or add a memslot that covers it",
        names,
    )


@rule(
    "elf-readonly",
    ERROR,
    "a writable guest program segment (at p_paddr) lies in a read-only memslot",
)
def elf_readonly(ctx: RuleContext) -> Iterator[Finding]:
    """--elf-mode physical: a segment with PF_W (data, bss) placed at p_paddr in a
    KVM_MEM_READONLY memslot. The loader can fill it, but the program's writes never update
    it: a write to a read-only memslot takes the MMIO path (arm64 kvm_handle_guest_abort() ->
    io_mem_abort(); x86_64 emulation of the write; riscv64 gstage_page_fault() ->
    kvm_riscv_vcpu_mmio_store(); loongarch64 kvm_handle_rdwr_fault() -> kvm_emu_mmio_write())
    and exits to the VMM as KVM_EXIT_MMIO. Code
    and read-only data in a read-only memslot (flash) are fine. Fix: link the data segment
    into RAM (its AT() load address)."""
    if not ctx.programs:
        return
    hint, slots = _ram_hint(ctx), _memslots_of(ctx)
    roms = _Matching(ctx.regions, lambda r: r.backing is Backing.ROM)
    for program in _runnable(ctx, PHYSICAL):
        for segment in program.segments:
            if segment.writable:
                finding = _readonly(ctx, program, segment, hint, slots, roms)
                if finding is not None:
                    yield finding


def _readonly(
    ctx: RuleContext,
    program: Program,
    segment: Segment,
    hint: str,
    memslots: set[str],
    matching: _Matching,
) -> Finding | None:
    rng = segment.physical
    roms, total = matching.within(rng)
    if not roms:
        return None
    parts = _merge(r.range.intersection(rng) or rng for r in roms)
    slots = _memslot_names(memslots, roms)
    quoted = ", ".join(repr(s) for s in slots)
    plural = "s" if len(slots) > 1 else ""
    where = f"lies in read-only memslot{plural} {quoted}"
    if parts != [rng]:
        where = (
            f"overlaps read-only memslot{plural} {quoted} at {_spans(parts)}"
            f"{_more(len(roms), total, 'read-only ranges')}"
        )
    return _finding(
        ctx.running,
        program,
        f"{_describe(segment, 'p_paddr', rng)} {where}: "
        f"{_what_happens('write', roms[0].write)} instead of updating memory; "
        f"link the data segment into RAM{hint}",
        slots,
    )


@rule(
    "elf-over-device",
    ERROR,
    "a guest program segment (at p_paddr) overlaps a device range",
)
def elf_over_device(ctx: RuleContext) -> Iterator[Finding]:
    """--elf-mode physical: a segment at [p_paddr, p_paddr + p_memsz) overlaps an MMIO device.
    Without a memslot there the loader has nowhere to copy the bytes and the guest's accesses
    go to the device (KVM_EXIT_MMIO, or an in-kernel device such as the vGIC) instead of its
    code or data; with a memslot there the program works but the device never sees its
    accesses. Fix: link the segment clear of every device, or move the device."""
    if not ctx.programs:
        return
    yield from _DeviceOverlaps(ctx).findings()


class _DeviceOverlaps:
    """elf-over-device's findings, capped as cap_per_object caps them, without making one per
    segment and device. The findings come out in the order the cap sees them (programs by
    file, segments in order, devices in file order): the kept ones, then one per object that
    had more, in the order the first left out of each came.

    Each device is in one of three indexes the segments search:

    - live: its findings may still be shown; each segment over it decides.
    - blocked: a segment over the whole device names a memslot whose findings are full and
      whose left-out finding has come: a segment over the whole device is one more left out
      there, counted at the end, and only a segment over part of it (whose finding names
      other memslots) is decided one by one. A memslot filling sends the devices under it
      back to live.
    - waiting: the device's own findings are full; the segments over it after that are
      counted at the end, and the first one only places the left-out finding.
    """

    mode = PHYSICAL

    def __init__(self, ctx: RuleContext) -> None:
        self.ctx = ctx
        self.rule = ctx.running
        self.slots = self._slots()
        self.exposed = next_where(ctx.regions, lambda r: r.backing is Backing.NONE)
        self.devices = devices = self._devices()
        self.ranges = ranges = [self._range(d) for d in devices]
        self.live = LiveRanges(ranges)
        # The devices not done, mirrored (start and end swapped about `top`) so that those
        # across a segment's start are found by how far they reach; and counted by reach.
        self.top = max((r.end for r in ranges), default=0) + 1
        self.by_end = LiveRanges([Range(self.top - r.end, self.top - r.start) for r in ranges])
        self.every = _Containing(ranges)
        for r in ranges:
            self.every.add(r)
        self.finished = _Containing(ranges)
        # This segment's devices across its start left out in bulk: (name, reaching past).
        self.bulk: tuple[str, int, Range] | None = None
        self.blocked = LiveRanges(ranges, present=False)
        # The blocked devices again, each up to where its left-out memslot starts.
        self.short = LiveRanges(ranges, present=False)
        self.waiting = LiveRanges(ranges, present=False)
        self.by_name: dict[str, list[int]] = {}
        for k, device in enumerate(devices):
            self.by_name.setdefault(device.name, []).append(k)
        # What a finding over the whole device names, and the devices whose such findings
        # name each memslot.
        self.own = [self._objects(d, r) for d, r in zip(devices, ranges, strict=True)]
        self.users: dict[str, list[int]] = {}
        for k, objects in enumerate(self.own):
            for name in dict.fromkeys(objects[1:]):
                self.users.setdefault(name, []).append(k)
        # blocked device: (name, since position, the least end of a segment counted)
        self.block: dict[int, tuple[str, int, int]] = {}
        # (name, device, least end, from, to): the segments from `from` up to `to` that
        # start at or before the device and end at or after `least end` are left out
        self.spans: list[tuple[str, int, int, int, int]] = []
        self.done: set[int] = set()
        self.shown: dict[str, int] = {}
        self.full_at: dict[str, int] = {}
        self.hidden: dict[str, int] = {}
        self.first: dict[str, Finding] = {}
        self.kept: list[Finding] = []
        self.placed: list[Range] = []

    def findings(self) -> list[Finding]:
        programs = sorted(_runnable(self.ctx, self.mode), key=lambda p: p.path)
        for program in programs:
            for segment in program.segments:
                self._segment(program, segment)
        for k in list(self.block):
            self._unblock(k, len(self.placed))
        self._count_after_full()
        self._count_blocked()
        more = [
            left_out_finding(self.rule.slug, name, self.hidden[name], self.rule.severity, first)
            for name, first in self.first.items()
        ]
        return self.kept + more

    def _segment(self, program: Program, segment: Segment) -> None:
        rng = self._segment_range(segment)
        position = len(self.placed)
        self.placed.append(rng)
        pending = self.live.overlapping(rng, starting_at=rng.start)
        pending += self.waiting.overlapping(rng)
        pending += self._blocked_across(rng)
        pending += self._across_start(rng)
        heapq.heapify(pending)
        last = -1
        while pending:
            k = heapq.heappop(pending)
            if k == last:
                continue
            last = k
            device = self.devices[k]
            shared = self.ranges[k].intersection(rng)
            if shared is None:
                continue
            if k in self.done:
                # Counted with the others after the device's name filled, in _count_after_full.
                self._left_out(device.name, program, 0)
                continue
            objects = self.own[k] if shared == self.ranges[k] else self._objects(device, shared)
            full = next(
                (n for n in objects if self.shown.get(n, 0) >= MAX_FINDINGS_PER_OBJECT), None
            )
            if full is not None:
                self._left_out(full, program, 1)
                if shared.start == self.ranges[k].start and k not in self.block:
                    self._block(k, full, position + 1)
                continue
            self.kept.append(self._finding(program, segment, device, shared, objects))
            for name in dict.fromkeys(objects):
                self.shown[name] = self.shown.get(name, 0) + 1
                if self.shown[name] == MAX_FINDINGS_PER_OBJECT:
                    self._filled(name, position, k, rng, pending)

    def _block(self, k: int, name: str, since: int) -> None:
        """Device ``k``: a segment from its start on names ``name`` first among the full ones
        once it reaches the first region of the device that lists ``name``."""
        device = self.ranges[k]
        lo, hi = region_span(self.ctx.regions, device)
        first = next(
            r
            for r in self.ctx.regions[lo : min(hi, lo + _MAX_LISTED)]
            if name in r.names
        )
        least_end = max(first.start, device.start) + 1
        self.live.remove(k)
        self.blocked.add(k)
        self.short.set_end(k, least_end)
        self.block[k] = (name, since, least_end)

    def _counted(self, k: int, rng: Range) -> bool:
        """Whether the segment over ``rng`` is one the spans of blocked device ``k`` count."""
        _, _, least_end = self.block[k]
        return rng.start <= self.ranges[k].start and rng.end >= least_end

    def _blocked_across(self, rng: Range) -> list[int]:
        """The blocked devices from ``rng``'s start on that it ends in before their left-out
        memslot: their spans do not count it."""
        return [
            k
            for k in self.short.overlapping(Range(rng.end, rng.end + 1), starting_at=rng.start)
            if self.ranges[k].start < rng.end
        ]

    def _across(self, rng: Range, reach: int | None = None) -> list[int]:
        """The devices not done that start before ``rng`` and end inside or after it (with
        ``reach``, at or before ``reach``)."""
        if rng.start >= self.top or rng.start == 0:
            return []
        point = self.top - rng.start
        found = self.by_end.overlapping(
            Range(point, point + 1), starting_at=None if reach is None else self.top - reach
        )
        return [k for k in found if self.ranges[k].end > rng.start]

    def _across_start(self, rng: Range) -> list[int]:
        """The devices across ``rng``'s start to decide one by one. Their findings name the
        memslots from ``rng``'s start on, so once the first of those regions with a full
        memslot is reached (and that memslot's left-out finding has come), every device
        reaching past it is one more left out there: counted here, not listed."""
        self.bulk = None
        name, reach = self._full_from(rng)
        if name is None or name not in self.first:
            return self._across(rng)
        start = rng.start - 1
        bulk = self.every.around(start, reach + 1) - self.finished.around(start, reach + 1)
        self.hidden[name] = self.hidden.get(name, 0) + bulk
        self.bulk = (name, reach, rng)
        return self._across(rng, reach)

    def _full_from(self, rng: Range) -> tuple[str | None, int]:
        """The first full memslot the regions from ``rng``'s start name (among those a
        finding lists), and the address a device must reach past to be named with it."""
        if not self.slots:
            return None, 0
        lo, hi = region_span(self.ctx.regions, rng)
        for region in self.ctx.regions[lo : min(hi, lo + _MAX_LISTED)]:
            for name in region.names:
                if name in self.slots and self.shown.get(name, 0) >= MAX_FINDINGS_PER_OBJECT:
                    return name, max(region.start, rng.start)
        return None, 0

    def _unbulk(self, at: int, pending: list[int]) -> None:
        """A name filled at device ``at``: the devices after it that this segment left out
        in bulk are decided one by one instead."""
        if self.bulk is None:
            return
        name, reach, rng = self.bulk
        self.bulk = None
        for k in self._across(rng):
            if self.ranges[k].end > reach and k > at:
                self.hidden[name] -= 1
                heapq.heappush(pending, k)

    def _filled(self, name: str, position: int, at: int, rng: Range, pending: list[int]) -> None:
        """``name`` has its findings shown, at device ``at`` of the segment at ``position``."""
        self.full_at[name] = position
        if name in self.slots:
            self._unbulk(at, pending)
        for k in self.by_name.get(name, ()):
            if k in self.block:
                self._unblock(k, position + 1)
            self.live.remove(k)
            self.by_end.remove(k)
            self.finished.add(self.ranges[k])
            self.done.add(k)
            if name not in self.first:
                self.waiting.add(k)
        for k in self.users.get(name, ()):
            if k not in self.block:
                continue
            # The devices after this one in the segment see the name full: decided anew.
            later = k > at and self._counted(k, rng)
            self._unblock(k, position if later else position + 1)
            if later:
                heapq.heappush(pending, k)

    def _unblock(self, k: int, until: int) -> None:
        name, since, least_end = self.block.pop(k)
        if until > since:
            self.spans.append((name, k, least_end, since, until))
        self.blocked.remove(k)
        self.short.remove(k)
        if k not in self.done:
            self.live.add(k)

    # What the rule is about: the devices, the range of each and of each segment, what a
    # finding over part of both names.
    def _slots(self) -> set[str]:
        return _memslots_of(self.ctx)

    def _devices(self) -> list[DeviceEntry]:
        return list(self.ctx.layout.devices)

    def _range(self, device: DeviceEntry) -> Range:
        return device.range

    def _segment_range(self, segment: Segment) -> Range:
        return segment.physical

    def _objects(self, device: DeviceEntry, shared: Range) -> tuple[str, ...]:
        if not self.slots:
            return (device.name,)
        return (device.name, *_memslot_names(self.slots, _first_regions(self.ctx, shared)))

    def _left_out(self, name: str, program: Program, count: int) -> None:
        self.hidden[name] = self.hidden.get(name, 0) + count
        if name not in self.first:
            self.first[name] = _finding(self.rule, program, "", ())
            for k in self.by_name.get(name, ()):
                self.waiting.remove(k)

    def _count_after_full(self) -> None:
        """Adds, for each device whose name filled at some segment, the segments after that
        one that overlap it: positions from the last down, each device asked when the sweep
        reaches its name's segment."""
        asked = sorted(
            ((at, k) for name, at in self.full_at.items() for k in self.by_name.get(name, ())),
            reverse=True,
        )
        starts = _Counts(sorted({r.start for r in self.placed}))
        ends = _Counts(sorted({r.end for r in self.placed}))
        position = len(self.placed)
        for at, k in asked:
            while position > at + 1:
                position -= 1
                rng = self.placed[position]
                if rng.start < rng.end:
                    starts.add(rng.start)
                    ends.add(rng.end)
            name, rng = self.devices[k].name, self.ranges[k]
            if rng.start < rng.end:
                overlapping = starts.below(rng.end) - ends.at_most(rng.start)
                self.hidden[name] = self.hidden.get(name, 0) + overlapping

    def _count_blocked(self) -> None:
        """Adds, for each time a device was blocked, the segments of that time over the whole
        device: positions from the first up, each span asked at its two ends."""
        asked = sorted(
            (at, sign, name, k, least_end)
            for name, k, least_end, since, until in self.spans
            for at, sign in ((since, -1), (until, 1))
        )
        containing = _Containing([r for r in self.placed if r.start < r.end])
        position = 0
        for at, sign, name, k, least_end in asked:
            while position < at:
                rng = self.placed[position]
                if rng.start < rng.end:
                    containing.add(rng)
                position += 1
            inside = containing.around(self.ranges[k].start, least_end)
            self.hidden[name] = self.hidden.get(name, 0) + sign * inside

    def _finding(
        self,
        program: Program,
        segment: Segment,
        device: DeviceEntry,
        shared: Range,
        objects: tuple[str, ...],
    ) -> Finding:
        rng = segment.physical
        access = _main_access(segment)
        exposed = first_where(self.ctx.regions, self.exposed, shared)
        if exposed is not None:
            effect = (
                f"the loader has no memory to copy into there, and "
                f"{_what_happens(access, exposed.outcome(access))} instead of reaching "
                "the program"
            )
        else:
            effect = (
                "a memslot shadows the device there, so the program's bytes land in memory "
                "but the device never sees the guest's accesses to that range"
            )
        return _finding(
            self.rule,
            program,
            f"{_describe(segment, 'p_paddr', rng)} overlaps {device.type.name} device "
            f"{device.name!r} {device.range} at {_span(shared)}: {effect}; link the segment "
            "clear of the device, or move the device",
            objects,
        )


class _VaCollisions(_DeviceOverlaps):
    """elf-va-collision's findings, capped as they are made: the identity-mapped devices'
    pages against each segment's page-rounded p_vaddr range; a finding names the device
    only."""

    mode = SELFTESTS

    def _slots(self) -> set[str]:
        return set()

    def _devices(self) -> list[DeviceEntry]:
        from gpa_plan.elf.placement import identity_mapped

        return identity_mapped(self.ctx.layout)

    def _range(self, device: DeviceEntry) -> Range:
        from gpa_plan.elf.placement import identity_pages

        return identity_pages(device, self.ctx.layout.guest_page_size)

    def _segment_range(self, segment: Segment) -> Range:
        return segment.virtual_pages(self.ctx.layout.guest_page_size)

    def _finding(
        self,
        program: Program,
        segment: Segment,
        device: DeviceEntry,
        shared: Range,
        objects: tuple[str, ...],
    ) -> Finding:
        pages = self._segment_range(segment)
        return _finding(
            self.rule,
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
            objects,
        )


class _Containing:
    """How many of the ranges added contain a range, for ranges known up front: a Fenwick
    tree over their starts whose nodes are Fenwick trees over the ends that can reach them,
    so that adding one is O(log^2 n) whatever the order (sorted lists there would move
    whole lists on each insert)."""

    def __init__(self, ranges: Sequence[Range]) -> None:
        self.starts = sorted({r.start for r in ranges})
        size = len(self.starts) + 1
        reach: list[set[int]] = [set() for _ in range(size)]
        for r in ranges:
            k = bisect.bisect_left(self.starts, r.start) + 1
            while k < size:
                reach[k].add(r.end)
                k += k & -k
        self.ends = [sorted(e) for e in reach]
        self.counts = [[0] * (len(e) + 1) for e in self.ends]

    def add(self, rng: Range) -> None:
        k = bisect.bisect_left(self.starts, rng.start) + 1
        while k < len(self.ends):
            ends, counts = self.ends[k], self.counts[k]
            # Counted from the largest end down: position j holds ends >= ends[-j].
            j = len(ends) - bisect.bisect_left(ends, rng.end)
            while j < len(counts):
                counts[j] += 1
                j += j & -j
            k += k & -k

    def around(self, start: int, least_end: int) -> int:
        """How many start at or before ``start`` and end at or after ``least_end``."""
        total = 0
        k = bisect.bisect_right(self.starts, start)
        while k > 0:
            ends, counts = self.ends[k], self.counts[k]
            j = len(ends) - bisect.bisect_left(ends, least_end)
            while j > 0:
                total += counts[j]
                j -= j & -j
            k -= k & -k
        return total


class _Counts:
    """How many of the values added are below, or at most, a value: a Fenwick tree over the
    values there can be."""

    def __init__(self, values: list[int]) -> None:
        self.values = values
        self.tree = [0] * (len(values) + 1)

    def add(self, value: int) -> None:
        k = bisect.bisect_left(self.values, value) + 1
        while k < len(self.tree):
            self.tree[k] += 1
            k += k & -k

    def _prefix(self, k: int) -> int:
        total = 0
        while k > 0:
            total += self.tree[k]
            k -= k & -k
        return total

    def below(self, value: int) -> int:
        return self._prefix(bisect.bisect_left(self.values, value))

    def at_most(self, value: int) -> int:
        return self._prefix(bisect.bisect_right(self.values, value))


@rule(
    "elf-va-collision",
    ERROR,
    "a guest program segment (at p_vaddr) shares virtual pages with an identity-mapped device",
)
def elf_va_collision(ctx: RuleContext) -> Iterator[Finding]:
    """--elf-mode selftests: KVM selftests' kvm_vm_elf_load() (lib/elf.c) maps every PT_LOAD
    segment at its page-rounded p_vaddr range, and devices the guest reaches with VA = GPA
    (`identity_map: true`: the vGIC frames, mapped by __vgic_v3_setup()'s virt_map(); the
    ucall page before Linux 6.2) take the virtual pages at their physical address. When both
    want one page, whichever is mapped second fails a TEST_ASSERT (__vm_vaddr_alloc() cannot
    return the segment's address; x86_64 __virt_pg_map(): "PTE already present") or silently
    takes over the page-table entry (virt_arch_pg_map() of arm64, riscv64 and loongarch64),
    so the guest reaches the device where it expects
    its code or data. Fix: link the program at virtual addresses clear of the device, or move
    the device."""
    if not ctx.programs:
        return
    yield from _VaCollisions(ctx).findings()


@rule(
    "elf-code-slot-too-small",
    ERROR,
    "a guest program's page-rounded segments do not fit in the code memslot (KVM selftests)",
)
def elf_code_slot_too_small(ctx: RuleContext) -> Iterator[Finding]:
    """--elf-mode selftests: kvm_vm_elf_load() backs each segment's page-rounded p_vaddr range
    with pages allocated from the code memslot (vm->memslots[MEM_REGION_CODE], slot 0 as
    __vm_create() sets it up; here the lowest-numbered read-write memslot of address space 0).
    When the segments need more pages than that memslot has, vm_phy_pages_alloc() finds no
    free page and the test aborts before the guest runs. Page tables, stacks and the ucall
    pool come from the same memslot, so even a program that fits may leave too little room.
    Fix: enlarge the memslot (nr_extra_pages of __vm_create()) or shrink the program."""
    if not ctx.programs:
        return
    from gpa_plan.elf.placement import code_memslot

    page = ctx.layout.guest_page_size
    slot = code_memslot(ctx.layout)
    for program in _runnable(ctx, SELFTESTS):
        needed = sum(s.virtual_pages(page).size for s in program.segments)
        if slot is None:
            yield _finding(
                ctx.running,
                program,
                f"the program needs {human_size(needed)} of guest pages but the layout has no "
                "read-write memslot in address space 0: kvm_vm_elf_load() has no code memslot "
                "(slot 0 of __vm_create()) to take them from; add one",
                (),
            )
        elif needed > slot.range.size:
            yield _finding(
                ctx.running,
                program,
                _too_small_message(program, needed, slot, page),
                (slot.name,),
            )


def _too_small_message(program: Program, needed: int, slot: MemslotEntry, page: int) -> str:
    count = len(program.segments)
    return (
        f"the program's {count} loadable segment{'s' if count != 1 else ''} need "
        f"{human_size(needed)} of guest pages (p_vaddr to p_vaddr + p_memsz rounded out to "
        f"{human_size(page)}, as kvm_vm_elf_load() maps them) but code memslot {slot.name!r} "
        f"(slot {slot.slot}) holds only {human_size(slot.range.size)}: vm_phy_pages_alloc() "
        "runs out of free pages and the test aborts before the guest runs; enlarge the "
        "memslot (nr_extra_pages of __vm_create()) or shrink the program"
    )


@rule(
    "elf-not-loadable",
    ERROR,
    "KVM selftests' ELF loader stops the test on this program before the guest runs",
)
def elf_not_loadable(ctx: RuleContext) -> Iterator[Finding]:
    """--elf-mode selftests: elfhdr_get() and kvm_vm_elf_load() (KVM selftests lib/elf.c)
    fail a TEST_ASSERT, and the test aborts before the guest runs, when the program is not
    ELFCLASS64 (or its header sizes are not ELF64's), is not in the host's byte order
    (little-endian on every host gpa-plan models), has a PT_LOAD with p_memsz 0, or has a
    segment whose page-rounded p_vaddr range shares a guest page with an earlier segment's:
    __vm_vaddr_alloc() then cannot return the segment's own first page. Fix: build a 64-bit
    little-endian executable whose loadable segments start on guest pages of their own and
    include no empty PT_LOAD."""
    for program in _runnable(ctx, SELFTESTS):
        for reason in _loader_refusals(program, ctx.layout.guest_page_size):
            yield _finding(
                ctx.running,
                program,
                f"{reason}, so kvm_vm_elf_load() fails a TEST_ASSERT and the test aborts "
                "before the guest runs",
                (),
            )


def _loader_refusals(program: Program, page: int) -> Iterator[str]:
    if program.elf_class != 64:
        yield (
            f"the program is ELFCLASS{program.elf_class}: elfhdr_get() only loads ELFCLASS64; "
            "build a 64-bit executable"
        )
    elif program.header_sizes != ELF64_HEADER_SIZES:
        phent, shent = program.header_sizes
        yield (
            f"the program's e_phentsize is {phent} and e_shentsize {shent}: elfhdr_get() "
            "asserts sizeof(Elf64_Phdr) 56 and sizeof(Elf64_Shdr) 64 (a tool that strips the "
            "section headers may leave e_shentsize 0); link it with the usual toolchain"
        )
    if not program.little_endian:
        yield (
            "the program is big-endian: elfhdr_get() needs the host's byte order, "
            "little-endian on arm64, x86_64, riscv64 and loongarch64 hosts; build a "
            "little-endian executable"
        )
    for index in program.empty_loads:
        yield (
            f"program header {index} is a PT_LOAD with p_memsz 0 (\"Unexpected loadable "
            "segment memsize of 0\"); drop the empty segment from the link"
        )
    pages = [segment.virtual_pages(page) for segment in program.segments]
    mapped = TakenRanges(pages)
    for k, segment in enumerate(program.segments):
        hit = mapped.overlapping(pages[k])
        mapped.take(k, pages[k])
        if hit is None:
            continue
        shared = pages[hit].intersection(pages[k])
        yield (
            f"segment {segment.index} ({segment.flag_letters}, pages {_span(pages[k])}) "
            f"shares guest pages {_span(shared or pages[k])} with segment "
            f"{program.segments[hit].index}, mapped before it: __vm_vaddr_alloc() cannot give "
            f"it the pages from its own start; align the segments to the {human_size(page)} "
            "guest page in the linker script"
        )


# Rules that apply cap_per_object's cap themselves as they make their findings.
CAPPED_AS_MADE = frozenset({elf_over_device.slug, elf_va_collision.slug})
