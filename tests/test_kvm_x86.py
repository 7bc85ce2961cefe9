"""gpa-plan's x86_64 model against the real kernel: the same memslots, the same accesses.

Each layout's memslots are registered on a fresh VM through tests/kvm_probe.py and a 32-bit
guest performs one read, write or fetch at sample addresses of every region; the outcome must be
the one `explain` gives. Memslot rules are checked the same way against the errno of
KVM_SET_USER_MEMORY_REGION.

Left out on purpose: the APIC page 0xfee00000 (the emulator treats data accesses there as MMIO
even under a memslot, vcpu_is_mmio_gpa()), KVM's own pages the harness keeps free, and
host-dependent answers (as_id 1 needs CONFIG_KVM_SMM; the APIC-access page needs APICv/AVIC; the
MAXPHYADDR limit is the host's).
"""

from __future__ import annotations

import errno
import tempfile
import textwrap
from pathlib import Path

import pytest
from kvm_probe import RESERVED_RANGES, Slot, kvm_available, probe_access, set_memslots

from gpa_plan.arch import ARCHES
from gpa_plan.check.explain import explain_address
from gpa_plan.check.partition import Region, partition
from gpa_plan.check.run import LoadedLayout, check_file, load_layout

pytestmark = pytest.mark.skipif(
    not kvm_available(), reason="needs an x86_64 host with a usable /dev/kvm"
)

FOUR_GIB = 1 << 32
APIC_PAGE = (0xFEE0_0000, 0xFEE0_1000)
IOAPIC_PAGE = (0xFEC0_0000, 0xFEC0_1000)
# Pages the probe keeps for KVM (EPT identity map, real-mode TSS); the IOAPIC page is probed.
AVOID = [APIC_PAGE, *(r for r in RESERVED_RANGES if r != IOAPIC_PAGE)]

LAYOUTS = {
    "ram-rom-and-devices": """\
        layout: 1
        arch: x86_64
        pa_bits: 32
        memslots:
          - name: low
            base: 0x10_0000
            size: 1M
          - name: bios
            base: 0x20_0000
            size: 1M
            readonly: true
          - name: high
            base: 0x1000_0000
            size: 64K
        devices:
          - name: ioapic
            type: ioapic
          - name: hpet
            type: mmio
            base: 0xfed0_0000
            size: 1K
        """,
    "readonly-memslot-over-the-ioapic": """\
        layout: 1
        arch: x86_64
        pa_bits: 32
        memslots:
          - name: ram
            base: 0x0
            size: 1M
          - name: shadow
            base: 0xfec0_0000
            size: 4K
            readonly: true
        devices:
          - name: ioapic
            type: ioapic
        """,
    "ram-over-the-ioapic": """\
        layout: 1
        arch: x86_64
        pa_bits: 32
        memslots:
          - name: ram
            base: 0xfec0_0000
            size: 4K
        devices:
          - name: ioapic
            type: ioapic
        """,
    "no-irqchip": """\
        layout: 1
        arch: x86_64
        pa_bits: 32
        memslots:
          - name: ram
            base: 0x0
            size: 2M
          - name: rom
            base: 0xfff0_0000
            size: 1M
            readonly: true
        """,
}


def load(tmp_path: Path, text: str) -> LoadedLayout:
    path = tmp_path / "layout.yaml"
    path.write_text(textwrap.dedent(text))
    return load_layout(path)


def slots_of(loaded: LoadedLayout) -> list[Slot]:
    return [
        Slot(m.range.start, m.range.size, readonly=m.readonly, slot=m.slot, as_id=m.as_id)
        for m in loaded.resolved.memslots
    ]


