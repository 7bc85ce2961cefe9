"""riscv64: G-stage page faults, MMIO emulation, the G-stage GPA width and the AIA devices.

Source-checked only, in Linux 7.2.13 (no riscv64 KVM host can be run here). The table models
arch/riscv/kvm/vcpu_exit.c kvm_riscv_vcpu_exit(), which sends the three guest-page-fault causes
to gstage_page_fault(), and arch/riscv/kvm/vcpu_insn.c kvm_riscv_vcpu_mmio_load() and
kvm_riscv_vcpu_mmio_store(): an access outside a memslot, or a store to a read-only memslot, is
decoded, offered to the KVM_MMIO_BUS (the AIA's APLIC and IMSIC, ioeventfds, coalesced zones)
and otherwise exits with KVM_EXIT_MMIO; inside a memslot kvm_riscv_mmu_map() maps the page
(read-only slots readable and executable). An instruction fetch outside a memslot gets an
instruction access fault (EXC_INST_ACCESS) injected with kvm_riscv_vcpu_trap_redirect().

That fetch case changed between kernel versions: in the gstage_page_fault() of older kernels
(those where it still called kvm_riscv_gstage_map(), before the G-stage code moved to
arch/riscv/kvm/gstage.c and kvm_riscv_mmu_map()) the switch had no fetch case, so a fetch
outside memory fell to `default: return -EOPNOTSUPP`: KVM_RUN failed with EOPNOTSUPP and the
kernel logged "VCPU exit error -95" (vm-error); read so in Linux 6.1.176 (Debian 12's
kernel). Linux 7.2.13 injects the fault instead (guest-fault). The release between them that
changed it is not pinned down here.

The table assumes a plain, aligned integer load or store: any other instruction at an MMIO
address (floating point, atomics, LR/SC, vector) makes KVM_RUN fail with EOPNOTSUPP, and a
misaligned one with EIO (vcpu_insn.c), a vm-error. The in-kernel AIA devices accept only
4-byte accesses; others go on down the bus and exit to the VMM.

Beyond 2**pa_bits (inferred, not run): gstage_page_fault() has no GPA-width test, so an
address the G-stage cannot translate finds no memslot and takes the same path as "nothing":
loads and stores exit with KVM_EXIT_MMIO, a fetch gets the instruction access fault.
"""

from __future__ import annotations

from gpa_plan.arch.base import (
    ArchSpec,
    DeviceType,
    Effect,
    Handler,
    Outcome,
    SelftestsDefaults,
    SelftestsVMFacts,
    Ucall,
    io_bus_cells,
    outcome_table,
)

_FAULT = "gstage_page_fault(): "
_MAPPED = _FAULT + "kvm_riscv_mmu_map() maps the page in the G-stage; no exit"
_MAPPED_RO = _FAULT + "kvm_riscv_mmu_map() maps the read-only page (readable, executable); no exit"
_NOSLOT = _FAULT + "no memslot"
_ROSLOT = _FAULT + "store to a read-only memslot"

_BUS_READ, _BUS_WRITE = io_bus_cells(
    " -> kvm_riscv_vcpu_mmio_load()", " -> kvm_riscv_vcpu_mmio_store()"
)
# arch/riscv/kvm/vcpu_insn.c kvm_riscv_vcpu_mmio_load()/_store() (Linux 7.2.13) decode the
# trapped instruction themselves (htinst, else read from the guest at sepc) before the bus is
# asked: an opcode they do not match returns -EOPNOTSUPP, an address not aligned to the access
# size -EIO; gstage_page_fault() passes either to kvm_riscv_vcpu_exit(), which logs "VCPU exit
# error" and returns it out of KVM_RUN.
_UNDECODED = (
    "this outcome holds only for a plain integer load or store (LB, LH, LW, LD and their unsigned "
    "forms, SB, SH, SW, SD, and the compressed C.LW, C.LD, C.SW, C.SD and their SP forms) aligned "
    "to its size: kvm_riscv_vcpu_mmio_load()/_store() decode the trapped instruction themselves, "
    "and for any other one (floating point, atomics, LR/SC, vector) make KVM_RUN fail with "
    "EOPNOTSUPP, for a misaligned one with EIO, before any in-kernel device is asked"
)

