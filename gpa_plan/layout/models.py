"""The layout format (docs/layout-format.md): immutable records, and the pydantic-core schema that
validates a loaded document into them (shape, types, unknown keys).

Each key of the format is declared once, as a field of its record::

    class Memslot(NamedTuple):
        ...
        readonly: Annotated[bool, Key(cs.bool_schema(), "KVM_MEM_READONLY: ...")] = False

The field gives the key's name, its Python type, its default and, in ``Key``, the schema of a
value and the description editors show. Everything else is derived from that one field:

* a field without a default is a required key; a field with one is optional, and a document
  that leaves the key out gets the record's default (the validator leaves the key out of its
  mapping and the record fills it in);
* a field whose default is ``None`` also accepts ``null``, which means the same as leaving the
  key out;
* the JSON Schema of `gpa-plan schema` (``gpa_plan.layout.schema``) lists the required keys
  and gives each other key its default (``None`` as ``null``, a tuple as a list).

Adding a key is adding one such field, with a default (else every layout written before it
stops loading; Python puts fields with defaults after the others anyway). Keys are listed, in
messages and in files written back out, in the order of the fields, except that
``_LISTED_FIRST`` keeps some keys ahead of the rest; a new key needs no entry there. A field
without ``Key`` (``given``) is not a key of the format.

The schema is written with pydantic-core's own builders, the engine under pydantic v2, rather
than derived from pydantic ``BaseModel`` classes: importing pydantic's model layer and
generating the schemas of four models took some 40 ms at every start, most of what a one-file
`gpa-plan check` costs. Validation is the same: strict types, extra keys forbidden, pydantic's
``ValidationError`` with one error per problem (``gpa_plan.layout.validate`` words them).

Rules that need the whole layout (unique names, the device catalog, KVM's own limits) live in
``gpa_plan.layout.validate`` and ``gpa_plan.check``, where every finding gets a position.
"""

# No `from __future__ import annotations`: the fields' annotations are read at run time, for
# their Key.

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Annotated, Any, Literal, NamedTuple

from pydantic_core import CoreConfig, SchemaValidator
from pydantic_core import core_schema as cs

from gpa_plan.arch import ARCHES
from gpa_plan.layout.numbers import coerce_number, refuse_rejected, shown
from gpa_plan.layout.observed import ERRNO_NAMES, EXIT_REASONS, known_errno
from gpa_plan.ranges import U64_LIMIT

Policy = Literal["first", "last"]
Redist = Literal["legacy", "regions"]
# A vgic-v3-redist without `redist`: what QEMU (hw/intc/arm_gicv3_kvm.c) and KVM selftests
# (lib/arm64/vgic.c) give KVM on every kernel that has KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION.
REDIST_DEFAULT: Redist = "regions"
Handler = Literal["user", "kernel", "ioeventfd", "coalesced"]
NumberOrAuto = int | Literal["auto"]


class Key(NamedTuple):
    """A field that is a key of the layout format: the schema of its value (without ``null``;
    see the module docstring) and what editors show about it."""

    schema: cs.CoreSchema
    description: str | None = None


# --- value schemas --------------------------------------------------------------------------

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


def _name() -> cs.CoreSchema:
    return cs.str_schema(min_length=1)


def _window() -> cs.CoreSchema:
    return cs.no_info_after_validator_function(
        tuple, cs.list_schema(_number(), min_length=2, max_length=2)
    )


# --- the schema of a record, derived from its fields ------------------------------------------

# Keys listed before the others (in messages and in files written back out), as the format has
# always listed them; the rest follow in the order of their fields.
_LISTED_FIRST: dict[str, tuple[str, ...]] = {
    "Layout": ("layout", "name"),
    "Memslot": ("align", "within", "policy", "name", "slot", "as_id"),
    "Device": ("align", "within", "policy"),
}


def declared_keys(record: type) -> dict[str, Key]:
    """The keys of ``record`` (Layout, Memslot, Device, Reserved) in the format's order."""
    found = {
        name: key
        for name, hint in record.__annotations__.items()
        for key in getattr(hint, "__metadata__", ())
        if isinstance(key, Key)
    }
    first = _LISTED_FIRST.get(record.__name__, ())
    return {name: found[name] for name in (*first, *(n for n in found if n not in first))}


def json_default(value: object) -> object:
    """A record default as JSON writes it."""
    if isinstance(value, Mapping):
        return dict(value)
    return list(value) if isinstance(value, tuple) else value


