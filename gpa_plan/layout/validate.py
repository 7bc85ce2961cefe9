"""Turn a loaded document into a validated ``Layout``, or say precisely what is wrong.

Pydantic checks shape and types; each of its errors becomes one problem at the line of the
offending value (or key, for unknown keys), worded for a layout author. Checks that need more
than one field (the device catalog, unique names, placement options) follow, with positions too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic_core import ErrorDetails, ValidationError

from gpa_plan.arch import ARCHES, name_hint
from gpa_plan.arch.devices import CATALOG
from gpa_plan.layout.errors import SCHEMA, LayoutError, Problem
from gpa_plan.layout.loader import Document
from gpa_plan.layout.models import (
    OBSERVED_SECTIONS,
    Device,
    Layout,
    Memslot,
    Observed,
    Port,
    Reserved,
    keys_of,
    parse_layout,
)
from gpa_plan.layout.numbers import shown
from gpa_plan.layout.resolved import device_size
from gpa_plan.suggest import closest

_SECTIONS: dict[str, tuple[str, type]] = {
    "memslots": ("memslot", Memslot),
    "devices": ("device", Device),
    "reserved": ("reserved range", Reserved),
    "ports": ("port range", Port),
}
# The lists under `observed`: what an entry of each is called in messages.
_OBSERVED_KINDS = {
    "traffic": "traffic entry",
    "exits": "exit count",
    "run_failures": "run failure",
    "internal_errors": "internal error",
    "refused": "refused call",
}

Path = tuple[str | int, ...]


def validate_layout(doc: Document) -> Layout:
    """The validated layout; raises LayoutError listing every problem with its position.

    One mistake does not hide the others: when the shape or a type is wrong somewhere (a
    misspelt key, say), the checks across fields still run on every part of the file that is
    valid, and every problem of both kinds is reported, in the order of the file."""
    try:
        layout = parse_layout(doc.data)
    except ValidationError as err:
        problems = [*doc.problems, *_pydantic_problems(doc, err), *_checks_on_the_rest(doc, err)]
        raise LayoutError(doc.path, sorted(problems, key=_order)) from None
    problems = sorted(
        [
            *doc.problems,
            *(_problem(doc, p, message, key=key) for p, message, key in _cross_checks(layout)),
        ],
        key=_order,
    )
    if problems:
        raise LayoutError(doc.path, problems)
    return layout


def _order(problem: Problem) -> tuple[int, int]:
    return problem.line, problem.column


def _problem(doc: Document, path: Path, message: str, *, key: bool = False) -> Problem:
    line, column = doc.position(path, key=key)
    return Problem(SCHEMA, message, line, column)


# --- pydantic errors -------------------------------------------------------------------------


# A key the format does not have: a name it does not know, or not a name at all (`16:`).
_UNKNOWN_KEY = ("extra_forbidden", "invalid_key")


def _pydantic_problems(doc: Document, err: ValidationError) -> Iterator[Problem]:
    grouped: dict[tuple[Path, str], list[ErrorDetails]] = {}
    for error in err.errors(include_url=False):
        path, rest = _split_loc(doc.data, tuple(error["loc"]))
        if error["type"] == "missing" and rest:
            grouped.setdefault((path, f"missing:{rest[0]}"), []).append(error)
        elif error["type"] in _UNKNOWN_KEY:
            grouped.setdefault((path, "extra"), []).append(error)
        else:
            grouped.setdefault((path, "value"), []).append(error)
    for (path, what), errors in grouped.items():
        if what == "extra" and path[:-1] == ("kvm_private",):
            arch = doc.data.get("arch") if isinstance(doc.data, dict) else None
            known = arch if isinstance(arch, str) and arch in ARCHES else None
            yield _problem(doc, path, _not_settable(str(path[-1]), known), key=True)
        elif what == "extra":
            yield _problem(doc, path, _unknown_key(path), key=True)
        elif what.startswith("missing:"):
            yield _problem(
                doc, path, f"{_subject(doc, path)} has no `{what[8:]}`, which is required"
            )
        else:
            yield _problem(doc, path, _value_message(doc, path, errors))


def _split_loc(data: Any, loc: Path) -> tuple[Path, Path]:
    """The part of a pydantic ``loc`` that exists in the data, and what is left over."""
    node: Any = data
    for i, segment in enumerate(loc):
        if isinstance(node, dict) and segment in node:
            node = node[segment]
        elif isinstance(node, list) and isinstance(segment, int) and 0 <= segment < len(node):
            node = node[segment]
        else:
            return loc[:i], loc[i:]
    return loc, ()


def _model_at(path: Path) -> type | None:
    if not path:
        return Layout
    if len(path) == 2 and path[0] in _SECTIONS:
        return _SECTIONS[str(path[0])][1]
    if path == ("observed",):
        return Observed
    if len(path) == 3 and path[0] == "observed" and path[1] in OBSERVED_SECTIONS:
        return OBSERVED_SECTIONS[str(path[1])]
    return None


def _where(path: Path) -> str:
    """Where a key at ``path`` sits, in words: "at the top level", "in a memslot"."""
    if not path:
        return "at the top level"
    if path == ("observed",):
        return "in `observed`"
    if path[0] == "observed":
        return f"in an `observed` {_OBSERVED_KINDS[str(path[1])]}"
    return f"in a {_SECTIONS[str(path[0])][0]}"


def _unknown_key(path: Path) -> str:
    key = str(path[-1])
    model = _model_at(path[:-1])
    if model is None:
        return f"unknown key `{key}`"
    allowed = keys_of(model)
    where = _where(path[:-1])
    guess = closest(key, allowed)
    hint = f"; did you mean `{guess}`?" if guess else ""
    return f"unknown key `{key}` {where}{hint} (allowed: {', '.join(allowed)})"


def _subject(doc: Document, path: Path) -> str:
    if len(path) >= 3 and path[0] == "observed" and path[1] in _OBSERVED_KINDS:
        return f"`observed` {_OBSERVED_KINDS[str(path[1])]} #{int(path[2]) + 1}"
    if len(path) >= 2 and path[0] in _SECTIONS:
        kind = _SECTIONS[str(path[0])][0]
        entry = _entry(doc.data, path[:2])
        name = entry.get("name") if isinstance(entry, dict) else None
        return f"{kind} {name!r}" if isinstance(name, str) else f"{kind} #{int(path[1]) + 1}"
    return "the layout"


def _entry(data: Any, path: Path) -> Any:
    node = data
    for segment in path:
        node = node[segment]
    return node


# What each kind of pydantic error asks for, worded from its `type` and `ctx` alone: pydantic's
# English `msg` is never shown, so a pydantic release that rewords it changes nothing here.
_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing_size": "an integer that fits in 64 bits",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "tuple_type": "a list",
}
# An error of a kind not worded above (none that a layout can cause today).
_ANY_OTHER = "of the type docs/layout-format.md gives for it"


def _value_message(doc: Document, path: Path, errors: list[ErrorDetails]) -> str:
    field = next((str(s) for s in reversed(path) if isinstance(s, str)), "value")
    subject = _subject(doc, path)
    prefix = f"`{field}` of {subject}" if subject != "the layout" else f"`{field}`"
    wanted: list[str] = []
    for error in errors:
        kind, ctx = error["type"], error.get("ctx", {})
        if kind == "value_error":
            # Raised by gpa-plan's own validators (gpa_plan.layout.numbers): our words.
            return f"{prefix}: {ctx['error']}"
        if kind == "greater_than_equal":
            return f"{prefix} must be greater than or equal to {ctx['ge']}"
        if kind == "less_than_equal":
            return f"{prefix} must be less than or equal to {ctx['le']}"
        if kind in ("too_short", "too_long"):
            return f"{prefix} must be a list of two numbers [LOW, HIGH)"
        if kind == "literal_error":
            wanted.append(str(ctx["expected"]).replace("'", ""))
        elif kind == "string_too_short":
            least = ctx["min_length"]
            wanted.append(
                "a non-empty string" if least == 1 else f"a string of {least} characters or more"
            )
        else:
            wanted.append(_TYPE_WORDS.get(kind, _ANY_OTHER))
    value = _entry(doc.data, path)
    hint = name_hint(value) if path == ("arch",) else ""
    return f"{prefix} must be {' or '.join(dict.fromkeys(wanted))}, not {_shown(value)}{hint}"


def _shown(value: Any) -> str:
    # A whole mapping or list repeated back would bury the message (and may be huge).
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return shown(value)
    return repr(value)


# --- what is valid in a file that is not -----------------------------------------------------

# Stand-ins for a required top-level value that is missing or wrong (already reported): the
# checks across fields read neither.
_STAND_INS = {"layout": 1, "arch": "arm64"}
# Each pass only removes what failed; a few are enough (a key, then its entry, then a stand-in).
_SALVAGE_PASSES = 4


def _checks_on_the_rest(doc: Document, err: ValidationError) -> list[Problem]:
    """The checks across fields on the parts of ``doc`` that validate: its unknown keys left
    out, each entry (memslot, device, reserved range) with any other error left out whole, a
    top-level value with an error replaced by its default. Positions are those of the file."""
    if not isinstance(doc.data, dict):
        return []
    top: dict[Any, Any] = dict(doc.data)
    # Each section's entries by their index in the file, so positions stay the file's.
    kept: dict[str, dict[int, Any]] = {
        s: dict(enumerate(top[s])) for s in _SECTIONS if isinstance(top.get(s), list)
    }
    data: Any = doc.data
    indexes: dict[str, list[int]] = {s: list(entries) for s, entries in kept.items()}
    errors = err.errors(include_url=False)
    for _ in range(_SALVAGE_PASSES):
        for error in errors:
            _leave_out(top, kept, indexes, *_split_loc(data, tuple(error["loc"])), error["type"])
        for section, entries in kept.items():
            top[section] = list(entries.values())
        indexes = {s: list(entries) for s, entries in kept.items()}
        data = top
        try:
            layout = parse_layout(top)
        except ValidationError as again:
            errors = again.errors(include_url=False)
            continue
        return [
            _problem(doc, _in_file(path, indexes), message, key=key)
            for path, message, key in _cross_checks(layout)
        ]
    return []


def _leave_out(
    top: dict[Any, Any],
    kept: dict[str, dict[int, Any]],
    indexes: dict[str, list[int]],
    path: Path,
    rest: Path,
    kind: str,
) -> None:
    """Remove from ``top`` and ``kept`` what one error of the last pass is about."""
    if (path or rest)[:1] == ("arch",):
        top.pop("kvm_private", None)  # its keys are the arch's: none to judge them by
    if not path:
        if rest and rest[0] in _STAND_INS:
            top[rest[0]] = _STAND_INS[str(rest[0])]
        return
    section = str(path[0])
    if section in kept and len(path) >= 2 and isinstance(path[1], int):
        index = indexes[section][path[1]]
        entry = kept[section].get(index)
        if kind in _UNKNOWN_KEY and len(path) == 3 and isinstance(entry, dict):
            kept[section][index] = {k: v for k, v in entry.items() if k != path[2]}
        else:
            kept[section].pop(index, None)
    elif kind in _UNKNOWN_KEY and len(path) == 2 and isinstance(top.get(section), dict):
        # a top-level mapping (kvm_private) keeps its other keys
        top[section] = {k: v for k, v in top[section].items() if k != path[1]}
    elif section in _STAND_INS and kind not in _UNKNOWN_KEY:
        top[section] = _STAND_INS[section]
    else:
        top.pop(path[0], None)
        kept.pop(section, None)


def _in_file(path: Path, indexes: dict[str, list[int]]) -> Path:
    """``path`` into the salvaged layout as a path into the file."""
    if len(path) >= 2 and path[0] in indexes and isinstance(path[1], int):
        return (path[0], indexes[str(path[0])][path[1]], *path[2:])
    return path


# --- checks across fields ----------------------------------------------------------------------


def _cross_checks(layout: Layout) -> Iterator[tuple[Path, str, bool]]:
    yield from _layout_numbers(layout)
    yield from _kvm_private(layout)
    yield from _unique_names(layout)
    for i, memslot in enumerate(layout.memslots):
        yield from _placement_options(("memslots", i), memslot.base, memslot.size, memslot)
    for i, device in enumerate(layout.devices):
        yield from _device_fields(("devices", i), device)
        yield from _placement_options(("devices", i), device.base, _size_of(layout, i), device)
    for i, port in enumerate(layout.ports):
        yield from _port_fields(("ports", i), port)
    if layout.observed is not None:
        yield from _observed_widths(layout.observed)


def _is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def _layout_numbers(layout: Layout) -> Iterator[tuple[Path, str, bool]]:
    if not _is_power_of_two(layout.page_size):
        yield ("page_size",), f"page_size {layout.page_size:#x} is not a power of two", False
    gps = layout.guest_page_size
    if gps is not None and not _is_power_of_two(gps):
        yield ("guest_page_size",), f"guest_page_size {gps:#x} is not a power of two", False


def _kvm_private(layout: Layout) -> Iterator[tuple[Path, str, bool]]:
    """Only keys the layout's own architecture declares (ArchSpec.settings), each within what
    its ioctl takes on every host."""
    settings = ARCHES[layout.arch].settings
    for key, address in layout.kvm_private.items():
        setting = settings.get(key)
        if setting is None:
            yield ("kvm_private", key), _not_settable(key, layout.arch), True
        elif setting.highest is not None and address > setting.highest:
            yield (
                ("kvm_private", key),
                f"{key} {address:#x} is above {setting.highest:#x}: {setting.above_highest}; "
                "give a lower address",
                False,
            )


def _not_settable(key: str, arch: str | None) -> str:
    """Why ``key`` cannot be under ``kvm_private`` in a layout of ``arch`` (None: the layout
    names no known architecture), and what can."""
    owners = [
        f"{spec.name} ({spec.settings[key].ioctl})"
        for spec in ARCHES.values()
        if key in spec.settings and spec.name != arch
    ]
    allowed = ARCHES[arch].settings if arch is not None else {}
    guess = closest(key, allowed)
    hint = f"; did you mean `{guess}`?" if guess else ""
    if arch is None:
        can = "its keys depend on `arch`, to fix first"
    elif allowed:
        can = f"{arch} layouts may set {', '.join(f'`{k}`' for k in allowed)}"
    else:
        can = f"KVM on {arch} keeps no private range a VMM places: remove `kvm_private`"
    if owners and arch is not None:
        return f"`{key}` in kvm_private is for {' and '.join(owners)}, not {arch}{hint}; {can}"
    return f"unknown key `{key}` in kvm_private{hint}; {can}"


def _unique_names(layout: Layout) -> Iterator[tuple[Path, str, bool]]:
    seen: dict[str, str] = {}
    for section in _SECTIONS:
        for i, entry in enumerate(getattr(layout, section)):
            first = seen.get(entry.name)
            if first is not None:
                yield (
                    (section, i, "name"),
                    f"name {entry.name!r} is already used by a {first}; "
                    "names must be unique across the file",
                    False,
                )
            else:
                seen[entry.name] = _SECTIONS[section][0]


def _placement_options(
    path: Path, base: int | str | None, size: int | None, entry: Memslot | Device
) -> Iterator[tuple[Path, str, bool]]:
    if entry.align is not None and not _is_power_of_two(entry.align):
        yield (*path, "align"), f"align {entry.align:#x} is not a power of two", False
    if entry.within is not None and entry.within[0] >= entry.within[1]:
        yield (
            (*path, "within"),
            "`within: [LOW, HIGH]` needs LOW < HIGH (the window is half-open)",
            False,
        )
    if not isinstance(base, int):
        return
    # With a fixed base (for instance after `allocate --in-place`), the placement options
    # still hold: they are checked instead of used.
    if entry.align is not None and _is_power_of_two(entry.align) and base % entry.align:
        yield (*path, "base"), f"base {base:#x} is not aligned to its align {entry.align:#x}", False
    if entry.within is not None and size is not None:
        low, high = entry.within
        if not (low <= base and base + size <= high):
            yield (
                (*path, "base"),
                f"{entry.name!r} at {base:#x} (size {size:#x}) is outside its "
                f"within [{low:#x}, {high:#x})",
                False,
            )


def _size_of(layout: Layout, index: int) -> int | None:
    """The device's size, when its type and fields are valid enough to know it."""
    device = layout.devices[index]
    if device.type not in CATALOG or (device.type == "mmio" and device.size is None):
        return None
    return device_size(layout, index)


