"""KVM's private memslots a layout places with `kvm_private`: x86_64's real-mode TSS
(KVM_SET_TSS_ADDR) and EPT identity-map page (KVM_SET_IDENTITY_MAP_ADDR).

KVM keeps both only on Intel (VMX) hosts without unrestricted guest (arch/x86/kvm/vmx/vmx.c
vmx_set_tss_addr(), init_rmode_identity_map(), Linux 7.2.13), which no test here can run on:
the behaviour is source-checked, and a memslot over either is a warning that names the hosts.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from gpa_plan.arch import ARCHES
from gpa_plan.cli import cli

PLAIN_ENV = {"COLUMNS": "400", "NO_COLOR": None, "FORCE_COLOR": None, "TTY_COMPATIBLE": None}
# What QEMU gives KVM (target/i386/kvm/kvm.c kvm_arch_init(): KVM_IDENTITY_BASE, TSS + 0x1000).
QEMU = "kvm_private:\n  identity_map: 0xfeff_c000\n  tss: 0xfeff_d000\n"


def run(tmp_path: Path, text: str, *args: str, command: str = "check") -> Result:
    path = tmp_path / "layout.yaml"
    path.write_text(textwrap.dedent(text))
    return CliRunner(env=PLAIN_ENV).invoke(cli, [command, str(path), *args])


def finding_lines(result: Result) -> list[str]:
    return [line for line in result.stdout.splitlines() if "[" in line and "]" in line.split()[1]]


def x86_layout(memslot_base: str, size: str, private: str = QEMU) -> str:
    return (
        "layout: 1\narch: x86_64\n"
        + private
        + f"memslots:\n  - name: ram\n    base: {memslot_base}\n    size: {size}\n"
    )


def test_memslot_over_the_tss_is_a_warning_naming_intel_and_amd_hosts(tmp_path: Path) -> None:
    result = run(tmp_path, x86_layout("0xfeff_e000", "4K"))
    assert result.exit_code == 0, result.output  # a warning: AMD hosts accept the memslot
    (line,) = finding_lines(result)
    assert line.startswith(f"{tmp_path / 'layout.yaml'}:8:11: warning[private-slot-conflict] ")
    for words in (
        "memslot 'ram' [0xfeff_e000, 0xfeff_f000) covers KVM's real-mode TSS at 0xfeff_d000",
        "`kvm_private: tss`",
        "KVM_SET_TSS_ADDR fails with EEXIST if the memslot is there first, else the memslot is "
        "refused with EEXIST",
        "KVM keeps it only on Intel (VMX) hosts without unrestricted guest",
        "on Intel hosts with unrestricted guest (the default) and on AMD (SVM) hosts KVM keeps "
        "no such memslot",
        "leave it out of the memslot, or move it (`kvm_private: tss` and the VMM's "
        "KVM_SET_TSS_ADDR)",
    ):
        assert words in line, (words, line)
    strict = run(tmp_path, x86_layout("0xfeff_e000", "4K"), "--strict")
    assert strict.exit_code == 1


def test_memslot_over_the_identity_map_says_the_first_vcpu_fails(tmp_path: Path) -> None:
    result = run(tmp_path, x86_layout("0xfeff_c000", "4K"))
    (line,) = finding_lines(result)
    assert ":8:11: warning[private-slot-conflict] " in line
    for words in (
        "covers KVM's EPT identity-map page at 0xfeff_c000 (`kvm_private: identity_map`",
        "KVM_CREATE_VCPU fails with EEXIST if the memslot is there first",
        "on Intel hosts with unrestricted guest (the default), without EPT and on AMD (SVM) "
        "hosts KVM keeps no such memslot",
        "KVM_SET_IDENTITY_MAP_ADDR",
    ):
        assert words in line, (words, line)


def test_memslot_over_both_gets_one_finding_for_each(tmp_path: Path) -> None:
    result = run(tmp_path, x86_layout("0xfeff_0000", "64K"))
    lines = finding_lines(result)
    assert [line.split(" covers ")[1].split(" at ")[0] for line in lines] == [
        "KVM's real-mode TSS",
        "KVM's EPT identity-map page",
    ]


def test_without_kvm_private_the_identity_map_is_at_kvms_default(tmp_path: Path) -> None:
    # init_rmode_identity_map(): VMX_EPT_IDENTITY_PAGETABLE_ADDR when the VMM never set it.
    result = run(tmp_path, x86_layout("0xfff0_0000", "1M", private=""))
    (line,) = finding_lines(result)
    assert "covers KVM's EPT identity-map page at 0xfffb_c000 (KVM's default without " in line
    # Without KVM_SET_TSS_ADDR there is no TSS memslot: Firecracker's TSS address is free.
    assert "TSS" not in line


@pytest.mark.parametrize(
    ("base", "size"),
    [
        ("0xfeff_b000", "4K"),  # the page below the identity map
        ("0xff00_0000", "16M"),  # from the page after the TSS's third page
        ("0xfffb_c000", "4K"),  # KVM's default identity map, moved by the layout
    ],
)
def test_memslot_beside_the_private_pages_has_no_finding(
    tmp_path: Path, base: str, size: str
) -> None:
    result = run(tmp_path, x86_layout(base, size))
    assert result.exit_code == 0
    assert finding_lines(result) == []
    assert "0 errors, 0 warnings" in result.stdout


def test_kvm_private_key_of_another_arch_is_a_schema_error_at_the_key(tmp_path: Path) -> None:
    text = "layout: 1\narch: arm64\nkvm_private:\n  tss: 0xfeff_d000\n"
    result = run(tmp_path, text)
    assert result.exit_code == 1
    assert finding_lines(result) == [
        f"{tmp_path / 'layout.yaml'}:4:3: error[schema] `tss` in kvm_private is for x86_64 "
        "(KVM_SET_TSS_ADDR), not arm64; KVM on arm64 keeps no private range a VMM places: "
        "remove `kvm_private`"
    ]


def test_unknown_kvm_private_key_gets_the_closest_the_arch_declares(tmp_path: Path) -> None:
    text = "layout: 1\narch: x86_64\nkvm_private:\n  identity-map: 0xfeff_c000\n"
    result = run(tmp_path, text)
    assert result.exit_code == 1
    assert finding_lines(result) == [
        f"{tmp_path / 'layout.yaml'}:4:3: error[schema] unknown key `identity-map` in "
        "kvm_private; did you mean `identity_map`?; x86_64 layouts may set `tss`, `identity_map`"
    ]


def test_tss_above_what_kvm_set_tss_addr_takes_is_a_schema_error(tmp_path: Path) -> None:
    # kvm_vm_ioctl_set_tss_addr(): addr > (unsigned int)(-3 * PAGE_SIZE) is EINVAL, any host.
    ok = run(tmp_path, "layout: 1\narch: x86_64\nkvm_private: {tss: 0xffff_d000}\n")
    assert ok.exit_code == 0, ok.output
    result = run(tmp_path, "layout: 1\narch: x86_64\nkvm_private: {tss: 0xffff_e000}\n")
    assert result.exit_code == 1
    (line,) = finding_lines(result)
    assert line.startswith(f"{tmp_path / 'layout.yaml'}:3:20: error[schema] tss 0xffffe000 is ")
    assert "KVM_SET_TSS_ADDR fails with EINVAL" in line


def test_a_number_error_in_kvm_private_names_the_key(tmp_path: Path) -> None:
    result = run(tmp_path, "layout: 1\narch: x86_64\nkvm_private:\n  tss: lots\n")
    assert result.exit_code == 1
    (line,) = finding_lines(result)
    assert ":4:8: error[schema] `tss`: 'lots' is not a number" in line


PLANNED = """\
layout: 1
arch: x86_64
{private}memslots:
  - name: scratch
    base: auto
    size: 32K
    within: [{low}, {high}]
