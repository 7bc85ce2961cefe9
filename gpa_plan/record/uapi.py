"""The KVM structures a recording reads from a traced program's memory, decoded from bytes.

Layouts and numbers of Linux 7.2.13: include/uapi/linux/kvm.h and arch/arm64/include/uapi/
asm/kvm.h (the vGIC's address types), little-endian, as on every host `record` runs on. The
ioctl numbers are the same on x86_64 and arm64 (both use include/uapi/asm-generic/ioctl.h).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

# Structures and numbers gpa_plan.probe.kvm already declares, used from here too.
from gpa_plan.probe.kvm import (
    COALESCED_ZONE,
    CREATE_DEVICE,
    DEVICE_ATTR,
    ENABLE_CAP,
    IOEVENTFD,
    KVM_CREATE_DEVICE,
    KVM_CREATE_VCPU,
    KVM_CREATE_VM,
    KVM_ENABLE_CAP,
    KVM_IOEVENTFD,
    KVM_REGISTER_COALESCED_MMIO,
    KVM_SET_DEVICE_ATTR,
    KVM_SET_USER_MEMORY_REGION,
    MEM_REGION,
    io,
    iow,
)

# struct kvm_userspace_memory_region2: slot, flags, guest_phys_addr, memory_size,
# userspace_addr, guest_memfd_offset, guest_memfd, pad1, pad2[14]
MEM_REGION2 = struct.Struct("<IIQQQQII112x")
# struct kvm_pit_config: flags, pad[15]
PIT_CONFIG = struct.Struct("<I60x")
# struct kvm_arm_device_addr: id, addr
ARM_DEVICE_ADDR = struct.Struct("<QQ")
U64 = struct.Struct("<Q")

KVM_SET_USER_MEMORY_REGION2 = iow(0x49, MEM_REGION2.size)
KVM_CREATE_IRQCHIP = io(0x60)
KVM_CREATE_PIT = io(0x64)
KVM_UNREGISTER_COALESCED_MMIO = iow(0x68, COALESCED_ZONE.size)
KVM_CREATE_PIT2 = iow(0x77, PIT_CONFIG.size)
KVM_ARM_SET_DEVICE_ADDR = iow(0xAB, ARM_DEVICE_ADDR.size)
KVM_SET_TSS_ADDR = io(0x47)  # its argument is the address itself
KVM_SET_IDENTITY_MAP_ADDR = iow(0x48, U64.size)  # a pointer to the u64 address

REQUEST_NAMES = {
    KVM_CREATE_VM: "KVM_CREATE_VM",
    KVM_CREATE_VCPU: "KVM_CREATE_VCPU",
    KVM_SET_USER_MEMORY_REGION: "KVM_SET_USER_MEMORY_REGION",
    KVM_SET_USER_MEMORY_REGION2: "KVM_SET_USER_MEMORY_REGION2",
    KVM_CREATE_IRQCHIP: "KVM_CREATE_IRQCHIP",
    KVM_CREATE_PIT: "KVM_CREATE_PIT",
    KVM_CREATE_PIT2: "KVM_CREATE_PIT2",
    KVM_ENABLE_CAP: "KVM_ENABLE_CAP",
    KVM_IOEVENTFD: "KVM_IOEVENTFD",
    KVM_REGISTER_COALESCED_MMIO: "KVM_REGISTER_COALESCED_MMIO",
    KVM_UNREGISTER_COALESCED_MMIO: "KVM_UNREGISTER_COALESCED_MMIO",
    KVM_CREATE_DEVICE: "KVM_CREATE_DEVICE",
    KVM_SET_DEVICE_ATTR: "KVM_SET_DEVICE_ATTR",
    KVM_ARM_SET_DEVICE_ADDR: "KVM_ARM_SET_DEVICE_ADDR",
    KVM_SET_TSS_ADDR: "KVM_SET_TSS_ADDR",
    KVM_SET_IDENTITY_MAP_ADDR: "KVM_SET_IDENTITY_MAP_ADDR",
}

KVMIO = 0xAE  # include/uapi/linux/kvm.h: the type byte of every KVM ioctl

# Every ioctl of include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h (generic, x86
# and arm64 ones; s390 and powerpc ones left out), Linux 7.2.13, by request number as the
# x86_64 and arm64 compilers give it (a request holds its structure's size: the few generic
# ones whose structure differs per architecture, KVM_GET_REGS ..., carry x86_64's here).
KVM_IOCTL_NAMES: dict[int, str] = {
    0x0000ae00: "KVM_GET_API_VERSION",
    0x0000ae01: "KVM_CREATE_VM",
    0x0000ae03: "KVM_CHECK_EXTENSION",
    0x0000ae04: "KVM_GET_VCPU_MMAP_SIZE",
    0x0000ae41: "KVM_CREATE_VCPU",
    0x0000ae44: "KVM_SET_NR_MMU_PAGES",
    0x0000ae45: "KVM_GET_NR_MMU_PAGES",
    0x0000ae47: "KVM_SET_TSS_ADDR",
    0x0000ae60: "KVM_CREATE_IRQCHIP",
    0x0000ae64: "KVM_CREATE_PIT",
    0x0000ae71: "KVM_REINJECT_CONTROL",
    0x0000ae80: "KVM_RUN",
    0x0000ae9a: "KVM_NMI",
    0x0000aea2: "KVM_SET_TSC_KHZ",
    0x0000aea3: "KVM_GET_TSC_KHZ",
    0x0000aead: "KVM_KVMCLOCK_CTRL",
    0x0000aeb7: "KVM_SMI",
    0x0000aec7: "KVM_RESET_DIRTY_RINGS",
    0x0000aece: "KVM_GET_STATS_FD",
    0x4004ae86: "KVM_INTERRUPT",
    0x4004ae8b: "KVM_SET_SIGNAL_MASK",
    0x4004ae99: "KVM_SET_MP_STATE",
    0x4004aec2: "KVM_ARM_VCPU_FINALIZE",
    0x4008ae48: "KVM_SET_IDENTITY_MAP_ADDR",
    0x4008ae61: "KVM_IRQ_LINE",
    0x4008ae6a: "KVM_SET_GSI_ROUTING",
    0x4008ae89: "KVM_SET_MSRS",
    0x4008ae8a: "KVM_SET_CPUID",
    0x4008ae90: "KVM_SET_CPUID2",
    0x4008ae93: "KVM_SET_VAPIC_ADDR",
    0x4008ae9c: "KVM_X86_SETUP_MCE",
    0x400caed0: "KVM_XEN_HVM_EVTCHN_SEND",
    0x4010ae42: "KVM_GET_DIRTY_LOG",
    0x4010ae67: "KVM_REGISTER_COALESCED_MMIO",
    0x4010ae68: "KVM_UNREGISTER_COALESCED_MMIO",
    0x4010aeab: "KVM_ARM_SET_DEVICE_ADDR",
    0x4010aeac: "KVM_SET_ONE_REG",
    0x4010aeb5: "KVM_ARM_SET_COUNTER_OFFSET",
    0x4018aebd: "KVM_HYPERV_EVENTFD",
    0x4018aee1: "KVM_SET_DEVICE_ATTR",
    0x4018aee2: "KVM_GET_DEVICE_ATTR",
    0x4018aee3: "KVM_HAS_DEVICE_ATTR",
    0x4020ae46: "KVM_SET_USER_MEMORY_REGION",
    0x4020ae76: "KVM_IRQFD",
    0x4020aea5: "KVM_SIGNAL_MSI",
    0x4020aeae: "KVM_ARM_VCPU_INIT",
    0x4020aeb2: "KVM_SET_PMU_EVENT_FILTER",
    0x4020aed2: "KVM_SET_MEMORY_ATTRIBUTES",
    0x4030ae7b: "KVM_SET_CLOCK",
    0x4038ae7a: "KVM_XEN_HVM_CONFIG",
    0x4040ae77: "KVM_CREATE_PIT2",
    0x4040ae79: "KVM_IOEVENTFD",
    0x4040ae9e: "KVM_X86_SET_MCE",
    0x4040aea0: "KVM_SET_VCPU_EVENTS",
    0x4048ae9b: "KVM_SET_GUEST_DEBUG",
    0x4048aec9: "KVM_XEN_HVM_SET_ATTR",
    0x4048aecb: "KVM_XEN_VCPU_SET_ATTR",
    0x4068aea3: "KVM_ENABLE_CAP",
    0x4070aea0: "KVM_SET_PIT2",
    0x4080aea2: "KVM_SET_DEBUGREGS",
    0x4080aebf: "KVM_SET_NESTED_STATE",
    0x4090ae82: "KVM_SET_REGS",
    0x40a0ae49: "KVM_SET_USER_MEMORY_REGION2",
    0x4138ae84: "KVM_SET_SREGS",
    0x4140aecd: "KVM_SET_SREGS2",
    0x4188aea7: "KVM_SET_XCRS",
    0x4188aec6: "KVM_X86_SET_MSR_FILTER",
    0x41a0ae8d: "KVM_SET_FPU",
    0x4400ae8f: "KVM_SET_LAPIC",
    0x5000aea5: "KVM_SET_XSAVE",
    0x8004ae98: "KVM_GET_MP_STATE",
    0x8008ae9d: "KVM_X86_GET_MCE_CAP_SUPPORTED",
    0x8010aebb: "KVM_MEMORY_ENCRYPT_REG_REGION",
    0x8010aebc: "KVM_MEMORY_ENCRYPT_UNREG_REGION",
    0x8020aeaf: "KVM_ARM_PREFERRED_TARGET",
    0x8030ae7c: "KVM_GET_CLOCK",
    0x8030aeb4: "KVM_ARM_MTE_COPY_TAGS",
    0x8040ae9f: "KVM_GET_VCPU_EVENTS",
    0x8040aeb6: "KVM_ARM_GET_REG_WRITABLE_MASKS",
    0x8048ae66: "KVM_SET_PIT",
    0x8070ae9f: "KVM_GET_PIT2",
    0x8080aea1: "KVM_GET_DEBUGREGS",
    0x8090ae81: "KVM_GET_REGS",
    0x8138ae83: "KVM_GET_SREGS",
    0x8140aecc: "KVM_GET_SREGS2",
    0x8188aea6: "KVM_GET_XCRS",
    0x81a0ae8c: "KVM_GET_FPU",
    0x8208ae63: "KVM_SET_IRQCHIP",
    0x8400ae8e: "KVM_GET_LAPIC",
    0x9000aea4: "KVM_GET_XSAVE",
    0x9000aecf: "KVM_GET_XSAVE2",
    0xc004ae02: "KVM_GET_MSR_INDEX_LIST",
    0xc004ae0a: "KVM_GET_MSR_FEATURE_INDEX_LIST",
    0xc008ae05: "KVM_GET_SUPPORTED_CPUID",
    0xc008ae09: "KVM_GET_EMULATED_CPUID",
    0xc008ae67: "KVM_IRQ_LINE_STATUS",
    0xc008ae88: "KVM_GET_MSRS",
    0xc008ae91: "KVM_GET_CPUID2",
    0xc008aeb0: "KVM_GET_REG_LIST",
    0xc008aeba: "KVM_MEMORY_ENCRYPT_OP",
    0xc008aec1: "KVM_GET_SUPPORTED_HV_CPUID",
    0xc00caee0: "KVM_CREATE_DEVICE",
    0xc018ae85: "KVM_TRANSLATE",
    0xc018aec0: "KVM_CLEAR_DIRTY_LOG",
    0xc028ae92: "KVM_TPR_ACCESS_REPORTING",
    0xc040aed4: "KVM_CREATE_GUEST_MEMFD",
    0xc040aed5: "KVM_PRE_FAULT_MEMORY",
    0xc048ae65: "KVM_GET_PIT",
    0xc048aec8: "KVM_XEN_HVM_GET_ATTR",
    0xc048aeca: "KVM_XEN_VCPU_GET_ATTR",
    0xc080aebe: "KVM_GET_NESTED_STATE",
    0xc208ae62: "KVM_GET_IRQCHIP",
}

# One request number, two names: KVM_ARM_SET_DEVICE_ADDR on a VM, KVM_GET_ONE_REG on a vCPU
# (both _IOW(KVMIO, 0xab, 16 bytes)).
VCPU_IOCTL_NAMES = {KVM_ARM_SET_DEVICE_ADDR: "KVM_GET_ONE_REG"}

# The KVM ioctls `record` never stops on (unless asked for): a running VM makes them all the
# time, so stopping on them would slow the command down where it matters. QEMU and
# Firecracker call KVM_RUN in every vCPU loop; KVM_IRQ_LINE(_STATUS) and KVM_SIGNAL_MSI on
# every interrupt a device model raises without an irqfd, KVM_INTERRUPT, KVM_NMI and KVM_SMI
# before a KVM_RUN that injects one (QEMU kvm_arch_pre_run(), userspace irqchip);
# KVM_GET_DIRTY_LOG, KVM_CLEAR_DIRTY_LOG and KVM_RESET_DIRTY_RINGS on every dirty-log pass
# (VGA refresh, migration); KVM_KVMCLOCK_CTRL on every resume of a paused guest;
# KVM_SET_GUEST_DEBUG on every single step of a debugger. A refusal of one of them is not seen.
HOT_IOCTLS: frozenset[int] = frozenset(
    request for request, name in KVM_IOCTL_NAMES.items() if name in {
        "KVM_RUN", "KVM_IRQ_LINE", "KVM_IRQ_LINE_STATUS", "KVM_SIGNAL_MSI", "KVM_INTERRUPT",
        "KVM_NMI", "KVM_SMI", "KVM_GET_DIRTY_LOG", "KVM_CLEAR_DIRTY_LOG",
        "KVM_RESET_DIRTY_RINGS", "KVM_KVMCLOCK_CTRL", "KVM_SET_GUEST_DEBUG",
    }
)


def ioctl_type(request: int) -> int:
    """The type byte of an ioctl request (_IOC_TYPE(), include/uapi/asm-generic/ioctl.h)."""
    return (request >> 8) & 0xFF


def ioctl_name(request: int, *, vcpu: bool = False) -> str:
    """The name of KVM ioctl ``request`` (low 32 bits), on a vCPU's fd or another;
    ``ioctl 0x...`` for one the table does not hold."""
    request &= 0xFFFF_FFFF
    if vcpu and request in VCPU_IOCTL_NAMES:
        return VCPU_IOCTL_NAMES[request]
    return KVM_IOCTL_NAMES.get(request, f"ioctl {request:#x}")

KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1
KVM_MEM_GUEST_MEMFD = 1 << 2
KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0
KVM_IOEVENTFD_FLAG_PIO = 1 << 1
KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2
KVM_CAP_SPLIT_IRQCHIP = 121
KVM_PIT_SPEAKER_DUMMY = 1
KVM_CREATE_DEVICE_TEST = 1

# enum kvm_device_type
KVM_DEV_TYPE_ARM_VGIC_V2 = 5
KVM_DEV_TYPE_ARM_VGIC_V3 = 7
KVM_DEV_TYPE_ARM_VGIC_ITS = 8

# arch/arm64/include/uapi/asm/kvm.h
KVM_DEV_ARM_VGIC_GRP_ADDR = 0
KVM_VGIC_V2_ADDR_TYPE_DIST = 0
KVM_VGIC_V2_ADDR_TYPE_CPU = 1
KVM_VGIC_V3_ADDR_TYPE_DIST = 2
KVM_VGIC_V3_ADDR_TYPE_REDIST = 3
KVM_VGIC_ITS_ADDR_TYPE = 4
KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION = 5
KVM_ARM_DEVICE_ID_SHIFT = 16
KVM_ARM_DEVICE_VGIC_V2 = 0
# arch/arm64/kvm/vgic/vgic.h: the packed u64 of KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION
KVM_VGIC_V3_RDIST_INDEX_MASK = 0xFFF  # GENMASK_ULL(11, 0)
KVM_VGIC_V3_RDIST_FLAGS_MASK = 0xF000  # GENMASK_ULL(15, 12)
KVM_VGIC_V3_RDIST_BASE_MASK = ((1 << 52) - 1) & ~0xFFFF  # GENMASK_ULL(51, 16)
KVM_VGIC_V3_RDIST_COUNT_SHIFT = 52  # KVM_VGIC_V3_RDIST_COUNT_MASK: GENMASK_ULL(63, 52)


class MemoryRegion(NamedTuple):
    """struct kvm_userspace_memory_region(2): the fields a layout keeps."""

    slot: int  # as KVM takes it: as_id << 16 | id
    flags: int
    guest_phys_addr: int
    memory_size: int
    guest_memfd: int = 0
    guest_memfd_offset: int = 0

    @classmethod
    def decode(cls, data: bytes) -> MemoryRegion:
        slot, flags, gpa, size, _ = MEM_REGION.unpack_from(data)
        return cls(slot, flags, gpa, size)

    @classmethod
    def decode2(cls, data: bytes) -> MemoryRegion:
        slot, flags, gpa, size, _, offset, memfd, _ = MEM_REGION2.unpack_from(data)
        return cls(slot, flags, gpa, size, memfd, offset)


class Ioeventfd(NamedTuple):
    """struct kvm_ioeventfd."""

    datamatch: int
    addr: int
    len: int
    fd: int
    flags: int

    @classmethod
    def decode(cls, data: bytes) -> Ioeventfd:
        return cls(*IOEVENTFD.unpack_from(data))


class CoalescedZone(NamedTuple):
    """struct kvm_coalesced_mmio_zone (``pio`` shares its place with ``pad``)."""

    addr: int
    size: int
    pio: int

    @classmethod
    def decode(cls, data: bytes) -> CoalescedZone:
        return cls(*COALESCED_ZONE.unpack_from(data))


class CreateDevice(NamedTuple):
    """struct kvm_create_device (``fd`` is filled in by KVM)."""

    type: int
    fd: int
    flags: int

    @classmethod
    def decode(cls, data: bytes) -> CreateDevice:
        return cls(*CREATE_DEVICE.unpack_from(data))


class DeviceAttr(NamedTuple):
    """struct kvm_device_attr: ``addr`` points at the attribute's value."""

    flags: int
    group: int
    attr: int
    addr: int

    @classmethod
    def decode(cls, data: bytes) -> DeviceAttr:
        return cls(*DEVICE_ATTR.unpack_from(data))


