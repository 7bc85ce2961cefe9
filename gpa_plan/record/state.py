"""What a traced program did to each VM it created, kept as KVM kept it.

`Recorder` is the tracer's call handler (gpa_plan.record.calls.TracedCall): it follows the
file descriptors of ``/dev/kvm``, of each VM and of each device, reads the structures behind
the pointers while the calling thread is stopped (gpa_plan.record.uapi), and applies each call
KVM accepted as the kernel function named beside it does (Linux 7.2.13). Calls KVM refused
(a negative return) change nothing and are counted with their errno: those of its own table
with the structure they gave, every other KVM ioctl refused on a VM's, vCPU's or device's fd
by name only (uapi.ioctl_name()), and those on ``/dev/kvm`` itself or on a KVM fd of no VM
seen in ``notes``. Not refusals: EINTR (a signal came first: kvm_vcpu_ioctl()'s
mutex_lock_killable(), virt/kvm/kvm_main.c; the call did nothing and is made again), and E2BIG
from the calls that answer a buffer too small with the size it needs (``SIZE_QUERIES``).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from gpa_plan.probe.kvm import errno_name
from gpa_plan.record import uapi
from gpa_plan.record.calls import TracedCall
from gpa_plan.record.memslots import Memslot, set_memory_region

KVM_DEVICE = "/dev/kvm"
VM_TARGET = "anon_inode:kvm-vm"
# The files whose duplicates matter: VMs, vCPUs and KVM devices (anon_inode:kvm-...).
KVM_FILES = "anon_inode:kvm-"
# Calls that give a file a second number, by name (the host's SyscallAbi has the numbers;
# arm64 has no dup2), and fcntl's commands that do it (include/uapi/asm-generic/fcntl.h
# F_DUPFD, include/uapi/linux/fcntl.h F_DUPFD_CLOEXEC).
DUP_CALLS = frozenset({"dup", "dup2", "dup3", "fcntl"})
FCNTL_DUPS = frozenset({0, 1030})
# kvm_ioctl_create_device() (virt/kvm/kvm_main.c) names a device's file after its ops:
# "kvm-arm-vgic-v3", ...; a vCPU's is "kvm-vcpu:N" (create_vcpu_fd()).
DEVICE_TARGET_PREFIX = "anon_inode:kvm-"
NOT_A_DEVICE = ("anon_inode:kvm-vm", "anon_inode:kvm-vcpu")

WANTED_IOCTLS: frozenset[int] = frozenset(uapi.REQUEST_NAMES)
# Every other KVM ioctl stops too, to see it refused, but the hot ones (uapi.HOT_IOCTLS).
WANTED_IOCTL_TYPES: frozenset[int] = frozenset({uapi.KVMIO})
HOT_IOCTLS: frozenset[int] = uapi.HOT_IOCTLS
KVM_TARGET_PREFIX = "anon_inode:kvm-"
VCPU_TARGET_PREFIX = "anon_inode:kvm-vcpu"
# E2BIG from these says "the buffer is too small; here is the size": the way a VMM asks for
# it (kvm_arch_dev_ioctl() KVM_GET_MSR_INDEX_LIST, KVM_GET_MSR_FEATURE_INDEX_LIST,
# arch/x86/kvm/x86.c; kvm_dev_ioctl_get_cpuid(), cpuid.c; kvm_get_hv_cpuid(), hyperv.c;
# kvm_arch_vcpu_ioctl() KVM_GET_REG_LIST, arch/arm64/kvm/arm.c), not a refusal.
SIZE_QUERIES = frozenset({
    "KVM_GET_MSR_INDEX_LIST", "KVM_GET_MSR_FEATURE_INDEX_LIST", "KVM_GET_SUPPORTED_CPUID",
    "KVM_GET_EMULATED_CPUID", "KVM_GET_SUPPORTED_HV_CPUID", "KVM_GET_CPUID2",
    "KVM_GET_REG_LIST",
})

# vGIC frames by (KVM_CREATE_DEVICE type, KVM_DEV_ARM_VGIC_GRP_ADDR attribute): the layout's
# device type (kvm_vgic_addr(), arch/arm64/kvm/vgic/vgic-kvm-device.c; the ITS:
# vgic_its_set_attr(), vgic-its.c).
VGIC_FRAMES = {
    (uapi.KVM_DEV_TYPE_ARM_VGIC_V2, uapi.KVM_VGIC_V2_ADDR_TYPE_DIST): "vgic-v2-dist",
    (uapi.KVM_DEV_TYPE_ARM_VGIC_V2, uapi.KVM_VGIC_V2_ADDR_TYPE_CPU): "vgic-v2-cpu",
    (uapi.KVM_DEV_TYPE_ARM_VGIC_V3, uapi.KVM_VGIC_V3_ADDR_TYPE_DIST): "vgic-v3-dist",
    (uapi.KVM_DEV_TYPE_ARM_VGIC_V3, uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST): "vgic-v3-redist",
    (uapi.KVM_DEV_TYPE_ARM_VGIC_V3, uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION): "vgic-v3-redist",
    (uapi.KVM_DEV_TYPE_ARM_VGIC_ITS, uapi.KVM_VGIC_ITS_ADDR_TYPE): "vgic-its",
}
# KVM_ARM_SET_DEVICE_ADDR's address types of KVM_ARM_DEVICE_VGIC_V2
# (kvm_set_legacy_vgic_v2_addr(), vgic-kvm-device.c).
LEGACY_V2_FRAMES = {
    uapi.KVM_VGIC_V2_ADDR_TYPE_DIST: "vgic-v2-dist",
    uapi.KVM_VGIC_V2_ADDR_TYPE_CPU: "vgic-v2-cpu",
}


@dataclass(frozen=True)
class Frame:
    """One vGIC frame KVM took an address for."""

    type: str  # the layout's device type: "vgic-v3-dist", ...
    base: int
    device: int  # which KVM_CREATE_DEVICE (its number in the VM), -1 for KVM_ARM_SET_DEVICE_ADDR
    index: int = 0  # a redistributor region's index
    count: int | None = None  # its vCPU count; None for the legacy redistributor


@dataclass(frozen=True)
class Ioeventfd:
    number: int  # registration order in its VM, from 0
    addr: int
    length: int
    datamatch: int | None
    pio: bool


@dataclass(frozen=True)
class Zone:
    number: int  # registration order in its VM, from 0
    addr: int
    size: int
    pio: bool


@dataclass
class RecordedVM:
    """One VM, as the program left it (or as it was when the recording stopped)."""

    number: int  # 1-based, in creation order
    tgid: int
    fd: int
    vm_type: int  # KVM_CREATE_VM's argument
    memslots: dict[tuple[int, int], Memslot] = field(default_factory=dict)
    irqchip: bool = False  # KVM_CREATE_IRQCHIP
    split_irqchip: bool = False  # KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)
    pit: bool = False  # KVM_CREATE_PIT(2)
    pit_speaker: bool = False  # KVM_PIT_SPEAKER_DUMMY
    vcpus: int = 0
    device_types: list[int] = field(default_factory=list)  # KVM_CREATE_DEVICE, in order
    frames: dict[tuple[int, int, int], Frame] = field(default_factory=dict)
    ioeventfds: list[Ioeventfd] = field(default_factory=list)
    zones: list[Zone] = field(default_factory=list)
    # (request, errno, detail) -> count, in the order first seen
    refused: dict[tuple[str, str, str], int] = field(default_factory=dict)
    # KVM_SET_TSS_ADDR, KVM_SET_IDENTITY_MAP_ADDR -> the address KVM took last
    kvm_private: dict[str, int] = field(default_factory=dict)
    unread: list[str] = field(default_factory=list)  # what could not be read, in words
    _ioeventfds_made: int = 0
    _zones_made: int = 0

    def refuse(self, request: str, ret: int, detail: str) -> None:
        key = (request, errno_name(-ret), detail)
        self.refused[key] = self.refused.get(key, 0) + 1


@dataclass(frozen=True)
class _Device:
    vm: RecordedVM
    type: int
    number: int  # its place in vm.device_types


class Recorder:
    """The tracer's handler: ``vms`` holds every VM the program created, in creation order."""

    def __init__(self) -> None:
        self.vms: list[RecordedVM] = []
        self._vms: dict[tuple[int, int], RecordedVM] = {}  # (tgid, fd)
        self._devices: dict[tuple[int, int], _Device] = {}
        self._vcpus: dict[tuple[int, int], RecordedVM] = {}
        # Calls outside any VM worth telling: KVM_CREATE_VM and other calls on /dev/kvm
        # refused, and refusals on KVM fds of no VM this recording saw.
        self.notes: list[str] = []
        self._noted: dict[str, int] = {}  # note -> its place in notes
        self._noted_counts: list[int] = []

    def forked(self, parent_tgid: int, child_tgid: int) -> None:
        """fork() copies the file table: the child reaches the parent's VMs and devices
        through the same numbers."""
        copy_to_child(self._vms, parent_tgid, child_tgid)
        copy_to_child(self._devices, parent_tgid, child_tgid)
        copy_to_child(self._vcpus, parent_tgid, child_tgid)

    def vcpu_vm(self, tgid: int, fd: int) -> RecordedVM | None:
        """The VM whose KVM_CREATE_VCPU returned ``fd`` in process ``tgid`` (for a KVM_RUN on
        it), or None; the caller checks that ``fd`` still names an ``anon_inode:kvm-vcpu:N``
        file."""
        return self._vcpus.get((tgid, fd))

    def call(self, call: TracedCall) -> None:
        if call.name in DUP_CALLS:
            self._duplicated(call)
            return
        if call.name != "ioctl" or len(call.args) < 3:
            return
        number = call.args[1] & 0xFFFF_FFFF
        request = uapi.REQUEST_NAMES.get(number)
        fd = call.args[0] & 0xFFFF_FFFF
        if request == "KVM_CREATE_VM" and call.fd_target == KVM_DEVICE:
            if call.ret >= 0:
                self._created(call)
            else:
                self._note(f"KVM_CREATE_VM (type {call.args[2]:#x}) in process {call.tgid} "
                           f"refused with {errno_name(-call.ret)}: no VM.")
            return
        vm = self._vms.get((call.tgid, fd)) if call.fd_target == VM_TARGET else None
        apply = _VM_CALLS.get(request) if request is not None else None
        if vm is not None and apply is not None and request is not None:
            _reading(vm, request, call, lambda: apply(vm, call, self))
            return
        device = self._devices.get((call.tgid, fd)) if _is_device(call.fd_target) else None
        if device is not None and request == "KVM_SET_DEVICE_ATTR":
            _reading(device.vm, request, call, lambda: _device_attr(device, call))
            return
        if call.ret < 0:
            self._refused(call, number, fd)

    def _refused(self, call: TracedCall, number: int, fd: int) -> None:
        """A KVM ioctl refused that the table above does not decode: counted by name in its
        VM, or in ``notes`` when it was made on /dev/kvm or a KVM fd of no VM seen."""
        target = call.fd_target
        if target != KVM_DEVICE and not target.startswith(KVM_TARGET_PREFIX):
            return  # not KVM's: another driver's ioctl of the same type byte
        on_vcpu = target.startswith(VCPU_TARGET_PREFIX)
        name = uapi.ioctl_name(number, vcpu=on_vcpu)
        code = -call.ret
        if code == errno.EINTR or (code == errno.E2BIG and name in SIZE_QUERIES):
            return
        key = (call.tgid, fd)
        vm: RecordedVM | None = None
        if target == VM_TARGET:
            vm = self._vms.get(key)
        elif on_vcpu:
            vm = self._vcpus.get(key)
        elif target != KVM_DEVICE and key in self._devices:
            vm = self._devices[key].vm
        if vm is not None:
            vm.refuse(name, call.ret, f"on {_fd_kind(target)}" if target != VM_TARGET else "")
        elif target == KVM_DEVICE:
            self._note(f"{name} on /dev/kvm in process {call.tgid} refused with "
                       f"{errno_name(code)}.")
        else:
            self._note(f"{name} on {target} (fd {fd} of process {call.tgid}, of no VM this "
                       f"recording saw created) refused with {errno_name(code)}.")

    def _note(self, note: str) -> None:
        """``note`` in ``notes``, once, with how many times it happened when more than once."""
        place = self._noted.get(note)
        if place is None:
            self._noted[note] = len(self.notes)
            self._noted_counts.append(1)
            self.notes.append(note)
            return
        self._noted_counts[place] += 1
        self.notes[place] = f"{note[:-1]} ({self._noted_counts[place]} times)."

    def _duplicated(self, call: TracedCall) -> None:
        """dup(), dup2(), dup3() and fcntl(F_DUPFD[_CLOEXEC]) give a second number for the
        same open file (fs/file.c do_dup2(), fs/fcntl.c f_dupfd()): it reaches the same VM,
        vCPU or device, and no longer what it named before (dup2() closes that first)."""
        if call.ret < 0 or not call.fd_target.startswith(KVM_FILES):
            return
        if call.name == "fcntl" and call.args[1] & 0xFFFF_FFFF not in FCNTL_DUPS:
            return
        old, new = (call.tgid, call.args[0] & 0xFFFF_FFFF), (call.tgid, call.ret)
        _duplicate(self._vms, old, new)
        _duplicate(self._devices, old, new)
        _duplicate(self._vcpus, old, new)

    def _created(self, call: TracedCall) -> None:
        """virt/kvm/kvm_main.c kvm_dev_ioctl_create_vm(): the new VM's fd is the return."""
        vm = RecordedVM(len(self.vms) + 1, call.tgid, call.ret, call.args[2] & 0xFFFF_FFFF)
        self.vms.append(vm)
        self._vms[(call.tgid, call.ret)] = vm
        self._devices.pop((call.tgid, call.ret), None)
        self._vcpus.pop((call.tgid, call.ret), None)

    def vcpu_made(self, vm: RecordedVM, tgid: int, fd: int) -> None:
        self._vcpus[(tgid, fd)] = vm
        self._vms.pop((tgid, fd), None)
        self._devices.pop((tgid, fd), None)

    def device_made(self, vm: RecordedVM, tgid: int, fd: int, kind: int) -> None:
        vm.device_types.append(kind)
        self._devices[(tgid, fd)] = _Device(vm, kind, len(vm.device_types) - 1)
        self._vms.pop((tgid, fd), None)
        self._vcpus.pop((tgid, fd), None)


