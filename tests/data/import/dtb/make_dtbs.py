"""Write the device tree blobs the dtb importer is tested on, and the writer that builds them.

No dtc is needed: `fdt_blob()` assembles a blob (Devicetree Specification v0.4, chapter 5:
header, memory reservation block, structure block, strings block) from a nested description,
a dict whose values are properties or, for dicts, child nodes:

    {"#address-cells": 2, "compatible": ["arm,pl011", "arm,primecell"], "ranges": True,
     "reg": u64s(0x0900_0000, 0x1000), "pl011@9000000": {...}}

A str is a string, a list of str a string list, an int one 32-bit cell, True an empty
property, bytes the raw value. Run ``python3 tests/data/import/dtb/make_dtbs.py`` to
regenerate the .dtb files here; the test suite checks the committed files equal what this
script builds.

The trees follow what the VMMs write (sources in the comments of each):

    qemu-virt-gicv3.dtb   QEMU `-M virt-2.12,gic-version=3 -accel kvm -cpu cortex-a57 -smp 4
                          -m 1G`: GICv3 with ITS, highmem on (64-bit PCIe window at 512 GiB),
                          the low ECAM those machine types keep
    qemu-virt-gicv2.dtb   QEMU `-M virt,gic-version=2,highmem=off -accel kvm -cpu host -smp 2
                          -m 1G`: GICv2 with the GICv2m MSI frame, 32-bit windows only
    firecracker-aarch64.dtb  Firecracker, 2 vCPUs, 1 GiB, GICv3, RTC, serial, 2 virtio-mmio
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import Any

FDT_MAGIC = 0xD00D_FEED
FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_NOP, FDT_END = 1, 2, 3, 4, 9
HEADER_FIELDS = (
    "magic",
    "totalsize",
    "off_dt_struct",
    "off_dt_strings",
    "off_mem_rsvmap",
    "version",
    "last_comp_version",
    "boot_cpuid_phys",
    "size_dt_strings",
    "size_dt_struct",
)
HEADER = struct.Struct(">10I")

Tree = dict[str, Any]

MiB = 1 << 20
GiB = 1 << 30

# --- the writer ------------------------------------------------------------------------------


def cells(*values: int) -> bytes:
    """Big-endian 32-bit cells."""
    return b"".join(struct.pack(">I", v) for v in values)


def u64s(*values: int) -> bytes:
    """Each value as two cells: what `#address-cells = 2` / `#size-cells = 2` take."""
    return b"".join(struct.pack(">Q", v) for v in values)


def encode(value: Any) -> bytes:
    if value is True:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode() + b"\0"
    if isinstance(value, int):
        return cells(value)
    if isinstance(value, list):
        return b"".join(s.encode() + b"\0" for s in value)
    raise TypeError(f"cannot encode {value!r}")


class StringTable:
    """The strings block: each property name once, NUL-terminated."""

    def __init__(self) -> None:
        self.data = b""
        self.offsets: dict[str, int] = {}

    def offset(self, name: str) -> int:
        if name not in self.offsets:
            self.offsets[name] = len(self.data)
            self.data += name.encode() + b"\0"
        return self.offsets[name]


def pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def token(value: int) -> bytes:
    return struct.pack(">I", value)


def begin_node(name: str) -> bytes:
    return token(FDT_BEGIN_NODE) + pad4(name.encode() + b"\0")


def prop(nameoff: int, value: bytes) -> bytes:
    return token(FDT_PROP) + struct.pack(">II", len(value), nameoff) + pad4(value)


def node_tokens(name: str, tree: Tree, strings: StringTable) -> bytes:
    """A node's tokens: its properties first (Devicetree Specification v0.4 section 5.4.2),
    then its children."""
    # Joined once: growing one bytes object made a tree of thousands of nodes take seconds.
    parts = [begin_node(name)]
    for key, value in tree.items():
        if not isinstance(value, dict):
            parts.append(prop(strings.offset(key), encode(value)))
    for key, value in tree.items():
        if isinstance(value, dict):
            parts.append(node_tokens(key, value, strings))
    parts.append(token(FDT_END_NODE))
    return b"".join(parts)


def assemble(
    struct_block: bytes,
    strings_block: bytes,
    *,
    reservations: tuple[tuple[int, int], ...] = (),
    version: int = 17,
    last_comp_version: int = 16,
) -> bytes:
    """A blob laid out as dtc lays it out: header, reservations, structure, strings."""
    rsvmap = b"".join(struct.pack(">QQ", a, s) for a, s in (*reservations, (0, 0)))
    off_rsvmap = HEADER.size
    off_struct = off_rsvmap + len(rsvmap)
    off_strings = off_struct + len(struct_block)
    totalsize = off_strings + len(strings_block)
    header = HEADER.pack(
        FDT_MAGIC,
        totalsize,
        off_struct,
        off_strings,
        off_rsvmap,
        version,
        last_comp_version,
        0,
        len(strings_block),
        len(struct_block),
    )
    return header + rsvmap + struct_block + strings_block


def fdt_blob(tree: Tree, *, reservations: tuple[tuple[int, int], ...] = ()) -> bytes:
    """The blob of the root node ``tree``."""
    strings = StringTable()
    struct_block = node_tokens("", tree, strings) + token(FDT_END)
    return assemble(struct_block, strings.data, reservations=reservations)


def with_header(blob: bytes, **fields: int) -> bytes:
    """``blob`` with some header fields replaced (``totalsize=...``)."""
    values = dict(zip(HEADER_FIELDS, HEADER.unpack_from(blob), strict=True))
    values.update(fields)
    return HEADER.pack(*(values[f] for f in HEADER_FIELDS)) + blob[HEADER.size :]


# --- QEMU virt ------------------------------------------------------------------------------
# qemu/qemu hw/arm/virt.c: base_memmap[] (19bd6aafbd18) / a15memmap[] (0127937b203a), and the
# fdt helpers named below. Node names, property sets and cell counts as those functions write
# them; interrupt-map and other properties gpa-plan does not read are left out.

VIRT_UART, VIRT_RTC, VIRT_FW_CFG, VIRT_GPIO = 0x0900_0000, 0x0901_0000, 0x0902_0000, 0x0903_0000
VIRT_MMIO, VIRT_MMIO_SIZE, NUM_VIRTIO_TRANSPORTS = 0x0A00_0000, 0x200, 32
VIRT_GIC_DIST, VIRT_GIC_CPU, VIRT_GIC_V2M = 0x0800_0000, 0x0801_0000, 0x0802_0000
VIRT_GIC_ITS, VIRT_GIC_REDIST, VIRT_GIC_REDIST_SIZE = 0x0808_0000, 0x080A_0000, 0xF6_0000
VIRT_PCIE_MMIO, VIRT_PCIE_MMIO_SIZE = 0x1000_0000, 0x2EFF_0000
VIRT_PCIE_PIO, VIRT_PCIE_ECAM = 0x3EFF_0000, 0x3F00_0000
# a15memmap[] VIRT_PCIE_MMIO_HIGH: "Second PCIe window, 512GB wide at the 512GB boundary".
VIRT_PCIE_MMIO_HIGH = 0x80_0000_0000
VIRT_MEM = GiB
# create_pcie(): FDT_PCI_RANGE_IOPORT, FDT_PCI_RANGE_MMIO, FDT_PCI_RANGE_MMIO_64BIT.
PCI_RANGE_IOPORT, PCI_RANGE_MMIO, PCI_RANGE_MMIO_64BIT = 0x0100_0000, 0x0200_0000, 0x0300_0000


def _pci_range(space: int, pci: int, cpu: int, size: int) -> bytes:
    return cells(space, pci >> 32, pci & 0xFFFF_FFFF) + u64s(cpu, size)


def _virt_devices() -> Tree:
    """The devices both QEMU trees share, in the order a dumpdtb lists them."""
    tree: Tree = {
        # create_fw_cfg(): VIRT_FW_CFG { 0x09020000, 0x00000018 }
        f"fw-cfg@{VIRT_FW_CFG:x}": {
            "dma-coherent": True,
            "reg": u64s(VIRT_FW_CFG, 0x18),
            "compatible": "qemu,fw-cfg-mmio",
        },
    }
    # create_virtio_devices(): NUM_VIRTIO_TRANSPORTS (32) transports of 0x200 at VIRT_MMIO.
    for i in range(NUM_VIRTIO_TRANSPORTS):
        base = VIRT_MMIO + i * VIRT_MMIO_SIZE
        tree[f"virtio_mmio@{base:x}"] = {
            "dma-coherent": True,
            "interrupts": cells(0, 16 + i, 1),
            "reg": u64s(base, VIRT_MMIO_SIZE),
            "compatible": "virtio,mmio",
        }
    # create_gpio(): a gpio-keys node (#size-cells 0: its child has no address) and the PL061.
    tree["gpio-keys"] = {
        "#address-cells": 1,
        "#size-cells": 0,
        "compatible": "gpio-keys",
        "poweroff": {
            "gpios": cells(0x8003, 3, 0),
            "linux,code": 0x74,
            "label": "GPIO Key Poweroff",
        },
    }
    tree[f"pl061@{VIRT_GPIO:x}"] = {
        "phandle": 0x8003,
        "clock-names": "apb_pclk",
        "clocks": 0x8000,
        "interrupts": cells(0, 7, 4),
        "gpio-controller": True,
        "#gpio-cells": 2,
        "compatible": ["arm,pl061", "arm,primecell"],
        "reg": u64s(VIRT_GPIO, 0x1000),
    }
    return tree


def _virt_pcie(*, highmem: bool) -> Tree:
    # create_pcie(): reg is the ECAM, ranges the I/O-port window (PCI address 0), the 32-bit
    # window mapped 1:1, and with highmem the 64-bit window mapped 1:1.
    ranges = _pci_range(PCI_RANGE_IOPORT, 0, VIRT_PCIE_PIO, 0x1_0000) + _pci_range(
        PCI_RANGE_MMIO, VIRT_PCIE_MMIO, VIRT_PCIE_MMIO, VIRT_PCIE_MMIO_SIZE
    )
    if highmem:
        ranges += _pci_range(
            PCI_RANGE_MMIO_64BIT, VIRT_PCIE_MMIO_HIGH, VIRT_PCIE_MMIO_HIGH, VIRT_PCIE_MMIO_HIGH
        )
    return {
        "#interrupt-cells": 1,
        "ranges": ranges,
        "reg": u64s(VIRT_PCIE_ECAM, 16 * MiB),
        "msi-parent": 0x8002,
        "dma-coherent": True,
        "bus-range": cells(0, 0xF),
        "linux,pci-domain": 0,
        "#size-cells": 2,
        "#address-cells": 3,
        "device_type": "pci",
        "compatible": "pci-host-ecam-generic",
    }


def _virt_tail(cpu_compatible: str, smp: int) -> Tree:
    # virt_flash_fdt(): both pflash banks in one node when there is no secure world.
    # fdt_add_cpu_nodes(): #address-cells 1 unless an MPIDR has Aff3, #size-cells 0.
    cpus: Tree = {"#size-cells": 0, "#address-cells": 1}
    for cpu in range(smp):
        cpus[f"cpu@{cpu}"] = {
            "reg": cpu,
            "enable-method": "psci",
            "compatible": cpu_compatible,
            "device_type": "cpu",
        }
    return {
        "flash@0": {
            "bank-width": 4,
            "reg": u64s(0, 64 * MiB, 64 * MiB, 64 * MiB),
            "compatible": "cfi-flash",
        },
        "cpus": cpus,
        "timer": {
            "interrupts": cells(1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4),
            "always-on": True,
            "compatible": ["arm,armv8-timer", "arm,armv7-timer"],
        },
        "apb-pclk": {
            "phandle": 0x8000,
            "clock-output-names": "clk24mhz",
            "clock-frequency": 24_000_000,
            "#clock-cells": 0,
            "compatible": "fixed-clock",
        },
        "chosen": {"stdout-path": f"/pl011@{VIRT_UART:x}"},
    }


def _virt_root() -> Tree:
    # create_fdt(): no model, compatible "linux,dummy-virt", 2 address and 2 size cells.
    return {
        "interrupt-parent": 0x8001,
        "#size-cells": 2,
        "#address-cells": 2,
        "compatible": "linux,dummy-virt",
        "psci": {
            "migrate": 0xC400_0005,
            "cpu_on": 0xC400_0003,
            "cpu_off": 0x8400_0002,
            "cpu_suspend": 0xC400_0001,
            "method": "hvc",
            "compatible": ["arm,psci-0.2", "arm,psci"],
        },
        f"memory@{VIRT_MEM:x}": {"reg": u64s(VIRT_MEM, GiB), "device_type": "memory"},
        # platform_bus_add_all_fdt_nodes() (hw/arm/sysbus-fdt.c): an empty simple-bus over
        # VIRT_PLATFORM_BUS, one address and one size cell.
        "platform@c000000": {
            "interrupt-parent": 0x8001,
            "ranges": cells(0, 0, 0x0C00_0000, 0x0200_0000),
            "#address-cells": 1,
            "#size-cells": 1,
            "compatible": ["qemu,platform", "simple-bus"],
        },
    }


def _virt_uart_rtc() -> Tree:
    # create_rtc(), create_uart(): PL031 and PL011, 4 KiB each.
    return {
        f"pl031@{VIRT_RTC:x}": {
            "clock-names": "apb_pclk",
            "clocks": 0x8000,
            "interrupts": cells(0, 2, 4),
            "reg": u64s(VIRT_RTC, 0x1000),
            "compatible": ["arm,pl031", "arm,primecell"],
        },
        f"pl011@{VIRT_UART:x}": {
            "clock-names": ["uartclk", "apb_pclk"],
            "clocks": cells(0x8000, 0x8000),
            "interrupts": cells(0, 1, 4),
            "reg": u64s(VIRT_UART, 0x1000),
            "compatible": ["arm,pl011", "arm,primecell"],
        },
        "pmu": {"interrupts": cells(1, 7, 4), "compatible": "arm,armv8-pmuv3"},
    }


def qemu_virt_gicv3() -> Tree:
    tree = _virt_root() | _virt_devices()
    tree["pcie@10000000"] = _virt_pcie(highmem=True)
    tree |= _virt_uart_rtc()
    # fdt_add_gic_node() (GICv3): reg VIRT_GIC_DIST then VIRT_GIC_REDIST, one redistributor
    # region; fdt_add_its_gic_node(): the ITS as a child, reg VIRT_GIC_ITS.
    tree[f"intc@{VIRT_GIC_DIST:x}"] = {
        "phandle": 0x8001,
        "reg": u64s(VIRT_GIC_DIST, 0x1_0000, VIRT_GIC_REDIST, VIRT_GIC_REDIST_SIZE),
        "#redistributor-regions": 1,
        "compatible": "arm,gic-v3",
        "ranges": True,
        "#size-cells": 2,
        "#address-cells": 2,
        "interrupt-controller": True,
        "#interrupt-cells": 3,
        f"its@{VIRT_GIC_ITS:x}": {
            "phandle": 0x8002,
            "reg": u64s(VIRT_GIC_ITS, 0x2_0000),
            "msi-controller": True,
            "compatible": "arm,gic-v3-its",
        },
    }
    return tree | _virt_tail("arm,cortex-a57", smp=4)


def qemu_virt_gicv2() -> Tree:
    tree = _virt_root() | _virt_devices()
    tree["pcie@10000000"] = _virt_pcie(highmem=False)
    tree |= _virt_uart_rtc()
    # fdt_add_gic_node() (GICv2, no virtualization extensions): reg VIRT_GIC_DIST and
    # VIRT_GIC_CPU, 64 KiB each; fdt_add_v2m_gic_node(): the GICv2m frame as a child.
    tree[f"intc@{VIRT_GIC_DIST:x}"] = {
        "phandle": 0x8001,
        "reg": u64s(VIRT_GIC_DIST, 0x1_0000, VIRT_GIC_CPU, 0x1_0000),
        "compatible": "arm,cortex-a15-gic",
        "ranges": True,
        "#size-cells": 2,
        "#address-cells": 2,
        "interrupt-controller": True,
        "#interrupt-cells": 3,
        f"v2m@{VIRT_GIC_V2M:x}": {
            "phandle": 0x8002,
            "reg": u64s(VIRT_GIC_V2M, 0x1000),
            "msi-controller": True,
            "compatible": "arm,gic-v2m-frame",
        },
    }
    # -cpu host: the CPU's dtb_compatible is "arm,arm-v8".
    return tree | _virt_tail("arm,arm-v8", smp=2)


# --- Firecracker ------------------------------------------------------------------------------
# firecracker-microvm/firecracker:
#   src/vmm/src/arch/aarch64/fdt.rs @ 018252067a39: create_fdt() and its helpers (node names,
#     "arm,arm-v8" CPUs with a 64-bit reg, memory@ram, intc, rtc@, uart@, virtio_mmio@).
#   src/vmm/src/arch/aarch64/layout.rs @ 1b4067758eea: DRAM_MEM_START 0x8000_0000,
#     SYSTEM_MEM_SIZE 0x20_0000 (left out of the memory node), MMIO32_MEM_START 1 GiB,
#     RTC_MEM_START = MMIO32_MEM_START + MMIO_LEN, SERIAL_MEM_START = RTC_MEM_START + MMIO_LEN,
#     MEM_32BIT_DEVICES_START = SERIAL_MEM_START + MMIO_LEN (virtio devices from there).
#   src/vmm/src/device_manager/mmio.rs: MMIO_LEN 0x1000.
#   src/vmm/src/arch/aarch64/gic/gicv3/mod.rs @ 055fda4dda1d: distributor at
#     MAPPED_IO_START (1 GiB) - KVM_VGIC_V3_DIST_SIZE, redistributors n * 128 KiB below it.

FC_DRAM_MEM_START, FC_SYSTEM_MEM_SIZE = 0x8000_0000, 0x20_0000
FC_MMIO32_MEM_START, FC_MMIO_LEN = GiB, 0x1000
FC_RTC = FC_MMIO32_MEM_START + FC_MMIO_LEN
FC_SERIAL = FC_RTC + FC_MMIO_LEN
FC_VIRTIO = FC_SERIAL + FC_MMIO_LEN
FC_GICD = GiB - 0x1_0000
FC_VCPUS = 2
FC_GICR = FC_GICD - FC_VCPUS * 0x2_0000


def firecracker_aarch64() -> Tree:
    cpus: Tree = {"#address-cells": 2, "#size-cells": 0}
    for cpu in range(FC_VCPUS):
        cpus[f"cpu@{cpu:x}"] = {
            "device_type": "cpu",
            "compatible": "arm,arm-v8",
            "enable-method": "psci",
            "reg": u64s(cpu),
        }
    tree: Tree = {
        "compatible": "linux,dummy-virt",
        "#address-cells": 2,
        "#size-cells": 2,
        "interrupt-parent": 1,
        "cpus": cpus,
        "memory@ram": {
            "device_type": "memory",
            "reg": u64s(FC_DRAM_MEM_START + FC_SYSTEM_MEM_SIZE, GiB - FC_SYSTEM_MEM_SIZE),
        },
        "chosen": {"bootargs": "console=ttyS0 reboot=k panic=1"},
        "intc": {
            "compatible": "arm,gic-v3",
            "interrupt-controller": True,
            "#interrupt-cells": 3,
            "reg": u64s(FC_GICD, 0x1_0000, FC_GICR, FC_VCPUS * 0x2_0000),
            "phandle": 1,
            "#address-cells": 2,
            "#size-cells": 2,
            "ranges": True,
            "interrupts": cells(1, 9, 4),
        },
        "timer": {
            "compatible": "arm,armv8-timer",
            "always-on": True,
            "interrupts": cells(1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4),
        },
        "apb-pclk": {
            "compatible": "fixed-clock",
            "#clock-cells": 0,
            "clock-frequency": 24_000_000,
            "clock-output-names": "clk24mhz",
            "phandle": 2,
        },
        "psci": {"compatible": "arm,psci-0.2", "method": "hvc"},
        f"rtc@{FC_RTC:x}": {
            "compatible": ["arm,pl031", "arm,primecell"],
            "reg": u64s(FC_RTC, FC_MMIO_LEN),
            "clocks": 2,
            "clock-names": "apb_pclk",
        },
        f"uart@{FC_SERIAL:x}": {
            "compatible": "ns16550a",
            "reg": u64s(FC_SERIAL, FC_MMIO_LEN),
            "clocks": 2,
            "clock-names": "apb_pclk",
            "interrupts": cells(0, 1, 1),
        },
    }
    for i in range(2):
        base = FC_VIRTIO + i * FC_MMIO_LEN
        tree[f"virtio_mmio@{base:x}"] = {
            "compatible": "virtio,mmio",
            "reg": u64s(base, FC_MMIO_LEN),
            "interrupts": cells(0, 2 + i, 1),
            "interrupt-parent": 1,
        }
    return tree


FIXTURES = {
    "qemu-virt-gicv3.dtb": qemu_virt_gicv3,
    "qemu-virt-gicv2.dtb": qemu_virt_gicv2,
    "firecracker-aarch64.dtb": firecracker_aarch64,
}


def build() -> dict[str, bytes]:
    return {name: fdt_blob(tree()) for name, tree in FIXTURES.items()}


def main() -> int:
    here = Path(__file__).parent
    for name, blob in build().items():
        (here / name).write_bytes(blob)
        print(f"wrote {name}: {len(blob)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
