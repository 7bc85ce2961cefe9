"""Check the KVM probe harness against known x86 KVM behaviour on this host."""

from __future__ import annotations

import errno
import os

import pytest
from kvm_probe import (
    LAPIC_BASE,
    ProbeError,
    Slot,
    kvm_available,
    probe_access,
    set_memslots,
)

pytestmark = pytest.mark.skipif(
    not kvm_available(), reason="needs an x86_64 host with a usable /dev/kvm"
)

MiB = 1 << 20
RAM = Slot(gpa=MiB, size=MiB)
ROM = Slot(gpa=MiB, size=MiB, readonly=True)
INSIDE = MiB + 0x800
UNBACKED = 0x2000_0000
IOAPIC_BASE = 0xFEC0_0000

# Highest memslot id userspace may use on x86: KVM_USER_MEM_SLOTS is
# KVM_MEM_SLOTS_NUM (SHRT_MAX) minus KVM_INTERNAL_MEM_SLOTS (3), checked in
# kvm_vm_ioctl_set_memory_region().
LAST_USER_SLOT_ID = 32763


@pytest.mark.parametrize(
    ("slot", "access", "expected"),
    [
        (RAM, "read", "memory"),
        (RAM, "write", "memory"),
        (RAM, "fetch", "memory"),
        (ROM, "read", "memory"),
        (ROM, "write", "io-exit"),
        (ROM, "fetch", "memory"),
    ],
)
def test_access_inside_memslot(slot: Slot, access: str, expected: str) -> None:
    assert probe_access([slot], INSIDE, access) == expected


@pytest.mark.parametrize(
    ("access", "expected"),
    [("read", "io-exit"), ("write", "io-exit"), ("fetch", "vm-error")],
)
def test_access_outside_every_memslot(access: str, expected: str) -> None:
    assert probe_access([RAM], UNBACKED, access) == expected


@pytest.mark.parametrize(("irqchip", "expected"), [(True, "io-kernel"), (False, "io-exit")])
def test_lapic_read_depends_on_in_kernel_irqchip(irqchip: bool, expected: str) -> None:
    assert probe_access([RAM], LAPIC_BASE, "read", irqchip=irqchip) == expected


def test_ioapic_write_is_handled_in_kernel_with_irqchip() -> None:
    assert probe_access([], IOAPIC_BASE, "write", irqchip=True) == "io-kernel"


def test_code_memslot_moves_out_of_the_callers_way() -> None:
    # RAM from GPA 0 takes the harness's preferred code location and slot id 0.
    low_ram = Slot(gpa=0, size=16 * MiB, slot=0)
    assert probe_access([low_ram], 0x0, "write") == "memory"
    assert probe_access([low_ram], 16 * MiB - 4, "read") == "memory"
    assert probe_access([low_ram], 16 * MiB, "read") == "io-exit"


def test_fetch_stub_may_span_adjacent_memslots() -> None:
    first = Slot(gpa=MiB, size=0x1000)
    second = Slot(gpa=MiB + 0x1000, size=0x1000, readonly=True)
    assert probe_access([first, second], MiB + 0x1000 - 2, "fetch") == "memory"


def test_access_straddling_a_memslot_edge_is_refused() -> None:
    with pytest.raises(ProbeError, match="partly inside memslots"):
        probe_access([RAM], RAM.gpa + RAM.size - 2, "read")


def test_address_above_4g_needs_long_mode() -> None:
    with pytest.raises(ProbeError, match="long mode"):
        probe_access([], 1 << 32, "read")


def test_unknown_access_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="access must be one of"):
        probe_access([RAM], INSIDE, "execute")


def test_rejected_caller_memslot_raises() -> None:
    with pytest.raises(ProbeError, match="EEXIST"):
        probe_access([RAM, Slot(gpa=MiB + 0x1000, size=0x1000)], INSIDE, "read")


def test_probes_leave_no_descriptors_open() -> None:
    before = set(os.listdir("/proc/self/fd"))
    probe_access([RAM], INSIDE, "write", irqchip=True)
    probe_access([RAM], UNBACKED, "fetch")
    set_memslots([RAM, RAM])
    assert set(os.listdir("/proc/self/fd")) == before


def test_set_memslots_overlap_is_eexist() -> None:
    assert set_memslots([RAM, Slot(gpa=MiB + 0x1000, size=0x1000)]) == [0, errno.EEXIST]


def test_set_memslots_misaligned_base_is_einval() -> None:
    assert set_memslots([Slot(gpa=MiB + 0x800, size=0x1000)]) == [errno.EINVAL]


def test_set_memslots_zero_size_new_slot_is_einval() -> None:
    assert set_memslots([Slot(gpa=MiB, size=0)]) == [errno.EINVAL]


def test_set_memslots_wrapping_range_is_einval() -> None:
    assert set_memslots([Slot(gpa=(1 << 64) - 0x1000, size=0x2000)]) == [errno.EINVAL]


def test_set_memslots_slot_id_limit() -> None:
    assert set_memslots(
        [
            Slot(gpa=0, size=0x1000, slot=LAST_USER_SLOT_ID),
            Slot(gpa=0x1000, size=0x1000, slot=LAST_USER_SLOT_ID + 1),
        ]
    ) == [0, errno.EINVAL]


def test_set_memslots_none_ids_avoid_explicit_ones() -> None:
    # The None slot must not take id 0, which a later slot names explicitly.
    assert set_memslots([Slot(gpa=0, size=0x1000), Slot(gpa=MiB, size=0x1000, slot=0)]) == [0, 0]
