"""The layout format (docs/layout-format.md): immutable records, and the pydantic-core schema that
validates a loaded document into them (shape, types, unknown keys).

The schema is written with pydantic-core's own builders, the engine under pydantic v2, rather
than derived from pydantic ``BaseModel`` classes: importing pydantic's model layer and
generating the schemas of four models took some 40 ms at every start, most of what a one-file
`gpa-plan check` costs. Validation is the same: strict types, extra keys forbidden, pydantic's
``ValidationError`` with one error per problem (``gpa_plan.layout.validate`` words them). The
JSON Schema of ``gpa-plan schema`` is generated from this schema too.

Rules that need the whole layout (unique names, the device catalog, KVM's own limits) live in
``gpa_plan.layout.validate`` and ``gpa_plan.check``, where every finding gets a position.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from pydantic_core import CoreConfig, SchemaValidator
from pydantic_core import core_schema as cs

from gpa_plan.arch import ARCHES
from gpa_plan.layout.numbers import coerce_number, refuse_rejected
from gpa_plan.ranges import U64_LIMIT

Policy = Literal["first", "last"]
Handler = Literal["user", "kernel", "ioeventfd", "coalesced"]
NumberOrAuto = int | Literal["auto"]

# Each record's `given` holds the keys the source wrote, so that a layout written back out
# (allocate) keeps an explicit `readonly: false` but adds no default the author left out.


class Memslot(NamedTuple):
    """One KVM_SET_USER_MEMORY_REGION entry."""

    name: str
    base: NumberOrAuto
    size: int
    slot: int | Literal["auto"] | None = None
    as_id: int = 0
    readonly: bool = False
    dirty_log: bool = False
    align: int | None = None
    within: tuple[int, int] | None = None
    policy: Policy | None = None
    given: frozenset[str] = frozenset()


class Device(NamedTuple):
    """An MMIO device: a catalog type, or a generic `mmio` device with its own size."""

    name: str
    type: str
    base: NumberOrAuto | None = None
    size: int | None = None
    vcpus: int | None = None
    handler: Handler | None = None
    identity_map: bool = False
    align: int | None = None
    within: tuple[int, int] | None = None
    policy: Policy | None = None
    given: frozenset[str] = frozenset()


class Reserved(NamedTuple):
    """A range nothing may occupy."""

    name: str
    base: int
    size: int
    given: frozenset[str] = frozenset()


class Layout(NamedTuple):
    """A gpa-plan layout file."""

    layout: int
    arch: str  # a name in gpa_plan.arch.ARCHES
    name: str | None = None
    pa_bits: int | None = None
    page_size: int = 4096
    guest_page_size: int | None = None
    memslots: tuple[Memslot, ...] = ()
    devices: tuple[Device, ...] = ()
    reserved: tuple[Reserved, ...] = ()
    # Addresses the VMM gives KVM for its private ranges, by the key the arch declares
    # (ArchSpec.settings); a key left out: the VMM does not set it.
    kvm_private: Mapping[str, int] = MappingProxyType({})
    given: frozenset[str] = frozenset()


# --- the schema ---------------------------------------------------------------------------

NUMBER_DESCRIPTION = (
    "an integer (4096, 0x1000, 0x4000_0000, 0b1000) or a size with a binary unit (4K, 64KiB, "
    "2M, 1.5G); no sign, and no decimal units (4MB)"
)
# The forms parse_number accepts (docs/numbers.md), for editors; whole-byte fractions and the
# 64-bit limit are left to it.
_UNIT = r"[ \t]*[KMGTPkmgtp]([iI][bB])?"
_NUMBER_TEXT = (
    rf"^[ \t]*(0|[1-9][0-9_]*)({_UNIT}|\.[0-9][0-9_]*{_UNIT})?[ \t]*$"
    r"|^[ \t]*0[xX][0-9a-fA-F][0-9a-fA-F_]*[ \t]*$|^[ \t]*0[bB][01][01_]*[ \t]*$"
)


def _described(schema: cs.CoreSchema, **json: Any) -> cs.CoreSchema:
    """``schema`` with keys for its JSON Schema (description, default, title)."""
    return {**schema, "metadata": {"pydantic_js_updates": json}}


def _written_number() -> list[cs.CoreSchema | tuple[cs.CoreSchema, str]]:
    # Written forms as JSON Schema sees them; coerce_number decides (and explains) the rest.
    return [cs.int_schema(ge=0, le=U64_LIMIT - 1), cs.str_schema(pattern=_NUMBER_TEXT)]


def _number() -> cs.CoreSchema:
    written = cs.union_schema(_written_number())
    return cs.no_info_plain_validator_function(
        coerce_number, json_schema_input_schema=_described(written, description=NUMBER_DESCRIPTION)
    )


def _number_or_auto(value: object) -> int | Literal["auto"]:
    return "auto" if value == "auto" else coerce_number(value)


def _auto() -> cs.CoreSchema:
    written = cs.union_schema([*_written_number(), cs.literal_schema(["auto"])])
    return cs.no_info_plain_validator_function(
        _number_or_auto,
        json_schema_input_schema=_described(
            written, description=NUMBER_DESCRIPTION + ", or `auto` for the planner"
        ),
    )


def _checked(schema: cs.CoreSchema) -> cs.CoreSchema:
    """An integer field other than an address or size: a YAML 1.1 trap (010, 1:30) says why."""
    return cs.no_info_before_validator_function(refuse_rejected, schema)


def _field(
    schema: cs.CoreSchema, description: str | None = None, **default: Any
) -> cs.TypedDictField:
    json: dict[str, Any] = {"description": description} if description else {}
    json |= default
    return cs.typed_dict_field(
        schema,
        required=not default,
        metadata={"pydantic_js_updates": json} if json else None,
    )


def _optional(schema: cs.CoreSchema, description: str) -> cs.TypedDictField:
    return _field(cs.nullable_schema(schema), description, default=None)


_KEYS: dict[type, tuple[str, ...]] = {}
# No coercion: YAML already typed every value, and "1" for 1 would hide a quoting mistake.
_STRICT = CoreConfig(strict=True)


def _object_schema(
    cls: type, fields: dict[str, cs.TypedDictField], *, ref: str | None = None
) -> cs.CoreSchema:
    """A mapping with exactly ``fields``, validated into a ``cls``."""
    _KEYS[cls] = tuple(fields)
    mapping = cs.typed_dict_schema(
        fields,
        extra_behavior="forbid",
        config=_STRICT,
        ref=ref,
        metadata={"pydantic_js_updates": {"title": cls.__name__, "description": cls.__doc__}},
    )
    return cs.no_info_after_validator_function(_builder(cls), mapping)


def _builder(cls: type) -> Callable[[dict[str, Any]], Any]:
    def build(data: dict[str, Any]) -> Any:
        return cls(**data, given=frozenset(data))

    return build


def _placement_fields() -> dict[str, cs.TypedDictField]:
    window = cs.no_info_after_validator_function(
        tuple, cs.list_schema(_number(), min_length=2, max_length=2)
    )
    return {
        "align": _optional(
            _number(), "auto placement: alignment (default: the type's, else page_size)"
        ),
        "within": _optional(
            window, "auto placement: [LOW, HIGH) window (default: the whole space)"
        ),
        # Absent is None in the model: a ucall page then follows the selftests convention.
        "policy": _field(
            cs.literal_schema(["first", "last"]),
            "auto placement: lowest or highest fit",
            default="first",
        ),
    }


def _name() -> cs.CoreSchema:
    return cs.str_schema(min_length=1)


def _memslot_schema() -> cs.CoreSchema:
    slot = cs.nullable_schema(cs.union_schema([cs.int_schema(ge=0), cs.literal_schema(["auto"])]))
    fields = _placement_fields() | {
        "name": _field(_name()),
        "slot": _field(
            _checked(slot),
            "slot id; omitted or auto: the lowest free id in its address space",
            default=None,
        ),
        "as_id": _field(
            _checked(cs.int_schema(ge=0)), "address space (x86_64: 1 = SMM)", default=0
        ),
        "base": _field(_auto()),
        "size": _field(_number()),
        "readonly": _field(
            cs.bool_schema(), "KVM_MEM_READONLY: guest writes exit as MMIO", default=False
        ),
        "dirty_log": _field(
            cs.bool_schema(), "KVM_MEM_LOG_DIRTY_PAGES; no effect on IO", default=False
        ),
    }
    return _object_schema(Memslot, fields, ref="Memslot")


def _device_schema() -> cs.CoreSchema:
    fields = _placement_fields() | {
        "name": _field(_name()),
        "type": _field(
            cs.str_schema(),
            "vgic-v2-dist, vgic-v2-cpu, vgic-v3-dist, vgic-v3-redist, vgic-its, lapic, "
            "ioapic, ucall or mmio",
        ),
        "base": _optional(_auto(), "omitted only for lapic/ioapic, which have fixed default bases"),
        "size": _optional(_number(), "mmio only: the device's size"),
        "vcpus": _field(
            _checked(cs.nullable_schema(cs.int_schema(ge=1))),
            "vgic-v3-redist only: redistributors for this many vCPUs (default 1)",
            default=None,
        ),
        "handler": _optional(
            cs.literal_schema(["user", "kernel", "ioeventfd", "coalesced"]),
            "mmio only: who answers (default user: KVM_EXIT_MMIO)",
        ),
        "identity_map": _field(
            cs.bool_schema(), "the guest reaches it through a VA = GPA mapping", default=False
        ),
    }
    return _object_schema(Device, fields, ref="Device")


def _reserved_schema() -> cs.CoreSchema:
    fields = {"name": _field(_name()), "base": _field(_number()), "size": _field(_number())}
    return _object_schema(Reserved, fields, ref="Reserved")


def _section(entry: cs.CoreSchema) -> cs.TypedDictField:
    return _field(cs.no_info_after_validator_function(tuple, cs.list_schema(entry)), default=[])


def _kvm_private_schema() -> cs.TypedDictField:
    """Every key some architecture declares settable; validate.py refuses the ones the
    layout's own architecture does not declare, with their position."""
    fields: dict[str, cs.TypedDictField] = {}
    for spec in ARCHES.values():
        for private in spec.private_ranges:
            setting = private.setting
            if setting is None:
                continue
            description = (
                f"{spec.name}: the address the VMM gives {setting.ioctl} for {private.name} "
                f"({private.size // 1024} KiB); left out: {setting.unset}"
            )
            metadata = {"pydantic_js_updates": {"description": description}}
            fields[setting.key] = cs.typed_dict_field(_number(), required=False, metadata=metadata)
    mapping = cs.typed_dict_schema(fields, extra_behavior="forbid", config=_STRICT)
    return _field(
        cs.no_info_after_validator_function(MappingProxyType, mapping),
        "where the VMM puts the private memslots KVM keeps on some hosts (x86_64: `tss`, "
        "`identity_map`); keys come from the layout's arch",
        default={},
    )


