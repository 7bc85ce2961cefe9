"""The x86_64 probe: a 64-bit long-mode guest that reaches any guest-physical address.

The guest's own memslot (the plan's ``probe_area``, at least `AREA_SIZE` bytes) holds its
code, a GDT, an IDT whose 256 gates all lead to a handler that reports the vector, its error
code, the faulting RIP and CR2 on I/O port `EXCEPTION_PORT`, a stack and 4-level page tables.
The area is identity-mapped (at `AREA_FALLBACK_VA` when its GPA is not a canonical address).
Each probe's GPA page (and the next one, for an access that crosses a page boundary) is mapped
at a fixed canonical window, `WINDOW_VA` (the last 512 GiB of the upper half), by the guest
itself: its first instructions write the two PTEs into the window's page table and ``invlpg``
both pages, so the mapping is
right whatever the backend's MMU caches (a shadow MMU sees the guest's own write). A GPA is
therefore reached through paging up to 2**52, at or above 2**47 too, where identity mapping
cannot go.

The guest's MAXPHYADDR (CPUID 0x80000008 EAX[7:0]) is the plan's ``pa_bits`` when the host
supports that many, else the host's (``Guest.facts``). A GPA at or beyond it sets reserved
bits in its PTE: the access takes #PF with the RSVD bit in the error code (KVM's walker,
FNAME(walk_addr_generic) in arch/x86/kvm/mmu/paging_tmpl.h, or the CPU), reported as
guest-exception. A MAXPHYADDR below the host's is enforced only where KVM says
KVM_CAP_SMALLER_MAXPHYADDR (shadow paging; EPT with kvm_intel's allow_smaller_maxphyaddr):
elsewhere the CPU walks with the host's and the access goes on to the GPA. ``facts`` says which.

Completion is reported with ``out``: a read sends the value it read (an 8-byte read in two
halves), a write and the exception handler send one byte. A fetch jumps to the address, seeded
with a one-byte ``out`` to `FETCH_PORT` (`FETCH_SEED`): that port written means the fetch ran
from memory.
"""

from __future__ import annotations

import mmap
import struct
from typing import Any

from . import kvm
from .plan import ProbeResult
from .run import Deadline, GuestError, VmState, deadline, probe_result

# --- UAPI (include/uapi/linux/kvm.h, arch/x86/include/uapi/asm/kvm.h) -------------------------

# struct kvm_segment: base, limit, selector, type, present, dpl, db, s, l, g, avl, unusable, pad
_SEGMENT = struct.Struct("<QIH10B")
# struct kvm_dtable: base, limit, padding[3]
_DTABLE = struct.Struct("<QH3H")
# struct kvm_sregs: 8 segments, gdt, idt, cr0 cr2 cr3 cr4 cr8 efer apic_base, bitmap[4]
_SREGS_SIZE = 8 * _SEGMENT.size + 2 * _DTABLE.size + 7 * 8 + 4 * 8
_SREGS_GDT = 8 * _SEGMENT.size
_SREGS_IDT = _SREGS_GDT + _DTABLE.size
_SREGS_CRS = _SREGS_IDT + _DTABLE.size
_CRS = struct.Struct("<6Q")  # cr0 cr2 cr3 cr4 cr8 efer
# struct kvm_regs: rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags
_REGS = struct.Struct("<18Q")
_RAX, _RBX, _RCX, _RDX, _RSI, _RDI, _RSP, _RBP, _R8, _R9, _R10, _R11 = range(12)
_RIP, _RFLAGS = 16, 17
# struct kvm_cpuid2 {nent, padding; entries[]}, kvm_cpuid_entry2 {function, index, flags,
# eax, ebx, ecx, edx, padding[3]}
_CPUID2 = struct.Struct("<II")
_CPUID_ENTRY = struct.Struct("<7I12x")
_CPUID_MAX = 256  # KVM_MAX_CPUID_ENTRIES (arch/x86/include/asm/kvm_host.h)