T = TypeVar("T")


def _reading(vm: RecordedVM, request: str, call: TracedCall, apply: Callable[[], None]) -> None:
    """``apply()``, which reads the tracee's memory: a structure it cannot read leaves the
    call out, said in the VM's notes, or counts a refused call without its detail."""
    try:
        apply()
    except OSError as exc:
        if call.ret < 0:
            vm.refuse(request, call.ret, "")
        else:
            vm.unread.append(f"{request}: the structure at {call.args[2]:#x} could not be "
                             f"read ({exc.strerror or exc}); the call is left out")


def _duplicate(table: dict[tuple[int, int], T], old: tuple[int, int],
               new: tuple[int, int]) -> None:
    table.pop(new, None)
    if old in table:
        table[new] = table[old]


def copy_to_child(table: dict[tuple[int, int], T], parent_tgid: int, child_tgid: int) -> None:
    """What fork() copies: every (parent_tgid, fd) entry again under the child."""
    for (tgid, fd), value in list(table.items()):
        if tgid == parent_tgid:
            table[(child_tgid, fd)] = value


def _is_device(target: str) -> bool:
    return target.startswith(DEVICE_TARGET_PREFIX) and not target.startswith(NOT_A_DEVICE)


def _fd_kind(target: str) -> str:
    """``anon_inode:kvm-vcpu:0`` -> ``vcpu 0``; ``anon_inode:kvm-arm-vgic-v3`` -> its
    device, ``kvm-arm-vgic-v3``."""
    if target.startswith(VCPU_TARGET_PREFIX):
        return "vcpu " + target[len(VCPU_TARGET_PREFIX):].lstrip(":")
    return "device " + target.removeprefix("anon_inode:")


