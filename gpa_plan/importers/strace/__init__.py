"""Layouts from a log of `strace -f -e trace=ioctl` run on a VMM or a KVM selftest: the
memslots and in-kernel devices of a VM as KVM held them when the log ends.

Input read (strace 6.1, Debian 12, as written with ``-o FILE`` or to the terminal):

- ``ioctl(FD, REQUEST, ARG) = RET`` lines, with or without the process id strace puts first
  with -f (``1234  `` or ``[pid  1234] ``); ``RET`` is a number, ``-1 ERRNO (text)`` or ``?``,
  optionally followed by the time -T adds (timestamps, -t, are not read).
  A call printed in two halves (``... <unfinished ...>``, then ``<... ioctl resumed>...`` of
  the same process) is joined. Signal, exit and strace's own lines, blank lines and calls of
  other system calls are skipped, and so are lines starting with ``#`` (notes kept with
  a saved log; strace prints none). Any other line is refused (ImportFailure at its line, the
  column after the process id).
- Each ``KVM_CREATE_VM`` that returned a file descriptor is a VM (numbered from 1 in creation
  order); calls on that descriptor are its calls, until a later KVM_CREATE_VM returns the same
  number (the log shows no close()).

What a VM's calls become:

- ``KVM_SET_USER_MEMORY_REGION`` (and ``KVM_SET_USER_MEMORY_REGION2``, should a strace print
  it with the same fields; 6.1 does not know it, prints ``_IOC(_IOC_WRITE, 0xae, 0x49,
  0xa0)`` and a bare pointer, and such calls are counted in a comment): memslots, replayed as
  virt/kvm/kvm_main.c kvm_set_memory_region() applies them (gpa_plan.importers.strace.replay).
  ``KVM_MEM_READONLY`` becomes ``readonly``, ``KVM_MEM_LOG_DIRTY_PAGES`` ``dirty_log``,
  ``KVM_MEM_GUEST_MEMFD`` ``guest_memfd``; other flags are noted and dropped. A refused call
  (``-1 ERRNO``) or one that did not return is not applied: a comment names it with its errno.
- ``KVM_CREATE_IRQCHIP``: on x86_64 the IOAPIC and LAPIC at their default bases (and the
  PIC's ports under ``ports:``; what it makes is ArchSpec.record's)
  (arch/x86/kvm/x86.c kvm_arch_vm_ioctl() calls kvm_ioapic_init(), which puts the IOAPIC at
  IOAPIC_DEFAULT_BASE_ADDRESS; lapic.c kvm_create_lapic() for each vCPU then, at
  APIC_DEFAULT_PHYS_BASE). On arm64 it makes a vGICv2 (arch/arm64/kvm/arm.c
  kvm_arch_vm_ioctl() -> kvm_vgic_create(KVM_DEV_TYPE_ARM_VGIC_V2)) whose addresses come
  through KVM_ARM_SET_DEVICE_ADDR: a comment says so, no device is made up.
- ``KVM_CREATE_DEVICE``: strace 6.1 prints its structure as a bare pointer, so the device
  type is unknown; where a strace prints ``{type=...}`` the type is named. Either way the
  device's addresses are set through KVM_SET_DEVICE_ATTR or KVM_ARM_SET_DEVICE_ADDR, whose
  values lie behind pointers strace does not follow: a comment says which device was made
  and that its addresses are not in the log.
- ``KVM_IOEVENTFD``, ``KVM_(UN)REGISTER_COALESCED_MMIO``: strace 6.1 prints bare pointers;
  the opening comments count them and say their addresses are not in the log.
- arm64 ``KVM_CREATE_VM``'s type: its bits 0-7 are the IPA size (arch/arm64/kvm/mmu.c
  kvm_init_ipa_range(): KVM_VM_TYPE_ARM_IPA_SIZE(type), 0 for the default KVM_PHYS_SHIFT,
  40), which becomes ``pa_bits``.

Architecture: ``arch`` (--arch) when given, else the architecture-only requests in the whole
log (x86_64: KVM_SET_TSS_ADDR, KVM_GET_SUPPORTED_CPUID, KVM_SET_CPUID2, KVM_SET_SREGS ...;
arm64: KVM_ARM_VCPU_INIT, KVM_ARM_PREFERRED_TARGET, KVM_ARM_SET_DEVICE_ADDR, a vGIC device
type). Without any of them, a KVM_CREATE_IRQCHIP that succeeded says x86_64, with a note:
arm64 has it too (a vGICv2), but arm64 VMMs make their vGIC with KVM_CREATE_DEVICE. Neither:
refused, asking for --arch.

With several VMs, ``vm`` (--vm N) picks one; without it the import is refused with the list.
"""