def _device_fields(path: Path, device: Device) -> Iterator[tuple[Path, str, bool]]:
    dtype = CATALOG.get(device.type)
    if dtype is None:
        guess = closest(device.type, CATALOG)
        hint = f"; did you mean `{guess}`?" if guess else ""
        yield (
            (*path, "type"),
            f"unknown device type {device.type!r}{hint} (known: {', '.join(CATALOG)})",
            False,
        )
        return
    is_mmio = dtype.name == "mmio"
    if is_mmio and device.size is None:
        yield path, f"device {device.name!r} of type mmio needs a `size`", False
    if not is_mmio and device.size is not None:
        yield (
            (*path, "size"),
            f"a {dtype.name} has the kernel's fixed size; drop `size`",
            True,
        )
    if device.size == 0:
        yield (*path, "size"), f"device {device.name!r} has size 0", False
    if not is_mmio and device.handler is not None:
        yield (
            (*path, "handler"),
            f"a {dtype.name} is always handled by {dtype.handler.value if dtype.handler else ''}"
            "; `handler` is for mmio devices",
            True,
        )
    if device.vcpus is not None and dtype.per_vcpu is None:
        yield (*path, "vcpus"), "`vcpus` is only for vgic-v3-redist", True
    if device.redist is not None and not dtype.frame_may_repeat:
        yield (*path, "redist"), "`redist` is only for vgic-v3-redist", True
    yield from _ioeventfd_fields(path, device, "an mmio device", "device", "write")
    if device.base is None and dtype.default_base is None:
        yield path, f"device {device.name!r} needs a `base` (an address or auto)", False


