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
}

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
