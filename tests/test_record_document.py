"""A recorded VM becomes a layout `check` accepts (tests/record_fakes.py drives the recorder
as the tracer would). Two recordings are kept as golden files in tests/data/golden/record/;
GPA_PLAN_UPDATE_GOLDEN=1 rewrites them."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from record_fakes import ITS, VGIC_V3, Tracee, region_value

import gpa_plan
from gpa_plan.record import uapi
from gpa_plan.record.document import (
    document,
    notes,
    opening_comments,
    recording_json,
    recording_yaml,
)
from gpa_plan.record.state import RecordedVM

GOLDEN = Path(__file__).resolve().parent / "data" / "golden" / "record"
# Keys the layout format does not have yet: left out of what `check` is given here.
NOT_IN_FORMAT_YET = ("ports", "observed")


def x86_vm() -> RecordedVM:
    t = Tracee()
    t.create_vm(4)
    t.memslot(4, 0, 0, 0x100_0000)
    t.memslot(4, 1, 0x100_0000, 0x1000)
    t.memslot(4, 1, 0x200_0000, 0x10_0000, uapi.KVM_MEM_LOG_DIRTY_PAGES)  # moved
    t.memslot(4, 2, 0xFFFF_0000, 0x1_0000, uapi.KVM_MEM_READONLY)
    t.memslot(4, 3, 0x400_0000, 0x1000)
    t.memslot(4, 3, 0, 0)  # deleted
    t.memslot(4, 5, 0x80_0000, 0x1000, ret=-errno.EEXIST)  # over slot 0
    t.ioctl(4, uapi.KVM_CREATE_IRQCHIP)
    t.pit2(4, uapi.KVM_PIT_SPEAKER_DUMMY)
    t.vcpus(4, 2)
    t.ioeventfd(4, 0xD000_0000, 4, datamatch=7)
    t.ioeventfd(4, 0xD000_0010, 2)
    t.ioeventfd(4, 0xD000_0020, 0)
    t.ioeventfd(4, 0xD000_0010, 2, deassign=True)
    t.ioeventfd(4, 0x510, 1, pio=True)
    t.ioeventfd(4, 0x10_0000, 4)  # inside RAM: never signalled
    t.zone(4, 0xA_0000, 0x1_0000, ret=-errno.EEXIST)
    t.zone(4, 0xE000_0000, 0x1000)
    t.zone(4, 0x3F8, 8, pio=True)
    return t.recorder.vms[0]


def arm64_vm() -> RecordedVM:
    t = Tracee()
    t.create_vm(4, vm_type=44)
    t.memslot(4, 0, 0x4000_0000, 0x800_0000)
    t.memslot(4, 1, 0, 0x400_0000, uapi.KVM_MEM_READONLY)
    t.vcpus(4, 4)
    t.create_device(4, uapi.KVM_DEV_TYPE_ARM_VGIC_V3, fd=6)
    t.set_addr(6, uapi.KVM_VGIC_V3_ADDR_TYPE_DIST, 0x800_0000, VGIC_V3)
    t.set_addr(6, uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION,
               region_value(0x80A_0000, 3, 0), VGIC_V3)
    t.set_addr(6, uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION,
               region_value(0x1_0000_0000, 1, 1), VGIC_V3)
    t.create_device(4, uapi.KVM_DEV_TYPE_ARM_VGIC_ITS, fd=7)
    t.set_addr(7, uapi.KVM_VGIC_ITS_ADDR_TYPE, 0x808_0000, ITS)
    t.create_device(4, uapi.KVM_DEV_TYPE_ARM_VGIC_ITS, fd=8, ret=-errno.ENODEV)
    t.ioeventfd(4, 0xA00_0050, 4, datamatch=0)
    return t.recorder.vms[0]


def checked(doc: dict[str, Any], tmp_path: Path) -> list[tuple[str, str, tuple[str, ...]]]:
    """``doc``'s findings from `check`, as (rule, severity, objects), without the keys the
    format does not have yet."""
    known = {key: value for key, value in doc.items() if key not in NOT_IN_FORMAT_YET}
    path = tmp_path / "recorded.yaml"
    path.write_text(recording_yaml(known, ["a recording"]))
    result, = gpa_plan.check_file(path)
    assert result.valid, result.findings
    return [(f.rule, f.severity, f.objects) for f in result.findings]


def test_an_x86_vm_becomes_its_memslots_irqchip_ioeventfds_zones_and_refusals() -> None:
    assert document(x86_vm(), "x86_64") == {
        "layout": 1, "name": "record-x86_64-vm1", "arch": "x86_64",
        "memslots": [
            {"name": "slot0", "slot": 0, "base": 0, "size": 0x100_0000},
            {"name": "slot1", "slot": 1, "base": 0x200_0000, "size": 0x10_0000,
             "dirty_log": True},
            {"name": "slot2", "slot": 2, "base": 0xFFFF_0000, "size": 0x1_0000,
             "readonly": True},
        ],
        "devices": [
            {"name": "ioapic", "type": "ioapic", "base": 0xFEC0_0000},
            {"name": "lapic", "type": "lapic", "base": 0xFEE0_0000},
            {"name": "ioeventfd0", "type": "mmio", "handler": "ioeventfd",
             "base": 0xD000_0000, "size": 4, "length": 4, "datamatch": 7},
            {"name": "ioeventfd2", "type": "mmio", "handler": "ioeventfd",
             "base": 0xD000_0020, "size": 1, "length": 0},
            {"name": "ioeventfd4", "type": "mmio", "handler": "ioeventfd",
             "base": 0x10_0000, "size": 4, "length": 4},
            {"name": "coalesced0", "type": "mmio", "handler": "coalesced",
             "base": 0xE000_0000, "size": 0x1000},
        ],
        "ports": [
            {"name": "pic", "base": 0x20, "size": 2, "handler": "kernel"},
            {"name": "pic2", "base": 0xA0, "size": 2, "handler": "kernel"},
            {"name": "pic-elcr", "base": 0x4D0, "size": 2, "handler": "kernel"},
            {"name": "pit", "base": 0x40, "size": 4, "handler": "kernel"},
            {"name": "pit-speaker", "base": 0x61, "size": 1, "handler": "kernel"},
            {"name": "ioeventfd3", "base": 0x510, "size": 1, "handler": "ioeventfd",
             "length": 1},
            {"name": "coalesced1", "base": 0x3F8, "size": 8, "handler": "coalesced"},
        ],
        "observed": {"refused": [
            {"call": "KVM_SET_USER_MEMORY_REGION", "errno": "EEXIST", "count": 1,
             "detail": "slot 5 at 0x800000, 0x1000 bytes"},
            {"call": "KVM_REGISTER_COALESCED_MMIO", "errno": "EEXIST", "count": 1,
             "detail": "MMIO 0xa0000, 0x10000 bytes"},
        ]},
    }


def test_the_x86_layout_checks_with_the_ioeventfd_in_ram_shadowed(tmp_path: Path) -> None:
    assert checked(document(x86_vm(), "x86_64"), tmp_path) == [
        ("device-shadowed", "error", ("ioeventfd4", "slot0")),
    ]


def test_an_arm64_vm_gets_its_ipa_size_vgic_regions_and_its(tmp_path: Path) -> None:
    doc = document(arm64_vm(), "arm64")
    assert doc["pa_bits"] == 44
    assert doc["devices"] == [
        {"name": "gicd", "type": "vgic-v3-dist", "base": 0x800_0000},
        {"name": "gicr", "type": "vgic-v3-redist", "base": 0x80A_0000, "vcpus": 3},
        {"name": "gicr1", "type": "vgic-v3-redist", "base": 0x1_0000_0000, "vcpus": 1},
        {"name": "its", "type": "vgic-its", "base": 0x808_0000},
        {"name": "ioeventfd0", "type": "mmio", "handler": "ioeventfd", "base": 0xA00_0050,
         "size": 4, "length": 4, "datamatch": 0},
    ]
    assert doc["observed"] == {"refused": [{"call": "KVM_CREATE_DEVICE", "errno": "ENODEV",
                                            "count": 1, "detail": "type 8"}]}
    assert "ports" not in doc
    # Only the note that some hosts have a smaller IPA limit than 44 bits.
    assert checked(doc, tmp_path) == [("host-limits", "note", ())]


def test_a_legacy_redistributor_covers_the_vms_vcpus(tmp_path: Path) -> None:
    t = Tracee()
    t.create_vm(4)
    t.vcpus(4, 2)
    t.create_device(4, uapi.KVM_DEV_TYPE_ARM_VGIC_V3, fd=6)
    t.set_addr(6, uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST, 0x80A_0000, VGIC_V3)
    t.memslot(4, 0, 0x80A_0000, 0x1000)  # over the redistributors
    doc = document(t.recorder.vms[0], "arm64")
    assert doc["pa_bits"] == 40  # KVM_CREATE_VM type 0: KVM_PHYS_SHIFT
    assert doc["devices"] == [{"name": "gicr", "type": "vgic-v3-redist", "base": 0x80A_0000,
                               "vcpus": 2, "redist": "legacy"}]
    rules = [(rule, objects) for rule, _, objects in checked(doc, tmp_path)]
    assert ("device-shadowed", ("gicr", "slot0")) in rules
    assert ("vgic-incomplete", ("gicr",)) in rules


def test_a_vgic_v2_from_kvm_create_irqchip_takes_the_kvm_arm_set_device_addr_frames(
    tmp_path: Path,
) -> None:
    t = Tracee()
    t.create_vm(4)
    t.ioctl(4, uapi.KVM_CREATE_IRQCHIP)
    t.arm_device_addr(4, uapi.KVM_VGIC_V2_ADDR_TYPE_CPU, 0x801_0000)
    t.arm_device_addr(4, uapi.KVM_VGIC_V2_ADDR_TYPE_DIST, 0x800_0000)
    vm = t.recorder.vms[0]
    doc = document(vm, "arm64")
    assert doc["devices"] == [{"name": "gicd", "type": "vgic-v2-dist", "base": 0x800_0000},
                              {"name": "gicc", "type": "vgic-v2-cpu", "base": 0x801_0000}]
    assert "KVM_CREATE_IRQCHIP made a vGICv2" in notes(vm, "arm64", 1)[1]
    assert checked(doc, tmp_path) == [("host-limits", "note", ("gicd",))]


def test_the_split_irqchip_is_the_lapic_alone_and_guest_memfd_is_kept() -> None:
    t = Tracee()
    t.create_vm(4)
    t.enable_cap(4, uapi.KVM_CAP_SPLIT_IRQCHIP)
    t.memslot2(4, 0, 0, 0x10_0000, uapi.KVM_MEM_GUEST_MEMFD, guest_memfd=9)
    doc = document(t.recorder.vms[0], "x86_64")
    assert doc["devices"] == [{"name": "lapic", "type": "lapic", "base": 0xFEE0_0000}]
    assert doc["memslots"] == [{"name": "slot0", "slot": 0, "base": 0, "size": 0x10_0000,
                                "guest_memfd": True}]


def test_two_vms_are_named_by_creation_order_and_pa_bits_follows_the_highest_entry(
    tmp_path: Path,
) -> None:
    t = Tracee()
    t.create_vm(4)
    t.create_vm(5)
    t.memslot(5, 0, 0x1_0000_0000_0000, 0x1000)  # beyond 48 bits
    first, second = (document(vm, "x86_64") for vm in t.recorder.vms)
    assert (first["name"], second["name"]) == ("record-x86_64-vm1", "record-x86_64-vm2")
    assert "pa_bits" not in first and second["pa_bits"] == 49
    assert checked(first, tmp_path) == []


def test_the_opening_comments_name_the_command_and_the_host_kernel() -> None:
    vm = x86_vm()
    comments = opening_comments(["./vmm", "--ram", "16M"], notes(vm, "x86_64", 2),
                                ["the tracee's memory at 0x10 could not be read"])
    host = os.uname()
    assert comments == [
        "Recorded by gpa-plan record from: ./vmm --ram 16M",
        f"Host kernel: {host.sysname} {host.release} {host.version} ({host.machine})",
        "VM 1 of 2: KVM_CREATE_VM in process 100 returned fd 4; the state when the "
        "recording ended.",
        "the tracee's memory at 0x10 could not be read",
    ]


@pytest.mark.parametrize(("name", "make", "arch"),
                         [("x86_64-vm1.yaml", x86_vm, "x86_64"),
                          ("arm64-vm1.yaml", arm64_vm, "arm64")])
def test_recordings_equal_their_golden_files(name: str, make: Any, arch: str) -> None:
    vm = make()
    doc = document(vm, arch)
    text = recording_yaml(doc, ["Recorded by gpa-plan record from: ./vmm",
                                *notes(vm, arch, 1)])
    assert yaml.safe_load(text) == doc
    golden = GOLDEN / name
    if os.environ.get("GPA_PLAN_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


def test_json_is_the_same_mapping() -> None:
    import json

    doc = document(arm64_vm(), "arm64")
    assert json.loads(recording_json(doc)) == doc


def test_notes_say_what_the_layout_leaves_out() -> None:
    t = Tracee()
    t.create_vm(4, vm_type=1)  # KVM_X86_SW_PROTECTED_VM
    t.zone(4, 0xE000_0000, 0)
    t.ioctl(4, uapi.KVM_IOEVENTFD, 0xBAD0)
    vm = t.recorder.vms[0]
    assert "devices" in document(vm, "x86_64") and document(vm, "x86_64")["devices"] == []
    assert notes(vm, "x86_64", 1)[1:] == [
        "KVM_CREATE_VM type 0x1: not the default VM type; the layout does not record it.",
        "coalesced0: a coalesced zone of 0 bytes at 0xe0000000, which holds nothing: left out.",
        "KVM_IOEVENTFD: the structure at 0xbad0 could not be read (Bad address); the call is "
        "left out",
    ]


def test_observed_sections_of_any_shape_render_as_the_same_mapping() -> None:
    doc = document(x86_vm(), "x86_64")
    doc["observed"] = {"traffic_path": "tracefs", "traffic": [
        {"space": "mmio", "address": 0xD000_0000, "width": 4, "reads": 12, "writes": 3}],
        "exits": [], **doc["observed"]}
    assert yaml.safe_load(recording_yaml(doc, [])) == doc


def test_a_command_with_line_breaks_stays_one_comment_line() -> None:
    doc = document(x86_vm(), "x86_64")
    text = recording_yaml(doc, opening_comments(["./vmm", "a\nlayout: 2"], []))
    assert text.splitlines()[0] == "# Recorded by gpa-plan record from: ./vmm 'a\\nlayout: 2'"
    assert yaml.safe_load(text) == doc
