"""Auto placement through the library: plan_layout() and allocate() on small layouts.

Every expected address below is worked out by hand from the documented order (fixed entries,
then `auto` memslots, then ucall devices, then the other devices, each in file order) and
defaults (type alignment else page_size, the whole space, `first`).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gpa_plan.check.run import check_file
from gpa_plan.layout.loader import load_text
from gpa_plan.layout.models import Layout
from gpa_plan.layout.validate import validate_layout
from gpa_plan.plan.allocate import Allocation, PlanError, allocate
from gpa_plan.plan.emit import to_yaml
from gpa_plan.plan.place import plan_layout

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def layout_of(text: str) -> Layout:
    return validate_layout(load_text(textwrap.dedent(text), "test.yaml"))


def placements(text: str) -> dict[str, int]:
    plan = plan_layout(layout_of(text))
    assert plan.errors == []
    return plan.placements


def rules_after_check(allocation: Allocation, tmp_path: Path) -> list[str]:
    out = tmp_path / "resolved.yaml"
    out.write_text(to_yaml(allocation.document(), allocation.notes, "test.yaml"))
    (result,) = check_file(out)
    return [f.rule for f in result.findings]


ARM64 = """\
    layout: 1
    arch: arm64
    pa_bits: 32
"""


# -- defaults -----------------------------------------------------------------------------


def test_vgic_v3_dist_defaults_to_its_64k_alignment() -> None:
    got = placements(
        ARM64
        + """
    devices:
      - {name: uart, type: mmio, base: 0x0, size: 4K}
      - {name: gicd, type: vgic-v3-dist, base: auto}
    """
    )
    assert got == {"gicd": 0x1_0000}


def test_mmio_device_defaults_to_page_size_alignment() -> None:
    got = placements(
        ARM64
        + """
    page_size: 64K
    devices:
      - {name: uart, type: mmio, base: 0x0, size: 4K}
      - {name: virtio, type: mmio, base: auto, size: 4K}
    """
    )
    assert got == {"virtio": 0x1_0000}


def test_default_window_is_the_whole_space_and_default_policy_is_first() -> None:
    got = placements(
        ARM64
        + """
    memslots:
      - {name: low, base: auto, size: 1M}
      - {name: high, base: auto, size: 1M, policy: last}
    """
    )
    assert got == {"low": 0x0, "high": (1 << 32) - MiB}


def test_within_and_policy_pick_the_lowest_or_highest_aligned_fit_in_the_window() -> None:
    got = placements(
        ARM64
        + """
    reserved:
      - {name: r, base: 0x1000_0000, size: 0x10_1000}
    devices:
      - {name: a, type: mmio, base: auto, size: 64K, align: 1M,
         within: [0x1000_0000, 0x2000_0000]}
      - {name: b, type: mmio, base: auto, size: 64K, align: 1M, policy: last,
         within: [0x1000_0000, 0x2000_0000]}
      - {name: c, type: mmio, base: auto, size: 64K, policy: last,
         within: [0x1000_0000, 0x1ff8_0000]}
    """
    )
    # a: 0x1010_1000 is free but not 1M-aligned; b: the top 1M-aligned start that fits;
    # c: 4K-aligned (page_size), ends exactly at the window's HIGH.
    assert got == {"a": 0x1020_0000, "b": 0x1ff0_0000, "c": 0x1ff7_0000}


def test_align_below_what_kvm_needs_is_raised_to_it(tmp_path: Path) -> None:
    layout = layout_of(
        ARM64
        + """
    memslots:
      - {name: ram, base: auto, size: 1M, align: 0x100, within: [0x100, 0x1000_0000]}
    devices:
      - {name: gicd, type: vgic-v3-dist, base: auto, align: 4K,
         within: [0x1000, 0x1000_0000]}
      - {name: gicr, type: vgic-v3-redist, base: auto, align: 4K,
         within: [0x1000, 0x1000_0000]}
    """
    )
    allocation = allocate(layout)
    # page_size for the memslot (KVM: EINVAL), 64 KiB for the vGIC frames (vgic_check_iorange).
    assert allocation.placements == {"ram": 0x1000, "gicd": 0x11_0000, "gicr": 0x12_0000}
    assert rules_after_check(allocation, tmp_path) == []


# -- slot ids -----------------------------------------------------------------------------


def test_omitted_or_auto_slot_takes_the_lowest_free_id_of_its_address_space() -> None:
    layout = layout_of(
        """\
        layout: 1
        arch: x86_64
        memslots:
          - {name: a, slot: 0, base: 0x0, size: 1M}
          - {name: b, slot: auto, base: auto, size: 1M}
          - {name: c, slot: 2, base: auto, size: 1M}
          - {name: d, base: auto, size: 1M}
          - {name: smm, as_id: 1, base: 0x0, size: 1M}
          - {name: smm2, as_id: 1, slot: auto, base: 0x10_0000, size: 1M}
        """
    )
    document = allocate(layout).document()
    slots = {m["name"]: (m.get("as_id", 0), m["slot"]) for m in document["memslots"]}
    assert slots == {
        "a": (0, 0),
        "b": (0, 1),
        "c": (0, 2),
        "d": (0, 3),
        "smm": (1, 0),
        "smm2": (1, 1),
    }


# -- what a placement avoids --------------------------------------------------------------


def test_placement_avoids_fixed_memslots_of_every_address_space_devices_and_reserved() -> None:
    got = placements(
        """\
        layout: 1
        arch: x86_64
        pa_bits: 32
        memslots:
          - {name: low, base: 0x0, size: 1M}
          - {name: smram, as_id: 1, base: 0x10_0000, size: 1M}
          - {name: ram, base: auto, size: 1M}
        devices:
          - {name: dev, type: mmio, base: 0x20_0000, size: 4K}
          - {name: next, type: mmio, base: auto, size: 4K}
        reserved:
          - {name: hole, base: 0x20_1000, size: 0x1f_f000}
        """
    )
    assert got == {"ram": 0x40_0000, "next": 0x50_0000}


@pytest.mark.parametrize(("lapic", "expected"), [(True, 0xFEE0_1000), (False, 0xFEE0_0000)])
def test_x86_apic_access_page_is_kept_free_only_with_an_in_kernel_lapic(
    lapic: bool, expected: int
) -> None:
    devices = "  - {name: lapic, type: lapic, base: 0xfed0_0000}\n" if lapic else ""
    text = f"""\
