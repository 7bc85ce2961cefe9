"""`gpa-plan check --elf`: guest programs checked against a layout.

The committed tests/data/elf/tiny-aarch64.elf (built by make_tiny_elf.py next to it) always
runs; x86_64 programs are linked here with the system C compiler and a linker script, and
those tests skip without one.

tiny-aarch64.elf:
    segment 0  RX  p_vaddr 0x0040_0000  p_paddr 0x4000_0000  memsz 0xb8
    segment 1  RW  p_vaddr 0x0041_00b8  p_paddr 0x4001_00b8  memsz 0x2000
"""

from __future__ import annotations

import json
import platform
import runpy
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from gpa_plan.arch import ARCHES
from gpa_plan.check.findings import Finding
from gpa_plan.check.partition import partition
from gpa_plan.check.run import CheckResult, check_file, load_layout
from gpa_plan.cli import cli
from gpa_plan.elf.placement import SegmentPlacement, segment_placements
from gpa_plan.elf.program import (
    Program,
    ProgramError,
    Segment,
    load_program,
    load_programs,
)

ELF_DATA = Path(__file__).parent / "data" / "elf"
TINY = ELF_DATA / "tiny-aarch64.elf"
ELF_RULES = (
    "elf-unreadable",
    "elf-wrong-arch",
    "elf-unbacked",
    "elf-readonly",
    "elf-over-device",
    "elf-va-collision",
    "elf-code-slot-too-small",
    "elf-not-loadable",
)

# QEMU-virt-like: flash (read-only) at 0, RAM at 1 GiB; both tiny segments land in RAM.
ARM64_VIRT = """
layout: 1
arch: arm64
memslots:
  - name: flash0
    base: 0x0
    size: 64M
    readonly: true
  - name: ram
    base: 0x4000_0000
    size: 1G
devices:
  - name: gicd
    type: vgic-v3-dist
    base: 0x0800_0000
  - name: gicr
    type: vgic-v3-redist
    base: 0x080a_0000
  - name: uart0
    type: mmio
    base: 0x0900_0000
    size: 4K
"""

# The KVM selftests default VM: slot 0 at GPA 0, identity-mapped vGIC frames.
ARM64_SELFTESTS = """
layout: 1
arch: arm64
memslots:
  - name: slot0
    slot: 0
    base: 0x0
    size: 0x29_1000
devices:
  - name: gicd
    type: vgic-v3-dist
    base: 0x0802_0000
    identity_map: true
  - name: gicr
    type: vgic-v3-redist
    base: 0x0803_0000
    vcpus: 1
    identity_map: true
"""


