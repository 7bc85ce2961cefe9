"""The plan `gpa-plan verify` runs, and what gpa-plan predicts for each of its steps and probes.

Set-up steps come in the order a VMM makes them: the private ranges the layout places
(`kvm_private`), the memslots in file order, the ioeventfds and coalesced zones, then the
in-kernel devices and the vCPUs as the architecture makes them (``ArchSpec.probe_steps``).
A step is predicted to be refused when an error finding of the checked layout names its object
and an errno: the finding's first object is the one refused, or the step whose ioctl the
message names as the one that fails. A warning that names an errno is a refusal only some
hosts make: either answer agrees.

Probe points are drawn from the partition of the layout as declared: each region's first and
last byte (which are both sides of every boundary), and the first address beyond the space;
each is predicted from the partition as KVM will hold it (without the memslots and devices
predicted refused); each is read, written and
fetched (a fetch at the address aligned down to ``ArchSpec.instruction_align``). An ioeventfd
also gets a write of its own length and datamatch at its base, and a device whose protocol is
one write (``DeviceType.guest_write_width``: the selftests ucall) that write.

The probe's own memslot, and on arm64 the page its guest reports through, are placed by the
allocator in free, unclaimed room clear of every probe point.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from gpa_plan.arch import ARCHES
from gpa_plan.arch.base import ArchSpec, Effect, Handler, Outcome, ProbeDevice
from gpa_plan.check.explain import declined_write
from gpa_plan.check.findings import ERROR, WARNING, Finding
from gpa_plan.check.partition import Region, partition, reached_beyond, region_at
from gpa_plan.check.run import CheckResult, LoadedLayout
from gpa_plan.check.vgic import missing_frames
from gpa_plan.layout.resolved import ResolvedLayout, created_on
from gpa_plan.plan.allocator import AddressAllocator, AllocationError
from gpa_plan.probe import plan as probe_plan
from gpa_plan.ranges import Range, hex_addr

if TYPE_CHECKING:
    from gpa_plan.host_profile import HostProfile

# The probe's memslot: code, descriptor tables, stack and page tables. The first size that
# fits is taken.
PROBE_AREA_SIZES = (0x10_0000, 0x4_0000, 0x1_0000)
_MARKERS = {1: 0xA5, 2: 0xA55A, 4: 0x5EEDC0DE, 8: 0x5EEDC0DE_A11CE5ED}
_WRITTEN = {1: 0x3C, 2: 0x3CC3, 4: 0xA11CE5ED, 8: 0xA11CE5ED_0BADF00D}
_ERRNO_WORD = re.compile(r"\bE[A-Z0-9]{2,}\b")
_IOCTL_WORD = re.compile(r"\bKVM_[A-Z0-9_]+\b")
OK = "ok"


class VerifyError(Exception):
    """The layout cannot be verified at all (exit 2): said in one sentence with the fix."""


class StepPrediction(NamedTuple):
    id: str
    call: str  # the ioctl the step makes
    # errno names the rules predict ("ok" for success); several where a host-dependent
    # finding leaves it open
    expected: tuple[str, ...]
    why: str  # the finding's message, or what the step does


class ProbePrediction(NamedTuple):
    id: str
    address: int
    access: str
    width: int
    value: int
    where: str  # the region's names, or "beyond 2**pa_bits"
    outcome: Outcome
    expected: tuple[str, ...]  # observations that agree (gpa_plan.probe.plan.OBSERVED)
    path: str  # the kernel path of the table's cell


class VerifyPlan(NamedTuple):
    plan: dict[str, Any]
    steps: tuple[StepPrediction, ...]
    probes: tuple[ProbePrediction, ...]
    file: str
    arch: str
    page_size: int  # the host page size the layout's predictions are for
    # KVM_CREATE_VM itself: refused (arm64, an IPA size beyond the host's) when a finding
    # says so; the VM the steps build exists only if it is not.
    vm: StepPrediction


# Not a step of the plan: the probe creates the VM from the plan's `vm` (its type from
# pa_bits) and reports KVM_CREATE_VM's errno as the results' `vm_errno`.
VM_STEP: dict[str, Any] = {"id": "vm", "op": "vm", "objects": []}

_STEP_CALLS = {
    "vm": "KVM_CREATE_VM",
    "memslot": "KVM_SET_USER_MEMORY_REGION",
    "irqchip": "KVM_CREATE_IRQCHIP",
    "split_irqchip": "KVM_ENABLE_CAP",
    "tss": "KVM_SET_TSS_ADDR",
    "identity_map": "KVM_SET_IDENTITY_MAP_ADDR",
    "vgic": "KVM_CREATE_DEVICE",
    "vgic_addr": "KVM_SET_DEVICE_ATTR",
    "its": "KVM_CREATE_DEVICE",
    "vgic_init": "KVM_SET_DEVICE_ATTR",
    "ioeventfd": "KVM_IOEVENTFD",
    "coalesced": "KVM_REGISTER_COALESCED_MMIO",
    "vcpus": "KVM_CREATE_VCPU",
}


def no_guest(arch: str) -> str:
    """Why an architecture's layouts cannot be verified."""
    able = " and ".join(a.name for a in ARCHES.values() if a.probe_steps is not None)
    return (
        f"verify has no guest for {arch}: the probe runs {able} layouts; check and explain "
        "still predict what KVM does"
    )