KVM_GET_SUPPORTED_CPUID = kvm.iowr(0x05, _CPUID2.size)
KVM_SET_TSS_ADDR = kvm.io(0x47)
KVM_SET_IDENTITY_MAP_ADDR = kvm.iow(0x48, 8)
KVM_CREATE_IRQCHIP = kvm.io(0x60)
KVM_GET_REGS = kvm.ior(0x81, _REGS.size)
KVM_SET_REGS = kvm.iow(0x82, _REGS.size)
KVM_GET_SREGS = kvm.ior(0x83, _SREGS_SIZE)
KVM_SET_SREGS = kvm.iow(0x84, _SREGS_SIZE)
KVM_SET_CPUID2 = kvm.iow(0x90, _CPUID2.size)
KVM_COALESCED_MMIO_PAGE_OFFSET = 2
KVM_INTERNAL_ERROR_EMULATION = 1

# KVM_CREATE_VM type: KVM_X86_DEFAULT_VM.
VM_TYPE = lambda plan: 0  # noqa: E731 -- the interface asks for a callable

# --- the guest's layout ------------------------------------------------------------------------

PAGE = kvm.PAGE_SIZE
AREA_PAGES = 16
AREA_SIZE = AREA_PAGES * PAGE
"""The smallest probe_area the guest fits in."""
_CODE, _STUBS, _IDT, _GDT, _STACK, _TABLES = 0, 1, 2, 3, 4, 5
WINDOW_VA = 0xFFFF_FF80_0000_0000  # upper half: never an area VA
AREA_FALLBACK_VA = 0x0000_0040_0000_0000
_CANONICAL_LOW = 1 << 47
_PA_LIMIT = 1 << 52  # a PTE's address field ends at bit 51
_PTE_P, _PTE_RW = 1 << 0, 1 << 1

# I/O ports the guest reports on; no in-kernel device claims them.
DONE_PORT = 0x1230
READ_PORT = 0x1234
READ_HIGH_PORT = 0x1238
EXCEPTION_PORT = 0x123C
FETCH_PORT = 0x1240
# What a fetch finds at its address in memory: ``out dx, al``, dx = FETCH_PORT. Not int3: a
# backend that runs guest code through KVM's instruction emulator cannot deliver it in long
# mode (emulate_int() in arch/x86/kvm/emulate.c handles real mode only).
FETCH_SEED = b"\xee"

_CR0_PE, _CR0_ET, _CR0_NW, _CR0_CD, _CR0_PG = 1 << 0, 1 << 4, 1 << 29, 1 << 30, 1 << 31
_CR4_PAE = 1 << 5
_EFER_LME, _EFER_LMA = 1 << 8, 1 << 10
_RFLAGS_FIXED = 1 << 1
_ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})
_VECTOR_NAMES = {
    0: "#DE",
    1: "#DB",
    2: "NMI",
    3: "#BP",
    4: "#OF",
    5: "#BR",
    6: "#UD",
    7: "#NM",
    8: "#DF",
    10: "#TS",
    11: "#NP",
    12: "#SS",
    13: "#GP",
    14: "#PF",
    16: "#MF",
    17: "#AC",
    18: "#MC",
    19: "#XM",
    20: "#VE",
    21: "#CP",
    28: "#HV",
    29: "#VC",
    30: "#SX",
}
_PF_RSVD = 1 << 3
_MAX_EXITS = 16
_RUN_SECONDS = 2.0


def _mov_dx(port: int) -> bytes:
    return b"\x66\xba" + struct.pack("<H", port)


