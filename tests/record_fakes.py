"""A fake tracee for the recorder's tests: ioctl calls as the tracer hands them over, with the
structures behind their pointers packed as the kernel's uapi lays them out."""

from __future__ import annotations

import errno
import os
import struct

from gpa_plan.record import uapi
from gpa_plan.record.calls import TracedCall
from gpa_plan.record.state import Recorder

KVM = "/dev/kvm"
VM = "anon_inode:kvm-vm"
VGIC_V2 = "anon_inode:kvm-arm-vgic-v2"
VGIC_V3 = "anon_inode:kvm-arm-vgic-v3"
ITS = "anon_inode:kvm-arm-vgic-its"


class Tracee:
    """A process whose memory is a few packed structures, and the recorder that watches it."""

    def __init__(self, recorder: Recorder | None = None, tgid: int = 100) -> None:
        self.recorder = recorder or Recorder()
        self.tgid = tgid
        self.memory: dict[int, bytes] = {}
        self._next = 0x7F00_0000_0000

    def put(self, data: bytes) -> int:
        address = self._next
        self.memory[address] = data
        self._next += 0x1000
        return address

    def read(self, address: int, size: int) -> bytes:
        data = self.memory.get(address)
        if data is None:
            raise OSError(errno.EFAULT, os.strerror(errno.EFAULT))
        return data[:size]

    def ioctl(self, fd: int, request: int, arg: int = 0, ret: int = 0, target: str = VM,
              tgid: int | None = None) -> None:
        tgid = self.tgid if tgid is None else tgid
        self.recorder.call(TracedCall(tgid + 1, tgid, "ioctl", (fd, request, arg, 0, 0, 0),
                                      ret, target, self.read))

    def create_vm(self, fd: int, vm_type: int = 0, tgid: int | None = None) -> None:
        self.ioctl(3, uapi.KVM_CREATE_VM, vm_type, ret=fd, target=KVM, tgid=tgid)

    def memslot(self, vm: int, slot: int, base: int, size: int, flags: int = 0,
                ret: int = 0, as_id: int = 0) -> None:
        region = uapi.MEM_REGION.pack((as_id << 16) | slot, flags, base, size, 0x7000_0000)
        self.ioctl(vm, uapi.KVM_SET_USER_MEMORY_REGION, self.put(region), ret)

    def memslot2(self, vm: int, slot: int, base: int, size: int, flags: int = 0,
                 guest_memfd: int = 0, ret: int = 0) -> None:
        region = uapi.MEM_REGION2.pack(slot, flags, base, size, 0x7000_0000, 0, guest_memfd, 0)
        self.ioctl(vm, uapi.KVM_SET_USER_MEMORY_REGION2, self.put(region), ret)

    def ioeventfd(self, vm: int, addr: int, length: int, datamatch: int | None = None,
                  pio: bool = False, deassign: bool = False, fd: int = 9, ret: int = 0) -> None:
        flags = ((uapi.KVM_IOEVENTFD_FLAG_DATAMATCH if datamatch is not None else 0)
                 | (uapi.KVM_IOEVENTFD_FLAG_PIO if pio else 0)
                 | (uapi.KVM_IOEVENTFD_FLAG_DEASSIGN if deassign else 0))
        args = uapi.IOEVENTFD.pack(datamatch or 0, addr, length, fd, flags)
        self.ioctl(vm, uapi.KVM_IOEVENTFD, self.put(args), ret)

    def zone(self, vm: int, addr: int, size: int, pio: bool = False, unregister: bool = False,
             ret: int = 0) -> None:
        request = (uapi.KVM_UNREGISTER_COALESCED_MMIO if unregister
                   else uapi.KVM_REGISTER_COALESCED_MMIO)
        self.ioctl(vm, request, self.put(uapi.COALESCED_ZONE.pack(addr, size, int(pio))), ret)

    def create_device(self, vm: int, kind: int, fd: int, ret: int = 0, flags: int = 0) -> None:
        # At the call's exit KVM has written the new fd into the structure.
        made = uapi.CREATE_DEVICE.pack(kind, fd if ret == 0 else 0, flags)
        self.ioctl(vm, uapi.KVM_CREATE_DEVICE, self.put(made), ret)

    def set_addr(self, device_fd: int, attr: int, value: int, target: str, ret: int = 0,
                 group: int = uapi.KVM_DEV_ARM_VGIC_GRP_ADDR) -> None:
        pointer = self.put(struct.pack("<Q", value))
        attr_struct = uapi.DEVICE_ATTR.pack(0, group, attr, pointer)
        self.ioctl(device_fd, uapi.KVM_SET_DEVICE_ATTR, self.put(attr_struct), ret, target)

    def arm_device_addr(self, vm: int, addr_type: int, addr: int, ret: int = 0) -> None:
        given = uapi.ARM_DEVICE_ADDR.pack(uapi.KVM_ARM_DEVICE_VGIC_V2 << 16 | addr_type, addr)
        self.ioctl(vm, uapi.KVM_ARM_SET_DEVICE_ADDR, self.put(given), ret)

    def vcpus(self, vm: int, count: int) -> None:
        for i in range(count):
            self.ioctl(vm, uapi.KVM_CREATE_VCPU, i, ret=20 + i)

    def enable_cap(self, vm: int, cap: int, ret: int = 0) -> None:
        self.ioctl(vm, uapi.KVM_ENABLE_CAP, self.put(uapi.ENABLE_CAP.pack(cap, 0, 24, 0, 0, 0)),
                   ret)

    def pit2(self, vm: int, flags: int, ret: int = 0) -> None:
        self.ioctl(vm, uapi.KVM_CREATE_PIT2, self.put(uapi.PIT_CONFIG.pack(flags)), ret)


def region_value(base: int, count: int, index: int) -> int:
    """The packed u64 of KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION."""
    return count << 52 | base | index
