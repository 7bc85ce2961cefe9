"""`import_dtb`: device tree blobs to layouts.

There is no dtc or QEMU here, so the blobs are built by the FDT writer in
tests/data/import/dtb/make_dtbs.py from nested Python descriptions: three committed trees
modelled on what QEMU virt (GICv3, GICv2) and Firecracker write, small trees for each
mapping rule, and broken blobs for each way the reader refuses input. One blob is written
byte by byte instead, so that the reader is not checked only against that writer; and
hypothesis feeds the importer random bytes, random trees and mutations of the committed blobs.
"""

from __future__ import annotations

import json
import runpy
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpa_plan.check.run import check_file
from gpa_plan.importers import Imported, ImportFailure, pa_bits_needed
from gpa_plan.importers.dtb import fdt, import_dtb, mapping
from gpa_plan.layout.models import parse_layout
from gpa_plan.plan.emit import to_yaml

DATA = Path(__file__).resolve().parent / "data" / "import" / "dtb"
WRITER = runpy.run_path(str(DATA / "make_dtbs.py"))
fdt_blob = WRITER["fdt_blob"]
assemble = WRITER["assemble"]
with_header = WRITER["with_header"]
StringTable = WRITER["StringTable"]
begin_node, prop, token = WRITER["begin_node"], WRITER["prop"], WRITER["token"]
cells, u64s = WRITER["cells"], WRITER["u64s"]
FDT_END_NODE, FDT_END, FDT_NOP = WRITER["FDT_END_NODE"], WRITER["FDT_END"], WRITER["FDT_NOP"]

FIXTURES = ("qemu-virt-gicv3.dtb", "qemu-virt-gicv2.dtb", "firecracker-aarch64.dtb")
MiB, GiB = 1 << 20, 1 << 30

ARM_CPUS = {
    "#address-cells": 1,
    "#size-cells": 0,
    "cpu@0": {"device_type": "cpu", "compatible": "arm,cortex-a57", "reg": 0},
}


def arm_tree(**nodes: Any) -> dict[str, Any]:
    """A root with 2 address and 2 size cells, one Arm CPU, and ``nodes``."""
    return {"#address-cells": 2, "#size-cells": 2, "cpus": ARM_CPUS, **nodes}


def imported(tree: dict[str, Any], **kwargs: Any) -> Imported:
    result: Imported = import_dtb(fdt_blob(tree, **kwargs))
    return result


def import_fixture(name: str) -> Imported:
    return import_dtb((DATA / name).read_bytes())


def uart(base: int, size: int = 0x1000) -> dict[str, Any]:
    return {"compatible": "ns16550a", "reg": u64s(base, size)}


# --- the committed trees ------------------------------------------------------------------


def test_committed_dtbs_equal_what_make_dtbs_builds() -> None:
    built = WRITER["build"]()
    assert sorted(built) == sorted(FIXTURES)
    for name, blob in built.items():
        assert (DATA / name).read_bytes() == blob, name


def test_qemu_virt_gicv3_gives_flash_banks_ram_vgic_and_every_device() -> None:
    document, _ = import_fixture("qemu-virt-gicv3.dtb")
    virtio = [
        {"name": f"virtio_mmio@{base:x}", "type": "mmio", "base": base, "size": 0x200}
        for base in range(0x0A00_0000, 0x0A00_4000, 0x200)
    ]
    assert document == {
        "layout": 1,
        "name": "linux,dummy-virt",
        "arch": "arm64",
        "memslots": [
            {"name": "flash@0/bank0", "base": 0, "size": 64 * MiB, "readonly": True},
            {"name": "flash@0/bank1", "base": 64 * MiB, "size": 64 * MiB, "readonly": True},
            {"name": "memory@40000000", "base": 0x4000_0000, "size": GiB},
        ],
        "devices": [
            {"name": "intc@8000000/gicd", "type": "vgic-v3-dist", "base": 0x0800_0000},
            {"name": "its@8080000", "type": "vgic-its", "base": 0x0808_0000},
            # QEMU's whole VIRT_GIC_REDIST window: 0xF6_0000 / 128 KiB
            {
                "name": "intc@8000000/gicr",
                "type": "vgic-v3-redist",
                "base": 0x080A_0000,
                "vcpus": 123,
            },
            {"name": "pl011@9000000", "type": "mmio", "base": 0x0900_0000, "size": 0x1000},
            {"name": "pl031@9010000", "type": "mmio", "base": 0x0901_0000, "size": 0x1000},
            {"name": "fw-cfg@9020000", "type": "mmio", "base": 0x0902_0000, "size": 0x18},
            {"name": "pl061@9030000", "type": "mmio", "base": 0x0903_0000, "size": 0x1000},
            *virtio,
            {
                "name": "pcie@10000000/mmio32",
                "type": "mmio",
                "base": 0x1000_0000,
                "size": 0x2EFF_0000,
            },
            {"name": "pcie@10000000/io", "type": "mmio", "base": 0x3EFF_0000, "size": 0x1_0000},
            {
                "name": "pcie@10000000/ecam",
                "type": "mmio",
                "base": 0x3F00_0000,
                "size": 16 * MiB,
            },
            {
                "name": "pcie@10000000/mmio64",
                "type": "mmio",
                "base": 0x80_0000_0000,
                "size": 0x80_0000_0000,
            },
        ],
    }


def test_qemu_virt_gicv3_notes_say_what_was_left_out_and_why() -> None:
    _, notes = import_fixture("qemu-virt-gicv3.dtb")
    assert notes == [
        "/pcie@10000000: the guest places PCI BARs inside the windows (pcie@10000000/io, "
        "pcie@10000000/mmio32, pcie@10000000/mmio64); each window is one mmio device here",
        "the redistributor regions have room for 123 vCPUs, the tree has 4 CPUs: vcpus counts "
        "the room the tree describes (QEMU virt describes its whole window); KVM serves only "
        "the frames of the vCPUs it has, and accesses to the rest exit to the VMM",
    ]


def test_document_keys_come_in_the_layout_format_order() -> None:
    document, _ = import_fixture("qemu-virt-gicv3.dtb")
    assert list(document) == ["layout", "name", "arch", "memslots", "devices"]
    assert list(document["memslots"][0]) == ["name", "base", "size", "readonly"]
    assert list(document["memslots"][2]) == ["name", "base", "size"]
    assert [list(d) for d in document["devices"][:4]] == [
        ["name", "type", "base"],
        ["name", "type", "base"],
        ["name", "type", "base", "vcpus"],
        ["name", "type", "base", "size"],
    ]


def test_qemu_virt_gicv2_maps_distributor_and_cpu_interface_at_kvm_sizes() -> None:
    document, notes = import_fixture("qemu-virt-gicv2.dtb")
    assert document["devices"][:3] == [
        {"name": "intc@8000000/gicd", "type": "vgic-v2-dist", "base": 0x0800_0000},
        {"name": "intc@8000000/gicc", "type": "vgic-v2-cpu", "base": 0x0801_0000},
        {"name": "v2m@8020000", "type": "mmio", "base": 0x0802_0000, "size": 0x1000},
    ]
    # highmem=off: no 64-bit window
    assert [d["name"] for d in document["devices"] if d["name"].startswith("pcie")] == [
        "pcie@10000000/mmio32",
        "pcie@10000000/io",
        "pcie@10000000/ecam",
    ]
    assert notes == [
        "/pcie@10000000: the guest places PCI BARs inside the windows "
        "(pcie@10000000/io, pcie@10000000/mmio32); each window is one mmio device here",
        "/intc@8000000: vgic-v2-dist at 0x0800_0000: the tree gives 64 KiB, KVM handles "
        "4 KiB; the rest of the window is not imported",
        "/intc@8000000: vgic-v2-cpu at 0x0801_0000: the tree gives 64 KiB, KVM handles "
        "8 KiB; the rest of the window is not imported",
    ]


