"""A layout with several mistakes reports every one of them in one run, in file order.

A wrong shape or type somewhere (a misspelt key, a value of the wrong type, a missing
`arch`) used to stop validation before the checks across fields (device types, unique
names, placement options), so fixing one mistake revealed the next.
"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from gpa_plan.cli import cli


def problems(tmp_path: Path, text: str) -> list[tuple[int, int, str]]:
    """(line, column, message) of each problem `check` prints, in its order."""
    path = tmp_path / "vm.yaml"
    path.write_text(text)
    result = CliRunner().invoke(cli, ["check", "--quiet", str(path)])
    assert result.exit_code == 1
    found = []
    for line in result.stdout.splitlines()[:-1]:
        where, message = line[len(str(path)) + 1 :].split(" error[schema] ", 1)
        row, column = where.rstrip(":").split(":")
        found.append((int(row), int(column), message))
    errors = f"{len(found)} error{'s' if len(found) != 1 else ''}"
    assert result.stdout.splitlines()[-1] == f"1 file checked: {errors}, 0 warnings"
    return found


def test_a_missing_arch_does_not_hide_an_unknown_device_type(tmp_path: Path) -> None:
    text = "layout: 1\ndevices:\n  - {name: uart, type: uatr, base: 0x0, size: 4K}\n"
    assert problems(tmp_path, text) == [
        (1, 1, "the layout has no `arch`, which is required"),
        (
            3,
            24,
            "unknown device type 'uatr' (known: vgic-v2-dist, vgic-v2-cpu, vgic-v3-dist, "
            "vgic-v3-redist, vgic-its, lapic, ioapic, riscv-aplic, riscv-imsic, "
            "loongarch-pch-pic, ucall, mmio)",
        ),
    ]


def test_an_unknown_key_and_an_unknown_type_in_one_device_are_both_reported(
    tmp_path: Path,
) -> None:
    text = "layout: 1\narch: arm64\ndevices:\n  - {name: a, type: ucal, bsae: 0x0}\n"
    found = problems(tmp_path, text)
    assert [(row, column) for row, column, _ in found] == [(4, 21), (4, 27)]
    assert found[0][2].startswith("unknown device type 'ucal'; did you mean `ucall`?")
    assert found[1][2].startswith("unknown key `bsae` in a device; did you mean `base`?")


def test_positions_stay_the_files_when_an_earlier_entry_is_left_out(tmp_path: Path) -> None:
    text = (
        "layout: 1\n"
        "arch: arm64\n"
        "devices:\n"
        "  - {name: a, type: mmio, base: 0x0, size: many}\n"  # wrong value: left out
        "  - {name: b, type: mmio, base: 0x1000, size: 4K}\n"
        "  - {name: b, type: mmio, base: 0x2000, size: 4K}\n"  # duplicate name
        "  - {name: c, type: bogus, base: 0x3000, size: 4K}\n"
    )
    found = problems(tmp_path, text)
    assert [(row, column) for row, column, _ in found] == [(4, 44), (6, 12), (7, 21)]
    assert found[1][2] == (
        "name 'b' is already used by a device; names must be unique across the file"
    )
    assert found[2][2].startswith("unknown device type 'bogus'")


def test_a_wrong_top_level_value_does_not_hide_the_entries_problems(tmp_path: Path) -> None:
    text = (
        "layout: 1\n"
        "arch: arm64\n"
        "pa_bits: forty\n"
        "memslots:\n"
        "  - {name: ram, base: 0x0, size: 1G, align: 3}\n"
    )
    assert problems(tmp_path, text) == [
        (3, 10, "`pa_bits` must be an integer, not 'forty'"),
        (5, 45, "align 0x3 is not a power of two"),
    ]


def test_a_duplicate_key_does_not_hide_the_other_mistakes(tmp_path: Path) -> None:
    text = (
        "layout: 1\n"
        "arch: arm64\n"
        "name: a\n"
        "name: b\n"
        "memslot: []\n"
        "devices:\n"
        "  - {name: u, type: bogus, base: 0, size: 4K}\n"
    )
    found = problems(tmp_path, text)
    assert [(row, column) for row, column, _ in found] == [(4, 1), (5, 1), (7, 21)]
    assert found[0][2] == (
        "duplicate key 'name' (first defined on line 3); YAML would silently keep only the last one"
    )
    assert found[1][2].startswith("unknown key `memslot` at the top level; did you mean")
    assert found[2][2].startswith("unknown device type 'bogus'")


def test_a_key_that_is_not_a_name_is_an_unknown_key(tmp_path: Path) -> None:
    found = problems(tmp_path, "layout: 1\narch: arm64\n16: x\n")
    assert found == [
        (
            3,
            1,
            "unknown key `16` at the top level (allowed: layout, name, arch, pa_bits, "
            "page_size, guest_page_size, memslots, devices, reserved, ports, kvm_private, "
            "observed)",
        )
    ]
