"""What the running kernel's KVM reports about this host (`gpa-plan host`, a host profile).

``host_facts()`` gives a JSON-ready dict (format 1)::

    {"format": 1,
     "kernel": {"release": "6.12.0-...", "machine": "x86_64"},   # os.uname()
     "arch": "x86_64" | "arm64" | null,                         # gpa-plan's name for it
     "capabilities": {"KVM_CAP_NR_MEMSLOTS": 32764, ...},       # KVM_CHECK_EXTENSION, /dev/kvm
     "facts": {"maxphyaddr": 46, ...},                          # the architecture's facts
     "sources": {"maxphyaddr": "KVM_GET_SUPPORTED_CPUID ...", ...},
     "unknown": {"real_mode_tss": "why it could not be read", ...},
     "parameters": {"kvm_intel.ept": "Y", ...}}                # as /sys/module shows them

Every fact the architecture has is in ``facts``: its value, or ``null`` with the reason under
``unknown``. ``sources`` says where each known value was read. Facts are asked of KVM itself
where it answers (capabilities, KVM_GET_SUPPORTED_CPUID, a scratch VM), else read from the
vendor module's parameters in /sys/module. Nothing here raises but KvmError, when
``/dev/kvm`` cannot be opened at all.

The facts, by architecture (the kernel functions are those of Linux 7.2.13):

x86_64
    ``cpu_vendor``  the CPUID vendor string KVM reports (leaf 0), else /proc/cpuinfo's.
    ``maxphyaddr``  the host MAXPHYADDR, CPUID 0x80000008 EAX[7:0] of
        KVM_GET_SUPPORTED_CPUID (arch/x86/kvm/cpuid.c __do_cpuid_func()), else
        /proc/cpuinfo's "address sizes".
    ``tdp``  whether KVM uses two-dimensional paging (EPT/NPT): GuestPhysAddrSize,
        EAX[23:16] of the same leaf, is non-zero exactly when it does (same function).
    ``memslot_pa_bits``  a memslot ending beyond 2**memslot_pa_bits is refused with EINVAL:
        kvm_arch_prepare_memory_region() (arch/x86/kvm/x86.c) against kvm_mmu_max_gfn()
        (arch/x86/kvm/mmu.h), the host MAXPHYADDR with TDP, else 52.
    ``smaller_maxphyaddr``  KVM_CAP_SMALLER_MAXPHYADDR is non-zero: KVM enforces a guest
        MAXPHYADDR below the host's. The capability reports allow_smaller_maxphyaddr
        (arch/x86/kvm/x86.c kvm_vm_ioctl_check_extension()): set without TDP by both vendors
        (vmx/vmx.c vmx_hardware_setup(), svm/svm.c svm_hardware_setup(): !npt_enabled), and
        with EPT only by kvm_intel.allow_smaller_maxphyaddr=1 (off by default). Where it is
        0 and ``tdp`` is true, the guest reaches addresses between its MAXPHYADDR and the
        host's. kvm_intel.allow_smaller_maxphyaddr is shown under ``parameters``.
    ``address_spaces``  KVM_CAP_MULTI_ADDRESS_SPACE on a VM's fd, i.e.
        kvm_arch_nr_memslot_as_ids() (virt/kvm/kvm_main.c); 1 where the capability is
        unknown (a kernel without CONFIG_KVM_SMM has one address space).
    ``smm``  KVM_CAP_X86_SMM is non-zero.
    ``vendor_module``  the vendor module loaded (kvm_intel, kvm_amd, or another kvm_*).
    ``real_mode_tss``  whether KVM_SET_TSS_ADDR makes a private memslot
        (arch/x86/kvm/vmx/vmx.c vmx_set_tss_addr(): Intel without unrestricted guest).
    ``ept_identity_map``  whether the first KVM_CREATE_VCPU makes the EPT identity-map
        memslot (vmx_vcpu_create() -> init_rmode_identity_map(): Intel with EPT and
        without unrestricted guest).
    ``apic_access_page``  whether KVM_CREATE_VCPU with an in-kernel LAPIC makes the
        APIC-access memslot at 0xfee00000 (arch/x86/kvm/lapic.c
        kvm_alloc_apic_access_page(), called by vmx_vcpu_create() when
        cpu_need_virtualize_apic_accesses(), i.e. kvm_intel.flexpriority, and by
        avic_init_backing_page() when AVIC is active, i.e. kvm_amd.avic).
    The last three are probed on a scratch VM (KVM_CREATE_IRQCHIP, KVM_SET_TSS_ADDR, one
    vCPU, then a user memslot over each page: EEXIST means KVM keeps it), and read from the
    vendor module's parameters when the probe cannot run.

arm64
    ``ipa_limit``  KVM_CAP_ARM_VM_IPA_SIZE, the largest IPA size a VM may ask for
        (arch/arm64/kvm/reset.c kvm_set_ipa_limit()); 40 where the capability is 0 (a kernel
        without a configurable IPA size).
    ``ipa_above_48``  ipa_limit > 48 (52-bit IPAs need LPA2, or 64K pages).
    ``vgic_v2``, ``vgic_v3``, ``vgic_its``  KVM_CREATE_DEVICE with KVM_CREATE_DEVICE_TEST
        on a scratch VM: virt/kvm/kvm_main.c kvm_ioctl_create_device() returns ENODEV when
        no ops are registered for the type (arch/arm64/kvm/vgic/vgic-kvm-device.c
        kvm_register_vgic_device(); a GICv3 host registers GICv2 only with a GICV
        resource, vgic_v3_probe()), else 0 without creating anything.
    ``nisv_to_user``  KVM_CAP_ARM_NISV_TO_USER on the scratch VM.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

from . import kvm

FORMAT = 1

Facts = dict[str, Any]


class _Collected:
    """Facts as they are read: each a value with its source, or None with the reason."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.facts: Facts = dict.fromkeys(names)
        self.sources: dict[str, str] = {}
        self.unknown: dict[str, str] = {}
        # module parameters read, as /sys/module gives them ("kvm_intel.ept": "Y")
        self.parameters: dict[str, str] = {}

    def known(self, name: str, value: Any, source: str) -> None:
        self.facts[name] = value
        self.sources[name] = source
        self.unknown.pop(name, None)

    def not_known(self, name: str, reason: str) -> None:
        if self.facts.get(name) is None:
            self.facts[name] = None
            self.unknown[name] = reason

    def missing(self) -> None:
        """Every fact still without a value or a reason gets one."""
        for name, value in self.facts.items():
            if value is None and name not in self.unknown:
                self.unknown[name] = "not read on this host"