from __future__ import annotations

import codecs
from collections import abc
from typing import Any

from gpa_plan.arch import ARCHES
from gpa_plan.importers import Imported, ImportFailure, pa_bits_needed
from gpa_plan.importers.strace.replay import POINTER_ONLY, VM, replay
from gpa_plan.importers.strace.text import Call, scan
from gpa_plan.record.memslots import memslot_entries

# Requests only one architecture's KVM has (include/uapi/linux/kvm.h, under the arch's
# #ifdef or in its asm/kvm.h): strace names them only when built for that host.
_ARCH_REQUESTS = {
    "KVM_SET_TSS_ADDR": "x86_64", "KVM_SET_IDENTITY_MAP_ADDR": "x86_64",
    "KVM_GET_SUPPORTED_CPUID": "x86_64", "KVM_SET_CPUID2": "x86_64",
    "KVM_GET_SREGS": "x86_64", "KVM_SET_SREGS": "x86_64", "KVM_SET_MSRS": "x86_64",
    "KVM_GET_MSRS": "x86_64", "KVM_CREATE_PIT2": "x86_64", "KVM_SET_LAPIC": "x86_64",
    "KVM_ARM_VCPU_INIT": "arm64", "KVM_ARM_PREFERRED_TARGET": "arm64",
    "KVM_ARM_SET_DEVICE_ADDR": "arm64",
}


def _known_arches() -> str:
    *most, last = ARCHES
    return f"{', '.join(most)} or {last}" if most else last


def _call_arch(call: Call) -> str | None:
    if call.request == "KVM_CREATE_DEVICE" and "KVM_DEV_TYPE_ARM_VGIC" in call.arg:
        return "arm64"
    return _ARCH_REQUESTS.get(call.request)


def architecture(calls: list[Call], arch: str | None, notes: list[str]) -> str:
    """``arch`` when given, else the one the log's architecture-only requests name."""
    if arch is not None:
        return arch
    firsts: dict[str, Call] = {}
    for call in calls:
        named = _call_arch(call)
        if named is not None:
            firsts.setdefault(named, call)
    if len(firsts) == 1:
        (name, call), = firsts.items()
        notes.append(f"Architecture {name}, from {call.request} at line {call.line}.")
        return name
    if firsts:
        last = max(firsts.values(), key=lambda c: c.line)
        told = ", ".join(f"{name} ({c.request}, line {c.line})" for name, c in firsts.items())
        raise ImportFailure(f"requests of two architectures: {told}; say which with --arch",
                            last.line, last.column)
    irqchip = next((c for c in calls if c.request == "KVM_CREATE_IRQCHIP" and c.ret == 0), None)
    if irqchip is not None:
        notes.append(
            f"Architecture x86_64, from KVM_CREATE_IRQCHIP at line {irqchip.line}: arm64 has "
            "it too (a vGICv2), but its VMMs make the vGIC with KVM_CREATE_DEVICE; give --arch "
            "if the log is of another architecture."
        )
        return "x86_64"
    raise ImportFailure(
        "cannot tell the architecture: no request KVM has only on x86_64 (KVM_SET_CPUID2, "
        "KVM_SET_SREGS, ...) or arm64 (KVM_ARM_VCPU_INIT, ...); say which with --arch: "
        f"{_known_arches()}",
        calls[0].line if calls else 0,
    )


def chosen_vm(vms: list[VM], number: int | None, calls: list[Call]) -> VM:
    """The VM ``number`` picks (1-based), or the only one."""
    listed = "; ".join(f"{vm.number}: fd {vm.fd}, created at line {vm.line}, "
                       f"{len(vm.memslots)} memslot{'s' * (len(vm.memslots) != 1)}"
                       for vm in vms)
    if not vms:
        raise ImportFailure("no KVM_CREATE_VM call that returned a VM in the log: trace the "
                            "program from its start (strace -f -e trace=ioctl -o LOG COMMAND)",
                            calls[-1].line if calls else 0)
    if number is None and len(vms) > 1:
        raise ImportFailure(f"the log creates {len(vms)} VMs ({listed}); pick one with --vm N",
                            vms[1].line)
    if number is not None and number > len(vms):
        raise ImportFailure(f"--vm {number}: the log creates {len(vms)} VM"
                            f"{'s' * (len(vms) != 1)} ({listed})")
    return vms[(number or 1) - 1]


