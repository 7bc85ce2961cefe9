"""The guest traffic of `record --traffic`: KVM's tracepoints read through a private tracefs
instance (gpa_plan/record/tracefs.py) and summed per VM (gpa_plan/record/traffic.py).

The trace texts under tests/data/record/traffic/ were captured on this project's x86_64 test
host (a kvm_pvm backend, which emulates the guest and traces no kvm_entry) while
tests/traffic_guest.py ran; beside each, the guest's own count of the exits its VMM saw. The
tests marked ``live`` run that guest on /dev/kvm under a real instance.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import traffic_guest
from kvm_probe import kvm_available

from gpa_plan.record import tracefs
from gpa_plan.record.tracefs import Event, KvmTrace, parse_trace
from gpa_plan.record.traffic import Traffic, Vm, attribute, exits, summed

DATA = Path(__file__).parent / "data" / "record" / "traffic"
MMIO = 0xD000_0000
# The guest of tests/data/record/traffic/two-vms.json, made here again on the live host.
SPEC: dict[str, Any] = json.loads((DATA / "two-vms.json").read_text())["spec"]


def fixture(name: str) -> tuple[list[str], dict[str, Any]]:
    lines = (DATA / f"{name}.trace").read_text().splitlines(keepends=True)
    return lines, json.loads((DATA / f"{name}.json").read_text())["result"]


def truth(run: dict[str, Any]) -> Counter[tuple[str, int, int, bool]]:
    """The exits a traffic_guest VMM saw, by (space, address, width, write)."""
    return Counter({(s, a, w, bool(wr)): n for s, a, w, wr, n in run["traffic"]})


def seen(traffic: Traffic) -> Counter[tuple[str, int, int, bool]]:
    counts: Counter[tuple[str, int, int, bool]] = Counter()
    for row in traffic.observed_entries().get("traffic", []):
        for key, write in (("reads", False), ("writes", True)):
            if row[key]:
                counts[row["space"], row["address"], row["width"], write] = row[key]
    return counts


# --- parsing the trace text --------------------------------------------------------------------


def test_trace_lines_parse_into_thread_process_time_and_access() -> None:
    lines, result = fixture("two-vms")
    parsed = parse_trace(lines)
    assert (parsed.lost, parsed.unread) == (0, 0)
    assert parsed.events[0] == Event(
        tid=3782, tgid=3781, timestamp=37095_944642_000, kind="mmio-write", address=MMIO, width=1
    )
    assert parsed.events[1] == Event(3782, 3781, 37095_944647_000, "exit", reason=6)
    port = next(e for e in parsed.events if e.kind == "pio-write")
    assert port == Event(3782, 3781, 37095_944778_000, "pio-write", 0x3F8, 1, 1, value=0)
    # Every event line is one event: the headers are comments.
    assert len(parsed.events) == sum(1 for line in lines if not line.startswith("#"))
    # The VMs ran in threads of the guest's process, which record-tgid names.
    assert {e.tgid for e in parsed.events} == {result["pid"]}
    assert len({e.tid for e in parsed.events}) == 2


def test_failed_and_restarted_runs_parse_with_their_errno() -> None:
    lines, _ = fixture("failures")
    found = [e for e in parse_trace(lines).events if e.kind == "exit"]
    # "reason restart (4)" is -EINTR, "reason error (22)" -EINVAL (kvm_userspace_exit's format)
    assert [(e.reason, e.errno) for e in found] == [(6, 0), (2, 0), (0, -4), (0, -22), (17, 0)]


def test_command_names_with_spaces_and_dashes_unknown_tgids_and_lost_events() -> None:
    text = [
        "  qemu-system-x86 vcpu-0-41    (  40) [001] d..1. 12.000001: kvm_mmio: "
        "mmio unsatisfied-read len 8 gpa 0xfe000000 val 0x0\n",
        "           <...>-42      (-------) [000] ..... 12.500000: kvm_userspace_exit: "
        "reason KVM_EXIT_MMIO (6)\n",
        "           <...>-42      (-------) [000] ..... 12.600000: kvm_pio: "
        "pio_write at 0x510 size 2 count 3 val 0x5a (...)\n",
        "CPU:1 [LOST 12 EVENTS]\n",
        "  python3-43    (  43) [000] ..... 13.000000: kvm_exit: vcpu 0 reason HLT\n",
        "garbage\n",
    ]
    parsed = parse_trace(text)
    assert parsed.events == [
        Event(41, 40, 12_000_001_000, "mmio-unsatisfied-read", 0xFE00_0000, 8),
        Event(42, -1, 12_500_000_000, "exit", reason=6),
        # the value is kept: who answers a port write may depend on it (a datamatch)
        Event(42, -1, 12_600_000_000, "pio-write", 0x510, 2, 3, value=0x5A),
    ]
    assert (parsed.lost, parsed.unread) == (12, 2)


# --- pairing accesses with exits (kernel semantics, hand-made sequences) -----------------------


def ev(kind: str, address: int = 0, width: int = 0, **more: int) -> Event:
    return Event(tid=more.pop("tid", 7), tgid=7, timestamp=0, kind=kind, address=address,
                 width=width, **more)  # fmt: skip


def test_an_mmio_exit_is_the_last_write_or_unsatisfied_read_before_it() -> None:
    # arm64 io_mem_abort(): a read the vGIC answered traces unsatisfied-read, then read; the
    # ioeventfd write before the exit traced write too, and exits nothing.
    found = exits(
        [
            ev("mmio-unsatisfied-read", 0x0800_0000, 4),
            ev("mmio-read", 0x0800_0000, 4),
            ev("mmio-write", 0x0A00_0050, 4),
            ev("mmio-write", 0x0900_0000, 1),
            ev("exit", reason=6),
        ]
    )
    assert [(e.access, e.write) for e in found] == [(("mmio", 0x0900_0000, 1), True)]


def test_a_loongarch_read_is_traced_as_read_before_its_exit() -> None:
    # kvm_emu_mmio_read() traces "read" before its devices are tried, and again with the
    # value once the VMM answered (kvm_complete_mmio_read())
    found = exits(
        [ev("mmio-read", 0x1FE0_01E0, 1), ev("exit", reason=6), ev("mmio-read", 0x1FE0_01E0, 1)]
    )
    assert [(e.access, e.write) for e in found] == [(("mmio", 0x1FE0_01E0, 1), False)]


def test_an_access_wider_than_8_bytes_reaches_the_vmm_in_8_byte_pieces() -> None:
    found = exits([ev("mmio-write", MMIO, 16), ev("exit", reason=6), ev("exit", reason=6)])
    assert [e.access for e in found] == [("mmio", MMIO, 8), ("mmio", MMIO + 8, 8)]


def test_a_port_read_is_known_by_its_completion_after_the_exit() -> None:
    found = exits([ev("exit", reason=2), ev("pio-read", 0x3FD, 1), ev("pio-write", 0x3F8, 1)])
    assert [(e.access, e.write) for e in found] == [(("port", 0x3FD, 1), False)]


def test_a_guest_entry_tells_a_port_write_kvm_answered_from_a_port_read_that_exits() -> None:
    found = exits(
        [
            ev("entry"),
            ev("pio-write", 0x40, 1),  # the in-kernel PIT
            ev("entry"),
            ev("exit", reason=2),
            ev("pio-read", 0x3FD, 1),
        ]
    )
    assert [(e.access, e.write, e.uncertain) for e in found] == [(("port", 0x3FD, 1), False, False)]


def test_without_guest_entries_the_trace_shows_which_port_writes_kvm_answers() -> None:
    kernel_write = ev("pio-write", 0x40, 1, value=3)
    found = exits(
        [
            kernel_write,
            ev("exit", reason=2),  # a read of 0x3fd, right after the PIT took the write
            ev("pio-read", 0x3FD, 1),
            kernel_write,
            ev("mmio-write", MMIO, 4),  # the guest went on: KVM answered 0x40
            ev("exit", reason=6),
        ]
    )
    assert [(e.access, e.write, e.uncertain) for e in found] == [
        (("port", 0x3FD, 1), False, False),
        (("mmio", MMIO, 4), True, False),
    ]


def test_an_undecidable_port_exit_is_counted_as_the_write_and_said_uncertain() -> None:
    found = exits([ev("pio-write", 0x70, 1), ev("exit", reason=2), ev("pio-read", 0x71, 1)])
    assert [(e.access, e.write, e.uncertain) for e in found] == [(("port", 0x70, 1), True, True)]
    traffic = Traffic()
    for e in found:
        traffic.add(e)
    assert traffic.uncertain == 1


def test_string_port_io_counts_each_element() -> None:
    found = exits([ev("pio-write", 0x3F8, 1, elements=5), ev("exit", reason=2)])
    traffic = Traffic()
    traffic.add(found[0])
    assert traffic.observed_entries()["traffic"] == [
        {"space": "port", "address": 0x3F8, "width": 1, "reads": 0, "writes": 5}
    ]


# --- attribution and the observed entries ------------------------------------------------------


def test_two_vms_of_one_process_each_get_exactly_the_exits_their_vmm_saw() -> None:
    lines, result = fixture("two-vms")
    vms = [Vm(result["pid"], created) for created in result["created"]]
    summed = attribute(parse_trace(lines).events, vms)
    assert len(summed) == 2
    for traffic, run in zip(summed, result["runs"], strict=True):
        assert seen(traffic) == truth(run)
        exits_seen = {e["reason"]: e["count"] for e in traffic.observed_entries()["exits"]}
        assert exits_seen == run["reasons"]
        assert (traffic.unresolved, traffic.uncertain, traffic.complete) == (0, 0, True)


def test_an_exit_belongs_to_the_latest_vm_of_its_process_created_before_it() -> None:
    def at(tgid: int, time: int) -> list[Event]:
        return [
            Event(tgid, tgid, time, "mmio-write", MMIO + time, 4),
            Event(tgid, tgid, time, "exit", reason=6),
        ]

    events = at(10, 1_000) + at(20, 2_000) + at(10, 3_000) + at(10, 5_000) + at(30, 6_000)
    vms = [Vm(10, 2_500), Vm(20, 1_500), Vm(10, 4_000)]
    first, second, third = attribute(events, vms)
    # Process 10's exit at t=1000 came before its first VM: it belongs to none; process 30
    # made no VM.
    assert seen(first) == Counter({("mmio", MMIO + 3_000, 4, True): 1})
    assert seen(second) == Counter({("mmio", MMIO + 2_000, 4, True): 1})
    assert seen(third) == Counter({("mmio", MMIO + 5_000, 4, True): 1})


def test_a_vm_created_within_the_microsecond_of_an_exit_counts_as_before_it() -> None:
    events = [
        Event(1, 1, 7_000_000, "mmio-write", MMIO, 4),
        Event(1, 1, 7_000_000, "exit", reason=6),
    ]
    (traffic,) = attribute(events, [Vm(1, 7_000_400)])
    assert sum(seen(traffic).values()) == 1


def test_failures_restarts_and_internal_errors_in_the_observed_entries() -> None:
    lines, result = fixture("failures")
    (traffic,) = attribute(parse_trace(lines).events, [Vm(result["pid"], result["created"][0])])
    assert result["failures"] == ["EINTR", "EINVAL", "KVM_EXIT_INTERNAL_ERROR"]
    assert traffic.observed_entries() == {
        "traffic_path": "tracefs",
        "traffic": [
            {"space": "mmio", "address": MMIO, "width": 4, "reads": 0, "writes": 1},
            {"space": "port", "address": 0x1234, "width": 1, "reads": 0, "writes": 1},
        ],
        # -EINTR is a signal: KVM_EXIT_INTR, not a failure
        "exits": [
            {"reason": "KVM_EXIT_INTERNAL_ERROR", "count": 1},
            {"reason": "KVM_EXIT_INTR", "count": 1},
            {"reason": "KVM_EXIT_IO", "count": 1},
            {"reason": "KVM_EXIT_MMIO", "count": 1},
        ],
        "run_failures": [{"errno": "EINVAL", "count": 1}],
        "internal_errors": [{"count": 1}],
    }


def test_lost_events_make_every_vms_traffic_incomplete() -> None:
    (traffic,) = attribute([], [Vm(1, 0)], lost=3)
    assert (traffic.complete, traffic.lost_events, traffic.path) == (False, 3, "tracefs")


def test_the_notes_say_what_makes_the_counts_low_or_unsure() -> None:
    lines, result = fixture("failures")
    (exact,) = summed(parse_trace(lines), [Vm(result["pid"], result["created"][0])])
    assert (exact.complete, exact.notes()) == (True, [])
    events = [
        ev("exit", reason=6),  # no access before it
        ev("pio-write", 0x70, 1),
        ev("exit", reason=2),
        ev("pio-read", 0x71, 1),
    ]
    (unsure,) = attribute(events, [Vm(7, 0)], lost=5, unread=2)
    assert unsure.notes() == [
        "traffic is incomplete: the kernel lost 5 trace events to a full buffer, so the "
        "counts are low",
        "traffic is incomplete: 2 trace lines were not understood (a kernel whose event "
        "formats differ from Linux 7.2's)",
        "1 MMIO or port exits are counted in `exits` only: the trace did not show their address",
        "1 port exits are counted as writes that may have been reads of the port read just "
        "after them",
    ]


# --- the instance on this host -----------------------------------------------------------------

_REASON = tracefs.available() or (None if kvm_available() else "needs an x86_64 /dev/kvm")
live = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
_GLOBAL = ("tracing_on", "set_event", "set_event_pid", "trace_clock", "buffer_size_kb")


def global_settings() -> dict[str, str]:
    root = tracefs.tracefs_root() or ""
    settings = {name: Path(root, name).read_text() for name in _GLOBAL}
    settings["options/event-fork"] = Path(root, "options/event-fork").read_text()
    return settings


def ours() -> set[str]:
    root = tracefs.tracefs_root() or ""
    return {n for n in os.listdir(f"{root}/instances") if n.startswith(tracefs.INSTANCE_PREFIX)}


def test_available_names_what_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "needs root" in (tracefs.available() or "")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(tracefs, "MOUNT_POINTS", (str(tmp_path / "none"),))
    assert "mount -t tracefs nodev /sys/kernel/tracing" in (tracefs.available() or "")
    (tmp_path / "t" / "instances").mkdir(parents=True)
    (tmp_path / "t" / "events" / "kvm" / "kvm_mmio").mkdir(parents=True)
    monkeypatch.setattr(tracefs, "MOUNT_POINTS", (str(tmp_path / "t"),))
    assert "no kvm:kvm_userspace_exit tracepoint" in (tracefs.available() or "")


@live
def test_the_counts_of_a_guest_on_this_host_are_exact() -> None:
    with KvmTrace(buffer_kb=8192) as trace:
        result = traffic_guest.traced(SPEC, trace)
        parsed = trace.read()
    assert (parsed.lost, parsed.unread) == (0, 0)
    vms = [Vm(result["pid"], created) for created in result["created"]]
    for traffic, run in zip(attribute(parsed.events, vms), result["runs"], strict=True):
        assert seen(traffic) == truth(run)
        assert (traffic.unresolved, traffic.uncertain, traffic.complete) == (0, 0, True)


@live
def test_a_vm_of_a_child_process_is_traced_and_given_its_exits() -> None:
    spec = {"accesses": [["mmio", MMIO, 2, 0, 4]], "fork": True}
    with KvmTrace(buffer_kb=256) as trace:
        child = traffic_guest.traced(spec, trace)
        parsed = trace.read()
    # event-fork followed the child the traced process forked
    assert {e.tgid for e in parsed.events} == {child["pid"]}
    vms = [Vm(os.getpid(), 0), Vm(child["pid"], child["created"][0])]
    elder, traffic = attribute(parsed.events, vms)
    assert seen(traffic) == truth(child["runs"][0])
    assert seen(elder) == Counter()


@live
def test_the_instance_is_removed_even_when_the_body_raises() -> None:
    before = ours()
    with pytest.raises(RuntimeError, match="boom"), KvmTrace(buffer_kb=64) as trace:
        # off until it follows a process: an empty set_event_pid would trace every process
        assert Path(trace.path, "tracing_on").read_text() == "0\n"
        trace.follow(os.getpid())
        assert Path(trace.path, "tracing_on").read_text() == "1\n"
        raise RuntimeError("boom")
    assert not os.path.exists(trace.path)
    assert ours() == before


@live
def test_an_instance_left_by_a_killed_record_is_removed_by_the_next() -> None:
    child = subprocess.Popen(["true"])  # a pid that no longer runs
    child.wait()
    stale = Path(tracefs.tracefs_root() or "", "instances",
                 f"{tracefs.instance_name(child.pid)}-2")
    # The same pid in another PID namespace: that namespace's record may still run.
    elsewhere = Path(tracefs.tracefs_root() or "", "instances",
                     f"{tracefs.INSTANCE_PREFIX}1-{child.pid}")
    elsewhere.mkdir()
    stale.mkdir()
    try:
        with KvmTrace(buffer_kb=64) as trace:
            assert not stale.exists()
            assert elsewhere.exists()
            assert os.path.basename(trace.path) == tracefs.instance_name(os.getpid())
    finally:
        for made in (stale, elsewhere):
            if made.exists():
                made.rmdir()


@live
def test_concurrent_instances_keep_to_their_own_processes_and_leave_global_tracing_alone() -> None:
    before = global_settings()
    small = {"accesses": [["mmio", MMIO, 4, 1, 3]], "vms": 1}
    other = {"accesses": [["mmio", MMIO + 0x100, 2, 1, 5]], "vms": 1}
    results: dict[str, Any] = {}

    def run(name: str, spec: dict[str, Any]) -> None:
        with KvmTrace(buffer_kb=256) as trace:
            result = traffic_guest.traced(spec, trace)
            results[name] = (trace.path, result, trace.read())

    workers = [threading.Thread(target=run, args=a) for a in (("a", small), ("b", other))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    (path_a, result_a, parsed_a), (path_b, result_b, parsed_b) = results["a"], results["b"]
    assert path_a != path_b
    assert {e.tgid for e in parsed_a.events} == {result_a["pid"]}
    assert {e.tgid for e in parsed_b.events} == {result_b["pid"]}
    (traffic_a,) = attribute(parsed_a.events, [Vm(result_a["pid"], result_a["created"][0])])
    assert seen(traffic_a) == truth(result_a["runs"][0])
    assert global_settings() == before


@live
def test_a_full_buffer_is_counted_as_lost_events() -> None:
    with KvmTrace(buffer_kb=2 * tracefs.MIN_BUFFER_KB, drain=False) as trace:
        result = traffic_guest.traced({"accesses": [["mmio", MMIO, 4, 1, 3000]]}, trace)
        parsed = trace.read()
    assert parsed.lost > 0
    (traffic,) = attribute(
        parsed.events, [Vm(result["pid"], result["created"][0])], lost=parsed.lost
    )
    assert not traffic.complete
    assert sum(seen(traffic).values()) < 3001


@live
def test_the_drain_keeps_a_run_longer_than_the_buffer_whole() -> None:
    # 1 MiB a CPU holds about 13,000 exits' events; the drain empties it every 50 ms
    exits_made = 30_000
    with KvmTrace(buffer_kb=2048) as trace:
        result = traffic_guest.traced({"accesses": [["mmio", MMIO, 4, 1, exits_made]]}, trace)
        parsed = trace.read()
    assert (parsed.lost, parsed.unread) == (0, 0)
    (traffic,) = summed(parsed, [Vm(result["pid"], result["created"][0])])
    assert seen(traffic) == truth(result["runs"][0])
    assert seen(traffic)["mmio", MMIO, 4, True] == exits_made
