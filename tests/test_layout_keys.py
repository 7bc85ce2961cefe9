"""Each key of the layout format says once whether it is required and what its default is: the
records, the validator and the JSON Schema of `gpa-plan schema` agree on it, key by key.

The keys and their defaults are read from the records themselves (gpa_plan.layout.models), so
a key added there is checked here without a line of this file changing."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic_core import ValidationError

from gpa_plan.layout.models import (
    Device,
    Layout,
    Memslot,
    Reserved,
    json_default,
    keys_of,
    parse_layout,
)
from gpa_plan.layout.schema import layout_schema

# Where each record sits in a document, and a value for each of its required keys: a key
# made required fails `test_the_samples_give_exactly_the_required_keys` until it has one here.
SECTION = {Memslot: "memslots", Device: "devices", Reserved: "reserved"}
SAMPLES: dict[type, dict[str, Any]] = {
    Layout: {"layout": 1, "arch": "arm64"},
    Memslot: {"name": "ram", "base": 0x4000_0000, "size": 0x1000},
    Device: {"name": "uart", "type": "mmio"},
    Reserved: {"name": "hole", "base": 0x8000_0000, "size": 0x1000},
}
RECORDS = tuple(SAMPLES)
KEYS = [(record, key) for record in RECORDS for key in keys_of(record)]


def key_id(param: object) -> str:
    return param.__name__ if isinstance(param, type) else str(param)


def required(record: type) -> set[str]:
    return set(keys_of(record)) - set(record._field_defaults)  # type: ignore[attr-defined]


def document(record: type, entry: dict[str, Any]) -> dict[str, Any]:
    """A layout whose ``record`` (the layout itself, or its one entry) is ``entry``."""
    if record is Layout:
        return entry
    return {**SAMPLES[Layout], SECTION[record]: [entry]}


def parsed(record: type, entry: dict[str, Any]) -> Any:
    layout = parse_layout(document(record, entry))
    return layout if record is Layout else getattr(layout, SECTION[record])[0]


def json_schema_of(record: type) -> dict[str, Any]:
    schema = layout_schema()
    found: dict[str, Any] = schema if record is Layout else schema["$defs"][record.__name__]
    return found


@pytest.mark.parametrize("record", RECORDS, ids=key_id)
def test_the_samples_give_exactly_the_required_keys(record: type) -> None:
    assert set(SAMPLES[record]) == required(record)
    assert parsed(record, SAMPLES[record]).given == frozenset(SAMPLES[record])


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
    entry = {k: v for k, v in SAMPLES[record].items() if k != key}
    described = json_schema_of(record)["properties"][key]
    if key not in defaults:
        with pytest.raises(ValidationError) as raised:
            parsed(record, entry)
        where = () if record is Layout else (SECTION[record], 0)
        errors = raised.value.errors()
        assert [(e["type"], tuple(e["loc"])) for e in errors] == [("missing", (*where, key))]
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
    for record in (Memslot, Device):
        assert record._field_defaults["policy"] is None
        policy = json_schema_of(record)["properties"]["policy"]
        assert policy["default"] is None
        assert "selftests" in policy["description"]
