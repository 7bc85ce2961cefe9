"""What one guest access at one address becomes, and why (`gpa-plan explain`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple

from gpa_plan.arch import ACCESSES, ARCHES
from gpa_plan.arch.base import ArchSpec, Backing, Effect, Handler, KeptRange, Outcome
from gpa_plan.check.partition import (
    Region,
    device_handler,
    partition,
    reached_beyond,
    region_at,
)
from gpa_plan.check.run import LoadedLayout
from gpa_plan.collector import paused
from gpa_plan.layout.resolved import DeviceEntry, ResolvedLayout, created_on
from gpa_plan.ranges import hex_addr

if TYPE_CHECKING:
    from gpa_plan.host_profile import HostProfile


@dataclass(frozen=True, slots=True)
class Answer:
    address: int
    arch: str
    access: str
    outcome: str
    kind: str
    names: tuple[str, ...]
    detail: str
    # What else decides the outcome: the instruction an IO outcome assumes (ArchSpec
    # .io_instruction_note), the condition an ioeventfd puts on a write.
    notes: tuple[str, ...] = ()


def explain_layout(
    loaded: LoadedLayout,
    addresses: Sequence[int],
    accesses: Sequence[str] = ACCESSES,
    arches: Sequence[str] = (),
    host: HostProfile | None = None,
) -> list[Answer]:
    """One answer per architecture (default: the layout's own), address and access kind.
    Under another architecture than the layout's, the devices that exist only on the
    layout's own are not there (gpa_plan.layout.resolved.created_on), as `check` shows, and
    an answer at such a device's address says so. With a ``host`` profile of the
    architecture, a private range KVM keeps only on some hosts is there or not as the
    profile says (docs/host.md), and an address beyond 2**pa_bits that the host lets the
    guest reach (ArchSpec.host_reach) is what the layout makes of it there."""
    answers: list[Answer] = []
    with paused():
        for arch in arches or (loaded.layout.arch,):
            layout, left_out = created_on(loaded.resolved, arch)
            regions = partition(layout, ARCHES[arch])
            on_host = host if host is not None and host.arch == arch else None
            reached = reached_beyond(layout, ARCHES[arch], on_host)
            types = {d.type.name for d in layout.devices}
            kept = [
                k
                for k in ARCHES[arch].kept_ranges(types, loaded.layout.kvm_private)
                if on_host is None or on_host.fact(k.private.host_fact or "") is not False
            ]
            for address in addresses:
                why = _left_out_here(left_out, address, loaded.layout.arch, arch)
                kept_here = _kept_on_host(kept, address, on_host)
                if kept_here is None:
                    why += _private_here(kept, address)
                for a in accesses:
                    answer = explain_address(regions, arch, address, a, on_host, reached)
                    if a == "write":
                        answer = _at_doorbell(answer, layout, regions)
                    answer = _at_any_length_doorbell(answer, layout)
                    if kept_here is not None:
                        answer = _in_private(answer, kept_here, on_host)
                    answers.append(replace(answer, detail=why + answer.detail) if why else answer)
    return answers


def _kept_on_host(
    kept: Sequence[KeptRange], address: int, host: HostProfile | None
) -> KeptRange | None:
    """The private range at ``address`` that the host profile says KVM keeps, if any, among
    those only some hosts keep (``hosts``). The APIC-access page is not one: the guest's
    accesses there reach the LAPIC, whose region the layout has, whatever backs the page."""
    if host is None:
        return None
    for k in kept:
        fact = k.private.host_fact
        if k.private.hosts is None or fact is None or host.fact(fact) is not True:
            continue
        if k.start <= address < k.end:
            return k
    return None


def _in_private(answer: Answer, kept: KeptRange, host: HostProfile | None) -> Answer:
    """``answer`` at an address of a private memslot the host keeps: memory, that memslot's."""
    placed = f"{kept.placed_by}; " if kept.placed_by else ""
    cited = host.cite(kept.private.host_fact or "") if host is not None else ""
    return replace(
        answer,
        outcome=Outcome.MEMORY.value,
        kind="private",
        names=(kept.name,),
        detail=f"{kept.name} is here ({placed}{kept.private.what}) and this host keeps it "
        f"({cited}): the access reaches that private memslot as memory",
    )


class Difference(NamedTuple):
    """One address and access whose outcome is not the same under every architecture asked,
    with each architecture's outcome in the order they were asked."""

    address: int
    access: str
    outcomes: tuple[tuple[str, str], ...]  # (arch, outcome)


def differences(answers: Sequence[Answer]) -> list[Difference]:
    """Where the answers of several architectures disagree, by address then access, in the
    order asked; empty for answers of one architecture."""
    by_question: dict[tuple[int, str], list[Answer]] = {}
    for a in answers:
        by_question.setdefault((a.address, a.access), []).append(a)
    return [
        Difference(address, access, tuple((a.arch, a.outcome) for a in group))
        for (address, access), group in by_question.items()
        if len({a.outcome for a in group}) > 1
    ]


def _left_out_here(left_out: Sequence[DeviceEntry], address: int, own: str, arch: str) -> str:
    here = [d for d in left_out if d.range.contains(address)]
    if not here:
        return ""
    named = ", ".join(f"{d.type.name} {d.name!r}" for d in here)
    return (
        f"{named} of this {own} layout {'is' if len(here) == 1 else 'are'} left out on {arch}, "
        f"where KVM has no such device; "
    )


def _private_here(kept: Sequence[KeptRange], address: int) -> str:
    """What a private range KVM keeps only on some hosts makes of ``address``; ``""`` when
    none is there. The outcome that follows is the one of the other hosts: the layout does
    not say which host runs it."""
    notes = []
    for k in kept:
        hosts = k.private.hosts
        if hosts is not None and k.start <= address < k.end:
            placed = f"{k.placed_by}; " if k.placed_by else ""
            notes.append(
                f"{k.name} is here ({placed}{k.private.what}): {hosts}; where KVM keeps it, the "
                "access reaches that private memslot as memory; elsewhere: "
            )
    return "".join(notes)


def _at_doorbell(answer: Answer, layout: ResolvedLayout, regions: list[Region]) -> Answer:
    """A write where an ioeventfd decides: which write signals it, and what the others do.

    virt/kvm/eventfd.c ioeventfd_in_range() (Linux 7.2.13): only a write at exactly an
    ioeventfd's base (of its length and datamatch value, unless its length is 0) signals it;
    ioeventfd_write() declines any other, and the bus offers it to the next device, else it
    exits. So at the base the answer is the signalling write (io-kernel) with the condition
    beside it, and elsewhere in the range the write is what it would be without the
    ioeventfd: no write there can signal it."""
    region = region_at(regions, answer.address)
    if region is None or region.handler is not Handler.IOEVENTFD:
        return answer
    arch = ARCHES[answer.arch]
    at = answer.address
    bells = [d for d in layout.devices if d.doorbell is not None and d.range.contains(at)]
    miss = declined_write(layout, region, arch, at)
    ringing = any(d.doorbell is not None and d.doorbell.base == at for d in bells)
    condition = "; ".join(_doorbell_words(d) for d in bells)
    if ringing:
        note = (
            f"{condition}; any other write here is declined (ioeventfd_write()) and becomes "
            f"{miss.outcome.value}: {miss.path}"
        )
        return replace(answer, notes=(note, *answer.notes))
    note = (
        f"{condition}; a write at {hex_addr(at)} cannot signal it and becomes "
        f"{miss.outcome.value}"
    )
    return replace(
        answer,
        outcome=miss.outcome.value,
        detail=_who(region) + miss.path,
        notes=(note, *arch.notes_for(miss)),
    )


def declined_write(layout: ResolvedLayout, region: Region, arch: ArchSpec, at: int) -> Effect:
    """What a write at ``at`` (in ``region``) becomes when every ioeventfd there declines it
    (ioeventfd_write()): the bus offers it to the strongest other device, else it exits."""
    below = max(
        (device_handler(d, arch) for d in layout.devices
         if d.doorbell is None and d.range.contains(at)),
        default=Handler.NONE,
        key=lambda h: h.strength,
    )  # fmt: skip
    return arch.effects(region.backing, below).write


def _at_any_length_doorbell(answer: Answer, layout: ResolvedLayout) -> Answer:
    """A read or write at the base of a length-0 ioeventfd, where the architecture has a fast
    path for those (ArchSpec.any_length_ioeventfd_note): what it does besides the table."""
    note = ARCHES[answer.arch].any_length_ioeventfd_note
    if not note or answer.access == "fetch":
        return answer
    for d in layout.devices:
        if d.doorbell is not None and d.doorbell.length == 0 and d.doorbell.base == answer.address:
            return replace(answer, notes=(*answer.notes, f"{d.name!r}: {note}"))
    return answer


def _doorbell_words(device: DeviceEntry) -> str:
    bell = device.doorbell
    assert bell is not None
    where = f"at exactly {hex_addr(bell.base)}"
    if bell.length == 0:
        return (
            f"the ioeventfd {device.name!r} is signalled by a write of any width and value "
            f"{where} (length 0; ioeventfd_in_range())"
        )
    value = f"carrying {bell.datamatch:#x}" if bell.datamatch is not None else "of any value"
    unit = "byte" if bell.length == 1 else "bytes"
    return (
        f"the ioeventfd {device.name!r} is signalled only by a write of exactly {bell.length} "
        f"{unit} {where}, {value} (ioeventfd_in_range())"
    )


def explain_address(
    regions: list[Region],
    arch_name: str,
    address: int,
    access: str,
    host: HostProfile | None = None,
    reached: Sequence[Region] = (),
) -> Answer:
    """The outcome of ``access`` at ``address`` under ``arch_name`` given the partition, and
    beyond it the ``reached`` regions (gpa_plan.check.partition.reached_beyond) of ``host``."""
    arch = ARCHES[arch_name]
    region = region_at(regions, address)
    beyond = region_at(reached, address) if region is None else None
    if region is None and beyond is not None and host is not None:
        effect = arch.reached(beyond.backing, beyond.handler, access)
        return Answer(
            address,
            arch.name,
            access,
            effect.outcome.value,
            beyond.kind,
            beyond.names,
            f"{arch.reached_why(host)}: {_who(beyond)}{effect.path}",
            arch.notes_for(effect),
        )
    if region is None:
        effect = arch.beyond(access, host)
        return Answer(
            address,
            arch.name,
            access,
            effect.outcome.value,
            "beyond",
            (),
            effect.path,
            arch.notes_for(effect),
        )
    effect = arch.effects(region.backing, region.handler).of(access)
    return Answer(
        address,
        arch.name,
        access,
        effect.outcome.value,
        region.kind,
        region.names,
        _who(region) + effect.path,
        arch.notes_for(effect),
    )


def _who(region: Region) -> str:
    if region.backing is not Backing.NONE:
        slot = "read-only memslot" if region.backing is Backing.ROM else "memslot"
        return f"{slot} ({', '.join(region.names)}): "
    if region.handler is not Handler.NONE:
        return f"{region.handler.value} device ({', '.join(region.names)}): "
    return "no memslot and no device: "