def build_plan(
    loaded: LoadedLayout, result: CheckResult, arch: ArchSpec, host: HostProfile | None = None
) -> VerifyPlan:
    """The plan and predictions for ``loaded`` as checked under ``arch`` (``result``), the
    probes beyond 2**pa_bits predicted for ``host`` (ArchSpec.beyond, reach_end); the plan
    itself does not depend on ``host``."""
    on_host = host if host is not None and host.arch == arch.name else None
    if arch.probe_steps is None:
        raise VerifyError(no_guest(arch.name))
    layout, _ = created_on(loaded.resolved, arch.name)
    steps = _steps(loaded, layout, arch)
    vm, *step_predictions = _without_refused_vgic(
        [VM_STEP, *steps], _step_predictions([VM_STEP, *steps], result.findings)
    )
    refused = {
        name
        for step, prediction in zip(steps, step_predictions, strict=True)
        if OK not in prediction.expected
        for name in step.get("objects", ())[:1]
    }
    declared = partition(layout, arch)
    built = _as_built(layout, refused)
    probes = _probes(
        built, declared, partition(built, arch), arch, _run_fails(built, arch), on_host
    )
    area, report = _probe_room(layout, declared, arch, probes)
    plan: dict[str, Any] = {
        "format": probe_plan.FORMAT,
        "arch": arch.name,
        "vm": {"pa_bits": layout.pa_bits, "vcpus": _vcpus(layout)},
        "steps": [{k: v for k, v in s.items() if k != "objects"} for s in steps],
        "probe_area": {"base": area.start, "size": area.size},
        "report": report,
        "probes": [
            {"id": p.id, "address": p.address, "access": p.access, "width": p.width,
             "value": p.value}
            for p in probes
        ],
    }
    return VerifyPlan(
        plan,
        tuple(step_predictions),
        tuple(probes),
        loaded.doc.path,
        arch.name,
        layout.page_size,
        vm,
    )


# --- steps ---------------------------------------------------------------------------------


def _vcpus(layout: ResolvedLayout) -> int:
    """The VM's vCPUs: as many as the layout's redistributors are for, summed over its
    redistributor regions (KVM gives each vCPU the next free frame, region by region:
    vgic_v3_insert_redist_region(), vgic_register_redist_iodev()); one otherwise."""
    return sum(d.vcpus for d in layout.source.devices if d.vcpus) or 1


