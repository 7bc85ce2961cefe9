"""The kvm_run page as the ptrace traffic path reads it (gpa_plan.record.runs.exit_of): the
layout of include/uapi/linux/kvm.h struct kvm_run, the same on x86_64 and arm64."""

from __future__ import annotations

import struct

from gpa_plan.record.calls import TracedCall
from gpa_plan.record.runs import RUN_HEAD, exit_of
from gpa_plan.record.traffic import Access


def call() -> TracedCall:
    return TracedCall(7, 5, "ioctl", (9, 0xAE80, 0, 0, 0, 0), 0, "anon_inode:kvm-vcpu:0",
                      lambda address, size: b"")


def head(reason: int, union: bytes) -> bytes:
    page = bytearray(RUN_HEAD)
    struct.pack_into("<I", page, 8, reason)  # exit_reason
    page[32:32 + len(union)] = union  # the union after cr8 and apic_base
    return bytes(page)


def test_an_mmio_exit_gives_its_address_width_and_direction() -> None:
    union = struct.pack("<Q8sIB", 0xD000_0050, b"\x01" * 8, 4, 1)
    ex = exit_of(call(), head(6, union), 123)
    assert (ex.reason, ex.access, ex.write, ex.tid, ex.tgid) == (
        6, Access("mmio", 0xD000_0050, 4), True, 7, 5)
    read = exit_of(call(), head(6, struct.pack("<Q8sIB", 0x1000, bytes(8), 2, 0)), 0)
    assert (read.access, read.write) == (Access("mmio", 0x1000, 2), False)


def test_a_port_exit_gives_its_port_size_direction_and_count() -> None:
    out = exit_of(call(), head(2, struct.pack("<BBHIQ", 1, 2, 0x3F8, 3, 0x1000)), 0)
    assert (out.access, out.write, out.elements) == (Access("port", 0x3F8, 2), True, 3)
    port_in = exit_of(call(), head(2, struct.pack("<BBHIQ", 0, 1, 0x70, 1, 0x1000)), 0)
    assert (port_in.access, port_in.write) == (Access("port", 0x70, 1), False)


def test_other_exits_have_no_access() -> None:
    ex = exit_of(call(), head(5, b""), 0)
    assert (ex.reason, ex.access) == (5, None)


def test_an_internal_error_keeps_its_suberror_and_the_traffic_counts_by_it() -> None:
    from gpa_plan.record.traffic import Traffic

    emulation = exit_of(call(), head(17, struct.pack("<II", 1, 0)), 0)
    assert (emulation.reason, emulation.suberror) == (17, 1)
    traffic = Traffic(path="ptrace")
    for ex in (emulation, emulation, exit_of(call(), head(17, struct.pack("<II", 3, 2)), 0)):
        traffic.add(ex)
    traffic.add(emulation._replace(suberror=None))  # the tracefs path cannot read it
    assert traffic.observed_entries()["internal_errors"] == [
        {"count": 1}, {"suberror": 1, "count": 2}, {"suberror": 3, "count": 1}]
    assert traffic.observed_entries()["exits"] == [
        {"reason": "KVM_EXIT_INTERNAL_ERROR", "count": 4}]