# --- reading files -----------------------------------------------------------------------------

SYS_MODULE = "/sys/module"
PROC_CPUINFO = "/proc/cpuinfo"


def read_text(path: str) -> str | None:
    """A small file's text without its trailing newline, or None when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(4096).strip()
    except OSError:
        return None


def module_parameter(module: str, name: str) -> bool | None:
    """A boolean module parameter from /sys/module (Y/N, 1/0), or None."""
    text = read_text(os.path.join(SYS_MODULE, module, "parameters", name))
    if text is None:
        return None
    return text.upper() in ("Y", "1")


def vendor_module() -> str | None:
    """The KVM vendor module loaded: kvm_intel or kvm_amd, else any other kvm_* module."""
    try:
        names = sorted(n for n in os.listdir(SYS_MODULE) if n.startswith("kvm_"))
    except OSError:
        return None
    for preferred in ("kvm_intel", "kvm_amd"):
        if preferred in names:
            return preferred
    return names[0] if names else None


def cpuinfo_field(name: str) -> str | None:
    text = read_text(PROC_CPUINFO)
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return None


# --- x86_64 ------------------------------------------------------------------------------------

# arch/x86/include/uapi/asm/kvm.h: struct kvm_cpuid2 {nent, padding, entries[]} and
# struct kvm_cpuid_entry2 {function, index, flags, eax, ebx, ecx, edx, padding[3]}.
CPUID2_HEADER = struct.Struct("<II")
CPUID_ENTRY2 = struct.Struct("<7I12x")
KVM_GET_SUPPORTED_CPUID = kvm.iowr(0x05, CPUID2_HEADER.size)
KVM_CREATE_IRQCHIP = kvm.io(0x60)
KVM_SET_TSS_ADDR = kvm.io(0x47)
CPUID_ENTRIES = 256

# Where the scratch VM looks for KVM's private memslots (arch/x86/include/asm/apicdef.h
# APIC_DEFAULT_PHYS_BASE; arch/x86/include/asm/vmx.h VMX_EPT_IDENTITY_PAGETABLE_ADDR).
APIC_ACCESS_PAGE = 0xFEE0_0000
IDENTITY_MAP_PAGE = 0xFFFB_C000
TSS_PAGE = 0xFFFB_D000

X86_64_FACTS = (
    "cpu_vendor",
    "maxphyaddr",
    "tdp",
    "memslot_pa_bits",
    "smaller_maxphyaddr",
    "address_spaces",
    "smm",
    "vendor_module",
    "real_mode_tss",
    "ept_identity_map",
    "apic_access_page",
)
PRIVATE_MEMSLOTS = ("real_mode_tss", "ept_identity_map", "apic_access_page")


def supported_cpuid(fd: int) -> dict[int, tuple[int, int, int, int]]:
    """KVM_GET_SUPPORTED_CPUID: (eax, ebx, ecx, edx) by leaf (index 0 of each); raises
    OSError."""
    buffer = bytearray(CPUID2_HEADER.size + CPUID_ENTRIES * CPUID_ENTRY2.size)
    CPUID2_HEADER.pack_into(buffer, 0, CPUID_ENTRIES, 0)
    kvm.ioctl(fd, KVM_GET_SUPPORTED_CPUID, buffer)
    count = CPUID2_HEADER.unpack_from(buffer, 0)[0]
    leaves: dict[int, tuple[int, int, int, int]] = {}
    for i in range(min(count, CPUID_ENTRIES)):
        function, index, _flags, eax, ebx, ecx, edx = CPUID_ENTRY2.unpack_from(
            buffer, CPUID2_HEADER.size + i * CPUID_ENTRY2.size
        )
        if index == 0:
            leaves.setdefault(function, (eax, ebx, ecx, edx))
    return leaves


def cpu_vendor_of(leaf0: tuple[int, int, int, int]) -> str:
    """The vendor string of CPUID leaf 0: EBX, EDX, ECX."""
    _eax, ebx, ecx, edx = leaf0
    return struct.pack("<III", ebx, edx, ecx).decode("ascii", "replace")


def x86_cpuid_facts(facts: _Collected, leaves: dict[int, tuple[int, int, int, int]]) -> None:
    source = "KVM_GET_SUPPORTED_CPUID"
    if 0 in leaves:
        facts.known("cpu_vendor", cpu_vendor_of(leaves[0]), f"{source} leaf 0")
    if 0x8000_0008 in leaves:
        eax = leaves[0x8000_0008][0]
        maxphyaddr, guest_phys = eax & 0xFF, (eax >> 16) & 0xFF
        facts.known("maxphyaddr", maxphyaddr, f"{source} 0x80000008 EAX[7:0]")
        # cpuid.c: GuestPhysAddrSize is set if and only if TDP is enabled.
        tdp = guest_phys != 0
        facts.known("tdp", tdp, f"{source} 0x80000008 EAX[23:16] (non-zero with TDP)")
        facts.known(
            "memslot_pa_bits",
            maxphyaddr if tdp else 52,
            "kvm_mmu_max_gfn(): the host MAXPHYADDR with TDP, else 52",
        )


def x86_cpuinfo_facts(facts: _Collected) -> None:
    """/proc/cpuinfo for what KVM_GET_SUPPORTED_CPUID did not give."""
    if facts.facts["cpu_vendor"] is None:
        vendor = cpuinfo_field("vendor_id")
        if vendor:
            facts.known("cpu_vendor", vendor, "/proc/cpuinfo vendor_id")
    if facts.facts["maxphyaddr"] is None:
        sizes = cpuinfo_field("address sizes") or ""
        first = sizes.split(" bits physical")[0] if " bits physical" in sizes else ""
        if first.isdigit():
            facts.known("maxphyaddr", int(first), "/proc/cpuinfo address sizes")


def private_memslots_from_parameters(facts: _Collected, module: str | None) -> None:
    """The private memslots as the vendor module's parameters imply them."""
    if module == "kvm_amd":
        # svm_x86_ops has no set_tss_addr nor set_identity_map_addr (kvm_ops_update() makes
        # both ioctls return 0); AVIC makes the APIC-access page (avic_init_backing_page()).
        facts.known("real_mode_tss", False, "kvm_amd: SVM keeps no real-mode TSS")
        facts.known("ept_identity_map", False, "kvm_amd: SVM keeps no identity map")
        avic = module_parameter(module, "avic")
        if avic is None:
            facts.not_known("apic_access_page", "cannot read kvm_amd.avic")
        else:
            facts.known("apic_access_page", avic, "kvm_amd.avic")
        return
    if module != "kvm_intel":
        why = (
            f"the vendor module is {module}, neither kvm_intel nor kvm_amd, and the scratch VM "
            "could not tell"
            if module
            else "no KVM vendor module found under /sys/module"
        )
        for name in PRIVATE_MEMSLOTS:
            facts.not_known(name, why)
        return
    unrestricted = module_parameter(module, "unrestricted_guest")
    ept = module_parameter(module, "ept")
    flexpriority = module_parameter(module, "flexpriority")
    if unrestricted is None:
        facts.not_known("real_mode_tss", "cannot read kvm_intel.unrestricted_guest")
    else:
        facts.known("real_mode_tss", not unrestricted, "kvm_intel.unrestricted_guest")
    if unrestricted is None or ept is None:
        facts.not_known("ept_identity_map", "cannot read kvm_intel.unrestricted_guest and ept")
    else:
        facts.known(
            "ept_identity_map", ept and not unrestricted, "kvm_intel.ept, unrestricted_guest"
        )
    if flexpriority is None:
        facts.not_known("apic_access_page", "cannot read kvm_intel.flexpriority")
    else:
        facts.known("apic_access_page", flexpriority, "kvm_intel.flexpriority")


