"""`check RECORDING --layout DECLARED`: a recording held to the layout its program was meant
to build (gpa_plan.check.declared): the declared user devices merged in and judged by every
rule, declared entries the recording lacks, traffic no device claims, and the usage errors."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layout_files import at, finding_lines, run

from gpa_plan.check.declared import ArchMismatch, _runs, against_declared, merge_declared
from gpa_plan.check.run import load_layout
from gpa_plan.layout.loader import load_text
from gpa_plan.layout.models import Traffic
from gpa_plan.layout.resolved import resolve
from gpa_plan.layout.validate import validate_layout

RECORDED = """\
layout: 1
name: recorded
arch: {arch}
memslots:
  - {{name: slot0, slot: 0, base: 0x0, size: 0x10_0000}}
  - {{name: slot1, slot: 1, base: 0x1000_0000, size: 0x1_0000, readonly: true}}
"""

DECLARED = """\
layout: 1
name: declared
arch: {arch}
memslots:
  - {{name: ram, base: 0x0, size: 1M}}
"""


def write(tmp_path: Path, name: str, head: str, body: str = "", arch: str = "x86_64") -> Path:
    path = tmp_path / name
    path.write_text(head.format(arch=arch) + textwrap.dedent(body))
    return path






def test_a_recording_that_matches_its_declared_layout_is_clean(tmp_path: Path) -> None:
    recorded = write(tmp_path, "rec.yaml", RECORDED)
    declared = write(tmp_path, "decl.yaml", DECLARED, """\
          - {name: flash, base: 0x1000_0000, size: 64K, readonly: true}
        devices:
          - {name: uart, type: mmio, base: 0x2000_0000, size: 4K}
        """)
    result = run("check", recorded, "--layout", declared)
    assert result.exit_code == 0, result.output
    assert finding_lines(result) == []


def test_a_recorded_memslot_over_the_declared_ucall_page_is_ucall_not_io(tmp_path: Path) -> None:
    recorded = write(tmp_path, "rec.yaml", RECORDED, arch="arm64")
    declared = write(tmp_path, "decl.yaml", DECLARED, """\
        devices:
          - {name: ucall, type: ucall, base: 0x8_0000}
        """, arch="arm64")
    result = run("check", recorded, "--layout", declared)
    assert result.exit_code == 1
    (line,) = finding_lines(result)
    assert line.startswith(
        f"{at(declared, '0x8_0000')}: error[ucall-not-io] ucall 'ucall' at [0x0008_0000, "
        "0x0008_1000): guest writes there ('slot0') land in guest memory and never exit, so "
        "the VMM never sees the ucall and the test hangs; "
    )


def test_an_auto_ucall_is_merged_where_the_declared_planner_puts_it(tmp_path: Path) -> None:
    recorded = write(tmp_path, "rec.yaml", RECORDED, arch="arm64")
    recorded.write_text(
        recorded.read_text() + "  - {name: test-data, slot: 2, base: 0x10_0000, size: 1M}\n"
    )
    declared = write(tmp_path, "decl.yaml", DECLARED, """\
        devices:
          - {name: ucall, type: ucall, base: auto}
        """, arch="arm64")
    result = run("check", recorded, "--layout", declared)
    (line,) = finding_lines(result)
    assert line.startswith(
        f"{at(declared, 'auto')}: error[ucall-not-io] ucall 'ucall' at [0x0010_0000, "
        "0x0010_1000): guest writes there ('test-data') land in guest memory"
    )


def test_a_recorded_memslot_over_a_declared_uart_shadows_it(tmp_path: Path) -> None:
    recorded = write(tmp_path, "rec.yaml", RECORDED)
    declared = write(tmp_path, "decl.yaml", DECLARED, """\
        devices:
          - {name: uart, type: mmio, base: 0x8_0000, size: 4K}
        reserved:
          - {name: firmware, base: 0x1000_8000, size: 4K}
        """)
    result = run("check", recorded, "--layout", declared)
    assert result.exit_code == 1
    assert finding_lines(result) == [
        f"{at(declared, '0x8_0000')}: error[device-shadowed] mmio 'uart' [0x0008_0000, "
        "0x0008_1000) lies in read-write memory (memslot 'slot0' covers [0x0008_0000, "
        "0x0008_1000) of it): the memslot is mapped (kvm_set_memory_region() checks no device "
        "range), so guest reads and writes there hit memory and never reach the device; move "
        "the device out of the memslot or split the memslot around it",
        f"{at(recorded, '0x1000_0000')}: error[reserved-overlap] 'slot1' [0x1000_0000, "
        "0x1001_0000) intrudes into reserved range 'firmware' [0x1000_8000, 0x1000_9000) at "
        "[0x1000_8000, 0x1000_9000); move it out",
    ]


def test_declared_entries_the_recording_lacks_are_declared_missing(tmp_path: Path) -> None:
    recorded = write(tmp_path, "rec.yaml", RECORDED, """\
        devices:
          - {name: zone-a, type: mmio, base: 0xd000_1000, size: 4K, handler: coalesced}
        """)
    declared = write(tmp_path, "decl.yaml", DECLARED, """\
          - {name: flash, base: 0x1000_0000, size: 128K, readonly: true}
          - {name: smram, as_id: 1, base: 0xa_0000, size: 128K}
        devices:
          - {name: ioapic, type: ioapic}
          - {name: zone, type: mmio, base: 0xd000_1000, size: 8K, handler: coalesced}
        ports:
          - {name: bell, base: 0x510, size: 2, handler: ioeventfd}
        """)
    result = run("check", recorded, "--layout", declared)
    assert result.exit_code == 0  # warnings
    suffix = "; make the program create it, or correct the declared layout"
    assert finding_lines(result) == [
        f"{at(declared, '0x1000_0000')}: warning[declared-missing] declared memslot 'flash' at "
        "[0x1000_0000, 0x1002_0000) (128 KiB, read-only) was not created by the recorded "
        "program; the recording has memslot 'slot1' (size 0x10000, not 0x20000)" + suffix,
        f"{at(declared, '0xa_0000')}: warning[declared-missing] declared memslot 'smram' of "
        "address space 1 at [0x000a_0000, 0x000c_0000) (128 KiB, read-write) was not created "
        "by the recorded program; the recording has no memslot of address space 1 there"
        + suffix,
        f"{at(declared, '{name: ioapic')}: warning[declared-missing] declared ioapic 'ioapic' "
        "at [0xfec0_0000, 0xfec0_0100) (256 bytes) was not created by the recorded program; "
        "the recording has no ioapic there" + suffix,
        f"{at(declared, '0xd000_1000')}: warning[declared-missing] declared coalesced zone "
        "'zone' at [0xd000_1000, 0xd000_3000) (8 KiB) was not created by the recorded program; "
        "the recording has coalesced zone 'zone-a' (size 0x1000, not 0x2000)" + suffix,
        f"{at(declared, '0x510')}: warning[declared-missing] declared port ioeventfd 'bell' at "
        "ports 0x510-0x511 (2 ports) was not created by the recorded program; the recording "
        "has no port ioeventfd there" + suffix,
    ]


def test_traffic_no_device_claims_is_a_stray_access(tmp_path: Path) -> None:
    recorded = write(tmp_path, "rec.yaml", RECORDED, """\
        devices:
          - {name: bell, type: mmio, base: 0xd000_0000, size: 4, handler: ioeventfd}
        observed:
          traffic:
            - {space: mmio, address: 0xd000_0000, width: 4, reads: 2}
            - {space: mmio, address: 0x2000_0010, width: 4, writes: 5}
            - {space: mmio, address: 0x1000_0040, width: 2, writes: 1}
            - {space: mmio, address: 0x3000_0000, width: 8, reads: 3, writes: 1}
            - {space: port, address: 0x3f8, width: 1, writes: 40}
            - {space: port, address: 0x80, width: 1, writes: 7}
            - {space: mmio, address: 0x4000_0001, width: 1, reads: 1}
            - {space: mmio, address: 0x4000_0000, width: 1, writes: 2}
            - {space: mmio, address: 0x4000_0002, width: 2, reads: 4, writes: 1}
            - {space: mmio, address: 0x4000_0000, width: 4, reads: 1}
            - {space: mmio, address: 0x4000_0005, width: 1, reads: 1}
            - {space: port, address: 0x4000, width: 1, writes: 1}
        """)
    declared = write(tmp_path, "decl.yaml", DECLARED, """\
        devices:
          - {name: uart, type: mmio, base: 0x2000_0000, size: 4K}
        ports:
          - {name: com1, base: 0x3f8, size: 8}
        """)
    result = run("check", recorded, "--layout", declared)
    assert result.exit_code == 0
    # 0x4000_0000-0x4000_0003, touched byte by byte and as a whole, is one run: one finding
    # at its first entry; 0x4000_0005 is apart (0x4000_0004 was never reached), and so is
    # port 0x4000 (another space).
    assert finding_lines(result) == [
        f"{at(recorded, '{space: mmio, address: 0x3000_0000')}: warning[stray-access] 3 reads "
        "and 1 writes of 8 bytes exited to the VMM at 0x3000_0000, where no device of "
        f"{declared} or of the recording is: a stray access; declare the device the guest "
        "meant, or fix the guest's address",
        f"{at(recorded, '{space: port, address: 0x80')}: warning[stray-access] 0 reads and 7 "
        f"writes of 1 byte exited to the VMM at port 0x80, where no port range of {declared} "
        "or of the recording is: a stray access; declare the device the guest meant, or fix "
        "the guest's address",
        f"{at(recorded, '{space: mmio, address: 0x4000_0001')}: warning[stray-access] 6 reads "
        "and 3 writes of 1, 2 and 4 bytes exited to the VMM at 0x4000_0000-0x4000_0003 (4 "
        f"bytes, 4 entries), where no device of {declared} or of the recording is: a stray "
        "access; declare the device the guest meant, or fix the guest's address",
        f"{at(recorded, '{space: mmio, address: 0x4000_0005')}: warning[stray-access] 1 reads "
        "and 0 writes of 1 byte exited to the VMM at 0x4000_0005, where no device of "
        f"{declared} or of the recording is: a stray access; declare the device the guest "
        "meant, or fix the guest's address",
        f"{at(recorded, '{space: port, address: 0x4000')}: warning[stray-access] 0 reads and 1 "
        f"writes of 1 byte exited to the VMM at port 0x4000, where no port range of {declared} "
        "or of the recording is: a stray access; declare the device the guest meant, or fix "
        "the guest's address",
    ]


def test_traffic_gives_no_stray_access_without_a_declared_layout(tmp_path: Path) -> None:
    recorded = write(tmp_path, "rec.yaml", RECORDED, """\
        observed:
          traffic:
            - {space: mmio, address: 0x3000_0000, width: 8, reads: 3}
        """)
    result = run("check", recorded)
    assert result.exit_code == 0
    assert finding_lines(result) == []


def test_json_places_each_finding_in_its_own_file(tmp_path: Path) -> None:
    recorded = write(tmp_path, "rec.yaml", RECORDED, """\
        observed:
          refused:
            - {call: KVM_IOEVENTFD, errno: EEXIST}
        """)
    declared = write(tmp_path, "decl.yaml", DECLARED + "  - {{name: high, base: 4G, size: 1G}}\n")
    result = run("check", recorded, "--layout", declared, "--format", "json")
    document = json.loads(result.stdout)
    (only,) = document["results"]
    assert only["file"] == str(recorded)
    assert [(f["rule"], f["file"], f["line"]) for f in only["findings"]] == [
        ("declared-missing", str(declared), 6),
        ("refused-call", str(recorded), 9),
    ]


def test_a_declared_layout_of_another_arch_is_a_usage_error(tmp_path: Path) -> None:
    recorded = write(tmp_path, "rec.yaml", RECORDED)
    declared = write(tmp_path, "decl.yaml", DECLARED, arch="arm64")
    result = run("check", recorded, "--layout", declared)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert (
        f"{declared} describes an arm64 VM but {recorded} was recorded on x86_64: --layout "
        "takes a declared layout of the recording's own architecture; give an x86_64 layout"
    ) in " ".join(result.stderr.split())


def test_arch_is_not_taken_with_layout(tmp_path: Path) -> None:
    recorded = write(tmp_path, "rec.yaml", RECORDED)
    declared = write(tmp_path, "decl.yaml", DECLARED)
    result = run("check", recorded, "--layout", declared, "--arch", "x86_64")
    assert result.exit_code == 2
    assert "leave out --arch" in result.stderr


def test_a_declared_layout_that_cannot_be_read_exits_2(tmp_path: Path) -> None:
    recorded = write(tmp_path, "rec.yaml", RECORDED)
    result = run("check", recorded, "--layout", tmp_path / "missing.yaml")
    assert result.exit_code == 2
    assert "missing.yaml" in result.stderr


def test_a_declared_layout_that_does_not_load_says_where_and_exits_1(tmp_path: Path) -> None:
    recorded = write(tmp_path, "rec.yaml", RECORDED)
    declared = write(tmp_path, "decl.yaml", DECLARED, "colour: red\n")
    result = run("check", recorded, "--layout", declared)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{declared}:6:1: error[schema] unknown key `colour`")


def test_the_library_function_gives_one_result_under_the_recordings_arch(tmp_path: Path) -> None:
    recorded = load_layout(write(tmp_path, "rec.yaml", RECORDED, arch="arm64"))
    declared = load_layout(write(tmp_path, "decl.yaml", DECLARED, """\
        devices:
          - {name: ucall, type: ucall, base: 0x8_0000}
        """, arch="arm64"))
    result = against_declared(recorded, declared)
    assert result.arch == "arm64"
    assert [f.rule for f in result.findings] == ["ucall-not-io"]
    other = load_layout(write(tmp_path, "other.yaml", DECLARED))
    try:
        against_declared(recorded, other)
    except ArchMismatch as err:
        assert "recorded on arm64" in str(err)
    else:
        raise AssertionError("an x86_64 declared layout was taken for an arm64 recording")


# -- the merge keeps every recorded entry -------------------------------------------------------

_NAMES = st.sampled_from(["a", "b", "ram", "uart", "ucall", "slot0", "com1"])
_PAGES = st.integers(min_value=0, max_value=64)


@st.composite
def _layout_text(draw: st.DrawFn) -> str:
    memslots = draw(st.lists(st.tuples(_PAGES, st.integers(1, 8)), max_size=4))
    devices = draw(st.lists(st.tuples(_PAGES, st.sampled_from(["user", "kernel", "ioeventfd"])),
                            max_size=4))
    ports = draw(st.lists(st.tuples(st.integers(0, 0x100), st.sampled_from(["user", "kernel"])),
                          max_size=3))
    reserved = draw(st.lists(_PAGES, max_size=2))
    names = iter(f"{draw(_NAMES)}{i}" for i in range(100))
    sections = {
        "memslots": [f"{{name: {next(names)}, base: {b * 0x1000:#x}, size: {n * 0x1000:#x}}}"
                     for b, n in memslots],
        "devices": [f"{{name: {next(names)}, type: mmio, base: {0x100_0000 + b * 0x1000:#x}, "
                    f"size: 4, handler: {h}}}" for b, h in devices],
        "ports": [f"{{name: {next(names)}, base: {p:#x}, size: 2, handler: {h}}}"
                  for p, h in ports],
        "reserved": [f"{{name: {next(names)}, base: {0x200_0000 + b * 0x1000:#x}, "
                     "size: 0x1000}" for b in reserved],
    }
    lines = ["layout: 1", "arch: x86_64"]
    for key, entries in sections.items():
        lines.append(f"{key}: [{', '.join(entries)}]")
    return "\n".join(lines) + "\n"


def _loaded(text: str, name: str) -> object:
    from gpa_plan.check.run import LoadedLayout

    doc = load_text(text, name)
    layout = validate_layout(doc)
    return LoadedLayout(doc, layout, resolve(layout), ())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recorded=_layout_text(), declared=_layout_text())
def test_merging_a_declared_layout_never_drops_or_changes_a_recorded_entry(
    recorded: str, declared: str
) -> None:
    from gpa_plan.check.run import LoadedLayout

    mine = _loaded(recorded, "rec.yaml")
    theirs = _loaded(declared, "decl.yaml")
    assert isinstance(mine, LoadedLayout) and isinstance(theirs, LoadedLayout)
    merged = merge_declared(mine, theirs).loaded
    for section in ("memslots", "devices", "reserved", "ports"):
        before = getattr(mine.layout, section)
        after = getattr(merged.layout, section)
        assert after[: len(before)] == before
    assert merged.resolved.memslots == mine.resolved.memslots
    assert merged.resolved.devices[: len(mine.resolved.devices)] == mine.resolved.devices
    names = [e.name for s in ("memslots", "devices", "reserved", "ports")
             for e in getattr(merged.layout, s)]
    assert len(names) == len(set(names))


SHIPPED = sorted((Path(__file__).parent.parent / "layouts").glob("*.yaml"))


def test_a_layout_checked_against_itself_says_what_it_says_alone() -> None:
    # Nothing is merged twice, and nothing it declares is missing from itself.
    for path in SHIPPED:
        alone = json.loads(run("check", path, "--format", "json").stdout)
        itself = json.loads(run("check", path, "--layout", path, "--format", "json").stdout)
        assert itself["results"][0]["findings"] == alone["results"][0]["findings"], path
        assert itself["results"][0]["regions"] == alone["results"][0]["regions"], path


@given(st.lists(st.tuples(st.sampled_from(["mmio", "port"]), st.integers(0, 40),
                          st.sampled_from([1, 2, 4])), max_size=12))
def test_stray_runs_are_the_touching_groups_of_each_space(
        entries: list[tuple[str, int, int]]) -> None:
    traffic = [Traffic(space, address, width, 1, 0) for space, address, width in entries]
    runs = _runs(list(enumerate(traffic)))
    assert sorted(i for group in runs for i, _ in group) == list(range(len(traffic)))
    spans = []
    for group in runs:
        assert [i for i, _ in group] == sorted(i for i, _ in group)  # file order within a run
        assert len({t.space for _, t in group}) == 1
        covered = sorted((t.address, t.address + t.width) for _, t in group)
        end = covered[0][1]
        for start, stop in covered[1:]:  # no gap inside a run
            assert start <= end
            end = max(end, stop)
        spans.append((group[0][1].space, covered[0][0], end))
    for a in spans:  # runs of one space neither touch nor overlap
        for b in spans:
            if a is not b and a[0] == b[0]:
                assert a[2] < b[1] or b[2] < a[1]
