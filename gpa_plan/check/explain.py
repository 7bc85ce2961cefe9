"""What one guest access at one address becomes, and why (`gpa-plan explain`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gpa_plan.arch import ACCESSES, ARCHES
from gpa_plan.arch.base import Backing, Handler
from gpa_plan.check.partition import Region, partition, region_at
from gpa_plan.check.run import LoadedLayout
from gpa_plan.collector import paused
from gpa_plan.layout.resolved import created_on


@dataclass(frozen=True, slots=True)
class Answer:
    address: int
    arch: str
    access: str
    outcome: str
    kind: str
    names: tuple[str, ...]
    detail: str


def explain_layout(
    loaded: LoadedLayout,
    addresses: Sequence[int],
    accesses: Sequence[str] = ACCESSES,
    arches: Sequence[str] = (),
) -> list[Answer]:
    """One answer per architecture (default: the layout's own), address and access kind.
    Under another architecture than the layout's, the devices that exist only on the
    layout's own are not there (gpa_plan.layout.resolved.created_on), as `check` shows."""
    answers: list[Answer] = []
    with paused():
        for arch in arches or (loaded.layout.arch,):
            layout, _ = created_on(loaded.resolved, arch)
            regions = partition(layout, ARCHES[arch])
            for address in addresses:
                answers.extend(explain_address(regions, arch, address, a) for a in accesses)
    return answers


def explain_address(regions: list[Region], arch_name: str, address: int, access: str) -> Answer:
    """The outcome of ``access`` at ``address`` under ``arch_name`` given the partition."""
    arch = ARCHES[arch_name]
    region = region_at(regions, address)
    if region is None:
        effect = arch.beyond_pa
        return Answer(address, arch.name, access, effect.outcome.value, "beyond", (), effect.path)
    effect = arch.effects(region.backing, region.handler).of(access)
    return Answer(
        address,
        arch.name,
        access,
        effect.outcome.value,
        region.kind,
        region.names,
        _who(region) + effect.path,
    )


def _who(region: Region) -> str:
    if region.backing is not Backing.NONE:
        slot = "read-only memslot" if region.backing is Backing.ROM else "memslot"
        return f"{slot} ({', '.join(region.names)}): "
    if region.handler is not Handler.NONE:
        return f"{region.handler.value} device ({', '.join(region.names)}): "
    return "no memslot and no device: "