def test_firecracker_gives_ram_after_system_mem_and_the_gic_below_1g() -> None:
    assert import_fixture("firecracker-aarch64.dtb") == (
        {
            "layout": 1,
            "name": "linux,dummy-virt",
            "arch": "arm64",
            "memslots": [
                # DRAM_MEM_START + SYSTEM_MEM_SIZE: the memory node leaves out the first 2 MiB
                {"name": "memory@ram", "base": 0x8020_0000, "size": GiB - 2 * MiB},
            ],
            "devices": [
                {"name": "intc/gicr", "type": "vgic-v3-redist", "base": 0x3FFB_0000, "vcpus": 2},
                {"name": "intc/gicd", "type": "vgic-v3-dist", "base": 0x3FFF_0000},
                {"name": "rtc@40001000", "type": "mmio", "base": 0x4000_1000, "size": 0x1000},
                {"name": "uart@40002000", "type": "mmio", "base": 0x4000_2000, "size": 0x1000},
                {
                    "name": "virtio_mmio@40003000",
                    "type": "mmio",
                    "base": 0x4000_3000,
                    "size": 0x1000,
                },
                {
                    "name": "virtio_mmio@40004000",
                    "type": "mmio",
                    "base": 0x4000_4000,
                    "size": 0x1000,
                },
            ],
        },
        [],
    )


@pytest.mark.parametrize("name", FIXTURES)
def test_imported_fixture_validates_and_checks_without_findings(name: str, tmp_path: Path) -> None:
    document, notes = import_fixture(name)
    parse_layout(document)
    path = tmp_path / "imported.yaml"
    path.write_text(to_yaml(document, notes, "fixture"))
    [result] = check_file(path)
    counted = tuple(f for f in result.findings if f.severity != "note")
    assert (result.valid, result.arch, counted) == (True, "arm64", ())


# --- addresses ------------------------------------------------------------------------------


def test_root_with_one_address_cell_reads_one_cell_addresses_and_sizes() -> None:
    tree = {
        "#address-cells": 1,
        "#size-cells": 1,
        "model": "kvmtool-like 32-bit map",
        "cpus": ARM_CPUS,
        "memory": {"device_type": "memory", "reg": cells(0x8000_0000, 0x1000_0000)},
        "intc": {
            "compatible": "arm,cortex-a15-gic",
            "reg": cells(0x3FFF_0000, 0x1_0000, 0x3FFD_0000, 0x2_0000),
        },
        "virtio@10000": {"compatible": "virtio,mmio", "reg": cells(0x1_0000, 0x200)},
    }
    document, notes = imported(tree)
    assert document["name"] == "kvmtool-like 32-bit map"
    assert document["memslots"] == [{"name": "memory", "base": 0x8000_0000, "size": 256 * MiB}]
    assert document["devices"] == [
        {"name": "virtio@10000", "type": "mmio", "base": 0x1_0000, "size": 0x200},
        {"name": "intc/gicc", "type": "vgic-v2-cpu", "base": 0x3FFD_0000},
        {"name": "intc/gicd", "type": "vgic-v2-dist", "base": 0x3FFF_0000},
    ]
    assert notes == [
        "/intc: vgic-v2-dist at 0x3fff_0000: the tree gives 64 KiB, KVM handles 4 KiB; "
        "the rest of the window is not imported",
        "/intc: vgic-v2-cpu at 0x3ffd_0000: the tree gives 128 KiB, KVM handles 8 KiB; "
        "the rest of the window is not imported",
    ]


def test_missing_cell_counts_default_to_two_address_cells_and_one_size_cell() -> None:
    tree = {"cpus": ARM_CPUS, "uart@9000000": {"reg": cells(0, 0x0900_0000, 0x1000)}}
    document, notes = imported(tree)
    assert document["devices"] == [
        {"name": "uart@9000000", "type": "mmio", "base": 0x0900_0000, "size": 0x1000}
    ]
    assert notes == []


def test_simple_bus_ranges_translate_child_addresses_at_every_level() -> None:
    soc = {
        "compatible": "simple-bus",
        "#address-cells": 1,
        "#size-cells": 1,
        # child 0x0 -> CPU 0x1c00_0000, 16 MiB
        "ranges": cells(0x0, 0x0, 0x1C00_0000, 0x100_0000),
        "serial@90000": {"compatible": "arm,pl011", "reg": cells(0x9_0000, 0x1000)},
        "bus@200000": {
            "compatible": "simple-bus",
            "#address-cells": 2,
            "#size-cells": 1,
            # chip select 1, offset 0 -> soc 0x20_0000, chip select 2 -> soc 0x30_0000
            "ranges": cells(1, 0, 0x20_0000, 0x1_0000, 2, 0, 0x30_0000, 0x1_0000),
            "ethernet@1,0": {"reg": cells(1, 0x100, 0x100)},
            "flash@2,0": {"compatible": ["vendor,nor", "cfi-flash"], "reg": cells(2, 0, 0x1_0000)},
        },
    }
    document, notes = imported(arm_tree(**{"soc@1c000000": soc}))
    assert document["memslots"] == [
        {"name": "flash@2,0", "base": 0x1C30_0000, "size": 0x1_0000, "readonly": True}
    ]
    assert document["devices"] == [
        {"name": "serial@90000", "type": "mmio", "base": 0x1C09_0000, "size": 0x1000},
        {"name": "ethernet@1,0", "type": "mmio", "base": 0x1C20_0100, "size": 0x100},
    ]
    assert notes == []


def test_empty_ranges_maps_children_one_to_one() -> None:
    # QEMU virt's platform bus has ranges = <0 0 0xc000000 0x2000000>; an interrupt
    # controller's empty ranges (QEMU, Firecracker) is the identity.
    tree = arm_tree(
        **{
            "platform@c000000": {
                "compatible": ["qemu,platform", "simple-bus"],
                "#address-cells": 1,
                "#size-cells": 1,
                "ranges": cells(0, 0, 0x0C00_0000, 0x0200_0000),
                "ethernet@0": {"reg": cells(0x0, 0x1_0000)},
            },
            "bus@0": {
                "compatible": "simple-bus",
                "#address-cells": 2,
                "#size-cells": 2,
                "ranges": True,
                "timer@9100000": {"reg": u64s(0x0910_0000, 0x1000)},
            },
        }
    )
    document, _ = imported(tree)
    assert document["devices"] == [
        {"name": "timer@9100000", "type": "mmio", "base": 0x0910_0000, "size": 0x1000},
        {"name": "ethernet@0", "type": "mmio", "base": 0x0C00_0000, "size": 0x1_0000},
    ]


