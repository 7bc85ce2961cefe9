"""Ask the host's Linux KVM (x86_64) what a guest memory access becomes.

This is a test-only harness used to check gpa-plan's model of x86 outcomes
against the real kernel. It depends on the Python standard library alone and
talks to ``/dev/kvm`` through raw ioctls.

How a probe works: a fresh VM gets the caller's memslots plus one private
4 KiB read-write "code" memslot holding a few bytes of guest code. One vCPU
runs that code in 32-bit protected mode with flat 4 GiB segments and paging
off, so every guest-physical address below 4 GiB is reachable. The code
performs exactly one 4-byte access to the probed address and then writes to
I/O port ``DONE_PORT``; if the host sees that port write first, the access
completed without leaving the kernel.

The code memslot is placed automatically at the lowest page-aligned address
below 4 GiB that is clear of the caller's address-space-0 memslots, the probed
address and the fixed pages listed in ``RESERVED_RANGES``, and it takes the
lowest slot id the caller left free in address space 0. Its location is
therefore never something a probe can observe. Caller slots may cover
``RESERVED_RANGES`` too, except that on Intel hosts without unrestricted guest
KVM claims the pages at ``IDENTITY_MAP_ADDR`` for itself.

Outcomes are those of the KVM backend actually loaded (kvm_intel, kvm_amd or
another vendor module). Where a backend runs this 32-bit guest through KVM's
instruction emulator rather than hardware, data accesses follow the
emulator's rules, which differ in places from hardware paging: for example
the emulator treats any access to the APIC page at ``LAPIC_BASE`` as MMIO
even when a memslot covers it (vcpu_is_mmio_gpa() in arch/x86/kvm/x86.c).
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from gpa_plan.probe import kvm

__all__ = [
    "Ioeventfd",
    "ProbeError",
    "Slot",
    "assign_ioeventfds",
    "kvm_available",
    "probe_access",
    "set_memslots",
]

KVM_DEVICE = "/dev/kvm"
PAGE_SIZE = 0x1000
DONE_PORT = 0x1234
LAPIC_BASE = 0xFEE0_0000
IOAPIC_BASE = 0xFEC0_0000
# KVM's private pages for Intel hosts without unrestricted guest: the EPT
# identity map (VMX_EPT_IDENTITY_PAGETABLE_ADDR, made at vCPU creation) and
# the three TSS pages the harness asks for with KVM_SET_TSS_ADDR.
IDENTITY_MAP_ADDR = 0xFFFB_C000
TSS_ADDR = 0xFFFB_D000
TSS_SIZE = 3 * PAGE_SIZE

RESERVED_RANGES: tuple[tuple[int, int], ...] = (
    (IOAPIC_BASE, IOAPIC_BASE + PAGE_SIZE),
    (LAPIC_BASE, LAPIC_BASE + PAGE_SIZE),
    (IDENTITY_MAP_ADDR, TSS_ADDR + TSS_SIZE),
)
"""Half-open GPA ranges the harness never uses for its code memslot."""

ACCESS_KINDS = ("read", "write", "fetch")
_LIMIT_4G = 1 << 32
_U64 = (1 << 64) - 1

# --- KVM UAPI: structures (include/uapi/linux/kvm.h, asm/kvm.h) ------------

_MEM_REGION = kvm.MEM_REGION
# struct kvm_segment: base, limit, selector, type, present, dpl, db, s, l, g,
# avl, unusable, padding.
_SEGMENT = struct.Struct("<QIH10B")
# struct kvm_dtable: base, limit, padding[3].
_DTABLE = struct.Struct("<QH3H")
# struct kvm_sregs: cs ds es fs gs ss tr ldt, gdt idt, cr0 cr2 cr3 cr4 cr8,
# efer, apic_base, interrupt_bitmap[4].
_SREGS_SIZE = 8 * _SEGMENT.size + 2 * _DTABLE.size + 7 * 8 + 4 * 8
_SEG_CS, _SEG_DS, _SEG_ES, _SEG_FS, _SEG_GS, _SEG_SS = range(6)
_SREGS_IDT = 8 * _SEGMENT.size + _DTABLE.size
_SREGS_CR0 = 8 * _SEGMENT.size + 2 * _DTABLE.size
# struct kvm_regs: rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags.
_REGS = struct.Struct("<18Q")
_REGS_RIP, _REGS_RFLAGS = 16, 17

# The generic ioctls and structures are the probe's (gpa_plan.probe.kvm); the x86 vCPU
# register calls this harness needs are its own.
KVM_GET_API_VERSION = kvm.KVM_GET_API_VERSION
KVM_CREATE_VM = kvm.KVM_CREATE_VM
KVM_GET_VCPU_MMAP_SIZE = kvm.KVM_GET_VCPU_MMAP_SIZE
KVM_CREATE_VCPU = kvm.KVM_CREATE_VCPU
KVM_SET_USER_MEMORY_REGION = kvm.KVM_SET_USER_MEMORY_REGION
KVM_SET_TSS_ADDR = kvm.io(0x47)
KVM_CREATE_IRQCHIP = kvm.io(0x60)
KVM_RUN = kvm.KVM_RUN
KVM_GET_REGS = kvm.ior(0x81, _REGS.size)
KVM_SET_REGS = kvm.iow(0x82, _REGS.size)
KVM_GET_SREGS = kvm.ior(0x83, _SREGS_SIZE)
KVM_SET_SREGS = kvm.iow(0x84, _SREGS_SIZE)
_IOEVENTFD = kvm.IOEVENTFD
KVM_IOEVENTFD = kvm.KVM_IOEVENTFD
KVM_IOEVENTFD_FLAG_DATAMATCH = kvm.KVM_IOEVENTFD_FLAG_DATAMATCH

KVM_API_VERSION = kvm.KVM_API_VERSION
KVM_MEM_READONLY = kvm.KVM_MEM_READONLY

# struct kvm_run and its exit reasons, as the probe reads them.
_RUN_EXIT_REASON = struct.Struct("<I")
_RUN_EXIT_REASON_OFF = kvm.RUN_EXIT_REASON_OFFSET
_RUN_UNION_OFF = kvm.RUN_UNION_OFFSET
_RUN_IO = kvm.RUN_IO
_RUN_MMIO = kvm.RUN_MMIO
_RUN_FAIL_ENTRY = kvm.RUN_FAIL_ENTRY

KVM_EXIT_IO = kvm.KVM_EXIT_IO
KVM_EXIT_HLT = kvm.KVM_EXIT_HLT
KVM_EXIT_MMIO = kvm.KVM_EXIT_MMIO
KVM_EXIT_SHUTDOWN = kvm.KVM_EXIT_SHUTDOWN
KVM_EXIT_FAIL_ENTRY = kvm.KVM_EXIT_FAIL_ENTRY
KVM_EXIT_INTERNAL_ERROR = kvm.KVM_EXIT_INTERNAL_ERROR
KVM_EXIT_IO_OUT = 1
_EXIT_NAMES = kvm.KVM_EXIT_NAMES

# --- ioeventfds ----------------------------------------------------------------


@dataclass(frozen=True)
class Ioeventfd:
    """One KVM_IOEVENTFD on the MMIO bus: ``length`` 0 means any width, ``datamatch`` None
    any value (no KVM_IOEVENTFD_FLAG_DATAMATCH)."""

    addr: int
    length: int
    datamatch: int | None = None


def _assign(vm_fd: int, ioeventfd: Ioeventfd, fd: int) -> int:
    """KVM_IOEVENTFD for ``ioeventfd`` signalling ``fd``; 0 or the errno."""
    flags = 0 if ioeventfd.datamatch is None else KVM_IOEVENTFD_FLAG_DATAMATCH
    arg = _IOEVENTFD.pack(
        ioeventfd.datamatch or 0, ioeventfd.addr, ioeventfd.length, fd, flags
    )
    try:
        fcntl.ioctl(vm_fd, KVM_IOEVENTFD, arg)
    except OSError as exc:
        return exc.errno or errno.EINVAL
    return 0


def assign_ioeventfds(ioeventfds: Sequence[Ioeventfd]) -> list[str | None]:
    """Assign each ioeventfd in order on one fresh VM; for each, None when KVM took it, else
    the errno name it returned."""
    results: list[str | None] = []
    with _kvm_fd() as kvm_fd, _new_vm(kvm_fd) as vm_fd:
        fds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in ioeventfds]
        try:
            for ioeventfd, fd in zip(ioeventfds, fds, strict=True):
                err = _assign(vm_fd, ioeventfd, fd)
                results.append(_errno_name(err) if err else None)
        finally:
            for fd in fds:
                os.close(fd)
    return results


def _signalled(fd: int) -> bool:
    try:
        return os.eventfd_read(fd) > 0
    except BlockingIOError:
        return False


# --- guest code (32-bit protected mode) ------------------------------------

_ACCESS_SIZE = 4
_READ_MARKER = 0x5EED_C0DE
_WRITE_VALUE = 0xA11C_E5ED
# The store of a write of each width to a moffs32 address: mov [addr], al / ax / eax.
_STORES = {1: b"\xa2", 2: b"\x66\xa3", 4: b"\xa3"}
# mov dx, DONE_PORT ; out dx, eax
_DONE = b"\x66\xba" + struct.pack("<H", DONE_PORT) + b"\xef"
_DONE_OUT_OFFSET = len(_DONE) - 1
# ud2: with an empty IDT this triple-faults, so falling through never hangs.
_TRAP = b"\x0f\x0b"

_CR0_PE = 1 << 0
_CR0_NW = 1 << 29
_CR0_CD = 1 << 30
_RFLAGS_FIXED = 1 << 1


class ProbeError(RuntimeError):
    """KVM could not be asked, or answered with something the harness does not model."""


@dataclass(frozen=True)
class Slot:
    """One KVM_SET_USER_MEMORY_REGION request.

    ``slot`` is the memslot id within ``as_id``; ``None`` means the lowest id
    in that address space not named explicitly by any slot of the same call
    and not already handed out to an earlier ``None`` slot.
    """

    gpa: int
    size: int
    readonly: bool = False
    slot: int | None = None
    as_id: int = 0


class _Backing(kvm.Memory):
    """Anonymous host memory standing behind one memslot (gpa_plan.probe.kvm.Memory)."""

    def __init__(self, size: int) -> None:
        try:
            super().__init__(size)
        except MemoryError as err:
            raise ProbeError(f"cannot map host memory: {err}") from err


# --- helpers -----------------------------------------------------------------


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def _errno_name(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def _ioctl_int(fd: int, request: int, arg: int = 0) -> int:
    result: int = fcntl.ioctl(fd, request, arg)
    return result


def _ioctl_ulong(fd: int, request: int, arg: int) -> int:
    """ioctl with an unsigned long argument; fcntl.ioctl only passes a C int."""
    return kvm.ioctl(fd, request, arg)


def _check_slots(slots: Sequence[Slot]) -> None:
    for s in slots:
        if not isinstance(s, Slot):
            raise TypeError(f"expected Slot, got {type(s).__name__}")
        if not (0 <= s.gpa <= _U64 and 0 <= s.size <= _U64):
            raise ValueError(f"{s}: gpa and size must fit in u64")
        if not 0 <= s.as_id <= 0xFFFF or (s.slot is not None and not 0 <= s.slot <= 0xFFFF):
            raise ValueError(f"{s}: as_id and slot must fit in u16")


def _resolve_ids(slots: Sequence[Slot], extra_as0: int = 0) -> list[int]:
    """Return the u32 ``slot`` field (as_id << 16 | id) for each slot, then
    ``extra_as0`` more fresh ids in address space 0."""
    taken = {(s.as_id, s.slot) for s in slots if s.slot is not None}
    ids: list[int] = []

    def fresh(as_id: int) -> int:
        n = 0
        while (as_id, n) in taken:
            n += 1
        taken.add((as_id, n))
        return (as_id << 16) | n

    for s in slots:
        ids.append(fresh(s.as_id) if s.slot is None else (s.as_id << 16) | s.slot)
    ids.extend(fresh(0) for _ in range(extra_as0))
    return ids


def _set_region(vm_fd: int, slot_field: int, flags: int, gpa: int, size: int, hva: int) -> int:
    request = _MEM_REGION.pack(slot_field, flags, gpa, size, hva)
    try:
        fcntl.ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, request)
    except OSError as exc:
        return exc.errno or errno.EIO
    return 0


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _find_free(size: int, busy: Sequence[tuple[int, int]]) -> int:
    """Lowest page-aligned base below 4 GiB with [base, base+size) clear of busy."""
    candidates = sorted({0} | {_align_up(end, PAGE_SIZE) for _, end in busy})
    for base in candidates:
        if base + size <= _LIMIT_4G and not any(_overlaps((base, base + size), r) for r in busy):
            return base
    raise ProbeError(f"no free {size:#x}-byte range below 4 GiB for the harness code memslot")


@contextmanager
def _kvm_fd() -> Iterator[int]:
    if os.uname().machine != "x86_64":
        raise ProbeError("the KVM probe only supports x86_64 hosts")
    try:
        fd = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise ProbeError(f"cannot open {KVM_DEVICE}: {exc.strerror}") from exc
    try:
        version = _ioctl_int(fd, KVM_GET_API_VERSION)
        if version != KVM_API_VERSION:
            raise ProbeError(f"KVM API version {version}, expected {KVM_API_VERSION}")
        yield fd
    finally:
        os.close(fd)


@contextmanager
def _new_vm(kvm_fd: int) -> Iterator[int]:
    try:
        vm_fd = _ioctl_int(kvm_fd, KVM_CREATE_VM, 0)
    except OSError as exc:
        raise ProbeError(f"KVM_CREATE_VM failed: {exc.strerror}") from exc
    try:
        yield vm_fd
    finally:
        os.close(vm_fd)


# --- public API ----------------------------------------------------------------


def kvm_usable() -> bool:
    """Whether ``/dev/kvm`` opens here, whatever the host's architecture. Never raises."""
    try:
        kvm.Kvm().close()
    except kvm.KvmError:
        return False
    return True


