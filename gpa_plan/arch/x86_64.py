"""x86_64: TDP page faults, the instruction emulator, MAXPHYADDR and memslot limits.

The table models arch/x86/kvm/mmu/mmu.c kvm_handle_noslot_fault() and kvm_handle_error_pfn()
(a write to a read-only memslot is KVM_PFN_ERR_RO_FAULT -> RET_PF_EMULATE), and
arch/x86/kvm/x86.c vcpu_mmio_read()/vcpu_mmio_write(), which try the in-kernel LAPIC, then the
KVM_MMIO_BUS, then exit with KVM_EXIT_MMIO, as read in Linux 7.2.13. An instruction fetch
outside memory cannot be emulated: kvm_fetch_guest_virt() fails and handle_emulation_failure()
reports KVM_EXIT_INTERNAL_ERROR at CPL 0 (confirmed on a real host, see tests/test_kvm_x86.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpa_plan.arch.base import (
    IOEVENTFD_CONDITION,
    ArchSpec,
    DeviceType,
    Effect,
    Fixed,
    Handler,
    HostCondition,
    HostFact,
    HostReach,
    Outcome,
    PrivateRange,
    ProbeDevice,
    RecordFacts,
    SelftestsDefaults,
    SelftestsVMFacts,
    Setting,
    SyscallAbi,
    Ucall,
    outcome_table,
)

_MAPPED = "kvm_tdp_page_fault() maps the page in the TDP (EPT/NPT) tables; no exit"
_MAPPED_RO = "kvm_tdp_page_fault() maps the read-only page; no exit"
_NOSLOT = "kvm_handle_noslot_fault() -> emulator"
_ROSLOT = "kvm_handle_error_pfn(): write to a read-only memslot -> RET_PF_EMULATE -> emulator"

_BUS_WRITE = {
    Handler.KERNEL: (
        Outcome.IO_KERNEL,
        " -> vcpu_mmio_write(): the in-kernel LAPIC or a KVM_MMIO_BUS device handles it",
    ),
    Handler.IOEVENTFD: (
        Outcome.IO_KERNEL,
        " -> vcpu_mmio_write() -> kvm_io_bus_write() signals the ioeventfd"
        + IOEVENTFD_CONDITION,
    ),
    Handler.COALESCED: (
        Outcome.IO_COALESCED,
        " -> vcpu_mmio_write() -> coalesced_mmio_write() queues it in the ring",
    ),
    Handler.USER: (Outcome.IO_EXIT, " -> vcpu_mmio_write(): no kernel device -> KVM_EXIT_MMIO"),
    Handler.NONE: (Outcome.IO_EXIT, " -> vcpu_mmio_write(): no kernel device -> KVM_EXIT_MMIO"),
}
_BUS_READ = {
    Handler.KERNEL: (
        Outcome.IO_KERNEL,
        " -> vcpu_mmio_read(): the in-kernel LAPIC or a KVM_MMIO_BUS device handles it",
    ),
    Handler.IOEVENTFD: (
        Outcome.IO_EXIT,
        " -> vcpu_mmio_read(): ioeventfds take only writes -> KVM_EXIT_MMIO",
    ),
    Handler.COALESCED: (
        Outcome.IO_EXIT,
        " -> vcpu_mmio_read(): coalesced zones buffer only writes -> KVM_EXIT_MMIO",
    ),
    Handler.USER: (Outcome.IO_EXIT, " -> vcpu_mmio_read(): no kernel device -> KVM_EXIT_MMIO"),
    Handler.NONE: (Outcome.IO_EXIT, " -> vcpu_mmio_read(): no kernel device -> KVM_EXIT_MMIO"),
}
_FETCH_ERROR = Effect(
    Outcome.VM_ERROR,
    "kvm_fetch_guest_virt() cannot fetch from MMIO -> handle_emulation_failure() -> "
    "KVM_EXIT_INTERNAL_ERROR (emulation); at CPL>0 without "
    "KVM_CAP_EXIT_ON_EMULATION_FAILURE the guest gets #UD instead",
)


# arch/x86/kvm/lapic.c kvm_alloc_apic_access_page() (Linux 7.2.13): the APIC-access page is a
# private memslot (APIC_ACCESS_PAGE_PRIVATE_MEMSLOT) at APIC_DEFAULT_PHYS_BASE, created by
# __x86_set_memory_region() in every address space when the in-kernel LAPIC is virtualised.
# Its callers: Intel's vmx_vcpu_create() when cpu_need_virtualize_apic_accesses(), that is
# flexpriority_enabled (kvm_intel.flexpriority, cleared by vmx_hardware_setup() on a CPU
# without TPR shadow and virtualized APIC accesses) and an in-kernel LAPIC, whatever
# enable_apicv says; AMD's avic_init_backing_page() when enable_apicv (kvm_amd.avic) and the
# VM's APICv is not inhibited.
APIC_ACCESS_PAGE = 0xFEE0_0000
# arch/x86/include/asm/apicdef.h APIC_DEFAULT_PHYS_BASE; arch/x86/kvm/ioapic.h
# IOAPIC_DEFAULT_BASE_ADDRESS: where KVM's in-kernel LAPIC and IOAPIC answer by default.
APIC_DEFAULT_PHYS_BASE = APIC_ACCESS_PAGE
IOAPIC_DEFAULT_BASE_ADDRESS = 0xFEC0_0000

KiB = 1024

# arch/x86/kvm/lapic.c LAPIC_MMIO_LENGTH, ioapic.h IOAPIC_MEM_LENGTH and
# IOAPIC_DEFAULT_BASE_ADDRESS (Linux 7.2.13).
_DEVICES = (
    DeviceType(
        "lapic",
        "in-kernel local APIC (LAPIC_MMIO_LENGTH)",
        Handler.KERNEL,
        size=4 * KiB,
        align=4 * KiB,
        default_base=APIC_DEFAULT_PHYS_BASE,
        kvm_api="KVM_CREATE_IRQCHIP and the APIC base MSR",
    ),
    DeviceType(
        "ioapic",
        "in-kernel IOAPIC (IOAPIC_MEM_LENGTH)",
        Handler.KERNEL,
        size=0x100,
        default_base=IOAPIC_DEFAULT_BASE_ADDRESS,
        kvm_api="KVM_CREATE_IRQCHIP",
    ),
)



def _selftests_sections(vm: SelftestsVMFacts, ucall_base: str) -> str:
    """The in-kernel irqchip of the default VM; no ucall device (selftests use port I/O)."""
    return (
        "devices:\n"
        "  # Default bases of the in-kernel devices (arch/x86/kvm/ioapic.h\n"
        "  # IOAPIC_DEFAULT_BASE_ADDRESS 0xfec00000, IOAPIC_MEM_LENGTH 0x100;\n"
        "  # APIC_DEFAULT_PHYS_BASE 0xfee00000, LAPIC_MMIO_LENGTH 4 KiB).\n"
        "  - name: ioapic\n"
        "    type: ioapic\n"
        "    base: 0xfec0_0000\n"
        "  - name: lapic\n"
        "    type: lapic\n"
        "    base: 0xfee0_0000\n"
        "\n"
        "reserved:\n"
        "  # An early include/kvm_util.h (torvalds/linux @ 60a5825e9cbe):\n"
        "  # KVM_DEFAULT_IDENTITY_MAP_ADDRESS 0xfffbc000ul, \"Memslots can't cover the gfn\n"
        "  # starting at this gpa otherwise vCPUs can't be created. Only applies to VMs using\n"
        "  # EPT.\" It is KVM's VMX_EPT_IDENTITY_PAGETABLE_ADDR default, used only on VMX\n"
        "  # without unrestricted guest.\n"
        "  - name: kvm-ept-identity-map\n"
        "    base: 0xfffb_c000\n"
        "    size: 4K\n"
    )


# The two private memslots of Intel's real-mode support, as read in Linux 7.2.13. KVM keeps
# them only without unrestricted guest: it then runs guest real mode under vm86, with the TSS,
# and with EPT gives an unpaged guest the identity map as its CR3 (vmx_load_mmu_pgd():
# GUEST_CR3 = ept_identity_map_addr when !is_paging()). vmx_set_tss_addr() returns 0 at once
# when enable_unrestricted_guest is set,
# and vmx_vcpu_create() calls init_rmode_identity_map() only with enable_ept &&
# !enable_unrestricted_guest (arch/x86/kvm/vmx/vmx.c). vmx_hardware_setup() clears
# enable_unrestricted_guest when the CPU lacks it or EPT is off; it is on by default
# (kvm_intel.unrestricted_guest=1). TDX VMs skip both (vt_set_tss_addr(), vmx/main.c). AMD's
# svm_x86_ops has neither op, so kvm_ops_update() (arch/x86/kvm/x86.c) makes both ioctls
# return 0 there. Each is created by __x86_set_memory_region() in every address space, and
# kvm_set_memory_region() -> kvm_check_memslot_overlap() refuses whichever of it and a user
# memslot over it comes second with EEXIST (virt/kvm/kvm_main.c).
_REAL_MODE_HOSTS = (
    "KVM keeps it only on Intel (VMX) hosts without unrestricted guest "
    "(kvm_intel.unrestricted_guest=0{ept}, or a CPU or L0 hypervisor without it); on Intel "
    "hosts with unrestricted guest (the default){no_ept} and on AMD (SVM) hosts KVM keeps no "
    "such memslot"
)
# vmx_set_tss_addr(): __x86_set_memory_region(TSS_PRIVATE_MEMSLOT, addr, PAGE_SIZE * 3), the
# RMODE_TSS_SIZE (0x2089) bytes init_rmode_tss() writes (arch/x86/kvm/tss.h).
TSS = PrivateRange(
    "KVM's real-mode TSS",
    0,
    0x3000,
    None,
    "three pages for vm86 real mode, vmx_set_tss_addr()",
    "KVM_SET_TSS_ADDR fails with EEXIST if the memslot is there first, else the memslot is "
    "refused with EEXIST",
    Setting(
        "tss",
        "KVM_SET_TSS_ADDR",
        "KVM_SET_TSS_ADDR",
        None,
        "KVM keeps no TSS memslot; vm86 real mode then finds its TSS at guest-physical 0 "
        "(enter_rmode() loads GUEST_TR_BASE from the unset address)",
        # kvm_vm_ioctl_set_tss_addr() (arch/x86/kvm/x86.c), before the vendor's op.
        0xFFFF_D000,
        "KVM_SET_TSS_ADDR fails with EINVAL above (unsigned int)(-3 * PAGE_SIZE) on every x86 "
        "host (kvm_vm_ioctl_set_tss_addr())",
    ),
    _REAL_MODE_HOSTS.format(ept=" or ept=0", no_ept=""),
    most_hosts=False,
    host_fact="real_mode_tss",
)
# init_rmode_identity_map(): with the first vCPU, one page at ept_identity_map_addr, which
# KVM_SET_IDENTITY_MAP_ADDR sets (vmx_set_identity_map_addr(); the ioctl itself refuses with
# EINVAL once a vCPU exists, kvm_arch_vm_ioctl()), else VMX_EPT_IDENTITY_PAGETABLE_ADDR
# (arch/x86/include/asm/vmx.h).
IDENTITY_MAP = PrivateRange(
    "KVM's EPT identity-map page",
    0,
    0x1000,
    None,
    "the page table of an unpaged guest under EPT, made with the first vCPU, "
    "init_rmode_identity_map()",
    "KVM_CREATE_VCPU fails with EEXIST if the memslot is there first, else the memslot is "
    "refused with EEXIST",
    Setting(
        "identity_map",
        "KVM_SET_IDENTITY_MAP_ADDR",
        "KVM_CREATE_VCPU",
        0xFFFB_C000,
        "KVM puts the page at VMX_EPT_IDENTITY_PAGETABLE_ADDR, 0xfffbc000 "
        "(init_rmode_identity_map())",
    ),
    _REAL_MODE_HOSTS.format(ept="", no_ept=", without EPT"),
    most_hosts=False,
    host_fact="ept_identity_map",
)

# What `gpa-plan host` reads on an x86_64 host (gpa_plan/probe/host.py says how), Linux 7.2.13.
_HOST_FACTS = (
    HostFact("cpu_vendor", str, "the CPUID vendor string (GenuineIntel, AuthenticAMD)"),
    HostFact("maxphyaddr", int, "the host MAXPHYADDR, CPUID 0x80000008 EAX[7:0]"),
    HostFact("tdp", bool, "KVM uses EPT/NPT (two-dimensional paging)"),
    HostFact(
        "memslot_pa_bits",
        int,
        "a memslot ending beyond 2**memslot_pa_bits is refused (kvm_mmu_max_gfn(): the host "
        "MAXPHYADDR with TDP, else 52)",
    ),
    HostFact(
        "smaller_maxphyaddr",
        bool,
        "KVM_CAP_SMALLER_MAXPHYADDR: KVM enforces a guest MAXPHYADDR below the host's (always "
        "without TDP; with EPT only under kvm_intel.allow_smaller_maxphyaddr=1; never with NPT)",
    ),
    HostFact(
        "address_spaces",
        int,
        "memslot address spaces, KVM_CAP_MULTI_ADDRESS_SPACE on a VM (2 with SMM)",
    ),
    HostFact("smm", bool, "KVM_CAP_X86_SMM"),
    HostFact("vendor_module", str, "the KVM vendor module (kvm_intel, kvm_amd)"),
    HostFact("real_mode_tss", bool, "KVM_SET_TSS_ADDR makes a private memslot"),
    HostFact("ept_identity_map", bool, "the first vCPU makes the EPT identity-map memslot"),
    HostFact(
        "apic_access_page",
        bool,
        "a vCPU with an in-kernel LAPIC makes the APIC-access memslot at 0xfee00000",
    ),
)


def _probe_steps(devices: Sequence[ProbeDevice], vcpus: int) -> list[dict[str, Any]]:
    """KVM_CREATE_IRQCHIP (kvm_arch_vm_ioctl(), arch/x86/kvm/x86.c) when the layout has the
    in-kernel IOAPIC: it creates the PIC, the IOAPIC at IOAPIC_DEFAULT_BASE_ADDRESS and, with
    each vCPU, a LAPIC at APIC_DEFAULT_PHYS_BASE. With the LAPIC alone, the split irqchip
    (KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP), kvm_vm_ioctl_enable_cap(): in-kernel LAPICs, the
    IOAPIC in userspace), as cloud-hypervisor and QEMU's kernel-irqchip=split make it. The
    vCPUs come after either (the cap is refused with EEXIST once one exists)."""
    chips = [d.name for d in devices if d.type in ("lapic", "ioapic")]
    if not chips:
        return []
    if any(d.type == "ioapic" for d in devices):
        return [{"id": "irqchip", "op": "irqchip", "objects": chips}]
    return [{"id": "split_irqchip", "op": "split_irqchip", "routes": 24, "objects": chips}]


# arch/x86/kvm/mmu/mmu.c kvm_handle_noslot_fault() installs an MMIO SPTE for a GPA without
# a memslot when enable_mmio_caching (mmu/spte.c, kvm.mmio_caching) holds; a later access there
# exits as an EPT misconfiguration (vmx.c handle_ept_misconfig()) or an NPF with PFERR_RSVD
# (svm.c npf_interception()), which try kvm_io_bus_write(KVM_FAST_MMIO_BUS, gpa, 0, NULL) first,
# read or write alike, and skip the instruction when an ioeventfd of length 0 takes it
# (virt/kvm/eventfd.c kvm_assign_ioeventfd() puts those on that bus; Linux 7.2.13). The first
# access to the page takes the emulator's path of the table.
_FAST_MMIO = (
    "an ioeventfd of length 0 is also on KVM_FAST_MMIO_BUS (kvm_assign_ioeventfd()): where KVM "
    "caches MMIO SPTEs (on by default; /sys/module/kvm/parameters/mmio_caching says whether the "
    "host does), every access to this address after the first one to its page, a read too, is an "
    "EPT misconfiguration (Intel, handle_ept_misconfig()) or a reserved-bit NPF (AMD with NRIPS, "
    "npf_interception()) that signals the eventfd and skips the instruction without decoding it: a"
    " read returns no data and does not exit, and a write of any width signals"
)


# Where the guest's MAXPHYADDR holds, as read in Linux 7.2.13. The CPU checks the guest's
# page-table entries against its own MAXPHYADDR, the host's; a smaller guest MAXPHYADDR (CPUID
# 0x80000008, vcpu->arch.reserved_gpa_bits) is KVM's to enforce. Without TDP, KVM's shadow
# walker does (FNAME(walk_addr_generic), arch/x86/kvm/mmu/paging_tmpl.h), and both vendors
# set allow_smaller_maxphyaddr (vmx_hardware_setup() when !enable_ept; svm_hardware_setup():
# allow_smaller_maxphyaddr = !npt_enabled). With EPT, only where kvm_intel.allow_smaller_
# maxphyaddr=1 (off by default, arch/x86/kvm/x86.c): vmx_need_pf_intercept() traps #PF and
# handle_ept_violation() emulates an access to an illegal GPA (vmx/vmx.c, vmx.h). With NPT
# never. KVM_CAP_SMALLER_MAXPHYADDR reports allow_smaller_maxphyaddr
# (kvm_vm_ioctl_check_extension(), x86.c). Where it is not enforced, the CPU walks on to the
# GPA, and an EPT violation or NPF there is an ordinary TDP fault: a memslot maps it,
# kvm_handle_noslot_fault() sends anything else to the emulator, which uses the exit's GPA for
# a data access (x86_emulate_instruction(): gpa_available) but fetches an instruction through
# its own walk with the guest's reserved bits (kvm_fetch_guest_virt()): the walk fails and
# x86_emulate_instruction() injects the #PF (inject_emulated_exception()).
_UNENFORCED = (
    "but on hosts with EPT/NPT that leave a smaller guest MAXPHYADDR unenforced, "
    "KVM_CAP_SMALLER_MAXPHYADDR 0"
)
_BEYOND_PA = Effect(
    Outcome.GUEST_FAULT,
    "a guest page-table entry with an address bit at or above MAXPHYADDR has reserved bits set:"
    " #PF with RSVD, from the CPU's walk (against the host's MAXPHYADDR) or, "
    "for a guest MAXPHYADDR below the host's, from KVM where it enforces one (shadow paging: "
    "FNAME(walk_addr_generic); EPT with allow_smaller_maxphyaddr: vmx_handle_page_fault(), "
    "handle_ept_violation())",
)
_REACH = HostReach(
    bits="maxphyaddr",
    when=(("tdp", True), ("smaller_maxphyaddr", False)),
    condition=(
        "below the host's MAXPHYADDR only where KVM enforces a smaller guest MAXPHYADDR "
        "(KVM_CAP_SMALLER_MAXPHYADDR: without TDP, or Intel EPT with "
        "kvm_intel.allow_smaller_maxphyaddr=1); with EPT/NPT otherwise (AMD with NPT, Intel with "
        "EPT by default) the guest reaches the address as the layout holds it: a memslot's "
        "memory, else the emulator as at any unbacked address (a fetch outside memory still gets "
        "#PF with RSVD, from the emulator's own walk); a host profile (--host) says which"
    ),
    reached=(
        "this host leaves a guest MAXPHYADDR below its own unenforced (EPT/NPT walks the "
        "guest's page tables with the host's MAXPHYADDR, and KVM_CAP_SMALLER_MAXPHYADDR is 0: "
        "kvm_vm_ioctl_check_extension())"
    ),
    enforced="this host's KVM enforces the guest's MAXPHYADDR",
    unless=_UNENFORCED,
    fetch_outside=Effect(
        Outcome.GUEST_FAULT,
        "the CPU reaches the address and exits (EPT violation, NPF) -> "
        "kvm_handle_noslot_fault() -> emulator, whose instruction fetch walks the guest's page "
        "tables with the guest's MAXPHYADDR (kvm_fetch_guest_virt(): reserved_gpa_bits) and "
        "fails -> x86_emulate_instruction() injects #PF with RSVD",
    ),
)


# The native x86_64 calls a recording may stop on: arch/x86/entry/syscalls/syscall_64.tbl
# (the "common" and "64" entries) and AUDIT_ARCH_X86_64 of include/uapi/linux/audit.h
# (EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE), Linux 7.2.13.
SYSCALL_ABI = SyscallAbi(
    audit_arch=0xC000_003E,
    numbers={
        "close": 3,
        "mmap": 9,
        "munmap": 11,
        "ioctl": 16,
        "mremap": 25,
        "dup": 32,
        "dup2": 33,
        "clone": 56,
        "fork": 57,
        "vfork": 58,
        "execve": 59,
        "exit": 60,
        "fcntl": 72,
        "exit_group": 231,
        "openat": 257,
        "eventfd2": 290,
        "dup3": 292,
        "memfd_create": 319,
        "execveat": 322,
        "clone3": 435,
        "close_range": 436,
    },
)


RECORD_FACTS = RecordFacts(
    # arch/x86/kvm/x86.c kvm_arch_vm_ioctl(KVM_CREATE_IRQCHIP): kvm_pic_init() registers the
    # PICs and the ELCR on KVM_PIO_BUS (0x20 and 0xa0, 2 ports each; 0x4d0, 2 ports:
    # arch/x86/kvm/i8259.c), kvm_ioapic_init() the IOAPIC at IOAPIC_DEFAULT_BASE_ADDRESS
    # (ioapic.c); each vCPU's LAPIC is at APIC_DEFAULT_PHYS_BASE (lapic.c kvm_create_lapic()).
    irqchip=(
        Fixed("ioapic", "ioapic", IOAPIC_DEFAULT_BASE_ADDRESS),
        Fixed("lapic", "lapic", APIC_DEFAULT_PHYS_BASE),
        Fixed("pic", None, 0x20, 2),
        Fixed("pic2", None, 0xA0, 2),
        Fixed("pic-elcr", None, 0x4D0, 2),
    ),
    # kvm_vm_ioctl_enable_cap(KVM_CAP_SPLIT_IRQCHIP): the LAPICs only; the IOAPIC and PIC
    # are the VMM's.
    split_irqchip=(Fixed("lapic", "lapic", APIC_DEFAULT_PHYS_BASE),),
    # arch/x86/kvm/i8254.c kvm_create_pit(): KVM_PIT_BASE_ADDRESS 0x40, KVM_PIT_MEM_LENGTH 4;
    # with KVM_PIT_SPEAKER_DUMMY the speaker at KVM_SPEAKER_BASE_ADDRESS 0x61, registered for
    # 4 ports of which speaker_ioport_read()/_write() answer 0x61 alone.
    pit=(Fixed("pit", None, 0x40, 4),),
    pit_speaker=(Fixed("pit-speaker", None, 0x61, 1),),
)


X86_64 = ArchSpec(
    name="x86_64",
    elf_machine="EM_X86_64",
    machine="x86_64",
    syscall_abi=SYSCALL_ABI,
    record=RECORD_FACTS,
    # `in`/`out` take a 16-bit port: arch/x86/kvm/x86.c emulator_pio_in_out() (unsigned short
    # port) offers the access to KVM_PIO_BUS, else exits with KVM_EXIT_IO (Linux 7.2.13).
    port_space=0x10000,
    default_pa_bits=48,
    min_pa_bits=32,
    max_pa_bits=52,
    page_sizes=(4096,),
    # arch/x86/include/asm/kvm_host.h (Linux 7.2.13): KVM_MAX_NR_ADDRESS_SPACES 2 with
    # CONFIG_KVM_SMM (as_id 1 is SMM); kvm_arch_nr_memslot_as_ids() is 1 for a VM with private
    # memory, or a kernel without SMM.
    address_spaces=2,
    other_address_spaces=("SMM",),
    # KVM_USER_MEM_SLOTS = SHRT_MAX - KVM_INTERNAL_MEM_SLOTS (3 on x86: the TSS, APIC-access
    # and identity-map private memslots of arch/x86/include/asm/vmx.h).
    user_memslots=32764,
    beyond_pa_errno="EINVAL",
    beyond_pa_check="kvm_arch_prepare_memory_region() (beyond host MAXPHYADDR)",
    outcomes=outcome_table(
        mapped=_MAPPED,
        mapped_ro=_MAPPED_RO,
        noslot=_NOSLOT,
        roslot=_ROSLOT,
        bus_read=_BUS_READ,
        bus_write=_BUS_WRITE,
        fetch_outside=_FETCH_ERROR,
    ),
    beyond_pa=_BEYOND_PA,
    host_reach=_REACH,
    pa_name="MAXPHYADDR",
    pa_bits_refusal="the guest cannot address what lies above its MAXPHYADDR",
    # kvm_arch_prepare_memory_region() compares with the host's MAXPHYADDR (kvm_mmu_max_gfn()),
    # not the guest's: below that the slot is accepted.
    beyond_pa_outcome=(
        f"the guest cannot reach what lies above it ({_UNENFORCED}), and KVM refuses the slot "
        "(EINVAL) if it also ends beyond the host's MAXPHYADDR"
    ),
    private_ranges=(
        PrivateRange(
            "KVM's APIC-access page",
            APIC_ACCESS_PAGE,
            0x1000,
            "lapic",
            "a private memslot created with the in-kernel LAPIC",
            "KVM_CREATE_VCPU or this KVM_SET_USER_MEMORY_REGION fails with EEXIST on hosts that "
            "virtualize APIC accesses (Intel flexpriority, AMD AVIC)",
            host_fact="apic_access_page",
        ),
        TSS,
        IDENTITY_MAP,
    ),
    # tools/testing/selftests/kvm/lib/x86/ucall.c (Linux 7.2.13): UCALL_PIO_PORT.
    # tools/testing/selftests/kvm (Linux 7.2.13): VM_MODE_PXXVYY_4K only; lib/x86/ucall.c
    # uses port I/O; slot 0 must stay below the IOAPIC (IOAPIC_DEFAULT_BASE_ADDRESS).
    selftests=SelftestsDefaults(
        guest_page_sizes=(0x1000,),
        host_page_sizes=(0x1000,),
        pa_bits=48,
        ucall=Ucall.PORT_IO,
        first_device=0xFEC0_0000,
        first_device_name="the IOAPIC",
        preamble=(
            "# ucall_init() is given the GPA past slot 0 here too, but x86 ignores it:\n"
            "# lib/x86/ucall.c delivers ucalls by port I/O, UCALL_PIO_PORT\n"
            "# ((u16)0x1000): the guest does `in` from port 0x1000 with RDI = the ucall struct "
            "and\n"
            "# the host sees KVM_EXIT_IO. Port I/O is its own 16-bit space: no MMIO ucall address "
            "is\n# at stake on x86_64, so this layout has no `ucall` device.\n"
            "# lib/x86/processor.c kvm_arch_vm_post_create(): vm_create_irqchip(vm), i.e.\n"
            "# KVM_CREATE_IRQCHIP: in-kernel LAPIC and IOAPIC (and PIC).\n"
            "#\n"
            "# pa_bits: VM_MODE_PXXVYY_4K takes the guest physical address width from KVM's CPUID\n"
            "# (kvm_get_cpu_address_width()) at run time; 48 is a typical value, not a selftests\n"
            "# constant.\n"
        ),
        sections=_selftests_sections,
    ),
    ucall_note=(
        "x86_64: KVM selftests deliver ucalls by port I/O (UCALL_PIO_PORT 0x1000), not MMIO; the "
        "ucall address here is a valid MMIO page for VMMs that want one"
    ),
    devices=_DEVICES,
    probe_steps=_probe_steps,
    verify_caps=(
        "KVM_CAP_NR_MEMSLOTS",
        "KVM_CAP_READONLY_MEM",
        "KVM_CAP_MULTI_ADDRESS_SPACE",
        "KVM_CAP_X86_SMM",
        "KVM_CAP_SMALLER_MAXPHYADDR",
        "KVM_CAP_IOEVENTFD",
        "KVM_CAP_COALESCED_MMIO",
    ),
    any_length_ioeventfd_note=_FAST_MMIO,
    host_facts=_HOST_FACTS,
    # arch/x86/kvm/x86.c kvm_arch_prepare_memory_region(): a memslot whose last gfn is above
    # kvm_mmu_max_gfn() (arch/x86/kvm/mmu.h) is refused, Linux 7.2.13.
    host_memslot_limit=HostCondition(
        "memslot_pa_bits",
        "KVM_SET_USER_MEMORY_REGION refuses it with EINVAL (kvm_arch_prepare_memory_region(): "
        "beyond kvm_mmu_max_gfn())",
    ),
    # virt/kvm/kvm_main.c kvm_set_memory_region(): as_id >= kvm_arch_nr_memslot_as_ids() is
    # EINVAL; KVM_CAP_MULTI_ADDRESS_SPACE on a VM reports that number (kvm_vm_ioctl_check_
    # extension_generic()), and 0 on a kernel without CONFIG_KVM_SMM, which has one.
    host_address_spaces="address_spaces",
)
