"""What one guest access at one address becomes, and why (`gpa-plan explain`)."""

from __future__ import annotations

from dataclasses import dataclass

from gpa_plan.arch import ARCHES
from gpa_plan.arch.base import Backing, Handler
from gpa_plan.check.partition import Region, region_at


@dataclass(frozen=True, slots=True)
class Answer:
    address: int
    arch: str
    access: str
    outcome: str
    kind: str
    names: tuple[str, ...]
    detail: str


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