def kvm_available() -> bool:
    """Return True when this host can run probes: it is x86_64, ``/dev/kvm``
    opens read-write and KVM_GET_API_VERSION answers 12. Never raises."""
    try:
        with _kvm_fd():
            return True
    except (ProbeError, OSError):
        return False


def set_memslots(slots: Sequence[Slot]) -> list[int]:
    """Create a fresh VM and issue KVM_SET_USER_MEMORY_REGION for each slot in
    order, each backed by its own anonymous host mapping.

    Returns one errno per slot, 0 where the call succeeded (for example
    ``errno.EEXIST`` for an overlap with an earlier accepted slot,
    ``errno.EINVAL`` for a misaligned base). A failed call leaves the VM as
    it was, so later slots are judged against the accepted ones only. No
    vCPU is created. Raises ProbeError if KVM itself is unavailable.
    """
    _check_slots(slots)
    ids = _resolve_ids(slots)
    backings: list[_Backing] = []
    try:
        with _kvm_fd() as kvm_fd, _new_vm(kvm_fd) as vm_fd:
            results: list[int] = []
            for s, slot_field in zip(slots, ids, strict=True):
                hva = 0
                if s.size:
                    backing = _Backing(s.size)
                    backings.append(backing)
                    hva = backing.addr
                flags = KVM_MEM_READONLY if s.readonly else 0
                results.append(_set_region(vm_fd, slot_field, flags, s.gpa, s.size, hva))
            return results
    finally:
        for backing in backings:
            backing.close()


