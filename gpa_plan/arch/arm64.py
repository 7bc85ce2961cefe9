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

from collections.abc import Sequence
from typing import Any

from gpa_plan.arch.base import (
    ArchSpec,
    DeviceType,
    Effect,
    Handler,
    HostCondition,
    HostFact,
    Outcome,
    ProbeDevice,
    RecordFacts,
    SelftestsDefaults,
    SelftestsVMFacts,
    SyscallAbi,
    Ucall,
    io_bus_cells,
    mmio_ucall_yaml,
    outcome_table,
)
from gpa_plan.ranges import hex_addr

_MAPPED = "kvm_handle_guest_abort() -> user_mem_abort() maps the page at stage 2; no exit"
_MAPPED_RO = "kvm_handle_guest_abort() -> user_mem_abort() maps the read-only page; no exit"
_ABORT = "kvm_handle_guest_abort(): "
_NOSLOT = _ABORT + "no memslot -> io_mem_abort()"
_ROSLOT = _ABORT + "write to a read-only memslot -> io_mem_abort()"

_BUS_READ, _BUS_WRITE = io_bus_cells("", "")
# kvm_handle_guest_abort(): an instruction abort outside a memslot is not MMIO: -ENOEXEC,
# then kvm_inject_sea_iabt() (Linux 7.2.13; older kernels called it kvm_inject_pabt()).
_FETCH_FAULT = Effect(
    Outcome.GUEST_FAULT,
    _ABORT + "instruction fetch outside a memslot -> kvm_inject_sea_iabt(): "
    "instruction abort (synchronous external abort) injected",
)

# arch/arm64/kvm/mmio.c io_mem_abort() (Linux 7.2.13) tests the syndrome before it offers
# the access to the KVM_MMIO_BUS, so this holds for the vGIC, ioeventfds and coalesced zones as
# for an exit: !kvm_vcpu_dabt_isvalid() -> KVM_EXIT_ARM_NISV when
# KVM_ARCH_FLAG_RETURN_NISV_IO_ABORT_TO_USER is set (arm.c, KVM_CAP_ARM_NISV_TO_USER), a
# protected VM gets kvm_inject_sea_dabt(), else -ENOSYS, which kvm_handle_guest_abort()
# returns out of KVM_RUN. The instructions without a valid ISV are the architecture's (ESR_ELx
# ISS, ISV=0): pairs, writeback forms, SIMD&FP registers, exclusives.
_NO_SYNDROME = (
    "this outcome holds only for a single load or store of a general-purpose register (a data "
    "abort with a valid syndrome, ISV=1); any other instruction here (a load/store pair, a pre- or"
    " post-indexed writeback form, a SIMD&FP register, a load/store exclusive) has no valid "
    "syndrome, and io_mem_abort() makes KVM_RUN fail with ENOSYS, or exits with KVM_EXIT_ARM_NISV "
    "once the VMM enabled KVM_CAP_ARM_NISV_TO_USER, before any in-kernel device is asked (a "
    "protected VM gets an external abort)"
)

# arch/arm64/kvm/arm.c kvm_arch_vcpu_run_pid_change() -> vgic-init.c kvm_vgic_map_resources()
# at the first KVM_RUN (Linux 7.2.13): vgic_v2_map_resources() (vgic-v2.c) wants both GICv2
# addresses, vgic_v3_map_resources() (vgic-v3.c) a redistributor for every vCPU, then the
# distributor; either returns -ENXIO, and kvm_vgic_map_resources() then calls kvm_vm_dead(),
# after which kvm_vm_ioctl() and kvm_vcpu_ioctl() (virt/kvm/kvm_main.c) return -EIO.
_MAP_RESOURCES = (
    "the first KVM_RUN fails with ENXIO ({function}(), from kvm_vgic_map_resources(): {why}) "
    "and KVM marks the VM dead, so every later ioctl on it fails with EIO"
)
_V2_MISSING = _MAP_RESOURCES.format(
    function="vgic_v2_map_resources", why="both the distributor and the CPU interface "
    "addresses must be set"
)

