"""The device catalog: the MMIO devices a layout may name by type.

Sizes and alignments are the kernel's own, confirmed in Linux 7.2.13:
arch/arm64/include/uapi/asm/kvm.h (KVM_VGIC_*_SIZE), arch/arm64/kvm/vgic/vgic-kvm-device.c
kvm_vgic_addr() / vgic_check_iorange() and vgic-its.c vgic_its_set_attr() for the vGIC (base
and size aligned to 4 KiB for GICv2, 64 KiB for GICv3 and the ITS); arch/x86/kvm/lapic.c
LAPIC_MMIO_LENGTH and ioapic.h IOAPIC_MEM_LENGTH / IOAPIC_DEFAULT_BASE_ADDRESS for x86.
"""

from __future__ import annotations

from typing import NamedTuple

from gpa_plan.arch.base import Handler

ANY_ARCH = frozenset({"arm64", "x86_64"})
KiB = 1024


class DeviceType(NamedTuple):
    """A catalog entry. ``size``/``handler`` of None mean the layout gives them (``mmio``)."""

    name: str
    arches: frozenset[str]
    summary: str
    handler: Handler | None
    size: int | None = None
    per_vcpu: int | None = None
    # Alignment the kernel enforces on the base (KVM refuses the device otherwise); None: none.
    align: int | None = None
    align_is_guest_page: bool = False
    size_is_guest_page: bool = False
    default_base: int | None = None
    # How the VMM hands the address to KVM, for messages.
    kvm_api: str = ""
    # A frame of the VM's one in-kernel interrupt controller of this model ("GICv2"): a VM
    # has one model, and each frame one address unless ``frame_may_repeat``.
    irqchip_model: str | None = None
    # KVM takes several addresses of this frame (GICv3 KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION).
    frame_may_repeat: bool = False

    def size_for(self, *, vcpus: int | None, guest_page_size: int, size: int | None) -> int:
        if self.size_is_guest_page:
            return guest_page_size
        if self.per_vcpu is not None:
            return self.per_vcpu * (vcpus or 1)
        if self.size is not None:
            return self.size
        assert size is not None, "the layout validation requires a size for this type"
        return size

    def align_for(self, guest_page_size: int) -> int | None:
        return guest_page_size if self.align_is_guest_page else self.align


_VGIC_API = "KVM_SET_DEVICE_ATTR(KVM_DEV_ARM_VGIC_GRP_ADDR)"

CATALOG: dict[str, DeviceType] = {
    t.name: t
    for t in (
        DeviceType(
            "vgic-v2-dist",
            frozenset({"arm64"}),
            "GICv2 distributor (KVM_VGIC_V2_DIST_SIZE)",
            Handler.KERNEL,
            size=4 * KiB,
            align=4 * KiB,
            kvm_api=_VGIC_API,
            irqchip_model="GICv2",
        ),
        DeviceType(
            "vgic-v2-cpu",
            frozenset({"arm64"}),
            "GICv2 CPU interface (KVM_VGIC_V2_CPU_SIZE)",
            Handler.KERNEL,
            size=8 * KiB,
            align=4 * KiB,
            kvm_api=_VGIC_API,
            irqchip_model="GICv2",
        ),
        DeviceType(
            "vgic-v3-dist",
            frozenset({"arm64"}),
            "GICv3 distributor (KVM_VGIC_V3_DIST_SIZE)",
            Handler.KERNEL,
            size=64 * KiB,
            align=64 * KiB,
            kvm_api=_VGIC_API,
            irqchip_model="GICv3",
        ),
        DeviceType(
            "vgic-v3-redist",
            frozenset({"arm64"}),
            "GICv3 redistributors, 128 KiB per vCPU (KVM_VGIC_V3_REDIST_SIZE)",
            Handler.KERNEL,
            per_vcpu=128 * KiB,
            align=64 * KiB,
            kvm_api=_VGIC_API,
            irqchip_model="GICv3",
            frame_may_repeat=True,
        ),
        DeviceType(
            "vgic-its",
            frozenset({"arm64"}),
            "GICv3 ITS (KVM_VGIC_V3_ITS_SIZE)",
            Handler.KERNEL,
            size=128 * KiB,
            align=64 * KiB,
            kvm_api="KVM_SET_DEVICE_ATTR(KVM_VGIC_ITS_ADDR_TYPE)",
        ),
        DeviceType(
            "lapic",
            frozenset({"x86_64"}),
            "in-kernel local APIC (LAPIC_MMIO_LENGTH)",
            Handler.KERNEL,
            size=4 * KiB,
            align=4 * KiB,
            default_base=0xFEE0_0000,
            kvm_api="KVM_CREATE_IRQCHIP and the APIC base MSR",
        ),
        DeviceType(
            "ioapic",
            frozenset({"x86_64"}),
            "in-kernel IOAPIC (IOAPIC_MEM_LENGTH)",
            Handler.KERNEL,
            size=0x100,
            default_base=0xFEC0_0000,
            kvm_api="KVM_CREATE_IRQCHIP",
        ),
        DeviceType(
            "ucall",
            ANY_ARCH,
            "KVM selftests ucall MMIO page: one guest page, exits to the VMM",
            Handler.USER,
            size_is_guest_page=True,
            align_is_guest_page=True,
        ),
        DeviceType(
            "mmio",
            ANY_ARCH,
            "generic MMIO device: size required, handler default user",
            None,
        ),
    )
}
