"""Execute a plan on ``/dev/kvm`` and say what KVM did (`run_plan`).

The run is what a VMM would do: create the VM, make the plan's set-up steps in order (a refused
step is recorded with its errno and the run goes on; a memslot that was refused has no memory),
then let the architecture's guest make each probe's access and classify what happened. The VM
and its vCPU serve probe after probe; after a probe that left the vCPU unusable (``KVM_RUN``
failed, the vCPU shut down) a fresh VM is built by replaying the steps.

Interface of an architecture module (``x86_64.py``, ``arm64.py``; found through `ARCHES`)::

    VM_TYPE: Callable[[dict], int]      # the KVM_CREATE_VM type for the plan
    def arch_step(state: VmState, step: dict) -> str | None | NotImplemented
        # an architecture's own step (irqchip, tss, vgic, ...): its errno name or None;
        # NotImplemented for an op it does not know (memslot, ioeventfd, coalesced and vcpus
        # are made here unless the module takes them)
    class Guest:
        def __init__(self, state: VmState, plan: dict) -> None
            # the probe's memslot in plan["probe_area"] (state.add_own_memslot), its code, the
            # vCPU (state.vcpu_fds[0] when the plan's vcpus step made it, else its own);
            # raises GuestError when it cannot be built: every probe is then not-run
        usable: bool        # False after a probe that left the vCPU unusable: run_plan then
                            # closes the guest and the VM and builds fresh ones
        facts: dict         # what the guest was given (x86: its MAXPHYADDR), results["guest"]
        def run(self, probe: Probe) -> ProbeResult
        def close(self) -> None

`check_plan` refuses (PlanError) a plan whose fields the probe cannot use; run_plan reports
that as the results' "error". The results get a "guest" object, the guest's ``facts``, once a
guest was built.

Helpers the guests share: `VmState.poke` / `VmState.peek` (memory of the memslot KVM would use
at a GPA), `VmState.finish` (the observation of a probe whose guest completed without an exit
to the VMM), `VmState.attach_ring` (the coalesced MMIO ring, in the vCPU's mapping), and
`deadline` (a bound on one KVM_RUN).
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import mmap
import os
import signal
import struct
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any, NamedTuple

from . import kvm
from .plan import ACCESSES, FORMAT, ProbeResult

# The probe module of each architecture, by the name plans use, with the `uname -m` of a host
# that runs it. The one place that names architectures.
ARCHES = {"x86_64": "x86_64", "arm64": "aarch64"}

# struct kvm_coalesced_mmio_ring {u32 first, last; struct kvm_coalesced_mmio entries[]}, each
# entry {u64 phys_addr; u32 len; u32 pio or pad; u8 data[8]} (include/uapi/linux/kvm.h).
_RING_HEAD = struct.Struct("<II")
_RING_ENTRY = struct.Struct("<QII8s")
_RING_ENTRIES = (kvm.PAGE_SIZE - _RING_HEAD.size) // _RING_ENTRY.size

# Observations after which the vCPU (or the VM) is not trusted for another probe.
BROKEN = frozenset({"run-error", "internal-error", "other"})


class PlanError(Exception):
    """The plan cannot be run as written (unknown arch or step); results carry the reason."""


class GuestError(Exception):
    """The probe's own guest could not be built; every probe of the plan is then not-run."""


def arch_module(arch: str) -> ModuleType:
    """The probe module of ``arch`` (a plan's "arch")."""
    if arch not in ARCHES:
        raise PlanError(f"no probe for architecture {arch!r}; known: {', '.join(ARCHES)}")
    return importlib.import_module(f".{arch}", __package__)


def host_arch() -> str | None:
    """The plan name of this host's architecture, None when no probe exists for it."""
    machine = os.uname().machine
    for name, uname in ARCHES.items():
        if uname == machine:
            return name
    return None


class Memslot(NamedTuple):
    """An accepted memslot and the host memory behind it."""

    slot: int
    as_id: int
    base: int
    size: int
    readonly: bool
    memory: kvm.Memory

    @property
    def end(self) -> int:
        return self.base + self.size


