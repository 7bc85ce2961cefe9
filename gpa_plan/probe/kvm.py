"""The KVM userspace API, spoken through raw ioctls (include/uapi/linux/kvm.h, Linux 7.2.13).

Only what every architecture's probe needs lives here: opening ``/dev/kvm``, VMs, vCPUs and
their ``kvm_run`` page, memslots over anonymous memory, ioeventfds, coalesced MMIO zones,
devices and capabilities. Architecture-specific calls (x86 sregs, arm64 one-regs) live in the
architecture's own probe module.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import struct

KVM_DEVICE = "/dev/kvm"
KVM_API_VERSION = 12
PAGE_SIZE = 0x1000

# --- ioctl encoding (include/uapi/asm-generic/ioctl.h) ---------------------------------------

_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2
_KVMIO = 0xAE


def ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (_KVMIO << 8) | nr


def io(nr: int) -> int:
    return ioc(_IOC_NONE, nr, 0)


def iow(nr: int, size: int) -> int:
    return ioc(_IOC_WRITE, nr, size)


def ior(nr: int, size: int) -> int:
    return ioc(_IOC_READ, nr, size)


def iowr(nr: int, size: int) -> int:
    return ioc(_IOC_READ | _IOC_WRITE, nr, size)


# --- structures --------------------------------------------------------------------------------

# struct kvm_userspace_memory_region: slot, flags, guest_phys_addr, memory_size, userspace_addr
MEM_REGION = struct.Struct("<IIQQQ")
# struct kvm_ioeventfd: datamatch, addr, len, fd, flags, pad[36]
IOEVENTFD = struct.Struct("<QQIiI36x")
# struct kvm_coalesced_mmio_zone: addr, size, pio (a union with pad)
COALESCED_ZONE = struct.Struct("<QII")
# struct kvm_create_device: type, fd, flags
CREATE_DEVICE = struct.Struct("<IiI")
# struct kvm_device_attr: flags, group, attr, addr (a pointer to the value)
DEVICE_ATTR = struct.Struct("<IIQQ")
# struct kvm_enable_cap: cap, flags, args[4], pad[64]
ENABLE_CAP = struct.Struct("<II4Q64x")

# --- ioctls ------------------------------------------------------------------------------------

KVM_GET_API_VERSION = io(0x00)
KVM_CREATE_VM = io(0x01)
KVM_CHECK_EXTENSION = io(0x03)
KVM_GET_VCPU_MMAP_SIZE = io(0x04)
KVM_CREATE_VCPU = io(0x41)
KVM_SET_USER_MEMORY_REGION = iow(0x46, MEM_REGION.size)
KVM_REGISTER_COALESCED_MMIO = iow(0x67, COALESCED_ZONE.size)
KVM_IOEVENTFD = iow(0x79, IOEVENTFD.size)
KVM_RUN = io(0x80)
KVM_ENABLE_CAP = iow(0xA3, ENABLE_CAP.size)
KVM_CREATE_DEVICE = iowr(0xE0, CREATE_DEVICE.size)
KVM_SET_DEVICE_ATTR = iow(0xE1, DEVICE_ATTR.size)
KVM_HAS_DEVICE_ATTR = iow(0xE3, DEVICE_ATTR.size)

KVM_MEM_READONLY = 1 << 1
KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0
KVM_IOEVENTFD_FLAG_PIO = 1 << 1

# Capabilities asked with KVM_CHECK_EXTENSION, by their uapi names.
CAPS = {
    "KVM_CAP_NR_MEMSLOTS": 10,
    "KVM_CAP_COALESCED_MMIO": 15,
    "KVM_CAP_IOEVENTFD": 36,
    "KVM_CAP_READONLY_MEM": 81,
    "KVM_CAP_X86_SMM": 117,
    "KVM_CAP_MULTI_ADDRESS_SPACE": 118,
    "KVM_CAP_ARM_VM_IPA_SIZE": 165,
    "KVM_CAP_ARM_NISV_TO_USER": 177,
    "KVM_CAP_SMALLER_MAXPHYADDR": 185,
}

# --- struct kvm_run (the vCPU's shared page) -------------------------------------------------

RUN_EXIT_REASON_OFFSET = 8
RUN_UNION_OFFSET = 32
RUN_MMIO = struct.Struct("<Q8sIB")  # phys_addr, data[8], len, is_write
RUN_IO = struct.Struct("<BBHIQ")  # direction, size, port, count, data_offset
KVM_EXIT_IO_OUT = 1  # RUN_IO direction of an `out` (KVM_EXIT_IO_IN is 0)
RUN_INTERNAL = struct.Struct("<II")  # suberror, ndata
RUN_FAIL_ENTRY = struct.Struct("<QI")  # hardware_entry_failure_reason, cpu

# include/uapi/linux/kvm.h KVM_EXIT_*: kvm_run->exit_reason, in order from 0 (Linux 7.2.13).
KVM_EXIT_NAMES = {
    number: f"KVM_EXIT_{name}"
    for number, name in enumerate((
        "UNKNOWN", "EXCEPTION", "IO", "HYPERCALL", "DEBUG", "HLT", "MMIO", "IRQ_WINDOW_OPEN",
        "SHUTDOWN", "FAIL_ENTRY", "INTR", "SET_TPR", "TPR_ACCESS", "S390_SIEIC", "S390_RESET",
        "DCR", "NMI", "INTERNAL_ERROR", "OSI", "PAPR_HCALL", "S390_UCONTROL", "WATCHDOG",
        "S390_TSCH", "EPR", "SYSTEM_EVENT", "S390_STSI", "IOAPIC_EOI", "HYPERV", "ARM_NISV",
        "X86_RDMSR", "X86_WRMSR", "DIRTY_RING_FULL", "AP_RESET_HOLD", "X86_BUS_LOCK", "XEN",
        "RISCV_SBI", "RISCV_CSR", "NOTIFY", "LOONGARCH_IOCSR", "MEMORY_FAULT", "TDX", "ARM_SEA",
        "ARM_LDST64B", "SNP_REQ_CERTS",
    ))
}  # fmt: skip
KVM_EXIT_IO = 2
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_ARM_NISV = 28


class KvmError(Exception):
    """KVM cannot be asked at all here (no /dev/kvm, no permission, wrong API)."""


def errno_name(code: int | None) -> str:
    return errno.errorcode.get(code or errno.EIO, str(code))


# --- calls -------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.restype = ctypes.c_int
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.ioctl.restype = ctypes.c_int
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong]
_MAP_FAILED = ctypes.c_void_p(-1).value
# The mmap module exports MAP_NORESERVE only from Python 3.13 on (asm-generic/mman.h).
_MAP_NORESERVE: int = getattr(mmap, "MAP_NORESERVE", 0x4000)


def ioctl(fd: int, request: int, arg: int | bytes | bytearray = 0) -> int:
    """One ioctl; an int argument is passed as a C unsigned long (addresses above 2**31)."""
    if isinstance(arg, int):
        result: int = _libc.ioctl(fd, request, arg)
        if result < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return result
    # A buffer argument: fcntl returns the ioctl's result for a mutable buffer (filled in
    # place) and a copy of the buffer for bytes; only the former is a count worth returning.
    if isinstance(arg, bytearray):
        return int(fcntl.ioctl(fd, request, arg, True))
    fcntl.ioctl(fd, request, arg)
    return 0


def try_ioctl(fd: int, request: int, arg: int | bytes | bytearray = 0) -> str | None:
    """None when the call succeeds, else the errno's name ("EEXIST")."""
    try:
        ioctl(fd, request, arg)
    except OSError as exc:
        return errno_name(exc.errno)
    return None


