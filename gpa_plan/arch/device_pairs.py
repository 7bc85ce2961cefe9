"""What KVM does when two devices, or a memslot and a device, claim the same guest address.

One table, ``PAIRS``: each entry names a class of pairs of device kinds, what KVM does with
them (refuses one, with which ioctl and errno, at set-up or at the first KVM_RUN; or accepts
both, with one answering the guest where they overlap), and the kernel function and file that
decide it, and the kernel source it was read in. docs/device-overlaps.md is the same table in
prose.

Two facts decide most entries:
- A device the VMM emulates (`mmio` with handler user, the ucall page) is unknown to KVM: the
  kernel refuses nothing because of it and answers every access its own devices cover.
- In-kernel MMIO devices share KVM_MMIO_BUS, and virt/kvm/kvm_main.c kvm_io_bus_register_dev()
  checks no overlap; it keeps the bus an array in the order of _bus_order() below.
  kvm_io_bus_get_first_dev() bsearch()es it (kvm_io_bus_cmp()) for the first range that holds
  the whole access, and __kvm_io_bus_write()/__kvm_io_bus_read() offer the access to each
  following range that holds it, in array order, until one accepts. The vGIC, ITS, IOAPIC and
  loongarch64 PCH-PIC accept any access in their range (vgic-mmio.c dispatch_mmio_read()/
  dispatch_mmio_write() answer unknown offsets as RAZ/WI; pch_pic.c kvm_pch_pic_read()/
  kvm_pch_pic_write() return 0 for every offset, a misaligned one included); an ioeventfd
  (eventfd.c ioeventfd_write()) and a coalesced zone (coalesced_mmio.c coalesced_mmio_write())
  take writes only, so reads go on to the next device or exit. An ioeventfd takes only a
  write of its exact base and length (ioeventfd_in_range()); the table treats its range as
  one such doorbell.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import NamedTuple

from gpa_plan.arch.base import Handler
from gpa_plan.ranges import Range, hex_addr

# Every entry was read in Linux 7.2.13 (Debian linux-source-7.2).
_VGIC_DEVICE = "Linux 7.2.13, vgic-kvm-device.c kvm_vgic_addr(), vgic_check_iorange()"
_VGIC_INIT = "Linux 7.2.13, vgic-init.c kvm_vgic_create()"
_VGIC_V2 = (
    "Linux 7.2.13, vgic-v2.c vgic_v2_map_resources(), hyp/vgic-v2-cpuif-proxy.c "
    "__vgic_v2_perform_cpuif_access()"
)
_VGIC_V3 = "Linux 7.2.13, vgic-mmio-v3.c vgic_v3_alloc_redist_region(), vgic-v3.c"
_X86 = "Linux 7.2.13, arch/x86/kvm/x86.c"
_AIA = (
    "Linux 7.2.13, arch/riscv/kvm/aia_device.c aia_aplic_addr(), aia_imsic_addr(); "
    "aia_imsic.c kvm_riscv_vcpu_aia_imsic_update()"
)
_PCH_PIC = "Linux 7.2.13, arch/loongarch/kvm/intc/pch_pic.c kvm_pch_pic_create()"
_EVENTFD = "Linux 7.2.13, virt/kvm/eventfd.c ioeventfd_check_collision()"
_IO_BUS = (
    "Linux 7.2.13, virt/kvm/kvm_main.c kvm_io_bus_register_dev()/kvm_io_bus_get_first_dev(), "
    "eventfd.c, coalesced_mmio.c"
)


class Kind(str, enum.Enum):
    """A device as the overlap table sees it."""

    VGIC_V2_DIST = "vgic-v2-dist"
    VGIC_V2_CPU = "vgic-v2-cpu"
    VGIC_V3_DIST = "vgic-v3-dist"
    VGIC_V3_REDIST = "vgic-v3-redist"
    VGIC_ITS = "vgic-its"
    LAPIC = "lapic"
    IOAPIC = "ioapic"
    RISCV_APLIC = "riscv-aplic"
    RISCV_IMSIC = "riscv-imsic"
    PCH_PIC = "loongarch-pch-pic"
    KERNEL_MMIO = "mmio (handler kernel)"
    IOEVENTFD = "mmio (handler ioeventfd)"
    COALESCED = "mmio (handler coalesced)"
    USER = "mmio (handler user)"
    UCALL = "ucall"


# On KVM_MMIO_BUS and answering reads and writes anywhere in their range.
# The AIA's devices take only 4-byte accesses (aplic_mmio_read(), imsic_mmio_read() return
# -EOPNOTSUPP otherwise, and the bus offers the access to the next device, then exits).
_BUS = frozenset(
    {Kind.VGIC_V2_DIST, Kind.VGIC_V3_DIST, Kind.VGIC_V3_REDIST, Kind.VGIC_ITS, Kind.IOAPIC,
     Kind.RISCV_APLIC, Kind.RISCV_IMSIC, Kind.PCH_PIC, Kind.KERNEL_MMIO}
)  # fmt: skip
# On KVM_MMIO_BUS, taking writes only.
_WRITES = frozenset({Kind.IOEVENTFD, Kind.COALESCED})
# Unknown to KVM: every access that reaches neither memory nor a kernel device exits.
_VMM = frozenset({Kind.USER, Kind.UCALL})
_V2 = frozenset({Kind.VGIC_V2_DIST, Kind.VGIC_V2_CPU})
_V3 = frozenset({Kind.VGIC_V3_DIST, Kind.VGIC_V3_REDIST})
# vGIC frames with one address each (redistributors may come in several regions).
_SINGLE_FRAMES = frozenset({Kind.VGIC_V2_DIST, Kind.VGIC_V2_CPU, Kind.VGIC_V3_DIST})
_ALL = frozenset(Kind)


class Party(NamedTuple):
    """One device of a pair: its kind, name and range (and, for an ioeventfd, the length and
    datamatch the VMM gives KVM_IOEVENTFD: gpa_plan.layout.resolved.Doorbell)."""

    kind: Kind
    name: str
    range: Range
    ioeventfd: tuple[int, int | None] | None = None
    # A GICv3 redistributor given as the one legacy address (KVM_VGIC_V3_ADDR_TYPE_REDIST)
    # rather than a region (the layout's `redist`).
    legacy: bool = False


class PairOutcome(NamedTuple):
    """What happens to one overlapping pair: ``refused`` (KVM fails an ioctl) or accepted, in
    words that name the two devices, and whether the layout is in error or only worth a look."""

    entry: str
    refused: bool
    error: bool
    what: str


class Pair(NamedTuple):
    """A row of the table: the pairs it covers, what KVM does, and where the kernel decides."""

    entry: str
    kinds: tuple[frozenset[Kind], frozenset[Kind]]
    kernel: str
    outcome: Callable[[Party, Party], tuple[bool, bool, str]]
    # The kernel source the entry was read in.
    read: str
    # Beyond the kinds: a condition on the ranges (same base and size), if any.
    when: Callable[[Party, Party], bool] | None = None

    def covers(self, a: Party, b: Party) -> tuple[Party, Party] | None:
        """(a, b) ordered as the entry's kinds, when the entry covers the pair; else None."""
        first, second = self.kinds
        for x, y in ((a, b), (b, a)):
            if x.kind in first and y.kind in second and (self.when is None or self.when(x, y)):
                return x, y
        return None