def probe_private_memslots(vm_fd: int) -> dict[str, bool]:
    """Which private memslots KVM made on a VM with an in-kernel irqchip, a TSS address and
    one vCPU: a user memslot over each page is refused with EEXIST when KVM keeps it there
    (kvm_check_memslot_overlap()). Raises OSError (MemoryError) when the VM cannot be set up."""
    kvm.ioctl(vm_fd, KVM_CREATE_IRQCHIP)
    kvm.ioctl(vm_fd, KVM_SET_TSS_ADDR, TSS_PAGE)
    vcpu = kvm.ioctl(vm_fd, kvm.KVM_CREATE_VCPU, 0)
    memory: kvm.Memory | None = None
    try:
        memory = kvm.Memory(kvm.PAGE_SIZE)
        kept = {}
        pages = (
            ("real_mode_tss", TSS_PAGE),
            ("ept_identity_map", IDENTITY_MAP_PAGE),
            ("apic_access_page", APIC_ACCESS_PAGE),
        )
        for slot, (name, page) in enumerate(pages):
            refused = kvm.set_memslot(vm_fd, slot, 0, page, kvm.PAGE_SIZE, memory.addr, False)
            if refused not in (None, "EEXIST"):
                raise OSError(errno.EIO, f"a memslot over {page:#x} was refused with {refused}")
            kept[name] = refused == "EEXIST"
            if refused is None:
                kvm.set_memslot(vm_fd, slot, 0, page, 0, memory.addr, False)  # delete it
        return kept
    finally:
        os.close(vcpu)
        if memory is not None:
            memory.close()


