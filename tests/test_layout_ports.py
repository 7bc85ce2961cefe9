"""The port I/O space of a layout (`ports:`) and the guest_memfd memslot flag: what the format
takes, what it refuses (with line and column), what `check` says and shows, and that
`allocate` writes both back out.

Kernel facts (Linux 7.2.13): arch/x86/kvm/x86.c emulator_pio_in_out() takes a 16-bit port and
goes to KVM_PIO_BUS before KVM_EXIT_IO; virt/kvm/eventfd.c kvm_assign_ioeventfd() and
ioeventfd_check_collision() check PIO ioeventfds as they check MMIO ones (same bus only);
virt/kvm/kvm_main.c check_memory_region_flags() knows KVM_MEM_GUEST_MEMFD."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import yaml
from click.testing import CliRunner, Result

from gpa_plan.cli import cli

HEAD = """\
layout: 1
arch: {arch}
memslots:
  - {{name: ram, base: 0, size: 1G}}
"""


def layout(tmp_path: Path, body: str, arch: str = "x86_64", name: str = "vm.yaml") -> Path:
    path = tmp_path / name
    path.write_text(HEAD.format(arch=arch) + textwrap.dedent(body))
    return path


def position(path: Path, needle: str) -> tuple[int, int]:
    """1-based line and column of the first ``needle`` in the file."""
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if needle in text:
            return number, text.index(needle) + 1
    raise AssertionError(needle)


def run(*args: str | Path) -> Result:
    return CliRunner(env={"COLUMNS": "400"}).invoke(cli, [str(a) for a in args])


def finding_lines(result: Result) -> list[str]:
    return [line for line in result.stdout.splitlines() if ": error[" in line
            or ": warning[" in line]


# -- the format ------------------------------------------------------------------------------


def test_port_ranges_load_and_check_clean(tmp_path: Path) -> None:
    path = layout(tmp_path, """\
        ports:
          - {name: com1, base: 0x3f8, size: 8}
          - {name: pic, base: 0x20, size: 2, handler: kernel}
        """)
    result = run("check", path)
    assert result.exit_code == 0, result.output
    assert finding_lines(result) == []


def test_an_unknown_key_in_a_port_range_names_the_allowed_ones(tmp_path: Path) -> None:
    path = layout(tmp_path, """\
        ports:
          - {name: com1, base: 0x3f8, size: 8, handler: user, colour: red}
        """)
    result = run("check", path)
    assert result.exit_code == 1
    line, column = position(path, "colour")
    assert finding_lines(result) == [
        f"{path}:{line}:{column}: error[schema] unknown key `colour` in a port range (allowed: "
        "name, base, size, handler, length, datamatch)"
    ]


def test_a_port_handler_outside_the_four_is_refused_at_its_value(tmp_path: Path) -> None:
    path = layout(tmp_path, """\
        ports:
          - {name: com1, base: 0x3f8, size: 8, handler: vmm}
        """)
    result = run("check", path)
    line, column = position(path, "vmm")
    assert finding_lines(result) == [
        f"{path}:{line}:{column}: error[schema] `handler` of port range 'com1' must be user, "
        "kernel, ioeventfd or coalesced, not 'vmm'"
    ]


def test_port_names_are_unique_with_every_other_name(tmp_path: Path) -> None:
    path = layout(tmp_path, """\
        ports:
          - {name: ram, base: 0x3f8, size: 8}
        """)
    result = run("check", path)
    line, column = position(path, "name: ram, base: 0x3f8")
    assert finding_lines(result) == [
        f"{path}:{line}:{column + 6}: error[schema] name 'ram' is already used by a memslot; "
        "names must be unique across the file"
    ]


def test_length_and_datamatch_need_an_ioeventfd_port(tmp_path: Path) -> None:
    path = layout(tmp_path, """\
        ports:
          - {name: com1, base: 0x3f8, size: 8, datamatch: 1}
          - {name: bell, base: 0x510, size: 2, handler: ioeventfd, length: 4}
          - {name: none, base: 0x600, size: 0}
        """)
    result = run("check", path)
    datamatch = position(path, "datamatch: 1")
    length = position(path, "length: 4")
    size = position(path, "size: 0")
    assert finding_lines(result) == [
        f"{path}:{datamatch[0]}:{datamatch[1]}: error[schema] `datamatch` is only for a port "
        "range with `handler: ioeventfd`",
        f"{path}:{length[0]}:{length[1] + 8}: error[schema] `length` 4 is more than the port "
        "range's size 2: the `out` that signals the ioeventfd would reach past it; make `size` "
        "at least 4",
        f"{path}:{size[0]}:{size[1] + 6}: error[schema] port range 'none' has size 0",
    ]


def test_guest_memfd_is_taken_and_changes_no_outcome(tmp_path: Path) -> None:
    plain = layout(tmp_path, "", name="plain.yaml")
    flagged = tmp_path / "flagged.yaml"
    flagged.write_text(plain.read_text().replace("size: 1G}", "size: 1G, guest_memfd: true}"))
    regions = [
        json.loads(run("check", p, "--format", "json").stdout)["results"][0]["regions"]
        for p in (plain, flagged)
    ]
    assert regions[0] == regions[1]
    assert regions[0][0]["read"] == "memory"


def test_guest_memfd_must_be_a_boolean(tmp_path: Path) -> None:
    path = layout(tmp_path, "")
    path.write_text(path.read_text().replace("size: 1G}", "size: 1G, guest_memfd: 1}"))
    result = run("check", path)
    line, column = position(path, "guest_memfd: 1")
    assert finding_lines(result) == [
        f"{path}:{line}:{column + 13}: error[schema] `guest_memfd` of memslot 'ram' must be "
        "true or false, not 1"
    ]


def test_allocate_writes_ports_guest_memfd_and_observed_back_unchanged(tmp_path: Path) -> None:
    path = layout(tmp_path, """\
        devices:
          - {name: uart, type: mmio, base: auto, size: 4K}
        ports:
          - {name: com1, base: 0x3f8, size: 8}
          - {name: bell, base: 0x510, size: 2, handler: ioeventfd, datamatch: 1}
        observed:
          traffic_path: tracefs
          traffic:
            - {space: port, address: 0x3f8, width: 1, writes: 40}
          refused:
            - {call: KVM_IOEVENTFD, errno: EEXIST, detail: "port 0x510: yes"}
        """)
    path.write_text(path.read_text().replace("size: 1G}", "size: 1G, guest_memfd: true}"))
    out = tmp_path / "out.yaml"
    result = run("allocate", path, "-o", out)
    assert result.exit_code == 0, result.output
    original = yaml.safe_load(path.read_text())
    written = yaml.safe_load(out.read_text())
    assert written["ports"] == original["ports"]
    assert written["observed"] == original["observed"]
    assert written["memslots"][0]["guest_memfd"] is True
    again = tmp_path / "again.yaml"
    assert run("allocate", out, "-o", again).exit_code == 0
    assert yaml.safe_load(again.read_text()) == written
