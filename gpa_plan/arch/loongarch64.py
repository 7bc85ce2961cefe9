"""loongarch64: GPA-space faults, MMIO emulation, the GPA size and memslot limits.

Source-checked against Linux 7.2.13 only: no loongarch64 KVM host can be run here (QEMU has
no LoongArch virtualization). The table models arch/loongarch/kvm/exit.c
kvm_handle_rdwr_fault(), which kvm_handle_fault() calls for every TLB fault on a GPA: a load
or an instruction fetch (EXCCODE_TLBL, EXCCODE_TLBI) comes in as a read, a store or a write to
a clean or read-only page (EXCCODE_TLBS, EXCCODE_TLBM) as a write. In order:

1. an address at or beyond the VM's GPA size (``kvm->arch.gpa_size``, ``BIT(cpu_vabits)``)
   gets an address error, ADE with subcode ADEM, injected into the guest, for every access;
2. arch/loongarch/kvm/mmu.c kvm_handle_mm_fault() -> kvm_map_page() maps the page of a
   memslot (read-only memslots for reads and fetches; KVM's PTE has no execute-inhibit bit);
3. otherwise ("Treat as MMIO") a write goes to kvm_emu_mmio_write(); a read that is an
   instruction fetch (kvm_is_ifetch_fault(): the PC is the faulting address) gets ADE with
   subcode ADEF injected ("A code fetch fault doesn't count as an MMIO"); any other read goes
   to kvm_emu_mmio_read(). Both offer the access to the KVM_MMIO_BUS first (the in-kernel
   PCH-PIC, ioeventfds, coalesced zones) and otherwise exit with KVM_EXIT_MMIO.

The table assumes a plain integer load or store (ld.*, ldx.*, ldptr.*, st.*, stx.*,
stptr.*): kvm_emu_mmio_read()/kvm_emu_mmio_write() decode nothing else, and for any other
instruction (floating-point or vector loads and stores, atomics, ll/sc) they return
EMULATE_FAIL, on which kvm_handle_rdwr_fault() injects ADE/ADEM into the guest: the access is
a guest fault, never a KVM_RUN error. kvm_handle_rdwr_fault() returns no error at all.

The interrupt controllers KVM emulates besides the PCH-PIC, the IPI (KVM_DEV_TYPE_LOONGARCH_IPI)
and the EIOINTC (KVM_DEV_TYPE_LOONGARCH_EIOINTC), sit on KVM_IOCSR_BUS: the guest reaches
them with iocsrrd/iocsrwr instructions (kvm_handle_gspr() -> kvm_emu_iocsr()), in the IOCSR
space, not at a guest-physical address. They cannot collide with memslots or MMIO devices and
have no place in a layout.
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
    mmio_ucall_yaml,
    outcome_table,
)

_RDWR = "kvm_handle_rdwr_fault(): "
_MAPPED = _RDWR + "kvm_handle_mm_fault() -> kvm_map_page() maps the page; no exit"
_MAPPED_RO = (
    _RDWR + "kvm_handle_mm_fault() -> kvm_map_page() maps the read-only page (no "
    "execute-inhibit bit, so fetches run from it too); no exit"
)
_NOSLOT = _RDWR + "no memslot (kvm_map_page() -EFAULT) -> treated as MMIO"
_ROSLOT = _RDWR + "write to a read-only memslot (kvm_map_page() -EFAULT) -> treated as MMIO"

_BUS_READ, _BUS_WRITE = io_bus_cells(" -> kvm_emu_mmio_read()", " -> kvm_emu_mmio_write()")
# kvm_handle_rdwr_fault(): a fetch outside memory is not MMIO, whatever device is there.
_FETCH_FAULT = Effect(
    Outcome.GUEST_FAULT,
    _RDWR + "instruction fetch outside a memslot (kvm_is_ifetch_fault()) -> "
    "kvm_queue_exception(EXCCODE_ADE, EXSUBCODE_ADEF): fetch address error injected",
)

# arch/loongarch/include/asm/kvm_pch_pic.h PCH_PIC_SIZE; arch/loongarch/kvm/intc/pch_pic.c
# kvm_pch_pic_set_attr() -> kvm_pch_pic_init() registers it on KVM_MMIO_BUS at the address
# the VMM gives, with no alignment, range or overlap check (Linux 7.2.13). Its read and write
# handlers answer every offset in the range (unknown registers read as 0, writes dropped).
PCH_PIC_SIZE = 0x3E8

_DEVICES = (
    DeviceType(
        "loongarch-pch-pic",
        "in-kernel PCH-PIC interrupt controller (PCH_PIC_SIZE)",
        Handler.KERNEL,
        size=PCH_PIC_SIZE,
        kvm_api=(
            "KVM_SET_DEVICE_ATTR(KVM_DEV_LOONGARCH_PCH_PIC_GRP_CTRL, "
            "KVM_DEV_LOONGARCH_PCH_PIC_CTRL_INIT)"
        ),
    ),
)

# The GPA size of the selftests default mode VM_MODE_P47V47_16K
# (tools/testing/selftests/kvm/include/kvm_util.h, Linux 7.2.13).
SELFTESTS_PA_BITS = 47


def _selftests_sections(vm: SelftestsVMFacts, ucall_base: str) -> str:
    """No in-kernel device in the default VM, and its ucall page (lib/loongarch/ucall.c)."""
    text = (
        "devices:\n"
        "  # lib/loongarch has no kvm_arch_vm_post_create(): the default VM has no in-kernel\n"
        "  # interrupt controller (no PCH-PIC, IPI or EIOINTC) unless a test creates one.\n"
    )
    return text + mmio_ucall_yaml(vm, ucall_base, "loongarch64", "loongarch")


# arch/loongarch/kvm/exit.c (Linux 7.2.13): kvm_emu_mmio_read()/kvm_emu_mmio_write() decode
# the trapped instruction (vcpu->arch.badi) before the bus is asked and return EMULATE_FAIL for
# an opcode they do not match; kvm_handle_rdwr_fault() then injects EXCCODE_ADE/EXSUBCODE_ADEM
# and resumes the guest.
_UNDECODED = (
    "this outcome holds only for a plain integer load or store (ld.*, ldx.*, ldptr.*, st.*, stx.*,"
    " stptr.*): kvm_emu_mmio_read()/kvm_emu_mmio_write() decode nothing else, and for any other "
    "instruction (floating point, vector, atomics, ll/sc) kvm_handle_rdwr_fault() injects an "
    "address error (ADE, subcode ADEM) into the guest instead, before any in-kernel device is "
    "asked; KVM_RUN does not fail"
)

LOONGARCH64 = ArchSpec(
    name="loongarch64",
    elf_machine="EM_LOONGARCH",
    machine="loongarch64",
    instruction_align=4,
    # arch/loongarch/kvm/vm.c kvm_arch_init_vm() (Linux 7.2.13): gpa_size = BIT(cpu_vabits)
    # for every VM, the host CPU's user virtual address width (CPUCFG1.VALEN, read by
    # kernel/cpu-probe.c cpu_probe_addrbits(); kernel/proc.c prints cpu_vabits + 1 as the
    # "bits virtual" of /proc/cpuinfo). No VM type or capability chooses it. 39 on Loongson-2K
    # (mm/kasan_init.c); 47 is the selftests' VM_MODE_P47V47_16K, the 3A5000/3A6000 value
    # (hardware data, not in the tree). pa_bits states the host's value.
    default_pa_bits=SELFTESTS_PA_BITS,
    min_pa_bits=39,
    max_pa_bits=47,
    # arch/loongarch/Kconfig "Page Table Layout": 4 KiB, 16 KiB (the default, 16KB_3LEVEL)
    # or 64 KiB host pages; KVM maps the GPA space in host pages (kvm_arch_init_vm()).
    page_sizes=(4096, 16384, 65536),
    # KVM_MAX_NR_ADDRESS_SPACES: include/linux/kvm_host.h's default 1, no override.
    address_spaces=1,
    # KVM_USER_MEM_SLOTS = SHRT_MAX - KVM_INTERNAL_MEM_SLOTS (0 here); KVM_CAP_NR_MEMSLOTS.
    user_memslots=32767,
    # arch/loongarch/kvm/mmu.c kvm_arch_prepare_memory_region(): base_gfn + npages >
    # gpa_size >> PAGE_SHIFT -> -ENOMEM; `>`, so a slot may end exactly at 2**pa_bits.
    beyond_pa_errno="ENOMEM",
    beyond_pa_check="kvm_arch_prepare_memory_region()",
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
        Outcome.GUEST_FAULT,
        _RDWR + "address at or beyond the VM's GPA size (gpa_size) -> "
        "kvm_queue_exception(EXCCODE_ADE, EXSUBCODE_ADEM): address error injected, before "
        "any memslot or device is looked at",
    ),
    pa_name="GPA size (cpu_vabits)",
    pa_bits_refusal=(
        "KVM gives every VM the host CPU's cpu_vabits (kvm_arch_init_vm()), which no VM can "
        "change: write the host's value, one less than the 'bits virtual' of its "
        "/proc/cpuinfo (47 on Loongson 3A5000/3A6000, 39 on Loongson-2K)"
    ),
    # tools/testing/selftests/kvm (Linux 7.2.13): VM_MODE_P47V47_16K (include/kvm_util.h),
    # 16 KiB guest pages (lib/kvm_util.c vm_guest_mode_params[]); lib/loongarch/ucall.c, an
    # MMIO write past slot 0 as on arm64; no kvm_arch_vm_post_create(), so no default device:
    # only the GPA size bounds slot 0.
    selftests=SelftestsDefaults(
        guest_page_sizes=(0x4000,),
        host_page_sizes=(0x1000, 0x4000, 0x1_0000),
        pa_bits=SELFTESTS_PA_BITS,
        ucall=Ucall.MMIO,
        first_device=1 << SELFTESTS_PA_BITS,
        first_device_name="the 47-bit GPA size of VM_MODE_P47V47_16K",
        preamble=(
            "# pa_bits: loongarch VM_MODE_DEFAULT is VM_MODE_P47V47_16K (include/kvm_util.h),\n"
            "# 16 KiB guest pages; KVM's GPA size is the host's cpu_vabits (kvm_arch_init_vm()),\n"
            "# 47 on Loongson 3A5000/3A6000. page_size is the host's: 16 KiB in the kernel's\n"
            "# default configuration (--host-page-size for a 4K or 64K kernel).\n"
        ),
        sections=_selftests_sections,
        default_guest_page=0x4000,
        default_host_page=0x4000,
    ),
    devices=_DEVICES,
    io_instruction_note=_UNDECODED,
)