def probe_access(
    slots: Sequence[Slot],
    address: int,
    access: str,
    *,
    irqchip: bool = False,
    ioeventfds: Sequence[Ioeventfd] = (),
    width: int = 4,
    value: int | None = None,
) -> str:
    """Run one guest access to guest-physical ``address`` on a fresh VM.

    ``slots`` are registered first, in order (each backed by fresh anonymous
    memory); then the harness's own code memslot; then, if ``irqchip``,
    KVM_CREATE_IRQCHIP (in-kernel PIC, IOAPIC and LAPIC); then each of
    ``ioeventfds`` (ProbeError if KVM refuses one). ``access`` is
    ``"read"`` (``mov eax, [address]``), ``"write"`` (``mov [address], eax``)
    or ``"fetch"`` (``jmp address``); reads are 4 bytes wide, writes ``width``
    bytes (1, 2 or 4: ``al``, ``ax`` or ``eax``) of ``value`` (default a fixed
    pattern).

    Returns:
        ``"memory"``: served from a memslot without an exit. For a read, the
        value read equals a marker placed in the backing memory; for a
        write, the backing memory now holds the value written; for a fetch,
        a stub placed in the backing memory ran.
        ``"io-exit"``: KVM_EXIT_MMIO reported exactly ``address`` with the
        matching direction (a fetch would report a read).
        ``"io-kernel"``: the access finished without any exit but did not
        hit the memslot backing, i.e. an in-kernel device handled it.
        ``"vm-error"``: KVM_EXIT_INTERNAL_ERROR (for example suberror 1,
        emulation failure, on a fetch from outside every memslot).
        ``"eventfd"``: the access finished without any exit and one of
        ``ioeventfds`` was signalled.

    Raises ProbeError for any other result (shutdown, failed entry, an exit at
    an unexpected address, a rejected memslot), for addresses whose access
    would need long mode (at or above 4 GiB), and for accesses that straddle
    a memslot boundary.
    """
    if access not in ACCESS_KINDS:
        raise ValueError(f"access must be one of {ACCESS_KINDS}, got {access!r}")
    _check_slots(slots)
    if width not in _STORES or (width != _ACCESS_SIZE and access != "write"):
        raise ValueError(f"width {width}: only writes take a width, of 1, 2 or 4 bytes")
    span = len(_DONE) if access == "fetch" else width
    if address < 0 or address + span > _LIMIT_4G:
        raise ProbeError(
            f"{access} at {address:#x} needs long mode: the probe runs 32-bit code, "
            f"so all {span} bytes must lie below 4 GiB"
        )
    written = _WRITE_VALUE if value is None else value
    return _Probe(slots, address, access, irqchip, ioeventfds, width, written).run()


