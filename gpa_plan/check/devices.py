"""Rules for devices, reserved ranges and the ucall page."""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from gpa_plan.arch.base import Backing, Handler, Outcome
from gpa_plan.arch.device_pairs import MEMSLOT_OVER_DEVICE, Party, kind_of, overlap_outcome
from gpa_plan.check.findings import Finding
from gpa_plan.check.overlaps import TakenRanges, any_overlap
from gpa_plan.check.partition import Region, device_handler, first_where, next_where
from gpa_plan.check.rules import ERROR, NOTE, WARNING, RuleContext, rule
from gpa_plan.layout.resolved import DeviceEntry, MemslotEntry, ReservedEntry
from gpa_plan.ranges import hex_addr, human_size

# include/linux/kvm_host.h: NR_IOBUS_DEVS, devices per KVM io bus.
NR_IOBUS_DEVS = 1000


def _describe(d: DeviceEntry) -> str:
    return f"{d.type.name} {d.name!r} {d.range}"


@rule(
    "device-shadowed",
    ERROR,
    "a device range is backed by a read-write memslot, so the device never sees an access",
    also=((WARNING, "when the memslot is read-only: the device still gets the writes"),),
)
def device_shadowed(ctx: RuleContext) -> Iterator[Finding]:
    """A memslot wins over any device: the access is served from memory (arm64
    kvm_handle_guest_abort(), the x86_64 TDP fault, riscv64 gstage_page_fault() and loongarch64
    kvm_handle_rdwr_fault() map the page) and never reaches the io bus or the VMM, and KVM
    refuses neither (docs/device-overlaps.md). Over a
    read-only memslot only reads miss the device (writes still reach it): a warning. The
    ucall device is left to `ucall-not-io`, and a read-only memslot over it is the carve-out
    KVM selftests plan. Fix: move the device out of RAM, or split the memslot around it."""
    memslot_names = {m.name for m in ctx.layout.memslots}
    regions = ctx.regions
    next_ram = next_where(regions, lambda r: r.backing is Backing.RAM)
    next_rom = next_where(regions, lambda r: r.backing is Backing.ROM)
    for device in ctx.layout.devices:
        if device.type.name == "ucall":
            continue
        region = first_where(regions, next_ram, device.range)
        if region is not None:
            owner = _memslots_in(memslot_names, region)
            yield ctx.finding(
                f"{_describe(device)} lies in read-write memory ({owner} covers "
                f"{region.range.intersection(device.range)} of it): "
                + MEMSLOT_OVER_DEVICE.format(accesses="reads and writes")
                + "; move the device out of the memslot or split the memslot around it",
                device.path,
                "base",
                _involved(device, region),
            )
            continue
        region = first_where(regions, next_rom, device.range)
        if region is not None:
            owner = _memslots_in(memslot_names, region)
            yield ctx.finding(
                f"{_describe(device)} lies in a read-only memslot "
                f"({owner} covers {region.range.intersection(device.range)} of it): guest "
                "reads return the memslot's memory, only writes reach the device; move the "
                "device if it must answer reads",
                device.path,
                "base",
                _involved(device, region),
                severity=WARNING,
            )


def _involved(device: DeviceEntry, region: Region) -> tuple[str, ...]:
    """The device, then the other objects the region lists (its memslots first)."""
    return (device.name, *(n for n in region.names if n != device.name))


def _memslots_in(memslot_names: set[str], region: Region) -> str:
    slots = [n for n in region.names if n in memslot_names]
    return "memslot " + ", ".join(repr(n) for n in slots) if slots else "a memslot"


@rule(
    "device-overlap",
    ERROR,
    "two devices claim the same address: KVM refuses one, or one never sees the accesses",
    also=(
        (
            WARNING,
            "when KVM accepts both and each still answers part of the accesses (an ioeventfd "
            "or coalesced zone that takes the writes over another device)",
        ),
    ),
)
def device_overlap(ctx: RuleContext) -> Iterator[Finding]:
    """What KVM does depends on the two kinds (docs/device-overlaps.md has every pair): some
    vGIC frames it refuses (EEXIST or EINVAL, at KVM_SET_DEVICE_ATTR or the first KVM_RUN), as
    it does a second ioeventfd of the same range; everything else it accepts, and one device
    answers where they overlap: the LAPIC before the MMIO bus, a kernel device before the VMM,
    on the MMIO bus the one with the lower base. A device the VMM emulates never makes KVM
    refuse anything. Each device that overlaps one listed before it is reported once, with one
    of those. Fix: move one of them."""
    devices = ctx.layout.devices
    if not any_overlap([d.range for d in devices]):
        return
    registered = TakenRanges([d.range for d in devices])
    for k, later in enumerate(devices):
        if later.range.size <= 0:
            continue
        hit = registered.overlapping(later.range)
        registered.take(k, later.range)
        if hit is None:
            continue
        first = devices[hit]
        shared = first.range.intersection(later.range)
        outcome = overlap_outcome(_party(later, ctx), _party(first, ctx))
        fix = "move one of them" if outcome.error else "move one of them unless that is meant"
        yield ctx.finding(
            f"{_describe(later)} overlaps {_describe(first)} at {shared}: {outcome.what}; {fix}",
            later.path,
            "base",
            (later.name, first.name),
            severity=None if outcome.error else WARNING,
        )