class EnableCap(NamedTuple):
    """struct kvm_enable_cap: the capability and its first argument."""

    cap: int
    flags: int
    arg0: int

    @classmethod
    def decode(cls, data: bytes) -> EnableCap:
        cap, flags, arg0, *_ = ENABLE_CAP.unpack_from(data)
        return cls(cap, flags, arg0)


class ArmDeviceAddr(NamedTuple):
    """struct kvm_arm_device_addr: ``id`` is device id << 16 | address type."""

    id: int
    addr: int

    @classmethod
    def decode(cls, data: bytes) -> ArmDeviceAddr:
        return cls(*ARM_DEVICE_ADDR.unpack_from(data))

    @property
    def device(self) -> int:
        return (self.id >> KVM_ARM_DEVICE_ID_SHIFT) & 0xFFFF

    @property
    def addr_type(self) -> int:
        return self.id & 0xFFFF


@dataclass(frozen=True)
class RedistRegion:
    """The u64 of KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION, as kvm_vgic_addr()
    (arch/arm64/kvm/vgic/vgic-kvm-device.c) unpacks it."""

    base: int
    count: int
    index: int
    flags: int

    @classmethod
    def unpack(cls, value: int) -> RedistRegion:
        return cls(
            value & KVM_VGIC_V3_RDIST_BASE_MASK,
            value >> KVM_VGIC_V3_RDIST_COUNT_SHIFT,
            value & KVM_VGIC_V3_RDIST_INDEX_MASK,
            (value & KVM_VGIC_V3_RDIST_FLAGS_MASK) >> 12,
        )


def pit_flags(data: bytes) -> int:
    flags: int = PIT_CONFIG.unpack_from(data)[0]
    return flags


def u64(data: bytes) -> int:
    value: int = U64.unpack_from(data)[0]
    return value



__all__ = [  # re-exported from gpa_plan.probe.kvm
    "COALESCED_ZONE", "CREATE_DEVICE", "DEVICE_ATTR", "ENABLE_CAP", "IOEVENTFD",
    "KVM_CREATE_DEVICE", "KVM_CREATE_VCPU", "KVM_CREATE_VM", "KVM_ENABLE_CAP", "KVM_IOEVENTFD",
    "KVM_REGISTER_COALESCED_MMIO", "KVM_SET_DEVICE_ATTR", "KVM_SET_USER_MEMORY_REGION",
    "MEM_REGION",
]
