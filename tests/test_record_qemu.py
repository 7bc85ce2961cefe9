"""`gpa-plan record` of Debian's QEMU (7.2) building its q35 and pc machines with -accel kvm on
this host's /dev/kvm, stopped before the first guest instruction (-S).

The same run prints QEMU's own memory tree (`info mtree -f`, tests/qemu_x86.py), so each
recording is held to what QEMU itself says of that run:

- the memslots are those `import qemu-mtree` reads from the tree (exact for QEMU 7.2);
- the coalesced zones are what the tree cannot show. QEMU 7.2 coalesces the VGA window
  (hw/display/vga.c vga_init(): memory_region_set_coalescing() of "vga-lowmem") and, in the
  port space, the RTC's index port (hw/rtc/mc146818rtc.c rtc_realizefn():
  memory_region_add_coalescing(&s->coalesced_io, 0, 1)) and the PCI configuration index
  register (hw/pci-host/q35.c q35_host_realize(), hw/pci-host/i440fx.c
  i440fx_pcihost_realize(): memory_region_add_coalescing(&phb->conf_mem, 0, 4)). KVM gets
  them per section of the flat view (accel/kvm/kvm-all.c kvm_coalesce_pio_add(),
  kvm_coalesce_mmio_region()), so the reset-control port QEMU maps over 0xcf9 with a higher
  priority splits the 4 ports of "pci-conf-idx" in two: the expected zones are the sections
  the I/O tree names "pci-conf-idx" and "rtc-index".
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from qemu_x86 import flat_memory, machine_command, qemu_missing, run_machine

from gpa_plan.importers.qemu_mtree import import_qemu_mtree

pytestmark = pytest.mark.skipif(qemu_missing() is not None, reason=str(qemu_missing()))


def recorded(machine: str, tmp_path: Path) -> tuple[dict, str]:
    out = tmp_path / f"{machine}.yaml"
    command = [sys.executable, "-m", "gpa_plan", "record", "-o", str(out), "--",
               *machine_command(machine)]
    printed = run_machine(command)
    return yaml.safe_load(out.read_text()), printed


def io_sections(printed: str, names: set[str]) -> set[tuple[int, int]]:
    """(base, size) of the sections of QEMU's I/O flat view whose region is in ``names``."""
    io_view = printed[printed.index('AS "I/O"'):]
    io_view = io_view[:io_view.index("\n\n")]
    found = set()
    for first, last, name in re.findall(r"^  ([0-9a-f]+)-([0-9a-f]+) \(prio -?\d+, [^)]*\): "
                                        r"(\S+)", io_view, re.MULTILINE):
        if name in names:
            found.add((int(first, 16), int(last, 16) - int(first, 16) + 1))
    return found


def slots(entries: list[dict]) -> list[tuple[int, int, bool]]:
    return sorted((m["base"], m["size"], bool(m.get("readonly"))) for m in entries)


@pytest.mark.parametrize("machine", ["q35", "pc"])
def test_the_memslots_are_those_of_qemus_memory_tree(machine: str, tmp_path: Path) -> None:
    layout, printed = recorded(machine, tmp_path)
    tree = import_qemu_mtree(flat_memory(printed)).document
    assert slots(layout["memslots"]) == slots(tree["memslots"])
    assert len(layout["memslots"]) >= 4


@pytest.mark.parametrize("machine", ["q35", "pc"])
def test_the_coalesced_zones_the_memory_tree_cannot_show(machine: str, tmp_path: Path) -> None:
    layout, printed = recorded(machine, tmp_path)
    zones = {(d["base"], d["size"]) for d in layout["devices"]
             if d.get("handler") == "coalesced"}
    assert zones == {(0xA0000, 0x20000)}
    port_zones = {(p["base"], p["size"]) for p in layout["ports"]
                  if p["handler"] == "coalesced"}
    expected = io_sections(printed, {"pci-conf-idx", "rtc-index"})
    assert (0x70, 1) in expected and (0xCF8, 1) in expected and (0xCFA, 2) in expected
    assert port_zones == expected
    # The memory tree shows the VGA window as a plain I/O region: nothing says it coalesces.
    assert re.search(r"00000000000a0000-00000000000bffff \(prio 1, i/o\): vga-lowmem\n",
                     printed)


@pytest.mark.parametrize("machine", ["q35", "pc"])
def test_qemus_in_kernel_irqchip_and_pit(machine: str, tmp_path: Path) -> None:
    layout, _ = recorded(machine, tmp_path)
    assert {(d["type"], d["base"]) for d in layout["devices"] if d["type"] != "mmio"} == {
        ("ioapic", 0xFEC00000), ("lapic", 0xFEE00000)}
    kernel_ports = {(p["name"], p["base"], p["size"]) for p in layout["ports"]
                    if p["handler"] == "kernel"}
    assert ("pit", 0x40, 4) in kernel_ports and ("pic", 0x20, 2) in kernel_ports
    # QEMU probes KVM_IOEVENTFD by assigning and deassigning a handful (accel/kvm/kvm-all.c
    # kvm_check_many_ioeventfds()): none is left when the machine is built.
    assert not [d for d in layout["devices"] if d.get("handler") == "ioeventfd"]


def test_qemu_runs_the_same_untraced() -> None:
    """The harness itself: QEMU answers the monitor and quits, with or without record."""
    printed = run_machine(machine_command("q35"))
    assert "FlatView #" in printed
    assert subprocess.run([*machine_command("q35")], input="quit\n", capture_output=True,
                          text=True, timeout=60).returncode == 0


def test_qemu_gives_kvm_its_private_pages_below_the_bios(tmp_path: Path) -> None:
    """target/i386/kvm/kvm.c kvm_arch_init(): the identity map at 0xfeffc000, the TSS in
    the three pages after it; a machine stopped with -S has KVM refuse nothing."""
    layout, _ = recorded("q35", tmp_path)
    assert layout["kvm_private"] == {"tss": 0xFEFF_D000, "identity_map": 0xFEFF_C000}
    assert "observed" not in layout
