"""What the guest made its VMM do, from KVM's tracepoints: the ``observed`` entries of a recording.

Which trace events mean an exit to the VMM (Linux 7.2.13)
----------------------------------------------------------
``kvm:kvm_userspace_exit`` is traced by kvm_vcpu_ioctl() (virt/kvm/kvm_main.c) each time
``KVM_RUN`` returns: its exit reason, or the negative errno it failed with. Every exit is one
such event; `Traffic.exits` counts them by reason.

``kvm:kvm_mmio`` and ``kvm:kvm_pio`` are traced for accesses KVM answered itself too
(ioeventfds, coalesced zones, the in-kernel LAPIC/IOAPIC/PIC/PIT, the vGIC), so they are
counted as traffic only when they are what made ``KVM_RUN`` return:

* x86 MMIO: vcpu_mmio_write() (arch/x86/kvm/x86.c) traces ``write`` *before* it offers the
  access to the in-kernel devices; vcpu_mmio_read() traces ``read`` for what a device answered
  and ``unsatisfied-read`` for what is left to the VMM; emulator_read_write() traces ``read``
  again when the VMM's answer is taken, on the next ``KVM_RUN``.
* arm64 MMIO: io_mem_abort() (arch/arm64/kvm/mmio.c) traces ``write`` or ``unsatisfied-read``
  before kvm_io_bus_write()/kvm_io_bus_read() try the in-kernel devices, and
  kvm_handle_mmio_return() traces ``read`` once the value is known (at once for a device, on
  the next ``KVM_RUN`` for the VMM).
* x86 port I/O: emulator_pio_out() traces ``pio_write`` before emulator_pio_in_out() tries the
  in-kernel devices; emulator_pio_in() traces ``pio_read`` only when a device answered, and
  complete_emulator_pio_in() traces it when the VMM's answer is taken, on the next
  ``KVM_RUN``. A port read the VMM answers has no event *before* its exit.

Between an access and the exit it causes KVM traces nothing else (the vCPU does not run
again), so, per thread:

* a ``KVM_EXIT_MMIO`` is the last ``kvm_mmio`` event since that thread's last exit or guest
  entry: on x86 and arm64 a ``write`` or an ``unsatisfied-read`` (the ``read`` of the value
  the VMM gave comes after the exit); on LoongArch, whose kvm_emu_mmio_read()
  (arch/loongarch/kvm/exit.c) traces a read as ``read`` before trying its devices, that
  ``read``. An access wider than 8 bytes reaches the VMM in 8-byte pieces
  (complete_emulated_mmio()), each an exit of its own without an event: they are counted at
  the following addresses. An x86 access split across two pages has two events and two
  exits; both are counted at the second part's event (a limit of this path).
* a ``KVM_EXIT_IO`` is the ``pio_write`` just before it, if the last access since the thread's
  last exit or guest entry is one; otherwise it is a port read, known from the first
  ``pio_read`` after the exit (complete_emulator_pio_in()), if the VMM ran the vCPU again.

``kvm:kvm_entry`` (vmx_vcpu_run(), svm_vcpu_run(), arm64 kvm_arch_vcpu_ioctl_run()) marks each
guest entry, so a port write KVM answered and a port read that exits right after it are told
apart. Where the kernel traces no entry (a backend that emulates the guest instead of entering
it) they are told apart by what the same trace shows of that port: a write of that value (or,
failing that, of any value) to that port followed by more guest activity without an exit was
answered by KVM; one followed by an exit and then by no port read went to the VMM. When the
trace shows neither and a port read follows the exit, the exit is counted as the write and
`Traffic.uncertain` says so (a write followed by no read is the write: a read the VMM answered
shows its completion first when the vCPU runs again).

Run failures and internal errors
--------------------------------
``KVM_RUN`` returning ``-EINTR`` (the event's "restart") is normal: a signal reached the vCPU
thread and KVM set the exit reason ``KVM_EXIT_INTR`` (kvm_xfer_to_guest_mode_handle_work()
-> kvm_handle_signal_exit(), include/linux/kvm_host.h, from x86 vcpu_run() and arm64
kvm_arch_vcpu_ioctl_run()); it is counted as that exit, never as a failure. Every other
negative errno is a run failure. The suberror of a ``KVM_EXIT_INTERNAL_ERROR`` is in kvm_run,
not in the event: internal errors are counted without it.

Attribution to VMs
------------------
Events carry their thread and process (tgid), not their VM. A VM is known by its process and
the ``time.monotonic_ns()`` of its ``KVM_CREATE_VM``; an exit belongs to the latest VM its
process created before it (the trace clock is ``mono``; the trace text has microseconds, so
times are compared at that resolution). A process that runs the vCPUs of two VMs at the same
time has all their exits counted for the later VM.
"""