def test_children_of_a_bus_without_ranges_are_not_memory_mapped() -> None:
    tree = arm_tree(
        **{
            "mdio": {
                "#address-cells": 1,
                "#size-cells": 1,
                "phy@4": {"reg": cells(4, 1)},
            }
        }
    )
    document, notes = imported(tree)
    assert document["devices"] == []
    assert notes == [
        "/mdio/phy@4: /mdio has no ranges: its children are not in the CPU's address space; "
        "not imported"
    ]


def test_address_outside_every_range_of_its_bus_is_skipped_with_a_note() -> None:
    bus = {
        "#address-cells": 1,
        "#size-cells": 1,
        "ranges": cells(0, 0, 0x1000_0000, 0x1000),
        "dev@2000": {"reg": cells(0x2000, 0x100)},
    }
    document, notes = imported(arm_tree(**{"bus@10000000": bus}))
    assert document["devices"] == []
    assert notes == [
        "/bus@10000000/dev@2000: address 0x0000_2000 lies outside every range of "
        "/bus@10000000; not imported"
    ]


def test_reg_of_the_wrong_length_is_skipped_with_a_note() -> None:
    document, notes = imported(arm_tree(**{"odd@0": {"reg": cells(0, 0x1000, 0)}}))
    assert document["devices"] == []
    assert notes == [
        "/odd@0: reg of 12 bytes is not a whole number of (2 + 2)-cell entries, not imported"
    ]


@pytest.mark.parametrize(
    ("address_cells", "read_as", "note"),
    [
        (5, 5, "#address-cells is 5: more than 4 cells, not imported"),
        (b"\0\0", 2, "#address-cells is not one 32-bit cell; using 2"),
    ],
)
def test_a_bad_cell_count_is_noted_once_for_all_the_children(
    address_cells: int | bytes, read_as: int, note: str
) -> None:
    # Each child reads its bus's cell counts: three children, one note.
    bus: dict[str, Any] = {"#address-cells": address_cells, "#size-cells": 1, "ranges": True}
    for i in range(3):
        bus[f"dev@{i}"] = {"reg": cells(*[0] * (read_as - 1), 0x1000 * (i + 1), 0x100)}
    _, notes = imported(arm_tree(bus=bus))
    assert notes == [f"/bus: {note}"]


def test_empty_range_is_skipped_with_a_note() -> None:
    document, notes = imported(arm_tree(**{"dev@1000": {"reg": u64s(0x1000, 0)}}))
    assert document["devices"] == []
    assert notes == ["/dev@1000: empty range at 0x0000_1000, not imported"]


def test_entry_must_end_at_or_below_2_64_with_a_size_below_it() -> None:
    # Three size cells hold 2**64 itself, which no layout size can; an entry ending exactly
    # at 2**64 (the top page) is still a valid layout entry.
    bus = {
        "#address-cells": 2,
        "#size-cells": 3,
        "ranges": True,
        "whole@0": {"reg": cells(0, 0, 1, 0, 0)},
        "top@fffffffffffff000": {"reg": cells(0xFFFF_FFFF, 0xFFFF_F000, 0, 0, 0x1000)},
        "past@fffffffffffff000": {"reg": cells(0xFFFF_FFFF, 0xFFFF_F000, 0, 0, 0x1001)},
    }
    document, notes = imported(arm_tree(bus=bus))
    assert document["devices"] == [
        {
            "name": "top@fffffffffffff000",
            "type": "mmio",
            "base": 0xFFFF_FFFF_FFFF_F000,
            "size": 0x1000,
        }
    ]
    assert notes == [
        "/bus/whole@0: range at 0x0000_0000 is 0x10000000000000000 bytes, more than a 64-bit "
        "size holds; not imported",
        "/bus/past@fffffffffffff000: range at 0xffff_ffff_ffff_f000 ends beyond 2**64, not "
        "imported",
        "entries reach 0x1_0000_0000_0000_0000, beyond the default 40-bit IPA size: pa_bits 64",
    ]
    parse_layout(document)


def test_cpu_ids_gpio_keys_and_nodes_without_reg_add_nothing() -> None:
    tree = arm_tree(
        psci={"compatible": "arm,psci-0.2", "method": "hvc"},
        timer={"compatible": "arm,armv8-timer", "always-on": True},
        chosen={"bootargs": "console=ttyAMA0"},
        aliases={"serial0": "/pl011@9000000"},
        **{"gpio-keys": {"#address-cells": 1, "#size-cells": 0, "key@3": {"reg": 3}}},
    )
    document, notes = imported(tree)
    assert (document["memslots"], document["devices"], notes) == ([], [], [])


# --- status ---------------------------------------------------------------------------------


def test_disabled_nodes_and_everything_below_them_are_skipped_with_a_note() -> None:
    # QEMU virt with secure=on (virt_flash_fdt(), create_uart(), create_secure_ram()): the
    # secure-world flash bank, UART and RAM are "disabled" for the normal world.
    tree = arm_tree(
        **{
            "secflash@0": {
                "compatible": "cfi-flash",
                "reg": u64s(0, 64 * MiB),
                "status": "disabled",
                "secure-status": "okay",
            },
            "flash@0": {"compatible": "cfi-flash", "reg": u64s(64 * MiB, 64 * MiB)},
            "pl011@9040000": {"reg": u64s(0x0904_0000, 0x1000), "status": "disabled"},
            "secram@e000000": {
                "device_type": "memory",
                "reg": u64s(0x0E00_0000, 16 * MiB),
                "status": "disabled",
            },
            "bus@0": {
                "status": "fail",
                "#address-cells": 2,
                "#size-cells": 2,
                "ranges": True,
                "dev@20000000": {"reg": u64s(0x2000_0000, 0x1000), "status": "okay"},
            },
            "pl011@9000000": {"reg": u64s(0x0900_0000, 0x1000), "status": "okay"},
        }
    )
    document, notes = imported(tree)
    assert document["memslots"] == [
        {"name": "flash@0", "base": 64 * MiB, "size": 64 * MiB, "readonly": True}
    ]
    assert document["devices"] == [
        {"name": "pl011@9000000", "type": "mmio", "base": 0x0900_0000, "size": 0x1000}
    ]
    assert notes == [
        '/secflash@0: status "disabled": not imported, nor anything below it',
        '/pl011@9040000: status "disabled": not imported, nor anything below it',
        '/secram@e000000: status "disabled": not imported, nor anything below it',
        '/bus@0: status "fail": not imported, nor anything below it',
    ]


def test_reserved_status_is_imported_with_a_note() -> None:
    tree = arm_tree(
        **{"watchdog@9100000": {"reg": u64s(0x0910_0000, 0x1000), "status": "reserved"}}
    )
    document, notes = imported(tree)
    assert document["devices"] == [
        {"name": "watchdog@9100000", "type": "mmio", "base": 0x0910_0000, "size": 0x1000}
    ]
    assert notes == [
        '/watchdog@9100000: status "reserved": present but owned by other software; imported'
    ]


# --- interrupt controllers ------------------------------------------------------------------


def test_gicv2_hypervisor_interface_entries_are_skipped_with_a_note() -> None:
    # arm,gic.yaml: distributor, CPU interface, then GICH and GICV of the virtualization
    # extensions; Firecracker's GICv2 is "arm,gic-400" with KVM's sizes.
    gic = {
        "compatible": "arm,gic-400",
        "reg": u64s(
            0x3FFF_F000, 0x1000, 0x3FFF_D000, 0x2000, 0x3FFE_0000, 0x1_0000, 0x3FFC_0000, 0x2_0000
        ),
    }
    document, notes = imported(arm_tree(intc=gic))
    assert document["devices"] == [
        {"name": "intc/gicc", "type": "vgic-v2-cpu", "base": 0x3FFF_D000},
        {"name": "intc/gicd", "type": "vgic-v2-dist", "base": 0x3FFF_F000},
    ]
    assert notes == [
        "/intc: GICH/GICV entries not imported: the host's virtualization interface, "
        "not visible to a KVM guest"
    ]