class Doorbell(NamedTuple):
    """A registered ioeventfd."""

    base: int
    length: int
    datamatch: int | None
    fd: int


class RingEntry(NamedTuple):
    phys_addr: int
    length: int
    data: bytes


class VmState:
    """One VM as the steps left it: its memslots, ioeventfds, coalesced zones and vCPUs."""

    def __init__(self, kvm_: kvm.Kvm, vm_type: int) -> None:
        self.kvm = kvm_
        self.vm_fd = kvm.create_vm(kvm_, vm_type)
        self.memslots: list[Memslot] = []
        self.doorbells: list[Doorbell] = []
        self.coalesced: list[tuple[int, int]] = []
        self.vcpu_fds: list[int] = []
        self._ring: mmap.mmap | None = None
        self._ring_offset = 0

    # --- steps -------------------------------------------------------------------------------

    def set_memslot(
        self, slot: int, as_id: int, base: int, size: int, readonly: bool
    ) -> str | None:
        """KVM_SET_USER_MEMORY_REGION over fresh anonymous memory: None or the errno name.

        An accepted slot id that was already set replaces (size 0: deletes) the earlier one,
        as KVM does; a refused one leaves nothing behind. ENOMEM means the host could not
        reserve that much address space, and KVM was not asked.
        """
        try:
            memory = kvm.Memory(size) if size else None
        except MemoryError:
            return errno.errorcode[errno.ENOMEM]
        hva = memory.addr if memory is not None else 0
        refused = kvm.set_memslot(self.vm_fd, slot, as_id, base, size, hva, readonly)
        if refused is not None:
            if memory is not None:
                memory.close()
            return refused
        for old in [m for m in self.memslots if (m.slot, m.as_id) == (slot, as_id)]:
            self.memslots.remove(old)
            old.memory.close()
        if memory is not None:
            self.memslots.append(Memslot(slot, as_id, base, size, readonly, memory))
        return None

    def add_own_memslot(self, base: int, size: int) -> Memslot:
        """The probe's own read-write memslot in address space 0, in the first free slot id."""
        slot = self.free_slot()
        refused = self.set_memslot(slot, 0, base, size, False)
        if refused is not None:
            raise GuestError(
                f"the probe's memslot at {base:#x} (+{size:#x}) was refused with {refused}: "
                "give the plan a probe_area clear of every memslot"
            )
        return self.memslots[-1]

    def free_slot(self, as_id: int = 0) -> int:
        """The lowest slot id no memslot of ``as_id`` uses."""
        taken = {m.slot for m in self.memslots if m.as_id == as_id}
        return next(n for n in range(len(taken) + 1) if n not in taken)

    def add_ioeventfd(self, base: int, length: int, datamatch: int | None) -> str | None:
        refused, efd = kvm.add_ioeventfd(self.vm_fd, base, length, datamatch)
        if refused is None:
            self.doorbells.append(Doorbell(base, length, datamatch, efd))
        return refused

    def add_coalesced(self, base: int, size: int) -> str | None:
        refused = kvm.add_coalesced_zone(self.vm_fd, base, size)
        if refused is None:
            self.coalesced.append((base, size))
        return refused

    def create_vcpus(self, count: int) -> str | None:
        """KVM_CREATE_VCPU for ids 0..count-1; the first refusal's errno stops the step."""
        for vcpu_id in range(len(self.vcpu_fds), count):
            try:
                self.vcpu_fds.append(kvm.ioctl(self.vm_fd, kvm.KVM_CREATE_VCPU, vcpu_id))
            except OSError as exc:
                return kvm.errno_name(exc.errno)
        return None

    # --- guest memory ----------------------------------------------------------------------

    def _pieces(self, gpa: int, length: int) -> Iterator[tuple[Memslot, int, int, int]]:
        """(memslot, offset in it, offset in the range, length) for each part of
        [gpa, gpa+length) in an address-space-0 memslot, the first accepted one winning."""
        done: list[tuple[int, int]] = []
        for m in self.memslots:
            lo, hi = max(gpa, m.base), min(gpa + length, m.end)
            if m.as_id != 0 or lo >= hi or any(a < hi and lo < b for a, b in done):
                continue
            done.append((lo, hi))
            yield m, lo - m.base, lo - gpa, hi - lo

    def _memory(self, gpa: int, length: int) -> Iterator[tuple[Memslot, int, int, int]]:
        """`_pieces` whose host memory can be read and written."""
        return (piece for piece in self._pieces(gpa, length) if piece[0].memory.writable)

    def in_memory(self, gpa: int, length: int) -> bool:
        """Whether every byte of [gpa, gpa+length) is in an address-space-0 memslot."""
        return sum(n for *_, n in self._pieces(gpa, length)) == length

    def poke(self, gpa: int, data: bytes) -> None:
        """Write ``data`` at ``gpa`` into the memory KVM would use; bytes outside memslots (or in
        memory the host could only reserve, PROT_NONE) go nowhere."""
        for m, offset, start, n in self._memory(gpa, len(data)):
            m.memory.write(offset, data[start : start + n])

    def peek(self, gpa: int, length: int) -> bytes:
        """The memory at ``gpa``; bytes outside memslots read as 0."""
        out = bytearray(length)
        for m, offset, start, n in self._memory(gpa, length):
            out[start : start + n] = m.memory.read(offset, n)
        return bytes(out)

    # --- observations ----------------------------------------------------------------------

    def attach_ring(self, run: mmap.mmap, page_offset: int) -> None:
        """The coalesced MMIO ring is the page ``page_offset`` of a vCPU's mapping
        (KVM_COALESCED_MMIO_PAGE_OFFSET); the guest maps at least that far."""
        self._ring, self._ring_offset = run, page_offset * kvm.PAGE_SIZE

    def drain_ring(self) -> list[RingEntry]:
        """The entries KVM added to the coalesced MMIO ring since the last call."""
        ring, base = self._ring, self._ring_offset
        if ring is None or len(ring) < base + kvm.PAGE_SIZE:
            return []
        first, last = _RING_HEAD.unpack_from(ring, base)
        entries = []
        while first != last and first < _RING_ENTRIES:
            phys, length, _, data = _RING_ENTRY.unpack_from(
                ring, base + _RING_HEAD.size + first * _RING_ENTRY.size
            )
            entries.append(RingEntry(phys, length, data[: min(length, 8)]))
            first = (first + 1) % _RING_ENTRIES
        struct.pack_into("<I", ring, base, first)
        return entries

    def rung(self) -> list[Doorbell]:
        """The ioeventfds signalled since the last call (their counters are read to 0)."""
        return [d for d in self.doorbells if kvm.eventfd_count(d.fd)]

    def quiet(self) -> None:
        """Forget what earlier accesses left in the ring and the eventfds."""
        self.drain_ring()
        self.rung()

    def finish(self, probe: Any, value: int | None) -> ProbeResult:
        """The observation of a probe whose access completed without an exit to the VMM
        (reads: ``value`` is what the guest read). Call `quiet` and seed memory before the
        access: a read's marker is ``probe["value"]``, a write's seed anything else."""
        address, width = probe["address"], probe["width"]
        rung = self.rung()
        if rung:
            d = rung[0]
            match = "any value" if d.datamatch is None else f"datamatch {d.datamatch:#x}"
            return _result(probe, "eventfd", f"ioeventfd at {d.base:#x} len {d.length}, {match}")
        entries = self.drain_ring()
        if entries:
            e = entries[0]
            return _result(probe, "coalesced", f"ring entry at {e.phys_addr:#x} len {e.length}")
        mask = (1 << (8 * width)) - 1
        marker = probe["value"] & mask
        if probe["access"] == "read":
            assert value is not None
            if self.in_memory(address, width) and value & mask == marker:
                return _result(probe, "memory", f"read the marker {marker:#x}")
            return _result(probe, "kernel", f"read {value & mask:#x} with no exit")
        if self.in_memory(address, width) and self.peek(address, width) == marker.to_bytes(
            width, "little"
        ):
            return _result(probe, "memory", f"memory holds {marker:#x}")
        return _result(probe, "kernel", "the write completed with no exit")

    def close(self) -> None:
        for fd in self.vcpu_fds:
            os.close(fd)
        for d in self.doorbells:
            os.close(d.fd)
        os.close(self.vm_fd)
        for m in self.memslots:
            m.memory.close()
        self.vcpu_fds, self.doorbells, self.memslots = [], [], []