# The vendor modules' parameters that decide the private memslots, TDP and a smaller guest
# MAXPHYADDR, shown as read.
VENDOR_PARAMETERS = {
    "kvm_intel": (
        "ept", "unrestricted_guest", "flexpriority", "enable_apicv", "allow_smaller_maxphyaddr",
    ),
    "kvm_amd": ("npt", "avic"),
}


def vendor_parameters(module: str | None) -> dict[str, str]:
    found = {}
    for name in VENDOR_PARAMETERS.get(module or "", ()):
        text = read_text(os.path.join(SYS_MODULE, str(module), "parameters", name))
        if text is not None:
            found[f"{module}.{name}"] = text
    return found


def x86_64_facts(handle: kvm.Kvm, facts: _Collected) -> None:
    try:
        x86_cpuid_facts(facts, supported_cpuid(handle.fd))
    except OSError as exc:
        for name in ("cpu_vendor", "maxphyaddr", "tdp", "memslot_pa_bits"):
            facts.not_known(name, f"KVM_GET_SUPPORTED_CPUID failed: {kvm.errno_name(exc.errno)}")
    x86_cpuinfo_facts(facts)
    smaller = handle.check_extension(kvm.CAPS["KVM_CAP_SMALLER_MAXPHYADDR"])
    facts.known("smaller_maxphyaddr", smaller != 0, "KVM_CAP_SMALLER_MAXPHYADDR")
    smm = handle.check_extension(kvm.CAPS["KVM_CAP_X86_SMM"])
    facts.known("smm", smm != 0, "KVM_CAP_X86_SMM")
    module = vendor_module()
    facts.parameters.update(vendor_parameters(module))
    if module is None:
        facts.not_known("vendor_module", "no kvm_* module under /sys/module")
    else:
        facts.known("vendor_module", module, "/sys/module")
    try:
        vm_fd = kvm.create_vm(handle)
    except OSError as exc:
        reason = f"KVM_CREATE_VM failed: {kvm.errno_name(exc.errno)}"
        facts.not_known("address_spaces", reason)
        private_memslots_from_parameters(facts, module)
        return
    try:
        spaces = handle.check_extension(kvm.CAPS["KVM_CAP_MULTI_ADDRESS_SPACE"], vm_fd)
        facts.known(
            "address_spaces",
            max(spaces, 1),
            "KVM_CAP_MULTI_ADDRESS_SPACE on a VM (1 where the capability is unknown)",
        )
        try:
            kept = probe_private_memslots(vm_fd)
        except (OSError, MemoryError):
            private_memslots_from_parameters(facts, module)
        else:
            source = "scratch VM: a user memslot over the page {}"
            for name, value in kept.items():
                facts.known(name, value, source.format("got EEXIST" if value else "was accepted"))
    finally:
        os.close(vm_fd)