from __future__ import annotations

import bisect
import errno as errno_module
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from gpa_plan.probe.kvm import (
    KVM_EXIT_INTERNAL_ERROR,
    KVM_EXIT_INTR,
    KVM_EXIT_IO,
    KVM_EXIT_MMIO,
    KVM_EXIT_NAMES,
)
from gpa_plan.record.tracefs import Event, Parsed

_MMIO_PIECE = 8  # complete_emulated_mmio(): the VMM gets at most 8 bytes an exit
TRAFFIC_PATH = "tracefs"


def exit_name(reason: int) -> str:
    """``KVM_EXIT_MMIO`` for 6; ``KVM_EXIT_UNKNOWN`` for a number this table lacks."""
    return KVM_EXIT_NAMES.get(reason, KVM_EXIT_NAMES[0])


class Vm(NamedTuple):
    """A VM as the recorder knows it: its process and when it was created."""

    tgid: int
    created: int  # time.monotonic_ns() at its KVM_CREATE_VM


class Access(NamedTuple):
    space: str  # "mmio" or "port"
    address: int
    width: int


class Exit(NamedTuple):
    """One return of KVM_RUN, with the access that caused it when it was one."""

    tid: int
    tgid: int
    timestamp: int
    reason: int
    errno: int
    access: Access | None = None
    write: bool = False
    elements: int = 1  # a string I/O instruction's count
    uncertain: bool = False
    suberror: int | None = None  # a KVM_EXIT_INTERNAL_ERROR's, where it was read (kvm_run)


@dataclass
class Traffic:
    """The traffic of one VM, summed."""

    traffic: Counter[tuple[Access, bool]] = field(default_factory=Counter)
    exits: Counter[str] = field(default_factory=Counter)
    run_failures: Counter[str] = field(default_factory=Counter)
    # KVM_EXIT_INTERNAL_ERROR exits by suberror (None: not known, as on the tracefs path)
    internal_errors: Counter[int | None] = field(default_factory=Counter)
    unresolved: int = 0  # MMIO/IO exits whose address the trace did not show
    uncertain: int = 0  # port exits counted as a write that may have been a read
    lost_events: int = 0  # events the kernel lost (a full buffer): the counts are then low
    unread: int = 0  # event lines of the trace that did not parse
    path: str = TRAFFIC_PATH

    @property
    def complete(self) -> bool:
        return self.lost_events == 0 and self.unread == 0

    def notes(self) -> list[str]:
        """What a reader of the counts must know, one sentence each (for the recording's
        comments); empty when the counts are exact."""
        said = []
        if self.lost_events:
            said.append(
                f"traffic is incomplete: the kernel lost {self.lost_events} trace events to a "
                "full buffer, so the counts are low"
            )
        if self.unread:
            said.append(
                f"traffic is incomplete: {self.unread} trace lines were not understood (a "
                "kernel whose event formats differ from Linux 7.2's)"
            )
        if self.unresolved:
            said.append(
                f"{self.unresolved} MMIO or port exits are counted in `exits` only: the trace "
                "did not show their address"
            )
        if self.uncertain:
            said.append(
                f"{self.uncertain} port exits are counted as writes that may have been reads "
                "of the port read just after them"
            )
        return said

    def add(self, ex: Exit) -> None:
        if ex.errno < 0 and ex.errno != -errno_module.EINTR:
            self.run_failures[errno_module.errorcode.get(-ex.errno, str(-ex.errno))] += 1
            return
        reason = KVM_EXIT_INTR if ex.errno < 0 else ex.reason
        self.exits[exit_name(reason)] += 1
        if reason == KVM_EXIT_INTERNAL_ERROR:
            self.internal_errors[ex.suberror] += 1
        if reason in (KVM_EXIT_MMIO, KVM_EXIT_IO):
            if ex.access is None:
                self.unresolved += 1
            else:
                self.traffic[ex.access, ex.write] += ex.elements
            self.uncertain += ex.uncertain

    def observed_entries(self) -> dict[str, Any]:
        """The ``observed`` entries of the layout format: ``traffic_path``, ``traffic``,
        ``exits``, ``run_failures``, ``internal_errors`` (empty lists left out)."""
        rows: dict[Access, dict[str, Any]] = {}
        for (access, write), n in sorted(self.traffic.items()):
            row = rows.setdefault(
                access,
                {"space": access.space, "address": access.address, "width": access.width,
                 "reads": 0, "writes": 0},
            )  # fmt: skip
            row["writes" if write else "reads"] += n
        entries: dict[str, Any] = {"traffic_path": self.path}
        sections = {
            "traffic": list(rows.values()),
            "exits": [{"reason": r, "count": n} for r, n in sorted(self.exits.items())],
            "run_failures": [
                {"errno": e, "count": n} for e, n in sorted(self.run_failures.items())
            ],
            "internal_errors": [
                {**({} if suberror is None else {"suberror": suberror}), "count": n}
                for suberror, n in sorted(self.internal_errors.items(), key=lambda i: i[0] or 0)
            ],
        }
        entries.update({key: value for key, value in sections.items() if value})
        return entries


