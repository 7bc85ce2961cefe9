"""The arm64 probe: the vGIC steps, and a guest that makes each access with the MMU off.

The VM's IPA size is the plan's ``vm.pa_bits`` (KVM_VM_TYPE_ARM_IPA_SIZE). The guest runs at
EL1 with the MMU off (the state KVM_ARM_VCPU_INIT resets it to, kvm_reset_vcpu() in
arch/arm64/kvm/reset.c), so every address it names is the IPA itself and every data access is
of Device memory at stage 1. Keep accesses aligned to their width: real CPUs fault an
unaligned Device access in the guest (an alignment fault, seen as guest-exception) unless
stage 2 makes the memory Normal (FEAT_S2FWB, in memslots only); QEMU 7.2's emulation never
does.

The probe's memslot (``plan["probe_area"]``) holds a vector table (VBAR_EL1) and one short
routine per kind of access. Before each probe the runner sets PC to the routine, x0 to the
address, x1 to the value and x2 to ``plan["report"]``, a free GPA with no memslot; the routine
makes the access with one load or store (in a memslot, between cache maintenance: see
`_routines`) and stores x1 (what a read returned) to the report address, an MMIO exit that
ends the probe. An exception, whichever the vector, stores ESR_EL1, FAR_EL1 and the vector's
offset to the report address (offsets 8, 16 and 24) instead. A fetch branches (BR) to the
address, where the runner seeded a ``brk``: the BRK exception with the seeded immediate says
the fetch reached memory.

Accesses use the single-register LDR/STR forms of each width, which give the hypervisor a valid
syndrome (ESR_EL2.ISV), so an access that misses every memslot exits as KVM_EXIT_MMIO. A
probe's optional ``"form"`` asks for an access without a valid syndrome instead: ``"pair"``
(LDP/STP, widths 4 and 8: two registers, twice the width) or ``"writeback"`` (a post-index
LDR/STR of any width). Such an access outside memory makes KVM_RUN fail with ENOSYS, or exit
with KVM_EXIT_ARM_NISV when the plan's ``vm.nisv_to_user`` enabled KVM_CAP_ARM_NISV_TO_USER
(io_mem_abort() in arch/arm64/kvm/mmio.c).
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
import struct
import weakref
from typing import Any

from . import kvm
from .plan import ProbeResult
from .run import GuestError, PlanError, VmState, deadline, probe_result

# --- uapi (include/uapi/linux/kvm.h and arch/arm64/include/uapi/asm/kvm.h, Linux 7.2.13) ----

# struct kvm_vcpu_init {u32 target; u32 features[7]}; struct kvm_one_reg {u64 id; u64 addr}
VCPU_INIT = struct.Struct("<I7I")
ONE_REG = struct.Struct("<QQ")
KVM_SET_ONE_REG = kvm.iow(0xAC, ONE_REG.size)
KVM_ARM_VCPU_INIT = kvm.iow(0xAE, VCPU_INIT.size)
KVM_ARM_PREFERRED_TARGET = kvm.ior(0xAF, VCPU_INIT.size)
KVM_ARM_VCPU_POWER_OFF = 0  # a feature bit: the vCPU starts powered off (PSCI)

KVM_DEV_TYPE_ARM_VGIC_V2 = 5
KVM_DEV_TYPE_ARM_VGIC_V3 = 7
KVM_DEV_TYPE_ARM_VGIC_ITS = 8
KVM_DEV_ARM_VGIC_GRP_ADDR = 0
KVM_DEV_ARM_VGIC_GRP_CTRL = 4
KVM_DEV_ARM_VGIC_CTRL_INIT = 0
# The address attribute of each frame ("dist" by vGIC version). KVM itself refuses a frame of
# the other version (vgic_check_type(): ENODEV, returned as ENXIO by vgic_set_common_attr()).
ADDR_TYPES = {
    "dist": {2: 0, 3: 2},  # KVM_VGIC_V2_ADDR_TYPE_DIST, KVM_VGIC_V3_ADDR_TYPE_DIST
    "cpu": {2: 1, 3: 1},  # KVM_VGIC_V2_ADDR_TYPE_CPU
    "redist": {2: 3, 3: 3},  # KVM_VGIC_V3_ADDR_TYPE_REDIST (the legacy single address)
    "redist_region": {2: 5, 3: 5},  # KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION
}
KVM_VGIC_ITS_ADDR_TYPE = 4
# A redistributor region's value: count in bits 63:52, base in 51:16, index in 11:0
# (KVM_VGIC_V3_RDIST_* in arch/arm64/kvm/vgic/vgic.h, read by kvm_vgic_addr()).
RDIST_COUNT_SHIFT = 52
RDIST_BASE_MASK = ((1 << 52) - 1) & ~0xFFFF

KVM_CAP_ARM_NISV_TO_USER = kvm.CAPS["KVM_CAP_ARM_NISV_TO_USER"]
KVM_CAP_ARM_VM_IPA_SIZE = kvm.CAPS["KVM_CAP_ARM_VM_IPA_SIZE"]
# The coalesced MMIO ring is this page of the vCPU's mapping (KVM_COALESCED_MMIO_PAGE_OFFSET).
COALESCED_MMIO_PAGE_OFFSET = 1
# struct kvm_run: immediate_exit is the byte after request_interrupt_window.
RUN_IMMEDIATE_EXIT_OFFSET = 1
RUN_NISV = struct.Struct("<QQ")  # arm_nisv: esr_iss, fault_ipa

# One-reg ids: KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | (offset in kvm_regs / 4),
# or | KVM_REG_ARM64_SYSREG | op0, op1, CRn, CRm, op2.
_REG_ARM64_U64 = 0x6000000000000000 | 0x0030000000000000
_REG_CORE = _REG_ARM64_U64 | (0x0010 << 16)


def core_reg(offset: int) -> int:
    return _REG_CORE | (offset // 4)


def x_reg(n: int) -> int:
    return core_reg(8 * n)


REG_PC = core_reg(8 * 32)  # user_pt_regs: regs[31], sp, pc, pstate
REG_PSTATE = core_reg(8 * 33)
REG_VBAR_EL1 = _REG_ARM64_U64 | (0x0013 << 16) | (3 << 14) | (0 << 11) | (12 << 7)
# EL1 using SP_EL1, with D, A, I and F masked: the state a vCPU resets to.
PSTATE_EL1H_MASKED = 0x3C5

# --- the guest's code (A64 encodings, Arm ARM C6) --------------------------------------------

# Registers: x0 the address, x1 the value, x2 the report address, x3 a pair's second
# register, x9 scratch.
_SIZE = {1: 0, 2: 1, 4: 2, 8: 3}


# LDRB/STRB of each addressing form; bits 31:30 give the width.
_LDR_STR = {
    (True, False): 0x39400000,  # LDRB (immediate, unsigned offset)
    (False, False): 0x39000000,  # STRB (immediate, unsigned offset)
    (True, True): 0x38400400,  # LDRB (immediate, post-index)
    (False, True): 0x38000400,  # STRB (immediate, post-index)
}


def ldr_str(width: int, load: bool, writeback: bool) -> int:
    """LDR/STR x1 (w1 below 8 bytes), [x0]: unsigned offset 0, or post-index #0."""
    base = _LDR_STR[(load, writeback)]
    return base | (_SIZE[width] << 30) | (0 << 5) | 1