def write_layout(tmp_path: Path, text: str, name: str = "layout.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def arm64_layout(tmp_path: Path, memslots: str, devices: str = "") -> Path:
    """An arm64 layout from indented `memslots:` (and `devices:`) entries."""
    text = "layout: 1\narch: arm64\nmemslots:\n" + textwrap.dedent(memslots)
    if devices:
        text += "devices:\n" + textwrap.dedent(devices)
    return write_layout(tmp_path, text)


def run_check(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["check", *(str(a) for a in args)])


def check_json(*args: str | Path) -> dict[str, Any]:
    result = run_check(*args, "--format", "json")
    document: dict[str, Any] = json.loads(result.output)
    return document


def check_one(layout: Path, *elf: Path, mode: str = "physical", arch: str = "") -> CheckResult:
    results = check_file(
        layout, (arch,) if arch else (), programs=load_programs(elf), elf_mode=mode
    )
    assert len(results) == 1
    return results[0]


def elf_findings(result: CheckResult, rule: str | None = None) -> list[Finding]:
    return [f for f in result.findings if f.rule in ELF_RULES and (rule is None or f.rule == rule)]


# -- the committed ELF and its reader ----------------------------------------------------


def test_committed_tiny_elf_is_what_its_generator_writes() -> None:
    build = runpy.run_path(str(ELF_DATA / "make_tiny_elf.py"))["build"]
    assert TINY.read_bytes() == build()


def test_load_program_reads_machine_and_pt_load_segments() -> None:
    program = load_program(TINY)
    assert program == Program(
        str(TINY),
        "EM_AARCH64",
        (
            Segment(0, 0x40_0000, 0x4000_0000, 0xB8, 0xB8, 0x5),
            Segment(1, 0x41_00B8, 0x4001_00B8, 0x2000, 8, 0x6),
        ),
    )
    assert [s.flag_letters for s in program.segments] == ["RX", "RW"]


def test_virtual_pages_round_like_kvm_vm_elf_load() -> None:
    data = load_program(TINY).segments[1]
    assert (data.virtual_pages(0x1000).start, data.virtual_pages(0x1000).end) == (
        0x41_0000,
        0x41_3000,
    )


def test_load_program_refuses_a_file_that_is_not_elf(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a program\n")
    with pytest.raises(ProgramError) as err:
        load_program(text)
    assert err.value.path == str(text)
    assert (err.value.line, err.value.column) == (1, 1)
    assert "not an ELF file" in err.value.reason


def test_load_program_refuses_a_truncated_elf(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.elf"
    truncated.write_bytes(TINY.read_bytes()[:40])
    with pytest.raises(ProgramError, match="truncated or corrupt ELF file"):
        load_program(truncated)


def test_load_program_refuses_program_headers_past_the_end(tmp_path: Path) -> None:
    data = bytearray(TINY.read_bytes())
    data[32:40] = (0x10000).to_bytes(8, "little")  # e_phoff far beyond the file
    broken = tmp_path / "broken.elf"
    broken.write_bytes(bytes(data))
    with pytest.raises(ProgramError, match="truncated or corrupt ELF file"):
        load_program(broken)


def many_dynamic_segments(path: Path, count: int) -> Path:
    """A program with one PT_LOAD, ``count`` PT_DYNAMIC segments and ``count`` section
    headers: a reader that looks through every section for each dynamic segment does
    count * count reads (hours for a few MB of file)."""
    phoff, segments = 64, count + 1
    shoff = phoff + segments * 56
    ehdr = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack(
        "<HHIQQQIHHHHHH", 2, 183, 1, 0x4000_0000, phoff, shoff, 0, 64, 56, segments, 64,
        count, 0,
    )
    load = struct.pack("<IIQQQQQQ", 1, 5, 0, 0x4000_0000, 0x4000_0000, 0x100, 0x100, 0x1000)
    dynamic = struct.pack("<IIQQQQQQ", 2, 6, 0, 0, 0, 16, 16, 8)
    path.write_bytes(ehdr + load + dynamic * count + bytes(64) * count)
    return path


def test_program_headers_are_read_once_without_looking_through_sections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from elftools.elf.elffile import ELFFile

    reads: list[int] = []
    real = ELFFile._get_section_header

    def counted(self: ELFFile, n: int) -> Any:
        reads.append(n)
        return real(self, n)

    monkeypatch.setattr(ELFFile, "_get_section_header", counted)
    program = load_program(many_dynamic_segments(tmp_path / "dynamic.elf", 200))
    assert [s.paddr for s in program.segments] == [0x4000_0000]
    assert len(reads) <= 2  # the section-name table's header, not 200 * 200 of them


def test_a_program_header_table_past_the_input_bound_is_refused(tmp_path: Path) -> None:
    # PN_XNUM: the count is in section 0's sh_info, up to 2**32 - 1 headers of a sparse file.
    data = bytearray(TINY.read_bytes())
    data[40:48] = len(data).to_bytes(8, "little")  # e_shoff: section 0 right after
    data[56:58] = (0xFFFF).to_bytes(2, "little")  # e_phnum = PN_XNUM
    data[60:62] = (0).to_bytes(2, "little")  # e_shnum
    data[62:64] = (0).to_bytes(2, "little")  # e_shstrndx
    section = bytearray(64)
    section[44:48] = (0xFFFF_FFFF).to_bytes(4, "little")  # sh_info: the program header count
    huge = tmp_path / "huge.elf"
    huge.write_bytes(bytes(data + section))
    with open(huge, "r+b") as stream:
        stream.truncate(1 << 40)
    with pytest.raises(ProgramError, match="4294967295 program headers"):
        load_program(huge)


# -- elf-unreadable ----------------------------------------------------------------------


def test_non_elf_file_is_a_finding_at_the_file_not_a_traceback(tmp_path: Path) -> None:
    layout = write_layout(tmp_path, ARM64_VIRT)
    junk = tmp_path / "guest.bin"
    junk.write_bytes(b"MZ\x90\x00 definitely not ELF")
    result = run_check(layout, "--elf", junk)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert (
        f"{junk}:1:1: error[elf-unreadable] not an ELF file: it does not start with the ELF "
        "magic \\x7fELF: no loader can place it in guest memory, so the program was not "
        "checked; pass the guest's linked ELF executable (not an object file or a core dump)"
    ) in result.output


def test_readable_elf_gives_no_elf_unreadable(tmp_path: Path) -> None:
    result = check_one(write_layout(tmp_path, ARM64_VIRT), TINY)
    assert elf_findings(result, "elf-unreadable") == []


def test_missing_elf_file_is_a_usage_error(tmp_path: Path) -> None:
    result = run_check(write_layout(tmp_path, ARM64_VIRT), "--elf", tmp_path / "nope.elf")
    assert result.exit_code == 2


# -- elf-wrong-arch ----------------------------------------------------------------------


def test_aarch64_program_on_an_x86_64_layout_is_wrong_arch_and_nothing_else(
    tmp_path: Path,
) -> None:
    layout = write_layout(
        tmp_path,
        """
        layout: 1
        arch: x86_64
        memslots:
          - name: slot0
            base: 0x0
            size: 4M
        """,
    )
    result = check_one(layout, TINY)
    assert [(f.rule, f.file, f.line, f.column) for f in elf_findings(result)] == [
        ("elf-wrong-arch", str(TINY), 1, 1)
    ]
    assert elf_findings(result)[0].message.startswith(
        "ELF machine EM_AARCH64 is not EM_X86_64, the machine of the x86_64 vCPU"
    )


def test_aarch64_program_on_an_arm64_layout_is_not_wrong_arch(tmp_path: Path) -> None:
    result = check_one(write_layout(tmp_path, ARM64_VIRT), TINY)
    assert elf_findings(result) == []


def test_wrong_arch_follows_the_arch_checked_not_the_layouts(tmp_path: Path) -> None:
    layout = write_layout(tmp_path, ARM64_VIRT)
    results = check_file(layout, ("arm64", "x86_64"), programs=load_programs([TINY]))
    assert [[f.rule for f in elf_findings(r)] for r in results] == [[], ["elf-wrong-arch"]]


# -- physical mode: elf-unbacked, elf-readonly, elf-over-device ---------------------------


def test_writable_segment_in_a_readonly_memslot_is_elf_readonly(tmp_path: Path) -> None:
    layout = arm64_layout(
        tmp_path,
        """
          - name: ram
            base: 0x4000_0000
            size: 64K
          - name: flash-data
            base: 0x4001_0000
            size: 64K
            readonly: true
        """,
    )
    result = check_one(layout, TINY)
    assert [(f.rule, f.objects) for f in elf_findings(result)] == [
        ("elf-readonly", ("flash-data",))
    ]
    assert elf_findings(result)[0].message == (
        "segment 1 (RW, p_paddr 0x4001_00b8-0x4001_20b7) lies in read-only memslot "
        "'flash-data': guest writes there exit to the VMM as KVM_EXIT_MMIO instead of updating "
        "memory; link the data segment into RAM such as 'ram' [0x4000_0000, 0x4001_0000)"
    )


def test_code_segment_in_a_readonly_memslot_is_fine(tmp_path: Path) -> None:
    layout = arm64_layout(
        tmp_path,
        """
          - name: flash-code
            base: 0x4000_0000
            size: 64K
            readonly: true
          - name: ram
            base: 0x4001_0000
            size: 64K
        """,
    )
    assert elf_findings(check_one(layout, TINY)) == []


def test_segment_running_past_the_memslot_end_is_elf_unbacked(tmp_path: Path) -> None:
    layout = arm64_layout(
        tmp_path,
        """
          - name: ram
            base: 0x4000_0000
            size: 0x1_1000
        """,
    )
    result = check_one(layout, TINY)
    assert [f.rule for f in elf_findings(result)] == ["elf-unbacked"]
    assert elf_findings(result)[0].message == (
        "segment 1 (RW, p_paddr 0x4001_00b8-0x4001_20b7): 0x4001_1000-0x4001_20b7 is outside "
        "every memslot: the loader has no guest memory to copy the segment into, and guest "
        "writes there exit to the VMM as KVM_EXIT_MMIO instead of reaching the program; link "
        "the segment at a physical address inside a memslot such as 'ram' "
        "[0x4000_0000, 0x4001_1000), or add a memslot that covers it"
    )


def test_code_outside_memory_says_the_fetch_faults_on_arm64(tmp_path: Path) -> None:
    layout = arm64_layout(
        tmp_path,
        """
          - name: ram
            base: 0x4001_0000
            size: 64K
        """,
    )
    (finding,) = elf_findings(check_one(layout, TINY), "elf-unbacked")
    assert finding.message.startswith(
        "segment 0 (RX, p_paddr 0x4000_0000-0x4000_00b7): the whole segment is outside every "
        "memslot: the loader has no guest memory to copy the segment into, and guest "
        "instruction fetches there fault (KVM injects an exception into the guest)"
    )


def test_segments_inside_memslots_are_not_elf_unbacked(tmp_path: Path) -> None:
    result = check_one(write_layout(tmp_path, ARM64_VIRT), TINY)
    assert elf_findings(result, "elf-unbacked") == []


def test_segment_over_an_unbacked_device_is_reported_once_as_over_device(tmp_path: Path) -> None:
    layout = arm64_layout(
        tmp_path,
        """
          - name: ram
            base: 0x4000_0000
            size: 64K
        """,
        """
          - name: uart0
            type: mmio
            base: 0x4001_0000
            size: 64K
        """,
    )
    result = check_one(layout, TINY)
    assert sorted(f.rule for f in elf_findings(result)) == ["elf-over-device"]
    (over,) = elf_findings(result, "elf-over-device")
    assert over.objects == ("uart0",)
    assert over.message == (
        "segment 1 (RW, p_paddr 0x4001_00b8-0x4001_20b7) overlaps mmio device 'uart0' "
        "[0x4001_0000, 0x4002_0000) at 0x4001_00b8-0x4001_20b7: the loader has no memory to "
        "copy into there, and guest writes there exit to the VMM as KVM_EXIT_MMIO instead of "
        "reaching the program; link the segment clear of the device, or move the device"
    )


def test_segment_over_a_device_inside_ram_says_the_device_is_shadowed(tmp_path: Path) -> None:
    layout = arm64_layout(
        tmp_path,
        """
          - name: ram
            base: 0x4000_0000
            size: 1G
        """,
        """
          - name: uart0
            type: mmio
            base: 0x4000_0000
            size: 4K
        """,
    )
    (over,) = elf_findings(check_one(layout, TINY))
    assert over.rule == "elf-over-device"
    assert over.objects == ("uart0", "ram")
    assert "a memslot shadows the device there" in over.message


def test_devices_away_from_the_segments_are_not_elf_over_device(tmp_path: Path) -> None:
    result = check_one(write_layout(tmp_path, ARM64_VIRT), TINY)
    assert elf_findings(result, "elf-over-device") == []


def test_physical_rules_do_not_run_in_selftests_mode(tmp_path: Path) -> None:
    # Nothing backs p_paddr 0x4000_0000 here, but kvm_vm_elf_load() ignores p_paddr.
    result = check_one(write_layout(tmp_path, ARM64_SELFTESTS), TINY, mode="selftests")
    assert elf_findings(result) == []


# -- selftests mode: elf-va-collision, elf-code-slot-too-small ------------------------------


def selftests_with_device(tmp_path: Path, base: str, identity_map: bool) -> Path:
    """The selftests layout plus a 64 KiB mmio device 'old-gic' at ``base``."""
    device = f"""  - name: old-gic
    type: mmio
    base: {base}
    size: 64K
    identity_map: {str(identity_map).lower()}
"""
    return write_layout(tmp_path, ARM64_SELFTESTS + device)


def test_identity_mapped_device_in_a_segments_virtual_range_collides(tmp_path: Path) -> None:
    layout = selftests_with_device(tmp_path, "0x41_0000", identity_map=True)
    result = check_one(layout, TINY, mode="selftests")
    (finding,) = elf_findings(result)
    assert (finding.rule, finding.file, finding.objects) == (
        "elf-va-collision",
        str(TINY),
        ("old-gic",),
    )
    assert finding.message == (
        "segment 1 (RW, p_vaddr 0x0041_00b8-0x0041_20b7, mapped as pages "
        "0x0041_0000-0x0041_2fff) shares virtual pages 0x0041_0000-0x0041_2fff with the "
        "identity mapping of mmio device 'old-gic' (VA = GPA [0x0041_0000, 0x0042_0000)): "
        "kvm_vm_elf_load() maps the program there and virt_map() maps the device at the same "
        "addresses, so whichever comes second fails a TEST_ASSERT or silently takes over the "
        "page-table entry and the guest reaches the device where it expects its code or data; "
        "link the program at virtual addresses clear of 0x0041_0000-0x0041_2fff"
    )


def test_device_without_identity_map_does_not_collide(tmp_path: Path) -> None:
    layout = selftests_with_device(tmp_path, "0x41_0000", identity_map=False)
    assert elf_findings(check_one(layout, TINY, mode="selftests")) == []


def test_collision_uses_p_vaddr_not_p_paddr(tmp_path: Path) -> None:
    # The device sits at segment 1's p_paddr: only a physical loader would care.
    layout = selftests_with_device(tmp_path, "0x4001_0000", identity_map=True)
    assert elf_findings(check_one(layout, TINY, mode="selftests")) == []


def test_identity_mapped_device_does_not_matter_in_physical_mode(tmp_path: Path) -> None:
    layout = selftests_with_device(tmp_path, "0x41_0000", identity_map=True)
    result = check_one(layout, TINY, mode="physical")
    assert elf_findings(result, "elf-va-collision") == []


def selftests_slot0(tmp_path: Path, size: str) -> Path:
    return arm64_layout(
        tmp_path,
        f"""
          - name: slot0
            slot: 0
            base: 0x0
            size: {size}
        """,
    )


def test_program_that_just_fits_the_code_memslot_is_fine(tmp_path: Path) -> None:
    # 4 KiB for segment 0 plus 12 KiB for segment 1 (0x41_0000..0x41_3000).
    result = check_one(selftests_slot0(tmp_path, "16K"), TINY, mode="selftests")
    assert elf_findings(result) == []


def test_program_larger_than_the_code_memslot_is_too_small(tmp_path: Path) -> None:
    result = check_one(selftests_slot0(tmp_path, "12K"), TINY, mode="selftests")
    (finding,) = elf_findings(result)
    assert (finding.rule, finding.objects) == ("elf-code-slot-too-small", ("slot0",))
    assert finding.message == (
        "the program's 2 loadable segments need 16 KiB of guest pages (p_vaddr to p_vaddr + "
        "p_memsz rounded out to 4 KiB, as kvm_vm_elf_load() maps them) but code memslot "
        "'slot0' (slot 0) holds only 12 KiB: vm_phy_pages_alloc() runs out of free pages and "
        "the test aborts before the guest runs; enlarge the memslot (nr_extra_pages of "
        "__vm_create()) or shrink the program"
    )


def test_code_memslot_skips_readonly_memslots(tmp_path: Path) -> None:
    layout = arm64_layout(
        tmp_path,
        """
          - name: flash
            slot: 0
            base: 0x200_0000
            size: 8K
            readonly: true
          - name: small
            slot: 2
            base: 0x0
            size: 8K
          - name: big
            slot: 1
            base: 0x100_0000
            size: 16M
        """,
    )
    result = check_one(layout, TINY, mode="selftests")
    assert elf_findings(result) == []
    (placed,) = result.programs or ()
    assert [s.names for s in placed.segments] == [("big",), ("big",)]


def test_code_memslot_lowest_slot_id_wins_over_file_order(tmp_path: Path) -> None:
    layout = arm64_layout(
        tmp_path,
        """
          - name: big
            slot: 1
            base: 0x100_0000
            size: 16M
          - name: small
            slot: 0
            base: 0x0
            size: 8K
        """,
    )
    (finding,) = elf_findings(check_one(layout, TINY, mode="selftests"))
    assert (finding.rule, finding.objects) == ("elf-code-slot-too-small", ("small",))


def test_layout_without_read_write_memslot_has_no_code_memslot(tmp_path: Path) -> None:
    layout = arm64_layout(
        tmp_path,
        """
          - name: flash
            base: 0x0
            size: 16M
            readonly: true
        """,
    )
    (finding,) = elf_findings(check_one(layout, TINY, mode="selftests"))
    assert finding.rule == "elf-code-slot-too-small"
    assert "the layout has no read-write memslot in address space 0" in finding.message


# -- where segments land: library, text and JSON --------------------------------------------


def test_segment_placements_physical_lists_region_kinds_and_names(tmp_path: Path) -> None:
    loaded = load_layout(write_layout(tmp_path, ARM64_VIRT))
    regions = partition(loaded.resolved, ARCHES["arm64"])
    placed = segment_placements(load_program(TINY), loaded.resolved, regions, "physical")
    assert placed.mode == "physical"
    assert [(s.index, s.flags, s.kinds, s.names) for s in placed.segments] == [
        (0, "RX", ("ram",), ("ram",)),
        (1, "RW", ("ram",), ("ram",)),
    ]


def test_segment_placement_spanning_rom_and_nothing(tmp_path: Path) -> None:
    layout = arm64_layout(
        tmp_path,
        """
          - name: ram
            base: 0x4000_0000
            size: 64K
          - name: flash
            base: 0x4001_0000
            size: 4K
            readonly: true
        """,
    )
    (placed,) = check_one(layout, TINY).programs or ()
    assert placed.segments[1] == SegmentPlacement(
        1,
        "RW",
        load_program(TINY).segments[1].physical,
        ("rom", "unbacked"),
        ("flash",),
    )


def test_text_output_shows_where_each_segment_lands(tmp_path: Path) -> None:
    result = run_check(write_layout(tmp_path, ARM64_VIRT), "--elf", TINY)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    start = lines.index(f"{TINY} (EM_AARCH64, physical: at p_paddr)")
    assert lines[start + 1 : start + 3] == [
        "  segment 0: RX, [0x4000_0000, 0x4000_00b8) -> ram / ram",
        "  segment 1: RW, [0x4001_00b8, 0x4001_20b8) -> ram / ram",
    ]


def test_text_output_in_selftests_mode_shows_virtual_pages(tmp_path: Path) -> None:
    layout = selftests_with_device(tmp_path, "0x41_0000", identity_map=True)
    result = run_check(layout, "--elf", TINY, "--elf-mode", "selftests")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    start = lines.index(f"{TINY} (EM_AARCH64, selftests: at p_vaddr, page-rounded)")
    assert lines[start + 1 : start + 3] == [
        "  segment 0: RX, [0x0040_0000, 0x0040_1000) -> ram / slot0",
        "  segment 1: RW, [0x0041_0000, 0x0041_3000) -> ram, device / slot0, old-gic",
    ]
    assert f"{TINY}:1:1: error[elf-va-collision] segment 1 (RW, p_vaddr" in result.output


def test_text_output_without_elf_has_no_program_lines(tmp_path: Path) -> None:
    result = run_check(write_layout(tmp_path, ARM64_VIRT))
    assert "segment 0" not in result.output


def test_json_has_programs_only_with_elf(tmp_path: Path) -> None:
    layout = write_layout(tmp_path, ARM64_VIRT)
    without = check_json(layout)
    assert all("programs" not in r for r in without["results"])
    document = check_json(layout, "--elf", TINY)
    (result,) = document["results"]
    assert result["programs"] == [
        {
            "file": str(TINY),
            "machine": "EM_AARCH64",
            "mode": "physical",
            "segments": [
                {
                    "index": 0,
                    "flags": "RX",
                    "start": 0x4000_0000,
                    "end": 0x4000_00B8,
                    "kinds": ["ram"],
                    "regions": ["ram"],
                },
                {
                    "index": 1,
                    "flags": "RW",
                    "start": 0x4001_00B8,
                    "end": 0x4001_20B8,
                    "kinds": ["ram"],
                    "regions": ["ram"],
                },
            ],
        }
    ]


def test_json_finding_points_at_the_elf_and_names_layout_entries(tmp_path: Path) -> None:
    layout = selftests_with_device(tmp_path, "0x41_0000", identity_map=True)
    document = check_json(layout, "--elf", TINY, "--elf-mode", "selftests")
    (result,) = document["results"]
    (finding,) = [f for f in result["findings"] if f["rule"] == "elf-va-collision"]
    assert (finding["file"], finding["line"], finding["column"], finding["objects"]) == (
        str(TINY),
        1,
        1,
        ["old-gic"],
    )
    assert result["programs"][0]["mode"] == "selftests"
    assert document["summary"] == {"files": 1, "errors": 1, "warnings": 0}


def test_json_of_an_unloadable_layout_with_elf_has_empty_programs(tmp_path: Path) -> None:
    layout = write_layout(tmp_path, "layout: 1\narch: arm64\nbogus: 1\n")
    (result,) = check_json(layout, "--elf", TINY)["results"]
    assert (result["valid"], result["programs"]) == (False, [])


def test_check_file_without_programs_is_unchanged(tmp_path: Path) -> None:
    (result,) = check_file(write_layout(tmp_path, ARM64_VIRT))
    assert result.programs is None
    assert elf_findings(result) == []


# -- selftests mode: elf-not-loadable, from crafted program headers --------------------------

EM_AARCH64 = 183


def crafted_elf(
    path: Path,
    loads: list[tuple[int, int, int]],
    *,
    elf_class: int = 64,
    little_endian: bool = True,
    shentsize: int | None = None,
) -> Path:
    """An AArch64 executable whose PT_LOADs are (p_vaddr, p_filesz, p_memsz), flags RWX, with
    no file contents beyond the headers (a PT_LOAD's bytes may come from the headers)."""
    order = "<" if little_endian else ">"
    if elf_class == 64:
        ehdr_size, phdr_size, addr = 64, 56, "Q"
    else:
        ehdr_size, phdr_size, addr = 52, 32, "I"
    ident = b"\x7fELF" + bytes([2 if elf_class == 64 else 1, 1 if little_endian else 2, 1])
    ehdr = ident + bytes(9) + struct.pack(
        f"{order}HHI{addr}{addr}{addr}IHHHHHH",
        2,  # ET_EXEC
        EM_AARCH64,
        1,
        loads[0][0],  # e_entry
        ehdr_size,  # e_phoff
        0,
        0,
        ehdr_size,
        phdr_size,
        len(loads),
        shentsize if shentsize is not None else 64 if elf_class == 64 else 40,
        0,
        0,
    )
    phdrs = b""
    for vaddr, filesz, memsz in loads:
        if elf_class == 64:
            phdrs += struct.pack(f"{order}IIQQQQQQ", 1, 7, 0, vaddr, vaddr, filesz, memsz, 0x1000)
        else:
            phdrs += struct.pack(f"{order}IIIIIIII", 1, 0, vaddr, vaddr, filesz, memsz, 7, 0x1000)
    path.write_bytes(ehdr + phdrs)
    return path


def not_loadable(tmp_path: Path, program: Path, mode: str = "selftests") -> list[str]:
    result = check_one(selftests_slot0(tmp_path, "1M"), program, mode=mode)
    return [f.message for f in elf_findings(result, "elf-not-loadable")]


def test_a_well_formed_program_is_loadable(tmp_path: Path) -> None:
    program = crafted_elf(tmp_path / "ok.elf", [(0x1_0000, 0x100, 0x100), (0x1_1000, 0, 0x800)])
    assert not_loadable(tmp_path, program) == []
    assert not_loadable(tmp_path, TINY) == []


def test_segments_sharing_a_guest_page_are_not_loadable(tmp_path: Path) -> None:
    # Segment 1 starts in the page segment 0 ends in: the usual result of a linker script
    # that packs .data right after .text.
    program = crafted_elf(tmp_path / "packed.elf", [(0x1_0000, 0x100, 0x100), (0x1_0100, 0, 8)])
    assert not_loadable(tmp_path, program) == [
        "segment 1 (RWX, pages 0x0001_0000-0x0001_0fff) shares guest pages "
        "0x0001_0000-0x0001_0fff with segment 0, mapped before it: __vm_vaddr_alloc() cannot "
        "give it the pages from its own start; align the segments to the 4 KiB guest page in "
        "the linker script, so kvm_vm_elf_load() fails a TEST_ASSERT and the test aborts "
        "before the guest runs"
    ]


def test_a_later_segment_below_an_earlier_one_may_share_its_last_page_too(
    tmp_path: Path,
) -> None:
    program = crafted_elf(tmp_path / "down.elf", [(0x2_0000, 0x100, 0x100), (0x1_f800, 0, 0x900)])
    (message,) = not_loadable(tmp_path, program)
    assert message.startswith(
        "segment 1 (RWX, pages 0x0001_f000-0x0002_0fff) shares guest pages "
        "0x0002_0000-0x0002_0fff with segment 0"
    )


def test_an_empty_pt_load_is_not_loadable(tmp_path: Path) -> None:
    program = crafted_elf(tmp_path / "empty.elf", [(0x1_0000, 0x100, 0x100), (0x2_0000, 0, 0)])
    assert load_program(program).empty_loads == (1,)
    (message,) = not_loadable(tmp_path, program)
    assert message.startswith('program header 1 is a PT_LOAD with p_memsz 0 ("Unexpected')


def test_a_32_bit_or_big_endian_program_is_not_loadable(tmp_path: Path) -> None:
    ilp32 = crafted_elf(tmp_path / "ilp32.elf", [(0x1_0000, 0x80, 0x80)], elf_class=32)
    (message,) = not_loadable(tmp_path, ilp32)
    assert message.startswith("the program is ELFCLASS32: elfhdr_get() only loads ELFCLASS64")
    big = crafted_elf(tmp_path / "be.elf", [(0x1_0000, 0x80, 0x80)], little_endian=False)
    (message,) = not_loadable(tmp_path, big)
    assert message.startswith("the program is big-endian")


def test_a_program_whose_section_header_size_is_not_elf64s_is_not_loadable(
    tmp_path: Path,
) -> None:
    # What a tool that strips the section headers can leave behind: e_shentsize 0.
    stripped = crafted_elf(tmp_path / "stripped.elf", [(0x1_0000, 0x80, 0x80)], shentsize=0)
    assert not_loadable(tmp_path, stripped) == [
        "the program's e_phentsize is 56 and e_shentsize 0: elfhdr_get() asserts "
        "sizeof(Elf64_Phdr) 56 and sizeof(Elf64_Shdr) 64 (a tool that strips the section "
        "headers may leave e_shentsize 0); link it with the usual toolchain, so "
        "kvm_vm_elf_load() fails a TEST_ASSERT and the test aborts before the guest runs"
    ]


def test_vmm_loaders_take_what_selftests_refuse(tmp_path: Path) -> None:
    program = crafted_elf(tmp_path / "packed.elf", [(0x1_0000, 0x100, 0x100), (0x1_0100, 0, 8)])
    assert not_loadable(tmp_path, program, mode="physical") == []


def test_rules_listing_includes_every_elf_rule() -> None:
    output = CliRunner().invoke(cli, ["rules"]).output
    for slug in ELF_RULES:
        assert f"{slug} (error): " in output


# -- x86_64 guests linked here with gcc and a linker script ---------------------------------

needs_gcc = pytest.mark.skipif(
    shutil.which("gcc") is None or platform.machine() not in ("x86_64", "AMD64"),
    reason="needs gcc targeting x86_64",
)

GUEST_C = """
volatile unsigned long counter = 1;
volatile char scratch[0x3000];

void _start(void)
{
	for (;;)
		counter += (unsigned long)scratch[counter & 7];
}
"""

LINKER_SCRIPT = """
ENTRY(_start)
PHDRS
{{
	text PT_LOAD FLAGS(5);
	data PT_LOAD FLAGS(6);
}}
SECTIONS
{{
	. = {text_vaddr:#x};
	.text : AT({text_paddr:#x}) {{ *(.text*) *(.rodata*) }} :text
	. = {data_vaddr:#x};
	.data : AT({data_paddr:#x}) {{ *(.data*) }} :data
	.bss : {{ *(.bss*) *(COMMON) }} :data
	/DISCARD/ : {{ *(.note*) *(.comment) *(.eh_frame*) }}
}}
"""


def link_guest(
    tmp_path: Path, text_vaddr: int, text_paddr: int, data_vaddr: int, data_paddr: int
) -> Path:
    """A static x86_64 guest whose PT_LOAD segments sit at the given p_vaddr / p_paddr."""
    source = tmp_path / "guest.c"
    source.write_text(GUEST_C)
    script = tmp_path / "guest.ld"
    script.write_text(
        LINKER_SCRIPT.format(
            text_vaddr=text_vaddr,
            text_paddr=text_paddr,
            data_vaddr=data_vaddr,
            data_paddr=data_paddr,
        )
    )
    out = tmp_path / "guest.elf"
    subprocess.run(
        [
            "gcc",
            "-O1",
            "-ffreestanding",
            "-fno-pic",
            "-fno-asynchronous-unwind-tables",
            "-fno-stack-protector",
            "-nostdlib",
            "-static",
            "-no-pie",
            "-Wl,--build-id=none",
            f"-Wl,-T,{script}",
            "-o",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    return out


X86_LAYOUT = """
layout: 1
arch: x86_64
memslots:
  - name: ram
    slot: 0
    base: 0x0
    size: 2M
  - name: bios
    base: 0x20_0000
    size: 1M
    readonly: true
devices:
  - name: ioapic
    type: ioapic
    base: 0xfec0_0000
"""


@needs_gcc
def test_linked_guest_has_the_linker_scripts_addresses(tmp_path: Path) -> None:
    guest = link_guest(tmp_path, 0x40_0000, 0x10_0000, 0x60_0000, 0x18_0000)
    program = load_program(guest)
    assert program.machine == "EM_X86_64"
    text, data = program.segments
    assert (text.vaddr, text.paddr, text.flag_letters) == (0x40_0000, 0x10_0000, "RX")
    assert (data.vaddr, data.paddr, data.flag_letters) == (0x60_0000, 0x18_0000, "RW")
    assert data.memsz > data.filesz  # the bss


@needs_gcc
def test_linked_guest_in_ram_is_clean(tmp_path: Path) -> None:
    guest = link_guest(tmp_path, 0x40_0000, 0x10_0000, 0x60_0000, 0x18_0000)
    result = run_check(write_layout(tmp_path, X86_LAYOUT), "--elf", guest)
    assert result.exit_code == 0, result.output
    assert "  segment 1: RW, [0x0018_0000, 0x0018_3" in result.output


@needs_gcc
def test_linked_guest_with_data_in_rom_is_elf_readonly(tmp_path: Path) -> None:
    guest = link_guest(tmp_path, 0x40_0000, 0x10_0000, 0x60_0000, 0x20_0000)
    result = check_one(write_layout(tmp_path, X86_LAYOUT), guest)
    assert [(f.rule, f.objects) for f in elf_findings(result)] == [("elf-readonly", ("bios",))]


@needs_gcc
def test_linked_guest_on_an_arm64_layout_is_wrong_arch(tmp_path: Path) -> None:
    guest = link_guest(tmp_path, 0x40_0000, 0x4000_0000, 0x60_0000, 0x4010_0000)
    result = check_one(write_layout(tmp_path, ARM64_VIRT), guest)
    assert [f.rule for f in elf_findings(result)] == ["elf-wrong-arch"]
    assert "ELF machine EM_X86_64 is not EM_AARCH64" in elf_findings(result)[0].message


@needs_gcc
def test_linked_guest_under_an_identity_mapped_device_collides(tmp_path: Path) -> None:
    guest = link_guest(tmp_path, 0x40_0000, 0x10_0000, 0x60_0000, 0x18_0000)
    layout = write_layout(
        tmp_path,
        X86_LAYOUT
        + """  - name: mmio-window
    type: mmio
    base: 0x60_0000
    size: 4K
    identity_map: true
""",
    )
    result = check_one(layout, guest, mode="selftests")
    assert [(f.rule, f.objects) for f in elf_findings(result)] == [
        ("elf-va-collision", ("mmio-window",))
    ]


@needs_gcc
def test_object_file_is_elf_unreadable(tmp_path: Path) -> None:
    source = tmp_path / "guest.c"
    source.write_text(GUEST_C)
    obj = tmp_path / "guest.o"
    subprocess.run(["gcc", "-c", "-o", str(obj), str(source)], check=True)
    result = check_one(write_layout(tmp_path, X86_LAYOUT), obj)
    (finding,) = elf_findings(result)
    assert finding.rule == "elf-unreadable"
    assert finding.message.startswith("no loadable (PT_LOAD) segment in this ET_REL file")


def test_thousands_of_segments_and_identity_mapped_devices_are_placed_in_bounded_time(
    tmp_path: Path,
) -> None:
    n = 8_000
    devices = "".join(
        f"  - {{name: d{i}, type: mmio, base: {0x1_0000_0000 + i * 0x1000:#x}, size: 4K, "
        "identity_map: true}\n"
        for i in range(n)
    )
    layout = write_layout(
        tmp_path,
        "layout: 1\narch: arm64\nmemslots:\n  - {name: slot0, slot: 0, base: 0x0, size: 4G}\n"
        f"devices:\n{devices}",
    )
    # Segment i is on the pages of device i; the last one is clear of every device.
    loads = [(0x1_0000_0000 + i * 0x1000, 0, 0x1000) for i in range(n)] + [(0x1_0000, 0, 8)]
    program = crafted_elf(tmp_path / "many.elf", loads)
    # Each segment scanned every identity-mapped device: about 45 s here.
    done = subprocess.run(
        [sys.executable, "-m", "gpa_plan", "check", str(layout), "--elf", str(program),
         "--elf-mode", "selftests"],
        capture_output=True, text=True, timeout=15, check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "  segment 0: RWX, [0x1_0000_0000, 0x1_0000_1000) -> ram, device / slot0, d0\n" in (
        done.stdout
    )
    assert f"  segment {n}: RWX, [0x0001_0000, 0x0001_1000) -> ram / slot0\n" in done.stdout