def test_each_gicv3_redistributor_region_is_a_device_sized_in_vcpus() -> None:
    # QEMU virt with more than 123 vCPUs: a second region (VIRT_HIGH_GIC_REDIST2, 64 MiB).
    gic = {
        "compatible": "arm,gic-v3",
        "#redistributor-regions": 2,
        "reg": u64s(0x0800_0000, 0x1_0000, 0x080A_0000, 0xF6_0000, 0x40_0000_0000, 64 * MiB),
    }
    document, notes = imported(arm_tree(**{"intc@8000000": gic}))
    assert document["devices"] == [
        {"name": "intc@8000000/gicd", "type": "vgic-v3-dist", "base": 0x0800_0000},
        {"name": "intc@8000000/gicr0", "type": "vgic-v3-redist", "base": 0x080A_0000, "vcpus": 123},
        {
            "name": "intc@8000000/gicr1",
            "type": "vgic-v3-redist",
            "base": 0x40_0000_0000,
            "vcpus": 512,
        },
    ]
    assert notes == [
        "the redistributor regions have room for 635 vCPUs, the tree has 1 CPU: vcpus counts "
        "the room the tree describes (QEMU virt describes its whole window); KVM serves only "
        "the frames of the vCPUs it has, and accesses to the rest exit to the VMM"
    ]


def test_gicv3_entries_after_the_redistributors_are_skipped_with_a_note() -> None:
    # The first example of arm,gic-v3.yaml: GICD, GICR, GICC, GICH, GICV, with an ITS child.
    gic = {
        "compatible": "arm,gic-v3",
        "#address-cells": 1,
        "#size-cells": 1,
        "ranges": True,
        "reg": cells(
            0x2F00_0000,
            0x1_0000,
            0x2F10_0000,
            0x20_0000,
            0x2C00_0000,
            0x2000,
            0x2C01_0000,
            0x2000,
            0x2C02_0000,
            0x2000,
        ),
        "msi-controller@2c200000": {
            "compatible": "arm,gic-v3-its",
            "msi-controller": True,
            "reg": cells(0x2C20_0000, 0x2_0000),
        },
    }
    tree = {
        "#address-cells": 1,
        "#size-cells": 1,
        "cpus": ARM_CPUS,
        "interrupt-controller@2cf00000": gic,
    }
    document, notes = imported(tree)
    assert document["devices"] == [
        {"name": "msi-controller@2c200000", "type": "vgic-its", "base": 0x2C20_0000},
        {"name": "interrupt-controller@2cf00000/gicd", "type": "vgic-v3-dist", "base": 0x2F00_0000},
        {
            "name": "interrupt-controller@2cf00000/gicr",
            "type": "vgic-v3-redist",
            "base": 0x2F10_0000,
            "vcpus": 16,
        },
    ]
    assert notes == [
        "/interrupt-controller@2cf00000: GICC/GICH/GICV entries after the redistributors not "
        "imported: KVM's vGICv3 gives the guest its CPU interface as system registers, and "
        "GICH/GICV are the host's virtualization interface",
        "the redistributor regions have room for 16 vCPUs, the tree has 1 CPU: vcpus counts "
        "the room the tree describes (QEMU virt describes its whole window); KVM serves only "
        "the frames of the vCPUs it has, and accesses to the rest exit to the VMM",
    ]


def test_redistributor_region_is_counted_in_whole_vcpus() -> None:
    gic = {"compatible": "arm,gic-v3", "reg": u64s(0x3FFF_0000, 0x1_0000, 0x3FFA_0000, 0x3_0000)}
    document, notes = imported(arm_tree(intc=gic))
    assert document["devices"][0] == {
        "name": "intc/gicr",
        "type": "vgic-v3-redist",
        "base": 0x3FFA_0000,
        "vcpus": 1,
    }
    assert notes == [
        "/intc: redistributor region at 0x3ffa_0000 is 192 KiB, not a multiple of 128 KiB: "
        "imported for 1 vCPU"
    ]


def test_redistributor_stride_counts_vcpus_and_notes_kvms_size() -> None:
    # The second example of arm,gic-v3.yaml: 256 KiB stride, two 8 MiB regions for CPUs 0-31
    # and 32-63, GICC/GICH/GICV after them and two ITSes.
    cpus: dict[str, Any] = {"#address-cells": 1, "#size-cells": 0}
    cpus |= {
        f"cpu@{i}": {"device_type": "cpu", "compatible": "arm,cortex-a57", "reg": i}
        for i in range(64)
    }
    gic = {
        "compatible": "arm,gic-v3",
        "#interrupt-cells": 4,
        "#address-cells": 1,
        "#size-cells": 1,
        "ranges": True,
        "interrupt-controller": True,
        "redistributor-stride": cells(0x0, 0x4_0000),
        "#redistributor-regions": 2,
        "reg": cells(
            *(0x2C01_0000, 0x1_0000),
            *(0x2D00_0000, 0x80_0000),
            *(0x2E00_0000, 0x80_0000),
            *(0x2C04_0000, 0x2000),
            *(0x2C06_0000, 0x2000),
            *(0x2C08_0000, 0x2000),
        ),
        "interrupts": cells(1, 9, 4, 0),
        "msi-controller@2c200000": {
            "compatible": "arm,gic-v3-its",
            "msi-controller": True,
            "#msi-cells": 1,
            "reg": cells(0x2C20_0000, 0x2_0000),
        },
        "msi-controller@2c400000": {
            "compatible": "arm,gic-v3-its",
            "msi-controller": True,
            "#msi-cells": 1,
            "reg": cells(0x2C40_0000, 0x2_0000),
        },
    }
    tree = {
        "#address-cells": 1,
        "#size-cells": 1,
        "cpus": cpus,
        "interrupt-controller@2c010000": gic,
    }
    document, notes = imported(tree)
    gic_name = "interrupt-controller@2c010000"
    assert document["devices"] == [
        {"name": f"{gic_name}/gicd", "type": "vgic-v3-dist", "base": 0x2C01_0000},
        {"name": "msi-controller@2c200000", "type": "vgic-its", "base": 0x2C20_0000},
        {"name": "msi-controller@2c400000", "type": "vgic-its", "base": 0x2C40_0000},
        {"name": f"{gic_name}/gicr0", "type": "vgic-v3-redist", "base": 0x2D00_0000, "vcpus": 32},
        {"name": f"{gic_name}/gicr1", "type": "vgic-v3-redist", "base": 0x2E00_0000, "vcpus": 32},
    ]
    stride_note = (
        f"/{gic_name}: redistributor region at {{}}: redistributor-stride 256 KiB gives 32 "
        "vCPUs; KVM's redistributors are 128 KiB each, so the entry covers 4 MiB, not the "
        "tree's 8 MiB"
    )
    assert notes == [
        stride_note.format("0x2d00_0000"),
        stride_note.format("0x2e00_0000"),
        f"/{gic_name}: GICC/GICH/GICV entries after the redistributors not imported: KVM's "
        "vGICv3 gives the guest its CPU interface as system registers, and GICH/GICV are the "
        "host's virtualization interface",
    ]