_OUT_EAX, _OUT_AL, _HANG = b"\xef", b"\xee", b"\xeb\xfe"
_REPORT_READ = _mov_dx(READ_PORT) + _OUT_EAX + _HANG
_REPORT_READ8 = (
    _mov_dx(READ_PORT)
    + _OUT_EAX
    + b"\x48\xc1\xe8\x20"  # shr rax, 32
    + _mov_dx(READ_HIGH_PORT)
    + _OUT_EAX
    + _HANG
)
_REPORT_DONE = _mov_dx(DONE_PORT) + _OUT_AL + _HANG
# Each access, with rdi = the address's window VA and rsi = the value to write.
_ROUTINES = {
    ("read", 1): b"\x0f\xb6\x07" + _REPORT_READ,  # movzx eax, byte [rdi]
    ("read", 2): b"\x0f\xb7\x07" + _REPORT_READ,  # movzx eax, word [rdi]
    ("read", 4): b"\x8b\x07" + _REPORT_READ,  # mov eax, [rdi]
    ("read", 8): b"\x48\x8b\x07" + _REPORT_READ8,  # mov rax, [rdi]
    ("write", 1): b"\x40\x88\x37" + _REPORT_DONE,  # mov [rdi], sil
    ("write", 2): b"\x66\x89\x37" + _REPORT_DONE,  # mov [rdi], si
    ("write", 4): b"\x89\x37" + _REPORT_DONE,  # mov [rdi], esi
    ("write", 8): b"\x48\x89\x37" + _REPORT_DONE,  # mov [rdi], rsi
    ("fetch", 0): _mov_dx(FETCH_PORT) + b"\xff\xe7",  # jmp rdi
}
# Entry: map the window (r10 = the PTE's VA, r8/r9 = the two PTEs), then jump to r11.
_MAP_WINDOW = (
    b"\x4d\x89\x02"  # mov [r10], r8
    b"\x4d\x89\x4a\x08"  # mov [r10 + 8], r9
    b"\x0f\x01\x3f"  # invlpg [rdi]
    b"\x0f\x01\xbf\x00\x10\x00\x00"  # invlpg [rdi + 0x1000]
    b"\x41\xff\xe3"  # jmp r11
)
# Every IDT stub pushes (0 when the CPU pushed no error code and) its vector, then jumps here.
_EXCEPTION_HANDLER = (
    b"\x58"  # pop rax: vector
    b"\x5b"  # pop rbx: error code
    b"\x48\x8b\x0c\x24"  # mov rcx, [rsp]: RIP
    b"\x41\x0f\x20\xd0" + _mov_dx(EXCEPTION_PORT) + _OUT_AL + _HANG  # mov r8, cr2
)
_STUB_SIZE = 16


def _code_page() -> tuple[bytes, dict[tuple[str, int], int], int, int]:
    """The code page, the offset of each access routine, of the entry and of the handler."""
    code = bytearray(_MAP_WINDOW)
    offsets = {}
    for key, routine in _ROUTINES.items():
        offsets[key] = len(code)
        code += routine
    handler = len(code)
    code += _EXCEPTION_HANDLER
    return bytes(code), offsets, 0, handler


_CODE_BYTES, _ROUTINE_OFFSETS, _ENTRY_OFFSET, _HANDLER_OFFSET = _code_page()


def _stubs(stubs_va: int, handler_va: int) -> bytes:
    out = bytearray()
    for vector in range(256):
        stub = b"" if vector in _ERROR_CODE_VECTORS else b"\x6a\x00"  # push 0
        stub += b"\x68" + struct.pack("<I", vector)  # push vector
        after_jmp = stubs_va + len(out) + len(stub) + 5
        stub += b"\xe9" + struct.pack("<i", handler_va - after_jmp)  # jmp handler
        out += stub.ljust(_STUB_SIZE, b"\xcc")
    return bytes(out)


def _idt(stubs_va: int) -> bytes:
    """256 64-bit interrupt gates (type 0xE, present, DPL 0) on code selector 0x08."""
    out = bytearray()
    for vector in range(256):
        target = stubs_va + vector * _STUB_SIZE
        out += struct.pack(
            "<HHBBHII",
            target & 0xFFFF,
            0x08,
            0,
            0x8E,
            (target >> 16) & 0xFFFF,
            target >> 32,
            0,
        )
    return bytes(out)


# null, 64-bit code (selector 0x08), flat data (selector 0x10)
_GDT_BYTES = struct.pack("<3Q", 0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF)


# --- the architecture's steps ---------------------------------------------------------------


def arch_step(state: VmState, step: dict[str, Any]) -> Any:
    op = step.get("op")
    if op == "irqchip":
        return kvm.try_ioctl(state.vm_fd, KVM_CREATE_IRQCHIP)
    if op == "split_irqchip":
        # KVM_CAP_SPLIT_IRQCHIP (121): in-kernel LAPICs, the IOAPIC left to userspace; args[0]
        # is the IOAPIC's routes (24, as QEMU and cloud-hypervisor give).
        request = kvm.ENABLE_CAP.pack(121, 0, int(step.get("routes", 24)), 0, 0, 0)
        return kvm.try_ioctl(state.vm_fd, kvm.KVM_ENABLE_CAP, request)
    if op == "tss":
        return kvm.try_ioctl(state.vm_fd, KVM_SET_TSS_ADDR, int(step["addr"]))
    if op == "identity_map":
        return kvm.try_ioctl(
            state.vm_fd, KVM_SET_IDENTITY_MAP_ADDR, struct.pack("<Q", step["addr"])
        )
    return NotImplemented