def _result(probe: Any, observed: str, detail: str) -> ProbeResult:
    return {"id": probe["id"], "observed": observed, "detail": detail}


def probe_result(probe: Any, observed: str, detail: str) -> ProbeResult:
    """One probe's result, for the architecture modules."""
    return _result(probe, observed, detail)


# --- KVM_RUN bound -------------------------------------------------------------------------------


class Deadline:
    """Whether the bound set by `deadline` has passed."""

    def __init__(self) -> None:
        self.expired = False

    def expire(self, *_: object) -> None:
        self.expired = True


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    """Interrupt a KVM_RUN still running ``seconds`` after entry (it fails with EINTR); a
    KVM_RUN that fails with EINTR while ``expired`` is False was interrupted by another
    signal and may be made again.

    Only the main thread can take signals; elsewhere the run is not bounded.
    """
    bound = Deadline()
    if threading.current_thread() is not threading.main_thread():
        yield bound
        return
    previous = signal.signal(signal.SIGALRM, bound.expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield bound
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- the run ---------------------------------------------------------------------------------


def _step(arch: ModuleType, state: VmState, plan: dict[str, Any], step: dict[str, Any]) -> Any:
    answer = arch.arch_step(state, step)
    if answer is not NotImplemented:
        return answer
    op = step.get("op")
    if op == "memslot":
        return state.set_memslot(
            step["slot"],
            step.get("as_id", 0),
            step["base"],
            step["size"],
            bool(step.get("readonly", False)),
        )
    if op == "ioeventfd":
        return state.add_ioeventfd(step["base"], step["length"], step.get("datamatch"))
    if op == "coalesced":
        return state.add_coalesced(step["base"], step["size"])
    if op == "vcpus":
        return state.create_vcpus(int(plan.get("vm", {}).get("vcpus", 1)))
    raise PlanError(f"step {step.get('id')!r}: unknown op {op!r}")


def _build(
    kvm_: kvm.Kvm, arch: ModuleType, plan: dict[str, Any], record: list[Any] | None
) -> VmState:
    """A fresh VM with the plan's steps made; their results go to ``record`` when given."""
    state = VmState(kvm_, arch.VM_TYPE(plan))
    try:
        for step in plan.get("steps", []):
            refused = _step(arch, state, plan, step)
            if record is not None:
                record.append({"id": step["id"], "errno": refused})
    except BaseException:
        state.close()
        raise
    return state


def _host_facts() -> dict[str, Any]:
    try:
        from .host import host_facts  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return {}
    facts: dict[str, Any] = host_facts()
    return facts


# The integer fields of each step the probe reads (architecture modules check their own).
_STEP_INTS = {
    "memslot": ("slot", "base", "size"),
    "ioeventfd": ("base", "length"),
    "coalesced": ("base", "size"),
    "tss": ("addr",),
    "identity_map": ("addr",),
}
_U64 = 1 << 64


def _u64(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _U64


def _with_unique_ids(items: list[Any], key: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each entry of ``items`` (the plan's ``key``) with where it is, once it is known to be
    an object whose string id no earlier entry has."""
    ids: set[str] = set()
    for n, item in enumerate(items):
        where = f"{key}[{n}]"
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise PlanError(f"{where}: an object with a string id is needed")
        if item["id"] in ids:
            raise PlanError(f"{where}: id {item['id']!r} is used twice")
        ids.add(item["id"])
        yield where, item


def check_plan(plan: object) -> None:
    """Raise PlanError naming the first field of ``plan`` the probe cannot use."""
    if not isinstance(plan, dict):
        raise PlanError(f"the plan is a JSON object, not a {type(plan).__name__}")
    if plan.get("format") != FORMAT:
        raise PlanError(f"plan format {plan.get('format')!r}; this probe reads format {FORMAT}")
    arch_module(str(plan.get("arch")))
    for key, kind in (("vm", dict), ("probe_area", dict), ("steps", list), ("probes", list)):
        if not isinstance(plan.get(key), kind):
            raise PlanError(f"{key}: a JSON {'object' if kind is dict else 'array'} is needed")
    for key in ("base", "size"):
        if not _u64(plan["probe_area"].get(key)):
            raise PlanError(f"probe_area.{key}: an integer from 0 to 2**64-1 is needed")
    for where, item in _with_unique_ids(plan["steps"], "steps"):
        for key in _STEP_INTS.get(str(item.get("op")), ()):
            if not _u64(item.get(key)):
                raise PlanError(f"{where}.{key}: an integer from 0 to 2**64-1 is needed")
    for where, item in _with_unique_ids(plan["probes"], "probes"):
        if item.get("access") not in ACCESSES:
            raise PlanError(f"{where}.access: one of {', '.join(ACCESSES)} is needed")
        if item.get("width") not in (1, 2, 4, 8):
            raise PlanError(f"{where}.width: 1, 2, 4 or 8 is needed")
        for key in ("address", "value"):
            if not _u64(item.get(key)):
                raise PlanError(f"{where}.{key}: an integer from 0 to 2**64-1 is needed")


def run_plan(plan: dict[str, Any]) -> dict[str, Any]:
    """Run ``plan`` (plan.py's format) on this host's ``/dev/kvm`` and return its results.

    Raises kvm.KvmError when ``/dev/kvm`` cannot be used at all. A plan that cannot be run as
    written (`check_plan`, an unknown step) gives results whose "error" says why.
    """
    results: dict[str, Any] = {
        "format": FORMAT,
        "host": _host_facts(),
        "steps": [],
        "probes": [],
        "error": None,
    }
    try:
        check_plan(plan)
        arch = arch_module(str(plan.get("arch")))
        probes = list(plan["probes"])
    except PlanError as exc:
        results["error"] = str(exc)
        return results
    kvm_ = kvm.Kvm()
    try:
        _run(kvm_, arch, plan, probes, results)
    finally:
        kvm_.close()
    return results


def _run(
    kvm_: kvm.Kvm,
    arch: ModuleType,
    plan: dict[str, Any],
    probes: list[Any],
    results: dict[str, Any],
) -> None:
    try:
        state: VmState | None = _build(kvm_, arch, plan, results["steps"])
    except PlanError as exc:
        results["error"] = str(exc)
        return
    except OSError as exc:
        # KVM_CREATE_VM itself refused the VM's type (arm64: an IPA size beyond the host's).
        results["error"] = f"KVM_CREATE_VM failed with {kvm.errno_name(exc.errno)}"
        results["vm_errno"] = kvm.errno_name(exc.errno)
        return
    guest = None
    try:
        for index, probe in enumerate(probes):
            if state is None:
                state = _build(kvm_, arch, plan, None)
            if guest is None:
                try:
                    guest = arch.Guest(state, plan)
                except GuestError as exc:
                    results["error"] = str(exc)
                    results["probes"] += [_result(p, "not-run", str(exc)) for p in probes[index:]]
                    return
                results["guest"] = dict(getattr(guest, "facts", {}))
            result = guest.run(probe)
            results["probes"].append(result)
            if not getattr(guest, "usable", result["observed"] not in BROKEN):
                guest.close()
                guest = None
                state.close()
                state = None
    finally:
        if guest is not None:
            guest.close()
        if state is not None:
            state.close()