MALFORMED_STRIDE = (
    "/intc: redistributor-stride is not one 64-bit positive multiple of 64 KiB; using 128 KiB"
)


@pytest.mark.parametrize(
    ("stride", "notes"),
    [
        # KVM's own stride, as some VMMs write it: nothing to say
        (u64s(0x2_0000), []),
        # one cell where the binding has a uint64; zero; not a multiple of 64 KiB
        (cells(0x4_0000), [MALFORMED_STRIDE]),
        (u64s(0), [MALFORMED_STRIDE]),
        (u64s(0x3_1000), [MALFORMED_STRIDE]),
    ],
)
def test_redistributor_stride_of_kvms_size_or_malformed_counts_128k_each(
    stride: bytes, notes: list[str]
) -> None:
    gic = {
        "compatible": "arm,gic-v3",
        "redistributor-stride": stride,
        "reg": u64s(0x3FFF_0000, 0x1_0000, 0x3FFB_0000, 0x4_0000),
    }
    document, got = imported(arm_tree(intc=gic))
    assert document["devices"][0] == {
        "name": "intc/gicr",
        "type": "vgic-v3-redist",
        "base": 0x3FFB_0000,
        "vcpus": 2,
    }
    assert got == [
        *notes,
        "the redistributor regions have room for 2 vCPUs, the tree has 1 CPU: vcpus counts the "
        "room the tree describes (QEMU virt describes its whole window); KVM serves only the "
        "frames of the vCPUs it has, and accesses to the rest exit to the VMM",
    ]


# --- memory ---------------------------------------------------------------------------------


def test_memory_node_with_several_banks_gives_one_memslot_per_bank() -> None:
    # crosvm create_memory_node(): one "memory" node, one reg entry per guest memory region.
    memory = {"device_type": "memory", "reg": u64s(0x8000_0000, 2 * GiB, 0x1_0000_0000, GiB)}
    document, _ = imported(arm_tree(memory=memory))
    assert document["memslots"] == [
        {"name": "memory/bank0", "base": 0x8000_0000, "size": 2 * GiB},
        {"name": "memory/bank1", "base": 0x1_0000_0000, "size": GiB},
    ]


def test_reserved_memory_and_memreserve_are_noted_inside_the_ram_memslot() -> None:
    tree = arm_tree(
        **{
            "memory@80000000": {"device_type": "memory", "reg": u64s(0x8000_0000, GiB)},
            "reserved-memory": {
                "#address-cells": 2,
                "#size-cells": 2,
                "ranges": True,
                # crosvm's restricted DMA pool has no reg: placed by the guest
                "restricted_dma_reserved": {"compatible": "restricted-dma-pool", "size": u64s(MiB)},
                "fw@bf000000": {"no-map": True, "reg": u64s(0xBF00_0000, MiB)},
            },
        }
    )
    document, notes = imported(tree, reservations=((0x8000_0000, 0x1_0000),))
    assert document["memslots"] == [{"name": "memory@80000000", "base": 0x8000_0000, "size": GiB}]
    assert document["devices"] == []
    assert notes == [
        "/memreserve/ 0x8000_0000 (64 KiB): RAM the guest OS must not use; it stays inside "
        "the memory memslot, not imported",
        "/reserved-memory/fw@bf000000: reserved RAM at 0xbf00_0000 (1 MiB) inside the memory "
        "memslot, not imported",
    ]


def test_pa_bits_is_given_only_when_an_entry_ends_past_40_bits() -> None:
    low = imported(arm_tree(memory={"device_type": "memory", "reg": u64s(0xFF_C000_0000, GiB)}))
    assert "pa_bits" not in low.document
    assert low.notes == []
    high = imported(arm_tree(memory={"device_type": "memory", "reg": u64s(0x100_0000_0000, GiB)}))
    assert high.document["pa_bits"] == 41
    assert list(high.document) == ["layout", "arch", "pa_bits", "memslots", "devices"]
    assert high.notes == [
        "entries reach 0x100_4000_0000, beyond the default 40-bit IPA size: pa_bits 41"
    ]


def test_pa_bits_comes_from_the_importers_shared_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    # A redistributor has no size in the document: its end is the catalog's, as for every
    # importer, so both importers ask one function.
    asked: list[int | None] = []

    def spy(arch: str, entries: list[dict[str, Any]]) -> int | None:
        asked.append(pa_bits_needed(arch, entries))
        return asked[-1]

    monkeypatch.setattr(mapping, "pa_bits_needed", spy)
    gic = {"compatible": "arm,gic-v3", "reg": u64s(0x0800_0000, 0x1_0000, 0xFF_FFFE_0000, 0x4_0000)}
    document, notes = imported(arm_tree(intc=gic))
    assert asked == [document["pa_bits"]] == [41]
    assert notes[-1] == (
        "entries reach 0x100_0002_0000, beyond the default 40-bit IPA size: pa_bits 41"
    )


# --- PCI ------------------------------------------------------------------------------------


def test_cam_host_bridge_windows_are_named_by_space_and_prefetchability() -> None:
    # crosvm create_pci_nodes(): "pci", pci-host-cam-generic, ss and p bits in phys.hi.
    pci = {
        "compatible": "pci-host-cam-generic",
        "device_type": "pci",
        "#address-cells": 3,
        "#size-cells": 2,
        "reg": u64s(0x7200_0000, 16 * MiB),
        "ranges": cells(0x0200_0000, 0, 0x7000_0000)
        + u64s(0x7000_0000, 32 * MiB)
        + cells(0x4300_0000, 0x1, 0)
        + u64s(0x1_0000_0000, 4 * GiB),
        "virtio_iommu@8": {"reg": cells(0x800, 0, 0, 0, 0)},
    }
    document, notes = imported(arm_tree(pci=pci))
    assert document["devices"] == [
        {"name": "pci/mmio32", "type": "mmio", "base": 0x7000_0000, "size": 32 * MiB},
        {"name": "pci/config", "type": "mmio", "base": 0x7200_0000, "size": 16 * MiB},
        {
            "name": "pci/mmio64-prefetchable",
            "type": "mmio",
            "base": 0x1_0000_0000,
            "size": 4 * GiB,
        },
    ]
    assert notes == [
        "/pci: the guest places PCI BARs inside the windows (pci/mmio32, "
        "pci/mmio64-prefetchable); each window is one mmio device here",
        "/pci/virtio_iommu@8: a PCI function (config-space address), not imported",
    ]


# --- names and the layout's name ------------------------------------------------------------