def _steps(loaded: LoadedLayout, layout: ResolvedLayout, arch: ArchSpec) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for key, address in loaded.layout.kvm_private.items():
        steps.append({"id": key, "op": key, "addr": address, "objects": [f"kvm_private.{key}"]})
    for m in layout.memslots:
        steps.append(
            {
                "id": f"memslot:{m.name}",
                "op": "memslot",
                "slot": m.slot,
                "as_id": m.as_id,
                "base": m.range.start,
                "size": m.range.size,
                "readonly": m.readonly,
                "objects": [m.name],
            }
        )
    for d in layout.devices:
        if d.doorbell is not None:
            steps.append(
                {"id": f"ioeventfd:{d.name}", "op": "ioeventfd", "base": d.doorbell.base,
                 "length": d.doorbell.length, "datamatch": d.doorbell.datamatch,
                 "objects": [d.name]}
            )
        elif d.handler is Handler.COALESCED:
            steps.append(
                {"id": f"coalesced:{d.name}", "op": "coalesced", "base": d.range.start,
                 "size": d.range.size, "objects": [d.name]}
            )
    assert arch.probe_steps is not None
    kernel = [
        ProbeDevice(d.name, d.type.name, d.range, layout.source.devices[d.path[1]])
        for d in layout.devices
        if d.handler is Handler.KERNEL
    ]
    arch_steps = arch.probe_steps(kernel, _vcpus(layout))
    steps.extend(arch_steps)
    if not any(s["op"] == "vcpus" for s in arch_steps):
        steps.append({"id": "vcpus", "op": "vcpus", "count": _vcpus(layout), "objects": []})
    return steps


_KNOWN_ERRNOS = frozenset(errno.errorcode.values())


def _errnos(message: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(w for w in _ERRNO_WORD.findall(message) if w in _KNOWN_ERRNOS))


def _step_predictions(
    steps: Sequence[dict[str, Any]], findings: Iterable[Finding]
) -> list[StepPrediction]:
    by_object: dict[str, int] = {}
    for k, step in enumerate(steps):
        for name in step.get("objects", ()):
            by_object.setdefault(name, k)
    expected: list[dict[str, None]] = [{} for _ in steps]
    certain = [False for _ in steps]  # an error finding predicts the refusal
    why: list[str] = ["" for _ in steps]
    for finding in findings:
        if finding.severity not in (ERROR, WARNING):
            continue
        errnos = _errnos(finding.message)
        if not errnos:
            continue
        at = _refused_step(steps, by_object, finding)
        if at is None:
            continue
        if finding.severity == WARNING:
            expected[at][OK] = None
        else:
            certain[at] = True
        expected[at].update(dict.fromkeys(errnos))
        why[at] = why[at] or f"{finding.rule}: {finding.message}"
    return [
        StepPrediction(
            step["id"],
            _STEP_CALLS.get(step["op"], step["op"]),
            tuple(e for e in expected[k] if not (certain[k] and e == OK)) or (OK,),
            why[k],
        )
        for k, step in enumerate(steps)
    ]


# "KVM_X fails", "KVM_X(ATTR) returns EINVAL", "KVM_X (why) fails", and the alternatives of
# "KVM_X or this KVM_Y fails" (whichever of the two KVM is asked second refuses).
_FAILING_CALLS = re.compile(
    r"\b(KVM_[A-Z0-9_]+)((?:,? or (?:this |the )?KVM_[A-Z0-9_]+)*)"
    r"(?:\([^)]*\))?(?: \([^)]*\))? (?:fails|returns|is refused)"
)


def failing_calls(message: str) -> tuple[tuple[str, ...], ...]:
    """The ioctls a finding's message says fail, each group one sentence's alternatives:
    ``(("KVM_CREATE_VCPU", "KVM_SET_USER_MEMORY_REGION"),)`` for "KVM_CREATE_VCPU or this
    KVM_SET_USER_MEMORY_REGION fails"."""
    return tuple(
        (m.group(1), *_IOCTL_WORD.findall(m.group(2))) for m in _FAILING_CALLS.finditer(message)
    )


# The steps made on the vGIC device's file descriptor (gpa_plan.probe.arm64).
_ON_THE_VGIC = ("vgic_addr", "vgic_init")


