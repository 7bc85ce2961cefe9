"""Auto placement: give every `base: auto` entry of a layout an address.

Order (deterministic, so the same file always gives the same plan): every fixed entry is
occupied first (memslots of every address space, devices, reserved ranges, and on x86_64 with an
in-kernel LAPIC the APIC-access page KVM keeps at 0xfee00000); then the `auto` memslots in file
order; then `auto` ucall devices; then the other `auto` devices in file order. Each placement
sees the earlier ones.

Defaults: `align` is the device type's kernel alignment, else `page_size`; `within` is the whole
space below ``2**pa_bits``; `policy` is `first` (lowest fit). An `align` below what KVM requires
(a memslot's `page_size`, a catalog type's alignment) is raised to it.

A ucall device with no `within` or `policy` of its own follows the KVM selftests convention
(tools/testing/selftests/kvm/lib/kvm_util.c __vm_create(): ucall_init() at the first GPA past
slot 0): the first free guest page at or above the end of the lowest-numbered read-write
memslot of address space 0, else the first free page anywhere. Placing it before the other
devices means it gets that address whenever it is free.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpa_plan.arch import ARCHES
from gpa_plan.arch.devices import CATALOG
from gpa_plan.layout.models import Device, Layout, Memslot
from gpa_plan.layout.resolved import (
    EntryPath,
    assign_slot_ids,
    device_base,
    device_size,
    effective_pa_bits,
    guest_page_size,
)
from gpa_plan.plan.allocator import AddressAllocator, AllocationError, Policy
from gpa_plan.ranges import Range
from gpa_plan.selftests import code_memslot


@dataclass
class Plan:
    """Addresses chosen for `auto` entries, by name, and the entries that found no room."""

    placements: dict[str, int] = field(default_factory=dict)
    errors: list[tuple[str, EntryPath]] = field(default_factory=list)


def occupied_ranges(layout: Layout) -> list[tuple[Range, str]]:
    """Every range a placement must avoid, labelled for error messages."""
    taken: list[tuple[Range, str]] = []
    for m in layout.memslots:
        if isinstance(m.base, int):
            taken.append((Range(m.base, m.base + m.size), f"memslot {m.name!r}"))
    for i, d in enumerate(layout.devices):
        base = device_base(layout, i)
        if isinstance(base, int):
            taken.append((Range(base, base + device_size(layout, i)), f"device {d.name!r}"))
    for r in layout.reserved:
        taken.append((Range(r.base, r.base + r.size), f"reserved {r.name!r}"))
    # Every private range KVM may keep, those only some hosts keep too: a plan must run on any.
    types = {d.type for d in layout.devices}
    for kept in ARCHES[layout.arch].kept_ranges(types, layout.kvm_private):
        taken.append((Range(kept.start, kept.end), kept.name))
    return taken


def new_allocator(layout: Layout) -> AddressAllocator:
    allocator = AddressAllocator(1 << effective_pa_bits(layout))
    for rng, label in occupied_ranges(layout):
        if rng.size > 0:
            allocator.occupy(rng, label)
    return allocator


def plan_layout(layout: Layout, *, ucall_span: int | None = None) -> Plan:
    """Place every `auto` entry of ``layout``; never raises for lack of room (see Plan.errors).

    ``ucall_span`` reserves that many bytes (aligned to them) for each auto ucall page
    instead of one guest page: room for a read-only memslot of host pages over it.
    """
    alloc = new_allocator(layout)
    plan = Plan()
    for i, m in enumerate(layout.memslots):
        if m.base == "auto":
            # KVM needs page_size alignment whatever `align` says (EINVAL otherwise).
            align = max(m.align or layout.page_size, layout.page_size)
            _place(alloc, plan, layout, m, ("memslots", i), m.size, align)
    autos = [(i, d) for i, d in enumerate(layout.devices) if d.base == "auto"]
    code = _code_memslot(layout) if autos else None  # once: it costs a pass over the memslots
    for i, d in sorted(autos, key=lambda item: item[1].type != "ucall"):
        required = CATALOG[d.type].align_for(guest_page_size(layout))
        # A smaller `align` than the kernel's would give a base KVM refuses.
        align = max(d.align, required or 1) if d.align else required or layout.page_size
        size = device_size(layout, i)
        if d.type == "ucall" and ucall_span is not None:
            size, align = max(size, ucall_span), max(align, ucall_span)
        window = None
        if d.type == "ucall" and d.within is None and d.policy is None:
            window = _after_code_slot(layout, plan, code)
        _place(alloc, plan, layout, d, ("devices", i), size, align, preferred=window)
    return plan


def auto_base(layout: Layout, index: int) -> int | None:
    """The base device ``index`` would get as `base: auto` (its `within` and `policy` kept), with
    every other entry where it is: for a ucall page, the KVM selftests convention where it
    applies. None when there is no room."""
    devices = list(layout.devices)
    devices[index] = devices[index]._replace(base="auto")
    plan = plan_layout(layout._replace(devices=tuple(devices)))
    return plan.placements.get(devices[index].name)


def _code_memslot(layout: Layout) -> Memslot | None:
    """KVM selftests' code memslot (gpa_plan.selftests.code_memslot), if any."""
    slot_ids = assign_slot_ids(layout)
    return code_memslot(
        (slot_ids[i], m.as_id, m.readonly, m) for i, m in enumerate(layout.memslots)
    )


def _after_code_slot(layout: Layout, plan: Plan, code: Memslot | None) -> Range | None:
    """[end of the lowest-numbered read-write memslot of as_id 0, 2**pa_bits), if any."""
    if code is None:
        return None
    base = code.base if isinstance(code.base, int) else plan.placements.get(code.name)
    if base is None:
        return None
    limit = 1 << effective_pa_bits(layout)
    end = base + code.size
    return Range(end, limit) if end < limit else None


def _place(
    alloc: AddressAllocator,
    plan: Plan,
    layout: Layout,
    entry: Memslot | Device,
    path: EntryPath,
    size: int,
    align: int,
    *,
    preferred: Range | None = None,
) -> None:
    limit = 1 << effective_pa_bits(layout)
    window = Range(*entry.within) if entry.within else Range(0, limit)
    kind = "memslot" if path[0] == "memslots" else "device"
    if kind == "memslot" and not ARCHES[layout.arch].memslot_may_end_at_limit:
        # KVM refuses a memslot that ends exactly at 2**pa_bits: keep its last page free.
        window = Range(window.start, min(window.end, limit - layout.page_size))
    label = f"{kind} {entry.name!r}"
    if size <= 0:
        plan.errors.append((f"{label} has no size to place", path))
        return
    policy = Policy(entry.policy or "first")
    try:
        if preferred is not None:
            try:
                placed = alloc.allocate(size, align, window=preferred, policy=policy, label=label)
                plan.placements[entry.name] = placed.start
                return
            except AllocationError:
                pass
        placed = alloc.allocate(size, align, window=window, policy=policy, label=label)
    except (AllocationError, ValueError) as err:
        hint = "widen its `within`, lower its `align`, or free room in the layout"
        plan.errors.append((f"cannot place {label}: {err}; {hint}", path))
        return
    plan.placements[entry.name] = placed.start