def _read(call: TracedCall, size: int) -> bytes:
    data = call.memory(call.args[2], size)
    if len(data) < size:
        raise OSError(f"{len(data)} of {size} bytes")
    return data


def _memslot(vm: RecordedVM, call: TracedCall, recorder: Recorder) -> None:
    request = uapi.REQUEST_NAMES[call.args[1] & 0xFFFF_FFFF]
    if request == "KVM_SET_USER_MEMORY_REGION2":
        region = uapi.MemoryRegion.decode2(_read(call, uapi.MEM_REGION2.size))
    else:
        region = uapi.MemoryRegion.decode(_read(call, uapi.MEM_REGION.size))
    if call.ret < 0:
        as_id, slot = region.slot >> 16, region.slot & 0xFFFF
        where = f"as_id {as_id} " if as_id else ""
        vm.refuse(request, call.ret, f"{where}slot {slot} at {region.guest_phys_addr:#x}, "
                  f"{region.memory_size:#x} bytes")
        return
    set_memory_region(vm.memslots, region.slot, region.flags, region.guest_phys_addr,
                      region.memory_size)


def _irqchip(vm: RecordedVM, call: TracedCall, recorder: Recorder) -> None:
    """x86 kvm_arch_vm_ioctl() KVM_CREATE_IRQCHIP: kvm_pic_init(), kvm_ioapic_init()
    (arch/x86/kvm/x86.c); arm64 kvm_arch_vm_ioctl() -> kvm_vgic_create(KVM_DEV_TYPE_ARM_VGIC_V2)
    (arch/arm64/kvm/arm.c). What it makes is the architecture's (ArchSpec.record)."""
    if call.ret < 0:
        vm.refuse("KVM_CREATE_IRQCHIP", call.ret, "")
    else:
        vm.irqchip = True