def _without_refused_vgic(
    steps: Sequence[dict[str, Any]], predictions: list[StepPrediction]
) -> list[StepPrediction]:
    """Where the vGIC device itself is predicted refused (a host without that model:
    KVM_CREATE_DEVICE fails with ENODEV), the steps made on it later have no device: the probe
    makes them on no file descriptor, as a VMM that went on would, and they fail with EBADF;
    their frames are then refused too, so the probes see no vGIC there."""
    refused_at = next(
        (k for k, (step, p) in enumerate(zip(steps, predictions, strict=True))
         if step["op"] == "vgic" and OK not in p.expected),
        None,
    )  # fmt: skip
    if refused_at is None:
        return predictions
    rule = predictions[refused_at].why.split(":", 1)[0]
    why = f"{rule}: no vGIC device, as step {predictions[refused_at].id} is predicted refused"
    return [
        p._replace(expected=("EBADF",), why=p.why or why)
        if k > refused_at and steps[k]["op"] in _ON_THE_VGIC else p
        for k, p in enumerate(predictions)
    ]


def _refused_step(
    steps: Sequence[dict[str, Any]], by_object: dict[str, int], finding: Finding
) -> int | None:
    """The step a refusal finding is about: the step of its first object (the one refused),
    unless the message names the call that fails. Then the step making that call for that
    object, else for no object (the vCPUs, the vGIC device), or any step making it for a
    finding about no object (`kvm_private: tss` off a page boundary); of alternatives
    ("KVM_CREATE_VCPU or this KVM_SET_USER_MEMORY_REGION fails") the one made later, as KVM
    refuses whichever comes second; None when no set-up step makes the call (KVM_RUN: the
    probes show it, and only such calls are named)."""
    own = next((by_object[n] for n in finding.objects[:1] if n in by_object), None)
    named = failing_calls(finding.message)
    if not named:
        return own
    for calls in named:
        candidates = [
            k for k, step in enumerate(steps)
            if _STEP_CALLS.get(step["op"]) in calls
            and (k == own or not step.get("objects") or not finding.objects)
        ]  # fmt: skip
        if candidates and len(calls) > 1:
            return candidates[-1]
        if candidates:
            return own if own in candidates else candidates[0]
    if set(_IOCTL_WORD.findall(finding.message)) & set(_STEP_CALLS.values()):
        # A set-up call is at stake, in words the pattern does not take ("KVM_SET_TSS_ADDR
        # fails ... if the memslot is there first, else the memslot is refused"): the object's
        # own step, made after the other one.
        return own
    return None


def _as_built(layout: ResolvedLayout, refused: set[str]) -> ResolvedLayout:
    return layout._replace(
        memslots=tuple(m for m in layout.memslots if m.name not in refused),
        devices=tuple(d for d in layout.devices if d.name not in refused),
    )


# --- probes ----------------------------------------------------------------------------------


def _rings(layout: ResolvedLayout, address: int, width: int, value: int) -> bool:
    """Whether a write signals an ioeventfd there (ioeventfd_in_range(): Doorbell)."""
    return any(
        d.doorbell is not None and d.doorbell.signalled_by(address, width, value)
        for d in layout.devices
    )


def _run_fails(layout: ResolvedLayout, arch: ArchSpec) -> Effect | None:
    """The first KVM_RUN's failure when the VM as built has an interrupt controller missing
    a frame (vgic-incomplete: a refused frame counts as missing)."""
    frames = [
        d for d in layout.devices
        if d.type.irqchip_model is not None and arch.name in d.type.arches
    ]  # fmt: skip
    for _, needed in missing_frames(frames):
        return Effect(Outcome.VM_ERROR, needed.missing_refusal)
    return None


_EXPECTED = {
    Outcome.MEMORY: ("memory",),
    Outcome.IO_EXIT: ("mmio-exit",),
    Outcome.IO_KERNEL: ("kernel",),
    Outcome.IO_COALESCED: ("coalesced",),
    Outcome.GUEST_FAULT: ("guest-exception",),
    Outcome.VM_ERROR: ("internal-error", "run-error"),
}


def expected_observations(outcome: Outcome, handler: Handler) -> tuple[str, ...]:
    """The observations of the probe that agree with a predicted outcome."""
    if outcome is Outcome.IO_KERNEL and handler is Handler.IOEVENTFD:
        return ("eventfd",)
    return _EXPECTED[outcome]


def _points(regions: Sequence[Region], limit: int) -> list[int]:
    """Each region's first and last byte, and the first address beyond the space."""
    return sorted({limit, *(a for r in regions for a in (r.start, r.end - 1))})


