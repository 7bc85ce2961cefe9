"""The names an `observed` section may use, and what they mean (Linux 7.2.13).

Exit reasons and internal-error suberrors are those of include/uapi/linux/kvm.h; errno names
are the C library's, as Python's ``errno`` module knows them (EFAULT, ENXIO, ...).
"""

from __future__ import annotations

import errno

from gpa_plan.probe.kvm import KVM_EXIT_NAMES

# The KVM_EXIT_* names of kvm_run->exit_reason (gpa_plan.probe.kvm holds the kernel's list).
EXIT_REASONS: dict[str, int] = {name: number for number, name in KVM_EXIT_NAMES.items()}

# include/uapi/linux/kvm.h KVM_INTERNAL_ERROR_*: kvm_run->internal.suberror, with what each
# means and where KVM reports it.
INTERNAL_ERRORS: dict[int, tuple[str, str]] = {
    1: (
        "EMULATION",
        "an instruction KVM could not emulate (x86 handle_emulation_failure()), most often a "
        "guest access to MMIO with an instruction the emulator lacks (AVX, a string "
        "instruction on some paths) or an access KVM expected to find memory at",
    ),
    2: (
        "SIMUL_EX",
        "an exception while delivering another one (x86 vmx.c handle_exception_nmi())",
    ),
    3: (
        "DELIVERY_EV",
        "an exit while delivering an event to the guest (x86.c "
        "kvm_prepare_event_vectoring_exit()): often the guest's IDT or stack lies in MMIO "
        "or in no memslot",
    ),
    4: (
        "UNEXPECTED_EXIT_REASON",
        "a hardware exit KVM does not handle (x86.c kvm_prepare_unexpected_reason_exit())",
    ),
}

# What KVM_RUN failing with an errno most often means, for the run-failed finding.
RUN_ERRNOS: dict[str, str] = {
    "EFAULT": (
        "KVM could not reach the host memory behind a memslot the guest touched: the "
        "memslot's userspace memory is gone or was never mapped (x86 mmu.c "
        "kvm_handle_error_pfn(), arm64 mmu.c user_mem_abort()); keep the mapping for as long "
        "as the memslot exists, or delete the memslot first"
    ),
    "ENXIO": (
        "an in-kernel interrupt controller is incomplete: on arm64 the vGIC's distributor or "
        "a redistributor address was never set (vgic-v2.c vgic_v2_map_resources(), vgic-v3.c "
        "vgic_v3_map_resources() at the first KVM_RUN); set every frame's address before "
        "running a vCPU"
    ),
    "EINVAL": (
        "KVM refused the VM or vCPU state at entry: on arm64 vGIC frames that overlap "
        "(vgic_v3_map_resources() -> vgic_v3_check_base()), on x86 sync registers it does "
        "not know (x86.c kvm_arch_vcpu_ioctl_run()); check the kernel log and the set-up "
        "calls before the first KVM_RUN"
    ),
    "EBUSY": (
        "on arm64 a vGIC v3 that was never initialized (KVM_DEV_ARM_VGIC_CTRL_INIT, "
        "vgic_v3_map_resources()); initialize it before running a vCPU"
    ),
    "ENOEXEC": (
        "a vCPU that was never initialized (arm64 KVM_ARM_VCPU_INIT, "
        "kvm_arch_vcpu_run_pid_change()); initialize every vCPU before running it"
    ),
    "EINTR": (
        "a signal for the thread interrupted the run (KVM_EXIT_INTR); a VMM retries, so this "
        "is harmless unless it never stops"
    ),
}


def known_errno(name: str) -> bool:
    """Whether ``name`` is an errno name (EFAULT, ...) the C library knows."""
    return name in _ERRNO_NAMES


_ERRNO_NAMES = frozenset(errno.errorcode.values())
ERRNO_NAMES = tuple(sorted(_ERRNO_NAMES))