def _refused(text: str) -> Callable[[Party, Party], tuple[bool, bool, str]]:
    return lambda a, b: (True, True, text.format(a=repr(a.name), b=repr(b.name)))


def _bus_order(a: Party, b: Party) -> tuple[Party, Party] | None:
    """(first, second) in KVM's MMIO bus order where both hold an access; None when that order
    is the order the VMM registers them in, which a layout does not say.

    kvm_io_bus_register_dev() inserts a device before the first one already on the bus that
    starts at or above its base and ends after it (kvm_io_bus_cmp() > 0), else at the end. So
    of two overlapping ranges the lower base comes first, and of two with the same base the one
    ending first, whatever the registration order, except for the same range twice, or one
    range inside the other that starts after it: there the one registered first comes first.
    """
    lo, hi = sorted((a, b), key=lambda p: (p.range.start, p.range.end))
    if hi.range.end <= lo.range.end:
        return None
    return lo, hi


_BUS_ORDER_WORDS = "first in KVM's MMIO bus order (lower base, then the one ending first)"


def _registration_words(a: Party, b: Party, answers: str) -> str:
    """Why the order is unknown, and what the inner range does to the outer one."""
    if a.range == b.range:
        return (
            f"with the same range, {answers} is the one the VMM registers first, which the "
            "layout does not say"
        )
    outer, inner = (a, b) if a.range.start < b.range.start else (b, a)
    text = (
        f"{inner.name!r} lies inside {outer.name!r} and starts after it, so {answers} is the "
        "one the VMM registers first (kvm_io_bus_register_dev() keeps such ranges in "
        "registration order), which the layout does not say"
    )
    if inner.range.end < outer.range.end:
        text += (
            f"; registered after {outer.name!r}, {inner.name!r} can also hide the part of "
            f"{outer.name!r} past its end from kvm_io_bus_get_first_dev()'s bsearch(), so "
            "accesses there exit to the VMM"
        )
    return text