def _probes(
    layout: ResolvedLayout,
    declared: Sequence[Region],
    regions: Sequence[Region],
    arch: ArchSpec,
    run_fails: Effect | None,
    host: HostProfile | None = None,
) -> list[ProbePrediction]:
    """Probes at the points of the ``declared`` partition (so that they do not depend on which
    refusals a host profile predicts), predicted from ``regions``, the partition as built,
    and beyond it from what ``host`` lets the guest reach there."""
    probes: list[ProbePrediction] = []
    reached = reached_beyond(layout, arch, host)
    seen: set[tuple[int, str, int]] = set()

    def add(address: int, access: str, width: int, value: int | None = None) -> None:
        if (address, access, width) in seen:
            return
        seen.add((address, access, width))
        region = region_at(regions, address)
        beyond = region_at(reached, address) if region is None else None
        marker = (_MARKERS if access == "read" else _WRITTEN)[width]
        value = marker if value is None else value
        if beyond is not None and host is not None:
            effect = arch.reached(beyond.backing, beyond.handler, access)
            effect = effect._replace(path=f"{arch.reached_why(host)}: {effect.path}")
            names = ", ".join(beyond.names) or beyond.kind
            where = f"beyond 2**{layout.pa_bits}: {names}"
            handler = beyond.handler
        elif region is None:
            effect = arch.beyond(access, host)
            where = f"beyond 2**{layout.pa_bits}"
            handler = Handler.NONE
        else:
            effect = arch.effects(region.backing, region.handler).of(access)
            where = ", ".join(region.names) or region.kind
            handler = region.handler
            if access == "write" and handler is Handler.IOEVENTFD and not _rings(
                layout, address, width, value
            ):
                effect, handler = declined_write(layout, region, arch, address), Handler.USER
        if run_fails is not None:
            effect, handler = run_fails, Handler.NONE
        probes.append(
            ProbePrediction(
                f"{access}@{hex_addr(address)}/{width}",
                address,
                access,
                width,
                value,
                where,
                effect.outcome,
                expected_observations(effect.outcome, handler),
                effect.path,
            )
        )

    for address in _points(declared, layout.limit):
        add(address, "read", 1)
        add(address, "write", 1)
        add(address - address % arch.instruction_align, "fetch", 1)
    for d in layout.devices:
        bell = d.doorbell
        if bell is not None and bell.length > 1:
            add(bell.base, "write", bell.length, bell.datamatch)
        if d.type.guest_write_width:
            add(d.range.start, "write", d.type.guest_write_width)
    return probes


def _probe_room(
    layout: ResolvedLayout,
    regions: Sequence[Region],
    arch: ArchSpec,
    probes: Sequence[ProbePrediction],
) -> tuple[Range, int]:
    """The probe's memslot and report page: in unclaimed, unbacked room, clear of every probe
    point and of the private ranges KVM may keep; ``regions`` is the partition of everything
    the layout declares (memslots predicted refused too: a host may accept them after all), so
    that the plan does not depend on which refusals are predicted."""
    page = max(layout.page_size, layout.guest_page_size)
    allocator = AddressAllocator(layout.limit)
    for region in regions:
        if region.kind != "unbacked" or region.names:
            allocator.occupy(region.range, ", ".join(region.names) or region.kind)
    for p in probes:
        if p.address < layout.limit:
            start = p.address - p.address % page
            allocator.occupy(Range(start, min(start + page, layout.limit)), "probe point")
    types = {d.type.name for d in layout.devices}
    for kept in arch.kept_ranges(types, layout.source.kvm_private):
        allocator.occupy(Range(kept.start, kept.end), kept.name)
    for size in PROBE_AREA_SIZES:
        if size < page:
            continue
        try:
            area = allocator.allocate(size, page, label="probe")
            report = allocator.allocate(page, page, label="probe report")
        except AllocationError:
            continue
        return area, report.start
    raise VerifyError(
        f"no free {hex_addr(PROBE_AREA_SIZES[-1])}-byte range and page left in the layout for "
        "the probe's own memslot: free some unclaimed room below 2**pa_bits"
    )