def _party(device: DeviceEntry, ctx: RuleContext) -> Party:
    kind = kind_of(device.type.name, device_handler(device, ctx.arch))
    bell = device.doorbell
    given = ctx.layout.source.devices[device.path[1]]
    return Party(
        kind,
        device.name,
        device.range,
        None if bell is None else (bell.length, bell.datamatch),
        legacy=given.redist == "legacy",
    )


@rule("device-misaligned", ERROR, "a device base breaks its type's alignment")
def device_misaligned(ctx: RuleContext) -> Iterator[Finding]:
    """vGIC frames must be aligned as the kernel checks in vgic_check_iorange()
    (arch/arm64/kvm/vgic/vgic-kvm-device.c, Linux 7.2.13: 4 KiB for GICv2, 64 KiB for GICv3
    and the ITS), else KVM_SET_DEVICE_ATTR returns EINVAL; so are riscv64's AIA APLIC and
    IMSIC bases, 4 KiB-aligned (arch/riscv/kvm/aia_device.c aia_aplic_addr(),
    aia_imsic_addr()); loongarch64's PCH-PIC has no alignment check; the x86_64
    LAPIC base is page-aligned by the APIC base MSR; the ucall page is mapped by
    virt_pg_map(), which needs a guest-page-aligned address. Fix: align the base."""
    for d in ctx.layout.devices:
        align = d.type.align_for(ctx.layout.guest_page_size)
        if align and d.range.start % align:
            down = d.range.start - d.range.start % align
            api = f" ({d.type.kvm_api} returns EINVAL)" if d.type.kvm_api else ""
            yield ctx.finding(
                f"{_describe(d)} is not {human_size(align)}-aligned{api}; use "
                f"{hex_addr(down)} or {hex_addr(down + align)}",
                d.path,
                "base",
                (d.name,),
            )


@rule("device-out-of-range", ERROR, "a device ends beyond 2**pa_bits")
def device_out_of_range(ctx: RuleContext) -> Iterator[Finding]:
    """The guest cannot reach an address beyond its IPA size (arm64), MAXPHYADDR (x86_64),
    G-stage GPA size (riscv64) or GPA size (loongarch64); for the vGIC, vgic_check_iorange()
    refuses it with E2BIG (Linux 7.2.13), while riscv64's AIA and loongarch64's PCH-PIC take
    any address. Fix: move it below 2**pa_bits or raise pa_bits."""
    limit = ctx.layout.limit
    for d in ctx.layout.devices:
        if d.range.end > limit:
            yield ctx.finding(
                f"{_describe(d)} ends beyond the {ctx.layout.pa_bits}-bit {ctx.arch.pa_name} "
                f"({hex_addr(limit)}): the guest cannot reach it"
                + (
                    f" and KVM_SET_DEVICE_ATTR returns {d.type.beyond_pa_errno}"
                    if d.type.beyond_pa_errno
                    else ""
                )
                + f"; move it below {hex_addr(limit)} or raise pa_bits",
                d.path,
                "base",
                (d.name,),
            )


@rule(
    "device-wrong-arch",
    ERROR,
    "a device type that does not exist on the layout's architecture",
    also=(
        (
            NOTE,
            "under another --arch than the layout's, once, for the devices of the layout's "
            "own architecture left out there",
        ),
    ),
)
def device_wrong_arch(ctx: RuleContext) -> Iterator[Finding]:
    """The vGIC exists only on arm64, the in-kernel LAPIC and IOAPIC only on x86_64, the AIA's
    APLIC and IMSIC only on riscv64, the PCH-PIC only on loongarch64; KVM has no such device
    elsewhere (KVM_CREATE_DEVICE fails), so accesses there exit to the VMM. A
    layout whose own `arch` lacks the device is an error, under whichever `--arch` it is
    checked: the layout is wrong on its own terms. Checked under another architecture, the
    devices that exist only on the layout's own are not created there: they are left out,
    their ranges are what they are without them, and one note says so.
    Fix: use the architecture's own interrupt controller, or an `mmio` device."""
    own = ctx.layout.arch
    for d in ctx.layout.devices:
        if own not in d.type.arches:
            yield ctx.finding(
                f"{_describe(d)}: KVM has no {d.type.name} on {own}, the layout's arch, so there "
                "this range is not handled in the kernel and accesses exit to the VMM; use "
                f"{own}'s own devices or an `mmio` device",
                d.path,
                "type",
                (d.name,),
            )
    if ctx.left_out:
        yield ctx.finding(
            _left_out_note(ctx.left_out, ctx.layout.arch, ctx.arch.name),
            ("arch",),
            objects=(d.name for d in ctx.left_out[:MAX_NAMED]),
            severity=NOTE,
        )