def ldp_stp(width: int, load: bool) -> int:
    """LDP x1, x3, [x0] or STP x1, x1, [x0] (w registers for width 4)."""
    base = (0xA9000000 if width == 8 else 0x29000000) | (0x400000 if load else 0)
    second = 3 if load else 1
    return base | (second << 10) | (0 << 5) | 1


def str_x(rt: int, rn: int, offset: int) -> int:
    """STR Xt, [Xn, #offset] (offset a multiple of 8)."""
    return 0xF9000000 | ((offset // 8) << 10) | (rn << 5) | rt


def mrs(rt: int, op1: int, crn: int, crm: int, op2: int) -> int:
    """MRS Xt, S3_<op1>_C<crn>_C<crm>_<op2>."""
    return 0xD5300000 | (1 << 19) | (op1 << 16) | (crn << 12) | (crm << 8) | (op2 << 5) | rt


def movz(rd: int, imm16: int) -> int:
    return 0xD2800000 | (imm16 << 5) | rd


BR_X0 = 0xD61F0000
DC_CIVAC_X0 = 0xD50B7E20  # DC CIVAC, x0: clean and invalidate to the point of coherency
DSB_SY = 0xD5033F9F
ISB = 0xD5033FDF
IC_IALLU = 0xD508751F
B_SELF = 0x14000000
FETCH_MARK = 0x6770  # the immediate of the seeded brk
BRK_FETCH_MARK = 0xD4200000 | (FETCH_MARK << 5)
MRS_ESR_EL1 = mrs(9, 0, 5, 2, 0)
MRS_FAR_EL1 = mrs(9, 0, 6, 0, 0)

REPORT_DONE, REPORT_ESR, REPORT_FAR, REPORT_VECTOR = 0, 8, 16, 24
VECTOR_COUNT, VECTOR_STRIDE = 16, 0x80


def vector_entry(index: int) -> list[int]:
    return [
        MRS_ESR_EL1,
        str_x(9, 2, REPORT_ESR),
        MRS_FAR_EL1,
        str_x(9, 2, REPORT_FAR),
        movz(9, index * VECTOR_STRIDE),
        str_x(9, 2, REPORT_VECTOR),
        B_SELF,
    ]


# Exception classes (ESR_ELx.EC) a probe can meet.
EXCEPTION_CLASSES = {
    0x00: "unknown reason",
    0x20: "instruction abort from a lower EL",
    0x21: "instruction abort",
    0x22: "PC alignment fault",
    0x24: "data abort from a lower EL",
    0x25: "data abort",
    0x26: "SP alignment fault",
    0x3C: "BRK",
}
EC_BRK = 0x3C
FORMS = ("single", "pair", "writeback")


def describe_esr(esr: int, far: int, vector: int) -> str:
    ec = (esr >> 26) & 0x3F
    name = EXCEPTION_CLASSES.get(ec, "another exception class")
    return f"ESR_EL1 {esr:#x} (EC {ec:#x}: {name}), FAR_EL1 {far:#x}, vector +{vector:#x}"


# --- the VM ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _ipa_size_selectable() -> bool:
    """Whether KVM_CREATE_VM takes an IPA size (KVM_CAP_ARM_VM_IPA_SIZE, since Linux 4.20)."""
    try:
        probe_kvm = kvm.Kvm()
    except kvm.KvmError:
        return True  # KVM_CREATE_VM will say what is wrong
    try:
        return probe_kvm.check_extension(KVM_CAP_ARM_VM_IPA_SIZE) > 0
    finally:
        probe_kvm.close()


def vm_type(plan: dict[str, Any]) -> int:
    """KVM_VM_TYPE_ARM_IPA_SIZE(pa_bits), or 0 (40 bits) on a kernel without the capability.

    A pa_bits above the host's largest IPA size makes KVM_CREATE_VM fail with EINVAL
    (kvm_init_ipa_range() in arch/arm64/kvm/mmu.c)."""
    pa_bits = int(plan.get("vm", {}).get("pa_bits", 40))
    return pa_bits & 0xFF if _ipa_size_selectable() else 0


VM_TYPE = vm_type


class ArmVm:
    """What the vGIC steps made in one VM."""

    def __init__(self) -> None:
        self.vgic_fd = -1
        self.vgic_version = 0
        self.its_fd = -1
        self.next_region = 0
        self.initialized = False  # whether KVM_DEV_ARM_VGIC_CTRL_INIT was asked

    def close(self) -> None:
        for fd in (self.vgic_fd, self.its_fd):
            if fd >= 0:
                os.close(fd)
        self.vgic_fd = self.its_fd = -1


_VMS: weakref.WeakKeyDictionary[Any, ArmVm] = weakref.WeakKeyDictionary()


def arm_vm(state: VmState) -> ArmVm:
    if state not in _VMS:
        _VMS[state] = ArmVm()
    return _VMS[state]


def _set_attr(fd: int, group: int, attr: int, value: int) -> str | None:
    """KVM_SET_DEVICE_ATTR; on a device that was never made (fd -1), EBADF as the call gives."""
    if fd < 0:
        return "EBADF"
    buf = ctypes.c_uint64(value)
    return kvm.try_ioctl(
        fd, kvm.KVM_SET_DEVICE_ATTR, kvm.DEVICE_ATTR.pack(0, group, attr, ctypes.addressof(buf))
    )


def _create_device(vm_fd: int, dev_type: int) -> tuple[str | None, int]:
    request = bytearray(kvm.CREATE_DEVICE.pack(dev_type, 0, 0))
    refused = kvm.try_ioctl(vm_fd, kvm.KVM_CREATE_DEVICE, request)
    return refused, (-1 if refused else kvm.CREATE_DEVICE.unpack(request)[1])


def _vgic(state: VmState, step: dict[str, Any]) -> str | None:
    """KVM_CREATE_DEVICE of the vGIC (kvm_vgic_create()) and, with "its", of its ITS."""
    vm = arm_vm(state)
    version = int(step["version"])
    refused, fd = _create_device(
        state.vm_fd, KVM_DEV_TYPE_ARM_VGIC_V2 if version == 2 else KVM_DEV_TYPE_ARM_VGIC_V3
    )
    if refused:
        return refused
    vm.vgic_fd, vm.vgic_version = fd, version
    if step.get("its"):
        refused, vm.its_fd = _create_device(state.vm_fd, KVM_DEV_TYPE_ARM_VGIC_ITS)
    return refused


def _its(state: VmState, step: dict[str, Any]) -> str | None:
    """KVM_CREATE_DEVICE of an ITS (vgic_its_create()), then its address (vgic_its_set_attr())."""
    vm = arm_vm(state)
    refused, vm.its_fd = _create_device(state.vm_fd, KVM_DEV_TYPE_ARM_VGIC_ITS)
    if refused:
        return refused
    return _set_attr(
        vm.its_fd, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_ITS_ADDR_TYPE, int(step["base"])
    )


def _vgic_addr(state: VmState, step: dict[str, Any]) -> str | None:
    """KVM_SET_DEVICE_ATTR(KVM_DEV_ARM_VGIC_GRP_ADDR) of one frame (kvm_vgic_addr()).

    A redistributor region holds ``count`` redistributors (default: the vCPUs made so far, at
    least one). Without the device the step is made on no file descriptor, as a VMM that went
    on would, and KVM never sees it: EBADF.
    """
    vm = arm_vm(state)
    frame, base = step["frame"], int(step["base"])
    if frame == "its":
        return _set_attr(vm.its_fd, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_ITS_ADDR_TYPE, base)
    if frame not in ADDR_TYPES:
        known = ", ".join([*ADDR_TYPES, "its"])
        raise PlanError(f"step {step.get('id')!r}: unknown vGIC frame {frame!r}; known: {known}")
    attr = ADDR_TYPES[frame][vm.vgic_version or 3]
    value = base
    if frame == "redist_region":
        count = int(step.get("count") or max(len(state.vcpu_fds), 1))
        value = (count << RDIST_COUNT_SHIFT) | (base & RDIST_BASE_MASK) | vm.next_region
        vm.next_region += 1
    return _set_attr(vm.vgic_fd, KVM_DEV_ARM_VGIC_GRP_ADDR, attr, value)


def _vgic_init(state: VmState) -> str | None:
    """KVM_DEV_ARM_VGIC_CTRL_INIT on the vGIC (vgic_init(); all vCPUs must exist) and its ITS."""
    vm = arm_vm(state)
    refused = _set_attr(vm.vgic_fd, KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_CTRL_INIT, 0)
    if refused is None and vm.its_fd >= 0:
        refused = _set_attr(vm.its_fd, KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_CTRL_INIT, 0)
    vm.initialized = True
    return refused


def arch_step(state: VmState, step: dict[str, Any]) -> Any:
    """The vGIC steps: ``vgic``, ``vgic_addr``, ``its`` and ``vgic_init``; NotImplemented for
    others."""
    op = step.get("op")
    if op == "vgic":
        return _vgic(state, step)
    if op == "its":
        return _its(state, step)
    if op == "vgic_addr":
        return _vgic_addr(state, step)
    if op == "vgic_init":
        return _vgic_init(state)
    return NotImplemented


# --- the guest -------------------------------------------------------------------------------


RoutineKey = tuple[str, int, str, bool]  # access, width (0 for a fetch), form, in memory


def _routine_key(access: str, width: int, form: str, in_memory: bool) -> RoutineKey:
    if access == "fetch":
        return (access, 0, "single", in_memory)
    return (access, width, form, in_memory)


def _routines() -> dict[RoutineKey, list[int]]:
    """The code of each access. Where the address is in a memslot, the access is wrapped in
    cache maintenance (DC CIVAC by address, then DSB; before a fetch also IC IALLU and ISB):
    with the MMU off the guest's accesses do not use the caches, the probe's seeds and checks
    from the host do, and a host without FEAT_S2FWB does not make the two agree by itself.
    Outside memslots KVM skips a cache maintenance instruction (kvm_handle_guest_abort()), so
    none is made there."""
    done = [str_x(1, 2, REPORT_DONE), B_SELF]
    clean = [DC_CIVAC_X0, DSB_SY]
    out: dict[RoutineKey, list[int]] = {
        ("fetch", 0, "single", False): [BR_X0, B_SELF],
        ("fetch", 0, "single", True): [*clean, IC_IALLU, DSB_SY, ISB, BR_X0, B_SELF],
    }
    for width in (1, 2, 4, 8):
        for access, load in (("read", True), ("write", False)):
            forms = {"single": ldr_str(width, load, False), "writeback": ldr_str(width, load, True)}
            if width >= 4:
                forms["pair"] = ldp_stp(width, load)
            for form, instruction in forms.items():
                out[(access, width, form, False)] = [instruction, *done]
                out[(access, width, form, True)] = [*clean, instruction, *clean, *done]
    return out


class Guest:
    """The probe's guest: its memslot, code and vector table, and vCPU 0 set to run them."""

    def __init__(self, state: VmState, plan: dict[str, Any]) -> None:
        self.state = state
        self.usable = True
        self.facts: dict[str, Any] = {}
        self.report = int(plan["report"])
        self.vm = arm_vm(state)
        self.run_map: mmap.mmap | None = None
        try:
            area = plan["probe_area"]
            self.memslot = state.add_own_memslot(int(area["base"]), int(area["size"]))
            self._build(plan)
        except BaseException:
            self.close()
            raise

    def _build(self, plan: dict[str, Any]) -> None:
        state, vm = self.state, self.vm
        nisv = bool(plan.get("vm", {}).get("nisv_to_user", False))
        if nisv:
            request = kvm.ENABLE_CAP.pack(KVM_CAP_ARM_NISV_TO_USER, 0, 0, 0, 0, 0)
            self.facts["nisv_to_user"] = kvm.try_ioctl(state.vm_fd, kvm.KVM_ENABLE_CAP, request)
        if not state.vcpu_fds:
            refused = state.create_vcpus(1)
            if refused:
                raise GuestError(f"KVM_CREATE_VCPU failed with {refused}")
        target = bytearray(VCPU_INIT.size)
        refused = kvm.try_ioctl(state.vm_fd, KVM_ARM_PREFERRED_TARGET, target)
        if refused:
            raise GuestError(f"KVM_ARM_PREFERRED_TARGET failed with {refused}")
        self.facts["vcpu_target"] = VCPU_INIT.unpack(target)[0]
        for index, fd in enumerate(state.vcpu_fds):
            init = bytearray(target)
            if index:  # only vCPU 0 runs; the others wait powered off, as PSCI leaves them
                struct.pack_into("<I", init, 4, 1 << KVM_ARM_VCPU_POWER_OFF)
            refused = kvm.try_ioctl(fd, KVM_ARM_VCPU_INIT, bytes(init))
            if refused:
                raise GuestError(f"KVM_ARM_VCPU_INIT of vCPU {index} failed with {refused}")
        if vm.vgic_fd >= 0 and not vm.initialized:
            self.facts["vgic_init"] = _vgic_init(state)
        self.fd = state.vcpu_fds[0]
        self.run_map = mmap.mmap(self.fd, state.kvm.vcpu_mmap_size, mmap.MAP_SHARED)
        if len(self.run_map) >= (COALESCED_MMIO_PAGE_OFFSET + 1) * kvm.PAGE_SIZE:
            state.attach_ring(self.run_map, COALESCED_MMIO_PAGE_OFFSET)
        self._load_code()

    def _load_code(self) -> None:
        base = self.memslot.base
        if base % 0x800:
            raise GuestError(f"the probe area at {base:#x} is not 2 KiB aligned (VBAR_EL1)")
        table = []
        for index in range(VECTOR_COUNT):
            entry = vector_entry(index)
            table += entry + [0] * (VECTOR_STRIDE // 4 - len(entry))
        code = table
        self.entry: dict[RoutineKey, int] = {}
        for key, words in _routines().items():
            self.entry[key] = base + 4 * len(code)
            code += words
        if 4 * len(code) > self.memslot.size:
            raise GuestError(f"the probe area needs {4 * len(code):#x} bytes")
        self.state.poke(base, struct.pack(f"<{len(code)}I", *code))
        self.set_reg(REG_VBAR_EL1, base)

    # --- registers and runs ----------------------------------------------------------------

    def set_reg(self, reg: int, value: int) -> None:
        buf = ctypes.c_uint64(value)
        kvm.ioctl(self.fd, KVM_SET_ONE_REG, ONE_REG.pack(reg, ctypes.addressof(buf)))

    def _settle(self) -> None:
        """Complete the last MMIO exit (KVM_RUN with immediate_exit: kvm_handle_mmio_return()
        then back with EINTR), so that the PC set next is not advanced past its first
        instruction by the pending completion."""
        assert self.run_map is not None
        if kvm.exit_reason(self.run_map) != kvm.KVM_EXIT_MMIO:
            return
        self.run_map[RUN_IMMEDIATE_EXIT_OFFSET] = 1
        try:
            kvm.ioctl(self.fd, kvm.KVM_RUN)
        except OSError:
            pass
        finally:
            self.run_map[RUN_IMMEDIATE_EXIT_OFFSET] = 0

    def _run(self) -> str | None:
        """One KVM_RUN, bounded in time: None, or the errno's name."""
        with deadline(10.0):
            return kvm.try_ioctl(self.fd, kvm.KVM_RUN)

    def run(self, probe: Any) -> ProbeResult:
        access, width = probe["access"], int(probe.get("width", 1))
        form = probe.get("form", "single")
        address, value = int(probe["address"]), int(probe.get("value", 0))
        in_memory = self.state.in_memory(address, 4 if access == "fetch" else width)
        key = _routine_key(access, width, form, in_memory)
        if key not in self.entry:
            return probe_result(probe, "other", f"no {form} {access} of width {width}")
        self._seed(access, address, width, value)
        self._settle()
        self.state.quiet()
        for reg, reg_value in (
            (REG_PC, self.entry[key]),
            (REG_PSTATE, PSTATE_EL1H_MASKED),
            (x_reg(0), address),
            (x_reg(1), value),
            (x_reg(2), self.report),
        ):
            self.set_reg(reg, reg_value)
        return self._observe(probe)

    def _seed(self, access: str, address: int, width: int, value: int) -> None:
        mask = (1 << (8 * width)) - 1
        if access == "fetch":
            self.state.poke(address, struct.pack("<I", BRK_FETCH_MARK))
        elif access == "read":
            self.state.poke(address, (value & mask).to_bytes(width, "little"))
        else:
            self.state.poke(address, (~value & mask).to_bytes(width, "little"))

    def _observe(self, probe: Any) -> ProbeResult:
        """Run the guest to its report and say what the access met."""
        outcome = self._run_to_report(probe)
        if not isinstance(outcome, tuple):
            return outcome
        exits, report = outcome
        if exits:
            own = [text for is_own, text in exits if is_own]
            if own:
                return probe_result(probe, "mmio-exit", own[0])
            return probe_result(probe, "other", exits[0][1])
        if REPORT_VECTOR in report:
            esr, far = report.get(REPORT_ESR, 0), report.get(REPORT_FAR, 0)
            ec = (esr >> 26) & 0x3F
            if probe["access"] == "fetch" and ec == EC_BRK and esr & 0xFFFF == FETCH_MARK:
                return probe_result(probe, "memory", "fetched the seeded brk")
            detail = describe_esr(esr, far, report[REPORT_VECTOR])
            return probe_result(probe, "guest-exception", detail)
        if probe["access"] == "fetch":
            return probe_result(probe, "other", "the fetch returned without an exception")
        result: ProbeResult = self.state.finish(probe, report[REPORT_DONE])
        return result

    def _run_to_report(
        self, probe: Any
    ) -> ProbeResult | tuple[list[tuple[bool, str]], dict[int, int]]:
        """KVM_RUN until the guest's last report: (the MMIO exits met on the way, each with
        whether it is the probe's own access; the reports by offset), or the result of a run
        that ended otherwise. A read that exits is answered with zeros."""
        run = self.run_map
        assert run is not None
        exits: list[tuple[bool, str]] = []
        report: dict[int, int] = {}
        for _ in range(16):
            refused = self._run()
            if refused is not None:
                self.usable = False
                if refused == "EINTR":
                    return probe_result(probe, "other", "the guest did not finish in time")
                return probe_result(probe, "run-error", f"KVM_RUN failed with {refused}")
            reason = kvm.exit_reason(run)
            if reason == kvm.KVM_EXIT_ARM_NISV:
                esr_iss, ipa = RUN_NISV.unpack_from(run, kvm.RUN_UNION_OFFSET)
                detail = f"KVM_EXIT_ARM_NISV at {ipa:#x}, ESR ISS {esr_iss:#x}"
                return probe_result(probe, "nisv", detail)
            if reason == kvm.KVM_EXIT_INTERNAL_ERROR:
                self.usable = False
                suberror = kvm.RUN_INTERNAL.unpack_from(run, kvm.RUN_UNION_OFFSET)[0]
                return probe_result(probe, "internal-error", f"suberror {suberror}")
            if reason != kvm.KVM_EXIT_MMIO:
                self.usable = False
                name = kvm.KVM_EXIT_NAMES.get(reason, f"exit reason {reason}")
                return probe_result(probe, "other", f"{name} before the guest finished")
            phys, data, length, is_write = kvm.RUN_MMIO.unpack_from(run, kvm.RUN_UNION_OFFSET)
            offset = phys - self.report
            if is_write and offset in (REPORT_DONE, REPORT_ESR, REPORT_FAR, REPORT_VECTOR):
                report[offset] = int.from_bytes(data[:8], "little")
                if offset in (REPORT_DONE, REPORT_VECTOR):
                    return exits, report
                continue
            exits.append(_describe_mmio(probe, phys, data, length, bool(is_write)))
            if not is_write:
                run[kvm.RUN_UNION_OFFSET + 8 : kvm.RUN_UNION_OFFSET + 16] = bytes(8)
        self.usable = False
        return probe_result(probe, "other", "the guest kept exiting without finishing")

    def close(self) -> None:
        if self.run_map is not None:
            self.run_map.close()
            self.run_map = None
        self.vm.close()


def _describe_mmio(
    probe: Any, phys: int, data: bytes, length: int, is_write: bool
) -> tuple[bool, str]:
    """Whether the exit is the probe's own access (address, direction and width), and its
    description."""
    direction = "write" if is_write else "read"
    shown = f" of {int.from_bytes(data[:length], 'little'):#x}" if is_write else ""
    text = f"KVM_EXIT_MMIO at {phys:#x}: {direction} of {length} bytes{shown}"
    own = (
        probe["access"] == direction
        and phys == int(probe["address"])
        and length == int(probe.get("width", 1))
    )
    return own, text if own else f"{text}, not the probe's access"
