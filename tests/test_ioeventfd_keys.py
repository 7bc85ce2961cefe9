"""ioeventfds as KVM_IOEVENTFD takes them: a `length` and an optional `datamatch` (layout
keys), the writes that signal the eventfd and those that exit, and what KVM refuses.

Facts from virt/kvm/eventfd.c, Linux 7.2.13: kvm_assign_ioeventfd() (lengths 0, 1, 2, 4, 8;
no datamatch with length 0: EINVAL), ioeventfd_in_range() (the exact base; the exact length
unless it is 0; the datamatch value if any), ioeventfd_check_collision() (EEXIST)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from layout_files import position, run

from gpa_plan.layout.resolved import Doorbell, doorbell_length

HEAD = """\
layout: 1
arch: {arch}
pa_bits: 36
memslots:
  - {{name: ram, base: 0x4000_0000, size: 1M}}
devices:
"""


def layout(tmp_path: Path, devices: str, arch: str = "x86_64") -> Path:
    path = tmp_path / "vm.yaml"
    path.write_text(HEAD.format(arch=arch) + textwrap.indent(textwrap.dedent(devices), "  "))
    return path




def check_findings(path: Path) -> list[dict[str, object]]:
    result = run("check", path, "--format", "json")
    document = json.loads(result.stdout)
    found: list[dict[str, object]] = document["results"][0]["findings"]
    return found


def explain(path: Path, *args: str) -> list[dict[str, object]]:
    result = run("explain", path, *args, "--format", "json")
    assert result.exit_code == 0, result.output
    answers: list[dict[str, object]] = json.loads(result.stdout)["answers"]
    return answers


# --- the keys and their defaults -------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "length"), [(1, 1), (2, 2), (4, 4), (8, 8), (3, 0), (16, 0), (0x1000, 0)]
)
def test_length_defaults_to_the_size_when_kvm_takes_it_else_any_width(
    size: int, length: int
) -> None:
    assert doorbell_length(None, size) == length
    assert doorbell_length(2, size) == 2


def test_a_doorbell_is_signalled_only_by_its_exact_base_length_and_value() -> None:
    bell = Doorbell(0x1000, 4, 7)
    assert bell.signalled_by(0x1000, 4, 7)
    assert not bell.signalled_by(0x1000, 4, 8)
    assert not bell.signalled_by(0x1000, 2, 7)
    assert not bell.signalled_by(0x1002, 4, 7)
    anything = Doorbell(0x1000, 0, None)
    assert anything.signalled_by(0x1000, 1, 0) and anything.signalled_by(0x1000, 8, 99)
    assert not anything.signalled_by(0x1001, 1, 0)


def test_length_and_datamatch_belong_to_ioeventfds_only(tmp_path: Path) -> None:
    path = layout(
        tmp_path,
        """\
        - {name: uart, type: mmio, base: 0xd000_0000, size: 4K, length: 4}
        - {name: ring, type: mmio, handler: coalesced, base: 0xd000_1000, size: 4K, datamatch: 1}
        """,
    )
    result = run("check", path)
    assert result.exit_code == 1
    line, column = position(path, "length")
    assert f"{path}:{line}:{column}: error[schema] `length` is only for an mmio device with " in (
        result.stdout
    )
    line, column = position(path, "datamatch")
    assert f"{path}:{line}:{column}: error[schema] `datamatch` is only for an mmio device " in (
        result.stdout
    )


def test_a_length_past_the_device_is_a_layout_error(tmp_path: Path) -> None:
    path = layout(
        tmp_path,
        "- {name: kick, type: mmio, handler: ioeventfd, base: 0xd000_0000, size: 4, length: 8}\n",
    )
    result = run("check", path)
    assert result.exit_code == 1
    assert (
        "`length` 8 is more than the device's size 4: the write that signals the ioeventfd "
        "would reach past it; make `size` at least 8"
    ) in result.stdout


def test_the_schema_declares_length_and_datamatch() -> None:
    result = run("schema")
    device = json.loads(result.stdout)["$defs"]["Device"]["properties"]
    assert device["length"]["default"] is None and "else 0" in device["length"]["description"]
    assert device["datamatch"]["default"] is None
    assert "KVM_IOEVENTFD_FLAG_DATAMATCH" in device["datamatch"]["description"]


# --- what KVM refuses: ioeventfd-invalid and device-overlap ----------------------------------


def test_a_length_kvm_does_not_take_is_refused_with_einval(tmp_path: Path) -> None:
    path = layout(
        tmp_path,
        "- {name: kick, type: mmio, handler: ioeventfd, base: 0xd000_0000, size: 4, length: 3}\n",
    )
    (found,) = check_findings(path)
    line, column = position(path, "3}")
    assert (found["rule"], found["severity"], found["line"], found["column"]) == (
        "ioeventfd-invalid",
        "error",
        line,
        column,
    )
    assert found["message"] == (
        "ioeventfd 'kick' at 0xd000_0000 has length 3: KVM_IOEVENTFD fails with EINVAL (the "
        "length must be 1, 2, 4 or 8 bytes, or 0 for any), so there is no ioeventfd and every "
        "write here exits to the VMM; give the width of the guest's doorbell write"
    )


def test_a_datamatch_with_length_0_is_refused_with_einval(tmp_path: Path) -> None:
    path = layout(
        tmp_path,
        """\
        - {name: kick, type: mmio, handler: ioeventfd, base: 0xd000_0000, size: 4K, datamatch: 1}
        """,
    )
    (found,) = check_findings(path)
    assert found["rule"] == "ioeventfd-invalid"
    assert (found["line"], found["column"]) == position(path, "1}")
    assert "datamatch with length 0: KVM_IOEVENTFD fails with EINVAL" in str(found["message"])
    assert "or drop `datamatch`" in str(found["message"])


def test_a_datamatch_wider_than_the_write_is_never_signalled(tmp_path: Path) -> None:
    path = layout(
        tmp_path,
        """\
        - {name: kick, type: mmio, handler: ioeventfd, base: 0xd000_0000, size: 2,
           datamatch: 0x1_0000}
        """,
    )
    (found,) = check_findings(path)
    assert found["rule"] == "ioeventfd-invalid"
    assert (found["line"], found["column"]) == position(path, "0x1_0000")
    assert "which no 2-byte write carries: KVM accepts it" in str(found["message"])
    assert "use a value below 0x0001_0000" in str(found["message"])


def test_valid_ioeventfds_give_no_finding(tmp_path: Path) -> None:
    path = layout(
        tmp_path,
        """\
        - {name: a, type: mmio, handler: ioeventfd, base: 0xd000_0000, size: 4K}
        - {name: b, type: mmio, handler: ioeventfd, base: 0xd001_0000, size: 4,
           datamatch: 0xffff_ffff}
        - {name: c, type: mmio, handler: ioeventfd, base: 0xd002_0000, size: 8, length: 1}
        """,
    )
    assert check_findings(path) == []


@pytest.mark.parametrize(
    ("first", "second", "refused"),
    [
        ("size: 4", "size: 4", True),  # same length, both any value
        ("size: 4, datamatch: 1", "size: 4", True),  # one wildcard
        ("size: 4, datamatch: 1", "size: 4, datamatch: 1", True),
        ("size: 4K", "size: 4", True),  # length 0 collides with any length
        ("size: 4, datamatch: 1", "size: 4, datamatch: 2", False),
        ("size: 4", "size: 8", False),  # another length at the same base
    ],
)
def test_two_ioeventfds_one_write_could_match_are_refused_with_eexist(
    tmp_path: Path, first: str, second: str, refused: bool
) -> None:
    path = layout(
        tmp_path,
        f"""\
        - {{name: kick, type: mmio, handler: ioeventfd, base: 0xd000_0000, {first}}}
        - {{name: kick2, type: mmio, handler: ioeventfd, base: 0xd000_0000, {second}}}
        """,
    )
    (found,) = check_findings(path)
    assert found["rule"] == "device-overlap" and found["objects"] == ["kick2", "kick"]
    message = str(found["message"])
    if refused:
        assert found["severity"] == "error"
        assert "KVM_IOEVENTFD for 'kick2' fails with EEXIST at set-up" in message
    else:
        assert found["severity"] == "warning"
        assert "KVM accepts both" in message and "each keeps its own doorbell" in message


# --- explain: which write signals, and that the others exit ----------------------------------


def test_explain_at_the_base_says_which_write_signals_and_that_others_exit(
    tmp_path: Path,
) -> None:
    path = layout(
        tmp_path,
        "- {name: kick, type: mmio, handler: ioeventfd, base: 0xd000_0000, size: 4, "
        "datamatch: 0x2a}\n",
    )
    read, write = explain(path, "0xd000_0000", "--access", "read", "--access", "write")
    assert (read["outcome"], read["notes"]) == ("io-exit", [])
    assert write["outcome"] == "io-kernel"
    (note,) = write["notes"]  # type: ignore[misc]
    assert str(note).startswith(
        "the ioeventfd 'kick' is signalled only by a write of exactly 4 bytes at exactly "
        "0xd000_0000, carrying 0x2a (ioeventfd_in_range()); any other write here is declined "
        "(ioeventfd_write()) and becomes io-exit: "
    )
    assert "ioeventfd_in_range()" in str(write["detail"])


def test_explain_past_the_base_gives_the_write_that_exits(tmp_path: Path) -> None:
    path = layout(
        tmp_path,
        """\
        - {name: virtio, type: mmio, base: 0xd000_0000, size: 0x200}
        - {name: kick, type: mmio, handler: ioeventfd, base: 0xd000_0050, size: 4}
        """,
    )
    (write,) = explain(path, "0xd000_0052", "--access", "write")
    assert write["outcome"] == "io-exit"
    assert write["notes"] == [
        "the ioeventfd 'kick' is signalled only by a write of exactly 4 bytes at exactly "
        "0xd000_0050, of any value (ioeventfd_in_range()); a write at 0xd000_0052 cannot "
        "signal it and becomes io-exit"
    ]
    # `check`'s region keeps the device whole: the doorbell write is io-kernel.
    result = run("check", path, "--format", "json")
    regions = json.loads(result.stdout)["results"][0]["regions"]
    kick = [r for r in regions if r["names"] == ["virtio", "kick"]]
    assert [(r["start"], r["end"], r["write"]) for r in kick] == [
        (0xD000_0050, 0xD000_0054, "io-kernel")
    ]


def test_explain_a_length_0_ioeventfd_takes_any_width_at_its_base(tmp_path: Path) -> None:
    path = layout(
        tmp_path, "- {name: kick, type: mmio, handler: ioeventfd, base: 0xd000_0000, size: 4K}\n"
    )
    at, past = explain(path, "0xd000_0000", "0xd000_0008", "--access", "write")
    assert at["outcome"] == "io-kernel"
    assert str(at["notes"][0]).startswith(  # type: ignore[index]
        "the ioeventfd 'kick' is signalled by a write of any width and value at exactly "
        "0xd000_0000 (length 0; ioeventfd_in_range())"
    )
    assert past["outcome"] == "io-exit"


def test_explain_past_an_ioeventfd_over_a_coalesced_zone_goes_to_the_zone(
    tmp_path: Path,
) -> None:
    path = layout(
        tmp_path,
        """\
        - {name: ring, type: mmio, handler: coalesced, base: 0xd000_0000, size: 4K}
        - {name: kick, type: mmio, handler: ioeventfd, base: 0xd000_0000, size: 8}
        """,
    )
    (write,) = explain(path, "0xd000_0004", "--access", "write")
    assert write["outcome"] == "io-coalesced"
    assert "coalesced_mmio_write()" in str(write["detail"])


def test_explain_text_prints_the_doorbell_condition(tmp_path: Path) -> None:
    path = layout(
        tmp_path,
        "- {name: kick, type: mmio, handler: ioeventfd, base: 0xd000_0000, size: 2, length: 1}\n",
    )
    result = run("explain", path, "0xd000_0001", "--access", "write")
    assert result.stdout.splitlines()[0] == "0xd000_0001 write on x86_64: io-exit [device (kick)]"
    assert result.stdout.splitlines()[2] == (
        "  note: the ioeventfd 'kick' is signalled only by a write of exactly 1 byte at exactly "
        "0xd000_0000, of any value (ioeventfd_in_range()); a write at 0xd000_0001 cannot signal "
        "it and becomes io-exit"
    )


def test_on_x86_64_a_length_0_ioeventfd_notes_the_fast_mmio_bus(tmp_path: Path) -> None:
    devices = "- {name: kick, type: mmio, handler: ioeventfd, base: 0xd000_0000, size: %s}\n"
    read, write = explain(
        layout(tmp_path, devices % "4K"), "0xd000_0000", "--access", "read", "--access", "write"
    )
    for answer in (read, write):
        (note,) = [n for n in answer["notes"] if "KVM_FAST_MMIO_BUS" in n]  # type: ignore[attr-defined]
        assert note.startswith("'kick': an ioeventfd of length 0 is also on KVM_FAST_MMIO_BUS")
        assert "a read returns no data and does not exit" in note
    assert read["outcome"] == "io-exit"  # the first access to the page, as the table says
    # Not for an ioeventfd with a length, nor away from the base, nor on arm64 (no such bus).
    (exact,) = explain(layout(tmp_path, devices % "4"), "0xd000_0000", "--access", "read")
    (past,) = explain(layout(tmp_path, devices % "4K"), "0xd000_0004", "--access", "read")
    (arm,) = explain(layout(tmp_path, devices % "4K", "arm64"), "0xd000_0000", "--access", "read")
    for answer in (exact, past, arm):
        assert not any("KVM_FAST_MMIO_BUS" in n for n in answer["notes"])  # type: ignore[attr-defined]
