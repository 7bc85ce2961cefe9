"""loongarch64 through the CLI, on real files: limits, what each access becomes, the PCH-PIC,
ELF machines, the selftests layout and `allocate --ucall`.

Every expected value below is worked out from Linux 7.2.13 by hand, not read from
gpa_plan/arch/loongarch64.py:

- arch/loongarch/kvm/exit.c kvm_handle_rdwr_fault(): ``badv >= gpa_size`` -> ADE/ADEM injected
  (guest-fault) for any access; else kvm_handle_mm_fault() maps a memslot's page (memory;
  a write to a read-only memslot fails there); else a write goes to kvm_emu_mmio_write(), a
  fetch (``pc == badv``) gets ADE/ADEF injected (guest-fault), a read goes to
  kvm_emu_mmio_read(). Both emulations try kvm_io_bus_read()/kvm_io_bus_write() on
  KVM_MMIO_BUS first (io-kernel; io-coalesced for a coalesced zone's write; ioeventfds and
  coalesced zones have no read handler) and otherwise exit with KVM_EXIT_MMIO (io-exit).
- arch/loongarch/kvm/vm.c kvm_arch_init_vm(): gpa_size = BIT(cpu_vabits), 2**47 here.
- arch/loongarch/kvm/mmu.c kvm_arch_prepare_memory_region(): ``base_gfn + npages > gpa_size
  >> PAGE_SHIFT`` -> ENOMEM, so a slot may end exactly at 2**47 (riscv64 refuses that one:
  its check is ``>=``).
- arch/loongarch/include/asm/kvm_pch_pic.h PCH_PIC_SIZE 0x3e8; intc/pch_pic.c
  kvm_pch_pic_init() checks no alignment or range; kvm_pch_pic_create() refuses a second one.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gpa_plan.cli import cli

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "layouts" / "selftests-loongarch64.yaml"
TINY = Path(__file__).parent / "data" / "elf" / "tiny-aarch64.elf"
PLAIN_ENV = {"COLUMNS": "160", "NO_COLOR": None, "FORCE_COLOR": None, "TTY_COMPATIBLE": None}
GPA_LIMIT = 1 << 47

VIRT = """\
layout: 1
arch: loongarch64
page_size: 16K
memslots:
  - {name: ram, base: 0x0, size: 256M}
  - {name: flash, base: 0x1c00_0000, size: 4M, readonly: true}
devices:
  - {name: pchpic, type: loongarch-pch-pic, base: 0x1000_0000}
  - {name: kick, type: mmio, handler: ioeventfd, base: 0x2000_0000, size: 4}
  - {name: ring, type: mmio, handler: coalesced, base: 0x2000_1000, size: 4K}
  - {name: uart, type: mmio, base: 0x1fe0_01e0, size: 8}