def _both_on_bus(a: Party, b: Party) -> tuple[bool, bool, str]:
    order = _bus_order(a, b)
    accepted = "KVM accepts both on its MMIO bus, which checks no overlap; "
    if order is None:
        return False, True, accepted + _registration_words(
            a, b, "the one that answers the accesses they share"
        )
    first, second = order
    return False, True, accepted + (
        f"{first.name!r} answers every access they share ({_BUS_ORDER_WORDS}), "
        f"{second.name!r} never sees one"
    )


def _writes_vs_bus(w: Party, k: Party) -> tuple[bool, bool, str]:
    takes = "signals its eventfd" if w.kind is Kind.IOEVENTFD else "queues it in the ring"
    order = _bus_order(w, k)
    accepted = "KVM accepts both on its MMIO bus, which checks no overlap; "
    if order is not None and order[0] is w:
        return False, False, accepted + (
            f"{w.name!r} comes {_BUS_ORDER_WORDS} and takes the writes they share "
            f"({takes}), reads still reach {k.name!r}"
        )
    if order is None:
        return False, True, accepted + _registration_words(
            w, k, f"whether {w.name!r} or {k.name!r} takes the writes they share"
        ) + f"; reads reach {k.name!r}"
    return False, True, accepted + (
        f"{k.name!r} comes {_BUS_ORDER_WORDS} and answers every access they share, "
        f"{w.name!r} never sees one"
    )


def _writes_vs_writes(a: Party, b: Party) -> tuple[bool, bool, str]:
    reads = "; reads exit to the VMM"
    if a.kind is b.kind is Kind.IOEVENTFD:
        # ioeventfd_in_range(): a write signals an ioeventfd only at exactly its base, length
        # and datamatch, and two that one write could match are refused
        # (ioeventfd-same-range): no write matches both, whichever comes first on the bus.
        return False, False, (
            "KVM accepts both (ioeventfd_check_collision() refuses only two that one write "
            "could match: the same address with the same length and datamatch, or a length "
            "of 0): a write signals only the ioeventfd whose base, length and datamatch it "
            "matches exactly (ioeventfd_in_range()), so each keeps its own doorbell" + reads
        )
    order = _bus_order(a, b)
    same = a.kind is b.kind is Kind.COALESCED
    accepted = "KVM accepts both on its MMIO bus, which checks no overlap; "
    if order is None:
        first_words = _registration_words(a, b, "the one that takes the writes they share")
    elif order[0].kind is Kind.IOEVENTFD:
        # The ioeventfd declines every write but its doorbell, which goes on to the zone.
        return False, False, accepted + (
            f"{order[0].name!r} comes {_BUS_ORDER_WORDS} and takes the writes of exactly its "
            f"base and length (ioeventfd_in_range()), {order[1].name!r} the other writes they "
            "share" + reads
        )
    elif order[1].kind is Kind.IOEVENTFD and not order[0].range.covers(order[1].range):
        # coalesced_mmio_in_range(): a zone takes only writes wholly inside it.
        return False, False, accepted + (
            f"{order[0].name!r} comes {_BUS_ORDER_WORDS} and takes the writes wholly inside "
            f"it (coalesced_mmio_in_range()); {order[1].name!r}'s doorbell write reaches past "
            f"{order[0].name!r}, so it goes on to {order[1].name!r}" + reads
        )
    else:
        first_words = (
            f"{order[0].name!r} takes the writes they share ({_BUS_ORDER_WORDS}), "
            f"{order[1].name!r} never sees one"
        )
    if same:
        return False, False, accepted + first_words + " (both queue in the same ring)" + reads
    return False, True, accepted + first_words + reads


