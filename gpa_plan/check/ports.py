"""Rules for the port I/O space (a layout's `ports:`): where it exists, how far it reaches, and
port ranges that share a port.

KVM keeps port devices on KVM_PIO_BUS, a bus like KVM_MMIO_BUS (virt/kvm/kvm_main.c
kvm_io_bus_register_dev(), kvm_io_bus_read()/kvm_io_bus_write(), Linux 7.2.13), so two port
ranges that share a port are judged with the MMIO table (gpa_plan.arch.device_pairs), and
PIO ioeventfds are checked by the ioeventfd rules (gpa_plan.check.ioeventfds)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from gpa_plan.arch.base import ArchSpec, Handler, Outcome
from gpa_plan.arch.device_pairs import Party, kind_of, overlap_outcome
from gpa_plan.check.findings import Finding
from gpa_plan.check.overlaps import TakenRanges, any_overlap
from gpa_plan.check.rules import ERROR, WARNING, RuleContext, rule
from gpa_plan.layout.resolved import PortEntry, ResolvedLayout


def _span(start: int, end: int) -> str:
    """Ports [start, end) as people read them: "port 0x3f8", "ports 0x3f8-0x3ff"."""
    return f"port {start:#x}" if end - start == 1 else f"ports {start:#x}-{end - 1:#x}"


def _ports(r: PortEntry) -> str:
    return f"port range {r.name!r} ({_span(r.range.start, r.range.end)}, handler {r.handler.value})"


@rule(
    "port-no-space",
    WARNING,
    "a port range on an architecture whose guests have no port I/O",
)
def port_no_space(ctx: RuleContext) -> Iterator[Finding]:
    """Only x86_64 guests have port I/O instructions (`in`, `out`); KVM reads KVM_PIO_BUS
    only from arch/x86/kvm (x86.c emulator_pio_in_out(), Linux 7.2.13). Elsewhere KVM still
    accepts a KVM_IOEVENTFD_FLAG_PIO ioeventfd or a pio coalesced zone (virt/kvm/eventfd.c
    ioeventfd_bus_from_flags(), coalesced_mmio.c kvm_vm_ioctl_register_coalesced_mmio()) and
    registers it on KVM_PIO_BUS, but no guest access ever reaches it. Fix: drop the port
    range, or give the device an MMIO address."""
    if ctx.arch.port_space:
        return
    for p in ctx.layout.ports:
        yield ctx.finding(
            f"{_ports(p)}: {ctx.arch.name} guests have no port I/O, so no guest access ever "
            "reaches it (KVM still registers a port ioeventfd or coalesced zone on "
            "KVM_PIO_BUS, where nothing reads it); drop it, or give the device an MMIO address",
            p.path,
            "base",
            (p.name,),
        )


@rule("port-out-of-range", ERROR, "a port range reaching past the last port (0xffff on x86_64)")
def port_out_of_range(ctx: RuleContext) -> Iterator[Finding]:
    """`in` and `out` take a 16-bit port (arch/x86/kvm/x86.c emulator_pio_in_out(), unsigned
    short port, Linux 7.2.13), so on x86_64 the guest reaches ports 0 to 0xffff and nothing
    beyond. KVM_IOEVENTFD takes any address (eventfd.c kvm_assign_ioeventfd() checks only that
    it does not wrap), so a port ioeventfd there is accepted and never signalled. Fix: keep the
    range below 0x10000."""
    space = ctx.arch.port_space
    if not space:
        return
    for p in ctx.layout.ports:
        if p.range.end > space:
            yield ctx.finding(
                f"{_ports(p)} reaches past port {space - 1:#x}: `in` and `out` take a "
                f"{(space - 1).bit_length()}-bit port, so the guest never reaches "
                f"{'it' if p.range.start >= space else f'ports {space:#x} and up'}; keep "
                f"it below {space:#x}",
                p.path,
                "base" if p.range.start >= space else "size",
                (p.name,),
            )


@rule(
    "port-overlap",
    WARNING,
    "two port ranges share a port: one answers what they share",
    also=((ERROR, "when KVM refuses the second (two ioeventfds one `out` could match)"),),
)
def port_overlap(ctx: RuleContext) -> Iterator[Finding]:
    """KVM_PIO_BUS works as KVM_MMIO_BUS does (virt/kvm/kvm_main.c kvm_io_bus_register_dev()
    checks no overlap; kvm_io_bus_read()/kvm_io_bus_write() offer an access to the devices
    in bus order): where port ranges overlap, the strongest handler answers, a kernel device
    (the PIC, the PIT) before an ioeventfd or coalesced zone (writes only), and those before
    the VMM (KVM_EXIT_IO). The exception is two ioeventfds one `out` could match (the same
    port, with a length of 0 on either, or the same length and the same or no datamatch):
    eventfd.c ioeventfd_check_collision() compares entries of the same bus, and
    KVM_IOEVENTFD refuses the second, as it does on the MMIO bus: an error.
    docs/device-overlaps.md has every pair. Each port range that overlaps one listed before it
    is reported once. Fix: move one of them."""
    ports = ctx.layout.ports
    if not any_overlap([p.range for p in ports]):
        return
    registered = TakenRanges([p.range for p in ports])
    bells = _Bells()
    for k, later in enumerate(ports):
        if later.range.size <= 0:
            continue
        hit = registered.overlapping(later.range)
        registered.take(k, later.range)
        # A collision KVM refuses comes before any other overlap, wherever that one is.
        first = bells.register(later)
        if first is None and hit is not None:
            first = ports[hit]
        if first is None:
            continue
        outcome = overlap_outcome(_party(later), _party(first))
        what = outcome.what.replace("MMIO bus", "PIO bus").replace("KVM_EXIT_MMIO", "KVM_EXIT_IO")
        # Both start at the port a collision is about, or overlap: never empty.
        shared = first.range.intersection(later.range) or later.range
        fix = "move one of them" if outcome.refused else "move one of them unless that is meant"
        yield ctx.finding(
            f"{_ports(later)} overlaps {_ports(first)} at {_span(shared.start, shared.end)}: "
            f"{what}; {fix}",
            later.path,
            "base",
            (later.name, first.name),
            severity=ERROR if outcome.refused else WARNING,
        )


class _Bells:
    """The port ioeventfds KVM has accepted so far, indexed as ioeventfd_check_collision()
    compares them (virt/kvm/eventfd.c): the same port, and a length of 0 on either, or the
    same length with a datamatch on neither, on one only, or the same on both. Each
    registration is answered in constant time, however many share a port."""

    def __init__(self) -> None:
        self._any: dict[int, PortEntry] = {}  # the first at a port
        self._length_0: dict[int, PortEntry] = {}  # the first of length 0 at a port
        self._length: dict[tuple[int, int], PortEntry] = {}  # the first of a length
        self._wildcard: dict[tuple[int, int], PortEntry] = {}  # ... without datamatch
        self._match: dict[tuple[int, int, int], PortEntry] = {}  # ... with that datamatch

    def register(self, p: PortEntry) -> PortEntry | None:
        """The accepted ioeventfd that KVM_IOEVENTFD of ``p`` collides with (then ``p`` is
        refused and not kept), or None (``p`` is kept, if it is an ioeventfd at all)."""
        bell = p.doorbell
        if bell is None:
            return None
        port, length, match = bell.base, bell.length, bell.datamatch
        if length == 0:
            hits = [self._any.get(port)]
        else:
            hits = [self._length_0.get(port)]
            if match is None:
                hits.append(self._length.get((port, length)))
            else:
                hits += [self._wildcard.get((port, length)),
                         self._match.get((port, length, match))]
        found = [h for h in hits if h is not None]
        if found:
            return min(found, key=lambda h: h.path[1])
        self._any.setdefault(port, p)
        if length == 0:
            self._length_0.setdefault(port, p)
        else:
            self._length.setdefault((port, length), p)
            if match is None:
                self._wildcard.setdefault((port, length), p)
            else:
                self._match.setdefault((port, length, match), p)
        return None


def _party(p: PortEntry) -> Party:
    bell = p.doorbell
    return Party(
        kind_of("mmio", p.handler),
        p.name,
        p.range,
        None if bell is None else (bell.length, bell.datamatch),
    )


class PortRow(NamedTuple):
    """One port range as `check` shows it: what an `in` (read) and an `out` (write) there
    become."""

    name: str
    start: int
    end: int  # exclusive
    handler: str
    read: str
    write: str


# What an access to a port range becomes, by handler: KVM_PIO_BUS as KVM_MMIO_BUS
# (gpa_plan.arch.base.Handler: ioeventfds and coalesced zones take writes only, reads exit).
_PORT_OUTCOMES = {
    Handler.USER: (Outcome.IO_EXIT, Outcome.IO_EXIT),
    Handler.KERNEL: (Outcome.IO_KERNEL, Outcome.IO_KERNEL),
    Handler.IOEVENTFD: (Outcome.IO_EXIT, Outcome.IO_KERNEL),
    Handler.COALESCED: (Outcome.IO_EXIT, Outcome.IO_COALESCED),
}
# What a port range is on an architecture without port I/O.
UNREACHED = "unreached"


def port_rows(layout: ResolvedLayout, arch: ArchSpec) -> tuple[PortRow, ...]:
    """The layout's port ranges by first port (file order where two start together), each
    with what `in` and `out` there become (``UNREACHED`` for both where the architecture has
    no port I/O, or past its last port)."""
    rows = []
    for p in sorted(layout.ports, key=lambda p: p.range.start):
        read, write = _PORT_OUTCOMES[p.handler]
        reached = p.range.start < arch.port_space
        rows.append(
            PortRow(
                p.name,
                p.range.start,
                p.range.end,
                p.handler.value,
                read.value if reached else UNREACHED,
                write.value if reached else UNREACHED,
            )
        )
    return tuple(rows)
