"""From a device tree to a layout document: the decisions are listed in the package docstring
(gpa_plan.importers.dtb); each one is marked here with the binding or VMM source it mirrors."""

from __future__ import annotations

import bisect
import heapq
from typing import Any

from gpa_plan.arch.arm64 import ARM64
from gpa_plan.arch.base import ArchSpec
from gpa_plan.arch.devices import CATALOG
from gpa_plan.arch.riscv64 import RISCV64
from gpa_plan.importers import (
    Imported,
    ImportFailure,
    catalog_size,
    entry_end,
    pa_bits_needed,
)
from gpa_plan.importers.dtb.fdt import DeviceTree, Node
from gpa_plan.ranges import U64_LIMIT, hex_addr, human_size

# Devicetree Specification v0.4, 2.3.5: without #address-cells / #size-cells a client assumes
# 2 and 1. More than 4 address cells is beyond anything Linux translates (OF_MAX_ADDR_CELLS).
DEFAULT_ADDRESS_CELLS = 2
DEFAULT_SIZE_CELLS = 1
MAX_CELLS = 4

# Linux Documentation/devicetree/bindings/interrupt-controller/arm,gic-v3.yaml and arm,gic.yaml.
GICV3 = "arm,gic-v3"
GICV3_ITS = "arm,gic-v3-its"
# arm,gic-v3.yaml redistributor-stride: a uint64, a positive multiple of 64 KiB, given when
# redistributors are padded beyond their two 64 KiB frames.
STRIDE_PROP = "redistributor-stride"
STRIDE_UNIT = 0x1_0000
# The GICv2 compatibles a KVM guest sees: QEMU virt fdt_add_gic_node() and kvmtool
# gic__generate_fdt_nodes() write "arm,cortex-a15-gic", Firecracker's GICv2 "arm,gic-400".
GICV2 = frozenset({"arm,cortex-a15-gic", "arm,cortex-a7-gic", "arm,gic-400"})
CFI_FLASH = "cfi-flash"
ECAM_HOST = "pci-host-ecam-generic"
PCI_BUS_TYPES = frozenset({"pci", "pciex"})
# The PCI bus binding (IEEE 1275 PCI supplement): phys.hi is npt000ss bbbbbbbb dddddfff
# rrrrrrrr; ss 00 configuration, 01 I/O, 10 32-bit memory, 11 64-bit memory; p prefetchable.
PCI_SPACE_SHIFT = 24
PCI_PREFETCHABLE = 1 << 30
# The space code of a `ranges` entry (bits 24-25 of phys.hi). On arm64 the I/O-port window is
# memory-mapped like the others (QEMU virt: VIRT_PCIE_PIO at 0x3eff_0000): guest accesses there
# exit to the VMM as MMIO, which turns them into port I/O.
PCI_WINDOWS = {0b01: "io", 0b10: "mmio32", 0b11: "mmio64"}

# Linux Documentation/devicetree/bindings/interrupt-controller/riscv,aplic.yaml,
# riscv,imsics.yaml, sifive,plic-1.0.0.yaml; timer/sifive,clint.yaml, riscv,aclint-*.
RISCV_APLIC = "riscv,aplic"
RISCV_IMSICS = "riscv,imsics"
RISCV_PLICS = frozenset({"sifive,plic-1.0.0", "riscv,plic0"})
RISCV_CLINTS = frozenset(
    {"sifive,clint0", "riscv,clint0", "riscv,aclint-mswi", "riscv,aclint-mtimer",
     "riscv,aclint-sswi"}
)  # fmt: skip
# The local interrupt an IMSIC (or a direct-mode APLIC) raises at each hart, in its
# interrupts-extended (riscv,cpu-intc has one interrupt cell): the privileged spec's
# supervisor and machine external interrupts (Linux arch/riscv/include/asm/csr.h IRQ_S_EXT,
# IRQ_M_EXT).
IRQ_S_EXT, IRQ_M_EXT = 9, 11
SUPERVISOR, MACHINE = "supervisor", "machine"
# riscv,imsics.yaml riscv,guest-index-bits: each hart's IMSIC is 4 KiB << these bits (its
# supervisor file and guest files); KVM's IMSIC is the first page.
IMSIC_PAGE = 0x1000
# arch/riscv/include/asm/kvm_host.h KVM_MAX_VCPUS (Linux 7.2.13): per-hart entries stop there.
RISCV_MAX_VCPUS = 1024

