"""`gpa-plan allocate`: resolve every `auto` of a layout, optionally adding the ucall page.

The result is the layout with concrete numbers (``Allocation.document``: the same keys as the
YAML, placement options dropped, slot ids filled in), ready for any output format. ``check``
finds no error in it that the input did not have: a plan that would add one is refused
(gpa_plan.plan.guard).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gpa_plan.arch import ARCHES
from gpa_plan.check.layout_rules import no_room
from gpa_plan.check.memslots import memslot_overlap
from gpa_plan.layout.models import Device, Layout, Memslot, as_data
from gpa_plan.layout.resolved import EntryPath, assign_slot_ids, device_base, resolve
from gpa_plan.plan.place import Plan, plan_layout
from gpa_plan.ranges import Range, hex_addr, human_size

UCALL_NAME = "ucall"
UCALL_SLOT_NAME = "ucall-slot"
_PLACEMENT_KEYS = {"align", "within", "policy"}


class PlanError(Exception):
    """No plan was made; ``problems`` holds (message, entry path) pairs and ``rules`` the rule
    slug of each: `no-room` for an `auto` entry that found no room, else the `check` rule the
    plan would have broken. An entry path of None is the layout as a whole."""

    def __init__(
        self, problems: Sequence[tuple[str, EntryPath | None]], rules: list[str] | None = None
    ) -> None:
        self.problems = list(problems)
        self.rules = rules or [no_room.slug] * len(problems)
        super().__init__("; ".join(message for message, _ in problems))


@dataclass
class Allocation:
    layout: Layout
    placements: dict[str, int]
    notes: list[str] = field(default_factory=list)
    added: list[tuple[str, str]] = field(default_factory=list)  # (section, name) appended

    def document(self) -> dict[str, Any]:
        """The resolved layout as plain data, in the order of the source file."""
        return resolved_document(self.layout, self.placements)

    def regions(self) -> list[tuple[str, int, int]]:
        """(name, base, size) of every memslot, device and reserved range, in file order."""
        resolved = resolve(self.layout, self.placements)
        ranges = [(m.name, m.range) for m in resolved.memslots]
        ranges += [(d.name, d.range) for d in resolved.devices]
        ranges += [(r.name, r.range) for r in resolved.reserved]
        return [(name, rng.start, rng.size) for name, rng in ranges]


def allocate(layout: Layout, *, ucall: bool = False, ucall_memslot: bool = False) -> Allocation:
    """Plan ``layout``; with ``ucall``, place a ucall page (adding a device named `ucall`
    when there is none); with ``ucall_memslot``, also cover it with a read-only memslot so a
    later memslot over it is refused (EEXIST) instead of silently taking its writes.
    Raises PlanError when an entry finds no room, and when `check` would report an error on
    the plan (gpa_plan.plan.guard), whether the plan made it or ``layout`` already had it:
    allocate never emits a plan `check` rejects."""
    original = layout
    added: list[tuple[str, str]] = []
    if (ucall or ucall_memslot) and not any(d.type == "ucall" for d in layout.devices):
        device = _ucall_device(layout)
        layout = layout._replace(devices=(*layout.devices, device))
        added.append(("devices", device.name))
    span = max(layout.page_size, layout.guest_page_size or layout.page_size)
    plan = plan_layout(layout, ucall_span=span if ucall_memslot else None)
    if plan.errors:
        raise PlanError(plan.errors)
    notes = []
    if ucall_memslot:
        layout, slot_added = _with_ucall_memslot(layout, plan, span)
        added.extend(slot_added)
    _refuse_errors(original, layout, plan.placements)
    ucall_note = ARCHES[layout.arch].ucall_note
    if ucall_note and (ucall or ucall_memslot):
        notes.append(ucall_note)
    return Allocation(layout, plan.placements, notes, added)


def _refuse_errors(before: Layout, after: Layout, placements: dict[str, int]) -> None:
    """PlanError if ``after`` (planned) has any error finding: `check` would reject the plan.

    An error the plan made is named as such; one ``before`` already has (as `check` places its
    `auto` entries) is named as the input's, with the fix: allocate fills in `auto` values
    and leaves fixed entries alone, so it cannot repair them."""
    from gpa_plan.plan.guard import Located, errors_of, split_new

    found = errors_of(resolve(after, placements))
    if not found:
        return
    made: list[Located] = []
    if after is before:
        had = found
    else:
        made, had = split_new(errors_of(resolve(before, plan_layout(before).placements)), found)
    problems = [
        (f"the plan would fail check: {f.message}; nothing was written", path) for f, path in made
    ]
    problems += [
        (
            f"the layout already fails check: {f.message}; allocate fills in `auto` values and "
            "leaves fixed entries alone, so fix this entry first (`gpa-plan check` shows every "
            "such error); nothing was written",
            path,
        )
        for f, path in had
    ]
    raise PlanError(problems, [f.rule for f, _ in made] + [f.rule for f, _ in had])


def _ucall_device(layout: Layout) -> Device:
    return Device(name=_free_name(layout, UCALL_NAME), type="ucall", base="auto")


def _free_name(layout: Layout, wanted: str) -> str:
    """``wanted``, or ``wanted-2``, ``wanted-3``... if an entry already has that name."""
    taken = {m.name for m in layout.memslots} | {d.name for d in layout.devices}
    taken |= {r.name for r in layout.reserved}
    name, n = wanted, 1
    while name in taken:
        n += 1
        name = f"{wanted}-{n}"
    return name


def _with_ucall_memslot(
    layout: Layout, plan: Plan, span: int
) -> tuple[Layout, list[tuple[str, str]]]:
    """A read-only memslot of ``span`` bytes over each ucall page not already under one.
    Raises PlanError for a fixed ucall page that no such memslot can cover exactly."""
    ucalls = [(i, d) for i, d in enumerate(layout.devices) if d.type == "ucall"]
    added = []
    problems: list[tuple[str, EntryPath | None]] = []
    rules = []
    memslots = list(layout.memslots)
    for i, d in ucalls:
        base = plan.placements.get(d.name, d.base)
        if not isinstance(base, int) or _read_only_memslot_over(memslots, base, span):
            continue  # a rerun of --ucall-memslot: the page is guarded already
        if base % span:
            problems.append((_unaligned_ucall(d.name, base, span), ("devices", i)))
            rules.append(no_room.slug)
            continue
        under = _memslot_under(memslots, base, span)
        if under is not None:
            free = _free_ucall_page(layout, i, span)
            problems.append((_ucall_in_memslot(d.name, base, span, under, free), ("devices", i)))
            rules.append(memslot_overlap.slug)
            continue
        name = _free_name(layout, UCALL_SLOT_NAME if len(ucalls) == 1 else f"{d.name}-slot")
        memslots.append(Memslot(name=name, base=base, size=span, readonly=True))
        added.append(("memslots", name))
    if problems:
        raise PlanError(problems, rules)
    return layout._replace(memslots=tuple(memslots)), added


def _memslot_under(memslots: list[Memslot], base: int, span: int) -> Memslot | None:
    """The first memslot of address space 0 that the page [base, base + span) overlaps."""
    page = Range(base, base + span)
    return next(
        (m for m in memslots
         if m.as_id == 0 and isinstance(m.base, int)
         and Range(m.base, m.base + m.size).overlaps(page)),
        None,
    )


def _free_ucall_page(layout: Layout, index: int, span: int) -> int | None:
    """Where `base: auto` would put ucall device ``index`` (None: nowhere)."""
    devices = list(layout.devices)
    devices[index] = devices[index]._replace(base="auto")
    plan = plan_layout(layout._replace(devices=tuple(devices)), ucall_span=span)
    return plan.placements.get(devices[index].name)


def _ucall_in_memslot(
    name: str, base: int, span: int, memslot: Memslot, free: int | None
) -> str:
    # kvm_set_memory_region() -> kvm_check_memslot_overlap(): a new memslot overlapping one of
    # the same address space is refused with EEXIST.
    assert isinstance(memslot.base, int)
    where = Range(memslot.base, memslot.base + memslot.size)
    lies = "lies in" if where.covers(Range(base, base + span)) else "overlaps"
    move = (f"move the ucall page to a free address ({hex_addr(free)} is free) or set its "
            "base to auto" if free is not None else "set its base to auto")
    return (
        f"ucall {name!r} at {hex_addr(base)} {lies} memslot {memslot.name!r} {where}: the "
        "read-only memslot --ucall-memslot adds over the ucall page would overlap it, and "
        "KVM_SET_USER_MEMORY_REGION refuses that with EEXIST (kvm_check_memslot_overlap()); "
        f"{move}"
    )


def _read_only_memslot_over(memslots: list[Memslot], base: int, span: int) -> bool:
    page = Range(base, base + span)
    return any(
        m.readonly
        and m.as_id == 0
        and isinstance(m.base, int)
        and Range(m.base, m.base + m.size).covers(page)
        for m in memslots
    )


def _unaligned_ucall(name: str, base: int, span: int) -> str:
    # kvm_set_memory_region() refuses a guest_phys_addr that is not page-aligned (EINVAL), so
    # no memslot can sit exactly over a ucall page that is not.
    return (
        f"cannot cover ucall {name!r} at {hex_addr(base)} with a read-only memslot: KVM "
        f"needs memslots aligned to the {human_size(span)} host page (EINVAL otherwise); "
        f"move the ucall page to a multiple of {hex_addr(span)} or set its base to auto"
    )


def resolved_document(layout: Layout, placements: dict[str, int]) -> dict[str, Any]:
    data = as_data(layout)
    slot_ids = assign_slot_ids(layout)
    for i, memslot in enumerate(data.get("memslots", [])):
        _resolve_entry(memslot, placements)
        memslot["slot"] = slot_ids[i]
        data["memslots"][i] = _ordered(memslot, ("name", "slot", "as_id", "base", "size"))
    for i, device in enumerate(data.get("devices", [])):
        _resolve_entry(device, placements)
        base = device_base(layout, i)
        device["base"] = base if isinstance(base, int) else placements[device["name"]]
        data["devices"][i] = _ordered(device, ("name", "type", "base"))
    return data


def _resolve_entry(entry: dict[str, Any], placements: dict[str, int]) -> None:
    if entry.get("base") == "auto":
        entry["base"] = placements[entry["name"]]
    for key in _PLACEMENT_KEYS:
        entry.pop(key, None)


def _ordered(entry: dict[str, Any], first: tuple[str, ...]) -> dict[str, Any]:
    head = {k: entry[k] for k in first if k in entry}
    return {**head, **{k: v for k, v in entry.items() if k not in head}}
