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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layout_files import finding_lines, position, run

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


# -- the rules --------------------------------------------------------------------------------


def test_a_port_range_on_arm64_is_reached_by_no_guest(tmp_path: Path) -> None:
    path = layout(tmp_path, """\
        ports:
          - {name: bell, base: 0x510, size: 2, handler: ioeventfd}
        """, arch="arm64")
    result = run("check", path)
    assert result.exit_code == 0  # a warning
    assert finding_lines(result) == [
        f"{path}:6:24: warning[port-no-space] port range 'bell' (ports 0x510-0x511, handler "
        "ioeventfd): arm64 guests have no port I/O, so no guest access ever reaches it (KVM "
        "still registers a port ioeventfd or coalesced zone on KVM_PIO_BUS, where nothing reads "
        "it); drop it, or give the device an MMIO address"
    ]
    ports = json.loads(run("check", path, "--format", "json").stdout)["results"][0]["ports"]
    assert ports == [{"start": 0x510, "end": 0x512, "handler": "ioeventfd", "name": "bell",
                      "read": "unreached", "write": "unreached"}]


def test_a_port_range_past_0xffff_is_never_reached(tmp_path: Path) -> None:
    path = layout(tmp_path, """\
        ports:
          - {name: tail, base: 0xfff8, size: 0x10}
          - {name: beyond, base: 0x10100, size: 1}
        """)
    result = run("check", path)
    assert result.exit_code == 1
    tail = position(path, "size: 0x10}")
    beyond = position(path, "0x10100")
    assert finding_lines(result) == [
        f"{path}:{tail[0]}:{tail[1] + 6}: error[port-out-of-range] port range 'tail' (ports "
        "0xfff8-0x10007, handler user) reaches past port 0xffff: `in` and `out` take a 16-bit "
        "port, so the guest never reaches ports 0x10000 and up; keep it below 0x10000",
        f"{path}:{beyond[0]}:{beyond[1]}: error[port-out-of-range] port range 'beyond' (port "
        "0x10100, handler user) reaches past port 0xffff: `in` and `out` take a 16-bit port, so "
        "the guest never reaches it; keep it below 0x10000",
    ]


def test_port_ioeventfds_kvm_refuses_are_ioeventfd_invalid(tmp_path: Path) -> None:
    path = layout(tmp_path, """\
        ports:
          - {name: odd, base: 0x500, size: 4, handler: ioeventfd, length: 3}
          - {name: any, base: 0x504, size: 4, handler: ioeventfd, length: 0, datamatch: 1}
          - {name: wide, base: 0x508, size: 8, handler: ioeventfd}
          - {name: big, base: 0x510, size: 1, handler: ioeventfd, datamatch: 0x100}
        """)
    result = run("check", path)
    assert result.exit_code == 1
    odd, any_, wide, big = (
        position(path, needle) for needle in ("length: 3", "datamatch: 1", "{name: wide", "0x100}")
    )
    assert finding_lines(result) == [
        f"{path}:{odd[0]}:{odd[1] + 8}: error[ioeventfd-invalid] port ioeventfd 'odd' at port "
        "0x500 has length 3: KVM_IOEVENTFD fails with EINVAL (the length must be 1, 2, 4 or 8 "
        "bytes, or 0 for any), so there is no ioeventfd and every write here exits to the VMM; "
        "give the width of the guest's doorbell write",
        f"{path}:{any_[0]}:{any_[1] + 11}: error[ioeventfd-invalid] port ioeventfd 'any' at "
        "port 0x504 has a datamatch with length 0: KVM_IOEVENTFD fails with EINVAL (a datamatch "
        "needs a length), so there is no ioeventfd and every write here exits to the VMM; give "
        "the write's `length` (1, 2, 4 or 8) or drop `datamatch`",
        f"{path}:{wide[0]}:{wide[1]}: error[ioeventfd-invalid] port ioeventfd 'wide' at port "
        "0x508 has length 8, but `out` writes at most 4 bytes: KVM accepts it, but "
        "ioeventfd_in_range() never matches, so the eventfd is never signalled and every `out` "
        "here exits to the VMM; give the width of the guest's `out` (1, 2 or 4)",
        f"{path}:{big[0]}:{big[1]}: error[ioeventfd-invalid] port ioeventfd 'big' at port "
        "0x510 has datamatch 0x100, which no 1-byte write carries: KVM accepts it, but "
        "ioeventfd_in_range() never matches, so the eventfd is never signalled and every write "
        "exits to the VMM; use a value below 0x0000_0100 or a longer `length`",
    ]