"""


def run(*args: str) -> Result:
    return CliRunner(env=PLAIN_ENV).invoke(cli, list(args))


def write(tmp_path: Path, text: str, name: str = "vm.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def check_lines(path: str, *options: str) -> list[str]:
    result = run("check", "-q", *options, path)
    assert result.exit_code in (0, 1), result.output
    return [line for line in result.stdout.splitlines() if "[" in line and "]" in line]


def explain(path: str, *args: str) -> list[dict[str, object]]:
    result = run("explain", "--format", "json", path, *args)
    assert result.exit_code == 0, result.output
    found: list[dict[str, object]] = json.loads(result.stdout)["answers"]
    return found


# --- what each access becomes ------------------------------------------------------------------

# (address, region, read, write, fetch), by hand from kvm_handle_rdwr_fault() above.
REGIONS = [
    (0x0, "ram", "memory", "memory", "memory"),
    # read-only memslot: reads and fetches mapped; a write fails kvm_map_page() and is MMIO.
    (0x1C00_0000, "rom", "memory", "io-exit", "memory"),
    # PCH-PIC on KVM_MMIO_BUS: the kernel answers reads and writes; a fetch is never MMIO.
    (0x1000_0000, "device", "io-kernel", "io-kernel", "guest-fault"),
    # ioeventfd: writes signal it; reads find no handler and exit.
    (0x2000_0000, "device", "io-exit", "io-kernel", "guest-fault"),
    # coalesced zone: writes go to the ring; reads exit.
    (0x2000_1000, "device", "io-exit", "io-coalesced", "guest-fault"),
    # a VMM device, and nothing at all: KVM_EXIT_MMIO both ways, ADEF on a fetch.
    (0x1FE0_01E0, "device", "io-exit", "io-exit", "guest-fault"),
    (0x3000_0000, "unbacked", "io-exit", "io-exit", "guest-fault"),
    # at gpa_size: ADEM for all three, before any memslot or device is looked at.
    (GPA_LIMIT, "beyond", "guest-fault", "guest-fault", "guest-fault"),
]


@pytest.mark.parametrize(("address", "kind", "read", "wr", "fetch"), REGIONS)
def test_each_region_gives_the_kernels_outcome_for_read_write_and_fetch(
    tmp_path: Path, address: int, kind: str, read: str, wr: str, fetch: str
) -> None:
    got = explain(write(tmp_path, VIRT), hex(address), "--arch", "loongarch64")
    assert [(a["access"], a["outcome"], a["kind"]) for a in got] == [
        ("read", read, kind), ("write", wr, kind), ("fetch", fetch, kind)
    ]
    for answer in got:
        assert "kvm_handle_rdwr_fault()" in str(answer["detail"]), answer


def test_a_fetch_outside_memory_names_the_injected_fetch_address_error(tmp_path: Path) -> None:
    (answer,) = explain(write(tmp_path, VIRT), "0x1000_0000", "--access", "fetch")
    assert "kvm_is_ifetch_fault()" in str(answer["detail"])
    assert "EXSUBCODE_ADEF" in str(answer["detail"])


def test_beyond_the_gpa_size_names_the_injected_memory_address_error(tmp_path: Path) -> None:
    (answer,) = explain(write(tmp_path, VIRT), hex(GPA_LIMIT), "--access", "read")
    assert "EXSUBCODE_ADEM" in str(answer["detail"])
    # The last byte below gpa_size is still an ordinary unbacked address.
    (below,) = explain(write(tmp_path, VIRT), hex(GPA_LIMIT - 1), "--access", "read")
    assert below["outcome"] == "io-exit"


def test_a_write_to_the_read_only_memslot_goes_through_kvm_emu_mmio_write(tmp_path: Path) -> None:
    result = run("explain", write(tmp_path, VIRT), "0x1c00_0000", "--access", "write")
    assert result.exit_code == 0
    first = result.stdout.splitlines()[0]
    assert first == "0x1c00_0000 write on loongarch64: io-exit [rom (flash)]"
    assert "kvm_emu_mmio_write()" in result.stdout
    assert "KVM_EXIT_MMIO (is_write=1)" in result.stdout


# --- limits ------------------------------------------------------------------------------------


def test_a_memslot_ending_exactly_at_the_gpa_size_is_accepted(tmp_path: Path) -> None:
    text = "layout: 1\narch: loongarch64\npage_size: 16K\nmemslots:\n"
    text += f"  - {{name: top, base: {GPA_LIMIT - 0x4000:#x}, size: 16K}}\n"
    assert check_lines(write(tmp_path, text)) == []


def test_a_memslot_past_the_gpa_size_is_refused_with_enomem(tmp_path: Path) -> None:
    text = "layout: 1\narch: loongarch64\npage_size: 16K\nmemslots:\n"
    text += f"  - {{name: top, base: {GPA_LIMIT - 0x4000:#x}, size: 32K}}\n"
    (line,) = check_lines(write(tmp_path, text))
    assert "error[memslot-out-of-range]" in line
    assert "47-bit GPA size (cpu_vabits)" in line
    assert "ENOMEM in kvm_arch_prepare_memory_region()" in line


@pytest.mark.parametrize("pa_bits", [38, 48])
def test_pa_bits_the_host_cannot_have_says_kvm_takes_cpu_vabits(
    tmp_path: Path, pa_bits: int
) -> None:
    path = write(tmp_path, f"layout: 1\narch: loongarch64\npa_bits: {pa_bits}\npage_size: 16K\n")
    (line,) = check_lines(path)
    assert "error[arch-limits]" in line
    assert "39 to 47-bit GPA size (cpu_vabits)" in line
    assert "cpu_vabits" in line and "no VM can change" in line
    assert "KVM_CREATE_VM" not in line  # the arm64 consequence


def test_a_loongson_2k_host_with_39_bits_is_a_valid_pa_bits(tmp_path: Path) -> None:
    path = write(tmp_path, "layout: 1\narch: loongarch64\npa_bits: 39\npage_size: 16K\n")
    assert check_lines(path) == []


@pytest.mark.parametrize(("page_size", "accepted"), [("4K", True), ("16K", True),
                                                     ("64K", True), ("8K", False)])
def test_host_page_sizes_are_the_kernels_page_table_layouts(
    tmp_path: Path, page_size: str, accepted: bool
) -> None:
    lines = check_lines(write(tmp_path, f"layout: 1\narch: loongarch64\npage_size: {page_size}\n"))
    assert (lines == []) is accepted, lines


def test_one_address_space_and_32767_user_memslots(tmp_path: Path) -> None:
    text = "layout: 1\narch: loongarch64\npage_size: 16K\nmemslots:\n"
    text += "  - {name: smm, base: 0x0, size: 16K, as_id: 1}\n"
    text += "  - {name: last, slot: 32767, base: 0x4000, size: 16K}\n"
    lines = check_lines(write(tmp_path, text))
    assert len(lines) == 2, lines
    assert "only 0" in lines[0]
    assert "32766" in lines[1] and "KVM_USER_MEM_SLOTS" in lines[1]


def test_debians_name_for_the_architecture_is_told_ours(tmp_path: Path) -> None:
    path = write(tmp_path, "layout: 1\narch: loong64\n")
    result = run("check", "-q", path)
    assert result.exit_code == 1
    assert "loong64 is the architecture layouts call `loongarch64`" in result.stdout


# --- the PCH-PIC -------------------------------------------------------------------------------


def test_the_pch_pic_answers_0x3e8_bytes_and_no_more(tmp_path: Path) -> None:
    path = write(tmp_path, VIRT)
    last, past = explain(path, "0x1000_03e7", "0x1000_03e8", "--access", "write")
    assert (last["outcome"], last["names"]) == ("io-kernel", ["pchpic"])
    assert (past["outcome"], past["kind"]) == ("io-exit", "unbacked")


def test_kvm_checks_no_alignment_of_the_pch_pic_base(tmp_path: Path) -> None:
    text = "layout: 1\narch: loongarch64\npage_size: 16K\ndevices:\n"
    text += "  - {name: pchpic, type: loongarch-pch-pic, base: 0x1000_0004}\n"
    assert check_lines(write(tmp_path, text)) == []


def test_a_pch_pic_beyond_the_gpa_size_is_unreachable_but_not_refused(tmp_path: Path) -> None:
    text = "layout: 1\narch: loongarch64\npage_size: 16K\ndevices:\n"
    text += f"  - {{name: pchpic, type: loongarch-pch-pic, base: {GPA_LIMIT - 0x100:#x}}}\n"
    (line,) = check_lines(write(tmp_path, text))
    assert "error[device-out-of-range]" in line
    assert "cannot reach it" in line
    assert "E2BIG" not in line  # kvm_pch_pic_init() checks no range


def test_the_pch_pic_does_not_exist_on_arm64(tmp_path: Path) -> None:
    text = "layout: 1\narch: arm64\ndevices:\n"
    text += "  - {name: pchpic, type: loongarch-pch-pic, base: 0x1000_0000}\n"
    (line,) = check_lines(write(tmp_path, text))
    assert "error[device-wrong-arch]" in line


def test_the_pch_pic_is_left_out_under_another_arch(tmp_path: Path) -> None:
    got = explain(write(tmp_path, VIRT), "0x1000_0000", "--access", "read", "--arch", "arm64")
    (answer,) = got
    assert (answer["outcome"], answer["kind"]) == ("io-exit", "unbacked")
    assert "left out on arm64" in str(answer["detail"])


# --- ELF ---------------------------------------------------------------------------------------


def loongarch_elf(tmp_path: Path) -> Path:
    """tiny-aarch64.elf with e_machine EM_LOONGARCH (258): same segments, other machine."""
    data = bytearray(TINY.read_bytes())
    struct.pack_into("<H", data, 18, 258)  # Elf64_Ehdr.e_machine
    path = tmp_path / "tiny-loongarch64.elf"
    path.write_bytes(bytes(data))
    return path


ELF_LAYOUT = """\
layout: 1
arch: loongarch64
page_size: 16K
memslots:
  - {name: ram, base: 0x4000_0000, size: 1G}