def _field(key: Key, defaults: dict[str, Any], name: str) -> cs.TypedDictField:
    json: dict[str, Any] = {"description": key.description} if key.description else {}
    schema = key.schema
    if name in defaults:
        default = defaults[name]
        if default is None:
            schema = cs.nullable_schema(schema)
        json["default"] = json_default(default)
    return cs.typed_dict_field(
        schema,
        required=name not in defaults,
        metadata={"pydantic_js_updates": json} if json else None,
    )


# No coercion: YAML already typed every value, and "1" for 1 would hide a quoting mistake.
_STRICT = CoreConfig(strict=True)


def _object_schema(record: type, *, ref: str | None = None) -> cs.CoreSchema:
    """A mapping with exactly the keys of ``record``, validated into one."""
    defaults: dict[str, Any] = getattr(record, "_field_defaults", {})
    fields = {name: _field(key, defaults, name) for name, key in declared_keys(record).items()}
    mapping = cs.typed_dict_schema(
        fields,
        extra_behavior="forbid",
        config=_STRICT,
        ref=ref,
        metadata={"pydantic_js_updates": {"title": record.__name__, "description": record.__doc__}},
    )
    return cs.no_info_after_validator_function(_builder(record), mapping)


def _builder(record: type) -> Callable[[dict[str, Any]], Any]:
    def build(data: dict[str, Any]) -> Any:
        return record(**data, given=frozenset(data))

    return build


def _section(entry: type) -> cs.CoreSchema:
    """A list of ``entry`` records, as a tuple."""
    return cs.no_info_after_validator_function(
        tuple, cs.list_schema(_object_schema(entry, ref=entry.__name__))
    )


# Placement keys, the same for memslots and devices (docs/layout-format.md#placement).
_ALIGN = Key(_number(), "auto placement: alignment (default: the type's, else page_size)")
_WITHIN = Key(_window(), "auto placement: [LOW, HIGH) window (default: the whole space)")
_POLICY = Key(
    cs.literal_schema(["first", "last"]),
    "auto placement: lowest or highest fit; omitted: the lowest, except for a ucall device "
    "without `within`, which follows KVM selftests (the first free page past slot 0)",
)


# --- the records ----------------------------------------------------------------------------

# Each record's `given` holds the keys the source wrote, so that a layout written back out
# (allocate) keeps an explicit `readonly: false` but adds no default the author left out.


_AS_ID = "address space" + "".join(
    f"; {spec.name}: " + ", ".join(f"{i} = {n}" for i, n in enumerate(spec.other_address_spaces, 1))
    for spec in ARCHES.values()
    if spec.other_address_spaces
)


class Memslot(NamedTuple):
    """One KVM_SET_USER_MEMORY_REGION entry."""

    name: Annotated[str, Key(_name())]
    base: Annotated[NumberOrAuto, Key(_auto())]
    size: Annotated[int, Key(_number())]
    slot: Annotated[
        int | Literal["auto"] | None,
        Key(
            _checked(cs.union_schema([cs.int_schema(ge=0), cs.literal_schema(["auto"])])),
            "slot id; omitted or auto: the lowest free id in its address space",
        ),
    ] = None
    as_id: Annotated[int, Key(_checked(cs.int_schema(ge=0)), _AS_ID)] = 0
    readonly: Annotated[
        bool, Key(cs.bool_schema(), "KVM_MEM_READONLY: guest writes exit as MMIO")
    ] = False
    dirty_log: Annotated[
        bool, Key(cs.bool_schema(), "KVM_MEM_LOG_DIRTY_PAGES; no effect on IO")
    ] = False
    guest_memfd: Annotated[
        bool,
        Key(
            cs.bool_schema(),
            "KVM_MEM_GUEST_MEMFD (KVM_SET_USER_MEMORY_REGION2): private memory can come from "
            "a guest_memfd; kept, with no effect on what an access becomes",
        ),
    ] = False
    align: Annotated[int | None, _ALIGN] = None
    within: Annotated[tuple[int, int] | None, _WITHIN] = None
    policy: Annotated[Policy | None, _POLICY] = None
    given: frozenset[str] = frozenset()