def _kernel_over_vmm(k: Party, v: Party) -> tuple[bool, bool, str]:
    return False, True, (
        f"KVM accepts it: {v.name!r} is the VMM's and unknown to KVM, so {k.name!r} answers "
        f"every guest access they share in the kernel and {v.name!r} never sees one"
    )


def _writes_over_vmm(w: Party, v: Party) -> tuple[bool, bool, str]:
    if w.kind is Kind.IOEVENTFD:
        # ioeventfd_in_range(): only the write of its base, length and datamatch.
        takes = (
            f"the guest write that matches {w.name!r} (its base, length and datamatch) signals "
            f"the eventfd of {w.name!r} instead of exiting; other writes and"
        )
    else:
        takes = f"guest writes they share are queued in the ring of {w.name!r} instead of exiting;"
    ucall = v.kind is Kind.UCALL
    return False, ucall, (
        f"KVM accepts it: {takes} reads still exit to the VMM's {v.name!r}"
        + (" (so the ucall write never exits)" if ucall else " (how a VMM offloads a doorbell)")
    )


def _vmm_pair(a: Party, b: Party) -> tuple[bool, bool, str]:
    return False, True, (
        "KVM knows neither: guest accesses there exit to the VMM (KVM_EXIT_MMIO), and the "
        "VMM's own dispatch decides which of them answers"
    )


def _lapic_first(apic: Party, other: Party) -> tuple[bool, bool, str]:
    return False, True, (
        f"KVM accepts it: vcpu_mmio_read()/vcpu_mmio_write() offer every access to the vCPU's "
        f"LAPIC before the MMIO bus or an exit, so {apic.name!r} answers and {other.name!r} "
        "never sees an access they share"
    )


# include/linux/irqchip/arm-gic.h GIC_CPU_DEACTIVATE: the GICv2 CPU interface's second page.
_GICC_DIR = 0x1000


def _gicv2_cpu_first(cpu: Party, other: Party) -> tuple[bool, bool, str]:
    mapped = Range(cpu.range.start, cpu.range.start + _GICC_DIR)
    texts = []
    if mapped.overlaps(other.range):
        texts.append(
            f"KVM accepts it: the first 4 KiB of the GICv2 CPU interface {cpu.name!r} are "
            "mapped into the guest at stage 2 at the first KVM_RUN (or handled at EL2 on hosts "
            "that trap them), before any MMIO bus device or exit, so "
            f"{other.name!r} never sees an access there"
        )
    if Range(mapped.end, cpu.range.end).overlaps(other.range):
        if other.kind in _VMM:
            answer = f"{cpu.name!r} answers them and {other.name!r} never sees one"
        else:
            answer = (
                "which of the two answers follows the bus order (lower base, then the one "
                "ending first; for a range inside the other that starts after it, the one "
                "registered first)"
            )
        texts.append(
            ("KVM accepts it: " if not texts else "")
            + f"accesses to its second 4 KiB (GICC_DIR, from {hex_addr(mapped.end)}) go to "
            f"the MMIO bus, where {cpu.name!r} is a device registered at the first KVM_RUN: "
            + answer
        )
    return False, True, "; ".join(texts)


def _imsic_first(imsic: Party, other: Party) -> tuple[bool, bool, str]:
    return False, True, (
        f"KVM accepts it (aia_imsic_addr() checks only alignment); where the host gives the "
        f"vCPU a hardware interrupt file (AIA mode hwaccel, or auto, the default on hosts with "
        f"guest external interrupts) the page of {imsic.name!r} is mapped into the G-stage "
        f"(kvm_riscv_vcpu_aia_imsic_update()) and {other.name!r} never sees an access there; "
        "in emul mode both are on the MMIO bus, where the bus order decides"
    )