def layout_core_schema() -> cs.CoreSchema:
    """The pydantic-core schema of a whole layout file."""
    fields = {
        "layout": _field(_checked(cs.literal_schema([1])), "format version"),
        "name": _optional(cs.str_schema(), "what the layout describes"),
        "arch": _field(cs.literal_schema(list(ARCHES))),
        "pa_bits": _field(
            _checked(cs.nullable_schema(cs.int_schema(ge=1, le=64))),
            "arm64: IPA size (default 40); x86_64: MAXPHYADDR (default 48)",
            default=None,
        ),
        "page_size": _field(_number(), "host page size: memslot alignment", default=4096),
        "guest_page_size": _optional(_number(), "default page_size"),
        "memslots": _section(_memslot_schema()),
        "devices": _section(_device_schema()),
        "reserved": _section(_reserved_schema()),
        "kvm_private": _kvm_private_schema(),
    }
    return _object_schema(Layout, fields)


_VALIDATOR = SchemaValidator(layout_core_schema())


def parse_layout(data: object) -> Layout:
    """The Layout ``data`` (a loaded YAML document) describes; raises
    pydantic_core.ValidationError, one error per problem."""
    layout: Layout = _VALIDATOR.validate_python(data)
    return layout


def keys_of(model: type) -> tuple[str, ...]:
    """The keys a layout file may give for ``model`` (Layout, Memslot, Device, Reserved)."""
    return _KEYS[model]


def as_data(model: Layout | Memslot | Device | Reserved) -> dict[str, Any]:
    """``model`` as a layout file writes it: the keys its source gave and those whose value is
    not the default, in the format's order; never a null."""
    defaults = model._field_defaults
    data: dict[str, Any] = {}
    for key in keys_of(type(model)):
        value = getattr(model, key)
        if value is None or (key not in model.given and key in defaults and defaults[key] == value):
            continue
        if isinstance(value, tuple):
            value = [as_data(v) if isinstance(v, _MODELS) else v for v in value]
        elif isinstance(value, Mapping):
            value = dict(value)
        data[key] = value
    return data


_MODELS = (Memslot, Device, Reserved)