def _ioeventfd_fields(path: Path, entry: Device | Port, what: str, noun: str,
                      access: str) -> Iterator[tuple[Path, str, bool]]:
    """`length` and `datamatch` belong to an ioeventfd, whose length fits in the entry."""
    for key in ("length", "datamatch"):
        if getattr(entry, key) is not None and entry.handler != "ioeventfd":
            yield (*path, key), f"`{key}` is only for {what} with `handler: ioeventfd`", True
    length = entry.length
    if entry.handler == "ioeventfd" and length and entry.size and length > entry.size:
        yield (
            (*path, "length"),
            f"`length` {length} is more than the {noun}'s size {entry.size}: the {access} "
            f"that signals the ioeventfd would reach past it; make `size` at least {length}",
            False,
        )


def _port_fields(path: Path, port: Port) -> Iterator[tuple[Path, str, bool]]:
    if port.size == 0:
        yield (*path, "size"), f"port range {port.name!r} has size 0", False
    yield from _ioeventfd_fields(path, port, "a port range", "port range", "`out`")


# KVM_EXIT_IO's io.size: `in` and `out` move 1, 2 or 4 bytes (x86.c emulator_pio_in_out()).
_PORT_WIDTHS = (1, 2, 4)


def _observed_widths(observed: Observed) -> Iterator[tuple[Path, str, bool]]:
    """Port accesses of a width `in` and `out` do not have."""
    for i, traffic in enumerate(observed.traffic):
        if traffic.space == "port" and traffic.width not in _PORT_WIDTHS:
            yield (
                ("observed", "traffic", i, "width"),
                f"a port access of width {traffic.width}: `in` and `out` move 1, 2 or 4 bytes "
                "(KVM_EXIT_IO's io.size); give the width of one element",
                False,
            )
