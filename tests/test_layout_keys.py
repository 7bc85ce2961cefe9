"""Each key of the layout format says once whether it is required and what its default is: the
records, the validator and the JSON Schema of `gpa-plan schema` agree on it, key by key.

The keys and their defaults are read from the records themselves (gpa_plan.layout.models), so
a key added there is checked here without a line of this file changing."""

from __future__ import annotations

from typing import Any, get_args, get_type_hints

import pytest
from pydantic_core import ValidationError

from gpa_plan.layout.models import Layout, declared_keys, json_default, keys_of, parse_layout
from gpa_plan.layout.schema import layout_schema


def is_record(hint: object) -> bool:
    return isinstance(hint, type) and hasattr(hint, "_fields") and bool(declared_keys(hint))


Steps = tuple[tuple[str, bool], ...]


def placed_records(within: type = Layout, above: Steps = ()) -> dict[type, Steps]:
    """Each record a layout holds below its top level (`observed`'s lists included): the keys
    it is under, from the top, each with whether it holds a list of them."""
    found: dict[type, Steps] = {}
    for key, hint in get_type_hints(within).items():
        args = get_args(hint)
        if args and args[-1] is Ellipsis and is_record(args[0]):  # tuple[Record, ...]
            found[args[0]] = (*above, (key, True))
        else:
            for record in (a for a in (hint, *args) if is_record(a)):  # Record, Record | None
                found[record] = (*above, (key, False))
                found |= placed_records(record, found[record])
    return found


PLACES = placed_records()
RECORDS = (Layout, *PLACES)
# A value for each required key of each record: a record or a required key added to the
# format fails `test_each_sample_gives_exactly_the_required_keys` until it has one here.
SAMPLES: dict[str, dict[str, Any]] = {
    "Layout": {"layout": 1, "arch": "arm64"},
    "Memslot": {"name": "ram", "base": 0x4000_0000, "size": 0x1000},
    "Device": {"name": "uart", "type": "mmio"},
    "Reserved": {"name": "hole", "base": 0x8000_0000, "size": 0x1000},
    "Port": {"name": "com1", "base": 0x3F8, "size": 8},
    "Traffic": {"space": "mmio", "address": 0xD000_0000, "width": 4},
    "ExitCount": {"reason": "KVM_EXIT_MMIO", "count": 1},
    "RunFailure": {"errno": "EFAULT", "count": 1},
    "RefusedCall": {"call": "KVM_IOEVENTFD", "errno": "EEXIST"},
}
KEYS = [(record, key) for record in RECORDS for key in keys_of(record)]


def key_id(param: object) -> str:
    return param.__name__ if isinstance(param, type) else str(param)


def required(record: type) -> set[str]:
    return set(keys_of(record)) - set(record._field_defaults)  # type: ignore[attr-defined]


def sample(record: type) -> dict[str, Any]:
    return SAMPLES.get(record.__name__, {})


def where(record: type) -> tuple[str | int, ...]:
    """The path of ``record``'s entry in ``document``."""
    if record is Layout:
        return ()
    path: tuple[str | int, ...] = ()
    for key, listed in PLACES[record]:
        path += (key, 0) if listed else (key,)
    return path


def document(record: type, entry: dict[str, Any]) -> dict[str, Any]:
    """A layout whose ``record`` (the layout itself, or its one entry) is ``entry``."""
    if record is Layout:
        return entry
    value: Any = entry
    for key, listed in reversed(PLACES[record]):
        value = {key: [value] if listed else value}
    return {**SAMPLES["Layout"], **value}


def parsed(record: type, entry: dict[str, Any]) -> Any:
    found: Any = parse_layout(document(record, entry))
    for step in where(record):
        found = found[step] if isinstance(step, int) else getattr(found, step)
    return found


def json_schema_of(record: type) -> dict[str, Any]:
    schema = layout_schema()
    found: dict[str, Any] = schema if record is Layout else schema["$defs"][record.__name__]
    return found


def test_every_record_of_the_format_is_checked() -> None:
    assert {r.__name__ for r in RECORDS} >= {"Layout", "Memslot", "Device", "Reserved"}


@pytest.mark.parametrize("record", RECORDS, ids=key_id)
def test_each_sample_gives_exactly_the_required_keys(record: type) -> None:
    assert set(sample(record)) == required(record)
    assert parsed(record, sample(record)).given == frozenset(sample(record))


@pytest.mark.parametrize("record", RECORDS, ids=key_id)
def test_the_json_schema_lists_the_keys_in_order_and_requires_those_without_default(
    record: type,
) -> None:
    schema = json_schema_of(record)
    assert list(schema["properties"]) == list(keys_of(record))
    assert set(schema.get("required", ())) == required(record)


@pytest.mark.parametrize(("record", "key"), KEYS, ids=key_id)
def test_record_validator_and_json_schema_agree_on_the_key(record: type, key: str) -> None:
    defaults: dict[str, Any] = record._field_defaults  # type: ignore[attr-defined]
    entry = {k: v for k, v in sample(record).items() if k != key}
    described = json_schema_of(record)["properties"][key]
    if key not in defaults:
        with pytest.raises(ValidationError) as raised:
            parsed(record, entry)
        errors = [(e["type"], tuple(e["loc"])) for e in raised.value.errors()]
        assert errors == [("missing", (*where(record), key))]
        assert "default" not in described
        return
    # Left out: the record's default, and not counted as given.
    left_out = parsed(record, entry)
    assert getattr(left_out, key) == defaults[key]
    assert key not in left_out.given
    # The JSON Schema advertises that default, and writing it out means the same.
    assert "default" in described
    assert described["default"] == json_default(defaults[key])
    written = parsed(record, {**entry, key: described["default"]})
    assert getattr(written, key) == defaults[key]
    assert key in written.given


def test_no_policy_is_no_default_policy() -> None:
    # Without `policy`, a ucall device follows KVM selftests instead of taking the lowest fit;
    # a schema that says `first` would tell editors to write what changes the placement.
    for record in (r for r in RECORDS if r.__name__ in ("Memslot", "Device")):
        assert record._field_defaults["policy"] is None  # type: ignore[attr-defined]
        policy = json_schema_of(record)["properties"]["policy"]
        assert policy["default"] is None
        assert "selftests" in policy["description"]
