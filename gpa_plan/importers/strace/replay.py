"""The VMs a traced program built, replayed from its ioctl calls as KVM applied them.

Each rule cites the kernel function (Linux 7.2) whose effect it repeats.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gpa_plan.importers import ImportFailure
from gpa_plan.importers.strace.text import Call, fields
from gpa_plan.printable import printable
from gpa_plan.record.memslots import (
    KVM_MEM_GUEST_MEMFD,
    KVM_MEM_LOG_DIRTY_PAGES,
    KVM_MEM_READONLY,
    Memslot,
    set_memory_region,
)

_FLAG_NAMES = {"KVM_MEM_LOG_DIRTY_PAGES": KVM_MEM_LOG_DIRTY_PAGES,
               "KVM_MEM_READONLY": KVM_MEM_READONLY, "KVM_MEM_GUEST_MEMFD": KVM_MEM_GUEST_MEMFD}
MEMSLOT_CALLS = ("KVM_SET_USER_MEMORY_REGION", "KVM_SET_USER_MEMORY_REGION2")
# Calls whose structure strace 6.1 prints as a bare pointer: what they register is not in the
# log. Counted per VM, the opening comments say how many.
POINTER_ONLY = ("KVM_SET_USER_MEMORY_REGION2", "KVM_IOEVENTFD", "KVM_REGISTER_COALESCED_MMIO",
                "KVM_UNREGISTER_COALESCED_MMIO", "KVM_SET_DEVICE_ATTR", "KVM_ARM_SET_DEVICE_ADDR")


@dataclass
class VM:
    number: int  # 1-based, in creation order
    fd: int
    line: int  # of its KVM_CREATE_VM
    vm_type: int
    memslots: dict[tuple[int, int], Memslot] = field(default_factory=dict)
    irqchip: int | None = None  # the line of a KVM_CREATE_IRQCHIP that succeeded
    devices: list[tuple[str | None, int]] = field(default_factory=list)  # KVM_CREATE_DEVICE
    pointer_only: dict[str, int] = field(default_factory=dict)  # request -> calls seen
    refused: list[str] = field(default_factory=list)  # one note per call KVM refused
    unknown_flags: list[str] = field(default_factory=list)


def replay(calls: list[Call]) -> list[VM]:
    """Every VM the calls created, in creation order, with the state the log leaves it in.
    A VM's fd is taken over by a later VM created on the same number (the log does not show
    close()). Calls on a device's fd (KVM_SET_DEVICE_ATTR) count for the VM whose
    KVM_CREATE_DEVICE came last. Raises ImportFailure for a memslot call whose structure
    cannot be read."""
    vms: list[VM] = []
    by_fd: dict[int, VM] = {}
    device_maker: VM | None = None
    for call in calls:
        if call.request == "KVM_CREATE_VM":
            if call.ret is not None and call.ret >= 0:
                vm = VM(len(vms) + 1, call.ret, call.line, _vm_type(call))
                vms.append(vm)
                by_fd[call.ret] = vm
            continue
        vm_or_none = by_fd.get(call.fd)
        if vm_or_none is None and call.request == "KVM_SET_DEVICE_ATTR":
            # A device's fd is returned inside KVM_CREATE_DEVICE's structure, which strace
            # 6.1 does not show: its calls go to the VM that made a device last.
            vm_or_none = device_maker
        if vm_or_none is None:
            continue
        _apply(vm_or_none, call)
        if call.request == "KVM_CREATE_DEVICE" and vm_or_none.devices:
            device_maker = vm_or_none
    return vms


def _vm_type(call: Call) -> int:
    """KVM_CREATE_VM's type argument: a number, or strace's KVM_VM_TYPE_ARM_IPA_SIZE(N)."""
    text = call.arg.strip()
    named = re.fullmatch(r"KVM_VM_TYPE_ARM_IPA_SIZE\((\d+)\)", text)
    if named:
        return int(named.group(1)) & 0xFF
    try:
        return int(text, 0)
    except ValueError:
        return 0


def _failed(call: Call) -> str | None:
    """Why ``call`` was not applied, or None when it succeeded."""
    if call.ret is None:
        return "did not return (the process ended during the call)"
    if call.ret < 0:
        return f"refused with {call.errno or call.ret}"
    return None


def _apply(vm: VM, call: Call) -> None:
    failed = _failed(call)
    if call.request in MEMSLOT_CALLS:
        _memslot(vm, call, failed)
    elif call.request in POINTER_ONLY:
        vm.pointer_only[call.request] = vm.pointer_only.get(call.request, 0) + 1
        if failed:
            vm.refused.append(f"line {call.line}: {call.request} {failed}.")
    elif call.request == "KVM_CREATE_IRQCHIP":
        if failed:
            vm.refused.append(f"line {call.line}: KVM_CREATE_IRQCHIP {failed}: no irqchip.")
        elif vm.irqchip is None:
            vm.irqchip = call.line
    elif call.request == "KVM_CREATE_DEVICE":
        if failed:
            vm.refused.append(f"line {call.line}: KVM_CREATE_DEVICE {failed}: no device.")
        else:
            kind = dict((k, v) for k, v, _ in fields(call)).get("type")
            vm.devices.append((kind, call.line))
    elif failed and call.ret is not None and call.request.startswith("KVM_"):
        vm.refused.append(f"line {call.line}: {call.request} {failed}.")


def _not_a_number(value: str, key: str, call: Call, column: int) -> ImportFailure:
    return ImportFailure(
        f"{call.request}: {key}={printable(value[:40])!r} is not a number as strace prints it",
        call.line, column,
    )


def _number(value: str, key: str, call: Call, column: int) -> int:
    try:
        return int(value, 0)
    except ValueError:
        raise _not_a_number(value, key, call, column) from None


def _memslot(vm: VM, call: Call, failed: str | None) -> None:
    """A memslot call, applied as KVM applies it (gpa_plan.record.memslots
    set_memory_region(), after virt/kvm/kvm_main.c kvm_set_memory_region()). A refused call
    changes nothing."""
    if not call.arg.startswith("{") and call.request == "KVM_SET_USER_MEMORY_REGION2":
        # strace 6.1 knows neither its name nor its structure: a bare pointer.
        vm.pointer_only[call.request] = vm.pointer_only.get(call.request, 0) + 1
        return
    if not call.arg.startswith("{"):
        raise ImportFailure(
            f"{call.request} with {printable(call.arg[:40])!r}: expected the structure strace "
            "prints ({slot=N, flags=F, guest_phys_addr=A, memory_size=S, ...})",
            call.line, call.arg_column,
        )
    got = {key: (value, column) for key, value, column in fields(call)}
    values = {}
    for key in ("slot", "flags", "guest_phys_addr", "memory_size"):
        if key not in got:
            raise ImportFailure(f"{call.request} without {key}=: expected the structure "
                                "strace prints", call.line, call.arg_column)
        value, column = got[key]
        values[key] = (_flags(vm, value, call, column) if key == "flags"
                       else _number(value, key, call, column))
    as_id, slot = values["slot"] >> 16, values["slot"] & 0xFFFF
    base, size, flags = values["guest_phys_addr"], values["memory_size"], values["flags"]
    if failed:
        vm.refused.append(
            f"line {call.line}: {call.request} slot {slot} (as_id {as_id}) at {base:#x}, "
            f"{size:#x} bytes, {failed}: not applied."
        )
        return
    set_memory_region(vm.memslots, values["slot"], flags, base, size)


def _flags(vm: VM, text: str, call: Call, column: int) -> int:
    """``flags=`` as strace prints it: 0, names joined by |, and a number for unknown bits
    (``0x8 /* KVM_MEM_??? */``)."""
    value = 0
    for part in re.sub(r"/\*[^*]*\*/", "", text).split("|"):
        part = part.strip()
        if part in _FLAG_NAMES:
            value |= _FLAG_NAMES[part]
        else:
            try:
                value |= int(part, 0)
            except ValueError:
                raise _not_a_number(text, "flags", call, column) from None
    unknown = value & ~(KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY | KVM_MEM_GUEST_MEMFD)
    if unknown:
        vm.unknown_flags.append(f"line {call.line}: flags {unknown:#x}")
    return value