# --- the probe ---------------------------------------------------------------


class _Probe:
    """One probe_access call: the caller's memslots, their backings, the guest."""

    def __init__(
        self,
        slots: Sequence[Slot],
        address: int,
        access: str,
        irqchip: bool,
        ioeventfds: Sequence[Ioeventfd] = (),
        width: int = _ACCESS_SIZE,
        value: int = _WRITE_VALUE,
    ) -> None:
        self.slots = list(slots)
        self.address = address
        self.access = access
        self.irqchip = irqchip
        self.ioeventfds = list(ioeventfds)
        self.width = width
        self.written = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
        self.eventfds: list[int] = []
        span = len(_DONE) if access == "fetch" else width
        self.target = (address, address + span)
        # The vCPU never enters SMM, so only address space 0 is visible to it.
        self.visible = [i for i, s in enumerate(self.slots) if s.as_id == 0 and s.size]
        self.backings: dict[int, _Backing] = {}
        self.owned: list[_Backing] = []

    def _pieces(self, gpa: int, length: int) -> Iterator[tuple[_Backing | None, int, int, int]]:
        """Yield (backing, offset in backing, offset in range, length) for each
        part of [gpa, gpa+length) that lies in a visible caller memslot."""
        for i in self.visible:
            s = self.slots[i]
            lo, hi = max(gpa, s.gpa), min(gpa + length, s.gpa + s.size)
            if lo < hi:
                yield self.backings.get(i), lo - s.gpa, lo - gpa, hi - lo

    def _poke(self, gpa: int, data: bytes) -> None:
        for backing, off, start, n in self._pieces(gpa, len(data)):
            if backing is not None:
                backing.write(off, data[start : start + n])

    def _peek(self, gpa: int, length: int) -> bytes:
        out = bytearray(length)
        for backing, off, start, n in self._pieces(gpa, length):
            if backing is not None:
                out[start : start + n] = backing.read(off, n)
        return bytes(out)

    def _map(self, size: int) -> _Backing:
        backing = _Backing(size)
        self.owned.append(backing)
        return backing

    def _guest_code(self) -> tuple[bytes, int]:
        """Return the code page contents and the offset of its final ``out``
        (-1 for a fetch, whose ``out`` lives at the target)."""
        addr = struct.pack("<I", self.address)
        if self.access == "read":
            body = b"\xa1" + addr  # mov eax, [address]
        elif self.access == "write":
            # mov eax, value ; mov [address], al / ax / eax
            value = self.written.ljust(4, b"\0")
            body = b"\xb8" + value + _STORES[self.width] + addr
        else:
            return b"\xb8" + addr + b"\xff\xe0" + _TRAP, -1  # mov eax, address ; jmp eax
        return body + _DONE + _TRAP, len(body) + _DONE_OUT_OFFSET

    def run(self) -> str:
        try:
            with _kvm_fd() as kvm_fd, _new_vm(kvm_fd) as vm_fd:
                return self._run_vm(kvm_fd, vm_fd)
        finally:
            for backing in self.owned:
                backing.close()
            for fd in self.eventfds:
                os.close(fd)

    def _run_vm(self, kvm_fd: int, vm_fd: int) -> str:
        ids = _resolve_ids(self.slots, extra_as0=1)
        for i, (s, slot_field) in enumerate(zip(self.slots, ids[:-1], strict=True)):
            hva = 0
            if s.size:
                self.backings[i] = self._map(s.size)
                hva = self.backings[i].addr
            flags = KVM_MEM_READONLY if s.readonly else 0
            err = _set_region(vm_fd, slot_field, flags, s.gpa, s.size, hva)
            if err:
                raise ProbeError(f"KVM_SET_USER_MEMORY_REGION rejected {s}: {_errno_name(err)}")

        lo, hi = self.target
        covered = sum(n for _, _, _, n in self._pieces(lo, hi - lo))
        if covered not in (0, hi - lo):
            what = "completion stub" if self.access == "fetch" else "access"
            raise ProbeError(
                f"{self.access} at {self.address:#x}: the {hi - lo}-byte {what} "
                f"({lo:#x}..{hi - 1:#x}) is only partly inside memslots"
            )
        in_memory = covered == hi - lo

        caller = [(self.slots[i].gpa, self.slots[i].gpa + self.slots[i].size) for i in self.visible]
        code_base = _find_free(PAGE_SIZE, [*caller, self.target, *RESERVED_RANGES])
        code = self._map(PAGE_SIZE)
        program, out_offset = self._guest_code()
        code.write(0, program)
        err = _set_region(vm_fd, ids[-1], 0, code_base, PAGE_SIZE, code.addr)
        if err:
            raise ProbeError(
                f"cannot add the harness code memslot at {code_base:#x}: {_errno_name(err)}"
            )

        if self.access == "fetch":
            done_out = self.address + _DONE_OUT_OFFSET
            if in_memory:
                self._poke(self.address, _DONE)
        else:
            done_out = code_base + out_offset
            if in_memory:
                self._poke(self.address, struct.pack("<I", _READ_MARKER))

        # Only Intel without unrestricted guest needs KVM's TSS pages (see
        # vmx_set_tss_addr()); skip them where they would shadow the layout.
        tss = (TSS_ADDR, TSS_ADDR + TSS_SIZE)
        if not any(_overlaps(tss, r) for r in [*caller, self.target]):
            with suppress(OSError):
                _ioctl_ulong(vm_fd, KVM_SET_TSS_ADDR, TSS_ADDR)
        if self.irqchip:
            try:
                _ioctl_int(vm_fd, KVM_CREATE_IRQCHIP)
            except OSError as exc:
                raise ProbeError(f"KVM_CREATE_IRQCHIP failed: {exc.strerror}") from exc
        for ioeventfd in self.ioeventfds:
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self.eventfds.append(fd)
            err = _assign(vm_fd, ioeventfd, fd)
            if err:
                raise ProbeError(f"KVM_IOEVENTFD refused {ioeventfd}: {_errno_name(err)}")

        try:
            vcpu_fd = _ioctl_int(vm_fd, KVM_CREATE_VCPU, 0)
        except OSError as exc:
            # EEXIST here means a caller slot covers a page KVM wanted for
            # itself (see RESERVED_RANGES).
            raise ProbeError(f"KVM_CREATE_VCPU failed: {exc.strerror}") from exc
        try:
            run_size = _ioctl_int(kvm_fd, KVM_GET_VCPU_MMAP_SIZE)
            run = mmap.mmap(vcpu_fd, run_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            try:
                try:
                    _enter_protected_mode(vcpu_fd, code_base)
                except OSError as exc:
                    raise ProbeError(f"cannot set up the vCPU: {exc.strerror}") from exc
                _kvm_run(vcpu_fd)
                return self._classify(vcpu_fd, run, in_memory, done_out)
            finally:
                run.close()
        finally:
            os.close(vcpu_fd)

    def _classify(self, vcpu_fd: int, run: mmap.mmap, in_memory: bool, done_out: int) -> str:
        (reason,) = _RUN_EXIT_REASON.unpack_from(run, _RUN_EXIT_REASON_OFF)
        where = f"{self.access} at {self.address:#x}"
        if reason == KVM_EXIT_MMIO:
            phys, data, length, is_write = _RUN_MMIO.unpack_from(run, _RUN_UNION_OFF)
            want_write = self.access == "write"
            if phys != self.address or bool(is_write) != want_write:
                raise ProbeError(
                    f"{where}: KVM_EXIT_MMIO at {phys:#x} is_write={is_write}, "
                    f"expected {self.address:#x} is_write={int(want_write)}"
                )
            if want_write and (length != self.width or data[: self.width] != self.written):
                raise ProbeError(f"{where}: KVM_EXIT_MMIO carried len={length} data={data.hex()}")
            return "io-exit"
        if reason == KVM_EXIT_INTERNAL_ERROR:
            return "vm-error"
        if reason == KVM_EXIT_IO:
            direction, size, port, count, data_off = _RUN_IO.unpack_from(run, _RUN_UNION_OFF)
            if (port, direction, size, count) != (DONE_PORT, KVM_EXIT_IO_OUT, 4, 1):
                raise ProbeError(f"{where}: unexpected port I/O exit on port {port:#x}")
            rip = _REGS.unpack(_get(vcpu_fd, KVM_GET_REGS, _REGS.size))[_REGS_RIP]
            # On the VMX/SVM fast path kvm_fast_pio_out() leaves RIP on the OUT
            # (complete_fast_pio_out() retires it on the next KVM_RUN); when
            # the instruction emulator ran the OUT, x86_emulate_instruction()
            # has already written back the next RIP.
            if rip not in (done_out, done_out + 1):
                raise ProbeError(
                    f"{where}: completion port written from rip {rip:#x}, "
                    f"expected the out at {done_out:#x}"
                )
            if self.access == "fetch":
                return "memory"
            if any([_signalled(fd) for fd in self.eventfds]):
                return "eventfd"
            if self.access == "read":
                (value,) = struct.unpack_from("<I", run, data_off)
                return "memory" if in_memory and value == _READ_MARKER else "io-kernel"
            if in_memory and self._peek(self.address, self.width) == self.written:
                return "memory"
            return "io-kernel"
        detail = ""
        if reason == KVM_EXIT_FAIL_ENTRY:
            hw_reason, cpu = _RUN_FAIL_ENTRY.unpack_from(run, _RUN_UNION_OFF)
            detail = f" (hardware_entry_failure_reason={hw_reason:#x}, cpu={cpu})"
        name = _EXIT_NAMES.get(reason, f"exit reason {reason}")
        raise ProbeError(f"{where}: unexpected {name}{detail}")


def _get(fd: int, request: int, size: int) -> bytearray:
    buf = bytearray(size)
    fcntl.ioctl(fd, request, buf, True)
    return buf


def _enter_protected_mode(vcpu_fd: int, entry: int) -> None:
    """Flat 32-bit protected mode, paging off, interrupts off, empty IDT."""
    sregs = _get(vcpu_fd, KVM_GET_SREGS, _SREGS_SIZE)
    # base, limit, selector, type, present, dpl, db, s, l, g, avl, unusable, pad
    code_seg = (0, 0xFFFF_FFFF, 0x08, 0x0B, 1, 0, 1, 1, 0, 1, 0, 0, 0)
    data_seg = (0, 0xFFFF_FFFF, 0x10, 0x03, 1, 0, 1, 1, 0, 1, 0, 0, 0)
    _SEGMENT.pack_into(sregs, _SEG_CS * _SEGMENT.size, *code_seg)
    for seg in (_SEG_DS, _SEG_ES, _SEG_FS, _SEG_GS, _SEG_SS):
        _SEGMENT.pack_into(sregs, seg * _SEGMENT.size, *data_seg)
    # A zero-limit IDT turns any stray exception into a triple fault
    # (KVM_EXIT_SHUTDOWN) instead of a jump through garbage.
    _DTABLE.pack_into(sregs, _SREGS_IDT, 0, 0, 0, 0, 0)
    (cr0,) = struct.unpack_from("<Q", sregs, _SREGS_CR0)
    struct.pack_into("<Q", sregs, _SREGS_CR0, (cr0 | _CR0_PE) & ~(_CR0_CD | _CR0_NW))
    fcntl.ioctl(vcpu_fd, KVM_SET_SREGS, bytes(sregs))

    regs = [0] * 18
    regs[_REGS_RIP] = entry
    regs[_REGS_RFLAGS] = _RFLAGS_FIXED
    fcntl.ioctl(vcpu_fd, KVM_SET_REGS, _REGS.pack(*regs))


def _kvm_run(vcpu_fd: int) -> None:
    for _ in range(100):
        try:
            fcntl.ioctl(vcpu_fd, KVM_RUN, 0)
            return
        except InterruptedError:
            continue
        except OSError as exc:
            raise ProbeError(f"KVM_RUN failed: {exc.strerror}") from exc
    raise ProbeError("KVM_RUN kept being interrupted by signals")
