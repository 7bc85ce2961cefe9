"""riscv64 through the CLI: limits, errnos, the AIA devices and what each access becomes.

The expectations are written from the kernel source (Linux 7.2.13), not from
gpa_plan/arch/riscv64.py:

- arch/riscv/kvm/mmu.c kvm_arch_prepare_memory_region(): ``base_gfn + npages >=
  gpa_size >> PAGE_SHIFT`` returns -EFAULT, so a memslot may not even end exactly at 2**bits.
- arch/riscv/kvm/vm.c kvm_vm_ioctl_enable_cap(KVM_CAP_VM_GPA_BITS): a request of at most 41
  bits gets Sv39x4 (41), at most 50 Sv48x4 (50), at most 59 Sv57x4 (59), more is EINVAL.
- arch/riscv/kvm/vcpu_exit.c gstage_page_fault(): no memslot, or a store to a read-only one,
  goes to kvm_riscv_vcpu_mmio_load()/_store() (vcpu_insn.c), which try kvm_io_bus_read() /
  kvm_io_bus_write() and otherwise exit with KVM_EXIT_MMIO; a fetch outside a memslot injects
  an instruction access fault; everything else is mapped by kvm_riscv_mmu_map(), read-only
  slots readable and executable.
- virt/kvm/eventfd.c and coalesced_mmio.c register no .read: reads of an ioeventfd or a
  coalesced zone find no device and exit.
- arch/riscv/include/uapi/asm/kvm.h: APLIC 0x4000 bytes aligned to 0x1000, IMSIC 0x1000 per
  vCPU aligned to 0x1000; aia_device.c aia_aplic_addr()/aia_imsic_addr() refuse a misaligned
  base with EINVAL.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gpa_plan.cli import cli

PLAIN_ENV = {"COLUMNS": "200", "NO_COLOR": None, "FORCE_COLOR": None, "TTY_COMPATIBLE": None}
LIMIT_41 = 1 << 41


def run(*args: str) -> Result:
    return CliRunner(env=PLAIN_ENV).invoke(cli, list(args))


def write(tmp_path: Path, body: str, header: str = "layout: 1\narch: riscv64\n") -> str:
    path = tmp_path / "vm.yaml"
    path.write_text(header + body)
    return str(path)


def findings(path: str, *args: str) -> list[str]:
    result = run("check", "-q", *args, path)
    assert result.exit_code in (0, 1), result.output
    return [line for line in result.stdout.splitlines() if "[" in line and "]" in line]


# -- limits and errnos ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("end", "errors"),
    [
        (LIMIT_41 - 0x1000, 0),  # ends one page short of 2**41: accepted
        (LIMIT_41, 1),  # ends exactly at 2**41: `>=` refuses it
        (LIMIT_41 + 0x1000, 1),  # beyond
    ],
)
def test_a_memslot_must_end_below_two_to_the_41(tmp_path: Path, end: int, errors: int) -> None:
    base = end - 0x10_0000
    path = write(tmp_path, f"memslots:\n  - {{name: top, base: {base:#x}, size: 1M}}\n")
    found = [f for f in findings(path) if "[memslot-out-of-range]" in f]
    assert len(found) == errors
    if errors:
        assert "EFAULT" in found[0] and "kvm_arch_prepare_memory_region()" in found[0]


def test_a_memslot_ending_exactly_at_the_limit_is_fine_on_arm64(tmp_path: Path) -> None:
    # arch/arm64/kvm/mmu.c kvm_arch_prepare_memory_region() tests `>`, riscv `>=`.
    body = f"memslots:\n  - {{name: top, base: {(1 << 40) - 0x10_0000:#x}, size: 1M}}\n"
    assert findings(write(tmp_path, body, "layout: 1\narch: arm64\n")) == []
    top = f"{LIMIT_41 - 0x10_0000:#x}"
    riscv = write(tmp_path, body.replace(f"{(1 << 40) - 0x10_0000:#x}", top))
    assert any("ends exactly at the 41-bit" in f for f in findings(riscv))


@pytest.mark.parametrize(
    ("pa_bits", "said"),
    [
        (41, None),
        (50, None),
        (59, None),
        (44, "asks for 44 bits 50; write pa_bits: 50"),
        (42, "asks for 42 bits 50"),
        (55, "asks for 55 bits 59"),
        (40, "asks for 40 bits 41"),
        (60, "KVM_ENABLE_CAP(KVM_CAP_VM_GPA_BITS) fails with EINVAL above 59 bits"),
    ],
)
def test_pa_bits_are_the_g_stage_widths(tmp_path: Path, pa_bits: int, said: str | None) -> None:
    path = write(tmp_path, "", f"layout: 1\narch: riscv64\npa_bits: {pa_bits}\n")
    found = [f for f in findings(path) if "[arch-limits]" in f]
    if said is None:
        assert found == []
    else:
        (finding,) = found
        assert said in finding


def test_pages_are_4k_only(tmp_path: Path) -> None:
    (finding,) = findings(write(tmp_path, "", "layout: 1\narch: riscv64\npage_size: 16K\n"))
    assert "[arch-limits]" in finding and "(4 KiB)" in finding


def test_one_address_space_and_32767_user_slots(tmp_path: Path) -> None:
    body = (
        "memslots:\n"
        "  - {name: a, slot: 32766, base: 0x8000_0000, size: 1M}\n"
        "  - {name: b, slot: 32767, base: 0x9000_0000, size: 1M}\n"
        "  - {name: c, as_id: 1, base: 0xa000_0000, size: 1M}\n"
    )
    found = [f for f in findings(write(tmp_path, body)) if "[slot-id-conflict]" in f]
    assert len(found) == 2
    assert "'b' uses slot id 32767" in found[0] and "stop at 32766" in found[0]
    assert "'c' uses as_id 1" in found[1] and "allows only 0" in found[1]


# -- what an access becomes ----------------------------------------------------------------

LAYOUT = """\
memslots:
  - {name: ram, base: 0x8000_0000, size: 128M}
  - {name: flash, base: 0x2000_0000, size: 32M, readonly: true}