# Devices a note names; it counts the others.
MAX_NAMED = 10


def _left_out_note(left_out: tuple[DeviceEntry, ...], own: str, arch: str) -> str:
    named = ", ".join(f"{d.type.name} {d.name!r}" for d in left_out[:MAX_NAMED])
    more = len(left_out) - MAX_NAMED
    if more > 0:
        named += f" and {more} more"
    one = len(left_out) == 1
    it, ranges = ("it", "its range is") if one else ("them", "their ranges are")
    return (
        f"checked as {arch}, this {own} layout's {named} {'is' if one else 'are'} left out: "
        f"KVM has no {'such device' if one else 'such devices'} on {arch}, so a VMM there "
        f"would not create {it}, and {ranges} what {'it is' if one else 'they are'} without "
        f"{it} (accesses exit to the VMM where nothing else claims the range)"
    )


@rule("reserved-overlap", ERROR, "a memslot or device intrudes into a reserved range")
def reserved_overlap(ctx: RuleContext) -> Iterator[Finding]:
    """Reserved ranges (holes, firmware, windows) are kept free by the layout's own contract.
    Fix: move the memslot or device out of the reserved range."""
    reserved = sorted(ctx.layout.reserved, key=lambda r: r.range.start)
    starts = [r.range.start for r in reserved]
    reach = _furthest_so_far(reserved)
    entries: list[MemslotEntry | DeviceEntry] = [*ctx.layout.memslots, *ctx.layout.devices]
    for entry in entries:
        rng = entry.range
        # Of the reserved ranges that start before rng ends, the one reaching furthest
        # overlaps rng if any does.
        k = bisect.bisect_left(starts, rng.end) - 1
        if k < 0:
            continue
        hit = reach[k]
        if hit.range.end > rng.start:
            yield ctx.finding(
                f"{entry.name!r} {rng} intrudes into reserved range {hit.name!r} "
                f"{hit.range} at {rng.intersection(hit.range)}; move it out",
                entry.path,
                "base",
                (entry.name, hit.name),
            )


def _furthest_so_far(reserved: list[ReservedEntry]) -> list[ReservedEntry]:
    """For each prefix of ``reserved``, the range that ends furthest (the first, on ties)."""
    result: list[ReservedEntry] = []
    for r in reserved:
        result.append(r if not result or r.range.end > result[-1].range.end else result[-1])
    return result


_NOT_AN_EXIT = {
    Outcome.MEMORY: "land in guest memory and never exit, so the VMM never sees the ucall and "
    "the test hangs",
    Outcome.IO_KERNEL: "are answered by an in-kernel device and never exit",
    Outcome.IO_COALESCED: "are buffered in the coalesced-MMIO ring instead of exiting",
}


@rule("ucall-not-io", ERROR, "a guest write to the ucall address would not exit to the VMM")
def ucall_not_io(ctx: RuleContext) -> Iterator[Finding]:
    """KVM selftests deliver a ucall on arm64 and loongarch64 as one 8-byte guest write to the
    ucall MMIO page; the host waits for the KVM_EXIT_MMIO (x86_64 selftests use port I/O and
    riscv64 an SBI call, but a `ucall` device there is an MMIO page all the same). If a
    read-write memslot covers the page (the selftests failure where a test's memslot landed
    on the ucall address), the write lands in RAM and the test hangs. Fix: for a fixed base,
    move the ucall page to the free address the message names (the one `base: auto` would
    get: the first free guest page past slot 0, as selftests choose it, else the first free
    page), or write `base: auto` and let `gpa-plan allocate --ucall` choose; or cover the page
    with a read-only memslot."""
    ucalls = [d for d in ctx.layout.devices if d.type.name == "ucall"]
    if not ucalls:
        return
    regions = ctx.regions
    next_no_exit = next_where(regions, lambda r: r.write is not Outcome.IO_EXIT)
    for d in ucalls:
        region = first_where(regions, next_no_exit, d.range)
        if region is None:
            continue
        others = [n for n in region.names if n != d.name]
        cause = f" ({', '.join(repr(n) for n in others)})" if others else ""
        yield ctx.finding(
            f"ucall {d.name!r} at {region.range}: guest writes there{cause} "
            f"{_NOT_AN_EXIT.get(region.write, 'do not exit')}; "
            f"{_ucall_fix(ctx, d, region.write is Outcome.MEMORY)}",
            d.path,
            "base",
            (d.name, *others),
        )


