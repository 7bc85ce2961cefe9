"""Rules on what a recording saw (a layout's `observed:`): calls KVM refused, KVM_RUN failures
and internal errors. Each finding is at its entry in the file.

The traffic itself gives no finding here: without the layout the program meant to build,
nothing says which exits were expected (`check --layout DECLARED`, gpa_plan.check.declared,
reports those no declared device claims)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from gpa_plan.check.findings import Finding
from gpa_plan.check.rules import ERROR, WARNING, RuleContext, rule
from gpa_plan.layout.models import Observed
from gpa_plan.layout.observed import INTERNAL_ERRORS, RUN_ERRNOS

# What a refusal most often means, by (call, errno); the kernel function that refuses.
_MEMSLOT_CALLS = ("KVM_SET_USER_MEMORY_REGION", "KVM_SET_USER_MEMORY_REGION2")
_REFUSALS: dict[tuple[str, str], str] = {
    **{
        (call, "EEXIST"): (
            "the memslot overlaps one KVM already holds in that address space "
            "(kvm_set_memory_region() -> kvm_check_memslot_overlap()); move it, or delete "
            "the other memslot first"
        )
        for call in _MEMSLOT_CALLS
    },
    **{
        (call, "EINVAL"): (
            "KVM refuses the memslot's shape: a base, size or userspace address that is not "
            "page-aligned, a flag it does not take (guest_memfd with readonly or dirty "
            "logging), an address space or slot id out of range (kvm_set_memory_region(), "
            "check_memory_region_flags()); fix the call's arguments"
        )
        for call in _MEMSLOT_CALLS
    },
    ("KVM_IOEVENTFD", "EEXIST"): (
        "an ioeventfd one write could also match is already registered on that bus "
        "(eventfd.c ioeventfd_check_collision()); use another address, or the same length "
        "with distinct datamatch values"
    ),
    ("KVM_IOEVENTFD", "EINVAL"): (
        "a length other than 0, 1, 2, 4 or 8, a datamatch with length 0, or an address range "
        "that wraps (eventfd.c kvm_assign_ioeventfd()); fix the length or datamatch"
    ),
    ("KVM_IOEVENTFD", "ENOENT"): (
        "a KVM_IOEVENTFD_FLAG_DEASSIGN found no ioeventfd with that address, length, "
        "datamatch and eventfd (eventfd.c kvm_deassign_ioeventfd_idx()); remove what was "
        "registered, with the same arguments"
    ),
    ("KVM_IOEVENTFD", "ENOSPC"): (
        "the io bus holds NR_IOBUS_DEVS (1000) devices already (kvm_main.c "
        "kvm_io_bus_register_dev()); register fewer in-kernel devices and zones"
    ),
    ("KVM_REGISTER_COALESCED_MMIO", "ENOSPC"): (
        "the io bus holds NR_IOBUS_DEVS (1000) devices already (kvm_main.c "
        "kvm_io_bus_register_dev()); register fewer zones"
    ),
    ("KVM_CREATE_VCPU", "EEXIST"): (
        "a vCPU with that id exists already (kvm_main.c kvm_vm_ioctl_create_vcpu()); give "
        "each vCPU its own id"
    ),
    ("KVM_CREATE_IRQCHIP", "EEXIST"): (
        "the VM has an in-kernel irqchip already (x86.c kvm_arch_vm_ioctl()); create it once"
    ),
}
# Errnos that say the same of any call.
_ANY_CALL: dict[str, str] = {
    "ENOTTY": "this kernel does not know the ioctl; check the kernel version or its config",
    "EFAULT": "KVM could not read or write the struct the call points at; check the pointer",
    "EBADF": "the call was made on a file descriptor that is not open; check which fd it uses",
}


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


@rule(
    "refused-call",
    WARNING,
    "an ioctl KVM refused while the recording ran: it changed nothing",
)
def refused_call(ctx: RuleContext) -> Iterator[Finding]:
    """A recording lists every ioctl KVM refused (`observed.refused`), with its errno. A
    refused call changes nothing in KVM (a memslot not added, an ioeventfd not registered),
    so the VM ran without what the program asked for: the recorded layout shows what KVM
    held, not what was asked. The message says what the errno most often means for the call,
    with the kernel function that refuses (kvm_set_memory_region(), eventfd.c
    kvm_assign_ioeventfd(), ...; docs/kernel.md). A warning: programs probe on purpose (a
    capability, an address). Fix: correct the call's arguments, or ignore the rule for
    recordings of programs that probe."""
    observed = ctx.layout.source.observed
    if observed is None:
        return
    for i, refused in enumerate(observed.refused):
        detail = f" ({refused.detail})" if refused.detail else ""
        meaning = _REFUSALS.get((refused.call, refused.errno)) or _ANY_CALL.get(
            refused.errno,
            f"look up where the kernel returns {refused.errno} for {refused.call} and fix the "
            "call's arguments",
        )
        yield ctx.finding(
            f"KVM refused {refused.call}{detail} with {refused.errno}, "
            f"{_plural(refused.count, 'time')}: the call changed nothing in KVM, so the VM ran "
            f"without it; {meaning}",
            ("observed", "refused", i),
            objects=(refused.call,),
        )


@rule("run-failed", ERROR, "KVM_RUN failed (returned -1) while the recording ran")
def run_failed(ctx: RuleContext) -> Iterator[Finding]:
    """KVM_RUN returning -1 stops the vCPU: the guest does not go on. The message says what
    the errno most often means, with the kernel function that returns it (docs/kernel.md, "What
    a recording saw"): a memslot whose userspace memory is gone, an in-kernel interrupt
    controller that is incomplete or overlaps itself, a vCPU never initialized, a state KVM
    refuses at entry; a signal is what a VMM retries. Fix: what the message names; else look
    up where the kernel returns that errno from KVM_RUN."""
    observed = ctx.layout.source.observed
    if observed is None:
        return
    for i, failure in enumerate(observed.run_failures):
        meaning = RUN_ERRNOS.get(
            failure.errno,
            f"look up where this kernel's KVM_RUN returns {failure.errno} (kvm_vcpu_ioctl() "
            "and the architecture's kvm_arch_vcpu_ioctl_run())",
        )
        yield ctx.finding(
            f"KVM_RUN failed with {failure.errno}, {_plural(failure.count, 'time')}: the vCPU "
            f"stopped there; {meaning}",
            ("observed", "run_failures", i),
            objects=("KVM_RUN",),
        )


@rule(
    "internal-error",
    ERROR,
    "KVM_RUN returned KVM_EXIT_INTERNAL_ERROR: KVM could not go on with the guest",
)
def internal_error(ctx: RuleContext) -> Iterator[Finding]:
    """KVM_EXIT_INTERNAL_ERROR means KVM met something it cannot handle and hands the vCPU
    back; the suberror says what (include/uapi/linux/kvm.h KVM_INTERNAL_ERROR_*): 1 EMULATION,
    an instruction KVM could not emulate (x86 handle_emulation_failure()), often a guest
    access to MMIO with an instruction the emulator lacks; 2 SIMUL_EX, an exception while
    delivering another; 3 DELIVERY_EV, an exit while delivering an event (the guest's IDT or
    stack outside memory); 4 UNEXPECTED_EXIT_REASON, a hardware exit KVM does not handle.
    Fix: for EMULATION, make the guest reach that MMIO with plain loads and stores, or back
    the address with a memslot if it was meant to be memory."""
    observed = ctx.layout.source.observed
    if observed is None:
        return
    for i, error in enumerate(observed.internal_errors):
        known = INTERNAL_ERRORS.get(error.suberror) if error.suberror is not None else None
        if known is not None:
            name, meaning = known
            said = f"suberror {error.suberror} (KVM_INTERNAL_ERROR_{name}): {meaning}"
        elif error.suberror is not None:
            said = (
                f"suberror {error.suberror}, which include/uapi/linux/kvm.h of Linux 7.2.13 "
                "does not name: see the kernel the recording ran on"
            )
        else:
            said = "suberror not recorded"
        fix = (
            "; make the guest reach that MMIO with plain loads and stores, or back the address "
            "with a memslot if it was meant to be memory"
            if error.suberror == 1
            else "; the kernel log and kvm_run->internal.data say where"
        )
        yield ctx.finding(
            f"KVM_EXIT_INTERNAL_ERROR, {_plural(error.count, 'time')}, {said}: KVM could not "
            f"go on with the vCPU{fix}",
            ("observed", "internal_errors", i),
            objects=("KVM_RUN",),
        )


class SpaceTraffic(NamedTuple):
    """The exits a recording saw in one space (mmio or port)."""

    space: str
    addresses: int  # distinct addresses (ports)
    reads: int
    writes: int
    widths: tuple[int, ...]  # the access widths seen, ascending
    # The addresses with the most accesses, most first (at most BUSIEST): (address, count).
    busiest: tuple[tuple[int, int], ...]


class TrafficSummary(NamedTuple):
    """What `check` says of a recording's `observed` section beside its findings."""

    path: str | None  # observed.traffic_path
    spaces: tuple[SpaceTraffic, ...]  # mmio, then port; only spaces with traffic
    exits: tuple[tuple[str, int], ...]  # (KVM_EXIT_ name, count), most first


BUSIEST = 3


def traffic_summary(observed: Observed) -> TrafficSummary:
    """Totals per space of ``observed.traffic``, and the exit counts, most first."""
    spaces = []
    for space in ("mmio", "port"):
        entries = [t for t in observed.traffic if t.space == space]
        if not entries:
            continue
        per_address: dict[int, int] = {}
        for t in entries:
            per_address[t.address] = per_address.get(t.address, 0) + t.reads + t.writes
        busiest = sorted(per_address.items(), key=lambda item: (-item[1], item[0]))[:BUSIEST]
        spaces.append(
            SpaceTraffic(
                space,
                len(per_address),
                sum(t.reads for t in entries),
                sum(t.writes for t in entries),
                tuple(sorted({t.width for t in entries})),
                tuple(busiest),
            )
        )
    exits: dict[str, int] = {}
    for e in observed.exits:
        exits[e.reason] = exits.get(e.reason, 0) + e.count
    ordered = tuple(sorted(exits.items(), key=lambda item: (-item[1], item[0])))
    return TrafficSummary(observed.traffic_path, tuple(spaces), ordered)


# Rules on what happened when the recording ran, not on the layout: a plan made from a
# recording (allocate) is not refused for them.
OBSERVATION_RULES = frozenset({refused_call.slug, run_failed.slug, internal_error.slug})