devices:
  - {name: aplic, type: riscv-aplic, base: 0x0d00_0000}
  - {name: imsic, type: riscv-imsic, base: 0x2800_0000, vcpus: 2}
  - {name: kick, type: mmio, handler: ioeventfd, base: 0x1000_1000, size: 4}
  - {name: ring, type: mmio, handler: coalesced, base: 0x1000_2000, size: 4K}
  - {name: uart, type: mmio, base: 0x1000_0000, size: 0x100}
"""

# (address, read, write, fetch) from the kernel facts in the module docstring.
EXPECTED = [
    (0x8000_0000, "memory", "memory", "memory"),  # kvm_riscv_mmu_map()
    (0x2000_0000, "memory", "io-exit", "memory"),  # store to RO slot -> mmio_store -> exit
    (0x0D00_0000, "io-kernel", "io-kernel", "guest-fault"),  # APLIC on KVM_MMIO_BUS
    (0x2800_1000, "io-kernel", "io-kernel", "guest-fault"),  # second vCPU's IMSIC page
    (0x1000_1000, "io-exit", "io-kernel", "guest-fault"),  # ioeventfd: no .read
    (0x1000_2000, "io-exit", "io-coalesced", "guest-fault"),  # coalesced: no .read
    (0x1000_0000, "io-exit", "io-exit", "guest-fault"),  # VMM device: KVM_EXIT_MMIO
    (0x4000_0000, "io-exit", "io-exit", "guest-fault"),  # nothing at all
    (LIMIT_41, "io-exit", "io-exit", "guest-fault"),  # beyond: no GPA-width test (inferred)
]


def explain(path: str, *addresses: int, arches: tuple[str, ...] = ()) -> dict[str, object]:
    extra = [a for arch in arches for a in ("--arch", arch)]
    result = run("explain", "--format", "json", *extra, path, *(hex(a) for a in addresses))
    assert result.exit_code == 0, result.output
    document: dict[str, object] = json.loads(result.stdout)
    return document


def test_each_region_reads_writes_and_fetches_as_the_kernel_says(tmp_path: Path) -> None:
    path = write(tmp_path, LAYOUT)
    answers = explain(path, *(e[0] for e in EXPECTED))["answers"]
    assert isinstance(answers, list)
    got = {(a["address"], a["access"]): a["outcome"] for a in answers}
    for address, read, write_, fetch in EXPECTED:
        assert (got[(address, "read")], got[(address, "write")], got[(address, "fetch")]) == (
            read,
            write_,
            fetch,
        ), hex(address)


def test_the_paths_name_the_riscv_functions(tmp_path: Path) -> None:
    path = write(tmp_path, LAYOUT)
    answers = explain(path, 0x2000_0000, 0x4000_0000)["answers"]
    assert isinstance(answers, list)
    details = {(a["address"], a["access"]): a["detail"] for a in answers}
    assert "kvm_riscv_vcpu_mmio_store()" in details[(0x2000_0000, "write")]
    assert "kvm_riscv_vcpu_mmio_load()" in details[(0x4000_0000, "read")]
    fetch = details[(0x4000_0000, "fetch")]
    assert "EXC_INST_ACCESS" in fetch and "older kernels: KVM_RUN fails with EOPNOTSUPP" in fetch


def test_explain_under_three_arches_lists_where_they_differ(tmp_path: Path) -> None:
    path = write(tmp_path, LAYOUT)
    document = explain(path, 0x4000_0000, arches=("arm64", "x86_64", "riscv64"))
    # Nothing there: reads and writes exit everywhere; a fetch is a guest fault on arm64
    # (kvm_inject_sea_iabt()) and riscv64, an emulation failure on x86_64.
    assert document["differences"] == [
        {
            "address": 0x4000_0000,
            "access": "fetch",
            "outcomes": [
                {"arch": "arm64", "outcome": "guest-fault"},
                {"arch": "x86_64", "outcome": "vm-error"},
                {"arch": "riscv64", "outcome": "guest-fault"},
            ],
        }
    ]
    text = run("explain", "--arch", "arm64", "--arch", "x86_64", "--arch", "riscv64", path,
               "0x4000_0000").stdout.splitlines()
    assert text[-2:] == [
        "Where arm64, x86_64, riscv64 differ:",
        "  0x4000_0000 fetch: guest-fault on arm64 and riscv64; vm-error on x86_64",
    ]


def test_explain_says_when_the_arches_agree(tmp_path: Path) -> None:
    path = write(tmp_path, LAYOUT)
    out = run("explain", "--arch", "arm64", "--arch", "riscv64", "--access", "read", path,
              "0x8000_0000").stdout.splitlines()
    assert out[-1] == "arm64, riscv64: the same outcome for every address and access asked"


# -- the AIA devices -----------------------------------------------------------------------


def test_aia_sizes_follow_kvm(tmp_path: Path) -> None:
    result = run("check", "--format", "json", write(tmp_path, LAYOUT))
    (checked,) = json.loads(result.stdout)["results"]
    spans = {tuple(r["names"]): (r["start"], r["end"]) for r in checked["regions"]}
    # APLIC: KVM_DEV_RISCV_APLIC_SIZE 0x4000; IMSIC: 0x1000 per vCPU, two vCPUs.
    assert spans[("aplic",)] == (0x0D00_0000, 0x0D00_4000)
    assert spans[("imsic",)] == (0x2800_0000, 0x2800_2000)


@pytest.mark.parametrize(
    ("device", "word"),
    [
        ("{name: aplic, type: riscv-aplic, base: 0x0d00_0800}", "KVM_DEV_RISCV_AIA_ADDR_APLIC"),
        ("{name: imsic, type: riscv-imsic, base: 0x2800_0200}", "KVM_DEV_RISCV_AIA_ADDR_IMSIC"),
    ],
)
def test_a_misaligned_aia_address_is_einval(tmp_path: Path, device: str, word: str) -> None:
    (finding,) = findings(write(tmp_path, f"devices:\n  - {device}\n"))
    assert "[device-misaligned]" in finding
    assert "not 4 KiB-aligned" in finding and word in finding and "EINVAL" in finding


def test_an_auto_aplic_is_placed_4k_aligned(tmp_path: Path) -> None:
    body = (
        "devices:\n"
        "  - {name: uart, type: mmio, base: 0x0, size: 0x100}\n"
        "  - {name: aplic, type: riscv-aplic, base: auto}\n"
    )
    result = run("allocate", "--format", "json", write(tmp_path, body))
    assert result.exit_code == 0, result.output
    (aplic,) = [d for d in json.loads(result.stdout)["devices"] if d["name"] == "aplic"]
    assert aplic["base"] == 0x1000


def test_an_auto_memslot_at_the_top_keeps_the_last_page_free(tmp_path: Path) -> None:
    body = "memslots:\n  - {name: high, base: auto, size: 1G, policy: last}\n"
    result = run("allocate", "--format", "json", write(tmp_path, body))
    assert result.exit_code == 0, result.output
    (high,) = json.loads(result.stdout)["memslots"]
    # `last` would end it at 2**41, which KVM refuses; the planner keeps below.
    assert high["base"] + (1 << 30) <= LIMIT_41 - 0x1000


def test_an_arm64_layout_under_riscv64_leaves_the_vgic_out(tmp_path: Path) -> None:
    body = "devices:\n  - {name: gicd, type: vgic-v3-dist, base: 0x0800_0000}\n"
    path = write(tmp_path, body, "layout: 1\narch: arm64\n")
    found = findings(path, "--arch", "riscv64")
    assert any("note[device-wrong-arch]" in f and "'gicd' is left out" in f for f in found)
    # arm64's default 40-bit IPA is not a G-stage width: KVM would give the VM 41 bits.
    assert any("[arch-limits] pa_bits 40" in f for f in found)


def test_an_aia_device_beyond_the_g_stage_is_unreachable_but_not_refused(tmp_path: Path) -> None:
    # aia_device.c aia_aplic_addr() compares the address with nothing but the alignment.
    body = "devices:\n  - {name: aplic, type: riscv-aplic, base: 0x200_0000_0000}\n"
    (finding,) = findings(write(tmp_path, body))
    assert "[device-out-of-range]" in finding and "the guest cannot reach it" in finding
    assert "E2BIG" not in finding


def test_a_risc_v_elf_belongs_on_a_riscv64_layout(tmp_path: Path) -> None:
    # The committed tiny AArch64 program with e_machine (offset 18, little-endian) made
    # EM_RISCV (243): pyelftools names it, and it is riscv64's machine.
    blob = bytearray((Path(__file__).parent / "data" / "elf" / "tiny-aarch64.elf").read_bytes())
    blob[18:20] = (243).to_bytes(2, "little")
    elf = tmp_path / "tiny-riscv.elf"
    elf.write_bytes(bytes(blob))
    ram = "memslots:\n  - {name: ram, base: 0x4000_0000, size: 1G}\n"
    riscv = write(tmp_path, ram)
    assert [f for f in findings(riscv, "--elf", str(elf)) if "elf-wrong-arch" in f] == []
    arm = tmp_path / "arm.yaml"
    arm.write_text("layout: 1\narch: arm64\n" + ram)
    (wrong,) = [f for f in findings(str(arm), "--elf", str(elf)) if "elf-wrong-arch" in f]
    assert "ELF machine EM_RISCV is not EM_AARCH64" in wrong


def test_the_kernels_arch_name_riscv_is_told_ours(tmp_path: Path) -> None:
    path = tmp_path / "vm.yaml"
    path.write_text("layout: 1\narch: riscv\n")
    result = run("check", "-q", str(path))
    assert result.exit_code == 1
    assert "riscv is the architecture layouts call `riscv64`: write `arch: riscv64`" in (
        result.stdout
    )