def _redistributors(later: Party, first: Party) -> tuple[bool, bool, str]:
    """vgic_v3_alloc_redist_region() tests how the address is given before any overlap: a
    legacy address after another entry is EEXIST or EINVAL whatever its range."""
    if later.legacy or first.legacy:
        errno = "EEXIST" if later.legacy and first.legacy else "EINVAL"
        return True, True, (
            f"KVM refuses the later redistributors: KVM_SET_DEVICE_ATTR for {later.name!r} "
            f"fails with {errno} at set-up, for how they are given (one legacy address, or "
            "legacy and regions mixed: `vgic-redist`) before their ranges are compared"
        )
    return True, True, (
        "KVM refuses the later redistributor region: KVM_SET_DEVICE_ATTR "
        f"(KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION) for {later.name!r} fails with EINVAL at set-up"
    )


def _ioeventfds_collide(a: Party, b: Party) -> bool:
    """virt/kvm/eventfd.c ioeventfd_check_collision() (Linux 7.2.13): the same address, and
    a length of 0 on either, or the same length with the same datamatch or none on either."""
    if a.range.start != b.range.start:
        return False
    if a.ioeventfd is None or b.ioeventfd is None:
        return a.range == b.range
    (length_a, match_a), (length_b, match_b) = a.ioeventfd, b.ioeventfd
    if length_a == 0 or length_b == 0:
        return True
    return length_a == length_b and (match_a is None or match_b is None or match_a == match_b)


