"""`gpa-plan record --layout DECLARED`: the recording of a program held to the layout it was
meant to build, on this host's /dev/kvm. The seed bug of KVM selftests: a test memslot added
at run time over the ucall address, so the guest's exit write lands in memory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from kvm_probe import kvm_available

from gpa_plan.cli import cli

DATA = Path(__file__).resolve().parent / "data" / "record"
needs_kvm = pytest.mark.skipif(not kvm_available(), reason="needs an x86_64 host with /dev/kvm")

# slot 0 as declared; then a test memslot of 1 MiB at 256 MiB: over the declared ucall page.
SELFTEST = """\
from gpa_plan.probe import kvm
k = kvm.Kvm()
memory = kvm.Memory(0x20_0000)
vm = kvm.create_vm(k)
assert kvm.set_memslot(vm, 0, 0, 0, 0x20_0000, memory.addr, False) is None
assert kvm.set_memslot(vm, 1, 0, 0x1000_0000, 0x10_0000, memory.addr, False) is None
"""


def record(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["record", *args])
    return result.exit_code, result.stdout, result.stderr


@needs_kvm
def test_a_memslot_over_the_declared_ucall_page_is_an_error(tmp_path: Path) -> None:
    script = tmp_path / "selftest.py"
    script.write_text(SELFTEST)
    out = tmp_path / "rec.yaml"
    status, stdout, stderr = record("--layout", str(DATA / "ucall-declared.yaml"), "-o",
                                    str(out), "--", sys.executable, str(script))
    assert status == 1, stderr
    assert "error[ucall-not-io]" in stdout
    assert f"{DATA / 'ucall-declared.yaml'}:8:34: warning[declared-missing]" in stdout
    assert "flash" in stdout
    # The recording itself is written whole, whatever the check says.
    recorded = out.read_text()
    assert "base: 0x1000_0000" in recorded and "ucall" not in recorded
    # check RECORDING --layout DECLARED says the same.
    again = CliRunner().invoke(cli, ["check", "-q", str(out), "--layout",
                                     str(DATA / "ucall-declared.yaml")])
    assert again.exit_code == 1
    assert {line for line in again.stdout.splitlines() if "[" in line} == {
        line for line in stdout.splitlines() if "[" in line}


def test_layout_needs_o(tmp_path: Path) -> None:
    status, _, stderr = record("--layout", str(DATA / "ucall-declared.yaml"), "--", "true")
    assert status == 2
    assert "--layout needs -o" in stderr


def test_a_declared_layout_that_does_not_load_stops_before_the_command_runs(
        tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("layout: 1\narch: x86_64\nmemslots: 3\n")
    marker = tmp_path / "ran"
    status, _, stderr = record("--layout", str(bad), "-o", str(tmp_path / "r.yaml"), "--",
                               "touch", str(marker))
    assert status == 1
    assert f"{bad}:3:" in stderr
    assert not marker.exists()


@needs_kvm
def test_traffic_no_declared_device_claims_is_a_stray_access(vmm: Path, tmp_path: Path) -> None:
    """vmm.c's guest exits at 0x90000-0x90104 (its MMIO device, declared here), 0xa0000 (a
    read of its coalesced zone), 0xb0000 (a zone it unregistered), 0xe0000 (its flash) and
    ports 0x3f8 (declared) and 0xf4: the device-less ones are stray."""
    binary = vmm
    declared = tmp_path / "declared.yaml"
    declared.write_text(
        "layout: 1\narch: x86_64\nmemslots:\n"
        "  - {name: flash, slot: 3, base: 0xe0000, size: 64K, readonly: true}\n"
        "devices:\n  - {name: dev, type: mmio, base: 0x90000, size: 0x200}\n"
        "ports:\n  - {name: com1, base: 0x3f8, size: 8}\n")
    status, stdout, stderr = record("--traffic", "--layout", str(declared), "-o",
                                    str(tmp_path / "rec.yaml"), "--", str(binary))
    assert status == 0, stdout + stderr
    stray = [line for line in stdout.splitlines() if "warning[stray-access]" in line]
    assert len(stray) == 2, stdout
    assert "1 writes of 1 byte exited to the VMM at 0x000b_0000, where no device" in stray[0]
    assert "1 writes of 1 byte exited to the VMM at port 0xf4, where no port range" in stray[1]