Region = tuple[int, int]  # base, size in the CPU's address space


def tree_to_layout(tree: DeviceTree) -> Imported:
    """The layout ``tree`` describes; raises ImportFailure for a tree of another architecture."""
    arch = _architecture(tree.root)
    builder = _LayoutBuilder(tree.root, arch)
    builder.note_reservations(tree.reservations)
    for child in tree.root.children:
        builder.visit(child, (tree.root,))
    return builder.result()


# --- architecture ---------------------------------------------------------------------------


def _architecture(root: Node) -> ArchSpec:
    """arm64 when a CPU is an Arm core (compatible "arm,...": "arm,cortex-a57", "arm,arm-v8" in
    Firecracker, crosvm and kvmtool) or, without such a CPU, when the tree has an Arm GIC;
    riscv64 when a CPU is compatible "riscv" or has "riscv,isa" (QEMU virt, riscv/cpus.yaml)."""
    cpus = _cpu_nodes(root)
    compatibles = [c for cpu in cpus for c in cpu.strings("compatible")]
    if any(c.startswith("arm,") for c in compatibles):
        return ARM64
    if any(c.startswith("riscv") for c in compatibles) or any(
        "riscv,isa" in cpu.props for cpu in cpus
    ):
        return RISCV64
    if _has_arm_gic(root):
        return ARM64
    described = (
        f"CPUs compatible with {', '.join(repr(c) for c in dict.fromkeys(compatibles))}"
        if compatibles
        else "no Arm or RISC-V CPU and no Arm GIC"
    )
    raise ImportFailure(_wrong_arch(f"a machine with {described}"))


def _wrong_arch(what: str) -> str:
    return (
        f"this device tree describes {what}: gpa-plan imports the device trees of arm64 and "
        "riscv64 guests"
    )


def _cpu_nodes(root: Node) -> list[Node]:
    cpus = next((n for n in root.children if n.name == "cpus"), None)
    if cpus is None:
        return []
    return [n for n in cpus.children if n.string("device_type") == "cpu"]


def _has_arm_gic(node: Node) -> bool:
    compatible = set(node.strings("compatible"))
    if GICV3 in compatible or compatible & GICV2:
        return True
    return any(_has_arm_gic(child) for child in node.children)


# --- the walk -------------------------------------------------------------------------------


