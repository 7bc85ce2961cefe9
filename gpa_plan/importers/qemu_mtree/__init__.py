"""Layouts from QEMU's memory tree: what the monitor (HMP) prints for `info mtree -f`.

Input read:

- The flat view, ``info mtree -f`` (also with ``-o`` owners and ``-d`` dispatch trees, which are
  skipped): the ``FlatView #N`` block whose ``AS`` lines include ``"memory"``, the system memory
  address space; every other FlatView (``I/O``, bus-master spaces of other devices,
  ``cpu-secure-memory-N``, x86 ``KVM-SMRAM``) is skipped with a note. This is the reliable form:
  QEMU has resolved priorities, aliases and containers already, and with KVM it marks each range
  KVM holds as a memslot. A FlatView is read line by line as mtree_print_flatview() prints it
  (softmmu/memory.c in QEMU 7.2, system/memory.c since 8.1): ``AS`` lines and ``Root memory
  region:``, then range lines or ``No rendered FlatView``, then with ``-d`` the dispatch tree
  of softmmu/physmem.c mtree_print_dispatch() (``Dispatch``, ``Physical sections``, ``#N
  @START..END NAME``, ``Nodes (...)``, ``[N]`` and node entries indented with a TAB, or the
  eight spaces an editor may have expanded it to), which says nothing the ranges do not and is
  skipped. Any other line inside a FlatView is refused, so that nothing is dropped unseen.
- The tree view, plain ``info mtree``: the ``address-space:`` block of ``"memory"`` is flattened
  the way QEMU's render_memory_region() does (higher priority first, what is already rendered
  stays on top, aliases followed into their ``memory-region:`` blocks). The tree does not say
  which regions terminate, so a leaf ``i/o`` region is taken as a device and an ``i/o`` region
  with subregions as a container; an empty container (a PCI window with no BARs yet) therefore
  becomes a device, which the flat view would not show. Overlapping siblings of equal priority
  are layered in printed order (QEMU does not print which was added last). A line whose start
  equals its end is skipped as zero-size (the tree prints a one-byte region the same way). The
  notes say when any of this happened. A region whose range is already painted over is not
  descended into (nothing below it can show), and flattening stops with an error after a
  million steps: aliases that fan out could otherwise multiply the work without bound.
- Monitor prompts (``(qemu) ...``), lines starting with ``#`` (notes kept with a saved dump;
  QEMU prints none at the start of a line), blank lines and Windows line ends are ignored.

Refused (ImportFailure with the 1-based line and column: the range's start address, or the
region type or end address that is wrong, column 1 for a whole line or a block; a block's
problem is at the line that starts it, input that ends too soon at its last line; line 0 only
when the ``arch`` or ``page_size`` argument is wrong): text that is not mtree output, a line
inside a FlatView or a tree that QEMU does not print there, a malformed range line, a region type
QEMU's memory_region_type() does not print, an end below the start, the overflow mark in a
flat view (only the tree view prints it), output without the ``"memory"`` address space or
with nothing in it, a tree line indented below no parent, an alias whose target block is
missing, aliases that lead back into a region they lie in (a loop) or more than 64 deep, a
tree that takes more than a million steps to flatten, region names that name no architecture
(at the block's first line) or both (at the first region that contradicts the other) when
``arch`` is not given, a ``page_size`` the architecture has no pages of (at the line of the
region whose name told the architecture), and ranges no layout entry can hold. Those are a
range covering the whole 64-bit space, 2**64 bytes (a layout's sizes stop at 2**64-1),
refused rather than skipped: such a range leaves room for nothing else, so the input maps no
guest (in a tree view it is typically an empty root container); and an in-kernel device
whose KVM size would run past 2**64, where KVM could not have placed it. Every entry
therefore ends at 2**64 at the highest.

What each range becomes (KVM's view of it; each rule's code cites the QEMU function):

- ``ram`` and ``ramd`` (a RAM device: a VFIO BAR mapped into the guest): a read-write memslot.
- ``rom`` and ``romd`` (a ROM device in romd mode, such as pflash in read-array mode): a
  read-only memslot (KVM_MEM_READONLY), except a ``rom`` range of a region shown elsewhere as
  ``ram``: read-only only through an alias (the x86 PAM registers), it is a read-write memslot.
- A memory range KVM cannot map whole: its page-aligned interior (4 KiB, the layout's
  page_size) is the memslot and the unaligned head and tail are ``mmio`` devices named
  ``NAME.head`` / ``NAME.tail``; QEMU emulates accesses there. QEMU trims to the host's page
  size, which is 16 or 64 KiB on many arm64 hosts: ``page_size`` (`--page-size`) says which,
  and becomes the layout's page_size; without it the import assumes 4 KiB, and the notes of an
  arm64 import with memory ranges say so. A page-aligned memory range without the
  ``KVM`` mark in a flat view that has marks is not a memslot: an ``mmio`` device.
- ``i/o`` (and ``container``, which a flat view shows only for a terminating root): a device.
  In-kernel devices are recognised by QEMU's region names under KVM, per architecture (sizes
  from the device catalog, gpa_plan.arch.devices):
  arm64 ``gicv3_dist`` (vgic-v3-dist), ``gicv3_redist_region[N]`` (vgic-v3-redist, vcpus =
  size / 128 KiB), ``gic_dist`` / ``gic_cpu`` and the older ``kvm-gic_dist`` / ``kvm-gic_cpu``
  (vgic-v2-dist / vgic-v2-cpu), and an ITS: ``control`` directly followed by ``translation``,
  64 KiB each, becomes one vgic-its named ``gicv3_its``; x86_64 ``kvm-apic-msi`` (lapic) and
  ``kvm-ioapic`` (ioapic). Where QEMU's region is larger than the kernel's device (1 MiB
  APIC/MSI window against the 4 KiB LAPIC, 4 KiB against the IOAPIC's 0x100 bytes), the rest is
  an ``mmio`` device ``NAME.rest``: KVM exits there and QEMU answers (MSI writes, for the APIC
  window). Everything else is ``type: mmio`` with its size and the default handler (user);
  ioeventfds and coalesced MMIO do not show in mtree output.
- The in-kernel IOAPIC that no region shows: on x86_64, when the ``I/O`` address space holds
  QEMU's in-kernel PIC (``kvm-pic``, hw/i386/kvm/i8259.c kvm_pic_realize()), QEMU made
  KVM_CREATE_IRQCHIP, and that ioctl also creates KVM's IOAPIC at 0xfec00000 (Linux
  arch/x86/kvm/x86.c kvm_arch_vm_ioctl() calls kvm_pic_init() and kvm_ioapic_init(), which puts
  it on KVM_MMIO_BUS at IOAPIC_DEFAULT_BASE_ADDRESS). QEMU shows it only through its own
  ``kvm-ioapic`` device, which PCI machines have and ``isapc`` has not (hw/i386/pc_piix.c
  pc_init1()). An ``ioapic`` device at 0xfec00000 is then added, with a note that says why.
- Zero-size, disabled and overflowing regions of the tree view are skipped, and so are its
  regions with subregions (containers), whose gaps show what lies below.

Names: QEMU's region names. A name used by more than one entry (``pc.ram`` pieces, 32
``virtio-mmio`` transports) gets its base address as a suffix on every use, ``pc.ram-0x100000``;
should that collide with another name, ``-2``, ``-3``... follow, in document order (memslots,
then devices, each sorted by base). ``pa_bits`` is written only when an entry ends above the
architecture's default (arm64 40, x86_64 48), by the importers' shared pa_bits_needed().
"""