# gstage_page_fault(), case EXC_INST_GUEST_PAGE_FAULT (Linux 7.2.13; older kernels: EOPNOTSUPP).
_FETCH_FAULT = Effect(
    Outcome.GUEST_FAULT,
    _FAULT + "instruction fetch outside a memslot -> kvm_riscv_vcpu_trap_redirect(): "
    "instruction access fault (EXC_INST_ACCESS) injected (older kernels: KVM_RUN fails with "
    "EOPNOTSUPP)",
)

KiB = 1024
_AIA_API = "KVM_SET_DEVICE_ATTR(KVM_DEV_RISCV_AIA_GRP_ADDR, {})"

# arch/riscv/include/uapi/asm/kvm.h KVM_DEV_RISCV_APLIC_SIZE/_ALIGN and
# KVM_DEV_RISCV_IMSIC_SIZE/_ALIGN; arch/riscv/kvm/aia_device.c aia_aplic_addr() and
# aia_imsic_addr() refuse a base not 4 KiB aligned with EINVAL, and test nothing else: no
# GPA-width test, no overlap test, and a second address replaces the first (Linux 7.2.13).
# Both are KVM_MMIO_BUS devices (aia_aplic.c kvm_riscv_aia_aplic_init(), aia_imsic.c
# kvm_riscv_vcpu_aia_imsic_init()). An IMSIC address is set per vCPU, so a layout whose VMM
# spaces them wider than 4 KiB (QEMU virt: 4 KiB << guest-index bits per hart) writes one
# `riscv-imsic` with `vcpus: 1` per hart.
_DEVICES = (
    DeviceType(
        "riscv-aplic",
        "AIA APLIC, MSI mode (KVM_DEV_RISCV_APLIC_SIZE)",
        Handler.KERNEL,
        size=16 * KiB,
        align=4 * KiB,
        kvm_api=_AIA_API.format("KVM_DEV_RISCV_AIA_ADDR_APLIC"),
    ),
    DeviceType(
        "riscv-imsic",
        "AIA IMSIC interrupt files, 4 KiB per vCPU (KVM_DEV_RISCV_IMSIC_SIZE)",
        Handler.KERNEL,
        per_vcpu=4 * KiB,
        align=4 * KiB,
        kvm_api=_AIA_API.format("KVM_DEV_RISCV_AIA_ADDR_IMSIC(vcpu)"),
    ),
)

G_STAGE_BITS = (41, 50, 59)  # Sv39x4, Sv48x4, Sv57x4: kvm_riscv_gstage_gpa_bits()


def _selftests_sections(vm: SelftestsVMFacts, ucall_base: str) -> str:
    """No devices: no in-kernel AIA by default, ucalls by SBI call."""
    return (
        "# No devices: lib/riscv/processor.c does not override kvm_arch_vm_post_create(),\n"
        "# so the default VM has no in-kernel AIA (APLIC, IMSIC), and ucalls are SBI calls.\n"
        "devices: []\n"
    )