class Memory:
    """Anonymous host memory behind one memslot, at a fixed host address."""

    def __init__(self, size: int) -> None:
        self.length = max(PAGE_SIZE, -(-size // PAGE_SIZE) * PAGE_SIZE)
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE
        addr = None
        # PROT_NONE when the host will not commit that much read-write (strict overcommit):
        # KVM checks only the range when the memslot is set.
        for prot in (mmap.PROT_READ | mmap.PROT_WRITE, 0):
            addr = _libc.mmap(None, self.length, prot, flags, -1, 0)
            if addr not in (None, _MAP_FAILED):
                break
        # Whether the host may read and write it (a guest access to PROT_NONE memory makes
        # KVM_RUN fail with EFAULT).
        self.writable = prot != 0
        if addr in (None, _MAP_FAILED):
            code = ctypes.get_errno()
            raise MemoryError(f"cannot map {self.length:#x} bytes: {os.strerror(code)}")
        self.addr: int = int(addr)

    def write(self, offset: int, data: bytes) -> None:
        ctypes.memmove(self.addr + offset, data, len(data))

    def read(self, offset: int, length: int) -> bytes:
        return ctypes.string_at(self.addr + offset, length)

    def close(self) -> None:
        if self.addr:
            _libc.munmap(self.addr, self.length)
            self.addr = 0


class Kvm:
    """An open ``/dev/kvm``."""

    def __init__(self) -> None:
        try:
            self.fd = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise KvmError(f"cannot open {KVM_DEVICE}: {exc.strerror}") from exc
        version = ioctl(self.fd, KVM_GET_API_VERSION)
        if version != KVM_API_VERSION:
            os.close(self.fd)
            raise KvmError(f"KVM API version {version}, expected {KVM_API_VERSION}")
        self.vcpu_mmap_size = ioctl(self.fd, KVM_GET_VCPU_MMAP_SIZE)

    def check_extension(self, cap: int, fd: int | None = None) -> int:
        """KVM_CHECK_EXTENSION on /dev/kvm, or on a VM's fd when given; 0 when unknown."""
        try:
            return ioctl(self.fd if fd is None else fd, KVM_CHECK_EXTENSION, cap)
        except OSError:
            return 0

    def close(self) -> None:
        os.close(self.fd)


def create_vm(kvm: Kvm, vm_type: int = 0) -> int:
    return ioctl(kvm.fd, KVM_CREATE_VM, vm_type)


def set_memslot(
    vm_fd: int, slot: int, as_id: int, base: int, size: int, hva: int, readonly: bool
) -> str | None:
    """KVM_SET_USER_MEMORY_REGION: None, or the errno's name."""
    flags = KVM_MEM_READONLY if readonly else 0
    request = MEM_REGION.pack((as_id << 16) | slot, flags, base, size, hva)
    return try_ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, request)


def add_ioeventfd(
    vm_fd: int, base: int, length: int, datamatch: int | None
) -> tuple[str | None, int]:
    """KVM_IOEVENTFD for an MMIO doorbell: (errno name or None, the eventfd, -1 if refused)."""
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    flags = 0 if datamatch is None else KVM_IOEVENTFD_FLAG_DATAMATCH
    request = IOEVENTFD.pack(datamatch or 0, base, length, efd, flags)
    refused = try_ioctl(vm_fd, KVM_IOEVENTFD, request)
    if refused is not None:
        os.close(efd)
        return refused, -1
    return None, efd


def eventfd_count(efd: int) -> int:
    """How often the eventfd was signalled since the last call (0 without blocking)."""
    try:
        return os.eventfd_read(efd)
    except BlockingIOError:
        return 0


def add_coalesced_zone(vm_fd: int, base: int, size: int) -> str | None:
    return try_ioctl(vm_fd, KVM_REGISTER_COALESCED_MMIO, COALESCED_ZONE.pack(base, size, 0))


def exit_reason(run: mmap.mmap) -> int:
    reason: int = struct.unpack_from("<I", run, RUN_EXIT_REASON_OFFSET)[0]
    return reason