# --- the guest ---------------------------------------------------------------------------------


class _PageTables:
    """4-level page tables built in the area's pages from `_TABLES` on."""

    def __init__(self, state: VmState, base: int, va: int, pages: int) -> None:
        self.state, self.base, self.va = state, base, va
        self.next_page = _TABLES
        self.pages = pages
        self.root = self._table()

    def _table(self) -> int:
        if self.next_page >= self.pages:
            raise GuestError(
                f"the probe area is too small for the x86_64 guest's page tables: give it "
                f"at least {AREA_SIZE:#x} bytes"
            )
        gpa = self.base + self.next_page * PAGE
        self.next_page += 1
        return gpa

    def map(self, va: int, pte: int) -> int:
        """Map the 4 KiB page at ``va`` with ``pte``; returns the PTE's GPA."""
        table = self.root
        for shift in (39, 30, 21):
            entry_gpa = table + ((va >> shift) & 0x1FF) * 8
            (entry,) = struct.unpack("<Q", self.state.peek(entry_gpa, 8))
            if not entry & _PTE_P:
                entry = self._table() | _PTE_P | _PTE_RW
                self.state.poke(entry_gpa, struct.pack("<Q", entry))
            table = entry & ~0xFFF & (_PA_LIMIT - 1)
        pte_gpa = table + ((va >> 12) & 0x1FF) * 8
        self.state.poke(pte_gpa, struct.pack("<Q", pte))
        return pte_gpa


def _get(fd: int, request: int, size: int) -> bytearray:
    buf = bytearray(size)
    kvm.ioctl(fd, request, buf)
    return buf