RISCV64 = ArchSpec(
    name="riscv64",
    elf_machine="EM_RISCV",
    machine="riscv64",
    instruction_align=2,
    # arch/riscv/kvm/mmu.c kvm_riscv_mmu_alloc_pgd(): a VM gets the host's widest G-stage mode
    # (gstage.c kvm_riscv_gstage_mode_detect(): Sv57x4, else Sv48x4, else Sv39x4; none: no
    # KVM), 59, 50 or 41 bits (kvm_gstage.h kvm_riscv_gstage_gpa_bits()); vm.c
    # kvm_vm_ioctl_enable_cap(KVM_CAP_VM_GPA_BITS) narrows it before any vCPU or memslot,
    # rounding a request up to 41, 50 or 59, EINVAL above 59 or the host's. 41 is what every
    # riscv64 KVM host gives. Linux 7.2.13.
    default_pa_bits=41,
    min_pa_bits=41,
    max_pa_bits=59,
    pa_bits_choices=G_STAGE_BITS,
    pa_bits_refusal=(
        "KVM_ENABLE_CAP(KVM_CAP_VM_GPA_BITS) fails with EINVAL above 59 bits or the host's "
        "widest G-stage mode"
    ),
    # arch/riscv/Kconfig: HAVE_PAGE_SIZE_4KB is the only page size.
    page_sizes=(4096,),
    # include/linux/kvm_host.h: KVM_MAX_NR_ADDRESS_SPACES 1 and KVM_USER_MEM_SLOTS SHRT_MAX
    # (riscv defines no KVM_INTERNAL_MEM_SLOTS).
    address_spaces=1,
    user_memslots=32767,
    # arch/riscv/kvm/mmu.c kvm_arch_prepare_memory_region(): `base_gfn + npages >=
    # gpa_size >> PAGE_SHIFT` -> -EFAULT, so a slot ending exactly at the limit is refused too.
    beyond_pa_errno="EFAULT",
    beyond_pa_check=(
        "kvm_arch_prepare_memory_region() (its test is `>=`: a slot may not end exactly at the "
        "limit)"
    ),
    memslot_may_end_at_limit=False,
    outcomes=outcome_table(
        mapped=_MAPPED,
        mapped_ro=_MAPPED_RO,
        noslot=_NOSLOT,
        roslot=_ROSLOT,
        bus_read=_BUS_READ,
        bus_write=_BUS_WRITE,
        fetch_outside=_FETCH_FAULT,
    ),
    beyond_pa=Effect(
        Outcome.IO_EXIT,
        _FAULT + "no GPA-width test: no memslot -> kvm_riscv_vcpu_mmio_load()/_store() -> "
        "KVM_EXIT_MMIO with phys_addr beyond the G-stage (inferred from the source)",
    ),
    beyond_pa_fetch=Effect(
        Outcome.GUEST_FAULT,
        _FAULT + "no GPA-width test: instruction fetch outside a memslot -> "
        "instruction access fault injected (inferred from the source)",
    ),
    pa_name="G-stage GPA size",
    # tools/testing/selftests/kvm (Linux 7.2.13): lib/guest_modes.c picks the VM mode from
    # KVM_CHECK_EXTENSION(KVM_CAP_VM_GPA_BITS) (P41/P50/P56, 4 KiB pages) and never narrows
    # the VM; lib/riscv/ucall.c ucall_arch_init() is empty: ucalls are sbi_ecall() of
    # KVM_RISCV_SELFTESTS_SBI_EXT, a KVM_EXIT_RISCV_SBI, so no MMIO page is at stake; no
    # in-kernel device by default. Nothing fixed sits above slot 0: it may grow to the last
    # page below 2**41 (kvm_arch_prepare_memory_region()).
    selftests=SelftestsDefaults(
        guest_page_sizes=(0x1000,),
        host_page_sizes=(0x1000,),
        pa_bits=41,
        ucall=Ucall.SBI,
        first_device=(1 << 41) - 0x1000,
        first_device_name=(
            "the end of what a memslot may cover in a 41-bit G-stage (a page short of 2**41)"
        ),
        preamble=(
            "# ucall_init() is given the GPA past slot 0 here too, but riscv64 ignores it:\n"
            "# lib/riscv/ucall.c delivers ucalls by an SBI call, sbi_ecall() of\n"
            "# KVM_RISCV_SELFTESTS_SBI_EXT (SBI_EXT_EXPERIMENTAL_END, 0x08ffffff), which KVM\n"
            "# forwards to the host as KVM_EXIT_RISCV_SBI. No MMIO ucall address is at stake on\n"
            "# riscv64, so this layout has no `ucall` device.\n"
            "#\n"
            "# pa_bits: lib/guest_modes.c takes the VM mode from\n"
            "# KVM_CHECK_EXTENSION(KVM_CAP_VM_GPA_BITS) at run time (41, 50 or 59 G-stage bits;\n"
            "# P56 modes for 59): the host's widest G-stage mode. 41 (Sv39x4) is the one every\n"
            "# riscv64 KVM host has.\n"
        ),
        sections=_selftests_sections,
    ),
    ucall_note=(
        "riscv64: KVM selftests deliver ucalls by an SBI call (KVM_EXIT_RISCV_SBI), not MMIO; "
        "the ucall address here is a valid MMIO page for VMMs that want one"
    ),
    devices=_DEVICES,
    io_instruction_note=_UNDECODED,
)