from __future__ import annotations

import codecs
from collections import abc
from typing import Any

from gpa_plan.arch import ARCHES
from gpa_plan.importers import Imported, ImportFailure
from gpa_plan.importers.qemu_mtree.address_space import in_kernel_pic, memory_regions
from gpa_plan.importers.qemu_mtree.mapping import Mapping, architecture, document, with_its
from gpa_plan.importers.qemu_mtree.text import LINE_END, scan
from gpa_plan.ranges import human_size


def _known_arches() -> str:
    *most, last = ARCHES
    return f"{', '.join(most)} or {last}" if most else last


def page_size_problem(page_size: int) -> str | None:
    """Why ``page_size`` cannot be a host page KVM memslots are trimmed to, or None: it must
    be a power of two of at least 4 KiB."""
    if page_size < 4096 or page_size & (page_size - 1):
        return f"host page size {page_size:#x} is not a power of two of at least 4 KiB"
    return None


def arch_page_size_problem(arch: str, page_size: int | None) -> str | None:
    """Why ``arch`` has no host page of ``page_size`` bytes, or None. `check` would refuse the
    layout (arch-limits), so the import says it where the option is."""
    sizes = ARCHES[arch].page_sizes
    if page_size is None or page_size in sizes:
        return None
    named = ", ".join(f"{size // 1024}K" for size in sizes)
    return f"host page size {human_size(page_size)} is not one {arch} has ({named})"