# --- arm64 -------------------------------------------------------------------------------------

# include/uapi/linux/kvm.h enum kvm_device_type, and KVM_CREATE_DEVICE_TEST.
KVM_DEV_TYPE_ARM_VGIC_V2 = 5
KVM_DEV_TYPE_ARM_VGIC_V3 = 7
KVM_DEV_TYPE_ARM_VGIC_ITS = 8
KVM_CREATE_DEVICE_TEST = 1
# arch/arm64/include/asm/kvm_mmu.h KVM_PHYS_SHIFT: a VM of type 0 gets 40 bits.
KVM_PHYS_SHIFT = 40

ARM64_FACTS = ("ipa_limit", "ipa_above_48", "vgic_v2", "vgic_v3", "vgic_its", "nisv_to_user")
VGIC_DEVICES = (
    ("vgic_v2", KVM_DEV_TYPE_ARM_VGIC_V2),
    ("vgic_v3", KVM_DEV_TYPE_ARM_VGIC_V3),
    ("vgic_its", KVM_DEV_TYPE_ARM_VGIC_ITS),
)


def device_creatable(vm_fd: int, device_type: int) -> str | None:
    """KVM_CREATE_DEVICE_TEST for ``device_type``: None when KVM could create it, else the
    errno's name (ENODEV: no such device on this host)."""
    request = bytearray(kvm.CREATE_DEVICE.pack(device_type, -1, KVM_CREATE_DEVICE_TEST))
    return kvm.try_ioctl(vm_fd, kvm.KVM_CREATE_DEVICE, request)