PAIRS: tuple[Pair, ...] = (
    Pair(
        "vgic-frame-twice",
        (_SINGLE_FRAMES, _SINGLE_FRAMES),
        "arch/arm64/kvm/vgic/vgic-kvm-device.c kvm_vgic_addr() -> vgic_check_iorange()",
        _refused(
            "KVM refuses the second address of one vGIC frame: KVM_SET_DEVICE_ATTR "
            "(KVM_DEV_ARM_VGIC_GRP_ADDR) for {a} fails with EEXIST at set-up"
        ),
        read=_VGIC_DEVICE,
        when=lambda a, b: a.kind is b.kind,
    ),
    Pair(
        "vgic-two-models",
        (_V2, _V3),
        "arch/arm64/kvm/vgic/vgic-init.c kvm_vgic_create()",
        _refused(
            "KVM refuses a second vGIC: a VM has one, so the KVM_CREATE_DEVICE of the other "
            "model fails with EEXIST at set-up"
        ),
        read=_VGIC_INIT,
    ),
    Pair(
        "vgic-v2-dist-cpu",
        (frozenset({Kind.VGIC_V2_DIST}), frozenset({Kind.VGIC_V2_CPU})),
        "arch/arm64/kvm/vgic/vgic-v2.c vgic_v2_map_resources() -> vgic_v2_check_base()",
        _refused(
            "KVM refuses the GICv2 frames: the first KVM_RUN fails with EINVAL "
            "(distributor {a} and CPU interface {b} overlap)"
        ),
        read=_VGIC_V2,
    ),
    Pair(
        "vgic-v3-dist-redist",
        (frozenset({Kind.VGIC_V3_DIST}), frozenset({Kind.VGIC_V3_REDIST})),
        "arch/arm64/kvm/vgic/vgic-mmio-v3.c vgic_v3_alloc_redist_region() -> "
        "vgic_dist_overlap(), vgic_register_redist_iodev() and vgic-v3.c "
        "vgic_v3_map_resources() -> vgic_v3_check_base()",
        _refused(
            "KVM refuses the GICv3 frames with EINVAL: KVM_SET_DEVICE_ATTR of the "
            "redistributors {b} fails when it can see the overlap (the distributor set first, "
            "or vCPUs created), else KVM_CREATE_VCPU or at the latest the first KVM_RUN fails"
        ),
        read=_VGIC_V3,
    ),
    Pair(
        "vgic-v3-redist-redist",
        (frozenset({Kind.VGIC_V3_REDIST}), frozenset({Kind.VGIC_V3_REDIST})),
        "arch/arm64/kvm/vgic/vgic-mmio-v3.c vgic_v3_alloc_redist_region() -> "
        "vgic_v3_rdist_overlap()",
        lambda a, b: _redistributors(a, b),
        read=_VGIC_V3,
    ),
    Pair(
        "irqchip-twice",
        (frozenset({Kind.LAPIC, Kind.IOAPIC}), frozenset({Kind.LAPIC, Kind.IOAPIC})),
        "arch/x86/kvm/x86.c kvm_arch_vm_ioctl() (KVM_CREATE_IRQCHIP)",
        _refused(
            "KVM has one IOAPIC per VM and one LAPIC per vCPU, made by KVM_CREATE_IRQCHIP; a "
            "second call fails with EEXIST at set-up, so {a} is not a second device"
        ),
        read=_X86,
        when=lambda a, b: a.kind is b.kind,
    ),
    Pair(
        "aia-address-twice",
        (frozenset({Kind.RISCV_APLIC}), frozenset({Kind.RISCV_APLIC})),
        "arch/riscv/kvm/aia_device.c aia_aplic_addr()",
        lambda a, b: (False, True, (
            f"a VM has one APLIC: KVM_SET_DEVICE_ATTR(KVM_DEV_RISCV_AIA_ADDR_APLIC) of a "
            f"second address replaces the first without an error, so {a.name!r} and "
            f"{b.name!r} are one device, at the address the VMM sets last; keep one"
        )),
        read=_AIA,
    ),
    Pair(
        "pch-pic-twice",
        (frozenset({Kind.PCH_PIC}), frozenset({Kind.PCH_PIC})),
        "arch/loongarch/kvm/intc/pch_pic.c kvm_pch_pic_create()",
        _refused(
            "KVM has one PCH-PIC per VM: the second KVM_CREATE_DEVICE "
            "(KVM_DEV_TYPE_LOONGARCH_PCHPIC) fails with EINVAL at set-up, so {a} is not a "
            "second device"
        ),
        read=_PCH_PIC,
    ),
    Pair(
        "ioeventfd-same-range",
        (frozenset({Kind.IOEVENTFD}), frozenset({Kind.IOEVENTFD})),
        "virt/kvm/eventfd.c kvm_assign_ioeventfd_idx() -> ioeventfd_check_collision()",
        _refused(
            "KVM refuses the second ioeventfd at the same address, with a length of 0 on "
            "either or the same length and no distinct datamatch values "
            "(ioeventfd_check_collision()): KVM_IOEVENTFD for {a} fails with EEXIST at set-up; "
            "give them different addresses, or the same length with distinct datamatch values"
        ),
        read=_EVENTFD,
        when=_ioeventfds_collide,
    ),
    Pair(
        "gicv2-cpu-first",
        (frozenset({Kind.VGIC_V2_CPU}), _ALL),
        "arch/arm64/kvm/vgic/vgic-v2.c vgic_v2_map_resources() -> kvm_phys_addr_ioremap() "
        "(first 4 KiB) and kvm_io_bus_register_dev() (KVM_VGIC_V2_CPU_SIZE)",
        _gicv2_cpu_first,
        read=_VGIC_V2,
    ),
    Pair(
        "imsic-first",
        (frozenset({Kind.RISCV_IMSIC}), _ALL),
        "arch/riscv/kvm/aia_imsic.c kvm_riscv_vcpu_aia_imsic_update() -> "
        "kvm_riscv_mmu_ioremap() (hwaccel) or kvm_io_bus_register_dev() (emul)",
        _imsic_first,
        read=_AIA,
    ),
    Pair(
        "lapic-first",
        (frozenset({Kind.LAPIC}), _ALL),
        "arch/x86/kvm/x86.c vcpu_mmio_read()/vcpu_mmio_write(); lapic.c apic_mmio_read()/"
        "apic_mmio_write()",
        _lapic_first,
        read=_X86,
    ),
    Pair(
        "bus-bus",
        (_BUS, _BUS),
        "virt/kvm/kvm_main.c kvm_io_bus_register_dev(), kvm_io_bus_get_first_dev(); "
        "vgic-mmio.c dispatch_mmio_read()/dispatch_mmio_write(); vgic-its.c "
        "vgic_its_set_attr() (vgic_check_iorange() only)",
        _both_on_bus,
        read=_IO_BUS,
    ),
    Pair(
        "writes-bus",
        (_WRITES, _BUS),
        "virt/kvm/kvm_main.c __kvm_io_bus_write()/__kvm_io_bus_read(); eventfd.c "
        "ioeventfd_write(); coalesced_mmio.c coalesced_mmio_write() (no .read)",
        _writes_vs_bus,
        read=_IO_BUS,
    ),
    Pair(
        "writes-writes",
        (_WRITES, _WRITES),
        "virt/kvm/kvm_main.c __kvm_io_bus_write(); eventfd.c ioeventfd_check_collision() "
        "(same address and length only); coalesced_mmio.c "
        "kvm_vm_ioctl_register_coalesced_mmio() (no check)",
        _writes_vs_writes,
        read=_IO_BUS,
    ),
    Pair(
        "bus-vmm",
        (_BUS, _VMM),
        "virt/kvm/kvm_main.c __kvm_io_bus_read()/__kvm_io_bus_write(): a kernel device "
        "answers before any KVM_EXIT_MMIO",
        _kernel_over_vmm,
        read=_IO_BUS,
    ),
    Pair(
        "writes-vmm",
        (_WRITES, _VMM),
        "virt/kvm/eventfd.c ioeventfd_write(); coalesced_mmio.c coalesced_mmio_write(); "
        "reads find no .read and exit (KVM_EXIT_MMIO)",
        _writes_over_vmm,
        read=_IO_BUS,
    ),
    Pair(
        "vmm-vmm",
        (_VMM, _VMM),
        "arm64 io_mem_abort() / x86 vcpu_mmio_write() / loongarch64 kvm_emu_mmio_write(): no "
        "kernel device -> KVM_EXIT_MMIO",
        _vmm_pair,
        read=_IO_BUS,
    ),
)