def import_qemu_mtree(
    text: str, arch: str | None = None, page_size: int | None = None
) -> Imported:
    """The layout of the guest's system memory that QEMU's `info mtree -f` output describes
    (or, flattened here, plain `info mtree`), with notes; ``arch`` (any gpa-plan models) wins over
    what the region names suggest, and ``page_size`` is the host page KVM memslots are trimmed
    to (default 4 KiB; it becomes the layout's page_size). Raises ImportFailure."""
    if arch is not None and arch not in ARCHES:
        raise ImportFailure(f"unknown architecture {arch!r}: expected {_known_arches()}")
    problem = None if page_size is None else page_size_problem(page_size)
    if problem:
        raise ImportFailure(problem)
    notes: list[str] = []
    blocks = scan(text)
    regions, header_line = memory_regions(blocks, notes)
    arch, named_by = architecture(regions, arch, header_line, notes)
    problem = arch_page_size_problem(arch, page_size)
    if problem and named_by is None:
        raise ImportFailure(f"{problem}; give the host's page size (--page-size)")
    if problem and named_by is not None:
        raise ImportFailure(
            f"{problem}, and region {named_by.name!r} here says the guest is {arch}; give the "
            "host's page size (--page-size)",
            named_by.line,
            named_by.column,
        )
    mapping = Mapping(arch, regions, page_size)
    for region in with_its(regions, arch):
        mapping.add(region)
    pic = in_kernel_pic(blocks)
    if arch == "x86_64" and pic is not None:
        mapping.add_irqchip_ioapic(pic.number)
    notes += mapping.notes()
    return Imported(document(mapping, arch, notes), notes)


def read(data: bytes, options: abc.Mapping[str, Any]) -> Imported:
    """`gpa-plan import qemu-mtree`'s reader (gpa_plan.importers.registry): ``data`` as UTF-8
    text (a leading BOM, as an editor may save it, is skipped), with the ``arch`` and
    ``page_size`` options. Raises ImportFailure."""
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as err:
        # Offsets count from the start of the file, BOM included, as an editor's do; the
        # column counts the characters before the byte on its line.
        where = bom + err.start
        lines = LINE_END.split(data[bom:where].decode("utf-8"))
        raise ImportFailure(
            f"not UTF-8 text (byte 0x{data[where]:02x} at offset {where}): expected the "
            "output of the QEMU monitor command `info mtree -f`",
            len(lines),
            len(lines[-1]) + 1,
        ) from None
    return import_qemu_mtree(text, options.get("arch"), options.get("page_size"))


def page_size_option_problem(page_size: int, options: abc.Mapping[str, Any]) -> str | None:
    """Why ``--page-size`` cannot be ``page_size`` (with the ``--arch`` in ``options``), or
    None: checked on the command line before the input is read."""
    problem = page_size_problem(page_size)
    if problem:
        return f"{problem} (4K, 16K, 64K ...)"
    arch = options.get("arch")
    problem = None if arch is None else arch_page_size_problem(arch, page_size)
    return f"{problem} (--arch {arch})" if problem else None


__all__ = ["import_qemu_mtree", "read"]
