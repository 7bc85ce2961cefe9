"""Each finding rule on small layouts: its slug, severity, position and what the message says.

Positions are 1-based (line, column) of the value the finding is about, worked out from the
layout text in each test. Kernel facts (errnos, limits) are those of docs/kernel.md, each
with the kernel function it comes from.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from stable_rules import STABLE_RULES

from gpa_plan.arch import ARCHES
from gpa_plan.check.findings import NOTE, Finding
from gpa_plan.check.rules import RULES
from gpa_plan.check.run import check_file

LAYOUTS = Path(__file__).parent / "data" / "layouts"


# A lone vGIC frame is how the tests here put a kernel device somewhere; the frames such a vGIC
# lacks (`vgic-incomplete`) are tests/test_vgic_rules.py's.
LEFT_TO_OTHER_TESTS = frozenset({"vgic-incomplete"})
# What some hosts refuse, said in notes without a host profile: tests/test_host_profile.py's.
HOST_NOTES = "host-limits"


def findings(tmp_path: Path, text: str, *arches: str) -> list[Finding]:
    path = tmp_path / "layout.yaml"
    path.write_text(textwrap.dedent(text))
    results = check_file(path, arches)
    for result in results:
        assert result.valid, result.findings
    return [
        f
        for r in results
        for f in r.findings
        if f.rule not in LEFT_TO_OTHER_TESTS and not (f.rule == HOST_NOTES and f.severity == NOTE)
    ]


def where(found: list[Finding]) -> list[tuple[str, str, int, int, tuple[str, ...]]]:
    return [(f.rule, f.severity, f.line, f.column, f.objects) for f in found]


def says(finding: Finding, *words: str) -> None:
    for word in words:
        assert word in finding.message, (word, finding.message)


@pytest.mark.parametrize(
    "name", ["small-arm64.yaml", "small-x86_64.yaml", "../../../layouts/selftests-x86_64.yaml"]
)
def test_clean_layout_has_no_finding(name: str) -> None:
    (result,) = check_file(LAYOUTS / name)
    assert result.valid
    # At most the notes of what some hosts refuse (an SMM memslot), which no layout can avoid.
    assert {(f.rule, f.severity) for f in result.findings} <= {(HOST_NOTES, NOTE)}


def test_every_registered_rule_has_a_severity_summary_and_description() -> None:
    assert set(STABLE_RULES) <= set(RULES)
    for rule in RULES.values():
        assert rule.severity in ("error", "warning")
        assert set(rule.severities) <= {"error", "warning", "note"}
        assert rule.summary and rule.description


def test_every_finding_takes_a_severity_its_rule_declares() -> None:
    # `gpa-plan rules` and SARIF's rule list say what severities a rule's findings take.
    root = Path(__file__).parent.parent
    corpus = sorted({*root.glob("layouts/**/*.yaml"), *root.glob("tests/data/**/*.yaml")})
    seen: set[tuple[str, str]] = set()
    for path in corpus:
        for arch in ARCHES:
            for result in check_file(path, [arch]):
                seen |= {(f.rule, f.severity) for f in result.findings}
    # the corpus reaches every second severity a rule declares
    assert {("device-shadowed", "warning"), ("device-overlap", "warning")} <= seen
    assert {(rule, sev) for rule, sev in seen if sev not in RULES[rule].severities} == set()


def test_rules_lists_every_severity_a_rule_gives_and_when() -> None:
    from click.testing import CliRunner

    from gpa_plan.cli import cli

    listed = CliRunner().invoke(cli, ["rules"]).stdout.splitlines()
    assert (
        "device-shadowed (error; warning when the memslot is read-only: the device still gets "
        "the writes): a device range is backed by a read-write memslot, so the device never "
        "sees an access"
    ) in listed
    assert (
        "device-overlap (error; warning when KVM accepts both and each still answers part of "
        "the accesses (an ioeventfd or coalesced zone that takes the writes over another "
        "device)): two devices claim the same address: KVM refuses one, or one never sees the "
        "accesses"
    ) in listed


def test_a_rule_that_says_what_several_architectures_do_says_it_for_every_one() -> None:
    # `gpa-plan rules` words a rule once for every architecture: one that tells arm64 from x86
    # and is silent on the others leaves a riscv64 or loongarch64 user guessing.
    import re

    from click.testing import CliRunner

    from gpa_plan.cli import cli

    listed = CliRunner().invoke(cli, ["rules"]).stdout
    mentions = {
        arch: re.compile(rf"\b{re.sub(r'_?64$', '', arch)}(?:_?64)?\b") for arch in ARCHES
    }
    partial = {}
    for text in re.split(r"\n(?=\S)", listed):
        named = [arch for arch, pattern in mentions.items() if pattern.search(text)]
        if 1 < len(named) < len(ARCHES):
            partial[text.split()[0]] = named
    assert partial == {}


# --- memslot-overlap ------------------------------------------------------------------------


def test_overlapping_memslots_are_refused_with_eexist(tmp_path: Path) -> None:
    found = findings(
        tmp_path,
        """\
        layout: 1
        arch: arm64
        memslots:
          - name: low
            base: 0x4000_0000
            size: 1G
          - name: high
            base: 0x7000_0000
            size: 1G
        """,
    )
    assert where(found) == [("memslot-overlap", "error", 8, 11, ("high", "low"))]
    says(found[0], "EEXIST", "[0x7000_0000, 0x8000_0000)", "'low'", "'high'")


def test_memslots_that_only_touch_do_not_overlap(tmp_path: Path) -> None:
    found = findings(
        tmp_path,
        """\
        layout: 1
        arch: arm64
        memslots:
          - name: low
            base: 0x4000_0000
            size: 1G
          - name: high
            base: 0x8000_0000
            size: 1G
        """,
    )
    assert found == []


def test_smm_memslot_may_overlap_address_space_0_on_x86(tmp_path: Path) -> None:
    text = """\
        layout: 1
        arch: x86_64
        memslots:
          - name: ram
            base: 0x0
            size: 1M
          - name: smram
            as_id: 1
            base: 0xa_0000
            size: 128K
          - name: smram-alias
            as_id: 1
            base: 0xb_0000
            size: 128K
        """
    found = findings(tmp_path, text)
    # Only the two as_id 1 slots collide with each other.
    assert where(found) == [("memslot-overlap", "error", 13, 11, ("smram-alias", "smram"))]
    says(found[0], "as_id 1")


# --- memslot-misaligned -----------------------------------------------------------------------


def test_misaligned_base_and_size_are_each_an_einval(tmp_path: Path) -> None:
    found = findings(
        tmp_path,
        """\
        layout: 1
        arch: x86_64
        memslots:
          - name: ram
            base: 0x10_0800
            size: 0x1800
        """,
    )
    assert where(found) == [
        ("memslot-misaligned", "error", 5, 11, ("ram",)),
        ("memslot-misaligned", "error", 6, 11, ("ram",)),
    ]
    says(found[0], "base 0x0010_0800", "EINVAL", "down to 0x0010_0000 (or up to 0x0010_1000)")
    says(found[1], "size 0x0000_1800", "EINVAL", "up to 0x0000_2000 (or down to 0x0000_1000)")


def test_alignment_follows_the_host_page_size(tmp_path: Path) -> None:
    found = findings(
        tmp_path,
        """\
        layout: 1
        arch: arm64
        page_size: 64K
        memslots:
          - name: aligned
            base: 0x1_0000
            size: 64K
          - name: four-k
            base: 0x10_1000
            size: 64K
        """,
    )
    assert where(found) == [("memslot-misaligned", "error", 9, 11, ("four-k",))]
    says(found[0], "64 KiB page size")


# --- memslot-out-of-range ---------------------------------------------------------------------


def test_empty_memslot_would_delete_a_slot(tmp_path: Path) -> None:
    found = findings(
        tmp_path,
        """\
        layout: 1
        arch: arm64
        memslots:
          - name: nothing
            base: 0x4000_0000
            size: 0
        """,
    )
    assert where(found) == [("memslot-out-of-range", "error", 6, 11, ("nothing",))]
    says(found[0], "size 0", "delete")


@pytest.mark.parametrize("size", ["8K", "4K"], ids=["past-2**64", "ending-at-2**64"])
def test_memslot_that_wraps_past_2_to_the_64_is_einval(tmp_path: Path, size: str) -> None:
    # kvm_set_memory_region(): base + size < base in u64; ending exactly at 2**64 wraps to 0.
    found = findings(
        tmp_path,
        f"""\
        layout: 1
        arch: x86_64
        pa_bits: 52
        memslots:
          - name: top
            base: 0xffff_ffff_ffff_f000
            size: {size}
        """,
    )
    assert where(found) == [("memslot-out-of-range", "error", 7, 11, ("top",))]
    says(found[0], "wraps", "EINVAL")


def test_memslot_beyond_the_ipa_size_is_efault_on_arm64(tmp_path: Path) -> None:
    found = findings(
        tmp_path,
        """\
        layout: 1
        arch: arm64
        pa_bits: 32
        memslots:
          - name: ram
            base: 0xffff_f000
            size: 8K
        """,
    )
    assert where(found) == [("memslot-out-of-range", "error", 6, 11, ("ram",))]
    says(found[0], "32-bit IPA size", "EFAULT", "kvm_arch_prepare_memory_region")


def test_memslot_beyond_guest_maxphyaddr_is_unreachable_on_x86(tmp_path: Path) -> None:
    # The x86 memslot check is against the host's MAXPHYADDR: beyond the guest's the slot is
    # accepted but the guest cannot reach it (x86 kvm_arch_prepare_memory_region() checks
    # kvm_mmu_max_gfn(), the host's limit; seen so on a real host, docs/kernel.md).
    found = findings(
        tmp_path,
        """\
        layout: 1
        arch: x86_64
        pa_bits: 36
        memslots:
          - name: ram
            base: 0xf_ffff_f000
            size: 8K
        """,
    )
    assert where(found) == [("memslot-out-of-range", "error", 6, 11, ("ram",))]
    says(found[0], "36-bit MAXPHYADDR", "cannot reach", "host's MAXPHYADDR")


def test_memslot_of_more_than_kvm_mem_max_nr_pages_is_einval(tmp_path: Path) -> None:
    # KVM_MEM_MAX_NR_PAGES = 2**31 - 1: 8 TiB of 4 KiB pages is one page too many.
    text = """\
        layout: 1
        arch: x86_64
        memslots:
          - name: huge
            base: 0x1_0000_0000
            size: {size}
        """
    found = findings(tmp_path, text.format(size="8T"))
    assert where(found) == [("memslot-out-of-range", "error", 6, 11, ("huge",))]
    says(found[0], "2147483648 pages", "KVM_MEM_MAX_NR_PAGES")
    assert findings(tmp_path, text.format(size=hex((2**31 - 1) * 4096))) == []


# --- slot-id-conflict --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "last_id"),
    [("x86_64", 32763), ("arm64", 32766)],
)
def test_slot_ids_stop_below_kvm_user_mem_slots(tmp_path: Path, arch: str, last_id: int) -> None:
    text = """\
        layout: 1
        arch: {arch}
        memslots:
          - name: ram
            slot: {slot}
            base: 0x0
            size: 1M
        """
    assert findings(tmp_path, text.format(arch=arch, slot=last_id)) == []
    found = findings(tmp_path, text.format(arch=arch, slot=last_id + 1))
    assert where(found) == [("slot-id-conflict", "error", 5, 11, ("ram",))]
    says(found[0], f"slot id {last_id + 1}", "KVM_USER_MEM_SLOTS", "EINVAL")


def test_two_memslots_with_one_slot_id_conflict(tmp_path: Path) -> None:
    found = findings(
        tmp_path,
        """\
        layout: 1
        arch: x86_64
        memslots:
          - name: a
            slot: 3
            base: 0x0
            size: 1M
          - name: b
            slot: 3
            base: 0x1000_0000
            size: 1M
          - name: smm
            slot: 3
            as_id: 1
            base: 0x0
            size: 1M
        """,
    )
    # The as_id 1 slot 3 is a different slot.
    assert where(found) == [("slot-id-conflict", "error", 9, 11, ("b", "a"))]
    says(found[0], "reuses slot 3 of as_id 0")


def test_as_id_1_exists_only_on_x86(tmp_path: Path) -> None:
    text = """\
        layout: 1
        arch: arm64
        memslots:
          - name: smm
            as_id: 1
            base: 0x0
            size: 1M
        """
    found = findings(tmp_path, text)
    assert where(found) == [("slot-id-conflict", "error", 5, 12, ("smm",))]
    says(found[0], "as_id 1", "only 0", "EINVAL")
    assert findings(tmp_path, text, "x86_64") == []
    found = findings(tmp_path, text.replace("as_id: 1", "as_id: 2"), "x86_64")
    assert where(found) == [("slot-id-conflict", "error", 5, 12, ("smm",))]
    says(found[0], "0 or 1 (SMM)")


def test_automatic_slot_ids_skip_the_explicit_ones(tmp_path: Path) -> None:
    from gpa_plan.check.run import load_layout

    path = tmp_path / "layout.yaml"
    path.write_text(
        "layout: 1\narch: x86_64\nmemslots:\n"
        "  - {name: a, base: 0x0, size: 4K}\n"
        "  - {name: b, slot: 1, base: 0x1000, size: 4K}\n"
        "  - {name: c, base: 0x2000, size: 4K}\n"
        "  - {name: d, slot: auto, as_id: 1, base: 0x2000, size: 4K}\n"
    )
    slots = [(m.name, m.as_id, m.slot) for m in load_layout(path).resolved.memslots]
    assert slots == [("a", 0, 0), ("b", 0, 1), ("c", 0, 2), ("d", 1, 0)]


# --- too-many-memslots ---------------------------------------------------------------------------


def test_more_memslots_than_x86_allows_are_refused_from_the_first_extra(tmp_path: Path) -> None:
    # KVM_USER_MEM_SLOTS on x86 is 32764: the 32765th memslot has no id left. One flow mapping
    # per line: memslot k is on line 4 + k, its mapping opens at column 5.
    lines = ["layout: 1", "arch: x86_64", "memslots:"]
    lines += [f"  - {{name: m{k}, base: {k * 4096:#x}, size: 4K}}" for k in range(32765)]
    path = tmp_path / "many.yaml"
    path.write_text("\n".join(lines) + "\n")
    (result,) = check_file(path)
    assert where(list(result.findings)) == [
        ("too-many-memslots", "error", 4 + 32764, 5, ("m32764",))
    ]
    says(result.findings[0], "32765 memslots", "allows 32764", "'m32764'")


# --- private-slot-conflict ----------------------------------------------------------------------


def test_memslot_over_the_apic_access_page_conflicts_with_the_in_kernel_lapic(
    tmp_path: Path,
) -> None:
    text = """\
        layout: 1
        arch: x86_64
        memslots:
          - name: below-4g
            base: 0xc000_0000
            size: 0x3f00_0000
        devices:
          - name: lapic
            type: lapic
            base: 0xfee0_0000
        """
    found = [f for f in findings(tmp_path, text) if f.rule == "private-slot-conflict"]
    assert where(found) == [("private-slot-conflict", "error", 5, 11, ("below-4g",))]
    says(found[0], "APIC-access page", "0xfee0_0000", "EEXIST")
    # No in-kernel LAPIC, no APIC-access page.
    without_lapic = text.split("devices:")[0]
    assert findings(tmp_path, without_lapic) == []


# --- device-shadowed ----------------------------------------------------------------------------

SHADOW = """\
    layout: 1
    arch: arm64
    pa_bits: 32
    memslots:
      - name: ram
        base: 0x4000_0000
        size: 1G
      - name: flash
        base: 0x0
        size: 64M
        readonly: true
    devices:
      - name: dev
        type: {type}
        base: {base}
    """


def test_device_inside_read_write_memory_is_shadowed_error(tmp_path: Path) -> None:
    found = findings(tmp_path, SHADOW.format(type="vgic-v3-dist", base="0x4000_0000"))
    assert where(found) == [("device-shadowed", "error", 15, 11, ("dev", "ram"))]
    says(found[0], "read-write memory", "memslot 'ram'", "never reach the device")


def test_device_inside_read_only_memory_is_shadowed_warning(tmp_path: Path) -> None:
    found = findings(tmp_path, SHADOW.format(type="vgic-v3-dist", base="0x0100_0000"))
    assert where(found) == [("device-shadowed", "warning", 15, 11, ("dev", "flash"))]
    says(found[0], "read-only memslot", "only writes reach the device")


def test_ucall_inside_read_only_memory_is_the_planned_carve_out(tmp_path: Path) -> None:
    assert findings(tmp_path, SHADOW.format(type="ucall", base="0x0100_0000")) == []


def test_device_partly_over_ram_is_shadowed(tmp_path: Path) -> None:
    found = findings(tmp_path, SHADOW.format(type="vgic-its", base="0x3fff_0000"))
    assert where(found) == [("device-shadowed", "error", 15, 11, ("dev", "ram"))]
    says(found[0], "[0x4000_0000, 0x4001_0000)")


# --- device-overlap -----------------------------------------------------------------------------

TWO_DEVICES = """\
    layout: 1
    arch: arm64
    devices:
      - name: first
        type: mmio
        base: 0x0900_0000
        size: 8K
      - name: second
        type: mmio
        base: {base}
        size: 4K
    """


def test_devices_claiming_the_same_address_overlap(tmp_path: Path) -> None:
    found = findings(tmp_path, TWO_DEVICES.format(base="0x0900_1000"))
    assert where(found) == [("device-overlap", "error", 10, 11, ("second", "first"))]
    says(found[0], "at [0x0900_1000, 0x0900_2000)")


def test_devices_that_only_touch_do_not_overlap(tmp_path: Path) -> None:
    assert findings(tmp_path, TWO_DEVICES.format(base="0x0900_2000")) == []


# --- device-misaligned --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_name", "base", "align"),
    [
        ("vgic-v3-dist", "0x0800_1000", "64 KiB"),
        ("vgic-v3-redist", "0x080a_8000", "64 KiB"),
        ("vgic-its", "0x0808_8000", "64 KiB"),
        ("vgic-v2-dist", "0x0800_0800", "4 KiB"),
        ("ucall", "0x1000_0800", "4 KiB"),
    ],
)
def test_device_base_must_keep_its_type_alignment(
    tmp_path: Path, type_name: str, base: str, align: str
) -> None:
    found = findings(
        tmp_path,
        f"""\
        layout: 1
        arch: arm64
        devices:
          - name: dev
            type: {type_name}
            base: {base}
        """,
    )
    assert where(found) == [("device-misaligned", "error", 6, 11, ("dev",))]
    says(found[0], f"not {align}-aligned")


def test_vgic_v3_distributor_alignment_names_kvm_api_and_both_neighbours(tmp_path: Path) -> None:
    found = findings(
        tmp_path,
        """\
        layout: 1
        arch: arm64
        devices:
          - name: gicd
            type: vgic-v3-dist
            base: 0x0800_1000
        """,
    )
    says(found[0], "KVM_SET_DEVICE_ATTR", "EINVAL", "use 0x0800_0000 or 0x0801_0000")


@pytest.mark.parametrize(
    ("type_name", "base"),
    [("vgic-v3-redist", "0x080a_0000"), ("vgic-v2-dist", "0x0800_1000"), ("ioapic", "0xfec0_0040")],
)
def test_aligned_device_bases_pass(tmp_path: Path, type_name: str, base: str) -> None:
    arch = "x86_64" if type_name == "ioapic" else "arm64"
    text = f"layout: 1\narch: {arch}\ndevices:\n  - {{name: d, type: {type_name}, base: {base}}}\n"
    assert findings(tmp_path, text) == []


# --- device-out-of-range ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "words"),
    [
        (
            "{name: top, type: mmio, base: 0xffff_f000, size: 8K}",
            ("32-bit IPA size", "cannot reach"),
        ),
        ("{name: top, type: vgic-its, base: 0xffff_0000}", ("E2BIG",)),
    ],
)
def test_device_ending_beyond_pa_bits_is_out_of_range(
    tmp_path: Path, device: str, words: tuple[str, ...]
) -> None:
    text = f"layout: 1\narch: arm64\npa_bits: 32\ndevices:\n  - {device}\n"
    found = findings(tmp_path, text)
    column = len("  - ") + device.index("base: ") + len("base: ") + 1
    assert where(found) == [("device-out-of-range", "error", 5, column, ("top",))]
    says(found[0], *words)


def test_device_ending_exactly_at_2_to_the_pa_bits_is_in_range(tmp_path: Path) -> None:
    text = "layout: 1\narch: arm64\npa_bits: 32\ndevices:\n"
    text += "  - {name: top, type: mmio, base: 0xffff_f000, size: 4K}\n"
    assert findings(tmp_path, text) == []


# --- device-wrong-arch --------------------------------------------------------------------------


def test_vgic_of_an_arm64_layout_is_left_out_under_x86_with_one_note(tmp_path: Path) -> None:
    text = """\
        layout: 1
        arch: arm64
        devices:
          - name: gicd
            type: vgic-v3-dist
            base: 0x0800_0000
          - name: gicr
            type: vgic-v3-redist
            base: 0x080a_0000
        """
    assert findings(tmp_path, text) == []
    found = findings(tmp_path, text, "x86_64")
    # One note at the layout's `arch` (line 2, column 7), naming both devices.
    assert where(found) == [("device-wrong-arch", "note", 2, 7, ("gicd", "gicr"))]
    says(found[0], "checked as x86_64", "vgic-v3-dist 'gicd', vgic-v3-redist 'gicr' are left out")


def test_vgic_in_an_x86_64_layout_does_not_exist(tmp_path: Path) -> None:
    text = """\
        layout: 1
        arch: x86_64
        devices:
          - name: gicd
            type: vgic-v3-dist
            base: 0x0800_0000
        """
    # The layout's own arch lacks it: an error under whichever arch it is checked, and nothing
    # to leave out under arm64.
    found = findings(tmp_path, text, "x86_64", "arm64")
    assert where(found) == [("device-wrong-arch", "error", 5, 11, ("gicd",))] * 2
    says(found[0], "no vgic-v3-dist on x86_64", "exit to the VMM")


def test_lapic_of_an_x86_64_layout_is_left_out_under_arm64(tmp_path: Path) -> None:
    text = "layout: 1\narch: x86_64\ndevices:\n  - name: lapic\n    type: lapic\n"
    found = findings(tmp_path, text, "x86_64", "arm64")
    assert where(found) == [("device-wrong-arch", "note", 2, 7, ("lapic",))]
    says(found[0], "lapic 'lapic' is left out", "on arm64")


def test_lapic_in_an_arm64_layout_does_not_exist(tmp_path: Path) -> None:
    text = "layout: 1\narch: arm64\ndevices:\n  - name: lapic\n    type: lapic\n"
    found = findings(tmp_path, text)
    assert where(found) == [("device-wrong-arch", "error", 5, 11, ("lapic",))]


def test_a_note_names_at_most_ten_devices_and_counts_the_rest(tmp_path: Path) -> None:
    its = "".join(
        f"  - {{name: its{i}, type: vgic-its, base: {0x0800_0000 + i * 0x2_0000:#x}}}\n"
        for i in range(12)
    )
    found = findings(tmp_path, f"layout: 1\narch: arm64\ndevices:\n{its}", "x86_64")
    (note,) = found
    assert note.objects == tuple(f"its{i}" for i in range(10))
    says(note, "vgic-its 'its9' and 2 more are left out")


# --- reserved-overlap ---------------------------------------------------------------------------


def test_memslot_and_device_in_a_reserved_range_intrude(tmp_path: Path) -> None:
    found = findings(
        tmp_path,
        """\
        layout: 1
        arch: x86_64
        memslots:
          - name: ram
            base: 0x0
            size: 0xc000_1000
        devices:
          - name: bar
            type: mmio
            base: 0xd000_0000
            size: 1M
          - name: beside
            type: mmio
            base: 0xbfff_0000
            size: 0x1_0000
        reserved:
          - name: pci-hole
            base: 0xc000_0000
            size: 1G
        """,
    )
    assert where([f for f in found if f.rule == "reserved-overlap"]) == [
        ("reserved-overlap", "error", 5, 11, ("ram", "pci-hole")),
        ("reserved-overlap", "error", 10, 11, ("bar", "pci-hole")),
    ]
    says(found[0], "intrudes into reserved range 'pci-hole'", "at [0xc000_0000, 0xc000_1000)")


# --- ucall-not-io -------------------------------------------------------------------------------

UCALL = """\
    layout: 1
    arch: arm64
    pa_bits: 32
    memslots:
      - name: ram
        base: 0x0
        size: 1M
        readonly: {readonly}
    devices:
      - name: doorbell
        type: mmio
        base: 0x1000_0000
        size: 4K
        handler: {handler}
      - name: ucall
        type: ucall
        base: {base}
    """


@pytest.mark.parametrize(
    ("readonly", "handler", "base", "words"),
    [
        ("false", "user", "0x2000", "land in guest memory and never exit"),
        ("false", "kernel", "0x1000_0000", "answered by an in-kernel device"),
        ("false", "ioeventfd", "0x1000_0000", "answered by an in-kernel device"),
        ("false", "coalesced", "0x1000_0000", "buffered in the coalesced-MMIO ring"),
        ("true", "kernel", "0x1000_0000", "answered by an in-kernel device"),
    ],
)
def test_ucall_write_that_would_not_exit_is_an_error(
    tmp_path: Path, readonly: str, handler: str, base: str, words: str
) -> None:
    found = findings(tmp_path, UCALL.format(readonly=readonly, handler=handler, base=base))
    ucall = [f for f in found if f.rule == "ucall-not-io"]
    assert len(ucall) == 1
    assert (ucall[0].severity, ucall[0].line, ucall[0].column) == ("error", 17, 11)
    says(ucall[0], words)


@pytest.mark.parametrize(
    ("readonly", "base"),
    [("false", "0x2000_0000"), ("true", "0x2000")],
    ids=["unbacked", "read-only-memslot"],
)
def test_ucall_in_unbacked_space_or_read_only_memory_exits(
    tmp_path: Path, readonly: str, base: str
) -> None:
    assert findings(tmp_path, UCALL.format(readonly=readonly, handler="user", base=base)) == []


# --- iobus-full ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "expected"), [(1000, 0), (1001, 1)])
def test_more_than_1000_io_bus_devices_do_not_fit(
    tmp_path: Path, count: int, expected: int
) -> None:
    # NR_IOBUS_DEVS = 1000 per bus. Device k is on line 4 + k; user devices do not count.
    lines = ["layout: 1", "arch: arm64", "devices:"]
    lines += [
        f"  - {{name: d{k}, type: mmio, base: {k * 4096:#x}, size: 4K, handler: coalesced}}"
        for k in range(count)
    ]
    lines += [
        f"  - {{name: u{k}, type: mmio, base: {(k + 2000) * 4096:#x}, size: 4K}}" for k in range(50)
    ]
    path = tmp_path / "bus.yaml"
    path.write_text("\n".join(lines) + "\n")
    (result,) = check_file(path)
    found = [f for f in result.findings if f.rule == "iobus-full"]
    assert where(found) == [("iobus-full", "error", 4 + 1000, 5, ("d1000",))] * expected
    if found:
        says(found[0], "NR_IOBUS_DEVS", "ENOSPC")


def test_ioeventfds_do_not_fill_the_io_bus_but_are_refused_once_it_is_full(
    tmp_path: Path,
) -> None:
    # Linux 7.2.13 kvm_io_bus_register_dev(): ENOSPC when dev_count - ioeventfd_count reaches
    # NR_IOBUS_DEVS. 1500 ioeventfds, then 1000 kernel devices fit; the ioeventfd after them
    # (line 4 + 2500) does not.
    lines = ["layout: 1", "arch: arm64", "devices:"]
    lines += [
        f"  - {{name: e{k}, type: mmio, base: {k * 4096:#x}, size: 4, handler: ioeventfd}}"
        for k in range(1500)
    ]
    lines += [
        f"  - {{name: d{k}, type: mmio, base: {(k + 2000) * 4096:#x}, size: 4K, handler: kernel}}"
        for k in range(1000)
    ]
    lines.append("  - {name: late, type: mmio, base: 0x1000_0000, size: 4, handler: ioeventfd}")
    path = tmp_path / "bus.yaml"
    path.write_text("\n".join(lines) + "\n")
    (result,) = check_file(path)
    found = [f for f in result.findings if f.rule == "iobus-full"]
    assert where(found) == [("iobus-full", "error", 4 + 2500, 5, ("late",))]


def test_each_redistributor_is_one_io_bus_device(tmp_path: Path) -> None:
    lines = ["layout: 1", "arch: arm64", "devices:"]
    lines += [
        f"  - {{name: d{k}, type: mmio, base: {k * 4096:#x}, size: 4K, handler: kernel}}"
        for k in range(998)
    ]
    lines.append("  - {name: gicr, type: vgic-v3-redist, base: 0x1000_0000, vcpus: 3}")
    path = tmp_path / "bus.yaml"
    path.write_text("\n".join(lines) + "\n")
    (result,) = check_file(path)
    found = [f for f in result.findings if f.rule not in LEFT_TO_OTHER_TESTS]
    assert where(found) == [("iobus-full", "error", 4 + 998, 5, ("gicr",))]


# --- vgic-conflict ------------------------------------------------------------------------------


def test_gicv2_and_gicv3_frames_cannot_be_mixed(tmp_path: Path) -> None:
    found = findings(
        tmp_path,
        """\
        layout: 1
        arch: arm64
        devices:
          - name: gicd
            type: vgic-v3-dist
            base: 0x0800_0000
          - name: gicc
            type: vgic-v2-cpu
            base: 0x0801_0000
        """,
    )
    assert where(found) == [("vgic-conflict", "error", 8, 11, ("gicc", "gicd"))]
    says(found[0], "GICv2 frame", "'gicd' is GICv3", "EEXIST")


def test_one_vgic_frame_given_twice_conflicts(tmp_path: Path) -> None:
    found = findings(
        tmp_path,
        """\
        layout: 1
        arch: arm64
        devices:
          - name: gicd
            type: vgic-v3-dist
            base: 0x0800_0000
          - name: gicd-again
            type: vgic-v3-dist
            base: 0x0900_0000
        """,
    )
    assert where(found) == [("vgic-conflict", "error", 9, 11, ("gicd-again", "gicd"))]
    says(found[0], "second address", "EEXIST")


# --- arch-limits --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "extra", "line", "words"),
    [
        ("arm64", "pa_bits: 31", 3, "pa_bits 31"),
        ("arm64", "pa_bits: 53", 3, "pa_bits 53"),
        ("x86_64", "page_size: 16K", 3, "page_size 16 KiB"),
        ("arm64", "page_size: 8K", 3, "page_size 8 KiB"),
    ],
)
def test_arch_limits_on_pa_bits_and_page_size(
    tmp_path: Path, arch: str, extra: str, line: int, words: str
) -> None:
    found = findings(tmp_path, f"layout: 1\narch: {arch}\n{extra}\n")
    column = len(extra.split(":")[0]) + 3
    assert where(found) == [("arch-limits", "error", line, column, ())]
    says(found[0], words)


@pytest.mark.parametrize(
    ("arch", "extra"),
    [("arm64", "pa_bits: 32"), ("arm64", "pa_bits: 52"), ("arm64", "page_size: 64K")],
)
def test_values_the_arch_supports_pass(tmp_path: Path, arch: str, extra: str) -> None:
    assert findings(tmp_path, f"layout: 1\narch: {arch}\n{extra}\n") == []


# --- no-room ------------------------------------------------------------------------------------


def test_auto_entry_that_cannot_fit_its_window_has_no_room(tmp_path: Path) -> None:
    found = findings(
        tmp_path,
        """\
        layout: 1
        arch: arm64
        pa_bits: 32
        memslots:
          - name: ram
            base: auto
            size: 2G
            within: [0x0, 0x4000_0000]
        """,
    )
    assert where(found) == [("no-room", "error", 6, 11, ())]
    says(found[0], "cannot place memslot 'ram'")