# A memslot wins over every device: the page is mapped (arm64 kvm_handle_guest_abort() ->
# user_mem_abort(); x86 kvm_tdp_page_fault(); loongarch64 kvm_handle_rdwr_fault() ->
# kvm_map_page()), so the access never reaches the io bus or the VMM; kvm_set_memory_region()
# checks no device (nor does loongarch64's kvm_pch_pic_init() check memslots), so KVM refuses
# nothing (except the x86 APIC-access page, `private-slot-conflict`). Over a read-only memslot
# only writes go on to the device (arm64 io_mem_abort(), x86 kvm_handle_error_pfn() ->
# emulator, loongarch64 kvm_emu_mmio_write()).
MEMSLOT_OVER_DEVICE = (
    "the memslot is mapped (kvm_set_memory_region() checks no device range), so guest "
    "{accesses} there hit memory and never reach the device"
)


def kind_of(type_name: str, handler: Handler) -> Kind:
    """The kind of a device of catalog type ``type_name`` whose accesses go to ``handler``
    (a kernel device the architecture lacks goes to the VMM: a user device)."""
    if type_name == "ucall":
        return Kind.UCALL
    if handler is Handler.USER or handler is Handler.NONE:
        return Kind.USER
    if type_name != "mmio":
        return Kind(type_name)
    return {
        Handler.KERNEL: Kind.KERNEL_MMIO,
        Handler.IOEVENTFD: Kind.IOEVENTFD,
        Handler.COALESCED: Kind.COALESCED,
    }[handler]


def overlap_outcome(later: Party, first: Party) -> PairOutcome:
    """What KVM does with two overlapping devices: the first entry of PAIRS that covers them."""
    for pair in PAIRS:
        ordered = pair.covers(later, first)
        if ordered is not None:
            refused, error, what = pair.outcome(*ordered)
            return PairOutcome(pair.entry, refused, error, what)
    raise AssertionError(f"no PAIRS entry for {later.kind} and {first.kind}")  # pragma: no cover