def _enable_cap(vm: RecordedVM, call: TracedCall, recorder: Recorder) -> None:
    """x86 kvm_vm_ioctl_enable_cap() KVM_CAP_SPLIT_IRQCHIP: the LAPICs in the kernel, the
    IOAPIC and PIC in the VMM (arch/x86/kvm/x86.c)."""
    cap = uapi.EnableCap.decode(_read(call, uapi.ENABLE_CAP.size))
    if call.ret < 0:
        vm.refuse("KVM_ENABLE_CAP", call.ret, f"capability {cap.cap}")
    elif cap.cap == uapi.KVM_CAP_SPLIT_IRQCHIP:
        vm.split_irqchip = True


def _pit(vm: RecordedVM, call: TracedCall, recorder: Recorder) -> None:
    """x86 kvm_arch_vm_ioctl(): KVM_CREATE_PIT always has the speaker port, KVM_CREATE_PIT2
    when its flags hold KVM_PIT_SPEAKER_DUMMY (kvm_create_pit(), arch/x86/kvm/i8254.c)."""
    request = uapi.REQUEST_NAMES[call.args[1] & 0xFFFF_FFFF]
    if request == "KVM_CREATE_PIT2":
        flags = uapi.pit_flags(_read(call, uapi.PIT_CONFIG.size))
    else:
        flags = uapi.KVM_PIT_SPEAKER_DUMMY
    if call.ret < 0:
        vm.refuse(request, call.ret, "")
        return
    vm.pit = True
    vm.pit_speaker = bool(flags & uapi.KVM_PIT_SPEAKER_DUMMY)