class Device(NamedTuple):
    """An MMIO device: a catalog type, or a generic `mmio` device with its own size."""

    name: Annotated[str, Key(_name())]
    type: Annotated[
        str,
        Key(
            cs.str_schema(),
            "vgic-v2-dist, vgic-v2-cpu, vgic-v3-dist, vgic-v3-redist, vgic-its, lapic, "
            "ioapic, ucall or mmio",
        ),
    ]
    base: Annotated[
        NumberOrAuto | None,
        Key(_auto(), "omitted only for lapic/ioapic, which have fixed default bases"),
    ] = None
    size: Annotated[int | None, Key(_number(), "mmio only: the device's size")] = None
    vcpus: Annotated[
        int | None,
        Key(
            _checked(cs.int_schema(ge=1)),
            "vgic-v3-redist only: redistributors for this many vCPUs (default 1)",
        ),
    ] = None
    redist: Annotated[
        Redist | None,
        Key(
            cs.literal_schema(["legacy", "regions"]),
            "vgic-v3-redist only: how the VMM gives KVM its address: one "
            "KVM_VGIC_V3_ADDR_TYPE_REDIST (legacy) or a KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION "
            f"(regions); default {REDIST_DEFAULT}, what QEMU does",
        ),
    ] = None
    handler: Annotated[
        Handler | None,
        Key(
            cs.literal_schema(["user", "kernel", "ioeventfd", "coalesced"]),
            "mmio only: who answers (default user: KVM_EXIT_MMIO)",
        ),
    ] = None
    # KVM_IOEVENTFD's len and datamatch (virt/kvm/eventfd.c kvm_assign_ioeventfd()); any
    # integer here: the ioeventfd-invalid rule says what KVM refuses, with its errno.
    length: Annotated[
        int | None,
        Key(
            _checked(cs.int_schema(ge=0, le=U64_LIMIT - 1)),
            "handler ioeventfd only: the width of the write that signals it, 1, 2, 4 or 8 "
            "bytes, or 0 for a write of any width at the base (default: the size when it is "
            "1, 2, 4 or 8, else 0)",
        ),
    ] = None
    datamatch: Annotated[
        int | None,
        Key(
            _checked(cs.int_schema(ge=0, le=U64_LIMIT - 1)),
            "handler ioeventfd only: the value the write must carry "
            "(KVM_IOEVENTFD_FLAG_DATAMATCH); omitted: any value",
        ),
    ] = None
    identity_map: Annotated[
        bool, Key(cs.bool_schema(), "the guest reaches it through a VA = GPA mapping")
    ] = False
    align: Annotated[int | None, _ALIGN] = None
    within: Annotated[tuple[int, int] | None, _WITHIN] = None
    policy: Annotated[Policy | None, _POLICY] = None
    given: frozenset[str] = frozenset()


class Reserved(NamedTuple):
    """A range nothing may occupy."""

    name: Annotated[str, Key(_name())]
    base: Annotated[int, Key(_number())]
    size: Annotated[int, Key(_number())]
    given: frozenset[str] = frozenset()


_HANDLERS = cs.literal_schema(["user", "kernel", "ioeventfd", "coalesced"])


class Port(NamedTuple):
    """A range of the x86 port I/O space (in/out), beside the memory space."""

    name: Annotated[str, Key(_name())]
    base: Annotated[int, Key(_number(), "the first port")]
    size: Annotated[int, Key(_number(), "how many ports")]
    handler: Annotated[
        Handler,
        Key(
            _HANDLERS,
            "who answers: user (KVM_EXIT_IO), kernel (a device on KVM_PIO_BUS: the PIC, PIT), "
            "ioeventfd (KVM_IOEVENTFD_FLAG_PIO) or coalesced (a KVM_REGISTER_COALESCED_MMIO "
            "zone with pio 1)",
        ),
    ] = "user"
    length: Annotated[
        int | None,
        Key(
            _checked(cs.int_schema(ge=0, le=U64_LIMIT - 1)),
            "handler ioeventfd only: the width of the `out` that signals it, 1, 2, 4 or 8 "
            "bytes, or 0 for any width (default: the size when it is 1, 2, 4 or 8, else 0)",
        ),
    ] = None
    datamatch: Annotated[
        int | None,
        Key(
            _checked(cs.int_schema(ge=0, le=U64_LIMIT - 1)),
            "handler ioeventfd only: the value the `out` must carry "
            "(KVM_IOEVENTFD_FLAG_DATAMATCH); omitted: any value",
        ),
    ] = None
    given: frozenset[str] = frozenset()


# --- what a recording saw (`observed`) -------------------------------------------------------


