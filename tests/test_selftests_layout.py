"""`gpa-plan selftests-layout`: the KVM selftests VM for given parameters, ucall address fixed.

The expected numbers below are worked out by hand from vm_nr_pages_required()
(tools/testing/selftests/kvm/lib/kvm_util.c), not taken from the function under test:

    pages = 512 + vcpus * 5                       (code, stacks)
    pages += (pages + extra) // 512 * 2           (page tables; PTES_PER_MIN_PAGE = 4096 / 8)
    pages += ceil(561216 / guest_page)            (struct ucall_header: 64 + 512 * 1096 bytes)
    pages rounded up to whole host pages          (vm_adjust_num_guest_pages())
    ucall address = pages * guest_page

The shipped layouts/selftests-*.yaml are this command's default output, and the built-in
layouts `allocate` starts from are the same with the ucall page `auto`:
GPA_PLAN_UPDATE_GOLDEN=1 rewrites them all after a change to the generator.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import gpa_plan
from gpa_plan.arch import ARCHES
from gpa_plan.check.run import check_file
from gpa_plan.cli import cli
from gpa_plan.selftests import (
    SelftestsParameterError,
    defaults,
    selftests_layout,
    selftests_vm,
)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "layouts"
BUILTIN = ROOT / "gpa_plan" / "data"
KiB = 1 << 10


def run(*args: str) -> object:
    return CliRunner().invoke(cli, list(args))


def layout_findings(path: Path) -> list[str]:
    (result,) = check_file(path)
    assert result.valid
    return [f.rule for f in result.findings]


# -- the shipped files are the generator's output --------------------------------------------


# Every architecture with selftests conventions ships both files.
SELFTESTS_ARCHES = [name for name, spec in ARCHES.items() if spec.selftests is not None]


@pytest.mark.parametrize(
    ("path", "arch", "ucall_base"),
    [
        (folder / f"selftests-{arch}.yaml", arch, base)
        for arch in SELFTESTS_ARCHES
        for folder, base in ((SHIPPED, "fixed"), (BUILTIN, "auto"))
    ],
    ids=lambda v: str(v).replace(str(ROOT) + "/", "") if isinstance(v, Path) else v,
)
def test_selftests_layouts_are_the_generators_default_output(
    path: Path, arch: str, ucall_base: str
) -> None:
    text = selftests_layout(selftests_vm(arch), ucall_base=ucall_base)
    if os.environ.get("GPA_PLAN_UPDATE_GOLDEN"):
        path.write_text(text)
    assert not path.is_symlink()
    assert path.read_text() == text


def test_the_command_prints_the_shipped_layout_by_default() -> None:
    result = CliRunner().invoke(cli, ["selftests-layout"])
    assert result.exit_code == 0
    assert result.stdout == (SHIPPED / "selftests-arm64.yaml").read_text()
    for arch in SELFTESTS_ARCHES:
        other = CliRunner().invoke(cli, ["selftests-layout", "--arch", arch])
        assert other.exit_code == 0, other.output
        assert other.stdout == (SHIPPED / f"selftests-{arch}.yaml").read_text()


@pytest.mark.parametrize("arch", SELFTESTS_ARCHES)
def test_every_shipped_selftests_layout_checks_clean(arch: str) -> None:
    assert layout_findings(SHIPPED / f"selftests-{arch}.yaml") == []


def test_shipped_riscv64_layout_says_ucalls_are_sbi_calls_and_has_no_device() -> None:
    # lib/riscv/ucall.c: ucall_arch_do_ucall() is sbi_ecall(KVM_RISCV_SELFTESTS_SBI_EXT, ...),
    # and lib/riscv/processor.c makes no in-kernel AIA: slot 0 is the whole layout.
    text = (SHIPPED / "selftests-riscv64.yaml").read_text()
    assert "KVM_EXIT_RISCV_SBI" in text
    assert "type: ucall" not in text and "devices: []\n" in text
    assert "pa_bits: 41\n" in text
    # Same slot 0 as arm64 with 4 KiB pages: 657 pages (worked out in the module docstring).
    assert "    size: 0x0029_1000 " in text


def test_riscv64_slot0_may_grow_to_the_last_page_below_the_41_bit_limit() -> None:
    # No device sits above slot 0 on riscv64; kvm_arch_prepare_memory_region() refuses a slot
    # ending exactly at 2**41 (`>=`), so the last page below it is the bound.
    bound = r"a page short of 2\*\*41\) at 0x1ff_ffff_f000"
    with pytest.raises(SelftestsParameterError, match=bound):
        selftests_vm("riscv64", extra_pages=1 << 38)
    vm = selftests_vm("riscv64", extra_pages=1 << 36)
    assert vm.slot0_size < (1 << 41) - 0x1000


def test_shipped_arm64_layout_states_the_ucall_address_and_its_derivation() -> None:
    text = (SHIPPED / "selftests-arm64.yaml").read_text()
    assert "  - name: ucall\n    type: ucall\n    base: 0x0029_1000\n" in text
    assert "base: auto" not in text
    assert "#   + align_up(561216, 4096) / 4096 (ucall pool) = 519 + 138 = 657 pages\n" in text


def test_shipped_x86_layout_says_ucalls_are_port_io_and_has_no_ucall_device() -> None:
    text = (SHIPPED / "selftests-x86_64.yaml").read_text()
    assert "UCALL_PIO_PORT" in text
    assert "no MMIO ucall address is\n# at stake on x86_64" in text
    assert "type: ucall" not in text


def test_builtin_arm64_layout_keeps_the_ucall_page_auto() -> None:
    text = (BUILTIN / "selftests-arm64.yaml").read_text()
    assert "  - name: ucall\n    type: ucall\n    base: auto\n" in text


# -- the seed scenario: a test's memslot where selftests put the ucall page -----------------


def test_a_memslot_added_at_the_ucall_address_fails_with_ucall_not_io(tmp_path: Path) -> None:
    text = (SHIPPED / "selftests-arm64.yaml").read_text()
    added = "  - name: test-data\n    base: 0x29_1000\n    size: 1M\n\ndevices:\n"
    assert text.count("\ndevices:\n") == 1
    (tmp_path / "mine.yaml").write_text(text.replace("\ndevices:\n", "\n" + added))
    mine = str(tmp_path / "mine.yaml")
    lines = Path(mine).read_text().splitlines()
    base_line = lines.index("    base: 0x0029_1000", lines.index("  - name: ucall")) + 1
    result = CliRunner().invoke(cli, ["check", "-q", mine])
    assert result.exit_code == 1
    (finding,) = [line for line in result.stdout.splitlines() if "error[" in line]
    assert finding.startswith(f"{mine}:{base_line}:11: error[ucall-not-io] ucall 'ucall' at ")
    assert "0x0029_1000" in finding
    assert "('test-data')" in finding


def test_the_same_memslot_past_the_ucall_page_is_fine(tmp_path: Path) -> None:
    text = (SHIPPED / "selftests-arm64.yaml").read_text()
    added = "  - name: test-data\n    base: 0x29_2000\n    size: 1M\n\ndevices:\n"
    (tmp_path / "mine.yaml").write_text(text.replace("\ndevices:\n", "\n" + added))
    assert layout_findings(tmp_path / "mine.yaml") == []


# -- the numbers, worked out by hand ---------------------------------------------------------


def test_default_vm_one_vcpu_4k() -> None:
    # 512 + 1*5 = 517; + (517 + 0)//512*2 = 2 -> 519; + ceil(561216/4096) = 138 -> 657 pages
    vm = selftests_vm("arm64")
    assert (vm.slot0_pages, vm.ucall_gpa) == (657, 657 * 0x1000)
    assert vm.ucall_gpa == 0x29_1000


def test_four_vcpus() -> None:
    # 512 + 4*5 = 532; + 532//512*2 = 2 -> 534; + 138 -> 672 pages = 0x2a_0000
    result = run("selftests-layout", "--vcpus", "4")
    assert result.exit_code == 0
    assert "  - name: ucall\n    type: ucall\n    base: 0x002a_0000\n" in result.stdout
    assert "    size: 0x002a_0000            # 672 pages" in result.stdout
    assert "    vcpus: 4 " in result.stdout  # four redistributor frames
    assert selftests_vm("arm64", vcpus=4).ucall_gpa == 672 * 4096


def test_extra_pages_grow_the_page_tables() -> None:
    # 517; + (517 + 1_000_000)//512*2 = 1954*2 = 3908 -> 4425; + 138 -> 4563 pages = 0x11d_3000
    result = run("selftests-layout", "--extra-pages", "1000000")
    assert result.exit_code == 0
    assert "    base: 0x011d_3000\n" in result.stdout
    assert selftests_vm("arm64", extra_pages=1_000_000).slot0_pages == 4563


def test_64k_guest_pages() -> None:
    # 517; + 2 -> 519; + ceil(561216/65536) = 9 -> 528 pages of 64 KiB = 0x210_0000
    result = run("selftests-layout", "--guest-page-size", "64K")
    assert result.exit_code == 0
    assert "guest_page_size: 64K\n" in result.stdout
    assert "    base: 0x0210_0000\n" in result.stdout
    assert selftests_vm("arm64", guest_page_size=64 * KiB).slot0_pages == 528


def test_16k_guest_pages() -> None:
    # 519 + ceil(561216/16384) = 35 -> 554 pages of 16 KiB = 0x8a_8000
    assert selftests_vm("arm64", guest_page_size=16 * KiB).ucall_gpa == 0x8A_8000


def test_4k_guest_on_a_64k_host_rounds_up_to_whole_host_pages() -> None:
    # 657 guest pages -> ceil(657/16) = 42 host pages -> 672 guest pages = 0x2a_0000
    result = run("selftests-layout", "--host-page-size", "64K")
    assert result.exit_code == 0
    assert "page_size: 64K\nguest_page_size: 4K\n" in result.stdout
    assert "    base: 0x002a_0000\n" in result.stdout
    assert "rounded up to whole 64 KiB host pages (16 guest pages each) = 672" in result.stdout


def test_x86_64_slot0_follows_the_same_sum() -> None:
    # 4 vCPUs: 672 pages as on arm64; x86 has only 4 KiB guest pages
    vm = selftests_vm("x86_64", vcpus=4)
    assert vm.slot0_size == 0x2A_0000


def test_the_library_gives_the_commands_answer(tmp_path: Path) -> None:
    out = tmp_path / "vm.yaml"
    result = run("selftests-layout", "--vcpus", "8", "--guest-page-size", "16K", "-o", str(out))
    assert result.exit_code == 0
    assert result.stdout == ""
    vm = gpa_plan.selftests_vm("arm64", vcpus=8, guest_page_size=16 * KiB)
    assert out.read_text() == gpa_plan.selftests_layout(vm)
    assert layout_findings(out) == []


# -- an architecture's default page sizes ------------------------------------------------------


@pytest.fixture
def sixteen_k_arch(monkeypatch: pytest.MonkeyPatch) -> str:
    """An architecture whose selftests VM mode has only 16 KiB pages, on 4 KiB or 16 KiB hosts,
    16 KiB in its kernel's default configuration (as loongarch64's VM_MODE_P47V47_16K)."""
    spec = ARCHES["arm64"]
    assert spec.selftests is not None
    conventions = spec.selftests._replace(
        guest_page_sizes=(16 * KiB,),
        host_page_sizes=(4 * KiB, 16 * KiB),
        default_guest_page=16 * KiB,
        default_host_page=16 * KiB,
    )
    monkeypatch.setitem(ARCHES, "sixteen", spec._replace(name="sixteen", selftests=conventions))
    return "sixteen"


def test_page_sizes_left_out_are_the_architectures_defaults(sixteen_k_arch: str) -> None:
    vm = selftests_vm(sixteen_k_arch)
    assert (vm.guest_page_size, vm.host_page_size) == (16 * KiB, 16 * KiB)
    assert vm.is_default
    # 519 + ceil(561216/16384) = 35 -> 554 pages of 16 KiB
    assert vm.ucall_gpa == 554 * 16 * KiB
    text = selftests_layout(vm)
    assert f"name: kvm-selftests-{sixteen_k_arch}-default\n" in text
    assert f"`gpa-plan selftests-layout --arch {sixteen_k_arch}`" in text
    assert "page_size: 16K\n" in text
    # One VM mode page size, the host's: a layout's guest_page_size defaults to page_size.
    assert "guest_page_size" not in text


def test_a_guest_page_unlike_the_hosts_is_stated_even_with_one_vm_mode(
    sixteen_k_arch: str,
) -> None:
    vm = selftests_vm(sixteen_k_arch, host_page_size=4 * KiB)
    assert not vm.is_default
    text = selftests_layout(vm)
    assert "page_size: 4K\nguest_page_size: 16K\n" in text
    # The command that writes it names the host page, not the default guest page.
    assert f"`gpa-plan selftests-layout --arch {sixteen_k_arch} --host-page-size 4K`" in text


def test_the_commands_page_size_defaults_are_the_architectures() -> None:
    result = run("selftests-layout", "--help")
    assert "The VM mode's page size, the default first" in " ".join(result.stdout.split())
    for arch in SELFTESTS_ARCHES:
        conventions = defaults(arch)
        assert run("selftests-layout", "--arch", arch).stdout == selftests_layout(
            selftests_vm(arch, guest_page_size=conventions.default_guest_page,
                         host_page_size=conventions.default_host_page)
        )


# -- bad parameters are usage errors ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--vcpus", "0"], "0 vCPUs: selftests VMs have 1 to KVM_MAX_VCPUS (512) vCPUs"),
        (["--vcpus", "513"], "513 vCPUs: selftests VMs have 1 to KVM_MAX_VCPUS (512) vCPUs"),
        (["--extra-pages", "-1"], "-1 extra pages: give 0 or more"),
        (["--arch", "x86_64", "--guest-page-size", "64K"],
         "guest page size 64K: x86_64 selftests run with 4K guest pages"),
        (["--guest-page-size", "8K"],
         "guest page size 8K: arm64 selftests run with 4K, 16K, 64K guest pages"),
        (["--arch", "x86_64", "--host-page-size", "16K"],
         "host page size 16K: x86_64 selftests run with 4K host pages"),
        # 517 + (517 + 10_000_000)//512*2 = 517 + 39064; + 138 = 39719 pages = 0x9b2_7000
        (["--extra-pages", "10000000"],
         "10000000 extra pages make slot 0 end at 0x09b2_7000 and the ucall page past it end "
         "at 0x09b2_8000, past the vGIC ITS base GITS_BASE_GPA at 0x0800_0000: at most 8220666 "
         "extra pages fit with these parameters"),
    ],
)
def test_bad_parameters_exit_2_saying_what_is_allowed(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["selftests-layout", *args])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.endswith(f"Error: {message}\n")


def test_the_extra_pages_bound_is_exact() -> None:
    most = 8220666
    vm = selftests_vm("arm64", extra_pages=most)
    assert vm.ucall_gpa + vm.guest_page_size <= 0x0800_0000
    with pytest.raises(SelftestsParameterError):
        selftests_vm("arm64", extra_pages=most + 1)


def test_a_bad_size_is_a_usage_error() -> None:
    result = run("selftests-layout", "--guest-page-size", "4MB")
    assert result.exit_code == 2


# -- every generated layout checks clean ------------------------------------------------------


@pytest.mark.parametrize("arch", ["arm64", "x86_64", "loongarch64"])
def test_every_default_checks_clean(arch: str, tmp_path: Path) -> None:
    path = tmp_path / f"{arch}.yaml"
    path.write_text(selftests_layout(selftests_vm(arch)))
    assert layout_findings(path) == []


@st.composite
def parameters(draw: st.DrawFn) -> tuple[str, int, int, int, int]:
    arch = draw(st.sampled_from(["arm64", "x86_64", "loongarch64"]))
    guest = draw(st.sampled_from(defaults(arch).guest_page_sizes))
    host = draw(st.sampled_from(defaults(arch).host_page_sizes))
    vcpus = draw(st.integers(1, 512))
    extra = draw(st.one_of(st.integers(0, 200_000), st.integers(0, 300_000_000)))
    return arch, vcpus, extra, guest, host


@settings(max_examples=40, deadline=None)
@given(parameters(), st.sampled_from(["fixed", "auto"]))
def test_any_valid_parameters_give_a_layout_that_checks_clean(
    params: tuple[str, int, int, int, int], ucall_base: str
) -> None:
    try:
        vm = selftests_vm(*params)
    except SelftestsParameterError as err:
        assert "extra pages make slot 0 end at" in str(err)  # the only refusal left
        return
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "vm.yaml"
        path.write_text(selftests_layout(vm, ucall_base=ucall_base))
        (result,) = check_file(path)
        assert result.valid
        assert result.findings == ()
        if defaults(vm.arch).ucall.is_mmio:
            (ucall,) = [r for r in result.regions if "ucall" in r.names]
            assert ucall.range.start == vm.ucall_gpa


# -- allocate without FILE keeps the selftests convention -------------------------------------


def test_allocate_ucall_in_an_empty_directory_uses_the_builtin_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("allocate", "--ucall")
    assert result.exit_code == 0
    assert "  - name: ucall\n    type: ucall\n    base: 0x0029_1000\n" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_help_names_the_kernel_version_the_layout_follows() -> None:
    help_text = " ".join(CliRunner().invoke(cli, ["selftests-layout", "--help"]).stdout.split())
    (version,) = re.findall(r"^# Sources: tools/testing/selftests/kvm of (Linux [\d.]+)\.$",
                            (SHIPPED / "selftests-arm64.yaml").read_text(), re.MULTILINE)
    assert f"selftests library of {version}" in help_text


@pytest.mark.parametrize("arch", list(ARCHES))
def test_help_gives_each_architectures_page_sizes_and_default(arch: str) -> None:
    # A loongarch64 user must not read "4K on most" and guess: the help names what each
    # architecture's selftests take, its default first, and the command takes that default.
    page_help = " ".join(CliRunner().invoke(cli, ["selftests-layout", "--help"]).stdout.split())
    guest_help = page_help.split("--guest-page-size", 1)[1].split("--host-page-size", 1)[0]
    guest_default = re.search(rf"\b{arch} (\d+)K", guest_help)
    assert guest_default is not None
    layout = CliRunner().invoke(cli, ["selftests-layout", "--arch", arch]).stdout
    assert f"{guest_default[1]} KiB guest pages" in layout.splitlines()[0]