# --- pairing accesses with exits ---------------------------------------------------------------

_MMIO = frozenset({"mmio-write", "mmio-read", "mmio-unsatisfied-read"})
_ACCESSES = frozenset({"mmio-write", "mmio-read", "mmio-unsatisfied-read", "pio-write", "pio-read"})


class _PortWrites:
    """Who answers port writes, as the trace shows it: KVM when the same thread went on
    (another access, a guest entry) without an exit; the VMM when an IO exit followed and the
    thread's next access was no port read (a read's completion would come first)."""

    def __init__(self, events: Sequence[Event]) -> None:
        self.kvm: set[tuple[int, int, int]] = set()
        self.vmm: set[tuple[int, int, int]] = set()
        last: dict[int, Event] = {}
        exited: dict[int, tuple[int, int, int]] = {}  # a write an IO exit followed
        for ev in events:
            before = last.get(ev.tid)
            if ev.kind in _ACCESSES or ev.kind == "entry":
                key = exited.pop(ev.tid, None)
                if key is not None and ev.kind != "pio-read":
                    self.vmm.add(key)
                if before is not None and before.kind == "pio-write":
                    self.kvm.add((before.address, before.width, before.value))
            elif ev.kind == "exit":
                exited.pop(ev.tid, None)
                if before is not None and before.kind == "pio-write" and ev.reason == KVM_EXIT_IO:
                    exited[ev.tid] = (before.address, before.width, before.value)
            last[ev.tid] = ev
        self.kvm_ports = {(port, width) for port, width, _ in self.kvm}
        self.vmm_ports = {(port, width) for port, width, _ in self.vmm}

    def kvm_answers(self, ev: Event) -> bool | None:
        """Whether KVM answered this write: by its port, width and value, else by its port and
        width alone (an ioeventfd with a datamatch answers some values only); None: not
        shown."""
        key = (ev.address, ev.width, ev.value)
        if key in self.kvm or key in self.vmm:
            return key in self.kvm
        port = key[:2]
        if (port in self.kvm_ports) != (port in self.vmm_ports):
            return port in self.kvm_ports
        return None


@dataclass
class _Thread:
    # Since the thread's last exit or guest entry: its last access, its last kvm_mmio event.
    last: Event | None = None
    mmio: Event | None = None
    rest: tuple[Access, bool] | None = None  # the next 8-byte piece of a wide MMIO access
    port_read: int | None = None  # an IO exit (its index) waiting for its read's completion
    maybe_read: int | None = None  # an IO exit counted as a write that a read may follow
    entries: bool = False  # kvm_entry seen for this thread


