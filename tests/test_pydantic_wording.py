"""Problems with a layout's shape are worded by gpa-plan from each pydantic error's `type` and
`ctx`, never from pydantic's English `msg`: a pydantic release that rewords its messages
changes nothing gpa-plan prints.

The test forges the messages: every error pydantic raises is raised again with the same type,
location and context but a message of our own, and what gpa-plan says must not change."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError, ValidationError

from gpa_plan.layout import validate
from gpa_plan.layout.errors import LayoutError
from gpa_plan.layout.loader import load_file

FORGED = "FORGED: pydantic reworded this"
HEAD = "layout: 1\narch: arm64\n"
MEMSLOT = HEAD + "memslots:\n  - {name: m, base: auto, size: 4K, %s}\n"
DEVICE = HEAD + "devices:\n  - {name: d, type: mmio, base: 0x1000, size: 4K, %s}\n"
# Each layout makes pydantic raise the error type it is named for (checked below).
CASES = {
    "missing": HEAD + "memslots:\n  - {base: 0, size: 4K}\n",
    "extra_forbidden": HEAD + "bogus: 1\n",
    "invalid_key": MEMSLOT % "5: 1",
    "value_error": MEMSLOT % "slot: 010",
    "greater_than_equal": HEAD + "pa_bits: 0\n",
    "less_than_equal": HEAD + "pa_bits: 65\n",
    "too_short": MEMSLOT % "within: [1]",
    "too_long": MEMSLOT % "within: [1, 2, 3]",
    "literal_error": MEMSLOT % "policy: lowest",
    "string_too_short": HEAD + "memslots:\n  - {name: '', base: 0, size: 4K}\n",
    "int_type": HEAD + "pa_bits: '40'\n",
    "bool_type": DEVICE % "identity_map: 'yes'",
    "string_type": HEAD + "name: 5\n",
    "list_type": HEAD + "memslots: {a: 1}\n",
    "dict_type": HEAD + "memslots: [1]\n",
}


def problems(path: Path) -> list[str]:
    with pytest.raises(LayoutError) as raised:
        validate.validate_layout(load_file(path))
    return [f"{p.line}:{p.column}: {p.message}" for p in raised.value.problems]


def forged(error: ErrorDetails, kind: str | None = None) -> InitErrorDetails:
    """``error`` with its message replaced by FORGED (and its type by ``kind``)."""
    custom = PydanticCustomError(kind or error["type"], FORGED, error.get("ctx"))
    return {"type": custom, "loc": error["loc"], "input": error["input"]}


def reword(monkeypatch: pytest.MonkeyPatch, kind: str | None = None) -> list[str]:
    """Make pydantic word every error FORGED (and give each the type ``kind``, if given);
    returns the list the types it really raises are added to."""
    seen: list[str] = []
    parse = validate.parse_layout

    def parse_reworded(data: object) -> object:
        try:
            return parse(data)
        except ValidationError as err:
            errors = err.errors(include_url=False)
            seen.extend(e["type"] for e in errors)
            raise ValidationError.from_exception_data(
                err.title, [forged(e, kind) for e in errors]
            ) from None

    monkeypatch.setattr(validate, "parse_layout", parse_reworded)
    return seen


@pytest.mark.parametrize("kind", list(CASES))
def test_what_gpa_plan_says_does_not_change_when_pydantic_rewords_its_errors(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / f"{kind}.yaml"
    path.write_text(CASES[kind])
    said = problems(path)
    seen = reword(monkeypatch)
    assert problems(path) == said
    assert kind in seen  # the case makes the error it is named for
    assert all(FORGED not in message for message in said), said


def test_an_error_type_gpa_plan_does_not_know_is_worded_without_pydantics_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "new.yaml"
    path.write_text(HEAD + "pa_bits: 0\n")
    reword(monkeypatch, "a_type_a_later_pydantic_adds")
    assert problems(path) == [
        "3:10: `pa_bits` must be of the type docs/layout-format.md gives for it, not 0"
    ]


def test_an_empty_name_is_asked_for_in_gpa_plans_words(tmp_path: Path) -> None:
    # pydantic's own text ("String should have at least 1 character") used to show through.
    path = tmp_path / "empty.yaml"
    path.write_text(CASES["string_too_short"])
    assert problems(path) == ["4:12: `name` of memslot '' must be a non-empty string, not ''"]
