"""A layout with every number known: the form the checker and the reports work on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from gpa_plan.arch import ARCHES, Handler
from gpa_plan.arch.devices import CATALOG, DeviceType
from gpa_plan.layout.models import Layout
from gpa_plan.ranges import Range

EntryPath = tuple[str, int]


class MemslotEntry(NamedTuple):
    name: str
    path: EntryPath
    range: Range
    slot: int
    as_id: int
    readonly: bool
    auto_slot: bool


class Doorbell(NamedTuple):
    """What the VMM gives KVM_IOEVENTFD for a `handler: ioeventfd` device.

    virt/kvm/eventfd.c ioeventfd_in_range() (Linux 7.2.13): a write signals the eventfd only at
    exactly ``base``, and, unless ``length`` is 0, only with exactly ``length`` bytes and (with
    a ``datamatch``) exactly that value; any other write goes on down the bus, else exits.
    """

    base: int
    length: int  # 0: a write of any width at ``base`` (and no datamatch)
    datamatch: int | None  # None: any value (KVM's "wildcard")

    def signalled_by(self, address: int, width: int, value: int | None = None) -> bool:
        """Whether a guest write of ``width`` bytes carrying ``value`` (None: unknown, taken to
        match) at ``address`` signals the eventfd."""
        if address != self.base:
            return False
        if self.length == 0:
            return True
        if width != self.length:
            return False
        return self.datamatch is None or value is None or value == self.datamatch


# KVM_IOEVENTFD lengths other than 0 (kvm_assign_ioeventfd(): "must be natural-word sized, or
# 0 to ignore length").
DOORBELL_WIDTHS = (1, 2, 4, 8)


def doorbell_length(length: int | None, size: int) -> int:
    """The ioeventfd length of a device: the layout's `length`, else its size when that is a
    width KVM takes (1, 2, 4 or 8), else 0 (any width at the base)."""
    if length is not None:
        return length
    return size if size in DOORBELL_WIDTHS else 0


class DeviceEntry(NamedTuple):
    name: str
    path: EntryPath
    range: Range
    type: DeviceType
    handler: Handler
    identity_map: bool
    # The ioeventfd KVM is given, for a `handler: ioeventfd` device; None for any other.
    doorbell: Doorbell | None = None


class PortEntry(NamedTuple):
    """A range of the port I/O space (a layout's `ports:`)."""

    name: str
    path: EntryPath
    range: Range
    handler: Handler
    # The ioeventfd KVM is given (KVM_IOEVENTFD_FLAG_PIO), for a `handler: ioeventfd` range.
    doorbell: Doorbell | None = None


class ReservedEntry(NamedTuple):
    name: str
    path: EntryPath
    range: Range


class ResolvedLayout(NamedTuple):
    """Concrete ranges for every entry; ``unplaced`` names `auto` entries given no address."""

    source: Layout
    arch: str
    pa_bits: int
    page_size: int
    guest_page_size: int
    memslots: tuple[MemslotEntry, ...]
    devices: tuple[DeviceEntry, ...]
    reserved: tuple[ReservedEntry, ...]
    unplaced: tuple[str, ...] = ()
    ports: tuple[PortEntry, ...] = ()

    @property
    def limit(self) -> int:
        return 1 << self.pa_bits


def created_on(layout: ResolvedLayout, arch: str) -> tuple[ResolvedLayout, tuple[DeviceEntry, ...]]:
    """``layout`` as a VMM would create it on ``arch``, and the devices it leaves out.

    A layout describes a VM of its own architecture. Evaluated under another one (``check
    --arch``), a device that exists only on the layout's own architecture (the vGIC of an
    arm64 layout under x86_64, the LAPIC of an x86_64 layout under arm64) is not created
    there: it is left out, and its range is whatever it is without it. A device that the
    layout's own architecture lacks as well stays in: that layout is wrong on its own terms
    (`device-wrong-arch`).
    """
    if arch == layout.arch:
        return layout, ()
    kept: list[DeviceEntry] = []
    left_out: list[DeviceEntry] = []
    for d in layout.devices:
        absent = arch not in d.type.arches and layout.arch in d.type.arches
        (left_out if absent else kept).append(d)
    if not left_out:
        return layout, ()
    return layout._replace(devices=tuple(kept)), tuple(left_out)


def effective_pa_bits(layout: Layout) -> int:
    return layout.pa_bits if layout.pa_bits is not None else ARCHES[layout.arch].default_pa_bits


def guest_page_size(layout: Layout) -> int:
    return layout.guest_page_size if layout.guest_page_size is not None else layout.page_size


def device_size(layout: Layout, index: int) -> int:
    device = layout.devices[index]
    return CATALOG[device.type].size_for(
        vcpus=device.vcpus, guest_page_size=guest_page_size(layout), size=device.size
    )


def device_base(layout: Layout, index: int) -> int | str:
    device = layout.devices[index]
    if device.base is None:
        default = CATALOG[device.type].default_base
        assert default is not None, "validation requires a base for this type"
        return default
    return device.base


def resolve(layout: Layout, placements: Mapping[str, int] | None = None) -> ResolvedLayout:
    """Concrete entries; an `auto` base takes its address from ``placements`` (by name)."""
    placed = placements or {}
    unplaced: list[str] = []

    def base_of(name: str, base: int | str) -> int | None:
        if isinstance(base, int):
            return base
        if name in placed:
            return placed[name]
        unplaced.append(name)
        return None

    memslots = []
    slot_ids = assign_slot_ids(layout)
    for i, m in enumerate(layout.memslots):
        start = base_of(m.name, m.base)
        if start is not None:
            memslots.append(
                MemslotEntry(
                    m.name,
                    ("memslots", i),
                    Range(start, start + m.size),
                    slot_ids[i],
                    m.as_id,
                    m.readonly,
                    not isinstance(m.slot, int),
                )
            )
    devices = []
    for i, d in enumerate(layout.devices):
        start = base_of(d.name, device_base(layout, i))
        if start is not None:
            dtype = CATALOG[d.type]
            handler = dtype.handler or Handler(d.handler or "user")
            size = device_size(layout, i)
            doorbell = None
            if handler is Handler.IOEVENTFD:
                doorbell = Doorbell(start, doorbell_length(d.length, size), d.datamatch)
            devices.append(
                DeviceEntry(
                    d.name,
                    ("devices", i),
                    Range(start, start + size),
                    dtype,
                    handler,
                    d.identity_map,
                    doorbell,
                )
            )
    reserved = tuple(
        ReservedEntry(r.name, ("reserved", i), Range(r.base, r.base + r.size))
        for i, r in enumerate(layout.reserved)
    )
    return ResolvedLayout(
        ports=resolve_ports(layout),
        source=layout,
        arch=layout.arch,
        pa_bits=effective_pa_bits(layout),
        page_size=layout.page_size,
        guest_page_size=guest_page_size(layout),
        memslots=tuple(memslots),
        devices=tuple(devices),
        reserved=reserved,
        unplaced=tuple(unplaced),
    )


def resolve_ports(layout: Layout) -> tuple[PortEntry, ...]:
    """The port ranges of ``layout``, each with its handler (and ioeventfd)."""
    entries = []
    for i, p in enumerate(layout.ports):
        handler = Handler(p.handler)
        doorbell = None
        if handler is Handler.IOEVENTFD:
            doorbell = Doorbell(p.base, doorbell_length(p.length, p.size), p.datamatch)
        entries.append(
            PortEntry(p.name, ("ports", i), Range(p.base, p.base + p.size), handler, doorbell)
        )
    return tuple(entries)


def assign_slot_ids(layout: Layout) -> list[int]:
    """Explicit slot ids as written; omitted or `auto` ones take the lowest free id of their
    address space, in file order (what KVM selftests' vm_userspace_mem_region_add callers do
    by hand)."""
    taken: dict[int, set[int]] = {}
    for m in layout.memslots:
        if isinstance(m.slot, int):
            taken.setdefault(m.as_id, set()).add(m.slot)
    next_free: dict[int, int] = {}
    ids = []
    for m in layout.memslots:
        if isinstance(m.slot, int):
            ids.append(m.slot)
            continue
        used = taken.setdefault(m.as_id, set())
        candidate = next_free.get(m.as_id, 0)
        while candidate in used:
            candidate += 1
        used.add(candidate)
        next_free[m.as_id] = candidate + 1
        ids.append(candidate)
    return ids