def test_taken_names_fall_back_to_the_path_then_a_number() -> None:
    def soc(base: int) -> dict[str, Any]:
        return {
            "#address-cells": 1,
            "#size-cells": 1,
            "ranges": cells(0, 0, base, 0x10_0000),
            "uart@1000": {"reg": cells(0x1000, 0x100)},
        }

    tree = arm_tree(
        **{
            "uart@1000": {"reg": u64s(0x1000, 0x100)},
            "soc@20000000": soc(0x2000_0000),
            "soc@30000000": soc(0x3000_0000),
            "reg0": {"reg": u64s(0x4000_0000, 0x100)},
            # two entries: bus/reg0 and bus/reg1; then its child "reg0" finds both its name
            # and its path taken
            "bus": {
                "#address-cells": 2,
                "#size-cells": 2,
                "ranges": True,
                "reg": u64s(0x5000_0000, 0x100, 0x5000_1000, 0x100),
                "reg0": {"reg": u64s(0x5000_2000, 0x100)},
            },
        }
    )
    document, _ = imported(tree)
    assert [(d["name"], d["base"]) for d in document["devices"]] == [
        ("uart@1000", 0x1000),
        ("soc@20000000/uart@1000", 0x2000_1000),
        ("soc@30000000/uart@1000", 0x3000_1000),
        ("reg0", 0x4000_0000),
        ("bus/reg0", 0x5000_0000),
        ("bus/reg1", 0x5000_1000),
        ("bus/reg0-2", 0x5000_2000),
    ]


def test_model_names_the_layout_before_compatible() -> None:
    named = imported(arm_tree(model="ACME board", compatible=["acme,board", "arm,vexpress"]))
    assert named.document["name"] == "ACME board"
    unnamed = imported(arm_tree())
    assert "name" not in unnamed.document


# --- architecture ---------------------------------------------------------------------------


def test_tree_without_arm_cpu_or_gic_is_refused() -> None:
    cpus = {"cpu@0": {"device_type": "cpu", "compatible": "ibm,power9", "reg": 0}}
    with pytest.raises(ImportFailure) as info:
        imported({"cpus": cpus})
    assert info.value.message == (
        "this device tree describes a machine with CPUs compatible with 'ibm,power9': gpa-plan "
        "imports the device trees of arm64 and riscv64 guests"
    )


def test_tree_with_an_arm_gic_and_no_cpu_nodes_is_arm64() -> None:
    gic = {"compatible": "arm,gic-v3", "reg": u64s(0x0800_0000, 0x1_0000, 0x080A_0000, 0x4_0000)}
    document, _ = imported({"#address-cells": 2, "#size-cells": 2, "intc@8000000": gic})
    assert document["arch"] == "arm64"
    assert [d["type"] for d in document["devices"]] == ["vgic-v3-dist", "vgic-v3-redist"]


# --- the reader -----------------------------------------------------------------------------


def small_blob() -> bytes:
    blob: bytes = fdt_blob(arm_tree(**{"uart@9000000": uart(0x0900_0000)}))
    return blob


def header(blob: bytes, field: str) -> int:
    index = WRITER["HEADER_FIELDS"].index(field)
    value: int = struct.unpack_from(">I", blob, 4 * index)[0]
    return value


def raw_blob(*tokens: bytes, names: tuple[str, ...] = ("reg",)) -> bytes:
    """A blob whose structure block is exactly ``tokens`` (strings: ``names``)."""
    strings = StringTable()
    for name in names:
        strings.offset(name)
    blob: bytes = assemble(b"".join(tokens), strings.data)
    return blob


def refusal(blob: bytes) -> str:
    with pytest.raises(ImportFailure) as info:
        import_dtb(blob)
    assert info.value.line == 0
    return info.value.message


def test_version_16_blob_without_size_dt_struct_is_read() -> None:
    blob = with_header(small_blob(), version=16, size_dt_struct=0)
    assert import_dtb(blob) == import_dtb(small_blob())


def test_nop_tokens_are_skipped() -> None:
    strings = StringTable()
    address_cells, size_cells = strings.offset("#address-cells"), strings.offset("#size-cells")
    compatible, reg = strings.offset("compatible"), strings.offset("reg")
    tokens = [
        token(FDT_NOP),
        begin_node(""),
        prop(address_cells, cells(2)),
        token(FDT_NOP),
        prop(size_cells, cells(2)),
        begin_node("intc@8000000"),
        token(FDT_NOP),
        prop(compatible, b"arm,gic-v3\0"),
        prop(reg, u64s(0x0800_0000, 0x1_0000, 0x080A_0000, 0x2_0000)),
        token(FDT_NOP),
        token(FDT_END_NODE),
        token(FDT_END_NODE),
        token(FDT_NOP),
        token(FDT_END),
    ]
    document, _ = import_dtb(assemble(b"".join(tokens), strings.data))
    assert [d["name"] for d in document["devices"]] == [
        "intc@8000000/gicd",
        "intc@8000000/gicr",
    ]


def test_empty_file_is_refused() -> None:
    assert refusal(b"") == "truncated: 0 bytes, too short for a device tree blob"


def test_wrong_magic_is_refused() -> None:
    assert refusal(b"\x7fELF" + bytes(60)) == (
        "not a device tree blob: magic 0x7f454c46, expected 0xd00dfeed; give the flattened "
        "tree the VMM writes (QEMU: `-machine virt,dumpdtb=FILE`)"
    )


def test_byte_swapped_magic_is_refused_as_little_endian() -> None:
    blob = bytes(reversed(small_blob()[:4])) + small_blob()[4:]
    assert refusal(blob) == (
        "the magic is byte-swapped: the blob is little-endian, FDT is big-endian"
    )


@pytest.mark.parametrize(
    "source",
    [
        b'/dts-v1/;\n\n/ {\n\tcompatible = "linux,dummy-virt";\n};\n',
        b"// SPDX-License-Identifier: GPL-2.0\n/dts-v1/;\n/ { };\n",
        b'\n  / {\n\tmodel = "x";\n};\n',
    ],
)
def test_device_tree_source_is_refused_with_the_dtc_command(source: bytes) -> None:
    assert refusal(source) == (
        "this is device tree source (.dts text), not a blob: compile it first with "
        "`dtc -I dts -O dtb -o FILE.dtb FILE.dts`"
    )


def test_blob_shorter_than_its_header_is_refused() -> None:
    assert refusal(small_blob()[:20]) == "truncated: 20 bytes, shorter than the FDT header"


def test_blob_shorter_than_its_totalsize_is_refused() -> None:
    blob = small_blob()
    assert refusal(blob[:-10]) == (
        f"truncated: the header says {len(blob)} bytes, the file has {len(blob) - 10}"
    )


@pytest.mark.parametrize(("version", "last_comp"), [(15, 15), (18, 18)])
def test_unsupported_versions_are_refused(version: int, last_comp: int) -> None:
    blob = with_header(small_blob(), version=version, last_comp_version=last_comp)
    assert refusal(blob) == (
        f"FDT version {version} (compatible with {last_comp}): gpa-plan reads versions 16 and "
        "17, what dtc and VMMs write"
    )


def test_structure_block_out_of_range_is_refused() -> None:
    blob = small_blob()
    total = len(blob)
    assert refusal(with_header(blob, off_dt_struct=total + 8)) == (
        f"the structure block ({total + 8:#x}, {header(blob, 'size_dt_struct')} bytes) is out "
        f"of range: the blob's blocks lie between 0x28 and {total:#x}"
    )


def test_strings_block_running_past_the_end_is_refused() -> None:
    blob = small_blob()
    offset, total = header(blob, "off_dt_strings"), len(blob)
    assert refusal(with_header(blob, size_dt_strings=total)) == (
        f"the strings block ({offset:#x}, {total} bytes) is out of range: the blob's blocks "
        f"lie between 0x28 and {total:#x}"
    )