KiB = 1024
_VGIC_API = "KVM_SET_DEVICE_ATTR(KVM_DEV_ARM_VGIC_GRP_ADDR)"

# Sizes and alignments from arch/arm64/include/uapi/asm/kvm.h (KVM_VGIC_*_SIZE),
# arch/arm64/kvm/vgic/vgic-kvm-device.c kvm_vgic_addr() / vgic_check_iorange() and vgic-its.c
# vgic_its_set_attr() (Linux 7.2.13): base and size aligned to 4 KiB for GICv2, 64 KiB for
# GICv3 and the ITS.
# virt/kvm/kvm_main.c kvm_ioctl_create_device(): ENODEV when no ops are registered for the
# type; arch/arm64/kvm/vgic/vgic-kvm-device.c kvm_register_vgic_device() registers GICv2 on a
# GICv2 host, and on a GICv3 host only with a GICV resource (vgic-v3.c vgic_v3_probe());
# kvm_vgic_create() (vgic-init.c) refuses GICv2 with ENODEV there too (Linux 7.2.13).
_NO_DEVICE = (
    "KVM_CREATE_DEVICE fails with ENODEV (kvm_ioctl_create_device(): no {} device on this "
    "host)"
)
# vgic-v3.c vgic_v3_probe(): a GICv3 host offers a vGICv2 only with GICv2 compatibility (a
# GICV region in its firmware tables); many have none (Linux 7.2.13).
_NEEDS_V2 = HostCondition(
    "vgic_v2",
    _NO_DEVICE.format("GICv2"),
    "GICv3 hosts without GICv2 compatibility (no GICV region: vgic_v3_probe())",
)
_NEEDS_V3 = HostCondition("vgic_v3", _NO_DEVICE.format("GICv3"))
_NEEDS_ITS = HostCondition("vgic_its", _NO_DEVICE.format("ITS"))

_DEVICES = (
    DeviceType(
        "vgic-v2-dist",
        "GICv2 distributor (KVM_VGIC_V2_DIST_SIZE)",
        Handler.KERNEL,
        size=4 * KiB,
        align=4 * KiB,
        kvm_api=_VGIC_API,
        beyond_pa_errno="E2BIG",
        irqchip_model="GICv2",
        missing_refusal=_V2_MISSING,
        host_needs=_NEEDS_V2,
    ),
    DeviceType(
        "vgic-v2-cpu",
        "GICv2 CPU interface (KVM_VGIC_V2_CPU_SIZE)",
        Handler.KERNEL,
        size=8 * KiB,
        align=4 * KiB,
        kvm_api=_VGIC_API,
        beyond_pa_errno="E2BIG",
        irqchip_model="GICv2",
        missing_refusal=_V2_MISSING,
        host_needs=_NEEDS_V2,
    ),
    DeviceType(
        "vgic-v3-dist",
        "GICv3 distributor (KVM_VGIC_V3_DIST_SIZE)",
        Handler.KERNEL,
        size=64 * KiB,
        align=64 * KiB,
        kvm_api=_VGIC_API,
        beyond_pa_errno="E2BIG",
        irqchip_model="GICv3",
        missing_refusal=_MAP_RESOURCES.format(
            function="vgic_v3_map_resources", why="the distributor address is not set"
        ),
        host_needs=_NEEDS_V3,
    ),
    DeviceType(
        "vgic-v3-redist",
        "GICv3 redistributors, 128 KiB per vCPU (KVM_VGIC_V3_REDIST_SIZE)",
        Handler.KERNEL,
        per_vcpu=128 * KiB,
        align=64 * KiB,
        kvm_api=_VGIC_API,
        beyond_pa_errno="E2BIG",
        irqchip_model="GICv3",
        frame_may_repeat=True,
        missing_refusal=_MAP_RESOURCES.format(
            function="vgic_v3_map_resources", why="no vCPU has a redistributor"
        ),
        host_needs=_NEEDS_V3,
    ),
    DeviceType(
        "vgic-its",
        "GICv3 ITS (KVM_VGIC_V3_ITS_SIZE)",
        Handler.KERNEL,
        size=128 * KiB,
        align=64 * KiB,
        kvm_api="KVM_SET_DEVICE_ATTR(KVM_VGIC_ITS_ADDR_TYPE)",
        beyond_pa_errno="E2BIG",
        host_needs=_NEEDS_ITS,
    ),
)