def test_two_port_ioeventfds_one_out_could_match_are_refused_with_eexist(tmp_path: Path) -> None:
    path = layout(tmp_path, """\
        ports:
          - {name: com1, base: 0x3f8, size: 8}
          - {name: bell, base: 0x3f8, size: 1, handler: ioeventfd}
          - {name: bell2, base: 0x3f8, size: 1, handler: ioeventfd, datamatch: 3}
        """)
    result = run("check", path)
    assert result.exit_code == 1
    bell = position(path, "name: bell,")
    bell2 = position(path, "name: bell2,")
    assert finding_lines(result) == [
        f"{path}:{bell[0]}:{bell[1] + 18}: warning[port-overlap] port range 'bell' (port 0x3f8, "
        "handler ioeventfd) overlaps port range 'com1' (ports 0x3f8-0x3ff, handler user) at port "
        "0x3f8: KVM accepts it: the guest write that matches 'bell' (its base, length and "
        "datamatch) signals the eventfd of 'bell' instead of exiting; other writes and reads "
        "still exit to the VMM's 'com1' (how a VMM offloads a doorbell); move one of them "
        "unless that is meant",
        f"{path}:{bell2[0]}:{bell2[1] + 19}: error[port-overlap] port range 'bell2' (port "
        "0x3f8, handler ioeventfd) overlaps port range 'bell' (port 0x3f8, handler ioeventfd) "
        "at port 0x3f8: KVM refuses the second ioeventfd at the same address, with a length of "
        "0 on either or the same length and no distinct datamatch values "
        "(ioeventfd_check_collision()): KVM_IOEVENTFD for 'bell2' fails with EEXIST at set-up; "
        "give them different addresses, or the same length with distinct datamatch values; "
        "move one of them",
    ]


def test_port_ioeventfds_with_distinct_datamatch_are_accepted(tmp_path: Path) -> None:
    path = layout(tmp_path, """\
        ports:
          - {name: q0, base: 0x510, size: 2, handler: ioeventfd, datamatch: 0}
          - {name: q1, base: 0x510, size: 2, handler: ioeventfd, datamatch: 1}
        """)
    result = run("check", path)
    assert result.exit_code == 0
    assert [line.split("[")[1].split("]")[0] for line in finding_lines(result)] == [
        "port-overlap"
    ]
    assert "each keeps its own doorbell" in finding_lines(result)[0]


def test_an_ioeventfd_port_and_an_mmio_one_at_the_same_number_do_not_collide(
    tmp_path: Path,
) -> None:
    # ioeventfd_check_collision() compares bus_idx: KVM_PIO_BUS and KVM_MMIO_BUS are apart.
    path = layout(tmp_path, """\
        devices:
          - {name: mmio-bell, type: mmio, base: 0x4000_0000, size: 4, handler: ioeventfd}
        ports:
          - {name: port-bell, base: 0x4000, size: 4, handler: ioeventfd}
        """)
    result = run("check", path)
    assert result.exit_code == 0, result.output
    assert finding_lines(result) == []


def test_the_kernel_device_answers_where_it_overlaps_a_coalesced_zone(tmp_path: Path) -> None:
    path = layout(tmp_path, """\
        ports:
          - {name: pit, base: 0x40, size: 4, handler: kernel}
          - {name: zone, base: 0x40, size: 0x10, handler: coalesced}
        """)
    result = run("check", path)
    zone = position(path, "name: zone")
    assert finding_lines(result) == [
        f"{path}:{zone[0]}:{zone[1] + 18}: warning[port-overlap] port range 'zone' (ports "
        "0x40-0x4f, handler coalesced) overlaps port range 'pit' (ports 0x40-0x43, handler "
        "kernel) at ports 0x40-0x43: KVM accepts both on its PIO bus, which checks no overlap; "
        "'pit' comes first in KVM's PIO bus order (lower base, then the one ending first) and "
        "answers every access they share, 'zone' never sees one; move one of them unless that "
        "is meant"
    ]


