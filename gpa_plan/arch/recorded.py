"""What a recording needs to know of an architecture's KVM: what its in-kernel irqchip calls
make, and what KVM_CREATE_VM's type says of the address space (Linux 7.2.13).

`gpa-plan record` (gpa_plan.record.document) asks ``record_facts(arch)``; an architecture
without an entry has none of these calls' effects modelled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class Fixed(NamedTuple):
    """An in-kernel device at an address KVM fixes: a layout device (``type``) or, where
    ``type`` is None, a range of the port I/O space (``size`` ports)."""

    name: str
    type: str | None
    base: int
    size: int = 0


class RecordFacts(NamedTuple):
    # What KVM_CREATE_IRQCHIP makes at fixed addresses.
    irqchip: tuple[Fixed, ...] = ()
    # What KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP) makes.
    split_irqchip: tuple[Fixed, ...] = ()
    # What KVM_CREATE_PIT(2) makes, and the speaker port it adds with KVM_PIT_SPEAKER_DUMMY.
    pit: tuple[Fixed, ...] = ()
    pit_speaker: tuple[Fixed, ...] = ()
    # The layout's pa_bits from KVM_CREATE_VM's type, where the type sets it; None elsewhere.
    pa_bits_of_vm_type: Callable[[int], int | None] = lambda vm_type: None
    # Said in the layout's comments after a KVM_CREATE_IRQCHIP that makes nothing at a fixed
    # address.
    irqchip_note: str = ""


def _arm64_ipa_bits(vm_type: int) -> int:
    """arch/arm64/kvm/mmu.c kvm_init_ipa_range(): KVM_VM_TYPE_ARM_IPA_SIZE(type), bits 0-7,
    else KVM_PHYS_SHIFT (40)."""
    return (vm_type & 0xFF) or 40


X86_64_FACTS = RecordFacts(
    # arch/x86/kvm/x86.c kvm_arch_vm_ioctl(KVM_CREATE_IRQCHIP): kvm_pic_init() registers the
    # PICs and the ELCR on KVM_PIO_BUS (0x20 and 0xa0, 2 ports each; 0x4d0, 2 ports:
    # arch/x86/kvm/i8259.c), kvm_ioapic_init() the IOAPIC at IOAPIC_DEFAULT_BASE_ADDRESS
    # (ioapic.c); each vCPU's LAPIC is at APIC_DEFAULT_PHYS_BASE (lapic.c kvm_create_lapic()).
    irqchip=(
        Fixed("ioapic", "ioapic", 0xFEC0_0000),
        Fixed("lapic", "lapic", 0xFEE0_0000),
        Fixed("pic", None, 0x20, 2),
        Fixed("pic2", None, 0xA0, 2),
        Fixed("pic-elcr", None, 0x4D0, 2),
    ),
    # kvm_vm_ioctl_enable_cap(KVM_CAP_SPLIT_IRQCHIP): the LAPICs only; the IOAPIC and PIC
    # are the VMM's.
    split_irqchip=(Fixed("lapic", "lapic", 0xFEE0_0000),),
    # arch/x86/kvm/i8254.c kvm_create_pit(): KVM_PIT_BASE_ADDRESS 0x40, KVM_PIT_MEM_LENGTH 4;
    # with KVM_PIT_SPEAKER_DUMMY the speaker at KVM_SPEAKER_BASE_ADDRESS 0x61, registered for
    # 4 ports of which speaker_ioport_read()/_write() answer 0x61 alone.
    pit=(Fixed("pit", None, 0x40, 4),),
    pit_speaker=(Fixed("pit-speaker", None, 0x61, 1),),
)

ARM64_FACTS = RecordFacts(
    pa_bits_of_vm_type=_arm64_ipa_bits,
    irqchip_note=(
        "KVM_CREATE_IRQCHIP made a vGICv2 (arch/arm64/kvm/arm.c kvm_arch_vm_ioctl() -> "
        "kvm_vgic_create()): its frames are where KVM_ARM_SET_DEVICE_ADDR put them."
    ),
)

_FACTS = {"x86_64": X86_64_FACTS, "arm64": ARM64_FACTS}


def record_facts(arch: str) -> RecordFacts:
    return _FACTS.get(arch, RecordFacts())