def arm64_facts(handle: kvm.Kvm, facts: _Collected) -> None:
    ipa = handle.check_extension(kvm.CAPS["KVM_CAP_ARM_VM_IPA_SIZE"])
    limit = ipa or KVM_PHYS_SHIFT
    facts.known(
        "ipa_limit", limit, "KVM_CAP_ARM_VM_IPA_SIZE" + ("" if ipa else " is 0: 40 bits only")
    )
    facts.known("ipa_above_48", limit > 48, "ipa_limit > 48")
    # KVM_VM_TYPE_ARM_IPA_SIZE(limit): a type-0 VM fails where the limit is below 40 bits.
    try:
        vm_fd = kvm.create_vm(handle, limit if ipa else 0)
    except OSError as exc:
        reason = f"the scratch VM could not be created: {kvm.errno_name(exc.errno)}"
        for name, _ in VGIC_DEVICES:
            facts.not_known(name, reason)
        facts.not_known("nisv_to_user", reason)
        return
    try:
        for name, device_type in VGIC_DEVICES:
            refused = device_creatable(vm_fd, device_type)
            source = f"KVM_CREATE_DEVICE_TEST of type {device_type} on a scratch VM"
            if refused is None:
                facts.known(name, True, source)
            elif refused == "ENODEV":
                facts.known(name, False, source + ": ENODEV")
            else:
                facts.not_known(name, f"{source} failed with {refused}")
        nisv = handle.check_extension(kvm.CAPS["KVM_CAP_ARM_NISV_TO_USER"], vm_fd)
        facts.known("nisv_to_user", nisv != 0, "KVM_CAP_ARM_NISV_TO_USER on a VM")
    finally:
        os.close(vm_fd)


class HostKind(NamedTuple):
    arch: str  # gpa-plan's name of the architecture
    facts: tuple[str, ...]
    read: Callable[[kvm.Kvm, _Collected], None]


# The hosts whose facts the probe reads, by the kernel's name of their machine (uname -m).
HOSTS = {
    "x86_64": HostKind(arch="x86_64", facts=X86_64_FACTS, read=x86_64_facts),
    "aarch64": HostKind(arch="arm64", facts=ARM64_FACTS, read=arm64_facts),
}


def kvm_unavailable(err: kvm.KvmError) -> str:
    """Why /dev/kvm cannot be used (``err``), and how to make it usable."""
    code = getattr(err.__cause__, "errno", None)
    if code == errno.ENOENT:
        fix = (
            "the KVM modules are not loaded, or this kernel has no KVM: load them (modprobe "
            "kvm_intel, or modprobe kvm_amd; on arm64 KVM is built in and needs the kernel "
            "booted at EL2)"
        )
    elif code in (errno.EACCES, errno.EPERM):
        fix = (
            "your user may not open it: add it to the group that owns /dev/kvm (usermod -aG "
            "kvm $USER, then log in again)"
        )
    else:
        fix = (
            "load the KVM modules (modprobe kvm_intel or kvm_amd) and add your user to group "
            "kvm (usermod -aG kvm $USER)"
        )
    return f"{err}; {fix}"


def capabilities(handle: kvm.Kvm) -> dict[str, int]:
    """Every capability of kvm.CAPS, as KVM_CHECK_EXTENSION on /dev/kvm answers it."""
    return {name: handle.check_extension(number) for name, number in kvm.CAPS.items()}


def host_facts(handle: kvm.Kvm | None = None, machine: str | None = None) -> Facts:
    """What this host's KVM reports (the module docstring lists it); opens ``/dev/kvm``
    unless ``handle`` is given, raising kvm.KvmError when it cannot."""
    uname = os.uname()
    machine = machine or uname.machine
    owned = handle is None
    handle = handle or kvm.Kvm()
    try:
        kind = HOSTS.get(machine)
        facts = _Collected(kind.facts if kind else ())
        if kind is not None:
            kind.read(handle, facts)
        facts.missing()
        return {
            "format": FORMAT,
            "kernel": {"release": uname.release, "machine": machine},
            # KVM checks memslots against the host's PAGE_SIZE (kvm_set_memory_region()).
            "page_size": mmap.PAGESIZE,
            "arch": kind.arch if kind else None,
            "capabilities": capabilities(handle),
            "facts": facts.facts,
            "sources": facts.sources,
            "unknown": facts.unknown,
            "parameters": facts.parameters,
        }
    finally:
        if owned:
            handle.close()


def main() -> int:
    """``python3 -m probe.host``: the facts as JSON on stdout (what `gpa-plan host --format
    json` prints), where gpa-plan is not installed; 2 with the reason when /dev/kvm cannot be
    used."""
    import json
    import sys

    try:
        facts = host_facts()
    except kvm.KvmError as err:
        print(f"probe.host: {kvm_unavailable(err)}", file=sys.stderr)
        return 2
    sys.stdout.write(json.dumps(facts, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