# tools/testing/selftests/kvm/include/arm64/gic.h (Linux 7.2.13): GITS_BASE_GPA 0x8000000,
# then the ITS (128 KiB), the distributor (64 KiB) and the redistributor frames (128 KiB each,
# KVM_VGIC_V3_REDIST_SIZE).
GITS_BASE_GPA = 0x0800_0000
GICD_BASE_GPA = GITS_BASE_GPA + 0x2_0000
GICR_BASE_GPA = GICD_BASE_GPA + 0x1_0000


def _selftests_sections(vm: SelftestsVMFacts, ucall_base: str) -> str:
    """The default VM's vGICv3 and its ucall page (lib/arm64/processor.c, lib/arm64/ucall.c)."""
    redist_end = GICR_BASE_GPA + vm.vcpus * 0x2_0000
    return (
        "devices:\n"
        "  # lib/arm64/processor.c kvm_arch_vm_post_create(vm, nr_vcpus): every\n"
        "  # default VM on a host with a vGICv3 gets one, __vgic_v3_setup(vm, nr_vcpus, 64)\n"
        "  # (test_disable_default_vgic() opts out): the distributor at GICD_BASE_GPA and\n"
        "  # nr_vcpus redistributor frames at GICR_BASE_GPA, identity-mapped\n"
        "  # (include/arm64/gic.h: GITS_BASE_GPA 0x8000000,\n"
        "  # GICD = GITS + 128 KiB, GICR = GICD + 64 KiB).\n"
        "  - name: gicd\n"
        "    type: vgic-v3-dist\n"
        f"    base: {hex_addr(GICD_BASE_GPA)}\n"
        "    identity_map: true\n"
        "  - name: gicr\n"
        "    type: vgic-v3-redist\n"
        f"    base: {hex_addr(GICR_BASE_GPA)}\n"
        f"    vcpus: {vm.vcpus}                   "
        f"# {vm.vcpus} * 128 KiB, ends at {hex_addr(redist_end)}\n"
        "    identity_map: true\n"
        "  # The ITS (vgic_its_setup(), lib/arm64/gic_v3_its.c) sits at GITS_BASE_GPA\n"
        "  # 0x0800_0000, 128 KiB, only when a test creates it:\n"
        "  #   - name: gits\n"
        "  #     type: vgic-its\n"
        "  #     base: 0x0800_0000\n"
        "  #     identity_map: true\n"
        "\n" + mmio_ucall_yaml(vm, ucall_base, "arm64", "arm64")
    )



# The frame each vGIC device type sets (KVM_VGIC_V2_ADDR_TYPE_DIST/CPU,
# KVM_VGIC_V3_ADDR_TYPE_DIST/REDIST/REDIST_REGION, arch/arm64/include/uapi/asm/kvm.h).
_VGIC_FRAMES = {
    "vgic-v2-dist": (2, "dist"),
    "vgic-v2-cpu": (2, "cpu"),
    "vgic-v3-dist": (3, "dist"),
    "vgic-v3-redist": (3, "redist"),
}
_REDIST_FRAME = 128 * KiB