def _vcpu(vm: RecordedVM, call: TracedCall, recorder: Recorder) -> None:
    """virt/kvm/kvm_main.c kvm_vm_ioctl_create_vcpu(): the new vCPU's fd is the return."""
    if call.ret < 0:
        vm.refuse("KVM_CREATE_VCPU", call.ret, f"vCPU id {call.args[2]}")
    else:
        vm.vcpus += 1
        recorder.vcpu_made(vm, call.tgid, call.ret)


def _ioeventfd(vm: RecordedVM, call: TracedCall, recorder: Recorder) -> None:
    """virt/kvm/eventfd.c kvm_ioeventfd(): assign adds one; KVM_IOEVENTFD_FLAG_DEASSIGN
    removes the one kvm_deassign_ioeventfd_idx() finds: same bus (PIO or MMIO), address,
    length and wildcard, and the same datamatch when it has one (ioeventfd_check_collision()
    lets at most one match; its eventfd is not compared here)."""
    args = uapi.Ioeventfd.decode(_read(call, uapi.IOEVENTFD.size))
    pio = bool(args.flags & uapi.KVM_IOEVENTFD_FLAG_PIO)
    datamatch = args.datamatch if args.flags & uapi.KVM_IOEVENTFD_FLAG_DATAMATCH else None
    deassign = bool(args.flags & uapi.KVM_IOEVENTFD_FLAG_DEASSIGN)
    if call.ret < 0:
        what = ("deassign " if deassign else "") + ("port" if pio else "MMIO")
        matched = "" if datamatch is None else f", datamatch {datamatch:#x}"
        vm.refuse("KVM_IOEVENTFD", call.ret,
                  f"{what} {args.addr:#x}, length {args.len}{matched}")
        return
    if deassign:
        for i, old in enumerate(vm.ioeventfds):
            if (old.pio, old.addr, old.length, old.datamatch) == (
                    pio, args.addr, args.len, datamatch):
                del vm.ioeventfds[i]
                break
        return
    vm.ioeventfds.append(Ioeventfd(vm._ioeventfds_made, args.addr, args.len, datamatch, pio))
    vm._ioeventfds_made += 1


