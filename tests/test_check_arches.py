"""`check --arch A --arch B`: a layout under another architecture than its own.

A device that exists only on the layout's own architecture is not created under the other
one: its range is what it is without it, and one note (not an error) per layout and
architecture says so. A layout whose own architecture lacks a device still gets
`device-wrong-arch` errors.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner, Result

import gpa_plan
from gpa_plan.arch.devices import ANY_ARCH, CATALOG
from gpa_plan.cli import cli
from gpa_plan.report.json_report import check_document

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "layouts"
PLAIN_ENV = {"COLUMNS": "160", "NO_COLOR": None, "FORCE_COLOR": None, "TTY_COMPATIBLE": None}
BOTH = ["--arch", "arm64", "--arch", "x86_64"]
# The shipped layouts of those two: a loongarch64 layout has the 16 KiB host pages of that
# kernel's default configuration, which no x86_64 host has (arch-limits under x86_64).
OF_BOTH = ["--exclude", "broken", "--exclude", "*loongarch64*"]

ARM64_GIC = """\
layout: 1
arch: arm64
pa_bits: 32
memslots:
  - {name: ram, base: 0x4000_0000, size: 1G}
devices:
  - {name: gicd, type: vgic-v3-dist, base: 0x0800_0000}
  - {name: gicr, type: vgic-v3-redist, base: 0x080a_0000, vcpus: 2}
  - {name: uart, type: mmio, base: 0x0900_0000, size: 4K}
