"""A recorded VM as a layout: the mapping `gpa-plan check` reads, and its text.

The layout keeps what KVM held for the VM when the recording ended: its memslots, its in-kernel
devices (the architecture's irqchip, vGIC frames), its ioeventfds and coalesced zones (MMIO
ones as devices, port I/O ones under ``ports:``), the addresses the program gave KVM for its
private memslots under ``kvm_private`` (by the keys of the architecture's settings: x86_64
``tss`` from KVM_SET_TSS_ADDR, ``identity_map`` from KVM_SET_IDENTITY_MAP_ADDR), and under
``observed.refused`` every call KVM refused. Entries are named so that two recordings of one
program compare line by line: memslots ``slotN`` (``asI-slotN`` outside address space 0),
``ioeventfdN`` and ``coalescedN`` by registration order from 0 (a removed one leaves its number
unused), vGIC frames ``gicd``, ``gicc``, ``gicr`` (``gicrN`` for the region of index N),
``its`` (``itsN`` for the N+1th ITS), and the x86 irqchip ``ioapic``, ``lapic``, ``pic``,
``pic2``, ``pic-elcr``, ``pit``, ``pit-speaker``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from typing import Any

from gpa_plan.arch import ARCHES
from gpa_plan.arch.base import Fixed, RecordFacts
from gpa_plan.importers import pa_bits_needed
from gpa_plan.plan.emit import _comment_safe, _yaml_scalar, to_json, yaml_entry_lines
from gpa_plan.record.memslots import memslot_entries
from gpa_plan.record.state import Frame, Ioeventfd, RecordedVM, Zone

_FRAME_NAMES = {"vgic-v2-dist": "gicd", "vgic-v3-dist": "gicd", "vgic-v2-cpu": "gicc",
                "vgic-v3-redist": "gicr", "vgic-its": "its"}
_LIST_SECTIONS = ("memslots", "devices", "reserved", "ports")


def document(vm: RecordedVM, arch: str, name: str | None = None) -> dict[str, Any]:
    """The layout of ``vm`` on ``arch`` (the host's: KVM runs guests of its own only), keys
    in the format's order; ``name`` defaults to ``record-ARCH-vmN``. ``ports`` and
    ``observed`` are present only when they hold something. A coalesced zone of 0 bytes,
    which KVM accepts and which holds nothing, is left out (``notes()`` says so)."""
    facts = ARCHES[arch].record
    memslots = memslot_entries(vm.memslots)
    devices: list[dict[str, Any]] = []
    ports: list[dict[str, Any]] = []
    for fixed in _fixed(vm, facts):
        if fixed.type is None:
            ports.append({"name": fixed.name, "base": fixed.base, "size": fixed.size,
                          "handler": "kernel"})
        else:
            devices.append({"name": fixed.name, "type": fixed.type, "base": fixed.base})
    devices += _frames(vm)
    for efd in vm.ioeventfds:
        (ports if efd.pio else devices).append(_ioeventfd(efd))
    for zone in vm.zones:
        if zone.size:
            (ports if zone.pio else devices).append(_zone(zone))
    doc: dict[str, Any] = {"layout": 1, "name": name or f"record-{arch}-vm{vm.number}",
                           "arch": arch}
    pa_bits = facts.pa_bits_of_vm_type(vm.vm_type)
    if pa_bits is None:
        pa_bits = pa_bits_needed(arch, [*memslots, *devices])
    if pa_bits is not None:
        doc["pa_bits"] = pa_bits
    doc["memslots"] = memslots
    doc["devices"] = devices
    if ports:
        doc["ports"] = ports
    private = {key: vm.kvm_private[setting.ioctl]
               for key, setting in ARCHES[arch].settings.items()
               if setting.ioctl in vm.kvm_private}
    if private:
        doc["kvm_private"] = private
    if vm.refused:
        doc["observed"] = {"refused": _refused(vm)}
    return doc


def _fixed(vm: RecordedVM, facts: RecordFacts) -> list[Fixed]:
    """The in-kernel devices at fixed addresses the VM's irqchip and PIT calls made."""
    made: list[Fixed] = []
    if vm.irqchip:
        made += facts.irqchip
    elif vm.split_irqchip:
        made += facts.split_irqchip
    if vm.pit:
        made += facts.pit + (facts.pit_speaker if vm.pit_speaker else ())
    return made


def _ioeventfd(efd: Ioeventfd) -> dict[str, Any]:
    """An MMIO ioeventfd as a device, a port one as a ``ports`` entry; the size is its
    length, 1 for length 0 (a write of any width at its address)."""
    entry: dict[str, Any] = {"name": f"ioeventfd{efd.number}"}
    if not efd.pio:
        entry.update(type="mmio", handler="ioeventfd")
    entry.update(base=efd.addr, size=efd.length or 1)
    if efd.pio:
        entry["handler"] = "ioeventfd"
    entry["length"] = efd.length
    if efd.datamatch is not None:
        entry["datamatch"] = efd.datamatch
    return entry


def _zone(zone: Zone) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": f"coalesced{zone.number}"}
    if not zone.pio:
        entry.update(type="mmio", handler="coalesced")
    entry.update(base=zone.addr, size=zone.size)
    if zone.pio:
        entry["handler"] = "coalesced"
    return entry


def _refused(vm: RecordedVM) -> list[dict[str, Any]]:
    return [
        {"call": call, "errno": errno, "count": count, **({"detail": detail} if detail else {})}
        for (call, errno, detail), count in vm.refused.items()
    ]


def _frames(vm: RecordedVM) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    its_seen: dict[int, int] = {}  # device number -> its place among the ITSes
    for key in sorted(vm.frames):
        frame = vm.frames[key]
        entry: dict[str, Any] = {"name": _frame_name(frame, its_seen), "type": frame.type,
                                 "base": frame.base}
        if frame.type == "vgic-v3-redist":
            if frame.count is None:
                entry["vcpus"] = max(1, vm.vcpus)
                entry["redist"] = "legacy"
            else:
                entry["vcpus"] = frame.count
        entries.append(entry)
    return entries


def _frame_name(frame: Frame, its_seen: dict[int, int]) -> str:
    name = _FRAME_NAMES[frame.type]
    if frame.type == "vgic-its":
        place = its_seen.setdefault(frame.device, len(its_seen))
        return f"{name}{place}" if place else name
    return f"{name}{frame.index}" if frame.index else name


def notes(vm: RecordedVM, arch: str, count: int) -> list[str]:
    """What the layout's comments say of ``vm`` (one of ``count`` VMs): where it came from,
    what could not be read, what the layout cannot show."""
    said = [f"VM {vm.number} of {count}: KVM_CREATE_VM in process {vm.tgid} returned fd "
            f"{vm.fd}; the state when the recording ended."]
    facts = ARCHES[arch].record
    if vm.irqchip and facts.irqchip_note:
        said.append(facts.irqchip_note)
    if facts.pa_bits_of_vm_type(vm.vm_type) is None and vm.vm_type:
        said.append(f"KVM_CREATE_VM type {vm.vm_type:#x}: not the default VM type; the layout "
                    "does not record it.")
    said += [f"coalesced{zone.number}: a coalesced zone of 0 bytes at {zone.addr:#x}, which "
             "holds nothing: left out." for zone in vm.zones if not zone.size]
    said += vm.unread
    return said


def opening_comments(command: Sequence[str], vm_notes: Sequence[str],
                     others: Sequence[str] = ()) -> list[str]:
    """The comment lines a recording opens with: the command, the host kernel (os.uname()),
    then the VM's notes (``notes()``: what could not be read) and ``others`` (the
    recorder's ``notes``: refused KVM_CREATE_VM calls; the tracer's limits)."""
    host = os.uname()
    return [f"Recorded by gpa-plan record from: {shlex.join(command)}",
            f"Host kernel: {host.sysname} {host.release} {host.version} ({host.machine})",
            *vm_notes, *others]


def recording_yaml(doc: dict[str, Any], comments: Sequence[str]) -> str:
    """``doc`` as YAML after ``comments`` (each one ``# `` line, escaped as one); the
    ``observed`` entries one line each, as flow mappings."""
    lines = [f"# {_comment_safe(comment)}" for comment in comments]
    for key, value in doc.items():
        if key in _LIST_SECTIONS:
            lines.append(f"{key}:" if value else f"{key}: []")
            for entry in value:
                lines.extend(yaml_entry_lines(entry, "  "))
        elif key == "kvm_private":
            lines.append(f"{key}:")
            lines.extend(f"  {name}: {address:#x}" for name, address in value.items())
        elif key == "observed":
            lines.append(f"{key}:")
            for part, entries in value.items():
                if not isinstance(entries, list):  # traffic_path: tracefs
                    lines.append(f"  {part}: {_yaml_scalar(part, entries)}")
                    continue
                lines.append(f"  {part}:" if entries else f"  {part}: []")
                # One line an entry: a busy guest's traffic has hundreds.
                lines.extend(f"    - {_flow(entry)}" for entry in entries)
        else:
            lines.append(f"{key}: {_yaml_scalar(key, value)}")
    return "\n".join(lines) + "\n"


def _flow(entry: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {_yaml_scalar(k, v)}" for k, v in entry.items()) + "}"


def recording_json(doc: dict[str, Any]) -> str:
    """``doc`` as JSON (which has no comments: the caller says them elsewhere)."""
    return to_json(doc)