layout: 1
arch: x86_64
pa_bits: 32
devices:
{devices}  - {{name: hpet, type: mmio, base: auto, size: 1K, within: [0xfee0_0000, 0xfef0_0000]}}
"""
    assert placements(text)["hpet"] == expected


def test_memslots_then_ucall_then_devices_each_seeing_the_earlier_ones() -> None:
    got = placements(
        ARM64
        + """
    devices:
      - {name: dev, type: mmio, base: auto, size: 4K}
      - {name: ucall, type: ucall, base: auto}
    memslots:
      - {name: ram, base: auto, size: 2M}
    """
    )
    # ram first at 0; the ucall (listed after dev) at the first page past ram; dev after it.
    assert got == {"ram": 0x0, "ucall": 0x20_0000, "dev": 0x20_1000}


def test_same_layout_gives_the_same_plan_every_time() -> None:
    text = "layout: 1\narch: arm64\npa_bits: 32\ndevices:\n" + "".join(
        f"  - {{name: d{i}, type: mmio, base: auto, size: {(i % 5 + 1) * 4}K,"
        f" policy: {'last' if i % 3 else 'first'}}}\n"
        for i in range(40)
    )
    first = plan_layout(layout_of(text)).placements
    assert plan_layout(layout_of(text)).placements == first
    assert len(set(first.values())) == 40


# -- the ucall page -----------------------------------------------------------------------


def test_builtin_arm64_ucall_page_is_right_after_slot0() -> None:
    from gpa_plan.plan.allocate_file import builtin_layout

    layout = validate_layout(load_text(builtin_layout("arm64"), "builtin"))
    assert allocate(layout, ucall=True).placements == {"ucall": 0x29_1000}


def test_ucall_follows_the_lowest_numbered_read_write_memslot_of_as_id_0() -> None:
    got = placements(
        """\
        layout: 1
        arch: x86_64
        pa_bits: 36
        memslots:
          - {name: rom, slot: 0, base: 0x0, size: 1M, readonly: true}
          - {name: smm, slot: 0, as_id: 1, base: 0x200_0000, size: 1M}
          - {name: high, slot: 1, base: 0x1_0000_0000, size: 1G}
          - {name: low, slot: 2, base: 0x10_0000, size: 1M}
        devices:
          - {name: ucall, type: ucall, base: auto}
        """
    )
    assert got == {"ucall": 0x1_4000_0000}


def test_ucall_takes_the_next_free_page_when_the_spot_after_the_code_slot_is_taken() -> None:
    got = placements(
        ARM64
        + """
    memslots:
      - {name: slot0, slot: 0, base: 0x0, size: 0x29_1000}
    devices:
      - {name: uart, type: mmio, base: 0x29_1000, size: 8K}
      - {name: ucall, type: ucall, base: auto}
    """
    )
    assert got == {"ucall": 0x29_3000}


def test_ucall_takes_the_first_free_page_anywhere_when_nothing_is_free_after_the_code_slot(
) -> None:
    got = placements(
        ARM64
        + """
    memslots:
      - {name: flash, base: 0x0, size: 64M, readonly: true}
      - {name: ram, base: 0x8000_0000, size: 2G}
    devices:
      - {name: ucall, type: ucall, base: auto}
    """
    )
    assert got == {"ucall": 0x400_0000}


def test_ucall_takes_the_first_free_page_anywhere_without_a_read_write_memslot() -> None:
    got = placements(
        ARM64
        + """
    memslots:
      - {name: flash, base: 0x0, size: 64M, readonly: true}
    devices:
      - {name: ucall, type: ucall, base: auto}
    """
    )
    assert got == {"ucall": 0x400_0000}


def test_ucall_with_its_own_policy_ignores_the_selftests_convention() -> None:
    got = placements(
        ARM64
        + """
    memslots:
      - {name: slot0, base: 0x0, size: 1M}
    devices:
      - {name: ucall, type: ucall, base: auto, policy: last}
    """
    )
    assert got == {"ucall": (1 << 32) - 4 * KiB}


def test_allocate_ucall_adds_a_ucall_device_named_after_a_free_name(tmp_path: Path) -> None:
    layout = layout_of(
        ARM64
        + """
    memslots:
      - {name: ucall, base: 0x0, size: 1M}
    """
    )
    allocation = allocate(layout, ucall=True)
    assert allocation.added == [("devices", "ucall-2")]
    assert allocation.placements == {"ucall-2": 0x10_0000}
    assert allocation.notes == []
    assert rules_after_check(allocation, tmp_path) == []


def test_allocate_ucall_keeps_an_existing_fixed_ucall_device() -> None:
    layout = layout_of(
        ARM64
        + """
    devices:
      - {name: mine, type: ucall, base: 0x1000_0000}
    """
    )
    allocation = allocate(layout, ucall=True)
    assert allocation.added == []
    assert allocation.placements == {}


def test_x86_ucall_comes_with_a_port_io_note() -> None:
    layout = layout_of("layout: 1\narch: x86_64\n")
    (note,) = allocate(layout, ucall=True).notes
    assert "UCALL_PIO_PORT 0x1000" in note
    assert allocate(layout).notes == []


def test_ucall_memslot_covers_a_host_page_when_guest_pages_are_smaller(tmp_path: Path) -> None:
    layout = layout_of(
        ARM64
        + """
    page_size: 64K
    guest_page_size: 4K
    memslots:
      - {name: slot0, base: 0x0, size: 0x29_0000}
    """
    )
    allocation = allocate(layout, ucall_memslot=True)
    assert allocation.placements == {"ucall": 0x29_0000}
    memslots = allocation.document()["memslots"]
    assert memslots[-1] == {
        "name": "ucall-slot",
        "slot": 1,
        "base": 0x29_0000,
        "size": 64 * KiB,
        "readonly": True,
    }
    assert rules_after_check(allocation, tmp_path) == []


def test_no_room_raises_plan_error_naming_the_entry_and_its_path() -> None:
    layout = layout_of(
        ARM64
        + """
    devices:
      - {name: gicd, type: vgic-v3-dist, base: 0x800_0000}
      - {name: its, type: vgic-its, base: auto, within: [0x800_0000, 0x802_0000]}
    """
    )
    with pytest.raises(PlanError) as err:
        allocate(layout)
    ((message, path),) = err.value.problems
    assert path == ("devices", 1)
    assert message.startswith(
        "cannot place device 'its': no free 64 KiB-aligned range of 128 KiB in "
        "[0x0800_0000, 0x0802_0000): "
    )