def _one_of(known: Callable[[str], bool], choices: tuple[str, ...], what: str) -> cs.CoreSchema:
    """A non-empty string that ``known`` accepts; any other is refused, with the closest
    choice as a hint."""

    def check(value: str) -> str:
        if known(value):
            return value
        from gpa_plan.suggest import closest  # only a mistake needs difflib

        guess = closest(value, choices)
        hint = f"; did you mean `{guess}`?" if guess else ""
        raise ValueError(f"{shown(value)} is not {what}{hint}")

    return cs.no_info_after_validator_function(check, cs.str_schema(min_length=1))


_EXIT_REASON = _described(
    _one_of(
        EXIT_REASONS.__contains__,
        tuple(EXIT_REASONS),
        "a KVM_EXIT_ name of include/uapi/linux/kvm.h (KVM_EXIT_MMIO, KVM_EXIT_IO, ...)",
    ),
    enum=list(EXIT_REASONS),
)
_ERRNO = _one_of(known_errno, ERRNO_NAMES, "an errno name (EFAULT, EINVAL, EEXIST, ...)")


# (1) `count` is the format's key; as a field it hides tuple.count(), which nothing here calls.


def _count(description: str) -> Key:
    return Key(_checked(cs.int_schema(ge=0, le=U64_LIMIT - 1)), description)


Space = Literal["mmio", "port"]


class Traffic(NamedTuple):
    """Exits to the VMM at one address of one space, with one access width."""

    space: Annotated[
        Space,
        Key(cs.literal_schema(["mmio", "port"]), "mmio (KVM_EXIT_MMIO) or port (KVM_EXIT_IO)"),
    ]
    address: Annotated[int, Key(_number(), "the guest-physical address or the port")]
    width: Annotated[
        int,
        Key(
            _checked(cs.int_schema(ge=1, le=8)),
            "bytes per access: mmio 1 to 8, port 1, 2 or 4; a string I/O instruction counts "
            "each of its elements as one access of the element's width",
        ),
    ]
    reads: Annotated[int, _count("reads seen")] = 0
    writes: Annotated[int, _count("writes seen")] = 0
    given: frozenset[str] = frozenset()


class ExitCount(NamedTuple):
    """How many times KVM_RUN returned with one exit reason."""

    reason: Annotated[str, Key(_EXIT_REASON, "a KVM_EXIT_ name of include/uapi/linux/kvm.h")]
    count: Annotated[int, _count("how many times")]  # type: ignore[assignment]  # (1)
    given: frozenset[str] = frozenset()


class RunFailure(NamedTuple):
    """KVM_RUN returning -1, by errno."""

    errno: Annotated[str, Key(_ERRNO, "the errno's name: EFAULT, ENXIO, EINVAL, ...")]
    count: Annotated[int, _count("how many times")]  # type: ignore[assignment]  # (1)
    given: frozenset[str] = frozenset()


class InternalError(NamedTuple):
    """KVM_EXIT_INTERNAL_ERROR exits, by suberror."""

    suberror: Annotated[
        int | None,
        Key(
            _checked(cs.int_schema(ge=0, le=0xFFFF_FFFF)),
            "KVM_INTERNAL_ERROR_*: 1 EMULATION, 2 SIMUL_EX, 3 DELIVERY_EV, "
            "4 UNEXPECTED_EXIT_REASON; omitted: not known",
        ),
    ] = None
    count: Annotated[int, _count("how many times")] = 1  # type: ignore[assignment]  # (1)
    given: frozenset[str] = frozenset()


class RefusedCall(NamedTuple):
    """An ioctl KVM refused."""

    call: Annotated[str, Key(_name(), "the ioctl: KVM_SET_USER_MEMORY_REGION, ...")]
    errno: Annotated[str, Key(_ERRNO, "the errno's name: EEXIST, EINVAL, ...")]
    count: Annotated[int, _count("how many times")] = 1  # type: ignore[assignment]  # (1)
    detail: Annotated[str | None, Key(cs.str_schema(), "what the call asked for")] = None
    given: frozenset[str] = frozenset()


class Observed(NamedTuple):
    """What a recording (`gpa-plan record`) saw the program and its guest do."""

    traffic_path: Annotated[
        Literal["tracefs", "ptrace"] | None,
        Key(cs.literal_schema(["tracefs", "ptrace"]), "how the traffic was recorded"),
    ] = None
    traffic: Annotated[
        tuple[Traffic, ...], Key(_section(Traffic), "exits to the VMM, per space, address, width")
    ] = ()
    exits: Annotated[
        tuple[ExitCount, ...], Key(_section(ExitCount), "KVM_RUN returns by exit reason")
    ] = ()
    run_failures: Annotated[
        tuple[RunFailure, ...], Key(_section(RunFailure), "KVM_RUN returning -1, by errno")
    ] = ()
    internal_errors: Annotated[
        tuple[InternalError, ...],
        Key(_section(InternalError), "KVM_EXIT_INTERNAL_ERROR exits, by suberror"),
    ] = ()
    refused: Annotated[
        tuple[RefusedCall, ...], Key(_section(RefusedCall), "every ioctl KVM refused")
    ] = ()
    given: frozenset[str] = frozenset()


