"""From regions to a layout document: the architecture, the memslots and devices each range
becomes (in-kernel devices by QEMU's region names), and the document with unique names."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from gpa_plan.arch import ARCHES
from gpa_plan.arch.devices import CATALOG
from gpa_plan.importers import ImportFailure, catalog_size, pa_bits_needed
from gpa_plan.importers.qemu_mtree.text import HOW, MEMORY_TYPES, Region, listing
from gpa_plan.ranges import U64_LIMIT, hex_addr, human_size

KiB = 1024
# The host page kvm_align_section() trims memslots to (qemu_real_host_page_size()) when the
# caller does not say: x86_64 hosts and most arm64 ones.
DEFAULT_HOST_PAGE = 4 * KiB

# Region names only one architecture's QEMU machines use: hw/arm/virt.c (mach-virt.ram,
# virt.flash0/1), hw/char/pl011.c, hw/intc/arm_gic*_common.c; hw/i386/pc.c (pc.ram, pc.bios,
# pc.rom, isa-bios), hw/i386/kvm/apic.c, ioapic.c, hw/intc/apic.c, ioapic.c.
_ARCH_NAMES = {
    "arm64": re.compile(
        r"gicv3_dist|gicv3_redist_region\[\d+\]|(?:kvm-)?gic_(?:dist|cpu)"
        r"|mach-virt\.ram|virt\.flash[01]|pl011"
    ),
    "x86_64": re.compile(r"(?:kvm-)?apic-msi|(?:kvm-)?ioapic|pc\.(?:ram|bios|rom)|isa-bios"),
}


# --- architecture ---------------------------------------------------------------------------


def architecture(
    regions: list[Region], arch: str | None, line: int, notes: list[str]
) -> tuple[str, Region | None]:
    """The guest's architecture: ``arch`` when given, else the one the region names tell;
    with the first region that told it (None when ``arch`` was given)."""
    seen = {
        name: sorted({r.name for r in regions if pattern.fullmatch(r.name)})
        for name, pattern in _ARCH_NAMES.items()
    }
    if arch is not None:
        others = [n for other, names in seen.items() if other != arch for n in names]
        if others:
            notes.append(
                f"Imported as {arch}, as asked, though the region names {listing(others)} are "
                "another architecture's: they are plain mmio devices or memslots here."
            )
        return arch, None
    found = [name for name, names in seen.items() if names]
    firsts = {
        name: min((r for r in regions if _ARCH_NAMES[name].fullmatch(r.name)), key=_place)
        for name in found
    }
    if len(found) == 1:
        notes.append(f"Architecture {found[0]}, from the region names {listing(seen[found[0]])}.")
        return found[0], firsts[found[0]]
    if found:
        # At the first region that contradicts the architecture named before it.
        conflict = max(firsts.values(), key=_place)
        raise ImportFailure(
            f"region names of two architectures: arm64 ({listing(seen['arm64'])}) and x86_64 "
            f"({listing(seen['x86_64'])}); say which with --arch arm64 or --arch x86_64",
            conflict.line,
            conflict.column,
        )
    *most, last = ARCHES
    raise ImportFailure(
        "cannot tell the architecture: no region name QEMU uses only on arm64 (gicv3_dist, "
        "mach-virt.ram, ...) or x86_64 (pc.ram, kvm-apic-msi, ...), and the names of other "
        f"machines do not tell; say which with --arch: {', '.join(most)} or {last}",
        line,
    )


def _place(region: Region) -> tuple[int, int]:
    return region.line, region.column


def with_its(regions: list[Region], arch: str) -> list[Region]:
    """``regions`` by address, an arm64 ITS's two frames joined into one region."""
    ordered = sorted(regions)
    if arch != "arm64":
        return ordered
    joined: list[Region] = []
    for region in ordered:
        last = joined[-1] if joined else None
        # hw/intc/arm_gicv3_its_common.c gicv3_its_init_mmio(): "control" (ITS_CONTROL_SIZE)
        # and "translation" (ITS_TRANS_SIZE), adjacent inside the "gicv3_its" container; KVM
        # takes the base of "control" (arm_gicv3_its_kvm.c kvm_arm_its_realize()).
        if (
            last is not None
            and (last.name, last.end - last.start, last.offset) == ("control", 64 * KiB, 0)
            and (region.name, region.end - region.start, region.offset)
            == ("translation", 64 * KiB, 0)
            and last.end == region.start
        ):
            joined[-1] = last._replace(end=region.end, name="gicv3_its")
        else:
            joined.append(region)
    return joined


# --- mapping ranges to memslots and devices -------------------------------------------------