def _coalesced(vm: RecordedVM, call: TracedCall, recorder: Recorder) -> None:
    """virt/kvm/coalesced_mmio.c: kvm_vm_ioctl_register_coalesced_mmio() adds a zone;
    kvm_vm_ioctl_unregister_coalesced_mmio() removes every zone of the same space (pio) that
    holds the whole range given (coalesced_mmio_in_range())."""
    request = uapi.REQUEST_NAMES[call.args[1] & 0xFFFF_FFFF]
    zone = uapi.CoalescedZone.decode(_read(call, uapi.COALESCED_ZONE.size))
    if call.ret < 0:
        space = "port" if zone.pio else "MMIO"
        vm.refuse(request, call.ret, f"{space} {zone.addr:#x}, {zone.size:#x} bytes")
        return
    pio = bool(zone.pio)
    if request == "KVM_REGISTER_COALESCED_MMIO":
        vm.zones.append(Zone(vm._zones_made, zone.addr, zone.size, pio))
        vm._zones_made += 1
        return
    end = zone.addr + zone.size
    vm.zones = [
        old for old in vm.zones
        if not (old.pio == pio and old.addr <= zone.addr and end <= old.addr + old.size)
    ]


def _create_device(vm: RecordedVM, call: TracedCall, recorder: Recorder) -> None:
    """virt/kvm/kvm_main.c kvm_ioctl_create_device(): the new device's fd, which
    kvm_vm_ioctl() copies back into the structure (read here, at the call's exit);
    KVM_CREATE_DEVICE_TEST makes none."""
    made = uapi.CreateDevice.decode(_read(call, uapi.CREATE_DEVICE.size))
    if call.ret < 0:
        vm.refuse("KVM_CREATE_DEVICE", call.ret, f"type {made.type}")
    elif not made.flags & uapi.KVM_CREATE_DEVICE_TEST:
        recorder.device_made(vm, call.tgid, made.fd, made.type)