# The lists under `observed`, by key, and the record of an entry of each.
OBSERVED_SECTIONS: dict[str, type] = {
    "traffic": Traffic,
    "exits": ExitCount,
    "run_failures": RunFailure,
    "internal_errors": InternalError,
    "refused": RefusedCall,
}


def _kvm_private_schema() -> cs.CoreSchema:
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
    return cs.no_info_after_validator_function(MappingProxyType, mapping)


class Layout(NamedTuple):
    """A gpa-plan layout file."""

    layout: Annotated[int, Key(_checked(cs.literal_schema([1])), "format version")]
    arch: Annotated[str, Key(cs.literal_schema(list(ARCHES)))]  # a name in gpa_plan.arch.ARCHES
    name: Annotated[str | None, Key(cs.str_schema(), "what the layout describes")] = None
    pa_bits: Annotated[
        int | None,
        Key(
            _checked(cs.int_schema(ge=1, le=64)),
            "; ".join(f"{a.name}: {a.pa_name} (default {a.default_pa_bits})"
                      for a in ARCHES.values()),
        ),
    ] = None
    page_size: Annotated[int, Key(_number(), "host page size: memslot alignment")] = 4096
    guest_page_size: Annotated[int | None, Key(_number(), "default page_size")] = None
    memslots: Annotated[tuple[Memslot, ...], Key(_section(Memslot))] = ()
    devices: Annotated[tuple[Device, ...], Key(_section(Device))] = ()
    reserved: Annotated[tuple[Reserved, ...], Key(_section(Reserved))] = ()
    ports: Annotated[
        tuple[Port, ...],
        Key(_section(Port), "x86_64: the port I/O space (in/out), 0 to 0xffff"),
    ] = ()
    # Addresses the VMM gives KVM for its private ranges, by the key the arch declares
    # (ArchSpec.settings); a key left out: the VMM does not set it.
    kvm_private: Annotated[
        Mapping[str, int],
        Key(
            _kvm_private_schema(),
            "where the VMM puts the private memslots KVM keeps on some hosts (x86_64: `tss`, "
            "`identity_map`); keys come from the layout's arch",
        ),
    ] = MappingProxyType({})
    observed: Annotated[
        Observed | None,
        Key(
            _object_schema(Observed, ref="Observed"),
            "what a recording saw: traffic, exits, KVM_RUN failures, refused calls",
        ),
    ] = None
    given: frozenset[str] = frozenset()


def layout_core_schema() -> cs.CoreSchema:
    """The pydantic-core schema of a whole layout file."""
    return _object_schema(Layout)


_VALIDATOR = SchemaValidator(layout_core_schema())


def parse_layout(data: object) -> Layout:
    """The Layout ``data`` (a loaded YAML document) describes; raises
    pydantic_core.ValidationError, one error per problem."""
    layout: Layout = _VALIDATOR.validate_python(data)
    return layout


def keys_of(model: type) -> tuple[str, ...]:
    """The keys a layout file may give for ``model`` (Layout, Memslot, Device, Reserved)."""
    found = _KEYS.get(model)
    if found is None:
        found = _KEYS[model] = tuple(declared_keys(model))
    return found


_KEYS: dict[type, tuple[str, ...]] = {}


def as_data(model: Any) -> dict[str, Any]:
    """``model`` as a layout file writes it: the keys its source gave and those whose value is
    not the default, in the format's order; never a null."""
    defaults = model._field_defaults
    data: dict[str, Any] = {}
    for key in keys_of(type(model)):
        value = getattr(model, key)
        if value is None or (key not in model.given and key in defaults and defaults[key] == value):
            continue
        if isinstance(value, _MODELS):
            value = as_data(value)
        elif isinstance(value, tuple):
            value = [as_data(v) if isinstance(v, _MODELS) else v for v in value]
        elif isinstance(value, Mapping):
            value = dict(value)
        data[key] = value
    return data


_MODELS = (Memslot, Device, Reserved, Port, Observed, *OBSERVED_SECTIONS.values())