class Mapping:
    """The memslots and devices ranges become, and what to tell the reader about them."""

    def __init__(self, arch: str, regions: list[Region], page_size: int | None = None) -> None:
        self.arch = arch
        self.page_given = page_size is not None
        self.page = page_size or DEFAULT_HOST_PAGE
        self.memslots: list[dict[str, Any]] = []
        self.devices: list[dict[str, Any]] = []
        self._ram_names = {r.name for r in regions if r.type in ("ram", "ramd")}
        self._marked = any(r.kvm for r in regions)
        self._alias_readonly: list[str] = []
        self._unmapped: list[str] = []
        self._unaligned: list[str] = []
        self._split: list[str] = []
        self._widened: list[str] = []
        self._ram_devices: list[str] = []
        self._memory_seen = False
        # The IOAPIC's base and where kvm-pic was seen, when the IOAPIC was added.
        self._irqchip_ioapic: tuple[str, str] | None = None

    def add(self, region: Region) -> None:
        if region.end - region.start >= U64_LIMIT:
            raise ImportFailure(
                f"range {region.name!r} covers the whole 64-bit address space (2**64 bytes), "
                "leaving room for nothing else: it cannot be a memslot or a device (a layout's "
                "sizes stop at 2**64-1), and no guest's memory is that one region; " + HOW,
                region.line,
                region.column,
            )
        if region.type in MEMORY_TYPES:
            self._memory(region)
        else:
            self._device(region)

    # memory

    def _memory(self, region: Region) -> None:
        self._memory_seen = True
        # accel/kvm/kvm-all.c kvm_align_section(): KVM gets the page-aligned interior only.
        low = -(-region.start // self.page) * self.page
        high = region.end // self.page * self.page
        if low >= high:
            self._unmapped.append(region.name)
            self._mmio(region.name, region.start, region.end - region.start)
            return
        if (low, high) == (region.start, region.end) and self._marked and not region.kvm:
            # kvm_set_phys_mem() skips it (no KVM_CAP_READONLY_MEM, for one): QEMU answers.
            self._unmapped.append(region.name)
            self._mmio(region.name, region.start, region.end - region.start)
            return
        if (low, high) != (region.start, region.end):
            self._unaligned.append(region.name)
            self._mmio(f"{region.name}.head", region.start, low - region.start)
            self._mmio(f"{region.name}.tail", high, region.end - high)
        if region.type == "ramd":
            self._ram_devices.append(region.name)
        entry: dict[str, Any] = {"name": region.name, "base": low, "size": high - low}
        if self._readonly(region):
            entry["readonly"] = True
        self.memslots.append(entry)

    def _readonly(self, region: Region) -> bool:
        # kvm-all.c kvm_mem_flags(): KVM_MEM_READONLY when the region itself is read-only or a
        # ROM device in romd mode; a read-only alias of RAM (x86 PAM "pam-rom", hw/pci-host/
        # pam.c init_pam()) is shown as rom but mapped read-write.
        if region.type == "rom" and region.name in self._ram_names:
            self._alias_readonly.append(f"{region.name} at {region.start:#x}")
            return False
        return region.type in ("rom", "romd")

    # devices

    def _device(self, region: Region) -> None:
        size = region.end - region.start
        kernel = _in_kernel(self.arch, region.name, size) if region.offset == 0 else None
        if kernel is None:
            self._mmio(region.name, region.start, size)
            return
        device_type, vcpus = kernel
        kernel_size = catalog_size(device_type, vcpus)
        _check_fits(region, kernel_size)
        entry: dict[str, Any] = {"name": region.name, "type": device_type, "base": region.start}
        if vcpus is not None:
            entry["vcpus"] = vcpus
        self.devices.append(entry)
        if size > kernel_size:
            self._split.append(f"{region.name} ({kernel_size:#x} of {size:#x})")
            self._mmio(f"{region.name}.rest", region.start + kernel_size, size - kernel_size)
        elif size < kernel_size:
            self._widened.append(f"{region.name} ({kernel_size:#x}, QEMU {size:#x})")

    def add_irqchip_ioapic(self, pic_line: int) -> None:
        """Add KVM's IOAPIC where KVM_CREATE_IRQCHIP puts it, unless a region showed it.

        QEMU's in-kernel PIC (hw/i386/kvm/i8259.c kvm_pic_realize(), I/O ports "kvm-pic")
        exists only when QEMU made KVM_CREATE_IRQCHIP (accel/kvm/kvm-all.c
        kvm_irqchip_create(); a split irqchip has QEMU's own PIC instead). In the kernel that
        ioctl (arch/x86/kvm/x86.c kvm_arch_vm_ioctl()) calls kvm_pic_init() and
        kvm_ioapic_init() (arch/x86/kvm/ioapic.c), which registers the IOAPIC on
        KVM_MMIO_BUS at IOAPIC_DEFAULT_BASE_ADDRESS for IOAPIC_MEM_LENGTH bytes, and
        vcpu_mmio_write()/vcpu_mmio_read() answer from that bus before exiting to QEMU. QEMU
        shows it only through its "kvm-ioapic" device, which hw/i386/pc_piix.c pc_init1()
        creates for PCI machines only: the isapc machine has KVM's IOAPIC but no region.
        Kernel source read: x86.c in a Linux 6.17/6.18 tree (CachyOS/linux 4703912f5e30),
        ioapic.c and ioapic.h in torvalds/linux (00116795aa87, 0191e92d84ee)."""
        if any(entry["type"] == "ioapic" for entry in self.devices):
            return
        base = CATALOG["ioapic"].default_base
        if base is None:  # the catalog gives it IOAPIC_DEFAULT_BASE_ADDRESS
            return
        self.devices.append({"name": "ioapic", "type": "ioapic", "base": base})
        self._irqchip_ioapic = (hex_addr(base), f"at line {pic_line} of the input")

    def _mmio(self, name: str, base: int, size: int) -> None:
        if size:
            self.devices.append({"name": name, "type": "mmio", "base": base, "size": size})

    def notes(self) -> list[str]:
        notes: list[str] = []
        if self._alias_readonly:
            notes.append(
                f"Read-write memslots for {listing(self._alias_readonly)}: QEMU shows them rom "
                "through a read-only alias (PAM), but kvm_mem_flags() takes KVM_MEM_READONLY "
                "from the RAM region itself."
            )
        if self._ram_devices:
            notes.append(
                f"RAM device regions ({listing(self._ram_devices)}, e.g. VFIO BARs) are "
                "read-write memslots, as kvm_set_phys_mem() maps every RAM region."
            )
        if self._unaligned:
            notes.append(
                f"{listing(self._unaligned)}: KVM maps the {human_size(self.page)}-aligned "
                "part only (kvm_align_section()); the unaligned head/tail are mmio devices QEMU "
                "emulates."
            )
        if self._unmapped:
            notes.append(
                f"{listing(self._unmapped)}: memory in QEMU but no KVM memslot (sub-page, or "
                "no KVM mark), so an mmio device: accesses exit to QEMU."
            )
        if self._split:
            notes.append(
                f"In-kernel devices that answer only the start of QEMU's region: "
                f"{listing(self._split)}; the rest is the mmio device NAME.rest, where KVM "
                "exits to QEMU (for kvm-apic-msi, QEMU turns writes there into MSIs)."
            )
        if self._widened:
            notes.append(
                f"In-kernel devices imported at KVM's size, larger than QEMU's region: "
                f"{listing(self._widened)}."
            )
        if self._irqchip_ioapic:
            base, seen = self._irqchip_ioapic
            notes.append(
                f"Device ioapic added at {base} though no region shows it: the I/O address "
                f"space has QEMU's in-kernel PIC (kvm-pic, {seen}), so QEMU made "
                "KVM_CREATE_IRQCHIP, which also creates KVM's IOAPIC there (kvm_ioapic_init()); "
                "QEMU maps no kvm-ioapic region on a machine without PCI, such as isapc."
            )
        larger = [p for p in ARCHES[self.arch].page_sizes if p > self.page]
        if larger and self._memory_seen and not self.page_given:
            *most, last = [f"{p // KiB}" for p in larger]
            sizes = f"{', '.join(most)} or {last}" if most else last
            notes.append(
                "Memslots were trimmed assuming 4 KiB host pages: QEMU's kvm_align_section() "
                f"trims to the host's page size, so on {self.arch} hosts with {sizes} KiB "
                "pages KVM maps less of memory ranges not aligned to that size (say "
                f"--page-size {' or '.join(f'{p}K' for p in [*most, last])})."
            )
        return notes


def _in_kernel(arch: str, name: str, size: int) -> tuple[str, int | None] | None:
    """The catalog type and vCPU count of an in-kernel device QEMU names ``name`` under KVM,
    or None for a device QEMU emulates."""
    if arch == "arm64":
        return _arm64_in_kernel(name, size)
    # hw/i386/kvm/apic.c kvm_apic_realize(): "kvm-apic-msi", APIC_SPACE_SIZE (1 MiB), mapped
    # at the APIC base with priority 0x1000 (x86_cpu_apic_realize()); KVM's LAPIC answers its
    # first 4 KiB (LAPIC_MMIO_LENGTH), QEMU's kvm_apic_mem_write() the rest (MSIs).
    if name == "kvm-apic-msi":
        return "lapic", None
    # hw/i386/kvm/ioapic.c kvm_ioapic_realize(): "kvm-ioapic", 0x1000 bytes with no ops;
    # KVM's IOAPIC answers IOAPIC_MEM_LENGTH (0x100) of them.
    if name == "kvm-ioapic":
        return "ioapic", None
    return None


def _arm64_in_kernel(name: str, size: int) -> tuple[str, int | None] | None:
    # hw/intc/arm_gicv3_common.c gicv3_init_irqs_and_mmio(): "gicv3_dist" (0x10000) and
    # "gicv3_redist_region[i]" (redist_region_count[i] * gicv3_redist_size()), registered
    # with KVM by arm_gicv3_kvm.c kvm_arm_gicv3_realize().
    if name == "gicv3_dist":
        return "vgic-v3-dist", None
    per_vcpu = catalog_size("vgic-v3-redist", 1)
    if re.fullmatch(r"gicv3_redist_region\[\d+\]", name) and size % per_vcpu == 0:
        return "vgic-v3-redist", size // per_vcpu
    # hw/intc/arm_gic_common.c gic_init_irqs_and_mmio(): "gic_dist" (0x1000), "gic_cpu"
    # (0x2000 for revision 2), registered by arm_gic_kvm.c kvm_arm_gic_realize(); older QEMU
    # reserved "kvm-gic_dist" / "kvm-gic_cpu" (0x1000) there instead.
    if name in ("gic_dist", "kvm-gic_dist"):
        return "vgic-v2-dist", None
    if name in ("gic_cpu", "kvm-gic_cpu"):
        return "vgic-v2-cpu", None
    if name == "gicv3_its" and size == catalog_size("vgic-its", None):
        return "vgic-its", None
    return None


def _check_fits(region: Region, kernel_size: int) -> None:
    """Refuse an in-kernel device that KVM's size would carry past the 64-bit space."""
    if region.start + kernel_size > U64_LIMIT:
        raise ImportFailure(
            f"in-kernel device {region.name!r} at {region.start:#x} would end past 2**64 at "
            f"KVM's size {kernel_size:#x}, where KVM could not have placed it; " + HOW,
            region.line,
            region.column,
        )


# --- the document ---------------------------------------------------------------------------


def document(mapping: Mapping, arch: str, notes: list[str]) -> dict[str, Any]:
    memslots = sorted(mapping.memslots, key=lambda e: e["base"])
    devices = sorted(mapping.devices, key=lambda e: e["base"])
    renamed = _unique_names([*memslots, *devices])
    if renamed:
        listed = [f"{name} x{count}" for name, count in renamed.items()]
        notes.append(
            f"Names QEMU repeats ({listing(listed)}) got their base address as a suffix, "
            "e.g. NAME-0x1000."
        )
    document: dict[str, Any] = {"layout": 1, "name": f"qemu-mtree-{arch}", "arch": arch}
    pa_bits = pa_bits_needed(arch, [*memslots, *devices])
    if pa_bits is not None:
        document["pa_bits"] = pa_bits
        notes.append(
            f"pa_bits {pa_bits}: the highest range ends above the {arch} default of "
            f"{ARCHES[arch].default_pa_bits} bits."
        )
    if mapping.page != DEFAULT_HOST_PAGE:
        document["page_size"] = mapping.page
    document["memslots"] = memslots
    document["devices"] = devices
    return document


def _unique_names(entries: list[dict[str, Any]]) -> Counter[str]:
    """Give every entry whose name repeats its base as a suffix; the repeated names, counted."""
    counts = Counter(e["name"] for e in entries)
    repeated = Counter({name: n for name, n in counts.items() if n > 1})
    taken = {name for name, n in counts.items() if n == 1}
    # The next "-N" to try per wanted name: thousands of ranges of one name at one base would
    # otherwise each try every suffix taken before.
    next_suffix: dict[str, int] = {}
    for entry in entries:
        if entry["name"] not in repeated:
            continue
        wanted = f"{entry['name']}-{entry['base']:#x}"
        unique, n = wanted, next_suffix.get(wanted, 2)
        if unique in taken:
            unique = f"{wanted}-{n}"
            while unique in taken:
                n += 1
                unique = f"{wanted}-{n}"
            next_suffix[wanted] = n + 1
        taken.add(unique)
        entry["name"] = unique
    return repeated