def test_check_shows_the_ports_in_a_table_of_their_own(tmp_path: Path) -> None:
    path = layout(tmp_path, """\
        ports:
          - {name: com1, base: 0x3f8, size: 8}
          - {name: pit, base: 0x40, size: 4, handler: kernel}
          - {name: zone, base: 0x70, size: 2, handler: coalesced}
        """)
    lines = run("check", path).stdout.splitlines()
    start = lines.index(f"{path} ports (x86_64)")
    assert lines[start + 1:start + 5] == [
        "start   end (incl.)  size  kind       names  read       write         fetch",
        "0x0040  0x0043       4     kernel     pit    io-kernel  io-kernel     -",
        "0x0070  0x0071       2     coalesced  zone   io-exit    io-coalesced  -",
        "0x03f8  0x03ff       8     user       com1   io-exit    io-exit       -",
    ]  # by first port, as the region table is by address


def test_a_layout_without_ports_has_no_port_table_nor_json_key(tmp_path: Path) -> None:
    path = layout(tmp_path, "")
    assert "ports (" not in run("check", path).stdout
    result = json.loads(run("check", path, "--format", "json").stdout)["results"][0]
    assert "ports" not in result and "traffic" not in result


def test_rules_lists_the_port_rules() -> None:
    listed = run("rules").stdout
    for slug in ("port-no-space", "port-out-of-range", "port-overlap"):
        assert slug in listed


# -- KVM_IOEVENTFD's collisions, checked against a brute-force reading of the kernel's test ----

_BELL = st.tuples(
    st.sampled_from([0x510, 0x512]),
    st.sampled_from([0, 1, 2, 4]),
    st.one_of(st.none(), st.integers(0, 2)),
)


def _collides(a: tuple[int, int, int | None], b: tuple[int, int, int | None]) -> bool:
    """eventfd.c ioeventfd_check_collision(), as written there."""
    (port_a, len_a, match_a), (port_b, len_b, match_b) = a, b
    return port_a == port_b and (
        len_a == 0 or len_b == 0
        or (len_a == len_b and (match_a is None or match_b is None or match_a == match_b))
    )


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bells=st.lists(_BELL, min_size=1, max_size=8))
def test_the_refused_port_ioeventfds_are_those_the_kernel_refuses(
    tmp_path: Path, bells: list[tuple[int, int, int | None]]
) -> None:
    bells = [(port, length, None if length == 0 else match) for port, length, match in bells]
    lines = [f"  - {{name: b{i}, base: {port:#x}, size: 4, handler: ioeventfd, length: {length}"
             + (f", datamatch: {match}}}" if match is not None else "}")
             for i, (port, length, match) in enumerate(bells)]
    path = layout(tmp_path, "ports:\n" + "\n".join(lines) + "\n")
    accepted: list[tuple[int, int, int | None]] = []
    refused = set()
    for i, bell in enumerate(bells):
        if any(_collides(bell, other) for other in accepted):
            refused.add(f"b{i}")
        else:
            accepted.append(bell)
    found = json.loads(run("check", path, "--format", "json").stdout)["results"][0]["findings"]
    errors = {f["objects"][0] for f in found if f["rule"] == "port-overlap"
              and f["severity"] == "error"}
    assert errors == refused


def test_thousands_of_ioeventfds_on_one_port_and_of_traffic_entries_stay_linear(
    tmp_path: Path,
) -> None:
    count = 3000
    bells = "".join(f"  - {{name: b{i}, base: 0x510, size: 2, handler: ioeventfd, "
                    f"datamatch: {i}}}\n" for i in range(count))
    traffic = "".join(f"    - {{space: port, address: {0x1000 + i:#x}, width: 1, writes: 1}}\n"
                      for i in range(count))
    path = layout(tmp_path, "ports:\n" + bells + "observed:\n  traffic:\n" + traffic)
    declared = layout(tmp_path, "ports:\n  - {name: com1, base: 0x3f8, size: 8}\n",
                      name="declared.yaml")
    result = run("check", path, "--layout", declared, "--format", "json")
    findings = json.loads(result.stdout)["results"][0]["findings"]
    assert {f["rule"] for f in findings} == {"port-overlap", "stray-access"}
    assert all(f["severity"] == "warning" for f in findings)