def _probe_steps(devices: Sequence[ProbeDevice], vcpus: int) -> list[dict[str, Any]]:
    """As QEMU's virt machine makes them (hw/intc/arm_gic_kvm.c, arm_gicv3_kvm.c): the vGIC
    with KVM_CREATE_DEVICE (kvm_vgic_create(), vgic-init.c), the vCPUs, each frame's address
    with KVM_SET_DEVICE_ATTR (kvm_vgic_addr(), vgic-kvm-device.c), the ITS
    (vgic_its_create()), then KVM_DEV_ARM_VGIC_CTRL_INIT. A redistributor device is given as
    its `redist` key says: the legacy KVM_VGIC_V3_ADDR_TYPE_REDIST, or a REDIST_REGION of its
    size's frames (the default, REDIST_DEFAULT, as QEMU gives them)."""
    from gpa_plan.layout.models import REDIST_DEFAULT  # the layout format imports arch/

    frames = [(d, *_VGIC_FRAMES[d.type]) for d in devices if d.type in _VGIC_FRAMES]
    its = [d for d in devices if d.type == "vgic-its"]
    steps: list[dict[str, Any]] = []
    if frames:
        version = frames[0][1]
        steps.append({"id": "vgic", "op": "vgic", "version": version, "objects": []})
    steps.append({"id": "vcpus", "op": "vcpus", "count": vcpus, "objects": []})
    for device, _, frame in frames:
        step: dict[str, Any] = {
            "id": f"vgic_addr:{device.name}",
            "op": "vgic_addr",
            "frame": frame,
            "base": device.range.start,
            "objects": [device.name],
        }
        given = getattr(device.entry, "redist", None) or REDIST_DEFAULT
        if frame == "redist" and given == "regions":
            step["frame"] = "redist_region"
            step["count"] = device.range.size // _REDIST_FRAME
        steps.append(step)
    for device in its:
        steps.append(
            {"id": f"its:{device.name}", "op": "its", "base": device.range.start,
             "objects": [device.name]}
        )
    if frames:
        steps.append({"id": "vgic_init", "op": "vgic_init", "objects": []})
    return steps


# The native arm64 calls a recording may stop on: arch/arm64/tools/syscall_64.tbl (the
# generic numbering, its "common" and "64" entries; arm64 has no dup2, fork or vfork) and
# AUDIT_ARCH_AARCH64 of include/uapi/linux/audit.h (EM_AARCH64 | __AUDIT_ARCH_64BIT |
# __AUDIT_ARCH_LE), Linux 7.2.13.
SYSCALL_ABI = SyscallAbi(
    audit_arch=0xC000_00B7,
    numbers={
        "eventfd2": 19,
        "dup": 23,
        "dup3": 24,
        "fcntl": 25,
        "ioctl": 29,
        "openat": 56,
        "close": 57,
        "exit": 93,
        "exit_group": 94,
        "munmap": 215,
        "mremap": 216,
        "clone": 220,
        "execve": 221,
        "mmap": 222,
        "memfd_create": 279,
        "execveat": 281,
        "clone3": 435,
        "close_range": 436,
    },
)


# arch/arm64/include/asm/kvm_mmu.h KVM_PHYS_SHIFT: the IPA size of a VM whose type gives none.
KVM_PHYS_SHIFT = 40


def _arm64_ipa_bits(vm_type: int) -> int:
    """arch/arm64/kvm/mmu.c kvm_init_ipa_range(): KVM_VM_TYPE_ARM_IPA_SIZE(type), bits 0-7,
    else KVM_PHYS_SHIFT (40)."""
    return (vm_type & 0xFF) or KVM_PHYS_SHIFT


RECORD_FACTS = RecordFacts(
    pa_bits_of_vm_type=_arm64_ipa_bits,
    irqchip_note=(
        "KVM_CREATE_IRQCHIP made a vGICv2 (arch/arm64/kvm/arm.c kvm_arch_vm_ioctl() -> "
        "kvm_vgic_create()): its frames are where KVM_ARM_SET_DEVICE_ADDR put them."
    ),
)


