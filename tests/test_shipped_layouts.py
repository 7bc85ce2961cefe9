"""Every shipped layout checks clean; every broken one triggers the rules it names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpa_plan.check.run import check_file
from gpa_plan.cli import cli
from gpa_plan.elf.program import load_programs

LAYOUTS = Path(__file__).resolve().parent.parent / "layouts"
SHIPPED = sorted(LAYOUTS.glob("*.yaml"))
BROKEN = sorted((LAYOUTS / "broken").glob("*.yaml"))


def test_the_issue_list_of_layouts_is_shipped() -> None:
    names = {p.stem for p in SHIPPED}
    for wanted in (
        "selftests-arm64", "selftests-x86_64", "qemu-virt-arm64", "qemu-virt-arm64-gicv2",
        "qemu-virt-arm64-highmem", "qemu-q35-x86_64", "qemu-pc-x86_64", "firecracker-x86_64",
        "firecracker-aarch64", "cloud-hypervisor-x86_64", "cloud-hypervisor-aarch64",
        "crosvm-x86_64", "crosvm-aarch64", "kvmtool-arm64", "kvmtool-x86_64",
    ):
        assert wanted in names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_layout_checks_clean_even_strictly(path: Path) -> None:
    (result,) = check_file(path)
    assert result.valid
    # Notes (what some hosts refuse, without a host profile) are never counted, even --strict.
    assert [f for f in result.findings if f.severity != "note"] == []


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_layout_cites_its_sources(path: Path) -> None:
    comments = [line for line in path.read_text().splitlines() if line.lstrip().startswith("#")]
    assert len(comments) >= 5


def test_check_over_the_whole_folder_exits_zero() -> None:
    result = CliRunner().invoke(cli, ["check", "--strict", *map(str, SHIPPED)])
    assert result.exit_code == 0, result.output
    assert f"{len(SHIPPED)} files checked: 0 errors, 0 warnings" in result.output


def _directives(path: Path, name: str) -> list[str]:
    return re.findall(rf"^# {name}: (\S+)", path.read_text(), re.M)


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.name)
def test_broken_layout_triggers_exactly_the_rules_it_names(path: Path) -> None:
    expected = _directives(path, "expect")
    assert expected, f"{path.name} names no rule"
    elves = [str(path.parent / name) for name in _directives(path, "elf")]
    mode = (_directives(path, "elf-mode") or ["physical"])[0]
    (result,) = check_file(path, programs=load_programs(elves), elf_mode=mode)
    assert sorted({f.rule for f in result.findings}) == sorted(set(expected))
    options = [arg for elf in elves for arg in ("--elf", elf)] + ["--elf-mode", mode]
    result_cli = CliRunner().invoke(cli, ["check", str(path), *options])
    assert result_cli.exit_code == 1
    for rule in expected:
        assert f"error[{rule}]" in result_cli.output or f"warning[{rule}]" in result_cli.output


def test_the_issue_list_of_broken_examples_is_shipped() -> None:
    rules = {rule for path in BROKEN for rule in _directives(path, "expect")}
    assert {
        "ucall-not-io", "device-shadowed", "memslot-overlap", "device-misaligned",
        "elf-va-collision",
    } <= rules


def test_selftests_ucall_clobbered_by_a_memslot_fails_with_ucall_not_io() -> None:
    (result,) = check_file(LAYOUTS / "broken" / "ucall-clobbered-by-memslot.yaml")
    (finding,) = [f for f in result.findings if f.rule == "ucall-not-io"]
    assert "land in guest memory and never exit" in finding.message
    assert "test hangs" in finding.message
