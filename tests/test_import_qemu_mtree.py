"""`gpa-plan import qemu-mtree`: QEMU's `info mtree -f` (and `info mtree`) read into a layout.

The fixtures in data/import/qemu-mtree/ are built by hand in QEMU's output format (each says
so, and what it follows, in its header); the small inputs here are written the same way.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpa_plan.arch import ARCHES as ARCH_REGISTRY
from gpa_plan.check.run import check_file
from gpa_plan.importers import Imported, ImportFailure, entry_end
from gpa_plan.importers.qemu_mtree import import_qemu_mtree
from gpa_plan.importers.qemu_mtree import tree as qemu_mtree
from gpa_plan.layout.models import parse_layout
from gpa_plan.plan.emit import to_yaml
from gpa_plan.ranges import U64_LIMIT

FIXTURES = Path(__file__).resolve().parent / "data" / "import" / "qemu-mtree"
VIRT_FLAT = FIXTURES / "virt-gicv3-kvm-flat.txt"
VIRT_TREE = FIXTURES / "virt-gicv3-kvm-tree.txt"
Q35_FLAT = FIXTURES / "q35-kvm-flat.txt"
PC_TREE = FIXTURES / "pc-aliases-tree.txt"

HEADER = 'FlatView #0\n AS "memory", root: system\n Root memory region: system\n'


def imported(path: Path, arch: str | None = None) -> Imported:
    return import_qemu_mtree(path.read_text(), arch)


def flat(*ranges: str) -> str:
    """A FlatView of "memory" holding ``ranges`` (range lines without their indent)."""
    return HEADER + "".join(f"  {r}\n" for r in ranges)


def failure(text: str, arch: str | None = None) -> ImportFailure:
    with pytest.raises(ImportFailure) as caught:
        import_qemu_mtree(text, arch)
    return caught.value


def mmio(name: str, base: int, size: int) -> dict[str, Any]:
    return {"name": name, "type": "mmio", "base": base, "size": size}


def memslot(name: str, base: int, size: int, readonly: bool = False) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "base": base, "size": size}
    if readonly:
        entry["readonly"] = True
    return entry


# --- every fixture -------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.txt")), ids=lambda p: p.name)
def test_fixture_imports_to_a_layout_that_checks_clean(path: Path, tmp_path: Path) -> None:
    result = imported(path)
    parse_layout(result.document)
    layout = tmp_path / "imported.yaml"
    layout.write_text(to_yaml(result.document, result.notes, "fixture"))
    (checked,) = check_file(layout)
    assert checked.valid
    assert checked.findings == ()


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.txt")), ids=lambda p: p.name)
def test_fixture_says_it_was_constructed_and_cites_qemu(path: Path) -> None:
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert any("CONSTRUCTED BY HAND" in line for line in header)
    assert any("system/memory.c" in line for line in header)


def test_document_keys_come_in_the_format_order() -> None:
    document = imported(VIRT_FLAT).document
    assert list(document) == ["layout", "name", "arch", "memslots", "devices"]
    assert list(document["memslots"][0]) == ["name", "base", "size", "readonly"]
    assert list(document["devices"][2]) == ["name", "type", "base", "vcpus"]


# --- QEMU virt, arm64, GICv3 ---------------------------------------------------------------

VIRTIO_MMIO = [
    mmio(f"virtio-mmio-{base:#x}", base, 0x200) for base in range(0x0A00_0000, 0x0A00_4000, 0x200)
]
VIRTIO_NET_MODERN = [
    mmio("virtio-pci-common-virtio-net", 0x80_0000_0000, 0x1000),
    mmio("virtio-pci-isr-virtio-net", 0x80_0000_1000, 0x1000),
    mmio("virtio-pci-device-virtio-net", 0x80_0000_2000, 0x1000),
    mmio("virtio-pci-notify-virtio-net", 0x80_0000_3000, 0x1000),
]
VIRT_MEMSLOTS = [
    memslot("virt.flash0", 0, 0x0400_0000, readonly=True),
    memslot("virt.flash1", 0x0400_0000, 0x0400_0000, readonly=True),
    memslot("pvtime", 0x090A_0000, 0x1000),
    memslot("mach-virt.ram", 0x4000_0000, 0x4000_0000),
]
VIRT_PLATFORM = [
    {"name": "gicv3_dist", "type": "vgic-v3-dist", "base": 0x0800_0000},
    {"name": "gicv3_its", "type": "vgic-its", "base": 0x0808_0000},
    {"name": "gicv3_redist_region[0]", "type": "vgic-v3-redist", "base": 0x080A_0000, "vcpus": 4},
    mmio("pl011", 0x0900_0000, 0x1000),
    mmio("pl031", 0x0901_0000, 0x1000),
    mmio("fwcfg.data", 0x0902_0000, 8),
    mmio("fwcfg.ctl", 0x0902_0008, 2),
    mmio("fwcfg.dma", 0x0902_0010, 8),
    mmio("pl061", 0x0903_0000, 0x1000),
    *VIRTIO_MMIO,
]


def test_virt_flat_view_gives_flash_ram_vgic_and_the_emulated_devices() -> None:
    document = imported(VIRT_FLAT).document
    assert document["name"] == "qemu-mtree-arm64"
    assert document["arch"] == "arm64"
    assert "pa_bits" not in document  # the high PCIe window ends exactly at 2**40
    assert document["memslots"] == VIRT_MEMSLOTS
    assert document["devices"] == [
        *VIRT_PLATFORM,
        mmio("msix-table", 0x1000_0000, 0x40),
        mmio("gpex_mmio_window-0x10000040", 0x1000_0040, 0x7C0),
        mmio("msix-pba", 0x1000_0800, 8),
        mmio("gpex_mmio_window-0x10000808", 0x1000_0808, 0x3EFF_0000 - 0x1000_0808),
        mmio("gpex_ioport_window", 0x3EFF_0000, 0x1_0000),
        mmio("pcie-mmcfg-mmio", 0x40_1000_0000, 0x1000_0000),
        *VIRTIO_NET_MODERN,
        mmio("gpex_mmio_window-0x8000004000", 0x80_0000_4000, 2**40 - 0x80_0000_4000),
    ]


def test_virt_flat_view_notes_what_was_skipped_inferred_and_renamed() -> None:
    assert imported(VIRT_FLAT).notes == [
        "Skipped 2 other FlatViews (address spaces I/O, gpex-root): a layout holds the system "
        'memory address space "memory" only.',
        "Architecture arm64, from the region names gicv3_dist, gicv3_redist_region[0], "
        "mach-virt.ram, pl011, virt.flash0, virt.flash1.",
        HOST_PAGES_NOTE,
        "Names QEMU repeats (virtio-mmio x32, gpex_mmio_window x3) got their base address as "
        "a suffix, e.g. NAME-0x1000.",
    ]


def test_virt_tree_view_differs_from_the_flat_view_only_where_the_tree_cannot_tell() -> None:
    flat_document = imported(VIRT_FLAT).document
    tree_document = imported(VIRT_TREE).document
    assert tree_document["memslots"] == flat_document["memslots"]
    # gpex_mmio_window and gpex_ioport_window answer unmapped PCI accesses (unassigned_io_ops)
    # but hold subregions, so the tree shows them as containers; the empty "platform bus"
    # container and gpex_ioport are leaves, so the tree shows them as devices.
    flat_only = {
        "gpex_mmio_window-0x10000040",
        "gpex_mmio_window-0x10000808",
        "gpex_ioport_window",
        "gpex_mmio_window-0x8000004000",
    }
    assert tree_document["devices"] == sorted(
        [
            *(d for d in flat_document["devices"] if d["name"] not in flat_only),
            mmio("platform bus", 0x0C00_0000, 0x0200_0000),
            mmio("gpex_ioport", 0x3EFF_0000, 0x1_0000),
        ],
        key=lambda d: d["base"],
    )


def test_tree_view_is_noted_as_less_exact_than_the_flat_view() -> None:
    notes = imported(VIRT_TREE).notes
    assert notes[1] == (
        "Read from the tree view (`info mtree`), flattened as QEMU's render_memory_region() "
        "does: leaf i/o regions are taken as devices (an empty container looks the same), "
        "overlaps of equal priority in printed order; `info mtree -f` is exact."
    )


# --- QEMU q35, x86_64 ----------------------------------------------------------------------


def test_q35_flat_view_splits_ram_around_the_pci_hole_and_maps_the_in_kernel_irqchip() -> None:
    document = imported(Q35_FLAT).document
    assert document["arch"] == "x86_64"
    assert "pa_bits" not in document
    assert document["memslots"] == [
        memslot("pc.ram-0x0", 0, 0xA_0000),
        memslot("pc.ram-0xc0000", 0xC_0000, 0xC000),
        memslot("pc.ram-0xcc000", 0xC_C000, 0x2_4000),
        memslot("pc.ram-0xf0000", 0xF_0000, 0x1_0000),
        memslot("pc.ram-0x100000", 0x10_0000, 0x7FF0_0000),
        memslot("vga.vram", 0xFD00_0000, 0x100_0000),
        memslot("pc.bios", 0xFFFC_0000, 0x4_0000, readonly=True),
        memslot("pc.ram-0x100000000", 0x1_0000_0000, 0x8000_0000),
    ]
    assert document["devices"] == [
        mmio("vga-lowmem", 0xA_0000, 0x2_0000),
        mmio("pcie-mmcfg-mmio", 0xB000_0000, 0x1000_0000),
        mmio("virtio-pci-common-virtio-net", 0xFE00_0000, 0x1000),
        mmio("virtio-pci-isr-virtio-net", 0xFE00_1000, 0x1000),
        mmio("virtio-pci-device-virtio-net", 0xFE00_2000, 0x1000),
        mmio("virtio-pci-notify-virtio-net", 0xFE00_3000, 0x1000),
        mmio("msix-table", 0xFEBD_1000, 0x40),
        mmio("msix-pba", 0xFEBD_1800, 8),
        mmio("ahci", 0xFEBD_2000, 0x1000),
        mmio("vga ioports remapped", 0xFEBD_3400, 0x20),
        mmio("bochs dbi", 0xFEBD_3500, 0x16),
        mmio("qemu extended regs", 0xFEBD_3600, 8),
        {"name": "kvm-ioapic", "type": "ioapic", "base": 0xFEC0_0000},
        mmio("kvm-ioapic.rest", 0xFEC0_0100, 0xF00),
        mmio("hpet", 0xFED0_0000, 0x400),
        mmio("lpc-rcrb-mmio", 0xFED1_C000, 0x4000),
        {"name": "kvm-apic-msi", "type": "lapic", "base": 0xFEE0_0000},
        mmio("kvm-apic-msi.rest", 0xFEE0_1000, 0xF_F000),
    ]


def test_q35_notes_say_why_pam_rom_is_writable_and_where_the_msi_window_went() -> None:
    assert imported(Q35_FLAT).notes == [
        "Skipped 3 other FlatViews (address spaces I/O, KVM-SMRAM, mch, VGA, ICH9-LPC, "
        'ICH9-SMB): a layout holds the system memory address space "memory" only (x86 '
        "SMM's KVM-SMRAM, KVM address space 1, is not imported).",
        "Architecture x86_64, from the region names kvm-apic-msi, kvm-ioapic, pc.bios, pc.ram.",
        "Read-write memslots for pc.ram at 0xc0000, pc.ram at 0xf0000: QEMU shows them rom "
        "through a read-only alias (PAM), but kvm_mem_flags() takes KVM_MEM_READONLY from "
        "the RAM region itself.",
        "In-kernel devices that answer only the start of QEMU's region: kvm-ioapic (0x100 of "
        "0x1000), kvm-apic-msi (0x1000 of 0x100000); the rest is the mmio device NAME.rest, "
        "where KVM exits to QEMU (for kvm-apic-msi, QEMU turns writes there into MSIs).",
        "Names QEMU repeats (pc.ram x6) got their base address as a suffix, e.g. NAME-0x1000.",
    ]


def test_x86_tree_view_follows_aliases_and_priorities_like_qemu() -> None:
    # smram-region (priority 1) must cover ram-below-4g (priority 0) though printed after it;
    # pc.bios is reached through the PCI space at priority -1.
    result = imported(PC_TREE)
    assert result.document["memslots"] == [
        memslot("pc.ram-0x0", 0, 0xA_0000),
        memslot("pc.ram-0xc0000", 0xC_0000, 0x8000_0000 - 0xC_0000),
        memslot("pc.bios", 0xFFFC_0000, 0x4_0000, readonly=True),
        memslot("pc.ram-0x100000000", 0x1_0000_0000, 0x8000_0000),
    ]
    assert result.document["devices"] == [
        mmio("vga-lowmem", 0xA_0000, 0x2_0000),
        {"name": "kvm-apic-msi", "type": "lapic", "base": 0xFEE0_0000},
        mmio("kvm-apic-msi.rest", 0xFEE0_1000, 0xF_F000),
    ]
    assert "Skipped zero-size, disabled or overflowing regions: pam-pci, pci-hole64." in (
        result.notes
    )


# --- mapping rules -------------------------------------------------------------------------


def test_romd_is_a_readonly_memslot_and_a_ram_device_a_writable_one() -> None:
    document = import_qemu_mtree(
        flat(
            "0000000000000000-0000000003ffffff (prio 0, romd): virt.flash0 KVM",
            "0000008000000000-0000008000ffffff (prio 1, ramd): 0000:01:00.0 BAR 0 mmaps[0] KVM",
        )
    ).document
    assert document["memslots"] == [
        memslot("virt.flash0", 0, 0x400_0000, readonly=True),
        memslot("0000:01:00.0 BAR 0 mmaps[0]", 0x80_0000_0000, 0x100_0000),
    ]


def test_rom_of_a_region_that_is_not_ram_elsewhere_stays_readonly() -> None:
    document = import_qemu_mtree(
        flat("00000000fffc0000-00000000ffffffff (prio 0, rom): pc.bios KVM")
    ).document
    assert document["memslots"] == [memslot("pc.bios", 0xFFFC_0000, 0x4_0000, readonly=True)]


def test_unaligned_ram_keeps_its_aligned_interior_and_emulates_head_and_tail() -> None:
    result = import_qemu_mtree(
        flat("0000000040000800-00000000400037ff (prio 0, ram): mach-virt.ram"), "arm64"
    )
    assert result.document["memslots"] == [memslot("mach-virt.ram", 0x4000_1000, 0x2000)]
    assert result.document["devices"] == [
        mmio("mach-virt.ram.head", 0x4000_0800, 0x800),
        mmio("mach-virt.ram.tail", 0x4000_3000, 0x800),
    ]
    assert (
        "mach-virt.ram: KVM maps the 4 KiB-aligned part only (kvm_align_section()); the "
        "unaligned head/tail are mmio devices QEMU emulates." in result.notes
    )


def test_sub_page_ram_and_unmarked_ram_next_to_marked_ram_are_emulated_devices() -> None:
    document = import_qemu_mtree(
        flat(
            "0000000000000000-000000000009ffff (prio 0, ram): pc.ram KVM",
            "00000000000c0000-00000000000c07ff (prio 0, ram): tiny",
            "00000000fffc0000-00000000ffffffff (prio 0, rom): pc.bios",
        )
    ).document
    assert document["memslots"] == [memslot("pc.ram", 0, 0xA_0000)]
    assert document["devices"] == [
        mmio("tiny", 0xC_0000, 0x800),
        mmio("pc.bios", 0xFFFC_0000, 0x4_0000),
    ]


def test_output_without_kvm_marks_is_imported_as_kvm_would_map_it_and_noted() -> None:
    result = import_qemu_mtree(flat("00000000fffc0000-00000000ffffffff (prio 0, rom): pc.bios"))
    assert result.document["memslots"] == [memslot("pc.bios", 0xFFFC_0000, 0x4_0000, True)]
    assert result.notes[0].startswith("No range carries QEMU's KVM mark")


def test_gicv2_regions_become_vgic_v2_devices() -> None:
    document = import_qemu_mtree(
        flat(
            "0000000008000000-0000000008000fff (prio 0, i/o): gic_dist",
            "0000000008010000-0000000008011fff (prio 0, i/o): gic_cpu",
            "0000000008020000-0000000008020fff (prio 0, i/o): gicv2m",
        )
    ).document
    assert document["devices"] == [
        {"name": "gic_dist", "type": "vgic-v2-dist", "base": 0x0800_0000},
        {"name": "gic_cpu", "type": "vgic-v2-cpu", "base": 0x0801_0000},
        mmio("gicv2m", 0x0802_0000, 0x1000),
    ]


def test_older_qemu_gicv2_cpu_reservation_is_imported_at_kvm_size_and_noted() -> None:
    result = import_qemu_mtree(
        flat(
            "0000000008000000-0000000008000fff (prio 0, i/o): kvm-gic_dist",
            "0000000008010000-0000000008010fff (prio 0, i/o): kvm-gic_cpu",
        )
    )
    assert result.document["devices"] == [
        {"name": "kvm-gic_dist", "type": "vgic-v2-dist", "base": 0x0800_0000},
        {"name": "kvm-gic_cpu", "type": "vgic-v2-cpu", "base": 0x0801_0000},
    ]
    assert result.notes[-1] == (
        "In-kernel devices imported at KVM's size, larger than QEMU's region: "
        "kvm-gic_cpu (0x2000, QEMU 0x1000)."
    )


def test_redistributor_region_of_no_whole_vcpu_count_stays_an_mmio_device() -> None:
    document = import_qemu_mtree(
        flat("00000000080a0000-00000000080affff (prio 0, i/o): gicv3_redist_region[0]"), "arm64"
    ).document
    assert document["devices"] == [mmio("gicv3_redist_region[0]", 0x080A_0000, 0x1_0000)]


def test_its_control_frame_alone_is_not_an_its() -> None:
    document = import_qemu_mtree(
        flat("0000000008080000-000000000808ffff (prio 0, i/o): control"), "arm64"
    ).document
    assert document["devices"] == [mmio("control", 0x0808_0000, 0x1_0000)]


HOST_PAGES_NOTE = (
    "Memslots were trimmed assuming 4 KiB host pages: QEMU's kvm_align_section() trims to "
    "the host's page size, so on arm64 hosts with 16 or 64 KiB pages KVM maps less of "
    "memory ranges not aligned to that size (say --page-size 16K or 64K)."
)


def test_arm64_import_with_memory_notes_that_trimming_assumed_4k_host_pages() -> None:
    ram = "0000000040000000-000000007fffffff (prio 0, ram): mach-virt.ram KVM"
    assert HOST_PAGES_NOTE in import_qemu_mtree(flat(ram), "arm64").notes
    assert not any("trimmed" in n for n in import_qemu_mtree(flat(ram), "x86_64").notes)
    assert not any("trimmed" in n for n in import_qemu_mtree(flat(ram), "riscv64").notes)
    # loongarch64 hosts run 16 KiB pages in the kernel's default configuration.
    assert HOST_PAGES_NOTE.replace("arm64", "loongarch64") in (
        import_qemu_mtree(flat(ram), "loongarch64").notes
    )
    assert not any(
        "trimmed" in n for n in import_qemu_mtree(flat(ram), "arm64", 64 * 1024).notes
    )
    devices_only = flat("0000000009000000-0000000009000fff (prio 0, i/o): pl011")
    assert HOST_PAGES_NOTE not in import_qemu_mtree(devices_only, "arm64").notes


def test_range_above_the_default_ipa_size_sets_pa_bits() -> None:
    result = import_qemu_mtree(
        flat(
            "0000000040000000-000000007fffffff (prio 0, ram): mach-virt.ram KVM",
            "0000010000000000-00000100ffffffff (prio 0, ram): hotplug KVM",
        )
    )
    assert result.document["pa_bits"] == 41
    assert list(result.document)[3] == "pa_bits"
    assert "pa_bits 41: the highest range ends above the arm64 default of 40 bits." in (
        result.notes
    )



def test_pa_bits_is_a_width_the_architecture_takes() -> None:
    # riscv64 G-stage widths are 41, 50 or 59 (kvm_riscv_gstage_gpa_bits()): a range just
    # past 2**41 needs 50, not 42.
    result = import_qemu_mtree(
        flat("0000020000000000-00000200ffffffff (prio 0, ram): high KVM"), "riscv64"
    )
    assert result.document["pa_bits"] == 50
    parse_layout(result.document)

# --- names ---------------------------------------------------------------------------------


def test_repeated_names_take_their_base_and_a_counter_when_that_is_taken_too() -> None:
    document = import_qemu_mtree(
        flat(
            "0000000000001000-0000000000001fff (prio 0, i/o): uart",
            "0000000000002000-0000000000002fff (prio 0, i/o): uart",
            "0000000000003000-0000000000003fff (prio 0, i/o): uart-0x1000",
        ),
        "arm64",
    ).document
    assert [d["name"] for d in document["devices"]] == [
        "uart-0x1000-2",
        "uart-0x2000",
        "uart-0x1000",
    ]


def test_names_are_unique_across_memslots_and_devices() -> None:
    document = import_qemu_mtree(
        flat(
            "0000000000000000-0000000000000fff (prio 0, ram): pc.ram KVM",
            "0000000000001000-0000000000001fff (prio 0, i/o): pc.ram",
        )
    ).document
    assert document["memslots"] == [memslot("pc.ram-0x0", 0, 0x1000)]
    assert document["devices"] == [mmio("pc.ram-0x1000", 0x1000, 0x1000)]


# --- architecture --------------------------------------------------------------------------


def test_architecture_given_wins_and_other_arch_devices_become_plain_mmio() -> None:
    result = imported(VIRT_FLAT, "x86_64")
    assert result.document["arch"] == "x86_64"
    assert result.document["devices"][:3] == [
        mmio("gicv3_dist", 0x0800_0000, 0x1_0000),
        mmio("control", 0x0808_0000, 0x1_0000),
        mmio("translation", 0x0809_0000, 0x1_0000),
    ]
    assert result.notes[1] == (
        "Imported as x86_64, as asked, though the region names gicv3_dist, "
        "gicv3_redist_region[0], mach-virt.ram, pl011, virt.flash0, virt.flash1 are another "
        "architecture's: they are plain mmio devices or memslots here."
    )


def test_architecture_given_that_matches_the_names_is_not_noted() -> None:
    result = imported(Q35_FLAT, "x86_64")
    assert result.document == imported(Q35_FLAT).document
    assert not any("Architecture" in note or "as asked" in note for note in result.notes)


def test_unknown_architecture_argument_is_refused() -> None:
    error = failure(VIRT_FLAT.read_text(), "s390x")
    assert (error.line, error.message) == (
        0,
        "unknown architecture 's390x': expected arm64, x86_64, riscv64 or loongarch64",
    )


def test_names_of_no_known_architecture_need_an_arch() -> None:
    text = flat("0000000080000000-0000000087ffffff (prio 0, ram): riscv_virt_board.ram KVM")
    error = failure(text)
    assert error.line == 1
    assert error.message.startswith("cannot tell the architecture")
    # Every architecture --arch takes is offered, not only the two QEMU's names tell apart.
    assert all(arch in error.message.rsplit("--arch", 1)[1] for arch in ARCH_REGISTRY)
    assert import_qemu_mtree(text, "riscv64").document["memslots"] == [
        memslot("riscv_virt_board.ram", 0x8000_0000, 0x800_0000)
    ]


def test_names_of_both_architectures_need_an_arch() -> None:
    error = failure(
        flat(
            "0000000000000000-0000000000000fff (prio 0, ram): pc.ram KVM",
            "0000000008000000-000000000800ffff (prio 0, i/o): gicv3_dist",
        )
    )
    assert (error.line, error.column, error.message) == (
        5,
        3,
        "region names of two architectures: arm64 (gicv3_dist) and x86_64 (pc.ram); say "
        "which with --arch arm64 or --arch x86_64",
    )


# --- input forms ---------------------------------------------------------------------------


def test_prompts_comments_crlf_owners_and_dispatch_trees_are_read_through() -> None:
    text = (
        "(qemu) info mtree -f -o -d\r\n"
        "# saved from the monitor\r\n"
        "FlatView #0\r\n"
        ' AS "memory", root: system\r\n'
        " Root memory region: system\r\n"
        "  0000000040000000-000000007fffffff (prio 0, ram): mach-virt.ram"
        " owner:{obj path=/objects/mach-virt.ram} KVM\r\n"
        "  0000000009000000-0000000009000fff (prio 0, i/o): pl011"
        " owner:{dev id=uart0} parent:{obj path=/machine/unattached}\r\n"
        "  Dispatch\r\n"
        "    Physical sections\r\n"
        "      #0 @0000000000000000..ffffffffffffffff (noname) [unassigned]\r\n"
        "    Nodes (9 bits per level, 6 levels) ptr=[3] skip=4\r\n"
        "      [0]\r\n"
        "\t  0       skip=3  ptr=[3]\r\n"
        "\r\n"
    )
    document = import_qemu_mtree(text).document
    assert document["memslots"] == [memslot("mach-virt.ram", 0x4000_0000, 0x4000_0000)]
    assert document["devices"] == [mmio("pl011", 0x0900_0000, 0x1000)]


def test_flat_view_is_preferred_when_the_tree_view_is_in_the_same_input() -> None:
    result = import_qemu_mtree(VIRT_TREE.read_text() + VIRT_FLAT.read_text())
    assert result.document == imported(VIRT_FLAT).document
    assert "The tree view (`info mtree`) in the input is ignored: the flat view is exact." in (
        result.notes
    )


# --- input refused -------------------------------------------------------------------------

HOW = "run `info mtree -f` in the QEMU monitor (HMP) and save everything it prints"


@pytest.mark.parametrize(
    ("text", "line"),
    [("", 1), ("\n\n", 1), ("(qemu) info mtree -f\n", 1), ("\n(qemu) info mtree -f\n\n", 2)],
)
def test_input_without_mtree_output_is_refused_at_its_last_line(text: str, line: int) -> None:
    error = failure(text)
    assert (error.line, error.column, error.message) == (
        line,
        1,
        "the input holds no QEMU memory tree output; " + HOW,
    )


def test_other_text_is_refused_at_its_first_line() -> None:
    error = failure('\n{"return": ""}\n')
    assert error.line == 2
    assert error.message == (
        "this is not QEMU memory tree output: expected a 'FlatView #0' line (`info mtree -f`) "
        "or an 'address-space: memory' line (`info mtree`), found '{\"return\": \"\"}'; " + HOW
    )


def test_malformed_range_line_is_refused_at_its_line() -> None:
    text = flat(
        "0000000000000000-000000000009ffff (prio 0, ram): pc.ram KVM",
        "00000000000a0000-00000000000bfff (prio 1, i/o): vga-lowmem",
    )
    error = failure(text)
    assert (error.line, error.column) == (5, 3)
    assert error.message == (
        "malformed range line '00000000000a0000-00000000000bfff (prio 1, i/o): vga-lowmem': "
        "expected 'START-END (prio P, TYPE): NAME' with 16-digit hex addresses, as `info mtree "
        "-f` prints it; " + HOW
    )


def test_range_ending_before_it_starts_is_refused() -> None:
    error = failure(flat("0000000000002000-0000000000000fff (prio 0, ram): pc.ram"))
    assert (error.line, error.column, error.message) == (
        4,
        20,
        "range ends (0000000000000fff) before it starts (0000000000002000); " + HOW,
    )


def test_region_type_qemu_does_not_print_is_refused() -> None:
    error = failure(flat("0000000000000000-0000000000000fff (prio 0, RW): pc.ram"))
    assert (error.line, error.column) == (4, 46)
    assert error.message.startswith("unknown region type 'RW': expected one of container, i/o")


def test_stray_line_inside_a_flatview_is_refused() -> None:
    error = failure("FlatView #0\nthis is not QEMU\n")
    assert (error.line, error.column, error.message) == (
        2,
        1,
        "unexpected line 'this is not QEMU' in a FlatView: expected ' AS \"NAME\", root: "
        "ROOT' and ' Root memory region: NAME' lines, then range lines '  START-END (prio P, "
        "TYPE): NAME' (or '  No rendered FlatView'), as `info mtree -f` prints them; " + HOW,
    )


def test_output_without_the_memory_address_space_is_refused_at_its_end() -> None:
    text = (
        'FlatView #0\n AS "I/O", root: io\n Root memory region: io\n'
        "  0000000000000000-000000000000ffff (prio 0, container): io\n\n"
    )
    error = failure(text)
    assert (error.line, error.message) == (
        4,
        'no FlatView of the address space "memory" (the guest\'s system memory) in the '
        "input; " + HOW,
    )


def test_empty_memory_flatview_is_refused_at_its_header() -> None:
    error = failure("\n" + HEADER + "  No rendered FlatView\n")
    assert error.line == 2
    assert error.message.startswith('the FlatView of "memory" has no ranges')


def test_tree_alias_whose_target_block_is_missing_is_refused_at_the_alias() -> None:
    text = (
        "address-space: memory\n"
        "  0000000000000000-ffffffffffffffff (prio 0, container): system\n"
        "    0000000000000000-000000007fffffff (prio 0, ram): alias ram-below-4g @pc.ram "
        "0000000000000000-000000007fffffff\n"
    )
    error = failure(text)
    assert (error.line, error.message) == (
        3,
        "alias 'ram-below-4g' points at region 'pc.ram', but the input has no "
        "'memory-region: pc.ram' block; save the whole `info mtree` output",
    )


def test_tree_line_indented_below_no_parent_is_refused() -> None:
    text = (
        "address-space: memory\n"
        "  0000000000000000-ffffffffffffffff (prio 0, container): system\n"
        "        0000000000000000-0000000000000fff (prio 0, ram): pc.ram\n"
    )
    error = failure(text)
    assert error.line == 3
    assert error.message.startswith("range line indented to no parent")


def test_a_priority_of_thousands_of_digits_is_a_malformed_line_not_a_crash() -> None:
    # QEMU prints MemoryRegion.priority, an int, with %d: ten digits at most.
    text = (
        "address-space: memory\n"
        "  0000000000000000-ffffffffffffffff (prio 0, container): system\n"
        f"    0000000040000000-000000007fffffff (prio {'9' * 5000}, ram): ram\n"
    )
    error = failure(text)
    assert error.line == 3
    assert error.message.startswith("malformed range line")


def test_tree_address_space_without_range_lines_is_refused_at_its_header() -> None:
    error = failure("# saved from the monitor\naddress-space: memory\n")
    assert (error.line, error.message) == (
        2,
        'the tree of address space "memory" has no regions: nothing to import; ' + HOW,
    )


def test_the_importer_checks_its_input_without_asserts() -> None:
    # python -O drops asserts, and a failed one is an internal error, not an ImportFailure.
    package = Path(qemu_mtree.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert len(modules) > 1  # the whole package, not one module of it
    asserts = [
        f"{module.name}:{node.lineno}"
        for module in modules
        for node in ast.walk(ast.parse(module.read_text()))
        if isinstance(node, ast.Assert)
    ]
    assert asserts == []


# --- the ends of the 64-bit space ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["i/o", "ram"])
def test_range_of_the_whole_64_bit_space_is_refused_at_its_line(kind: str) -> None:
    error = failure(flat(f"0000000000000000-ffffffffffffffff (prio 0, {kind}): x"), "arm64")
    assert (error.line, error.message) == (
        4,
        "range 'x' covers the whole 64-bit address space (2**64 bytes), leaving room for "
        "nothing else: it cannot be a memslot or a device (a layout's sizes stop at 2**64-1), "
        "and no guest's memory is that one region; " + HOW,
    )


def test_tree_of_an_empty_root_container_is_refused_as_the_whole_64_bit_space() -> None:
    text = (
        "address-space: memory\n  0000000000000000-ffffffffffffffff (prio 0, container): system\n"
    )
    error = failure(text, "x86_64")
    assert error.line == 2
    assert error.message.startswith("range 'system' covers the whole 64-bit address space")


def test_range_ending_at_the_top_of_the_64_bit_space_is_imported() -> None:
    document = import_qemu_mtree(
        flat("fffffffffffff000-ffffffffffffffff (prio 0, i/o): top"), "arm64"
    ).document
    assert document["devices"] == [mmio("top", 2**64 - 0x1000, 0x1000)]
    assert document["pa_bits"] == 64
    parse_layout(document)


def test_in_kernel_device_that_kvm_size_would_carry_past_2_64_is_refused() -> None:
    error = failure(flat("fffffffffffff000-ffffffffffffffff (prio 0, i/o): gic_cpu"), "arm64")
    assert (error.line, error.message) == (
        4,
        "in-kernel device 'gic_cpu' at 0xfffffffffffff000 would end past 2**64 at KVM's size "
        "0x2000, where KVM could not have placed it; " + HOW,
    )


def test_overflow_mark_in_a_flat_view_is_refused() -> None:
    # mtree_print_mr() prints the mark before the indent; a flat view never has it.
    text = HEADER + "[DETECTED OVERFLOW!]   0000000000002000-0000000000000fff (prio 0, ram): r\n"
    error = failure(text, "arm64")
    assert (error.line, error.message) == (
        4,
        "'[DETECTED OVERFLOW!]' in a flat view, where QEMU never prints it; " + HOW,
    )


# --- the tree view at scale -----------------------------------------------------------------

FULL = "0000000000000000-00000000ffffffff"


def tree_of(*lines: str, blocks: dict[str, list[str]] | None = None) -> str:
    """A tree view of "memory": a 4 GiB root container holding ``lines`` (one level down),
    then a ``memory-region:`` block per entry of ``blocks``."""
    text = f"address-space: memory\n  {FULL} (prio 0, container): system\n"
    text += "".join(f"    {line}\n" for line in lines)
    for name, block in (blocks or {}).items():
        text += f"memory-region: {name}\n" + "".join(f"{line}\n" for line in block)
    return text


def test_tree_view_of_50000_regions_is_painted_in_linear_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Asserts on a counter, not a time: the importer's work budget (regions visited plus
    # painted intervals stepped over) is cut to 4 steps a line; a painter that scans every
    # piece for each range needs about count / 2 steps a line (and took 36 s here).
    count = 50_000
    monkeypatch.setattr(qemu_mtree, "_WORK_BUDGET", 4 * count)
    devices = [
        f"{0x1000_0000 + i * 0x1000:016x}-{0x1000_0FFF + i * 0x1000:016x} (prio 0, i/o): d{i}"
        for i in range(count)
    ]
    document = import_qemu_mtree(tree_of(*devices), "arm64").document
    assert len(document["devices"]) == count
    assert document["devices"][-1] == mmio(
        f"d{count - 1}", 0x1000_0000 + (count - 1) * 0x1000, 0x1000
    )


def alias_fan(depth: int, last: list[str]) -> str:
    """Blocks b0...b(depth-1) each holding two aliases of all of the next block, the last
    block ``last``: 2**depth paths if every alias were followed."""
    blocks = {
        f"b{k}": [
            f"  {FULL} (prio 0, container): b{k}",
            f"    {FULL} (prio 1, i/o): alias x{k} @b{k + 1} {FULL}",
            f"    {FULL} (prio 0, i/o): alias y{k} @b{k + 1} {FULL}",
        ]
        for k in range(depth)
    }
    blocks[f"b{depth}"] = last
    return tree_of(f"{FULL} (prio 0, i/o): alias a0 @b0 {FULL}", blocks=blocks)


def test_alias_fan_out_stops_where_the_range_is_painted_already() -> None:
    text = alias_fan(40, [f"  {FULL} (prio 0, ram): b40"])
    assert import_qemu_mtree(text, "arm64").document["memslots"] == [memslot("b40", 0, 2**32)]


def test_alias_fan_out_that_never_fills_its_range_runs_out_of_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(qemu_mtree, "_WORK_BUDGET", 50_000)  # the real one takes a second
    page = "0000000000000000-0000000000000fff (prio 0, ram): page"
    error = failure(alias_fan(40, [f"  {FULL} (prio 0, container): b40", f"    {page}"]), "arm64")
    assert error.message.startswith(
        "flattening the tree view took more than 50,000 steps (stopped at region "
    )
    assert error.message.endswith(
        "aliases that render the same regions again and again multiply the work; "
        + HOW
        + " (the flat view is QEMU's own flattening)"
    )


@pytest.mark.parametrize("depth", [69, 3000])
def test_deeply_nested_tree_without_aliases_is_read(depth: int) -> None:
    lines = ["address-space: memory"] + [
        "  " * level + f"{FULL} (prio 0, {'ram' if level == depth else 'container'}): c{level}"
        for level in range(1, depth + 1)
    ]
    document = import_qemu_mtree("\n".join(lines) + "\n", "arm64").document
    assert document["memslots"] == [memslot(f"c{depth}", 0, 2**32)]


def test_aliases_in_a_loop_are_refused_at_the_alias_that_closes_it() -> None:
    text = tree_of(
        f"{FULL} (prio 0, i/o): alias to-a @a {FULL}",
        blocks={
            "a": [
                f"  {FULL} (prio 0, container): a",
                f"    {FULL} (prio 0, i/o): alias to-b @b {FULL}",
            ],
            "b": [
                f"  {FULL} (prio 0, container): b",
                f"    {FULL} (prio 0, i/o): alias back @a {FULL}",
            ],
        },
    )
    error = failure(text, "arm64")
    assert (error.line, error.message) == (
        9,
        "aliases refer to each other in a loop: alias 'back' leads back into region 'a', "
        "which it lies in (a -> b -> a); " + HOW,
    )


def test_chain_of_more_than_64_aliases_is_refused_as_too_deep() -> None:
    blocks = {
        f"b{k}": [
            f"  {FULL} (prio 0, container): b{k}",
            f"    {FULL} (prio 0, i/o): alias x{k} @b{k + 1} {FULL}",
        ]
        for k in range(70)
    }
    blocks["b70"] = [f"  {FULL} (prio 0, ram): b70"]
    error = failure(tree_of(f"{FULL} (prio 0, i/o): alias a0 @b0 {FULL}", blocks=blocks), "arm64")
    assert error.message == (
        "alias 'x63' is reached through 64 aliases, each inside the target of the one before "
        "(b0 -> ... -> b64); more than 64 is not read; " + HOW
    )


# --- whatever the input, an ImportFailure or a valid layout ------------------------------------

FIXTURE_LINES = [
    [line for line in path.read_text().splitlines() if not line.startswith("#")]
    for path in sorted(FIXTURES.glob("*.txt"))
]
MUTANTS = [*"0123456789abcdef -()@,:[]KVM", "ram", "i/o", "container", "alias x @", "f" * 16]
ARCHES = st.sampled_from([None, "arm64", "x86_64"])
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def imports_or_fails(text: str, arch: str | None) -> None:
    try:
        result = import_qemu_mtree(text, arch)
    except ImportFailure:
        return
    parse_layout(result.document)
    entries = [*result.document["memslots"], *result.document["devices"]]
    assert all(entry_end(entry) <= U64_LIMIT for entry in entries)


@st.composite
def mutated_fixture(draw: st.DrawFn) -> str:
    """A fixture with lines dropped, duplicated, moved, truncated or with characters
    replaced."""
    lines = list(draw(st.sampled_from(FIXTURE_LINES)))
    for _ in range(draw(st.integers(1, 8))):
        index = draw(st.integers(0, len(lines) - 1))
        line = lines.pop(index)
        cut = draw(st.integers(0, len(line)))
        how = draw(st.sampled_from(["drop", "duplicate", "move", "truncate", "replace"]))
        if how == "truncate":
            line = line[:cut]
        elif how == "replace":
            line = line[:cut] + draw(st.sampled_from(MUTANTS)) + line[cut + 1 :]
        elif how == "move":
            index = draw(st.integers(0, len(lines)))
        copies = {"drop": 0, "duplicate": 2}.get(how, 1)
        lines[index:index] = [line] * (copies if lines else 1)
    return "\n".join(lines) + "\n"


ADDRESSES = st.sampled_from([0, 0xFFF, 0x1000, 0x0800_0000, 2**64 - 0x1000, 2**64 - 1]) | (
    st.integers(0, 2**64 - 1)
)
HEADERS = [
    "FlatView #0",
    ' AS "memory", root: system',
    "address-space: memory",
    "address-space: I/O",
    "memory-region: a",
    "memory-region: b",
]
NAMES = ["pc.ram", "gic_cpu", "gicv3_dist", "gicv3_redist_region[0]", "kvm-apic-msi", "control"]
REGION_TYPES = ["container", "i/o", "ram", "ramd", "rom", "romd"]


@st.composite
def range_line(draw: st.DrawFn) -> str:
    """A range line as QEMU prints them, at any level, any addresses, and an alias or not."""
    start, end = draw(ADDRESSES), draw(ADDRESSES)
    rest = draw(st.sampled_from(NAMES))
    if draw(st.booleans()):
        rest = f"alias x @{draw(st.sampled_from('ab'))} {draw(ADDRESSES):016x}-{end:016x}"
    overflow = draw(st.sampled_from(["", "[DETECTED OVERFLOW!] "]))
    return (
        f"{overflow}{'  ' * draw(st.integers(0, 3))}{start:016x}-{end:016x} "
        f"(prio {draw(st.integers(-1, 1))}, {draw(st.sampled_from(REGION_TYPES))}): "
        f"{rest}{draw(st.sampled_from(['', ' KVM', ' [disabled]']))}"
    )


MTREE_LINES = st.lists(st.sampled_from(HEADERS) | range_line(), max_size=12)


@SETTINGS
@given(st.text(), ARCHES)
def test_any_text_imports_to_a_valid_layout_or_fails_cleanly(text: str, arch: str | None) -> None:
    imports_or_fails(text, arch)


@SETTINGS
@given(mutated_fixture(), ARCHES)
def test_mutated_fixtures_import_to_a_valid_layout_or_fail_cleanly(
    text: str, arch: str | None
) -> None:
    imports_or_fails(text, arch)


@SETTINGS
@given(MTREE_LINES, ARCHES)
def test_lines_in_mtree_form_import_to_a_valid_layout_or_fail_cleanly(
    lines: list[str], arch: str | None
) -> None:
    imports_or_fails("\n".join(lines) + "\n", arch)


# --- the host page size ---------------------------------------------------------------------

# RAM of 1 GiB + 68 KiB: 4 KiB pages map all of it, 64 KiB pages leave a 4 KiB tail to QEMU.
ODD_RAM = flat("0000000040000000-0000000040010fff (prio 0, ram): mach-virt.ram KVM")


def test_a_64k_host_page_trims_memslots_to_it_and_sets_page_size() -> None:
    document, notes = import_qemu_mtree(ODD_RAM, "arm64", page_size=0x1_0000)
    assert document["page_size"] == 0x1_0000
    assert document["memslots"] == [
        {"name": "mach-virt.ram", "base": 0x4000_0000, "size": 0x1_0000}
    ]
    assert document["devices"] == [
        {"name": "mach-virt.ram.tail", "type": "mmio", "base": 0x4001_0000, "size": 0x1000}
    ]
    assert not any("assuming 4 KiB" in note for note in notes)
    assert any("64 KiB-aligned part only" in note for note in notes)


def test_without_a_page_size_4k_is_assumed_and_said() -> None:
    document, notes = import_qemu_mtree(ODD_RAM, "arm64")
    assert "page_size" not in document
    assert document["memslots"] == [
        {"name": "mach-virt.ram", "base": 0x4000_0000, "size": 0x1_1000}
    ]
    assert HOST_PAGES_NOTE in notes


@pytest.mark.parametrize("page_size", [0, 0x800, 0x3000])
def test_a_page_size_that_is_no_page_is_refused(page_size: int) -> None:
    with pytest.raises(ImportFailure, match="not a power of two of at least 4 KiB"):
        import_qemu_mtree(ODD_RAM, "arm64", page_size=page_size)


@pytest.mark.parametrize(
    ("arch", "page_size", "shown", "sizes"),
    [("arm64", 1 << 53, "8192 TiB", "4K, 16K, 64K"), ("arm64", 0x2_0000, "128 KiB", "4K, 16K, 64K"),
     ("x86_64", 0x1_0000, "64 KiB", "4K")],
)
def test_a_page_size_the_arch_has_not_is_refused(
    arch: str, page_size: int, shown: str, sizes: str
) -> None:
    # It was written as the layout's page_size, which `check` then refused (arch-limits).
    with pytest.raises(ImportFailure) as refused:
        import_qemu_mtree(ODD_RAM, arch, page_size=page_size)
    assert refused.value.message == (
        f"host page size {shown} is not one {arch} has ({sizes}); give the "
        "host's page size (--page-size)"
    )