def samples(region: Region) -> list[int]:
    """First, middle and last 16-byte-aligned addresses of a region, below 4 GiB and away
    from the pages left out (so a 4-byte access or the 6-byte fetch stub stays inside it)."""
    end = min(region.end, FOUR_GIB)
    picks = {region.start, (region.start + end) // 2 // 16 * 16, end - 16}
    return sorted(
        a
        for a in picks
        if region.start <= a and a + 16 <= end and not any(lo <= a < hi for lo, hi in AVOID)
    )


def cases() -> list[tuple[str, int, str]]:
    """(layout, address, region kind) for every sample address of every layout."""
    found = []
    for name, text in LAYOUTS.items():
        with tempfile.TemporaryDirectory() as tmp:
            loaded = load(Path(tmp), text)
        for region in partition(loaded.resolved, ARCHES["x86_64"]):
            for address in samples(region):
                found.append((name, address, region.kind))
    return found


CASES = cases()


@pytest.mark.parametrize("access", ["read", "write", "fetch"])
@pytest.mark.parametrize(
    ("layout", "address", "kind"),
    CASES,
    ids=[f"{name}-{address:#x}-{kind}" for name, address, kind in CASES],
)
def test_x86_outcome_matches_the_kernel(
    tmp_path: Path, layout: str, address: int, kind: str, access: str
) -> None:
    loaded = load(tmp_path, LAYOUTS[layout])
    regions = partition(loaded.resolved, ARCHES["x86_64"])
    predicted = explain_address(regions, "x86_64", address, access)
    irqchip = any(d.type.name in ("ioapic", "lapic") for d in loaded.resolved.devices)
    assert probe_access(slots_of(loaded), address, access, irqchip=irqchip) == predicted.outcome


def test_samples_cover_every_region_kind_and_the_ioapic() -> None:
    assert {kind for _, _, kind in CASES} == {"ram", "rom", "device", "unbacked"}
    addresses = {address for layout, address, _ in CASES if layout == "ram-rom-and-devices"}
    assert 0xFEC0_0000 in addresses  # IOAPIC_DEFAULT_BASE_ADDRESS
    assert 0xFEC0_0100 in addresses  # first byte past IOAPIC_MEM_LENGTH


# --- memslot rules against KVM_SET_USER_MEMORY_REGION -----------------------------------------

MEMSLOT_RULES = {
    "memslot-overlap": errno.EEXIST,
    "memslot-misaligned": errno.EINVAL,
    "memslot-out-of-range": errno.EINVAL,
    "slot-id-conflict": errno.EINVAL,
}

SLOT_CASES = {
    "clean": """\
        memslots:
          - {name: a, base: 0x0, size: 1M}
          - {name: b, base: 0x10_0000, size: 1M, readonly: true}
          - {name: c, slot: 32763, base: 0x4000_0000, size: 4K}
        """,
    # KVM keeps going after a refused slot, so no later slot overlaps a refused one here.
    "overlap": """\
        memslots:
          - {name: a, base: 0x10_0000, size: 1M}
          - {name: b, base: 0x18_0000, size: 1M}
          - {name: c, base: 0x40_0000, size: 1M}
          - {name: d, base: 0x40_1000, size: 4K}
        """,
    "misaligned-base": """\
        memslots:
          - {name: a, base: 0x10_0800, size: 1M}
        """,
    "misaligned-size": """\
        memslots:
          - {name: a, base: 0x10_0000, size: 0x1800}
        """,
    "slot-id-32764": """\
        memslots:
          - {name: a, slot: 32764, base: 0x10_0000, size: 1M}
        """,
    "same-slot-id": """\
        memslots:
          - {name: a, slot: 5, base: 0x10_0000, size: 1M}
          - {name: b, slot: 5, base: 0x40_0000, size: 1M}
        """,
    "as-id-2": """\
        memslots:
          - {name: a, as_id: 2, base: 0x10_0000, size: 1M}
        """,
    "empty": """\
        memslots:
          - {name: a, base: 0x10_0000, size: 0}
        """,
    "wraps": """\
        memslots:
          - {name: a, base: 0xffff_ffff_ffff_f000, size: 8K}
        """,
}


@pytest.mark.parametrize("case", list(SLOT_CASES))
def test_memslot_rules_agree_with_kvm_errnos(tmp_path: Path, case: str) -> None:
    path = tmp_path / "layout.yaml"
    path.write_text("layout: 1\narch: x86_64\npa_bits: 52\n" + textwrap.dedent(SLOT_CASES[case]))
    (result,) = check_file(path)
    loaded = load_layout(path)
    predicted: dict[str, int] = {}
    for finding in result.findings:
        if finding.rule in MEMSLOT_RULES:
            predicted.setdefault(finding.objects[0], MEMSLOT_RULES[finding.rule])
    names = [m.name for m in loaded.resolved.memslots]
    expected = [predicted.get(name, 0) for name in names]
    assert set_memslots(slots_of(loaded)) == expected
    if case == "clean":
        assert expected == [0, 0, 0]
    else:
        assert any(expected), "each other case has a memslot KVM refuses"