def _ucall_fix(ctx: RuleContext, ucall: DeviceEntry, in_memory: bool) -> str:
    """A fix that works for this ucall: `allocate --ucall` moves only a `base: auto` page, so a
    fixed base gets the address the planner finds for it. Making the memslot read-only is
    offered only when a memslot is what takes the write: it does not help against an in-kernel
    device or a coalesced zone, which answer writes a read-only memslot lets through."""
    index = ucall.path[1]
    assert isinstance(index, int)
    if ctx.layout.source.devices[index].base == "auto":
        return "move the ucall page to unbacked space (gpa-plan allocate --ucall)" + (
            " or make that memslot read-only" if in_memory else ""
        )
    from gpa_plan.plan.place import auto_base  # the planner is loaded only when needed

    free = auto_base(ctx.layout.source, index)
    readonly = ", or make that memslot read-only" if in_memory else ""
    if free is None:
        return f"no free guest page is left for it: free room in the layout{readonly}"
    return (
        f"set its base to {hex_addr(free)}, a free page that exits to the VMM (`base: auto` "
        f"lets gpa-plan allocate --ucall choose it){readonly}"
    )


@rule("iobus-full", ERROR, "more than NR_IOBUS_DEVS (1000) devices on the KVM MMIO bus")
def iobus_full(ctx: RuleContext) -> Iterator[Finding]:
    """kvm_io_bus_register_dev() (virt/kvm/kvm_main.c, Linux 7.2.13) refuses a device with
    ENOSPC once the bus holds NR_IOBUS_DEVS (1000) devices that are not ioeventfds: in-kernel
    devices (the vGIC one per redistributor) and coalesced zones count, ioeventfds do not
    (bus->ioeventfd_count is left out) but are refused too past that point; the x86 LAPIC is
    not on the bus. Devices are taken in file order. Fix: use fewer in-kernel devices or
    coalesced zones, or make some of them user devices."""
    count = 0
    for d in ctx.layout.devices:
        if d.handler is Handler.USER or d.type.name == "lapic":
            continue
        added = (d.range.size // d.type.per_vcpu) if d.type.per_vcpu else 1
        if count + added > NR_IOBUS_DEVS:
            yield ctx.finding(
                f"{d.name!r} is past the {NR_IOBUS_DEVS} devices other than ioeventfds one KVM "
                "io bus holds (NR_IOBUS_DEVS): kvm_io_bus_register_dev() returns ENOSPC; make "
                "some of them user devices",
                d.path,
                None,
                (d.name,),
            )
            return
        if d.handler is not Handler.IOEVENTFD:
            count += added


@rule("vgic-conflict", ERROR, "vGIC frames of two GIC models, or one frame given twice")
def vgic_conflict(ctx: RuleContext) -> Iterator[Finding]:
    """A VM has one vGIC: KVM_CREATE_DEVICE of a second one fails with EEXIST
    (kvm_vgic_create(), vgic-init.c), and each of its frames has one address (kvm_vgic_addr()
    -> vgic_check_iorange(): setting it twice gives EEXIST), except GICv3 redistributors,
    which may be split into several REDIST_REGIONs. GICv2 and GICv3 frames cannot be mixed
    (the address of a frame of the other model gets ENODEV from vgic_check_type()). Confirmed
    in Linux 7.2.13. Fix: keep the frames of one model, each once."""
    first_model: DeviceEntry | None = None
    seen: dict[str, DeviceEntry] = {}
    for d in ctx.layout.devices:
        name, model = d.type.name, d.type.irqchip_model
        if model is None:
            continue
        if first_model is None:
            first_model = d
        elif first_model.type.irqchip_model != model:
            yield ctx.finding(
                f"{_describe(d)} is a {model} frame but {first_model.name!r} is "
                f"{first_model.type.irqchip_model}: a VM has one vGIC, the second "
                "KVM_CREATE_DEVICE fails with EEXIST; keep one model",
                d.path,
                "type",
                (d.name, first_model.name),
            )
            continue
        if name in seen and not d.type.frame_may_repeat:
            yield ctx.finding(
                f"{_describe(d)} gives the {name} frame a second address after "
                f"{seen[name].name!r}: KVM_SET_DEVICE_ATTR returns EEXIST; keep one",
                d.path,
                "base",
                (d.name, seen[name].name),
            )
        seen.setdefault(name, d)
