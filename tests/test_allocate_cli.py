"""`gpa-plan allocate` end to end: real files in a scratch directory, exact outputs.

The golden files in tests/data/allocate/ were worked out by hand; the comments in the input
layouts say where each `auto` lands and why.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from gpa_plan.check.run import check_file
from gpa_plan.cli import cli

DATA = Path(__file__).resolve().parent / "data" / "allocate"
PORT_IO_NOTE = (
    "x86_64: KVM selftests deliver ucalls by port I/O (UCALL_PIO_PORT 0x1000), not MMIO; "
    "the ucall address here is a valid MMIO page for VMMs that want one"
)
NO_ROOM_LAYOUT = """\
layout: 1
arch: arm64
devices:
  - name: gicd
    type: vgic-v3-dist
    base: 0x0800_0000
  - name: its
    type: vgic-its
    base: auto
    within: [0x0800_0000, 0x0802_0000]
"""
NO_ROOM_MESSAGE = (
    "full.yaml:9:11: error[no-room] cannot place device 'its': no free 64 KiB-aligned range "
    "of 128 KiB in [0x0800_0000, 0x0802_0000): 1 occupied range covers it: device 'gicd' "
    "[0x0800_0000, 0x0801_0000); largest free gap 64 KiB at 0x0801_0000; widen its `within`, "
    "lower its `align`, or free room in the layout\n"
)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty current directory for the command."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield cwd


def allocate(*args: str) -> Result:
    return CliRunner().invoke(cli, ["allocate", *args], catch_exceptions=False)


def golden(name: str) -> str:
    return (DATA / name).read_text()


def copy(name: str, as_name: str | None = None) -> Path:
    """Copy a data file into the current directory, byte for byte."""
    target = Path(as_name or name)
    shutil.copyfile(DATA / name, target)
    return target


def check_rules(path: Path | str) -> list[str]:
    (result,) = check_file(path)
    assert result.valid
    return [f.rule for f in result.findings if f.severity != "note"]


def check_cli(path: Path | str) -> Result:
    return CliRunner().invoke(cli, ["check", str(path)], catch_exceptions=False)


def leftovers() -> list[str]:
    """Temporary files a writer could leave beside its target."""
    return sorted(p.name for p in Path(".").iterdir() if p.name.endswith(".tmp"))


# -- auto placement, every format ---------------------------------------------------------


def test_auto_entries_land_where_the_layout_comments_say(workdir: Path) -> None:
    copy("planner-arm64.yaml")
    result = allocate("planner-arm64.yaml")
    assert result.exit_code == 0
    assert result.stderr == ""
    assert result.stdout == golden("planner-arm64.out.yaml")


def test_yaml_output_checks_clean(workdir: Path) -> None:
    copy("planner-arm64.yaml")
    Path("out.yaml").write_text(allocate("planner-arm64.yaml").stdout)
    checked = check_cli("out.yaml")
    assert checked.exit_code == 0, checked.output
    assert check_rules("out.yaml") == []


def test_json_output_has_the_yaml_keys_with_integers(workdir: Path) -> None:
    copy("planner-arm64.yaml")
    result = allocate("planner-arm64.yaml", "--format", "json")
    assert result.exit_code == 0
    assert result.stdout == golden("planner-arm64.out.json")
    as_json = json.loads(result.stdout)
    assert as_json == yaml.safe_load(allocate("planner-arm64.yaml").stdout)
    assert all(isinstance(d["base"], int) for d in as_json["devices"])


def test_output_is_the_same_on_every_run(workdir: Path) -> None:
    copy("planner-arm64.yaml")
    for fmt in ("yaml", "json", "c", "env"):
        first = allocate("planner-arm64.yaml", "--ucall-memslot", "--format", fmt).stdout
        assert allocate("planner-arm64.yaml", "--ucall-memslot", "--format", fmt).stdout == first


def test_c_header_defines_base_size_and_end_per_region(workdir: Path) -> None:
    copy("planner-arm64.yaml")
    result = allocate("planner-arm64.yaml", "--format", "c")
    assert result.exit_code == 0
    assert result.stdout == golden("planner-arm64.out.h")


def test_c_header_compiles_and_its_include_guard_works(workdir: Path) -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    copy("planner-x86_64.yaml")
    result = allocate("planner-x86_64.yaml", "--ucall", "--format", "c", "-o", "layout.h")
    assert result.exit_code == 0
    # Without a working guard the second include would redefine GPA_UCALL_BASE to a
    # different value, which gcc reports (an error with -Werror).
    Path("use.c").write_text(
        '#include "layout.h"\n'
        "_Static_assert(GPA_UCALL_BASE == 0xe0000ULL, \"ucall\");\n"
        "_Static_assert(GPA_HPET_END == GPA_HPET_BASE + GPA_HPET_SIZE, \"end\");\n"
        "_Static_assert(GPA_PCI_HOLE_END == 0xf0000000ULL, \"hole\");\n"
        "#ifndef GPA_PLAN_PLANNER_X86_H\n#error no include guard\n#endif\n"
        "#undef GPA_UCALL_BASE\n"
        "#define GPA_UCALL_BASE 1\n"
        '#include "layout.h"\n'
        "_Static_assert(GPA_UCALL_BASE == 1, \"the second include was skipped\");\n"
        "unsigned long long top(void) { return GPA_LAPIC_END; }\n"
    )
    for source in ("layout.h", "use.c"):
        compiled = subprocess.run(
            [gcc, "-Wall", "-Werror", "-fsyntax-only", "-x", "c", source],
            capture_output=True,
            text=True,
            check=False,
        )
        assert compiled.returncode == 0, compiled.stderr


def test_env_output_can_be_sourced_by_sh(workdir: Path) -> None:
    copy("planner-arm64.yaml")
    result = allocate("planner-arm64.yaml", "--format", "env", "-o", "out.env")
    assert result.exit_code == 0
    assert Path("out.env").read_text() == golden("planner-arm64.out.env")
    shell = subprocess.run(
        ["sh", "-c", '. ./out.env && echo "$GPA_UCALL_BASE $GPA_TOP_END $GPA_VIRTIO1_BASE"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout == "0x80100000 0x100000000 0xa000200\n"


# -- x86_64 and the ucall page ------------------------------------------------------------


def test_x86_ucall_avoids_smm_memory_and_the_apic_access_page(workdir: Path) -> None:
    copy("planner-x86_64.yaml")
    result = allocate("planner-x86_64.yaml", "--ucall")
    assert result.exit_code == 0
    assert result.stdout == golden("planner-x86_64.ucall.yaml")
    Path("out.yaml").write_text(result.stdout)
    assert check_rules("out.yaml") == []


def test_x86_ucall_notes_port_io_on_stderr_and_in_every_commented_format(workdir: Path) -> None:
    copy("planner-x86_64.yaml")
    for fmt, comment in (("yaml", f"# {PORT_IO_NOTE}\n"), ("c", f"/* {PORT_IO_NOTE} */\n"),
                         ("env", f"# {PORT_IO_NOTE}\n")):
        result = allocate("planner-x86_64.yaml", "--ucall", "--format", fmt)
        assert result.exit_code == 0
        assert result.stderr == f"note: {PORT_IO_NOTE}\n"
        assert comment in result.stdout
    assert allocate("planner-x86_64.yaml", "--ucall", "--format", "c").stdout == golden(
        "planner-x86_64.ucall.h"
    )
    assert allocate("planner-x86_64.yaml", "--ucall", "--format", "env").stdout == golden(
        "planner-x86_64.ucall.env"
    )
    as_json = allocate("planner-x86_64.yaml", "--ucall", "--format", "json")
    assert json.loads(as_json.stdout)["devices"][-1] == {
        "name": "ucall",
        "type": "ucall",
        "base": 0xE0000,
    }


SBI_NOTE = (
    "riscv64: KVM selftests deliver ucalls by an SBI call (KVM_EXIT_RISCV_SBI), not MMIO; "
    "the ucall address here is a valid MMIO page for VMMs that want one"
)


def test_riscv64_ucall_notes_the_sbi_call_on_stderr_and_in_the_yaml(workdir: Path) -> None:
    # lib/riscv/ucall.c (Linux 7.2.13): ucalls are sbi_ecall()s, so no MMIO page is at stake.
    Path("rv.yaml").write_text(
        "layout: 1\narch: riscv64\n"
        "memslots:\n  - {name: ram, base: 0x8000_0000, size: 128M}\n"
        "devices:\n  - {name: uart, type: mmio, base: 0x1000_0000, size: 0x100}\n"
    )
    result = allocate("rv.yaml", "--ucall")
    assert result.exit_code == 0, result.output
    assert result.stderr == f"note: {SBI_NOTE}\n"
    assert f"# {SBI_NOTE}\n" in result.stdout
    without = allocate("rv.yaml")
    assert without.stderr == "" and "KVM_EXIT_RISCV_SBI" not in without.stdout


def test_without_file_arch_picks_the_builtin_riscv64_layout(workdir: Path) -> None:
    result = allocate("--ucall", "--arch", "riscv64", "--format", "json")
    assert result.exit_code == 0, result.output
    assert result.stderr == f"note: {SBI_NOTE}\n"
    document = json.loads(result.stdout)
    assert document["name"] == "kvm-selftests-riscv64-default"
    # The first free page past slot 0 (657 pages of 4 KiB), as on arm64.
    assert document["devices"][-1] == {"name": "ucall", "type": "ucall", "base": 0x29_1000}


def test_x86_without_ucall_has_no_note(workdir: Path) -> None:
    copy("planner-x86_64.yaml")
    result = allocate("planner-x86_64.yaml")
    assert result.exit_code == 0
    assert result.stderr == ""
    assert "UCALL_PIO_PORT" not in result.stdout


def test_ucall_memslot_checks_clean_and_turns_a_clobbering_memslot_into_eexist(
    workdir: Path,
) -> None:
    result = allocate("--ucall-memslot", "-o", "guarded.yaml")
    assert result.exit_code == 0
    assert Path("guarded.yaml").read_text() == golden("selftests-arm64.ucall-memslot.yaml")
    assert check_rules("guarded.yaml") == []
    assert allocate("--ucall", "-o", "plain.yaml").exit_code == 0

    # A test that later adds a read-write memslot right past slot 0, over the ucall page:
    data_slot = "  - name: data\n    base: 0x0029_1000\n    size: 64K\ndevices:\n"
    for name in ("guarded", "plain"):
        text = Path(f"{name}.yaml").read_text().replace("devices:\n", data_slot)
        Path(f"{name}-clobbered.yaml").write_text(text)
    # ... is refused by KVM (EEXIST) where the ucall page has its read-only memslot,
    assert check_rules("guarded-clobbered.yaml") == ["memslot-overlap"]
    # ... and silently eats the ucall writes where it has none.
    assert check_rules("plain-clobbered.yaml") == ["ucall-not-io"]


def test_ucall_memslot_twice_adds_no_second_memslot(workdir: Path) -> None:
    assert allocate("--ucall-memslot", "-o", "once.yaml").exit_code == 0
    result = allocate("once.yaml", "--ucall-memslot", "-o", "twice.yaml")
    assert result.exit_code == 0
    body = [line for line in Path("twice.yaml").read_text().splitlines() if line[:1] != "#"]
    assert body == [line for line in Path("once.yaml").read_text().splitlines() if line[:1] != "#"]
    assert check_rules("twice.yaml") == []


def test_ucall_memslot_refuses_a_fixed_ucall_off_the_host_page(workdir: Path) -> None:
    Path("big-pages.yaml").write_text(
        "layout: 1\narch: arm64\npage_size: 64K\nguest_page_size: 4K\nmemslots:\n"
        "  - {name: ram, base: 0, size: 1M}\ndevices:\n"
        "  - {name: ucall, type: ucall, base: 0x20_1000}\n"
    )
    result = allocate("big-pages.yaml", "--ucall-memslot", "-o", "out.yaml")
    assert result.exit_code == 1
    assert result.stderr == (
        "big-pages.yaml:8:38: error[no-room] cannot cover ucall 'ucall' at 0x0020_1000 with a "
        "read-only memslot: KVM needs memslots aligned to the 64 KiB host page (EINVAL "
        "otherwise); move the ucall page to a multiple of 0x0001_0000 or set its base to auto\n"
    )
    assert not Path("out.yaml").exists()
    # Placed by the planner, the same page is aligned for its memslot.
    Path("auto.yaml").write_text(
        Path("big-pages.yaml").read_text().replace("base: 0x20_1000", "base: auto")
    )
    assert allocate("auto.yaml", "--ucall-memslot", "-o", "out.yaml").exit_code == 0
    assert check_rules("out.yaml") == []


# -- which layout without FILE ------------------------------------------------------------


def test_without_file_in_an_empty_directory_the_builtin_arm64_layout_is_used(
    workdir: Path,
) -> None:
    result = allocate("--ucall")
    assert result.exit_code == 0
    assert result.stderr == ""
    assert result.stdout == golden("selftests-arm64.ucall.yaml")
    assert "    base: 0x0029_1000\n" in result.stdout
    assert list(workdir.iterdir()) == []


def test_without_file_arch_picks_the_builtin_x86_layout(workdir: Path) -> None:
    result = allocate("--ucall", "--arch", "x86_64", "--format", "json")
    assert result.exit_code == 0
    assert result.stderr == f"note: {PORT_IO_NOTE}\n"
    document = json.loads(result.stdout)
    assert document["name"] == "kvm-selftests-x86_64-default"
    assert document["devices"][-1] == {"name": "ucall", "type": "ucall", "base": 0x29_1000}


def test_without_file_gpa_plan_yaml_in_the_current_directory_wins(workdir: Path) -> None:
    copy("planner-arm64.yaml", "gpa-plan.yaml")
    result = allocate("--arch", "x86_64")
    assert result.exit_code == 0
    expected = golden("planner-arm64.out.yaml").replace("planner-arm64.yaml", "gpa-plan.yaml")
    assert result.stdout == expected


# -- -o and failures ----------------------------------------------------------------------


def test_output_file_gets_exactly_what_stdout_would(workdir: Path) -> None:
    copy("planner-arm64.yaml")
    Path("out.yaml").write_text("old contents\n")
    os.chmod("out.yaml", 0o640)
    result = allocate("planner-arm64.yaml", "-o", "out.yaml")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert Path("out.yaml").read_text() == golden("planner-arm64.out.yaml")
    assert stat.S_IMODE(Path("out.yaml").stat().st_mode) == 0o640
    assert leftovers() == []


def test_new_output_file_gets_the_permissions_open_would_give_it(workdir: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        result = allocate("--format", "c", "-o", "new.h")
    finally:
        os.umask(old_umask)
    assert result.exit_code == 0
    assert stat.S_IMODE(Path("new.h").stat().st_mode) == 0o644


def test_no_room_exits_1_naming_entry_size_alignment_and_window(workdir: Path) -> None:
    Path("full.yaml").write_text(NO_ROOM_LAYOUT)
    result = allocate("full.yaml")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == NO_ROOM_MESSAGE


def test_no_room_creates_no_output_file(workdir: Path) -> None:
    Path("full.yaml").write_text(NO_ROOM_LAYOUT)
    result = allocate("full.yaml", "-o", "out.yaml")
    assert result.exit_code == 1
    assert result.stderr == NO_ROOM_MESSAGE
    assert sorted(p.name for p in workdir.iterdir()) == ["full.yaml"]


def test_no_room_leaves_an_existing_output_file_untouched(workdir: Path) -> None:
    Path("full.yaml").write_text(NO_ROOM_LAYOUT)
    before = b"# keep me\r\nbytes \xff as they are\n"
    Path("out.h").write_bytes(before)
    mtime = Path("out.h").stat().st_mtime_ns
    result = allocate("full.yaml", "--format", "c", "-o", "out.h")
    assert result.exit_code == 1
    assert Path("out.h").read_bytes() == before
    assert Path("out.h").stat().st_mtime_ns == mtime
    assert leftovers() == []


def test_invalid_layout_exits_1_with_its_position_and_writes_nothing(workdir: Path) -> None:
    Path("bad.yaml").write_text(
        "layout: 1\narch: arm64\nmemslots:\n  - name: a\n    base: 12Q\n    size: 4K\n"
    )
    result = allocate("bad.yaml", "-o", "out.yaml")
    assert result.exit_code == 1
    assert result.stderr == (
        "bad.yaml:5:11: error[schema] `base` of memslot 'a': '12Q' is not a number: 'Q' is not "
        "a unit; write an integer (4096, 0x1000, 0b1000) or a size with a binary unit (4K, "
        "64KiB, 2M, 1G)\n"
    )
    assert not Path("out.yaml").exists()


def test_missing_file_is_a_usage_error(workdir: Path) -> None:
    result = CliRunner().invoke(cli, ["allocate", "nope.yaml"])
    assert result.exit_code == 2


# -- --in-place ---------------------------------------------------------------------------


def test_in_place_replaces_only_auto_values(workdir: Path) -> None:
    copy("planner-arm64.yaml")
    result = allocate("--in-place", "planner-arm64.yaml")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert Path("planner-arm64.yaml").read_text() == golden("planner-arm64.inplace.yaml")
    assert check_rules("planner-arm64.yaml") == []
    assert leftovers() == []
    # Nothing is `auto` any more: a second run changes nothing.
    assert allocate("--in-place", "planner-arm64.yaml").exit_code == 0
    assert Path("planner-arm64.yaml").read_text() == golden("planner-arm64.inplace.yaml")


@pytest.mark.parametrize("case", ["block", "empty-devices", "no-devices"])
def test_in_place_appends_the_ucall_device_and_memslot(workdir: Path, case: str) -> None:
    name = copy(f"inplace-{case}.yaml")
    result = allocate("--in-place", "--ucall-memslot", str(name))
    assert result.exit_code == 0, result.output
    assert name.read_text() == golden(f"inplace-{case}.after.yaml")
    checked = check_cli(name)
    assert checked.exit_code == 0, checked.output
    assert check_rules(name) == []


def test_in_place_refuses_to_append_to_a_flow_style_list(workdir: Path) -> None:
    name = copy("inplace-flow.yaml")
    before = name.read_bytes()
    result = allocate("--in-place", "--ucall", str(name))
    assert result.exit_code == 1
    assert result.stderr == (
        "inplace-flow.yaml: error[in-place] `devices` is a flow-style list; add 'ucall' by hand or "
        "make the list block-style, then run again\n"
    )
    assert name.read_bytes() == before
    assert leftovers() == []


def test_in_place_fills_auto_inside_a_flow_style_list(workdir: Path) -> None:
    name = copy("inplace-flow.yaml")
    assert allocate("--in-place", str(name)).exit_code == 0
    assert name.read_text() == golden("inplace-flow.yaml").replace(
        "base: auto,", "base: 0x0000_0000,"
    )
    assert check_rules(name) == []


def test_in_place_keeps_crlf_line_endings(workdir: Path) -> None:
    source = golden("inplace-no-devices.yaml") + "  - {name: d, base: auto, size: 4K}\n"
    Path("crlf.yaml").write_bytes(source.replace("\n", "\r\n").encode())
    result = allocate("--in-place", "--ucall", "crlf.yaml")
    assert result.exit_code == 0, result.output
    expected = source.replace("base: auto", "base: 0x0000_0000") + (
        "devices:\n  - name: ucall\n    type: ucall\n    base: 0x8000_0000\n"
    )
    assert Path("crlf.yaml").read_bytes() == expected.replace("\n", "\r\n").encode()
    assert check_rules("crlf.yaml") == []


def test_in_place_keeps_a_byte_order_mark(workdir: Path) -> None:
    source = (
        "# Größe: 1 GiB\nlayout: 1\narch: arm64\nmemslots:\n"
        "  - {name: ram, base: auto, size: 1G}\n"
    )
    Path("bom.yaml").write_bytes(b"\xef\xbb\xbf" + source.encode())
    assert allocate("--in-place", "bom.yaml").exit_code == 0
    expected = source.replace("base: auto", "base: 0x0000_0000")
    assert Path("bom.yaml").read_bytes() == b"\xef\xbb\xbf" + expected.encode()


def test_in_place_takes_no_output_and_no_builtin_layout(workdir: Path) -> None:
    copy("planner-arm64.yaml")
    before = Path("planner-arm64.yaml").read_bytes()
    with_output = CliRunner().invoke(
        cli, ["allocate", "--in-place", "planner-arm64.yaml", "-o", "out.yaml"]
    )
    assert with_output.exit_code == 2
    assert Path("planner-arm64.yaml").read_bytes() == before
    assert not Path("out.yaml").exists()
    assert CliRunner().invoke(cli, ["allocate", "--in-place"]).exit_code == 2


@pytest.mark.parametrize("fmt", ["json", "c", "env"])
def test_in_place_refuses_another_format_than_yaml(workdir: Path, fmt: str) -> None:
    copy("planner-arm64.yaml")
    before = Path("planner-arm64.yaml").read_bytes()
    result = CliRunner().invoke(
        cli, ["allocate", "--in-place", "--format", fmt, "planner-arm64.yaml"]
    )
    assert result.exit_code == 2
    assert result.stderr.endswith(
        f"Error: --in-place keeps FILE a YAML layout; --format {fmt} is for what allocate "
        "prints or writes with -o\n"
    )
    assert Path("planner-arm64.yaml").read_bytes() == before


def test_in_place_no_room_leaves_the_file_untouched(workdir: Path) -> None:
    Path("full.yaml").write_text(NO_ROOM_LAYOUT)
    result = allocate("--in-place", "full.yaml")
    assert result.exit_code == 1
    assert result.stderr == NO_ROOM_MESSAGE
    assert Path("full.yaml").read_text() == NO_ROOM_LAYOUT
    assert leftovers() == []


def test_names_that_read_as_one_identifier_get_numbered_suffixes() -> None:
    from gpa_plan.plan.emit import to_env

    regions = [("a", 0, 1), ("a-", 1, 1), ("a_2", 2, 1), ("a.", 3, 1)]
    idents = [line.split("=")[0] for line in to_env(regions, [], "x").splitlines()[1::3]]
    assert idents == ["GPA_A_BASE", "GPA_A_2_BASE", "GPA_A_2_2_BASE", "GPA_A_3_BASE"]


@pytest.mark.parametrize("fmt", ["c", "env"])
def test_thousands_of_names_of_one_identifier_are_numbered_in_bounded_time(
    tmp_path: Path, fmt: str
) -> None:
    n = 20_000
    symbols = "-./+"
    names = [f"{symbols[i % 4]}a{symbols[i // 4 % 4]}{i // 16 * '.'}" for i in range(16)]
    names = [f"{a}{'-' * (i // 16 % 8)}{'+' * (i // 128)}" for i, a in enumerate(names * 1250)]
    assert len(set(names)) == n
    devices = "".join(
        f"  - {{name: {json.dumps(name)}, type: mmio, base: {0x1_0000_0000 + i * 4096:#x}, "
        "size: 4K}\n"
        for i, name in enumerate(names)
    )
    layout = tmp_path / "many.yaml"
    layout.write_text(f"layout: 1\narch: arm64\npa_bits: 48\ndevices:\n{devices}")
    # Trying every suffix taken before for each name took about 25 s here.
    done = subprocess.run(
        [sys.executable, "-m", "gpa_plan", "allocate", str(layout), "--format", fmt],
        capture_output=True, text=True, timeout=20, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"GPA_A_{n}_BASE" in done.stdout


def test_without_file_or_arch_the_built_in_layout_is_the_selftests_default_arch(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default lives once, in the registry: change it there and allocate follows.
    from gpa_plan import arch
    from gpa_plan.plan import allocate_file

    for name in ("x86_64", "riscv64"):
        monkeypatch.setattr(allocate_file, "SELFTESTS_DEFAULT_ARCH", name)
        assert allocate("--ucall").stdout == allocate("--ucall", "--arch", name).stdout
    assert arch.SELFTESTS_DEFAULT_ARCH in CliRunner().invoke(cli, ["allocate", "--help"]).stdout