def test_misaligned_structure_block_is_refused() -> None:
    blob = small_blob()
    offset = header(blob, "off_dt_struct")
    assert refusal(with_header(blob, off_dt_struct=offset + 2)) == (
        f"misaligned blocks: structure at {offset + 2:#x} (needs 4-byte alignment), memory "
        "reservation at 0x28 (needs 8-byte alignment)"
    )


def test_memory_reservation_block_without_terminator_is_refused() -> None:
    blob = small_blob()
    total = len(blob)
    # the last 16 bytes hold no (0, 0) entry: strings
    assert refusal(with_header(blob, off_mem_rsvmap=(total - 16) // 8 * 8)) == (
        "the memory reservation block runs past the end of the blob (no terminating empty entry)"
    )


def test_property_name_offset_beyond_the_strings_block_is_refused() -> None:
    blob = raw_blob(begin_node(""), prop(99, b""), token(FDT_END_NODE), token(FDT_END))
    at = 0x28 + 16 + 8
    assert refusal(blob) == (
        f"property at offset {at:#x}: name offset 99 is beyond the strings block (4 bytes)"
    )


def test_unterminated_property_name_is_refused() -> None:
    blob = raw_blob(begin_node(""), prop(0, b""), token(FDT_END_NODE), token(FDT_END))
    # cut the NUL of "reg" off the strings block
    blob = with_header(blob, size_dt_strings=3, totalsize=len(blob) - 1)[:-1]
    at = 0x28 + 16 + 8
    assert refusal(blob) == (
        f"property at offset {at:#x}: its name at strings offset 0 is unterminated (no NUL "
        "before the end of the strings block)"
    )


def test_unterminated_node_name_is_refused() -> None:
    blob = raw_blob(begin_node(""), token(1) + b"abcd")
    assert refusal(blob) == (
        "the name of the node at offset 0x40 is unterminated (no NUL before the end of the block)"
    )


def test_property_value_past_the_structure_block_is_refused() -> None:
    value_past_end = token(3) + struct.pack(">II", 64, 0) + b"\0" * 8
    blob = raw_blob(begin_node(""), value_past_end)
    assert refusal(blob) == (
        "the value of property 'reg' of / runs past the end of the structure block (64 bytes at "
        "offset 0x4c, block ends at 0x54)"
    )


def test_structure_block_without_fdt_end_is_refused() -> None:
    blob = raw_blob(begin_node(""), token(FDT_END_NODE))
    assert refusal(blob) == (
        "a token runs past the end of the structure block (4 bytes at offset 0x44, block ends "
        "at 0x44)"
    )


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (
            (begin_node(""), token(FDT_END_NODE), token(FDT_END_NODE), token(FDT_END)),
            "FDT_END_NODE at offset 0x44 closes no node",
        ),
        (
            (begin_node(""), begin_node("a"), token(FDT_END_NODE), token(FDT_END)),
            "FDT_END at offset 0x4c with 1 node(s) still open (innermost /)",
        ),
        (
            (prop(0, b""), begin_node(""), token(FDT_END_NODE), token(FDT_END)),
            "a property outside any node at offset 0x38",
        ),
        (
            (begin_node(""), token(FDT_END_NODE), begin_node(""), token(FDT_END)),
            "a second root node at offset 0x44",
        ),
        ((token(FDT_END),), "the structure block has no root node"),
        (
            (begin_node(""), token(7), token(FDT_END_NODE), token(FDT_END)),
            "unknown structure token 0x7 at offset 0x40",
        ),
        (
            (
                begin_node(""),
                begin_node(""),
                token(FDT_END_NODE),
                token(FDT_END_NODE),
                token(FDT_END),
            ),
            "a node without a name at offset 0x40 inside /",
        ),
        (
            (
                begin_node(""),
                begin_node("a"),
                token(FDT_END_NODE),
                begin_node("a"),
                token(FDT_END_NODE),
                token(FDT_END_NODE),
                token(FDT_END),
            ),
            "node /a appears twice (second at offset 0x4c)",
        ),
        (
            (begin_node(""), prop(0, b""), prop(0, b""), token(FDT_END_NODE), token(FDT_END)),
            "property 'reg' appears twice in /",
        ),
    ],
)
def test_badly_nested_structure_is_refused(tokens: tuple[bytes, ...], message: str) -> None:
    # The structure block starts at 0x38 (header 0x28, one empty reservation entry); a root
    # node's tokens take 8 bytes, a one-letter node's 8, an FDT_END_NODE 4.
    assert refusal(raw_blob(*tokens)) == message


def chain(levels: int) -> dict[str, Any]:
    """Nodes nested ``levels`` deep: n1 holds n2, ... down to n<levels>."""
    tree: dict[str, Any] = {}
    for level in range(levels, 0, -1):
        tree = {f"n{level}": tree}
    return tree


def test_nesting_64_levels_below_the_root_is_read() -> None:
    node = fdt.read_fdt(fdt_blob(chain(64))).root
    while node.children:
        node = node.children[0]
    assert node.path.count("/") == 64
    assert node.name == "n64"


def test_nesting_deeper_than_64_levels_is_refused() -> None:
    message = refusal(fdt_blob(chain(65)))
    assert message.startswith("nodes nested deeper than 64 levels below the root at offset 0x")


def test_a_wide_tree_is_read_in_linear_time() -> None:
    # 20,000 siblings: checking each new name against a scan of its siblings took about 6 s
    # here; with a set of names per open node it is well under a second. No timing asserted.
    tree = arm_tree(**{f"dev@{i:x}": uart(0x1000_0000 + i * 0x1000) for i in range(20_000)})
    document, notes = imported(tree)
    assert len(document["devices"]) == 20_000
    assert notes == []


# The source of hand_written_blob():
#
#     /dts-v1/;
#     /memreserve/ 0x80000000 0x10000;
#     / {
#         #address-cells = <2>;
#         #size-cells = <2>;
#         compatible = "linux,dummy-virt";
#         memory@80000000 {
#             device_type = "memory";
#             reg = <0x0 0x80000000 0x0 0x40000000>;
#         };
#         intc@3fff0000 {
#             compatible = "arm,gic-v3";
#             reg = <0x0 0x3fff0000 0x0 0x10000>, <0x0 0x3ffb0000 0x0 0x40000>;
#         };
#     };


def hand_written_blob() -> bytes:
    """The blob of the source above as dtc lays it out (Devicetree Specification v0.4
    chapter 5: header, memory reservation block, structure block, strings block), written
    field by field."""
    be32 = struct.Struct(">I").pack
    # Strings block: each property name once, NUL-terminated; a property names its offset.
    strings = b"#address-cells\0#size-cells\0compatible\0device_type\0reg\0"
    address_cells, size_cells, compatible, device_type, reg = 0, 15, 27, 38, 50
    begin, end_node, prop, end = be32(1), be32(2), be32(3), be32(9)
    structure = b"".join(
        [
            begin + b"\0\0\0\0",  # the root: an empty name, padded to 4 bytes
            prop + be32(4) + be32(address_cells) + be32(2),
            prop + be32(4) + be32(size_cells) + be32(2),
            prop + be32(17) + be32(compatible) + b"linux,dummy-virt\0\0\0\0",
            begin + b"memory@80000000\0",
            prop + be32(7) + be32(device_type) + b"memory\0\0",
            prop + be32(16) + be32(reg) + struct.pack(">4I", 0, 0x8000_0000, 0, 0x4000_0000),
            end_node,
            begin + b"intc@3fff0000\0\0\0",
            prop + be32(11) + be32(compatible) + b"arm,gic-v3\0\0",
            prop
            + be32(32)
            + be32(reg)
            + struct.pack(">8I", 0, 0x3FFF_0000, 0, 0x1_0000, 0, 0x3FFB_0000, 0, 0x4_0000),
            end_node,
            end_node,
            end,
        ]
    )
    # Memory reservation block: (address, size) pairs of 64-bit integers, ended by (0, 0).
    reservations = struct.pack(">4Q", 0x8000_0000, 0x1_0000, 0, 0)
    assert (len(structure), len(strings)) == (0xF4, 54)
    header = struct.pack(
        ">10I",
        0xD00D_FEED,  # magic
        0x172,  # totalsize
        0x48,  # off_dt_struct: after the header (0x28) and two reservation entries
        0x13C,  # off_dt_strings: 0x48 + 0xf4
        0x28,  # off_mem_rsvmap
        17,  # version
        16,  # last_comp_version
        0,  # boot_cpuid_phys
        54,  # size_dt_strings
        0xF4,  # size_dt_struct
    )
    return header + reservations + structure + strings


