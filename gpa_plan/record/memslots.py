"""Memslots as KVM applies ``KVM_SET_USER_MEMORY_REGION(2)`` calls: one rule, used by `record`
and by `import strace` (gpa_plan.importers.strace.replay)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, NamedTuple

# include/uapi/linux/kvm.h
KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1
KVM_MEM_GUEST_MEMFD = 1 << 2


class Memslot(NamedTuple):
    as_id: int
    slot: int
    base: int
    size: int
    readonly: bool
    dirty_log: bool
    guest_memfd: bool = False


Memslots = MutableMapping[tuple[int, int], Memslot]


def set_memory_region(memslots: Memslots, slot: int, flags: int, base: int, size: int) -> None:
    """Apply one call that KVM accepted to ``memslots`` (keyed by (as_id, id)), as
    virt/kvm/kvm_main.c kvm_set_memory_region() does: ``slot`` holds the address space in its
    upper 16 bits (as_id = slot >> 16, id = (u16)slot); a size of 0 deletes the slot
    (KVM_MR_DELETE); a call on an existing id moves it (KVM_MR_MOVE) or changes its flags
    (KVM_MR_FLAGS_ONLY), so the call's base, size and flags replace the old ones. A refused
    call changes nothing: do not call this for one."""
    as_id, slot_id = slot >> 16, slot & 0xFFFF
    if size == 0:
        memslots.pop((as_id, slot_id), None)
        return
    memslots[(as_id, slot_id)] = Memslot(
        as_id, slot_id, base, size, bool(flags & KVM_MEM_READONLY),
        bool(flags & KVM_MEM_LOG_DIRTY_PAGES), bool(flags & KVM_MEM_GUEST_MEMFD),
    )


def memslot_entry(memslot: Memslot) -> dict[str, Any]:
    """``memslot`` as a layout's memslots entry: named ``slotN`` (``asI-slotN`` outside
    address space 0), flags only where set."""
    entry: dict[str, Any] = {
        "name": f"as{memslot.as_id}-slot{memslot.slot}" if memslot.as_id
        else f"slot{memslot.slot}",
        "slot": memslot.slot,
    }
    if memslot.as_id:
        entry["as_id"] = memslot.as_id
    entry["base"] = memslot.base
    entry["size"] = memslot.size
    for flag in ("readonly", "dirty_log", "guest_memfd"):
        if getattr(memslot, flag):
            entry[flag] = True
    return entry


def memslot_entries(memslots: Memslots) -> list[dict[str, Any]]:
    """Every memslot as a layout entry, by address space and base."""
    return [memslot_entry(m) for m in sorted(memslots.values(), key=lambda m: (m.as_id, m.base))]