"""


def test_a_loongarch_program_is_checked_under_loongarch64(tmp_path: Path) -> None:
    path = write(tmp_path, ELF_LAYOUT)
    assert check_lines(path, "--elf", str(loongarch_elf(tmp_path))) == []


def test_an_aarch64_program_under_loongarch64_is_wrong_arch(tmp_path: Path) -> None:
    (line,) = check_lines(write(tmp_path, ELF_LAYOUT), "--elf", str(TINY))
    assert "error[elf-wrong-arch]" in line
    assert "ELF machine EM_AARCH64 is not EM_LOONGARCH" in line


def test_loongarch_code_outside_memory_says_the_fetch_faults(tmp_path: Path) -> None:
    text = ELF_LAYOUT.replace("base: 0x4000_0000", "base: 0x8000_0000")
    lines = check_lines(write(tmp_path, text), "--elf", str(loongarch_elf(tmp_path)))
    unbacked = [line for line in lines if "[elf-unbacked]" in line]
    assert unbacked, lines
    assert "fault" in unbacked[0]


# --- selftests ---------------------------------------------------------------------------------


def test_the_default_selftests_vm_has_16k_guest_pages_and_the_ucall_past_slot_0() -> None:
    # 512 + 5 = 517; + 517 // 512 * 2 = 519; + ceil(561216 / 16384) = 35 -> 554 pages of
    # 16 KiB = 0x8a_8000, where __vm_create() puts the ucall page.
    result = run("selftests-layout", "--arch", "loongarch64")
    assert result.exit_code == 0, result.output
    assert result.stdout == SHIPPED.read_text()
    assert "pa_bits: 47\npage_size: 16K\n" in result.stdout
    assert "    size: 0x008a_8000            # 554 pages" in result.stdout
    assert "  - name: ucall\n    type: ucall\n    base: 0x008a_8000\n" in result.stdout


def test_a_4k_host_keeps_16k_guest_pages_stated() -> None:
    result = run("selftests-layout", "--arch", "loongarch64", "--host-page-size", "4K")
    assert result.exit_code == 0, result.output
    assert "page_size: 4K\nguest_page_size: 16K\n" in result.stdout
    assert "base: 0x008a_8000\n" in result.stdout  # 16 KiB guest pages: nothing to round


def test_a_64k_host_rounds_slot_0_to_whole_host_pages(tmp_path: Path) -> None:
    # 554 guest pages rounded up to whole 64 KiB pages (4 guest pages each): 556 = 0x8b_0000.
    result = run("selftests-layout", "--arch", "loongarch64", "--host-page-size", "64K",
                 "-o", str(tmp_path / "st.yaml"))
    assert result.exit_code == 0, result.output
    text = (tmp_path / "st.yaml").read_text()
    assert "page_size: 64K\nguest_page_size: 16K\n" in text
    assert "base: 0x008b_0000\n" in text
    assert check_lines(str(tmp_path / "st.yaml")) == []


def test_selftests_have_no_4k_loongarch_guest_mode() -> None:
    result = run("selftests-layout", "--arch", "loongarch64", "--guest-page-size", "4K")
    assert result.exit_code == 2
    assert "loongarch64 selftests run with 16K guest pages" in result.output


def test_the_shipped_layout_checks_clean_and_a_memslot_on_the_ucall_page_is_caught(
    tmp_path: Path,
) -> None:
    assert check_lines(str(SHIPPED)) == []
    text = SHIPPED.read_text().replace(
        "\ndevices:\n", "\n  - name: test-data\n    base: 0x8a_8000\n    size: 1M\n\ndevices:\n"
    )
    (line,) = check_lines(write(tmp_path, text))
    assert "error[ucall-not-io]" in line


def test_allocate_ucall_follows_the_mmio_convention(tmp_path: Path) -> None:
    result = run("allocate", "--arch", "loongarch64", "--ucall", "--format", "json")
    assert result.exit_code == 0, result.output
    assert "note:" not in result.output  # MMIO, as on arm64: nothing to warn about
    layout = json.loads(result.stdout)
    (ucall,) = [d for d in layout["devices"] if d["type"] == "ucall"]
    assert ucall["base"] == 0x8A_8000  # the first guest page past slot 0
    # ... and one 16 KiB guest page long, exiting to the VMM.
    written = run("allocate", "--arch", "loongarch64", "--ucall", "-o", str(tmp_path / "a.yaml"))
    assert written.exit_code == 0, written.output
    last, past = explain(str(tmp_path / "a.yaml"), "0x8a_bfff", "0x8a_c000", "--access", "write")
    assert (last["outcome"], last["names"]) == ("io-exit", ["ucall"])
    assert past["kind"] == "unbacked"


def test_allocate_places_an_auto_ucall_of_a_loongarch64_layout_past_slot_0(
    tmp_path: Path,
) -> None:
    text = (
        "layout: 1\narch: loongarch64\npage_size: 16K\nmemslots:\n"
        "  - {name: slot0, slot: 0, base: 0x0, size: 0x8a_8000}\n"
        "devices:\n  - {name: ucall, type: ucall, base: auto}\n"
    )
    result = run("allocate", "--ucall", "--format", "json", write(tmp_path, text))
    assert result.exit_code == 0, result.output
    (ucall,) = json.loads(result.stdout)["devices"]
    assert ucall["base"] == 0x8A_8000


def test_only_the_gpa_size_bounds_slot_0_and_the_ucall_page() -> None:
    # No default device: slot 0 (552 + (517 + E) // 512 * 2 pages of 16 KiB) and the ucall
    # page past it must end by 2**47, i.e. (517 + E) // 512 <= 4294967019, so E is at most
    # 4294967020 * 512 - 1 - 517.
    most = 4294967020 * 512 - 1 - 517
    fits = run("selftests-layout", "--arch", "loongarch64", "--extra-pages", str(most))
    assert fits.exit_code == 0, fits.output
    over = run("selftests-layout", "--arch", "loongarch64", "--extra-pages", str(most + 1))
    assert over.exit_code == 2
    assert "past the 47-bit GPA size of VM_MODE_P47V47_16K at 0x8000_0000_0000" in over.output
    assert f"at most {most} extra pages fit" in over.output


def test_explain_under_riscv64_and_loongarch64_says_where_they_differ(tmp_path: Path) -> None:
    # pa_bits 41 is a riscv64 G-stage width and within loongarch64's 39..47. At 2**41 a read
    # on riscv64 finds no memslot and exits (gstage_page_fault() tests no GPA width), on
    # loongarch64 kvm_handle_rdwr_fault() injects ADE/ADEM first: the two differ.
    path = write(tmp_path, "layout: 1\narch: loongarch64\npa_bits: 41\n")
    result = run("explain", "--format", "json", path, hex(1 << 41), "--access", "read",
                 "--arch", "riscv64", "--arch", "loongarch64")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    outcomes = {a["arch"]: a["outcome"] for a in document["answers"]}
    assert outcomes == {"riscv64": "io-exit", "loongarch64": "guest-fault"}
    assert document["differences"] != []
    text = run("explain", path, hex(1 << 41), "--access", "read",
               "--arch", "riscv64", "--arch", "loongarch64")
    assert "EXSUBCODE_ADEM" in text.stdout
