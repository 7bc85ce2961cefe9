"""Import a layout from a flattened device tree blob: what `qemu-system-aarch64 -M
virt,dumpdtb=virt.dtb` writes and what Firecracker, cloud-hypervisor, crosvm and kvmtool hand
their arm64 guests, and what `qemu-system-riscv64 -M virt,dumpdtb=virt.dtb` writes.

``import_dtb(blob)`` reads the blob (``fdt``: Devicetree Specification v0.4 chapter 5, every
offset and size checked) and maps the tree (``mapping``) to a layout document for the guest
physical address space, with a note for everything skipped or adjusted. A blob it cannot read
raises ``ImportFailure`` (line 0: binary input) saying what is wrong; device tree source
(.dts text) given by mistake gets the `dtc -I dts -O dtb` command that compiles it.

How the tree becomes a layout:

- Addresses: a node's ``reg`` is read with its parent's ``#address-cells`` / ``#size-cells``
  (2 and 1 when absent, Devicetree Specification v0.4 section 2.3.5) and translated to a CPU
  address through the ``ranges`` of every bus above it (section 2.3.8 there: empty ``ranges``
  is the identity; a bus without ``ranges`` does not map its children into its parent, so they
  are skipped with a note). A bus whose ``#size-cells`` is 0 gives ids, not ranges (cpus, i2c,
  gpio-keys): skipped silently, as are
  nodes without ``reg`` (cpus, psci, timer, chosen, aliases, clocks...).
- ``status``: "okay"/"ok" or absent is imported; "reserved" is imported with a note (the
  device is there, owned by other software); anything else ("disabled", "fail") is skipped,
  with everything below it, with a note. QEMU virt marks its secure-only devices disabled.
- ``device_type = "memory"``: one read-write memslot per ``reg`` entry. Memory nodes say what
  RAM the guest OS may use; a VMM may back more (Firecracker keeps its first 2 MiB of DRAM,
  SYSTEM_MEM, out of the node). ``/reserved-memory`` children and ``/memreserve/`` entries lie
  inside that RAM: noted, not imported.
- ``cfi-flash``: one read-only memslot per bank (``reg`` entry): QEMU virt's pflash in ROMD
  mode, where reads come from memory and writes exit to the VMM.
- ``arm,gic-v3``: ``reg`` is the distributor (``vgic-v3-dist``), then ``#redistributor-regions``
  (default 1) redistributor regions, each a ``vgic-v3-redist`` with ``vcpus`` = region size /
  128 KiB, or / ``redistributor-stride`` when the tree gives another stride (padded
  redistributors; KVM's are 128 KiB each, so a note says the entry's size differs from the
  tree's); entries after them (GICC, GICH, GICV) are skipped with a note. A child
  ``arm,gic-v3-its`` is a ``vgic-its``. ``arm,cortex-a15-gic``, ``arm,cortex-a7-gic`` and
  ``arm,gic-400`` (GICv2): distributor and CPU interface (``vgic-v2-dist``, ``vgic-v2-cpu``);
  a GICH/GICV pair after them is the host's virtualization interface, skipped with a note.
  vGIC frames take KVM's sizes from the catalog; where the tree gives another size (QEMU's
  64 KiB GICv2 windows) a note says so.
- PCI host bridges (``device_type = "pci"``): the configuration space in ``reg`` (ECAM for
  ``pci-host-ecam-generic``) is an ``mmio`` device, and each window of ``ranges`` another
  (32- and 64-bit memory, and the I/O-port window, which arm64 maps as memory too), with a
  note that the guest places BARs there; nodes below the bridge (PCI functions) are noted,
  not imported.
- Every other node with ``reg`` in the CPU's address space: one ``mmio`` device per entry,
  with the entry's size.
- Every entry must be non-empty, smaller than 2**64 bytes and end at or below 2**64 (the
  layout format's numbers are 64-bit); one that is not is skipped with a note.
- RISC-V AIA (``riscv,aplic``, ``riscv,imsics``): the supervisor-level parts become KVM's
  in-kernel AIA, what QEMU uses with KVM and its default ``kernel-irqchip=on`` (a note says
  to make them ``mmio`` for ``kernel-irqchip=off`` or TCG, where QEMU emulates them at the
  same addresses). An IMSIC node is supervisor-level when its ``interrupts-extended`` raise
  the supervisor external interrupt (9) at every hart, machine-level for 11; an APLIC takes
  the level of the IMSIC its ``msi-parent`` names. The APLIC is a ``riscv-aplic`` at KVM's
  16 KiB (QEMU's node is 32 KiB: noted); the IMSICs one ``riscv-imsic`` with ``vcpus`` = reg
  size / 4 KiB, or, when ``riscv,guest-index-bits`` spaces the harts wider than KVM's 4 KiB
  page (QEMU ``aia-guests``), one ``riscv-imsic`` of one vCPU per hart at each hart's first
  page (KVM takes each vCPU's IMSIC address on its own), at most KVM_MAX_VCPUS (1024) per
  region. Machine-level APLIC and IMSICs are for M-mode firmware: QEMU creates them only
  without KVM (hw/riscv/aia.c riscv_create_aia()), so they are skipped with a note. An APLIC
  in direct mode (no ``msi-parent``: QEMU ``aia=aplic``) and a part of unknown level are the
  VMM's ``mmio``: KVM's AIA drives an APLIC only through IMSICs. A PLIC or CLINT/ACLINT is the
  VMM's ``mmio``, with a note (KVM has no in-kernel model of either).
- Architecture: arm64 when a CPU is compatible with "arm,..." (or, without such a CPU, when
  the tree has an Arm GIC); riscv64 when a CPU is compatible with "riscv..." or has
  "riscv,isa"; any other tree is refused. ``pa_bits`` is set only when an entry ends beyond
  the architecture's default (arm64 40, riscv64 41 bits; on riscv64 the next G-stage width,
  50 or 59, and a memslot may not end exactly at the limit).

Each note is given once, however many nodes run into the same problem (a bus's bad
``#address-cells`` is read by each of its children).

Names: the node name with its unit address (``pl011@9000000``); a node giving several entries
adds a role (``intc@8000000/gicd``, ``intc@8000000/gicr``, ``flash@0/bank1``,
``memory/bank0``, ``pcie@10000000/ecam``, ``pcie@10000000/mmio32``, ``uart@0/reg1``). When a
name is taken (claimed in tree order), the node's path without the leading slash is used
(``intc@8000000/its@8080000``), then that path with ``-2``, ``-3``... Entries are listed by
base address. The document's name is the root's ``model``, else its first ``compatible``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpa_plan.importers import Imported, ImportFailure
from gpa_plan.importers.dtb.fdt import FdtError, read_fdt
from gpa_plan.importers.dtb.mapping import tree_to_layout


def import_dtb(blob: bytes) -> Imported:
    """The layout the device tree blob describes, with notes; raises ImportFailure."""
    try:
        tree = read_fdt(blob)
    except FdtError as err:
        raise ImportFailure(str(err)) from None
    return tree_to_layout(tree)


def read(data: bytes, options: Mapping[str, Any]) -> Imported:
    """`gpa-plan import dtb`'s reader (gpa_plan.importers.registry): it takes no options."""
    return import_dtb(data)


__all__ = ["import_dtb", "read"]
