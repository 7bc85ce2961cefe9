"""arm64: stage-2 abort handling, IPA size and memslot limits.

The table models arch/arm64/kvm/mmu.c kvm_handle_guest_abort() and user_mem_abort(), and
arch/arm64/kvm/mmio.c io_mem_abort(), as read in Linux 7.2.13: an access outside a memslot, or
a write to a read-only memslot, is offered to the KVM_MMIO_BUS (vGIC, ITS, ioeventfds,
coalesced zones) and otherwise exits with KVM_EXIT_MMIO; an instruction fetch outside memory
gets a synchronous external abort injected (kvm_inject_sea_iabt()). The table assumes a data
abort with a valid syndrome (ISV=1, a single load or store): without one, io_mem_abort() makes
KVM_RUN fail with ENOSYS, or exits with KVM_EXIT_ARM_NISV when the VMM enabled
KVM_CAP_ARM_NISV_TO_USER.
"""

from __future__ import annotations

from gpa_plan.arch.base import (
    ArchSpec,
    Effect,
    Handler,
    Outcome,
    SelftestsDefaults,
    outcome_table,
)

_MAPPED = "kvm_handle_guest_abort() -> user_mem_abort() maps the page at stage 2; no exit"
_MAPPED_RO = "kvm_handle_guest_abort() -> user_mem_abort() maps the read-only page; no exit"
_ABORT = "kvm_handle_guest_abort(): "
_NOSLOT = _ABORT + "no memslot -> io_mem_abort()"
_ROSLOT = _ABORT + "write to a read-only memslot -> io_mem_abort()"

_BUS_WRITE = {
    Handler.KERNEL: (Outcome.IO_KERNEL, " -> kvm_io_bus_write() reaches the in-kernel device"),
    Handler.IOEVENTFD: (
        Outcome.IO_KERNEL,
        " -> kvm_io_bus_write() signals the ioeventfd (a datamatch miss exits as KVM_EXIT_MMIO)",
    ),
    Handler.COALESCED: (
        Outcome.IO_COALESCED,
        " -> kvm_io_bus_write() -> coalesced_mmio_write() queues it in the ring",
    ),
    Handler.USER: (Outcome.IO_EXIT, " -> no io-bus device -> KVM_EXIT_MMIO (is_write=1)"),
    Handler.NONE: (Outcome.IO_EXIT, " -> no io-bus device -> KVM_EXIT_MMIO (is_write=1)"),
}
_BUS_READ = {
    Handler.KERNEL: (Outcome.IO_KERNEL, " -> kvm_io_bus_read() reaches the in-kernel device"),
    Handler.IOEVENTFD: (
        Outcome.IO_EXIT,
        " -> ioeventfds take only writes -> KVM_EXIT_MMIO (is_write=0)",
    ),
    Handler.COALESCED: (
        Outcome.IO_EXIT,
        " -> coalesced zones buffer only writes -> KVM_EXIT_MMIO (is_write=0)",
    ),
    Handler.USER: (Outcome.IO_EXIT, " -> no io-bus device -> KVM_EXIT_MMIO (is_write=0)"),
    Handler.NONE: (Outcome.IO_EXIT, " -> no io-bus device -> KVM_EXIT_MMIO (is_write=0)"),
}
# kvm_handle_guest_abort(): an instruction abort outside a memslot is not MMIO: -ENOEXEC,
# then kvm_inject_sea_iabt() (Linux 7.2.13; older kernels called it kvm_inject_pabt()).
_FETCH_FAULT = Effect(
    Outcome.GUEST_FAULT,
    _ABORT + "instruction fetch outside a memslot -> kvm_inject_sea_iabt(): "
    "instruction abort (synchronous external abort) injected",
)


ARM64 = ArchSpec(
    name="arm64",
    elf_machine="EM_AARCH64",
    # arch/arm64/kvm/mmu.c kvm_init_ipa_range() (from kvm_init_stage2_mmu()), Linux 7.2.13:
    # type 0 means KVM_PHYS_SHIFT (40); an explicit IPA size must lie in
    # [ARM64_MIN_PARANGE_BITS (32), kvm_ipa_limit], else EINVAL.
    default_pa_bits=40,
    min_pa_bits=32,
    max_pa_bits=52,
    page_sizes=(4096, 16384, 65536),
    address_spaces=1,
    # include/linux/kvm_host.h (Linux 7.2.13): KVM_USER_MEM_SLOTS = KVM_MEM_SLOTS_NUM (SHRT_MAX)
    # - KVM_INTERNAL_MEM_SLOTS, which is 0 on arm64.
    user_memslots=32767,
    beyond_pa_errno="EFAULT",
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
        _ABORT + "IPA beyond the VM's IPA size -> kvm_inject_sea() injects an external "
        "abort (kvm_inject_size_fault(), an address size fault, beyond the host's IPA limit)",
    ),
    pa_name="IPA size",
    # tools/testing/selftests/kvm (Linux 7.2.13): the VM_MODE_P*V*_4K/16K/64K modes of
    # lib/kvm_util.c vm_guest_mode_params[]; lib/arm64/ucall.c, an MMIO write past slot 0;
    # include/arm64/gic.h GITS_BASE_GPA 0x8000000, below the default vGIC.
    selftests=SelftestsDefaults(
        guest_page_sizes=(0x1000, 0x4000, 0x1_0000),
        host_page_sizes=(0x1000, 0x4000, 0x1_0000),
        pa_bits=40,
        mmio_ucall=True,
        first_device=0x0800_0000,
        first_device_name="the vGIC ITS base GITS_BASE_GPA",
    ),
)