def document(vm: VM, arch: str, count: int, notes: list[str]) -> dict[str, Any]:
    notes.append(f"VM {vm.number} of {count}: KVM_CREATE_VM at line {vm.line} returned fd "
                 f"{vm.fd}; the state when the log ends.")
    memslots = memslot_entries(vm.memslots)
    devices = _devices(vm, arch, notes)
    _limits(vm, notes)
    doc: dict[str, Any] = {"layout": 1, "name": f"strace-{arch}-vm{vm.number}", "arch": arch}
    pa_bits = pa_bits_needed(arch, [*memslots, *devices])
    ipa = vm.vm_type & 0xFF if arch == "arm64" else 0
    if ipa:
        notes.append(f"pa_bits {ipa}: the IPA size KVM_CREATE_VM's type asked for.")
        pa_bits = max(ipa, pa_bits or 0)
    elif arch != "arm64" and vm.vm_type:
        notes.append(f"KVM_CREATE_VM type {vm.vm_type:#x}: not the default VM type; the "
                     "layout does not record it.")
    if pa_bits is not None:
        doc["pa_bits"] = pa_bits
    doc["memslots"] = memslots
    doc["devices"] = devices
    ports = [{"name": f.name, "base": f.base, "size": f.size, "handler": "kernel"}
             for f in ARCHES[arch].record.irqchip if f.type is None]
    if vm.irqchip is not None and ports:
        doc["ports"] = ports
    return doc


def _devices(vm: VM, arch: str, notes: list[str]) -> list[dict[str, Any]]:
    devices: list[dict[str, Any]] = []
    fixed = [f for f in ARCHES[arch].record.irqchip if f.type is not None]
    if vm.irqchip is not None and fixed:
        devices += [{"name": f.name, "type": f.type, "base": f.base} for f in fixed]
        notes.append(f"KVM_CREATE_IRQCHIP at line {vm.irqchip}: the IOAPIC and LAPIC at "
                     "their default bases, and the PIC's ports.")
    elif vm.irqchip is not None:
        notes.append(f"KVM_CREATE_IRQCHIP at line {vm.irqchip} made an in-kernel irqchip "
                     f"(on arm64 a vGICv2) whose addresses are set through "
                     "KVM_ARM_SET_DEVICE_ADDR, behind a pointer strace does not show: add its "
                     "devices by hand.")
    for kind, line in vm.devices:
        made = kind if kind else "a device whose type strace prints only as a pointer"
        notes.append(f"KVM_CREATE_DEVICE at line {line} made {made}: its addresses are set "
                     "through KVM_SET_DEVICE_ATTR, behind a pointer strace does not show; "
                     "add its devices by hand.")
    return devices


def _limits(vm: VM, notes: list[str]) -> None:
    for request in POINTER_ONLY:
        seen = vm.pointer_only.get(request, 0)
        if seen and request == "KVM_SET_USER_MEMORY_REGION2":
            notes.append(f"{seen} {request} call{'s' * (seen != 1)}, which strace 6.1 prints "
                         "as _IOC(_IOC_WRITE, 0xae, 0x49, 0xa0) with a bare pointer: those "
                         "memslots are not in the log and missing here.")
        elif seen:
            notes.append(f"{seen} {request} call{'s' * (seen != 1)}: strace 6.1 prints the "
                         "structure as a bare pointer, so the addresses are not in the log "
                         "and nothing of them is imported.")
    for flags in vm.unknown_flags:
        notes.append(f"{flags} besides KVM_MEM_READONLY, KVM_MEM_LOG_DIRTY_PAGES and "
                     "KVM_MEM_GUEST_MEMFD: not kept.")
    notes.extend(vm.refused)


def import_strace(text: str, arch: str | None = None, vm: int | None = None) -> Imported:
    """The layout of VM ``vm`` (1-based; needed when the log creates several) that the ioctl
    calls of a `strace -f -e trace=ioctl` log built, with notes. Raises ImportFailure."""
    if arch is not None and arch not in ARCHES:
        raise ImportFailure(f"unknown architecture {arch!r}: expected {_known_arches()}")
    notes: list[str] = []
    scanned = scan(text)
    vms = replay(scanned.calls)
    picked = chosen_vm(vms, vm, scanned.calls)
    arch = architecture(scanned.calls, arch, notes)
    if scanned.other_syscalls:
        notes.append(f"{scanned.other_syscalls} calls of other system calls skipped.")
    doc = document(picked, arch, len(vms), notes)
    return Imported(doc, notes)


def read(data: bytes, options: abc.Mapping[str, Any]) -> Imported:
    """`gpa-plan import strace`'s reader (gpa_plan.importers.registry): ``data`` as UTF-8 text
    (a BOM is skipped; bytes that are not UTF-8, as strace may print in a path, are replaced),
    with the ``arch`` and ``vm`` options. Raises ImportFailure."""
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    text = data[bom:].decode("utf-8", errors="replace")
    return import_strace(text, options.get("arch"), options.get("vm"))


__all__ = ["import_strace", "read"]