"""


@pytest.mark.parametrize(
    ("private", "low", "high", "expected"),
    [
        # the identity map [0xfeffc000, 0xfeffd000) and TSS [0xfeffd000, 0xff000000) as QEMU
        # sets them: the first fit of 32 KiB is after the TSS
        (QEMU, "0xfeff_8000", "0xff01_0000", 0xFF00_0000),
        # KVM's default identity map, when the layout sets none: the fit is past that page
        ("", "0xfffb_8000", "0xfffc_8000", 0xFFFB_D000),
        # with the identity map moved away, KVM's default page is free
        ("kvm_private: {identity_map: 0xfeff_c000}\n", "0xfffb_8000", "0xfffc_8000", 0xFFFB_8000),
    ],
)
def test_allocate_keeps_auto_memslots_off_the_private_pages(
    tmp_path: Path, private: str, low: str, high: str, expected: int
) -> None:
    text = PLANNED.format(private=private, low=low, high=high)
    result = run(tmp_path, text, "--format", "json", command="allocate")
    assert result.exit_code == 0, result.output
    (memslot,) = json.loads(result.stdout)["memslots"]
    assert memslot["base"] == expected


def test_allocate_writes_kvm_private_back_as_the_layout_gave_it(tmp_path: Path) -> None:
    text = PLANNED.format(private=QEMU, low="0xfeff_8000", high="0xff01_0000")
    result = run(tmp_path, text, command="allocate")
    assert result.exit_code == 0, result.output
    written = yaml.safe_load(result.stdout)
    assert written["kvm_private"] == {"identity_map": 0xFEFF_C000, "tss": 0xFEFF_D000}
    again = tmp_path / "planned.yaml"
    again.write_text(result.stdout)
    checked = CliRunner(env=PLAIN_ENV).invoke(cli, ["check", str(again)])
    assert checked.exit_code == 0, checked.output
    assert "0 errors, 0 warnings" in checked.stdout


def test_explain_at_the_tss_says_what_is_there_and_on_which_hosts(tmp_path: Path) -> None:
    result = run(
        tmp_path, x86_layout("0x0", "1M"), "0xfeff_e000", "--access", "read", command="explain"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "0xfeff_e000 read on x86_64: io-exit [unbacked]",
        "  KVM's real-mode TSS is here (`kvm_private: tss`; three pages for vm86 real mode, "
        "vmx_set_tss_addr()): KVM keeps it only on Intel (VMX) hosts without unrestricted guest "
        "(kvm_intel.unrestricted_guest=0 or ept=0, or a CPU or L0 hypervisor without it); on "
        "Intel hosts with unrestricted guest (the default) and on AMD (SVM) hosts KVM keeps no "
        "such memslot; where KVM keeps it, the access reaches that private memslot as memory; "
        "elsewhere: no memslot and no device: kvm_handle_noslot_fault() -> emulator -> "
        "vcpu_mmio_read(): no kernel device -> KVM_EXIT_MMIO",
    ]


def test_explain_beside_the_private_pages_says_nothing_of_them(tmp_path: Path) -> None:
    result = run(
        tmp_path, x86_layout("0x0", "1M"), "0xff00_0000", "--access", "read", command="explain"
    )
    assert result.exit_code == 0
    assert "KVM's" not in result.stdout


def test_schema_lists_the_keys_the_architectures_declare() -> None:
    result = CliRunner().invoke(cli, ["schema"])
    assert result.exit_code == 0
    section = json.loads(result.stdout)["properties"]["kvm_private"]
    assert section["type"] == "object"
    assert section["additionalProperties"] is False
    assert section["default"] == {}
    assert list(section["properties"]) == ["tss", "identity_map"]
    assert "KVM_SET_TSS_ADDR" in section["properties"]["tss"]["description"]
    assert "0xfffbc000" in section["properties"]["identity_map"]["description"]


def test_rules_lists_the_warning_and_when() -> None:
    listed = CliRunner(env=PLAIN_ENV).invoke(cli, ["rules"]).stdout
    assert (
        "private-slot-conflict (error; warning for the real-mode TSS and EPT identity-map pages, "
        "which only Intel hosts without unrestricted guest keep)"
    ) in " ".join(listed.split())


@pytest.mark.parametrize("arch", ["x86", "[x86_64]"])
def test_kvm_private_of_a_layout_without_a_known_arch_is_not_judged_by_a_stand_in(
    tmp_path: Path, arch: str
) -> None:
    text = f"layout: 1\narch: {arch}\nkvm_private:\n  tss: 0xfeff_d000\n  foo: 1\n"
    result = run(tmp_path, text)
    assert result.exit_code == 1
    lines = [line.split(": error[schema] ")[1] for line in finding_lines(result)]
    assert len(lines) == 2
    assert lines[0].startswith("`arch` must be ")
    assert all(name in lines[0] for name in ARCHES)
    assert lines[1] == "unknown key `foo` in kvm_private; its keys depend on `arch`, to fix first"


def test_kvm_private_off_a_page_boundary_is_einval_where_kvm_keeps_it(tmp_path: Path) -> None:
    # kvm_set_memory_region(): guest_phys_addr & (PAGE_SIZE - 1) is EINVAL.
    result = run(tmp_path, "layout: 1\narch: x86_64\nkvm_private:\n  tss: 0xfeff_d800\n")
    assert result.exit_code == 0  # AMD hosts accept any address: a warning
    (line,) = finding_lines(result)
    assert line == (
        f"{tmp_path / 'layout.yaml'}:4:8: warning[private-slot-conflict] `kvm_private: tss` "
        "0xfeff_d800 is not a multiple of the 4 KiB page: KVM keeps it only on Intel (VMX) hosts "
        "without unrestricted guest (kvm_intel.unrestricted_guest=0 or ept=0, or a CPU or L0 "
        "hypervisor without it); on Intel hosts with unrestricted guest (the default) and on "
        "AMD (SVM) hosts KVM keeps no such memslot; where KVM keeps KVM's real-mode TSS, "
        "KVM_SET_TSS_ADDR fails with EINVAL (kvm_set_memory_region()); give a page-aligned "
        "address"
    )


@pytest.mark.parametrize(
    ("private", "line", "subject"),
    [
        # both set: reported at the later key
        ("  tss: 0xfeff_c000\n  identity_map: 0xfeff_d000\n", 5, "identity_map"),
        # the TSS over KVM's default identity map (0xfffbc000), reported at `tss`
        ("  tss: 0xfffb_b000\n", 4, "tss"),
    ],
)
def test_private_ranges_put_over_each_other_cannot_both_exist(
    tmp_path: Path, private: str, line: int, subject: str
) -> None:
    result = run(tmp_path, "layout: 1\narch: x86_64\nkvm_private:\n" + private)
    (found,) = finding_lines(result)
    assert (
        f":{line}:" in found
        and f"warning[private-slot-conflict] `kvm_private: {subject}` " in found
    )
    assert "KVM cannot keep both" in found
    assert "the one it creates second fails with EEXIST" in found