def test_blob_written_independently_of_the_test_writer_is_read() -> None:
    blob = hand_written_blob()
    assert len(blob) == 0x172
    assert import_dtb(blob) == (
        {
            "layout": 1,
            "name": "linux,dummy-virt",
            "arch": "arm64",
            "memslots": [{"name": "memory@80000000", "base": 0x8000_0000, "size": GiB}],
            "devices": [
                {
                    "name": "intc@3fff0000/gicr",
                    "type": "vgic-v3-redist",
                    "base": 0x3FFB_0000,
                    "vcpus": 2,
                },
                {"name": "intc@3fff0000/gicd", "type": "vgic-v3-dist", "base": 0x3FFF_0000},
            ],
        },
        [
            "/memreserve/ 0x8000_0000 (64 KiB): RAM the guest OS must not use; it stays inside "
            "the memory memslot, not imported"
        ],
    )


# --- never another exception ---------------------------------------------------------------


def imports_or_refuses(blob: bytes) -> None:
    """``import_dtb`` gives a valid layout document or ImportFailure, nothing else."""
    try:
        document, notes = import_dtb(blob)
    except ImportFailure:
        return
    parse_layout(document)
    assert all(isinstance(note, str) for note in notes)


FIXTURE_BLOBS = [(DATA / name).read_bytes() for name in FIXTURES]
# 32-bit values that steer a mutated header field or length into its edge cases.
EDGE_WORDS = (0, 1, 2, 3, 4, 9, 16, 17, 0x28, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF)
positions = st.integers(min_value=0, max_value=1 << 16)
mutations = st.one_of(
    st.tuples(st.just("flip"), positions, st.integers(min_value=1, max_value=255)),
    st.tuples(st.just("truncate"), positions, st.just(0)),
    st.tuples(st.just("insert"), positions, st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("word"), positions, st.sampled_from(EDGE_WORDS)),
)


def mutated(blob: bytes, edits: list[tuple[str, int, Any]]) -> bytes:
    data = bytearray(blob)
    for kind, position, arg in edits:
        at = position % (len(data) + 1)
        if kind == "flip" and at < len(data):
            data[at] ^= arg
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = arg
        elif kind == "word":
            at -= at % 4
            data[at : at + 4] = arg.to_bytes(4, "big")
    return bytes(data)


@settings(max_examples=200, deadline=None)
@given(
    blob=st.one_of(
        st.binary(max_size=512), st.binary(max_size=512).map(lambda b: b"\xd0\x0d\xfe\xed" + b)
    )
)
def test_random_bytes_import_or_are_refused(blob: bytes) -> None:
    imports_or_refuses(blob)


# Trees the writer builds from the properties the importer reads, with cell counts and
# numbers at their edges: what byte mutations rarely reach (a 2**64-byte entry, a stride).
EDGE_CELLS = (0, 1, 2, 0x1000, 0x2_0000, 0x8000_0000, 0xFFFF_F000, 0xFFFF_FFFF)
EDGE_NUMBERS = (0, 0x2_0000, (1 << 64) - 0x1000, 1 << 64)
cell_values = st.lists(st.sampled_from(EDGE_CELLS), max_size=12).map(lambda v: cells(*v))
properties = st.fixed_dictionaries(
    {},
    optional={
        "#address-cells": st.integers(min_value=0, max_value=5),
        "#size-cells": st.integers(min_value=0, max_value=5),
        "ranges": st.one_of(st.just(True), cell_values),
        "compatible": st.sampled_from(
            ["ns16550a", "arm,gic-v3", "arm,gic-v3-its", "arm,gic-400", "cfi-flash"]
        ),
        "device_type": st.sampled_from(["memory", "pci"]),
        "status": st.sampled_from(["okay", "reserved", "disabled"]),
        "#redistributor-regions": st.integers(min_value=0, max_value=3),
        "redistributor-stride": st.sampled_from([u64s(0x2_0000), u64s(0x4_0000), u64s(0)]),
    },
)
NODE_NAMES = ("bus", "dev@0", "dev@1000", "intc", "reserved-memory", "pcie")


def number_cells(value: int, count: int) -> bytes:
    """``value`` in ``count`` cells, its high bits dropped when they do not fit."""
    return (value % (1 << (32 * count))).to_bytes(4 * count, "big")


@st.composite
def regs(draw: st.DrawFn, address_cells: int, size_cells: int) -> bytes:
    """reg entries in the parent's cells, or (sometimes) cells of any length."""
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        raw: bytes = draw(cell_values)
        return raw
    entries = draw(
        st.lists(st.tuples(*[st.sampled_from(EDGE_NUMBERS)] * 2), min_size=1, max_size=3)
    )
    return b"".join(
        number_cells(address, address_cells) + number_cells(size, size_cells)
        for address, size in entries
    )


@st.composite
def nodes(draw: st.DrawFn, address_cells: int, size_cells: int, depth: int) -> dict[str, Any]:
    node: dict[str, Any] = draw(properties)
    if draw(st.integers(min_value=0, max_value=3)):
        node["reg"] = draw(regs(address_cells, size_cells))
    if depth < 3:
        names = draw(st.lists(st.sampled_from(NODE_NAMES), max_size=4, unique=True))
        inner = (node.get("#address-cells", 2), node.get("#size-cells", 1))
        for name in names:
            node[name] = draw(nodes(*inner, depth + 1))
    return node


trees = nodes(2, 1, 0).map(lambda root: root | {"cpus": ARM_CPUS})


@settings(max_examples=200, deadline=None)
@given(tree=trees)
def test_random_trees_import_or_are_refused(tree: dict[str, Any]) -> None:
    imports_or_refuses(fdt_blob(tree))


@settings(max_examples=200, deadline=None)
@given(
    blob=st.sampled_from(FIXTURE_BLOBS),
    edits=st.lists(mutations, min_size=1, max_size=6),
)
def test_mutated_fixtures_import_or_are_refused(
    blob: bytes, edits: list[tuple[str, int, Any]]
) -> None:
    imports_or_refuses(mutated(blob, edits))


def test_document_is_plain_json_data() -> None:
    document, notes = import_fixture("firecracker-aarch64.dtb")
    assert json.loads(json.dumps(document)) == document
    assert all(isinstance(note, str) for note in notes)
