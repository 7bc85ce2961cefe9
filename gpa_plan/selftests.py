"""The KVM selftests default VM: the size of slot 0, the ucall address, and its layout.

A selftest's VM comes from ``__vm_create()`` (tools/testing/selftests/kvm/lib/kvm_util.c),
which adds memslot 0 at GPA 0 with ``vm_nr_pages_required()`` guest pages and then calls
``ucall_init(vm, slot0->region.guest_phys_addr + slot0->region.memory_size)``: the ucall
MMIO address is the first byte past slot 0, chosen once, before the test adds a memslot of its
own. A later memslot over that page never moves it; it takes the ucall writes instead. So the
layouts written here state the address as a fixed ``base``, for ``check`` to hold later
memslots to it.

``vm_nr_pages_required(mode, nr_runnable_vcpus, extra_mem_pages)`` (same file)::

    nr_pages  = 512                                       # test code and per-VM assets
    nr_pages += nr_runnable_vcpus * DEFAULT_STACK_PGS     # vCPU stacks
    nr_pages += (nr_pages + extra_mem_pages) / PTES_PER_MIN_PAGE * 2   # page tables
    nr_pages += ucall_nr_pages_required(page_size)        # the ucall pool
    return vm_adjust_num_guest_pages(mode, nr_pages)

with, from include/kvm_util.h: ``DEFAULT_STACK_PGS`` 5; ``KVM_MAX_VCPUS`` 512;
``MIN_PAGE_SHIFT`` 12 on every architecture and ``ptes_per_page(page_size) = page_size / 8``, so
``PTES_PER_MIN_PAGE`` is 512 whatever the guest page size. The page-table term divides
first (C integer division), then doubles.

``ucall_nr_pages_required(page_size)`` (lib/ucall_common.c) is
``align_up(sizeof(struct ucall_header), page_size) / page_size``, where ``struct ucall_header``
is a bitmap of ``KVM_MAX_VCPUS`` bits (64 bytes) and ``KVM_MAX_VCPUS`` ``struct ucall``
(include/ucall_common.h: ``u64 cmd``, ``u64 args[UCALL_MAX_ARGS = 7]``,
``char buffer[UCALL_BUFFER_LEN = 1024]``, ``struct ucall *hva``: 1096 bytes). The pool is sized
for 512 vCPUs whatever the VM has, so only the guest page size changes it.

``vm_adjust_num_guest_pages()`` (include/kvm_util.h, with ``vm_num_host_pages()`` and
``vm_num_guest_pages()`` in kvm_util.c) rounds the count up to whole host pages: it changes
nothing when the guest page is at least the host page, and rounds up to a multiple of
host/guest pages otherwise (a 4 KiB guest on a 64 KiB host).

The guest page size is that of the VM mode: 4 KiB, 16 KiB or 64 KiB on arm64 (the
``VM_MODE_P*V*_4K/16K/64K`` modes of kvm_util.c ``vm_guest_mode_params[]``), 4 KiB on x86_64
(``VM_MODE_PXXVYY_4K``).

On arm64, ``kvm_arch_vm_post_create(vm, nr_vcpus)`` (lib/arm64/processor.c) also creates a
vGICv3 for every default VM on a host that has one, ``__vgic_v3_setup(vm, nr_vcpus, 64)``:
the distributor at ``GICD_BASE_GPA`` and ``nr_vcpus`` redistributor frames at
``GICR_BASE_GPA`` (include/arm64/gic.h). On x86_64, ``kvm_arch_vm_post_create()``
(lib/x86/processor.c) makes the in-kernel irqchip (LAPIC, IOAPIC), and ucalls are port I/O
(lib/x86/ucall.c ``UCALL_PIO_PORT`` 0x1000): there is no ucall MMIO address to protect.
On riscv64 ucalls are SBI calls (lib/riscv/ucall.c) and the default VM has no in-kernel
device: its layout is slot 0 alone (the guest page is 4 KiB, ``ptes_per_page()`` 512 as on
arm64, so slot 0 has the same size).

These follow tools/testing/selftests/kvm of Linux 7.2.13, in which every function and constant
named above was read (lib/kvm_util.c, include/kvm_util.h, lib/ucall_common.c,
include/ucall_common.h, lib/arm64/processor.c, lib/arm64/ucall.c, lib/x86/processor.c,
lib/x86/ucall.c, include/arm64/gic.h). Trees before ``ucall_nr_pages_required()`` (the ucall
pool, Linux 6.2) or before the 1024-byte print buffer of ``struct ucall`` give a smaller slot 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from gpa_plan.arch import ARCHES, SELFTESTS_DEFAULT_ARCH
from gpa_plan.arch.base import SelftestsDefaults
from gpa_plan.ranges import hex_addr as _hex

T = TypeVar("T")

# include/kvm_util.h
KVM_MAX_VCPUS = 512
DEFAULT_STACK_PGS = 5
PTES_PER_MIN_PAGE = (1 << 12) // 8  # ptes_per_page(MIN_PAGE_SIZE), on every architecture
# lib/kvm_util.c vm_nr_pages_required(): "Arbitrarily allocate 512 pages ... for the test code"
SLOT0_BASE_PAGES = 512
# include/ucall_common.h struct ucall: cmd, args[UCALL_MAX_ARGS], buffer[UCALL_BUFFER_LEN], hva
UCALL_MAX_ARGS = 7
UCALL_BUFFER_LEN = 1024
UCALL_STRUCT_BYTES = 8 + 8 * UCALL_MAX_ARGS + UCALL_BUFFER_LEN + 8
# lib/ucall_common.c struct ucall_header: DECLARE_BITMAP(in_use, KVM_MAX_VCPUS) + ucalls[]
UCALL_HEADER_BYTES = (KVM_MAX_VCPUS + 63) // 64 * 8 + KVM_MAX_VCPUS * UCALL_STRUCT_BYTES

KiB = 1 << 10

def code_memslot(memslots: Iterable[tuple[int, int, bool, T]]) -> T | None:
    """Of ``(slot id, address space, read-only, memslot)``, the memslot KVM selftests load
    the program into and plan from: ``__vm_create()`` adds slot 0 and points every
    ``MEM_REGION_*`` (code included) at it. Read in a layout as the lowest-numbered read-write
    memslot of address space 0; None when there is none."""
    candidates = [(slot, m) for slot, as_id, readonly, m in memslots if as_id == 0 and not readonly]
    return min(candidates, key=lambda c: c[0])[1] if candidates else None


class SelftestsParameterError(ValueError):
    """Parameters no selftests VM has; the message says which and what is allowed."""


def defaults(arch: str) -> SelftestsDefaults:
    """The selftests conventions of ``arch`` (gpa_plan.arch: ArchSpec.selftests)."""
    spec = ARCHES.get(arch)
    if spec is None or spec.selftests is None:
        modelled = ", ".join(name for name, a in ARCHES.items() if a.selftests is not None)
        raise SelftestsParameterError(
            f"arch {arch!r}: the selftests layouts are for {modelled}"
        )
    return spec.selftests


@dataclass(frozen=True)
class SelftestsVM:
    """The default VM ``__vm_create()`` makes for these parameters, term by term."""

    arch: str
    vcpus: int
    extra_pages: int
    guest_page_size: int
    host_page_size: int
    stack_pages: int  # vcpus * DEFAULT_STACK_PGS
    page_table_pages: int  # (512 + stack_pages + extra_pages) // PTES_PER_MIN_PAGE * 2
    ucall_pages: int  # ucall_nr_pages_required(guest_page_size)
    slot0_pages: int  # the sum, after vm_adjust_num_guest_pages()

    @property
    def unadjusted_pages(self) -> int:
        return SLOT0_BASE_PAGES + self.stack_pages + self.page_table_pages + self.ucall_pages

    @property
    def slot0_size(self) -> int:
        return self.slot0_pages * self.guest_page_size

    @property
    def ucall_gpa(self) -> int:
        """The ucall MMIO address: the first byte past slot 0 (on x86_64 given to
        ucall_init() too, which ignores it: ucalls there are port I/O)."""
        return self.slot0_size

    @property
    def default_guest_page(self) -> bool:
        return self.guest_page_size == defaults(self.arch).default_guest_page

    @property
    def default_host_page(self) -> bool:
        return self.host_page_size == defaults(self.arch).default_host_page

    @property
    def is_default(self) -> bool:
        return (self.vcpus, self.extra_pages) == (1, 0) and (
            self.default_guest_page and self.default_host_page
        )


def selftests_vm(
    arch: str = SELFTESTS_DEFAULT_ARCH,
    vcpus: int = 1,
    extra_pages: int = 0,
    guest_page_size: int | None = None,
    host_page_size: int | None = None,
) -> SelftestsVM:
    """Slot 0 and the ucall address of ``__vm_create(shape, vcpus, extra_pages)`` for a guest
    (VM mode) page of ``guest_page_size`` on a host with ``host_page_size`` pages, as the
    module docstring derives them. A page size left out is the architecture's default
    (``SelftestsDefaults.default_guest_page`` / ``default_host_page``: 4 KiB on most).

    Raises SelftestsParameterError for an architecture without selftests conventions, a vCPU
    count outside 1..KVM_MAX_VCPUS (512), a negative ``extra_pages``, a page size the
    architecture has no VM mode (or host) for, and for a slot 0 so large that it (or, on
    arm64, the ucall page past it) reaches the first fixed device of the layout: the vGIC at
    0x0800_0000 on arm64, the IOAPIC at 0xfec0_0000 on x86_64; on riscv64, which has none,
    the last page below 2**41 (a memslot may not end at the limit).
    """
    conventions = defaults(arch)
    if guest_page_size is None:
        guest_page_size = conventions.default_guest_page
    if host_page_size is None:
        host_page_size = conventions.default_host_page
    if not 1 <= vcpus <= KVM_MAX_VCPUS:
        raise SelftestsParameterError(
            f"{vcpus} vCPUs: selftests VMs have 1 to KVM_MAX_VCPUS ({KVM_MAX_VCPUS}) vCPUs"
        )
    if extra_pages < 0:
        raise SelftestsParameterError(f"{extra_pages} extra pages: give 0 or more")
    _check_page_size(arch, guest_page_size, "guest", conventions.guest_page_sizes)
    _check_page_size(arch, host_page_size, "host", conventions.host_page_sizes)
    vm = _vm(arch, vcpus, extra_pages, guest_page_size, host_page_size)
    limit, what = conventions.first_device, conventions.first_device_name
    if _end(vm) > limit:
        most = _most_extra_pages(arch, vcpus, guest_page_size, host_page_size)
        fits = (f"at most {most} extra pages fit with these parameters" if most is not None
                else "no extra pages fit with these parameters")
        ucall = (f" and the ucall page past it end at {_hex(_end(vm))}"
                 if conventions.ucall.is_mmio else "")
        raise SelftestsParameterError(
            f"{extra_pages} extra pages make slot 0 end at {_hex(vm.slot0_size)}{ucall}, "
            f"past {what} at {_hex(limit)}: {fits}"
        )
    return vm


def _check_page_size(arch: str, size: int, which: str, sizes: tuple[int, ...]) -> None:
    if size not in sizes:
        allowed = ", ".join(f"{s // KiB}K" for s in sizes)
        raise SelftestsParameterError(
            f"{which} page size {_human(size)}: {arch} selftests run with {allowed} "
            f"{which} pages"
        )


def _vm(arch: str, vcpus: int, extra: int, guest_page: int, host_page: int) -> SelftestsVM:
    stacks = vcpus * DEFAULT_STACK_PGS
    tables = (SLOT0_BASE_PAGES + stacks + extra) // PTES_PER_MIN_PAGE * 2
    ucall = -(-UCALL_HEADER_BYTES // guest_page)
    pages = SLOT0_BASE_PAGES + stacks + tables + ucall
    return SelftestsVM(arch, vcpus, extra, guest_page, host_page, stacks, tables, ucall,
                       _adjust(pages, guest_page, host_page))


def _adjust(pages: int, guest_page: int, host_page: int) -> int:
    """vm_adjust_num_guest_pages(): up to whole host pages, back in guest pages."""
    if guest_page >= host_page:
        return pages
    per_host = host_page // guest_page
    return -(-pages // per_host) * per_host


def _end(vm: SelftestsVM) -> int:
    return vm.slot0_size + (vm.guest_page_size if defaults(vm.arch).ucall.is_mmio else 0)


def _most_extra_pages(arch: str, vcpus: int, guest_page: int, host_page: int) -> int | None:
    """The largest extra_pages whose slot 0 stays below the first device (the end grows
    with extra_pages, so a binary search finds it)."""
    limit = defaults(arch).first_device
    if _end(_vm(arch, vcpus, 0, guest_page, host_page)) > limit:
        return None
    low, high = 0, limit  # an extra page adds at most 2/512 of a page: never `limit` of them
    while low < high:
        middle = (low + high + 1) // 2
        if _end(_vm(arch, vcpus, middle, guest_page, host_page)) <= limit:
            low = middle
        else:
            high = middle - 1
    return low


def _human(size: int) -> str:
    return f"{size // KiB}K" if size % KiB == 0 and size else f"{size} bytes"


# -- the layout ---------------------------------------------------------------------------

SOURCES = """\
# Sources: tools/testing/selftests/kvm of Linux 7.2.13.
#   lib/kvm_util.c, include/kvm_util.h:
#     __vm_create(): memslot 0 at GPA 0 with vm_nr_pages_required() guest pages, then
#     ucall_init(vm, slot0->region.guest_phys_addr + slot0->region.memory_size), before the
#     test adds any memslot of its own: a later memslot never moves the ucall address.
#     vm_nr_pages_required(): 512 + nr_vcpus * DEFAULT_STACK_PGS (5), plus
#     (that + extra pages) / PTES_PER_MIN_PAGE (4096 / 8 = 512) * 2 for page tables, plus
#     ucall_nr_pages_required(page_size), then vm_adjust_num_guest_pages() (whole host pages).
#   lib/ucall_common.c, include/ucall_common.h:
#     struct ucall_header { DECLARE_BITMAP(in_use, KVM_MAX_VCPUS = 512); struct ucall ucalls[512]; }
#     struct ucall { u64 cmd; u64 args[7]; char buffer[1024]; struct ucall *hva; } = 1096 bytes,
#     so the header is 64 + 512 * 1096 = 561216 bytes, whatever the number of vCPUs.
"""


def selftests_layout(vm: SelftestsVM, *, ucall_base: str = "fixed") -> str:
    """The layout YAML of ``vm``, with the derivation of its numbers in comments.

    On arm64 the ucall device has the fixed base selftests compute (``ucall_base="fixed"``,
    what the shipped layouts/selftests-arm64.yaml holds), or ``auto`` (the built-in layout
    `gpa-plan allocate` starts from: the planner puts the ucall page at the same address,
    the first free page past slot 0, as long as nothing else is there). x86_64 and riscv64
    layouts have no ucall device: selftests use port I/O and SBI calls there.
    """
    if ucall_base not in ("fixed", "auto"):
        raise ValueError(f"ucall_base must be 'fixed' or 'auto', not {ucall_base!r}")
    conventions = defaults(vm.arch)
    # Stated where the architecture has several VM modes' page sizes, and wherever it is not
    # the host's page_size, which a layout's guest_page_size defaults to.
    guest_page = (f"guest_page_size: {_human(vm.guest_page_size)}\n"
                  if len(conventions.guest_page_sizes) > 1
                  or vm.guest_page_size != vm.host_page_size else "")
    return (
        _header(vm, ucall_base)
        + "#\n"
        + conventions.preamble
        + "layout: 1\n"
        f"name: {_name(vm)}\n"
        f"arch: {vm.arch}\n"
        f"pa_bits: {conventions.pa_bits}\n"
        f"page_size: {_human(vm.host_page_size)}\n"
        + guest_page
        + "\n"
        + _slot0(vm)
        + conventions.sections(vm, ucall_base)
    )


def _name(vm: SelftestsVM) -> str:
    if vm.is_default:
        return f"kvm-selftests-{vm.arch}-default"
    name = f"kvm-selftests-{vm.arch}-{vm.vcpus}vcpu"
    if vm.extra_pages:
        name += f"-{vm.extra_pages}extra"
    name += f"-{vm.guest_page_size // KiB}k"
    if vm.host_page_size != vm.guest_page_size:
        name += f"-host{vm.host_page_size // KiB}k"
    return name


def _derivation(vm: SelftestsVM) -> str:
    g, base = vm.guest_page_size, SLOT0_BASE_PAGES + vm.stack_pages
    tables = base + vm.page_table_pages
    lines = [
        f"# Memslot 0 for {vm.vcpus} vCPU{'s' if vm.vcpus != 1 else ''}, {vm.extra_pages} "
        f"extra pages, {g // KiB} KiB guest pages on {vm.host_page_size // KiB} KiB host pages:",
        f"#   512 + {vm.vcpus} * 5 (stacks) = {base} pages",
        f"#   + ({base} + {vm.extra_pages}) / 512 * 2 (page tables) = {base} + "
        f"{vm.page_table_pages} = {tables} pages",
        f"#   + align_up(561216, {g}) / {g} (ucall pool) = {tables} + {vm.ucall_pages} = "
        f"{vm.unadjusted_pages} pages",
    ]
    if vm.slot0_pages != vm.unadjusted_pages:
        per = vm.host_page_size // g
        lines.append(f"#   rounded up to whole {vm.host_page_size // KiB} KiB host pages "
                     f"({per} guest pages each) = {vm.slot0_pages} pages")
    lines.append(f"#   {vm.slot0_pages} pages * {g} bytes = {_hex(vm.slot0_size)}: slot 0 is "
                 f"[0, {_hex(vm.slot0_size)}),")
    lines.append(f"#   and the ucall address selftests compute is {_hex(vm.ucall_gpa)}.")
    return "\n".join(lines) + "\n"


def _header(vm: SelftestsVM, ucall_base: str) -> str:
    params = (f"{vm.vcpus} vCPU{'s' if vm.vcpus != 1 else ''}, {vm.extra_pages} extra pages, "
              f"{vm.guest_page_size // KiB} KiB guest pages")
    generate = ("gpa-plan selftests-layout"
                + (f" --arch {vm.arch}" if vm.arch != SELFTESTS_DEFAULT_ARCH else "")
                + (f" --vcpus {vm.vcpus}" if vm.vcpus != 1 else "")
                + (f" --extra-pages {vm.extra_pages}" if vm.extra_pages else "")
                + (f" --guest-page-size {vm.guest_page_size // KiB}K"
                   if not vm.default_guest_page else "")
                + (f" --host-page-size {vm.host_page_size // KiB}K"
                   if not vm.default_host_page else ""))
    if ucall_base == "auto":
        origin = (f"# The layout `gpa-plan allocate` starts from without FILE; `{generate}`\n"
                  "# writes it with the ucall address fixed, and for other parameters.\n")
    else:
        origin = (f"# Written by `{generate}`; run it with your test's parameters\n"
                  "# (--vcpus, --extra-pages, --guest-page-size, --host-page-size) for the\n"
                  "# layout of your VM.\n")
    return (
        f"# KVM selftests: the default {vm.arch} VM of __vm_create() with {params}.\n"
        + origin
        + "#\n" + SOURCES + "#\n" + _derivation(vm)
    )


def _slot0(vm: SelftestsVM) -> str:
    """The memslots section: slot 0 as __vm_create() adds it, the same on both architectures."""
    return (
        "memslots:\n"
        "  # __vm_create(): vm_userspace_mem_region_add(vm, VM_MEM_SRC_ANONYMOUS, 0 /*gpa*/,\n"
        "  # 0 /*slot*/, nr_pages, flags): code, data, page tables and the ucall pool all live\n"
        "  # here (every MEM_REGION_* maps to slot 0).\n"
        "  - name: slot0\n"
        "    slot: 0\n"
        "    base: 0x0\n"
        f"    size: {_hex(vm.slot0_size)}            # {vm.slot0_pages} pages, computed above\n"
        "\n"
    )