def exits(events: Iterable[Event]) -> list[Exit]:
    """Every KVM_RUN return in ``events`` (a trace's order), with its access when it was an
    MMIO or port exit the trace shows (see the module's docstring for the rules)."""
    ordered = list(events)
    writes = _PortWrites(ordered)
    threads: dict[int, _Thread] = defaultdict(_Thread)
    found: list[Exit] = []
    for ev in ordered:
        t = threads[ev.tid]
        if ev.kind == "entry":
            t.entries, t.last, t.mmio = True, None, None
            continue
        if ev.kind == "exit":
            ex = _exit(t, ev, writes)
            if ex is None:
                t.port_read = len(found)
                ex = Exit(ev.tid, ev.tgid, ev.timestamp, ev.reason, ev.errno)
            elif ex.uncertain:
                t.maybe_read = len(found)
                ex = ex._replace(uncertain=False)
            found.append(ex)
            continue
        if ev.kind in _ACCESSES:
            _first_after_exit(t, ev, found)
            t.last = ev
            if ev.kind in _MMIO:
                t.mmio = ev
    return found


def _first_after_exit(t: _Thread, ev: Event, found: list[Exit]) -> None:
    """The first access after an IO exit: a port read's completion, when one is awaited."""
    if ev.kind == "pio-read" and t.port_read is not None:
        found[t.port_read] = found[t.port_read]._replace(
            access=Access("port", ev.address, ev.width), write=False, elements=ev.elements
        )
    if ev.kind == "pio-read" and t.maybe_read is not None:
        found[t.maybe_read] = found[t.maybe_read]._replace(uncertain=True)
    t.port_read = t.maybe_read = None


def _exit(t: _Thread, ev: Event, writes: _PortWrites) -> Exit | None:
    """The exit ``ev`` with its access; None for a port read, whose port the first access
    event after it tells."""
    last, cause = t.last, t.mmio
    t.last = t.mmio = None
    t.port_read = t.maybe_read = None
    ex = Exit(ev.tid, ev.tgid, ev.timestamp, ev.reason, ev.errno)
    if ev.errno < 0:
        return ex
    if ev.reason == KVM_EXIT_MMIO:
        rest, t.rest = t.rest, None
        if cause is None:
            return ex if rest is None else ex._replace(access=rest[0], write=rest[1])
        width = min(cause.width, _MMIO_PIECE)
        write = cause.kind == "mmio-write"
        if cause.width > _MMIO_PIECE:
            piece = min(cause.width - width, _MMIO_PIECE)
            t.rest = (Access("mmio", cause.address + width, piece), write)
        return ex._replace(access=Access("mmio", cause.address, width), write=write)
    if ev.reason == KVM_EXIT_IO:
        if last is not None and last.kind == "pio-write":
            kvm = None if t.entries else writes.kvm_answers(last)
            if kvm:
                return None
            return ex._replace(
                access=Access("port", last.address, last.width),
                write=True,
                elements=last.elements,
                uncertain=kvm is None and not t.entries,  # until a port read follows
            )
        return None
    return ex


# --- attribution -------------------------------------------------------------------------------


def attribute(
    events: Iterable[Event], vms: Sequence[Vm], *, lost: int = 0, unread: int = 0
) -> list[Traffic]:
    """The traffic of each VM of ``vms`` (same order): each exit goes to the latest VM its
    process created before it; exits of a process before its first VM are left out.
    ``lost`` (events the kernel lost) and ``unread`` (lines not understood) mark every VM's
    traffic incomplete."""
    by_process: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for index, vm in enumerate(vms):
        # The trace text has microseconds: a VM created within an event's microsecond counts
        # as created before it.
        by_process[vm.tgid].append((vm.created - vm.created % 1000, index))
    for created in by_process.values():
        created.sort()
    results = [Traffic(lost_events=lost, unread=unread) for _ in vms]
    found = exits(events)
    tgids = _tgids(found)
    for ex in found:
        created = by_process.get(tgids.get(ex.tid, ex.tid), [])
        at = bisect.bisect_right(created, (ex.timestamp, len(vms)))
        if at:
            results[created[at - 1][1]].add(ex)
    return results


def summed(parsed: Parsed, vms: Sequence[Vm]) -> list[Traffic]:
    """`attribute` of what `KvmTrace.read` gave: each VM's traffic, with what was lost."""
    return attribute(parsed.events, vms, lost=parsed.lost, unread=parsed.unread)


def _tgids(found: Sequence[Exit]) -> dict[int, int]:
    """Each thread's process, where an event told it (record-tgid may print "-----")."""
    known: dict[int, int] = {}
    for ex in found:
        if ex.tgid >= 0:
            known.setdefault(ex.tid, ex.tgid)
    return known