def _device_attr(device: _Device, call: TracedCall) -> None:
    """A vGIC frame's address: group KVM_DEV_ARM_VGIC_GRP_ADDR, the u64 behind ``addr``
    (kvm_vgic_addr(), arch/arm64/kvm/vgic/vgic-kvm-device.c; vgic_its_set_attr(),
    vgic-its.c). Other groups and devices are not addresses."""
    vm = device.vm
    attr = uapi.DeviceAttr.decode(_read(call, uapi.DEVICE_ATTR.size))
    kind = VGIC_FRAMES.get((device.type, attr.attr))
    if call.ret < 0:
        vm.refuse("KVM_SET_DEVICE_ATTR", call.ret,
                  f"device type {device.type}, group {attr.group}, attribute {attr.attr}")
        return
    if attr.group != uapi.KVM_DEV_ARM_VGIC_GRP_ADDR or kind is None:
        return
    value = uapi.u64(call.memory(attr.addr, 8))
    if attr.attr == uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION:
        region = uapi.RedistRegion.unpack(value)
        frame = Frame(kind, region.base, device.number, region.index, region.count)
    else:
        frame = Frame(kind, value, device.number)
    vm.frames[(device.number, attr.attr, frame.index)] = frame


def _device_addr(vm: RecordedVM, call: TracedCall, recorder: Recorder) -> None:
    """arm64 kvm_vm_ioctl_set_device_addr() -> kvm_set_legacy_vgic_v2_addr(): a vGICv2
    frame of KVM_CREATE_IRQCHIP's vGIC (arch/arm64/kvm/arm.c, vgic/vgic-kvm-device.c)."""
    given = uapi.ArmDeviceAddr.decode(_read(call, uapi.ARM_DEVICE_ADDR.size))
    if call.ret < 0:
        vm.refuse("KVM_ARM_SET_DEVICE_ADDR", call.ret, f"id {given.id:#x} at {given.addr:#x}")
        return
    kind = LEGACY_V2_FRAMES.get(given.addr_type)
    if given.device == uapi.KVM_ARM_DEVICE_VGIC_V2 and kind is not None:
        vm.frames[(-1, given.addr_type, 0)] = Frame(kind, given.addr, -1)


def _private_addr(vm: RecordedVM, call: TracedCall, recorder: Recorder) -> None:
    """x86 kvm_arch_vm_ioctl() (arch/x86/kvm/x86.c): KVM_SET_TSS_ADDR takes the address as
    its argument (kvm_vm_ioctl_set_tss_addr()), KVM_SET_IDENTITY_MAP_ADDR a pointer to a u64
    (kvm_vm_ioctl_set_identity_map_addr()); the last one KVM took counts."""
    request = uapi.REQUEST_NAMES[call.args[1] & 0xFFFF_FFFF]
    if request == "KVM_SET_TSS_ADDR":
        address = call.args[2]
    else:
        address = uapi.u64(_read(call, uapi.U64.size))
    if call.ret < 0:
        vm.refuse(request, call.ret, f"address {address:#x}")
    else:
        vm.kvm_private[request] = address


_VM_CALLS = {
    "KVM_SET_USER_MEMORY_REGION": _memslot,
    "KVM_SET_USER_MEMORY_REGION2": _memslot,
    "KVM_CREATE_IRQCHIP": _irqchip,
    "KVM_ENABLE_CAP": _enable_cap,
    "KVM_CREATE_PIT": _pit,
    "KVM_CREATE_PIT2": _pit,
    "KVM_CREATE_VCPU": _vcpu,
    "KVM_IOEVENTFD": _ioeventfd,
    "KVM_REGISTER_COALESCED_MMIO": _coalesced,
    "KVM_UNREGISTER_COALESCED_MMIO": _coalesced,
    "KVM_CREATE_DEVICE": _create_device,
    "KVM_ARM_SET_DEVICE_ADDR": _device_addr,
    "KVM_SET_TSS_ADDR": _private_addr,
    "KVM_SET_IDENTITY_MAP_ADDR": _private_addr,
}