class Guest:
    """One vCPU in long mode over the probe area; `run` makes one probe's access."""

    def __init__(self, state: VmState, plan: dict[str, Any]) -> None:
        area = plan["probe_area"]
        self.state = state
        self.base, size = int(area["base"]), int(area["size"])
        if self.base % PAGE or size < AREA_SIZE:
            raise GuestError(
                f"the probe area at {self.base:#x} (+{size:#x}) must be 4 KiB aligned and at "
                f"least {AREA_SIZE:#x} bytes"
            )
        self.usable = True
        # After an emulation failure the vCPU runs on once its registers are set again; the
        # segment and control registers are set too, in case the emulator left them changed.
        self._sregs_stale = False
        state.add_own_memslot(self.base, AREA_SIZE)
        self.area_va = self.base if self.base + AREA_SIZE <= _CANONICAL_LOW else AREA_FALLBACK_VA
        self.pa_bits, host_bits = self._cpuid_bits(plan)
        # KVM_CAP_SMALLER_MAXPHYADDR: whether KVM makes a GPA between the guest's MAXPHYADDR
        # and the host's fault as reserved (kvm_vm_ioctl_check_extension(), x86.c).
        smaller = state.kvm.check_extension(kvm.CAPS["KVM_CAP_SMALLER_MAXPHYADDR"])
        self.facts: dict[str, Any] = {
            "maxphyaddr": self.pa_bits,
            "host_maxphyaddr": host_bits,
            "smaller_maxphyaddr": bool(smaller),
        }
        if self.base + AREA_SIZE > 1 << self.pa_bits:
            raise GuestError(
                f"the probe area at {self.base:#x} lies beyond the guest's "
                f"{self.pa_bits}-bit physical address space"
            )
        self._write_area()
        if not state.vcpu_fds:
            refused = state.create_vcpus(1)
            if refused is not None:
                raise GuestError(f"KVM_CREATE_VCPU was refused with {refused}")
        self.vcpu_fd = state.vcpu_fds[0]
        try:
            self.run_map = mmap.mmap(
                self.vcpu_fd,
                state.kvm.vcpu_mmap_size,
                mmap.MAP_SHARED,
                mmap.PROT_READ | mmap.PROT_WRITE,
            )
        except OSError as exc:
            raise GuestError(f"cannot map the vCPU's kvm_run: {exc.strerror}") from exc
        state.attach_ring(self.run_map, KVM_COALESCED_MMIO_PAGE_OFFSET)
        try:
            kvm.ioctl(self.vcpu_fd, KVM_SET_CPUID2, bytearray(self.cpuid))
            self._set_sregs()
        except OSError as exc:
            self.run_map.close()
            raise GuestError(f"cannot put the vCPU in long mode: {exc.strerror}") from exc

    # --- set-up --------------------------------------------------------------------------------

    def _cpuid_bits(self, plan: dict[str, Any]) -> tuple[int, int]:
        """Build the CPUID table (self.cpuid) from KVM's supported one, with MAXPHYADDR set;
        returns (the guest's MAXPHYADDR, the host's)."""
        buf = bytearray(_CPUID2.size + _CPUID_MAX * _CPUID_ENTRY.size)
        _CPUID2.pack_into(buf, 0, _CPUID_MAX, 0)
        try:
            kvm.ioctl(self.state.kvm.fd, KVM_GET_SUPPORTED_CPUID, buf)
        except OSError as exc:
            raise GuestError(f"KVM_GET_SUPPORTED_CPUID failed: {exc.strerror}") from exc
        nent = _CPUID2.unpack_from(buf, 0)[0]
        host_bits = 36  # the architectural default without leaf 0x80000008
        wanted = int(plan.get("vm", {}).get("pa_bits", 0)) or 52
        used = host_bits
        for n in range(nent):
            offset = _CPUID2.size + n * _CPUID_ENTRY.size
            function, index, flags, eax, ebx, ecx, edx = _CPUID_ENTRY.unpack_from(buf, offset)
            if function == 0x8000_0008:
                host_bits = eax & 0xFF
                used = min(wanted, host_bits)
                eax = (eax & ~0xFF) | used
                _CPUID_ENTRY.pack_into(buf, offset, function, index, flags, eax, ebx, ecx, edx)
        self.cpuid = bytes(buf[: _CPUID2.size + nent * _CPUID_ENTRY.size])
        return used, host_bits

    def _va(self, page: int) -> int:
        return self.area_va + page * PAGE

    def _write_area(self) -> None:
        poke, base = self.state.poke, self.base
        poke(base + _CODE * PAGE, _CODE_BYTES)
        poke(base + _STUBS * PAGE, _stubs(self._va(_STUBS), self._va(_CODE) + _HANDLER_OFFSET))
        poke(base + _IDT * PAGE, _idt(self._va(_STUBS)))
        poke(base + _GDT * PAGE, _GDT_BYTES)
        tables = _PageTables(self.state, base, self.area_va, AREA_PAGES)
        for page in range(AREA_PAGES):
            tables.map(self._va(page), (base + page * PAGE) | _PTE_P | _PTE_RW)
        self.cr3 = tables.root
        # The window's two PTEs: map them now (non-present) so their table exists.
        tables.map(WINDOW_VA + PAGE, 0)
        pte_gpa = tables.map(WINDOW_VA, 0)
        self.window_pte_va = self.area_va + (pte_gpa - base)

    def _set_sregs(self) -> None:
        sregs = _get(self.vcpu_fd, KVM_GET_SREGS, _SREGS_SIZE)
        code = (0, 0xFFFF_FFFF, 0x08, 0x0B, 1, 0, 0, 1, 1, 1, 0, 0, 0)
        data = (0, 0xFFFF_FFFF, 0x10, 0x03, 1, 0, 1, 1, 0, 1, 0, 0, 0)
        _SEGMENT.pack_into(sregs, 0, *code)
        for index in (1, 2, 3, 4, 5):  # ds es fs gs ss
            _SEGMENT.pack_into(sregs, index * _SEGMENT.size, *data)
        _DTABLE.pack_into(sregs, _SREGS_GDT, self._va(_GDT), len(_GDT_BYTES) - 1, 0, 0, 0)
        _DTABLE.pack_into(sregs, _SREGS_IDT, self._va(_IDT), 256 * 16 - 1, 0, 0, 0)
        cr0, _, _, cr4, cr8, efer = _CRS.unpack_from(sregs, _SREGS_CRS)
        cr0 = (cr0 | _CR0_PE | _CR0_ET | _CR0_PG) & ~(_CR0_CD | _CR0_NW)
        _CRS.pack_into(
            sregs,
            _SREGS_CRS,
            cr0,
            0,
            self.cr3,
            cr4 | _CR4_PAE,
            cr8,
            efer | _EFER_LME | _EFER_LMA,
        )
        kvm.ioctl(self.vcpu_fd, KVM_SET_SREGS, bytes(sregs))
        self.sregs = bytes(sregs)

    def close(self) -> None:
        self.run_map.close()

    # --- one probe -----------------------------------------------------------------------------

    def _pte(self, gpa: int) -> int:
        return (gpa & ~0xFFF) | _PTE_P | _PTE_RW

    def run(self, probe: Any) -> ProbeResult:
        address, access, width = int(probe["address"]), probe["access"], int(probe["width"])
        span = 1 if access == "fetch" else width
        if (access, 0 if access == "fetch" else width) not in _ROUTINES:
            return probe_result(probe, "other", f"no {width}-byte {access} on x86_64")
        if address + span > _PA_LIMIT:
            return probe_result(
                probe, "other", "x86_64 paging reaches guest-physical addresses below 2**52 only"
            )
        if address < self.base + AREA_SIZE and self.base < address + span:
            return probe_result(probe, "other", "the address is in the probe's own memslot")
        mask = (1 << (8 * width)) - 1
        value = int(probe["value"]) & mask
        seed = {"read": value, "write": ~value & mask}
        if access == "fetch":
            self.state.poke(address, FETCH_SEED)
        else:
            self.state.poke(address, seed[access].to_bytes(width, "little"))
        self.state.quiet()
        crosses = (address & 0xFFF) + span > PAGE
        va = WINDOW_VA + (address & 0xFFF)
        regs = [0] * 18
        regs[_RDI], regs[_RSI] = va, value
        regs[_R8] = self._pte(address)
        regs[_R9] = self._pte(address + PAGE) if crosses else 0
        regs[_R10] = self.window_pte_va
        regs[_R11] = self._va(_CODE) + _ROUTINE_OFFSETS[(access, 0 if access == "fetch" else width)]
        regs[_RSP] = self._va(_STACK + 1)
        regs[_RIP] = self._va(_CODE) + _ENTRY_OFFSET
        regs[_RFLAGS] = _RFLAGS_FIXED
        try:
            if self._sregs_stale:
                self._sregs_stale = False
                kvm.ioctl(self.vcpu_fd, KVM_SET_SREGS, self.sregs)
            kvm.ioctl(self.vcpu_fd, KVM_SET_REGS, _REGS.pack(*regs))
        except OSError as exc:
            self.usable = False
            return probe_result(probe, "other", f"cannot reset the vCPU: {exc.strerror}")
        return self._observe(probe, address, access, width, value)

    def _observe(
        self, probe: Any, address: int, access: str, width: int, value: int
    ) -> ProbeResult:
        with deadline(_RUN_SECONDS) as bound:
            return self._exits(probe, address, access, width, value, bound)

    def _exits(
        self, probe: Any, address: int, access: str, width: int, value: int, bound: Deadline
    ) -> ProbeResult:
        run = self.run_map
        mmio: ProbeResult | None = None
        read_low: int | None = None
        for _ in range(_MAX_EXITS):
            try:
                kvm.ioctl(self.vcpu_fd, kvm.KVM_RUN)
            except InterruptedError:
                if not bound.expired:
                    continue  # another signal: the guest goes on
                self.usable = False
                return probe_result(
                    probe, "other", f"the guest ran {_RUN_SECONDS:g} s without finishing"
                )
            except OSError as exc:
                self.usable = False
                return probe_result(
                    probe, "run-error", f"KVM_RUN failed with {kvm.errno_name(exc.errno)}"
                )
            reason = kvm.exit_reason(run)
            if reason == kvm.KVM_EXIT_MMIO:
                phys, data, length, is_write = kvm.RUN_MMIO.unpack_from(run, kvm.RUN_UNION_OFFSET)
                if mmio is None:
                    mmio = self._mmio(
                        probe, address, access, width, value, phys, data, length, bool(is_write)
                    )
                if not is_write:
                    # Answer the read with the marker's complement: the guest finishes.
                    struct.pack_into("<Q", run, kvm.RUN_UNION_OFFSET + 8, ~value & (2**64 - 1))
                continue
            if reason == kvm.KVM_EXIT_IO:
                _, _, port, _, data_offset = kvm.RUN_IO.unpack_from(run, kvm.RUN_UNION_OFFSET)
                if port == READ_PORT and read_low is None and access == "read":
                    read_low = struct.unpack_from("<I", run, data_offset)[0]
                    if width == 8:
                        continue
                    return mmio or self.state.finish(probe, read_low)
                if port == READ_HIGH_PORT and read_low is not None:
                    high = struct.unpack_from("<I", run, data_offset)[0]
                    return mmio or self.state.finish(probe, read_low | high << 32)
                if port == DONE_PORT and access == "write":
                    return mmio or self.state.finish(probe, None)
                if port == FETCH_PORT and access == "fetch":
                    return probe_result(probe, "memory", "the fetch ran the seeded out")
                if port == EXCEPTION_PORT:
                    return self._exception(probe)
                self.usable = False
                return probe_result(probe, "other", f"unexpected port I/O on {port:#x}")
            return self._stopped(probe, reason)
        self.usable = False
        return probe_result(probe, "other", f"more than {_MAX_EXITS} exits for one access")

    def _mmio(
        self,
        probe: Any,
        address: int,
        access: str,
        width: int,
        value: int,
        phys: int,
        data: bytes,
        length: int,
        is_write: bool,
    ) -> ProbeResult:
        direction = "write" if is_write else "read"
        made = "write" if access == "write" else "read"
        if (phys, length, direction) != (address, width, made):
            return probe_result(
                probe,
                "other",
                f"KVM_EXIT_MMIO {direction} of {length} bytes at {phys:#x}, not the "
                f"{width}-byte {access} at {address:#x}",
            )
        detail = f"KVM_EXIT_MMIO {direction} len {length} at {phys:#x}"
        if is_write:
            written = int.from_bytes(data[:length], "little")
            detail += f" data {written:#x}"
            if written != value:
                return probe_result(probe, "other", detail + f", not the value {value:#x}")
        return probe_result(probe, "mmio-exit", detail)

    def _exception(self, probe: Any) -> ProbeResult:
        regs = _REGS.unpack(_get(self.vcpu_fd, KVM_GET_REGS, _REGS.size))
        vector, error, rip, cr2 = regs[_RAX], regs[_RBX], regs[_RCX], regs[_R8]
        name = _VECTOR_NAMES.get(vector, "vector")
        detail = f"vector {vector} ({name}) error code {error:#x} at rip {rip:#x}"
        if vector == 14:
            detail += f" cr2 {cr2:#x}" + (" (RSVD)" if error & _PF_RSVD else "")
        return probe_result(probe, "guest-exception", detail)

    def _stopped(self, probe: Any, reason: int) -> ProbeResult:
        run = self.run_map
        self.usable = False
        name = kvm.KVM_EXIT_NAMES.get(reason, f"exit reason {reason}")
        if reason == kvm.KVM_EXIT_INTERNAL_ERROR:
            suberror, _ = kvm.RUN_INTERNAL.unpack_from(run, kvm.RUN_UNION_OFFSET)
            # handle_emulation_failure() (arch/x86/kvm/x86.c) queues a #UD and exits; the next
            # KVM_SET_REGS drops it (__set_regs(), arch/x86/kvm/regs.c), so the vCPU serves
            # the next probe, as the tests check. Other suberrors may leave an event half
            # delivered: a fresh VM then.
            emulation = suberror == KVM_INTERNAL_ERROR_EMULATION
            self.usable, self._sregs_stale = emulation, True
            what = " (emulation failure)" if emulation else ""
            return probe_result(probe, "internal-error", f"suberror {suberror}{what}")
        if reason == kvm.KVM_EXIT_FAIL_ENTRY:
            hw, _ = kvm.RUN_FAIL_ENTRY.unpack_from(run, kvm.RUN_UNION_OFFSET)
            return probe_result(probe, "other", f"{name}, hardware reason {hw:#x}")
        return probe_result(probe, "other", name)