class _LayoutBuilder:
    """Collects memslots, devices and notes while the tree is walked in order."""

    def __init__(self, root: Node, arch: ArchSpec = ARM64) -> None:
        self.root = root
        self.arch = arch
        self._phandles: dict[int, Node] | None = None
        self.notes: list[str] = []
        # Cell counts are read once per child, so a bad one on a bus would be noted per child.
        self._noted: set[str] = set()
        self.memslots: list[dict[str, Any]] = []
        self.devices: list[dict[str, Any]] = []
        self.names: set[str] = set()
        # The next "-N" suffix to try per name: thousands of nodes of one name would otherwise
        # each try every suffix taken before.
        self._next_suffix: dict[str, int] = {}
        # Each bus's ranges, made into lookup tables once (by id: nodes are not hashable).
        self._windows: dict[int, _Windows | None] = {}
        self.redist_vcpus = 0

    def result(self) -> Imported:
        self._note_redistributor_room()
        document: dict[str, Any] = {"layout": 1}
        name = self.root.string("model") or self.root.string("compatible")
        if name:
            document["name"] = name
        document["arch"] = self.arch.name
        pa_bits = self._pa_bits()
        if pa_bits is not None:
            document["pa_bits"] = pa_bits
        document["memslots"] = sorted(self.memslots, key=lambda m: int(m["base"]))
        document["devices"] = sorted(self.devices, key=lambda d: int(d["base"]))
        return Imported(document, self.notes)

    def note(self, node: Node, text: str) -> None:
        self._add_note(f"{node.path}: {text}")

    def _add_note(self, line: str) -> None:
        if line not in self._noted:
            self._noted.add(line)
            self.notes.append(line)

    def note_reservations(self, reservations: tuple[tuple[int, int], ...]) -> None:
        # Devicetree Specification v0.4 section 5.3: /memreserve/ keeps RAM from the OS; the
        # memory node still covers it.
        for address, size in reservations:
            self._add_note(
                f"/memreserve/ {hex_addr(address)} ({human_size(size)}): RAM the guest OS "
                "must not use; it stays inside the memory memslot, not imported"
            )

    def visit(self, node: Node, parents: tuple[Node, ...]) -> None:
        if not self._enabled(node):
            return
        if parents[-1].string("device_type") in PCI_BUS_TYPES:
            # Devices below a host bridge are PCI functions: their reg is a config-space
            # address and their BARs are placed by the guest in the bridge's windows.
            if "reg" in node.props:
                self.note(node, "a PCI function (config-space address), not imported")
            return
        if node.path == "/reserved-memory":
            self._reserved_memory(node, parents)
            return
        self._map(node, parents)
        for child in node.children:
            self.visit(child, (*parents, node))

    def _enabled(self, node: Node) -> bool:
        # Devicetree Specification v0.4 section 2.3.4, status: "okay" (or the legacy "ok"),
        # "disabled", "reserved", "fail", "fail-sss". QEMU virt marks secure-only devices
        # "disabled" (create_uart(), virt_flash_fdt(), create_secure_ram()): the guest never
        # reaches them.
        status = node.string("status")
        if status in (None, "okay", "ok"):
            return True
        if status == "reserved":
            self.note(node, 'status "reserved": present but owned by other software; imported')
            return True
        self.note(node, f'status "{status}": not imported, nor anything below it')
        return False

    def _reserved_memory(self, node: Node, parents: tuple[Node, ...]) -> None:
        # Devicetree Specification v0.4 section 3.5, /reserved-memory: carve-outs of RAM, still
        # backed by the memory memslot.
        for child in node.children:
            regions = self._regions(child, (*parents, node))
            for base, size in regions or ():
                self.note(
                    child,
                    f"reserved RAM at {hex_addr(base)} ({human_size(size)}) inside the memory "
                    "memslot, not imported",
                )

    # --- one node ---------------------------------------------------------------------------

    def _map(self, node: Node, parents: tuple[Node, ...]) -> None:
        compatible = node.strings("compatible")
        if node.string("device_type") in PCI_BUS_TYPES:
            self._pci_host(node, parents, compatible)
            return
        regions = self._regions(node, parents)
        if not regions:
            return
        if node.string("device_type") == "memory":
            self._memory(node, regions, readonly=False)
        elif CFI_FLASH in compatible:
            self._memory(node, regions, readonly=True)
        elif GICV3 in compatible:
            self._gic_v3(node, regions)
        elif GICV2.intersection(compatible):
            self._gic_v2(node, regions)
        elif GICV3_ITS in compatible:
            self._its(node, regions)
        elif RISCV_IMSICS in compatible:
            self._imsic(node, regions)
        elif RISCV_APLIC in compatible:
            self._aplic(node, regions)
        else:
            self._note_vmm_irqchip(node, compatible)
            for role, (base, size) in zip(_roles(len(regions), "reg"), regions, strict=True):
                self._device(node, role, "mmio", base, size=size)

    def _memory(self, node: Node, regions: list[Region], *, readonly: bool) -> None:
        # device_type "memory" (Devicetree Specification v0.4 section 3.4): RAM, one read-write
        # memslot per reg entry.
        # cfi-flash: QEMU virt's pflash banks (virt_flash_fdt(): one node, one reg entry per
        # bank) are ROM devices in read-array mode: KVM maps them read-only, reads come from
        # memory and writes exit to QEMU's flash emulation: one read-only memslot per bank.
        for role, (base, size) in zip(_roles(len(regions), "bank"), regions, strict=True):
            if not self._fits(node, base, size):
                continue
            entry: dict[str, Any] = {"name": self._claim(node, role), "base": base, "size": size}
            if readonly:
                entry["readonly"] = True
            self.memslots.append(entry)

    def _gic_v3(self, node: Node, regions: list[Region]) -> None:
        # arm,gic-v3.yaml: reg is GICD, then one entry per redistributor region
        # (#redistributor-regions, default 1), then the optional GICC, GICH and GICV.
        # QEMU virt fdt_add_gic_node() writes VIRT_GIC_DIST and VIRT_GIC_REDIST (plus
        # VIRT_HIGH_GIC_REDIST2 as a second region); Firecracker and crosvm write
        # n * KVM_VGIC_V3_REDIST_SIZE of redistributors just below the distributor.
        count = self._u32(node, "#redistributor-regions", default=1)
        if count < 1:
            self.note(node, "#redistributor-regions is 0; using 1")
            count = 1
        self._vgic(node, "gicd", "vgic-v3-dist", regions[0])
        redistributors = regions[1 : 1 + count]
        if len(redistributors) < count:
            self.note(node, f"#redistributor-regions is {count}, reg has {len(redistributors)}")
        roles = _roles(len(redistributors), "gicr", single="gicr")
        stride = self._redistributor_stride(node)
        for role, region in zip(roles, redistributors, strict=True):
            self._redistributors(node, role, region, stride)
        if regions[1 + count :]:
            self.note(
                node,
                "GICC/GICH/GICV entries after the redistributors not imported: KVM's vGICv3 "
                "gives the guest its CPU interface as system registers, and GICH/GICV are the "
                "host's virtualization interface",
            )

    def _redistributor_stride(self, node: Node) -> int:
        """The bytes between consecutive redistributors: ``redistributor-stride`` when the
        tree gives it (arm,gic-v3.yaml), else KVM's 128 KiB (two 64 KiB frames)."""
        kvm_stride = _redistributor_size()
        raw = node.props.get(STRIDE_PROP)
        if raw is None:
            return kvm_stride
        stride = int.from_bytes(raw, "big") if len(raw) == 8 else 0
        if stride == 0 or stride % STRIDE_UNIT:
            self.note(
                node,
                f"{STRIDE_PROP} is not one 64-bit positive multiple of "
                f"{human_size(STRIDE_UNIT)}; using {human_size(kvm_stride)}",
            )
            return kvm_stride
        return stride

    def _redistributors(self, node: Node, role: str | None, region: Region, stride: int) -> None:
        base, size = region
        vcpus = size // stride
        if vcpus == 0:
            self.note(
                node,
                f"redistributor region at {hex_addr(base)} ({human_size(size)}) is smaller "
                f"than one vCPU's {human_size(stride)}, not imported",
            )
            return
        if size % stride:
            self.note(
                node,
                f"redistributor region at {hex_addr(base)} is {human_size(size)}, not a "
                f"multiple of {human_size(stride)}: imported for {_count(vcpus, 'vCPU')}",
            )
        if stride != _redistributor_size():
            self._note_stride(node, base, size, stride, vcpus)
        self.redist_vcpus += vcpus
        self._device(node, role, "vgic-v3-redist", base, vcpus=vcpus)

    def _note_stride(self, node: Node, base: int, size: int, stride: int, vcpus: int) -> None:
        kvm_size = _redistributor_size()
        self.note(
            node,
            f"redistributor region at {hex_addr(base)}: {STRIDE_PROP} {human_size(stride)} "
            f"gives {_count(vcpus, 'vCPU')}; KVM's redistributors are {human_size(kvm_size)} "
            f"each, so the entry covers {human_size(vcpus * kvm_size)}, not the tree's "
            f"{human_size(size)}",
        )

    def _gic_v2(self, node: Node, regions: list[Region]) -> None:
        # arm,gic.yaml: reg is the distributor, the CPU interface, then (with the
        # virtualization extensions) GICH and GICV: the host's hypervisor interface, which a
        # KVM guest never sees.
        self._vgic(node, "gicd", "vgic-v2-dist", regions[0])
        if len(regions) < 2:
            self.note(node, "GICv2 without a CPU interface entry in reg")
            return
        self._vgic(node, "gicc", "vgic-v2-cpu", regions[1])
        if regions[2:]:
            self.note(
                node,
                "GICH/GICV entries not imported: the host's virtualization interface, "
                "not visible to a KVM guest",
            )

    def _its(self, node: Node, regions: list[Region]) -> None:
        # arm,gic-v3.yaml: an ITS is a child node of the GICv3 with one reg entry.
        self._vgic(node, None, "vgic-its", regions[0])
        if regions[1:]:
            self.note(node, "ITS with more than one reg entry: only the first imported")

    def _vgic(self, node: Node, role: str | None, kind: str, region: Region) -> None:
        """An in-kernel vGIC frame: its size is KVM's (the catalog), whatever the tree says."""
        base, size = region
        kvm_size = CATALOG[kind].size
        if kvm_size is not None and size != kvm_size:
            self.note(
                node,
                f"{kind} at {hex_addr(base)}: the tree gives {human_size(size)}, KVM handles "
                f"{human_size(kvm_size)}; the rest of the window is not imported",
            )
        self._device(node, role, kind, base)

    # --- RISC-V AIA ---------------------------------------------------------------------

    def _imsic(self, node: Node, regions: list[Region]) -> None:
        """riscv,imsics.yaml: one reg entry per group of harts, each hart's IMSIC 4 KiB <<
        riscv,guest-index-bits apart. The supervisor-level IMSICs are KVM's (one
        riscv-imsic of `vcpus` harts, or one per hart when they are spaced wider than KVM's
        4 KiB page); machine-level ones are left out."""
        if not self._in_kernel_level(node, self._level_of_irqs(node), "IMSIC", regions):
            return
        guest_bits = self._u32(node, "riscv,guest-index-bits", default=0)
        if guest_bits > 6:  # riscv,imsics.yaml: at most 7 bits; 4 KiB << 7 would do too
            self.note(node, f"riscv,guest-index-bits {guest_bits} is more than 6; using 0")
            guest_bits = 0
        stride = IMSIC_PAGE << guest_bits
        self._note_in_kernel_aia()
        for role, (base, size) in zip(_roles(len(regions), "group"), regions, strict=True):
            harts = min(size // stride, RISCV_MAX_VCPUS)
            if harts == 0:
                self.note(node, f"IMSIC region at {hex_addr(base)} is smaller than one hart's "
                          f"{human_size(stride)}, not imported")
                continue
            if size % stride or size // stride > RISCV_MAX_VCPUS:
                self.note(node, f"IMSIC region at {hex_addr(base)} ({human_size(size)}) is "
                          f"imported for {_count(harts, 'hart')} of {human_size(stride)}")
            if stride == IMSIC_PAGE:
                self._device(node, role, "riscv-imsic", base, vcpus=harts)
                continue
            self.note(
                node,
                f"each hart's IMSIC is {human_size(stride)} (riscv,guest-index-bits "
                f"{guest_bits}): KVM takes one 4 KiB address per vCPU "
                "(KVM_DEV_RISCV_AIA_ADDR_IMSIC(vcpu)), so each hart is its own riscv-imsic "
                "of one vCPU; the guest interrupt files after each first page are not imported",
            )
            for hart in range(harts):
                part = f"{role}/hart{hart}" if role else f"hart{hart}"
                self._device(node, part, "riscv-imsic", base + hart * stride, vcpus=1)

    def _aplic(self, node: Node, regions: list[Region]) -> None:
        """riscv,aplic.yaml: an APLIC in MSI mode (msi-parent, an IMSIC) at supervisor level
        is KVM's riscv-aplic, at KVM's size; one in direct mode (interrupts-extended to the
        harts) has no in-kernel model, so the VMM emulates it."""
        parent = self._phandle_target(node, "msi-parent")
        if parent is None:
            if self._level_of_irqs(node) == MACHINE:
                self._in_kernel_level(node, MACHINE, "APLIC", regions)
                return
            self.note(
                node,
                "APLIC in direct mode (no msi-parent): KVM's in-kernel AIA drives an APLIC "
                "only in MSI mode, through IMSICs, so the VMM emulates this one: mmio",
            )
            self._plain(node, regions)
            return
        if not self._in_kernel_level(node, self._level_of_irqs(parent), "APLIC", regions):
            return
        self._note_in_kernel_aia()
        self._vgic(node, None, "riscv-aplic", regions[0])
        if regions[1:]:
            self.note(node, "APLIC with more than one reg entry: only the first imported")

    def _in_kernel_level(
        self, node: Node, level: str | None, what: str, regions: list[Region]
    ) -> bool:
        """Whether an AIA part of ``level`` is KVM's; a machine-level one is left out, one of
        no known level is imported as the VMM's mmio."""
        if level == SUPERVISOR:
            return True
        if level == MACHINE:
            # QEMU hw/riscv/aia.c riscv_create_aia(): the machine-level IMSICs and APLIC are
            # created only without KVM.
            self.note(
                node,
                f"machine-level {what}, for M-mode firmware: a KVM guest has no M-mode and "
                "QEMU creates it only without KVM; not imported",
            )
            return False
        self.note(
            node,
            f"{what} whose privilege level its interrupts-extended does not tell (external "
            f"interrupt {IRQ_S_EXT} supervisor, {IRQ_M_EXT} machine): imported as the VMM's mmio",
        )
        self._plain(node, regions)
        return False

    def _level_of_irqs(self, node: Node) -> str | None:
        """supervisor or machine when every interrupt of interrupts-extended (phandle, irq
        pairs: riscv,cpu-intc has one cell) is that level's external interrupt."""
        raw = node.props.get("interrupts-extended", b"")
        if not raw or len(raw) % 8:
            return None
        irqs = {int.from_bytes(raw[i + 4 : i + 8], "big") for i in range(0, len(raw), 8)}
        if irqs == {IRQ_S_EXT}:
            return SUPERVISOR
        if irqs == {IRQ_M_EXT}:
            return MACHINE
        return None

    def _phandle_target(self, node: Node, prop: str) -> Node | None:
        raw = node.props.get(prop)
        if raw is None or len(raw) < 4:
            return None
        if self._phandles is None:
            self._phandles = {}
            stack = [self.root]
            while stack:
                n = stack.pop()
                value = n.props.get("phandle")
                if value is not None and len(value) == 4:
                    self._phandles.setdefault(int.from_bytes(value, "big"), n)
                stack.extend(n.children)
        return self._phandles.get(int.from_bytes(raw[:4], "big"))

    def _note_in_kernel_aia(self) -> None:
        self._add_note(
            "the supervisor-level APLIC and IMSICs are imported as KVM's in-kernel AIA "
            "(riscv-aplic, riscv-imsic), what QEMU uses with KVM and its default "
            "kernel-irqchip=on; with kernel-irqchip=off, or under TCG, QEMU emulates them at "
            "the same addresses: change their type to mmio"
        )

    def _note_vmm_irqchip(self, node: Node, compatible: list[str]) -> None:
        if RISCV_PLICS.intersection(compatible):
            self.note(node, "PLIC: KVM has no in-kernel PLIC, the VMM emulates it: mmio")
        elif RISCV_CLINTS.intersection(compatible):
            self.note(node, "CLINT/ACLINT: KVM has no in-kernel CLINT, the VMM emulates it: mmio")

    def _plain(self, node: Node, regions: list[Region]) -> None:
        for role, (base, size) in zip(_roles(len(regions), "reg"), regions, strict=True):
            self._device(node, role, "mmio", base, size=size)

    def _pci_host(self, node: Node, parents: tuple[Node, ...], compatible: list[str]) -> None:
        # pci-host-ecam-generic (QEMU virt create_pcie()) and pci-host-cam-generic (kvmtool,
        # crosvm): reg is the configuration space, ranges the windows the bridge decodes.
        regions = self._regions(node, parents) or []
        single = "ecam" if ECAM_HOST in compatible else "config"
        roles = _roles(len(regions), "reg", single=single)
        for role, (base, size) in zip(roles, regions, strict=True):
            self._device(node, role, "mmio", base, size=size)
        windows = self._pci_windows(node, parents)
        if windows:
            self.note(
                node,
                f"the guest places PCI BARs inside the windows ({', '.join(windows)}); "
                "each window is one mmio device here",
            )

    def _pci_windows(self, node: Node, parents: tuple[Node, ...]) -> list[str]:
        parent_cells = self._cells(parents[-1], "#address-cells", DEFAULT_ADDRESS_CELLS)
        size_cells = self._cells(node, "#size-cells", DEFAULT_SIZE_CELLS)
        if parent_cells is None or size_cells is None or "ranges" not in node.props:
            return []
        entries = _split(node.props["ranges"], (3, parent_cells, size_cells))
        if entries is None:
            self.note(node, "ranges is not a whole number of PCI range entries, not imported")
            return []
        names = []
        for pci_address, cpu_address, size in entries:
            name = self._pci_window(node, parents, pci_address >> 64, cpu_address, size)
            if name is not None:
                names.append(name)
        return names

    def _pci_window(
        self, node: Node, parents: tuple[Node, ...], phys_hi: int, cpu_address: int, size: int
    ) -> str | None:
        space = (phys_hi >> PCI_SPACE_SHIFT) & 0b11
        role = PCI_WINDOWS.get(space)
        if role is None:
            self.note(
                node,
                f"configuration-space window at {hex_addr(cpu_address)} ({human_size(size)}) "
                "not imported",
            )
            return None
        base = self._translate(node, cpu_address, parents)
        if base is None:
            return None
        if phys_hi & PCI_PREFETCHABLE:
            role += "-prefetchable"
        return self._device(node, role, "mmio", base, size=size)

    # --- adding entries ---------------------------------------------------------------------

    def _device(
        self,
        node: Node,
        role: str | None,
        kind: str,
        base: int,
        *,
        size: int | None = None,
        vcpus: int | None = None,
    ) -> str | None:
        footprint = size if size is not None else catalog_size(kind, vcpus)
        if not self._fits(node, base, footprint):
            return None
        name = self._claim(node, role)
        entry: dict[str, Any] = {"name": name, "type": kind, "base": base}
        if size is not None:
            entry["size"] = size
        if vcpus is not None:
            entry["vcpus"] = vcpus
        self.devices.append(entry)
        return name

    def _fits(self, node: Node, base: int, size: int) -> bool:
        if size == 0:
            self.note(node, f"empty range at {hex_addr(base)}, not imported")
            return False
        if size >= U64_LIMIT:
            self.note(
                node,
                f"range at {hex_addr(base)} is {size:#x} bytes, more than a 64-bit size holds; "
                "not imported",
            )
            return False
        if base + size > U64_LIMIT:
            self.note(node, f"range at {hex_addr(base)} ends beyond 2**64, not imported")
            return False
        return True

    def _claim(self, node: Node, role: str | None) -> str:
        """A unique name: the node name (``pl011@9000000``), else its path without the leading
        slash (``intc@8000000/its@8080000``), else the path with ``-2``, ``-3``...; a part of
        a node adds ``/role`` (``intc@8000000/gicd``, ``flash@0/bank1``)."""
        suffix = f"/{role}" if role else ""
        candidates = [node.name + suffix, node.path.lstrip("/") + suffix]
        for candidate in candidates:
            if candidate not in self.names:
                self.names.add(candidate)
                return candidate
        n = self._next_suffix.get(candidates[-1], 2)
        while f"{candidates[-1]}-{n}" in self.names:
            n += 1
        self._next_suffix[candidates[-1]] = n + 1
        name = f"{candidates[-1]}-{n}"
        self.names.add(name)
        return name

    # --- addresses --------------------------------------------------------------------------

    def _regions(self, node: Node, parents: tuple[Node, ...]) -> list[Region] | None:
        """``reg`` in the CPU's address space; None (with a note when it matters) when the node
        has no reg, its bus gives no sizes (cpus, i2c: reg is an id), or it cannot be mapped."""
        if "reg" not in node.props:
            return None
        parent = parents[-1]
        address_cells = self._cells(parent, "#address-cells", DEFAULT_ADDRESS_CELLS)
        size_cells = self._cells(parent, "#size-cells", DEFAULT_SIZE_CELLS)
        if address_cells is None or size_cells is None or size_cells == 0:
            return None
        entries = _split(node.props["reg"], (address_cells, size_cells))
        if entries is None:
            self.note(
                node,
                f"reg of {len(node.props['reg'])} bytes is not a whole number of "
                f"({address_cells} + {size_cells})-cell entries, not imported",
            )
            return None
        regions = []
        for address, size in entries:
            base = self._translate(node, address, parents)
            if base is None:
                return None
            regions.append((base, size))
        return regions

    def _translate(self, node: Node, address: int, parents: tuple[Node, ...]) -> int | None:
        """``address``, in the address space of the children of ``parents[-1]``, as a CPU
        address, through each bus's ``ranges`` (Devicetree Specification v0.4 section 2.3.8:
        empty is identity; absent means the bus's children are not memory-mapped in its
        parent)."""
        for depth in range(len(parents) - 1, 0, -1):
            bus, above = parents[depth], parents[depth - 1]
            if "ranges" not in bus.props:
                self.note(
                    node,
                    f"{bus.path} has no ranges: its children are not in the CPU's address "
                    "space; not imported",
                )
                return None
            translated = self._through_ranges(node, bus, above, address)
            if translated is None:
                return None
            address = translated
        return address

    def _through_ranges(self, node: Node, bus: Node, above: Node, address: int) -> int | None:
        ranges = bus.props["ranges"]
        if not ranges:
            return address
        child_cells = self._cells(bus, "#address-cells", DEFAULT_ADDRESS_CELLS)
        parent_cells = self._cells(above, "#address-cells", DEFAULT_ADDRESS_CELLS)
        size_cells = self._cells(bus, "#size-cells", DEFAULT_SIZE_CELLS)
        if child_cells is None or parent_cells is None or size_cells is None:
            return None
        if id(bus) not in self._windows:
            entries = _split(ranges, (child_cells, parent_cells, size_cells))
            self._windows[id(bus)] = None if entries is None else _Windows(entries)
        windows = self._windows[id(bus)]
        if windows is None:
            self.note(node, f"the ranges of {bus.path} are malformed; not imported")
            return None
        translated = windows.translate(address)
        if translated is not None:
            return translated
        self.note(
            node,
            f"address {hex_addr(address)} lies outside every range of {bus.path}; not imported",
        )
        return None

    def _cells(self, node: Node, prop: str, default: int) -> int | None:
        value = self._u32(node, prop, default=default)
        if value > MAX_CELLS:
            self.note(node, f"{prop} is {value}: more than {MAX_CELLS} cells, not imported")
            return None
        return value

    def _u32(self, node: Node, prop: str, *, default: int) -> int:
        raw = node.props.get(prop)
        if raw is None:
            return default
        if len(raw) != 4:
            self.note(node, f"{prop} is not one 32-bit cell; using {default}")
            return default
        return int.from_bytes(raw, "big")

    # --- summary ----------------------------------------------------------------------------

    def _note_redistributor_room(self) -> None:
        cpus = len(_cpu_nodes(self.root))
        if self.redist_vcpus and cpus and cpus != self.redist_vcpus:
            self._add_note(
                f"the redistributor regions have room for {_count(self.redist_vcpus, 'vCPU')}, "
                f"the tree has {_count(cpus, 'CPU')}: vcpus counts the room the tree describes "
                "(QEMU virt describes its whole window); KVM serves only the frames of the "
                "vCPUs it has, and accesses to the rest exit to the VMM"
            )

    def _pa_bits(self) -> int | None:
        """pa_bits when the entries reach beyond the architecture's default, else None; on
        riscv64 one of the G-stage widths, with a memslot ending below the limit."""
        entries = self.memslots + self.devices
        bits = pa_bits_needed(self.arch.name, entries)
        if bits is None:
            return None
        highest = max(entry_end(e) for e in entries)
        self._add_note(
            f"entries reach {hex_addr(highest)}, beyond the default "
            f"{self.arch.default_pa_bits}-bit {self.arch.pa_name}: pa_bits {bits}"
        )
        return bits


def _redistributor_size() -> int:
    """One vCPU's redistributor in KVM: the catalog's per-vCPU size (128 KiB)."""
    return catalog_size("vgic-v3-redist", 1)


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def _roles(count: int, prefix: str, *, single: str | None = None) -> list[str | None]:
    """Names for the parts of a node: ``single`` (None: the node's own name) for one part,
    ``prefix0``, ``prefix1``... for several."""
    if count == 1:
        return [single]
    return [f"{prefix}{i}" for i in range(count)]


def _split(value: bytes, cells: tuple[int, ...]) -> list[tuple[int, ...]] | None:
    """``value`` as records of fields of ``cells`` big-endian 32-bit cells each; None when it
    is not a whole number of records."""
    record = 4 * sum(cells)
    if record == 0 or len(value) % record:
        return None
    out = []
    for start in range(0, len(value), record):
        fields, offset = [], start
        for count in cells:
            fields.append(int.from_bytes(value[offset : offset + 4 * count], "big"))
            offset += 4 * count
        out.append(tuple(fields))
    return out


class _Windows:
    """A bus's ``ranges`` as a lookup table: the first entry (in the property's order) that
    holds a child address translates it. The entries are painted once, first on top, into
    disjoint pieces (a sweep with a heap of the entries open at each boundary), so each
    lookup is a binary search however many entries and children the bus has."""

    def __init__(self, entries: list[tuple[int, ...]]) -> None:
        events = sorted(
            (address, opens, index)
            for index, (child_base, _, size) in enumerate(entries)
            if size > 0
            for address, opens in ((child_base, 1), (child_base + size, 0))
        )
        self._entries = entries
        self._starts: list[int] = []
        self._pieces: list[tuple[int, int]] = []  # (end, entry index)
        open_entries: list[int] = []
        closed: set[int] = set()
        for k, (address, opens, index) in enumerate(events):
            if opens:
                heapq.heappush(open_entries, index)
            else:
                closed.add(index)
            while open_entries and open_entries[0] in closed:
                heapq.heappop(open_entries)
            following = events[k + 1][0] if k + 1 < len(events) else address
            if open_entries and following > address:
                self._starts.append(address)
                self._pieces.append((following, open_entries[0]))

    def translate(self, address: int) -> int | None:
        k = bisect.bisect_right(self._starts, address) - 1
        if k < 0 or address >= self._pieces[k][0]:
            return None
        child_base, parent_base, _ = self._entries[self._pieces[k][1]]
        return parent_base + (address - child_base)
