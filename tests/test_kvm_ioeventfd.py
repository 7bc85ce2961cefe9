"""ioeventfds on this host's real KVM: which guest writes signal the eventfd, which exit, and
which KVM_IOEVENTFD calls KVM refuses, against what `explain` and `check` say of the same
layout (tests/kvm_probe.py runs a one-instruction guest; skipped without /dev/kvm)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from kvm_probe import Ioeventfd, assign_ioeventfds, kvm_available, probe_access

from gpa_plan.cli import cli
from gpa_plan.layout.resolved import Doorbell

pytestmark = pytest.mark.skipif(
    not kvm_available(), reason="needs an x86_64 host with a usable /dev/kvm"
)

BASE = 0xD000_0050


def layout(tmp_path: Path, keys: str) -> Path:
    path = tmp_path / "vm.yaml"
    path.write_text(
        "layout: 1\narch: x86_64\npa_bits: 36\ndevices:\n"
        "  - {name: virtio, type: mmio, base: 0xd000_0000, size: 0x200}\n"
        f"  - {{name: kick, type: mmio, handler: ioeventfd, base: {BASE:#x}, {keys}}}\n"
    )
    return path


def predicted(path: Path, address: int, access: str, width: int, value: int) -> str:
    """What gpa-plan says the access becomes: `explain`'s outcome, where the signalling write
    (io-kernel at an ioeventfd) is "eventfd", and a write of another width or value at the
    base is what explain's note says every other write there becomes."""
    result = CliRunner().invoke(
        cli, ["explain", str(path), hex(address), "--access", access, "--format", "json"]
    )
    (answer,) = json.loads(result.stdout)["answers"]
    if answer["outcome"] != "io-kernel":
        return str(answer["outcome"])
    source = json.loads(CliRunner().invoke(cli, ["check", str(path), "--format", "json"]).stdout)
    assert source["summary"]["errors"] == 0
    bell = doorbell_of(path)
    if bell.signalled_by(address, width, value):
        return "eventfd"
    other = re.search(r"any other write here is declined \(ioeventfd_write\(\)\) and becomes "
                      r"([a-z-]+):", answer["notes"][0])  # fmt: skip
    assert other is not None, answer["notes"]
    return other.group(1)


def doorbell_of(path: Path) -> Doorbell:
    from gpa_plan.check.run import load_layout

    (bell,) = [d.doorbell for d in load_layout(path).resolved.devices if d.doorbell]
    return bell


CASES = [
    # keys, address, access, width, value
    ("size: 4", BASE, "write", 4, 0x1234),
    ("size: 4", BASE, "write", 2, 0x1234),  # another width at the base
    ("size: 4", BASE + 2, "write", 2, 0x1234),  # inside the range, not at the base
    ("size: 4", BASE, "read", 4, 0),
    ("size: 4, datamatch: 7", BASE, "write", 4, 7),
    ("size: 4, datamatch: 7", BASE, "write", 4, 8),  # another value
    ("size: 4, length: 2", BASE, "write", 2, 1),
    ("size: 4, length: 2", BASE, "write", 4, 1),
    ("size: 4K", BASE, "write", 1, 1),  # length 0: any width at the base
    ("size: 4K", BASE, "write", 4, 1),
    ("size: 4K", BASE + 1, "write", 1, 1),
    ("size: 4K", BASE, "read", 4, 0),
]


@pytest.mark.parametrize(("keys", "address", "access", "width", "value"), CASES)
def test_what_a_write_does_at_an_ioeventfd_is_what_explain_says(
    tmp_path: Path, keys: str, address: int, access: str, width: int, value: int
) -> None:
    path = layout(tmp_path, keys)
    bell = doorbell_of(path)
    observed = probe_access(
        [],
        address,
        access,
        ioeventfds=[Ioeventfd(bell.base, bell.length, bell.datamatch)],
        width=width,
        value=value,
    )
    assert observed == predicted(path, address, access, width, value)


def test_the_probe_can_tell_a_signal_from_an_exit(tmp_path: Path) -> None:
    # Without the ioeventfd the same write exits: the signal above is the ioeventfd's.
    assert probe_access([], BASE, "write") == "io-exit"


@pytest.mark.parametrize(
    ("first", "second", "errno"),
    [
        (Ioeventfd(BASE, 4), Ioeventfd(BASE, 4), "EEXIST"),
        (Ioeventfd(BASE, 4, 1), Ioeventfd(BASE, 4), "EEXIST"),
        (Ioeventfd(BASE, 0), Ioeventfd(BASE, 4, 1), "EEXIST"),
        (Ioeventfd(BASE, 4, 1), Ioeventfd(BASE, 4, 2), None),
        (Ioeventfd(BASE, 4), Ioeventfd(BASE, 8), None),
        (Ioeventfd(BASE, 4), Ioeventfd(BASE, 3), "EINVAL"),
        (Ioeventfd(BASE, 4), Ioeventfd(BASE + 0x100, 0, 1), "EINVAL"),
    ],
)
def test_kvm_refuses_the_ioeventfds_check_says_it_refuses(
    tmp_path: Path, first: Ioeventfd, second: Ioeventfd, errno: str | None
) -> None:
    assert assign_ioeventfds([first, second]) == [None, errno]

    def keys(i: Ioeventfd) -> str:
        match = "" if i.datamatch is None else f", datamatch: {i.datamatch}"
        return f"base: {i.addr:#x}, size: 8, length: {i.length}{match}"

    path = tmp_path / "two.yaml"
    path.write_text(
        "layout: 1\narch: x86_64\ndevices:\n"
        f"  - {{name: a, type: mmio, handler: ioeventfd, {keys(first)}}}\n"
        f"  - {{name: b, type: mmio, handler: ioeventfd, {keys(second)}}}\n"
    )
    document = json.loads(CliRunner().invoke(cli, ["check", str(path), "--format", "json"]).stdout)
    errors = [f["message"] for f in document["results"][0]["findings"] if f["severity"] == "error"]
    if errno is None:
        assert errors == []
    else:
        (message,) = errors
        assert f"fails with {errno}" in message