ARM64 = ArchSpec(
    name="arm64",
    elf_machine="EM_AARCH64",
    machine="aarch64",
    syscall_abi=SYSCALL_ABI,
    record=RECORD_FACTS,
    # arch/arm64/kvm/mmu.c kvm_init_ipa_range() (from kvm_init_stage2_mmu()), Linux 7.2.13:
    # type 0 means KVM_PHYS_SHIFT (40); an explicit IPA size must lie in
    # [ARM64_MIN_PARANGE_BITS (32), kvm_ipa_limit], else EINVAL.
    default_pa_bits=KVM_PHYS_SHIFT,
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
    # arch/arm64/kvm/mmu.c kvm_init_ipa_range(): EINVAL outside
    # [ARM64_MIN_PARANGE_BITS, kvm_ipa_limit] (Linux 7.2.13).
    pa_bits_refusal="KVM_CREATE_VM fails with EINVAL",
    # tools/testing/selftests/kvm (Linux 7.2.13): the VM_MODE_P*V*_4K/16K/64K modes of
    # lib/kvm_util.c vm_guest_mode_params[]; lib/arm64/ucall.c, an MMIO write past slot 0;
    # include/arm64/gic.h GITS_BASE_GPA 0x8000000, below the default vGIC.
    selftests=SelftestsDefaults(
        guest_page_sizes=(0x1000, 0x4000, 0x1_0000),
        host_page_sizes=(0x1000, 0x4000, 0x1_0000),
        pa_bits=40,
        ucall=Ucall.MMIO,
        first_device=GITS_BASE_GPA,
        first_device_name="the vGIC ITS base GITS_BASE_GPA",
        preamble=(
            "# pa_bits: arm64 VM_MODE_DEFAULT is chosen at run time from the host\n"
            "# (kvm_selftest_arch_init() -> guest_modes_append_default()); 40 is the P40V48 mode "
            "of a\n# host with KVM's default 40-bit IPA size.\n"
        ),
        sections=_selftests_sections,
    ),
    devices=_DEVICES,
    instruction_align=4,
    probe_steps=_probe_steps,
    verify_caps=(
        "KVM_CAP_NR_MEMSLOTS",
        "KVM_CAP_READONLY_MEM",
        "KVM_CAP_ARM_VM_IPA_SIZE",
        "KVM_CAP_ARM_NISV_TO_USER",
        "KVM_CAP_IOEVENTFD",
        "KVM_CAP_COALESCED_MMIO",
    ),
    io_instruction_note=_NO_SYNDROME,
    # What `gpa-plan host` reads on an arm64 host (gpa_plan/probe/host.py says how).
    host_facts=(
        HostFact("ipa_limit", int, "the largest IPA size, KVM_CAP_ARM_VM_IPA_SIZE"),
        HostFact("ipa_above_48", bool, "an IPA size above 48 bits is possible"),
        HostFact("vgic_v2", bool, "KVM_CREATE_DEVICE can create a vGICv2"),
        HostFact("vgic_v3", bool, "KVM_CREATE_DEVICE can create a vGICv3"),
        HostFact("vgic_its", bool, "KVM_CREATE_DEVICE can create an ITS"),
        HostFact("nisv_to_user", bool, "KVM_CAP_ARM_NISV_TO_USER"),
    ),
    # arch/arm64/kvm/mmu.c kvm_init_ipa_range(), from kvm_init_stage2_mmu() at KVM_CREATE_VM:
    # an IPA size above kvm_ipa_limit is EINVAL (Linux 7.2.13).
    host_pa_limit=HostCondition(
        "ipa_limit",
        "KVM_CREATE_VM fails with EINVAL (kvm_init_ipa_range(), from kvm_init_stage2_mmu())",
        # kvm_ipa_limit follows the CPU's PARange: 40 bits on the smallest cores KVM runs on.
        "hosts whose IPA limit (the CPU's PARange, KVM_CAP_ARM_VM_IPA_SIZE) is below {bits} bits",
    ),
)
