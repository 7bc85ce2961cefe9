"""The layout format (SPEC section 1) as pydantic models: shape, types and unknown keys.

Rules that need the whole layout (unique names, the device catalog, KVM's own limits) live in
``gpa_plan.layout.validate`` and ``gpa_plan.check``, where every finding gets a position.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, WithJsonSchema

from gpa_plan.layout.numbers import coerce_number, refuse_rejected

_NUMBER_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "minimum": 0, "maximum": 2**64 - 1},
        {
            "type": "string",
            "pattern": r"^\s*[0-9][0-9_]*(\.[0-9_]+)?\s*([KMGTPkmgtp](iB|B)?)?\s*$"
            r"|^0[xX][0-9a-fA-F_]+$",
        },
    ],
    "description": "an integer (4096, 0x1000, 0x4000_0000) or a size with a binary unit "
    "(4K, 64KiB, 2M, 1G)",
}
_AUTO_SCHEMA: dict[str, Any] = {
    "anyOf": [*_NUMBER_SCHEMA["anyOf"], {"const": "auto"}],
    "description": _NUMBER_SCHEMA["description"] + ", or `auto` for the planner",
}


def _number_or_auto(value: object) -> int | Literal["auto"]:
    if value == "auto":
        return "auto"
    return coerce_number(value)


Number = Annotated[int, PlainValidator(coerce_number), WithJsonSchema(_NUMBER_SCHEMA)]
NumberOrAuto = Annotated[
    int | Literal["auto"], PlainValidator(_number_or_auto), WithJsonSchema(_AUTO_SCHEMA)
]
Policy = Literal["first", "last"]
T = TypeVar("T")
# Integer fields other than addresses and sizes: a YAML 1.1 trap (010, 1:30) says why.
Checked = Annotated[T, BeforeValidator(refuse_rejected)]
Name = Annotated[str, Field(min_length=1)]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Placed(_Entry):
    align: Number | None = Field(
        None, description="auto placement: alignment (default: the type's, else page_size)"
    )
    within: Annotated[list[Number], Field(min_length=2, max_length=2)] | None = Field(
        None, description="auto placement: [LOW, HIGH) window (default: the whole space)"
    )
    policy: Policy = Field("first", description="auto placement: lowest or highest fit")


class Memslot(_Placed):
    """One KVM_SET_USER_MEMORY_REGION entry."""

    name: Name
    slot: Checked[Annotated[int, Field(ge=0)] | Literal["auto"] | None] = Field(
        None, description="slot id; omitted or auto: the lowest free id in its address space"
    )
    as_id: Checked[Annotated[int, Field(ge=0)]] = Field(
        0, description="address space (x86_64: 1 = SMM)"
    )
    base: NumberOrAuto
    size: Number
    readonly: bool = Field(False, description="KVM_MEM_READONLY: guest writes exit as MMIO")
    dirty_log: bool = Field(False, description="KVM_MEM_LOG_DIRTY_PAGES; no effect on IO")


class Device(_Placed):
    """An MMIO device: a catalog type, or a generic `mmio` device with its own size."""

    name: Name
    type: str = Field(
        description="vgic-v2-dist, vgic-v2-cpu, vgic-v3-dist, vgic-v3-redist, vgic-its, "
        "lapic, ioapic, ucall or mmio"
    )
    base: NumberOrAuto | None = Field(
        None, description="omitted only for lapic/ioapic, which have fixed default bases"
    )
    size: Number | None = Field(None, description="mmio only: the device's size")
    vcpus: Checked[Annotated[int, Field(ge=1)] | None] = Field(
        None, description="vgic-v3-redist only: redistributors for this many vCPUs (default 1)"
    )
    handler: Literal["user", "kernel", "ioeventfd", "coalesced"] | None = Field(
        None, description="mmio only: who answers (default user: KVM_EXIT_MMIO)"
    )
    identity_map: bool = Field(False, description="the guest reaches it through a VA = GPA mapping")


class Reserved(_Entry):
    """A range nothing may occupy."""

    name: Name
    base: Number
    size: Number


class Layout(_Entry):
    """A gpa-plan layout file."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        title="gpa-plan layout",
        json_schema_extra={"$id": "https://gpa-plan.dev/schema/layout-1.json"},
    )

    layout: Checked[Literal[1]] = Field(description="format version")
    name: str | None = None
    arch: Literal["arm64", "x86_64"]
    pa_bits: Checked[Annotated[int, Field(ge=1, le=64)] | None] = Field(
        None, description="arm64: IPA size (default 40); x86_64: MAXPHYADDR (default 48)"
    )
    page_size: Number = Field(4096, description="host page size: memslot alignment")
    guest_page_size: Number | None = Field(None, description="default page_size")
    memslots: list[Memslot] = Field(default_factory=list)
    devices: list[Device] = Field(default_factory=list)
    reserved: list[Reserved] = Field(default_factory=list)