"""


def run(*args: str) -> Result:
    return CliRunner(env=PLAIN_ENV).invoke(cli, list(args))


def write(tmp_path: Path, text: str, name: str = "vm.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_shipped_layouts_under_both_arches_give_no_device_wrong_arch() -> None:
    result = run("check", "--format", "json", *BOTH, *OF_BOTH, str(SHIPPED))
    document = json.loads(result.stdout)
    findings = [f for r in document["results"] for f in r["findings"]]
    wrong_arch = [f for f in findings if f["rule"] == "device-wrong-arch"]
    assert [f for f in wrong_arch if f["severity"] != "note"] == []
    # One note per layout with a device of its own arch only, under the arch that is not its
    # own (a KVM selftests riscv64 VM has no device at all).
    layouts = sorted({r["file"] for r in document["results"]})
    assert len(layouts) == len(
        [p for p in SHIPPED.glob("*.yaml") if "loongarch64" not in p.name]
    )
    assert sorted(f["file"] for f in wrong_arch) == [
        path for path in layouts if _has_a_device_of_one_arch(Path(path))
    ]


def _has_a_device_of_one_arch(path: Path) -> bool:
    named = re.findall(r"type: ([\w-]+)", path.read_text())
    return any(CATALOG[t].arches != ANY_ARCH for t in named if t in CATALOG)


def test_the_pre_commit_example_passes_on_the_shipped_layouts() -> None:
    # The README's optional pre-commit args, as the hook runs them.
    result = run("check", "--quiet", *BOTH, *OF_BOTH, str(SHIPPED))
    assert result.exit_code == 0, result.stdout
    assert "error[" not in result.stdout
    assert "device-wrong-arch" in result.stdout  # the notes


def test_vgic_in_an_x86_64_layout_is_still_device_wrong_arch(tmp_path: Path) -> None:
    text = "layout: 1\narch: x86_64\ndevices:\n  - {name: gicd, type: vgic-v3-dist, base: 0x0}\n"
    path = write(tmp_path, text)
    result = run("check", "--quiet", *BOTH, path)
    assert result.exit_code == 1
    out = result.stdout.splitlines()
    assert out[0].startswith(
        f"{path}:4:24: error[device-wrong-arch] vgic-v3-dist 'gicd' [0x0000_0000, 0x0001_0000): "
        "KVM has no vgic-v3-dist on x86_64, the layout's arch"
    )
    # The layout is wrong on its own terms, so it is an error under arm64 too, where a vGIC
    # exists: checking a layout under another arch never hides a mistake it has on its own.
    assert out[1:] == [out[0], "1 file checked: 2 errors, 0 warnings"]
    alone = run("check", "--quiet", "--arch", "arm64", path)
    assert alone.exit_code == 1
    assert alone.stdout.splitlines() == [out[0], "1 file checked: 1 error, 0 warnings"]


def test_foreign_arch_table_shows_the_vgic_range_as_without_the_device(tmp_path: Path) -> None:
    path = write(tmp_path, ARM64_GIC)
    result = run("check", *BOTH, path)
    assert result.exit_code == 0
    out = [line.rstrip() for line in result.stdout.splitlines()]
    x86 = out.index(f"{path} (x86_64, 32-bit)")
    # [0, 0x0900_0000) holds only the vGIC frames on arm64: under x86_64 it is a hole, as
    # if the VMM had not created them, and no row names gicd or gicr.
    assert [row.split() for row in out[x86 + 1 : x86 + 7]] == [
        ["start", "end", "(incl.)", "size", "kind", "names", "read", "write", "fetch"],
        ["0x0000_0000", "0x08ff_ffff", "144", "MiB", "unbacked", "io-exit", "io-exit", "vm-error"],
        [
            "0x0900_0000",
            "0x0900_0fff",
            "4",
            "KiB",
            "device",
            "uart",
            "io-exit",
            "io-exit",
            "vm-error",
        ],
        ["0x0900_1000", "0x3fff_ffff", "~880", "MiB", "unbacked", "io-exit", "io-exit", "vm-error"],
        ["0x4000_0000", "0x7fff_ffff", "1", "GiB", "ram", "ram", "memory", "memory", "memory"],
        ["0x8000_0000", "0xffff_ffff", "2", "GiB", "unbacked", "io-exit", "io-exit", "vm-error"],
    ]
    arm64 = [row.split()[4:] for row in out[2:x86]]
    assert ["device", "gicd", "io-kernel", "io-kernel", "guest-fault"] in arm64


def test_the_note_appears_once_per_layout_and_arch(tmp_path: Path) -> None:
    path = write(tmp_path, ARM64_GIC)
    result = run("check", *BOTH, path)
    notes = [line for line in result.stdout.splitlines() if ": note[" in line]
    assert notes == [
        f"{path}:2:7: note[device-wrong-arch] checked as x86_64, this arm64 layout's "
        "vgic-v3-dist 'gicd', vgic-v3-redist 'gicr' are left out: KVM has no such devices on "
        "x86_64, so a VMM there would not create them, and their ranges are what they are "
        "without them (accesses exit to the VMM where nothing else claims the range)"
    ]
    assert result.stdout.splitlines()[-1] == "1 file checked: 0 errors, 0 warnings"
    # Named twice, the arch is still checked once, so the note is said once.
    twice = run("check", "--quiet", "--arch", "x86_64", "--arch", "x86_64", path)
    assert twice.stdout.count(": note[") == 1


def test_left_out_devices_are_not_checked_as_devices_under_the_foreign_arch(
    tmp_path: Path,
) -> None:
    # A vGIC in RAM is shadowed on arm64; under x86_64 no vGIC exists to be shadowed.
    text = ARM64_GIC.replace("base: 0x0800_0000", "base: 0x4000_0000")
    result = run("check", "--quiet", *BOTH, write(tmp_path, text))
    rules = [line.split(" ", 2)[1] for line in result.stdout.splitlines()[:-1]]
    # arm64's findings come first, then x86_64's.
    assert rules == ["error[device-shadowed]", "note[device-wrong-arch]"]


def test_ignoring_the_rule_drops_the_note(tmp_path: Path) -> None:
    result = run(
        "check", "--quiet", "--ignore", "device-wrong-arch", *BOTH, write(tmp_path, ARM64_GIC)
    )
    assert result.stdout.splitlines() == ["1 file checked: 0 errors, 0 warnings"]


def test_strict_does_not_fail_on_a_note(tmp_path: Path) -> None:
    assert run("check", "--strict", *BOTH, write(tmp_path, ARM64_GIC)).exit_code == 0


def test_library_check_file_gives_what_the_cli_prints(tmp_path: Path) -> None:
    path = write(tmp_path, ARM64_GIC)
    results = gpa_plan.check_file(path, ["arm64", "x86_64"])
    assert [[f.severity for f in r.findings] for r in results] == [[], ["note"]]
    cli_json = run("check", "--format", "json", *BOTH, path)
    assert json.loads(cli_json.stdout) == check_document(results)


def test_a_page_size_the_checked_arch_lacks_says_which_to_write() -> None:
    # A loongarch64 layout (16 KiB host pages) under x86_64 and riscv64, which have 4 KiB only.
    layout = str(SHIPPED / "selftests-loongarch64.yaml")
    result = run("check", "-q", "--arch", "x86_64", "--arch", "riscv64", layout)
    page_lines = [line for line in result.stdout.splitlines() if "page_size 16 KiB" in line]
    assert len(page_lines) == 2
    for arch, line in zip(["x86_64", "riscv64"], page_lines, strict=True):
        assert f"write the page_size of the {arch} host the VM runs on (page_size: 4K)" in line


def test_a_file_that_does_not_load_is_reported_once_whatever_the_arches(tmp_path: Path) -> None:
    # Loading never depends on the --arch checked under: one failure, printed and counted
    # once in text, while JSON keeps one result per arch.
    bad = tmp_path / "bad.yaml"
    bad.write_text("layout: 1\narch: arm64\nmemslots: [\n")
    arches = [arg for name in ("arm64", "x86_64", "riscv64") for arg in ("--arch", name)]
    for quiet in ([], ["-q"]):
        result = CliRunner().invoke(cli, ["check", *quiet, *arches, str(bad)])
        assert result.exit_code == 1
        assert result.output.count("error[yaml-syntax]") == 1, result.output
        assert result.output.rstrip().endswith("1 file checked: 1 error, 0 warnings")
    result = CliRunner().invoke(cli, ["check", "--format", "json", *arches, str(bad)])
    document = json.loads(result.output)
    assert [r["arch"] for r in document["results"]] == ["arm64", "x86_64", "riscv64"]
