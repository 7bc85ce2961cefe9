"""`gpa-plan schema`: the JSON Schema of the layout format, as editors and validators use it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from jsonschema import Draft7Validator, Draft202012Validator

from gpa_plan.arch import ARCHES
from gpa_plan.cli import cli
from gpa_plan.layout.schema import layout_schema

ROOT = Path(__file__).parent.parent
DATA = Path(__file__).parent / "data"
SHIPPED = sorted((ROOT / "layouts").glob("*.yaml"))
CLEAN = sorted((DATA / "schema" / "valid").glob("*.yaml"))
# The CI fixtures load (all but misspelt.yaml) even where `check` has findings.
VALID = CLEAN + sorted((DATA / "ci" / "layouts").glob("[!m]*.yaml"))
INVALID = sorted((DATA / "schema" / "invalid").glob("*.yaml"))
# GPA_PLAN_UPDATE_GOLDEN=1 rewrites it; review the diff: editors see every change.
GOLDEN = DATA / "golden" / "schema.json"


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    return Draft202012Validator(layout_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_schema_command_prints_a_draft_2020_12_schema_with_title_and_description() -> None:
    result = CliRunner().invoke(cli, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "gpa-plan layout"
    assert "KVM" in schema["description"]
    assert list(schema)[:3] == ["$schema", "title", "description"]
    assert "$id" not in schema  # no address on the web names it


def test_schema_command_prints_the_golden_schema() -> None:
    result = CliRunner().invoke(cli, ["schema"])
    assert result.exit_code == 0
    if os.environ.get("GPA_PLAN_UPDATE_GOLDEN"):
        GOLDEN.write_text(result.stdout)
    assert result.stdout == GOLDEN.read_text()


def test_pa_bits_description_names_every_architecture_its_width_and_default() -> None:
    description = layout_schema()["properties"]["pa_bits"]["description"]
    for spec in ARCHES.values():
        assert f"{spec.name}: {spec.pa_name} (default {spec.default_pa_bits})" in description


def test_schema_command_prints_what_the_library_returns() -> None:
    result = CliRunner().invoke(cli, ["schema"])
    assert json.loads(result.stdout) == layout_schema()


def test_schema_forbids_unknown_keys_at_every_level() -> None:
    schema = layout_schema()
    assert schema["additionalProperties"] is False
    for name in ("Memslot", "Device", "Reserved"):
        assert schema["$defs"][name]["additionalProperties"] is False


def test_there_are_shipped_layouts_to_validate() -> None:
    assert SHIPPED, "layouts/*.yaml is empty"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_layout_validates(validator: Draft202012Validator, path: Path) -> None:
    errors = [e.message for e in validator.iter_errors(load(path))]
    assert errors == []


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_example_validates(validator: Draft202012Validator, path: Path) -> None:
    errors = [e.message for e in validator.iter_errors(load(path))]
    assert errors == []


@pytest.mark.parametrize("path", CLEAN, ids=lambda p: p.name)
def test_clean_example_also_passes_check(path: Path) -> None:
    assert CliRunner().invoke(cli, ["check", "--format", "json", str(path)]).exit_code == 0


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_example_is_refused(validator: Draft202012Validator, path: Path) -> None:
    assert not validator.is_valid(load(path))


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_example_is_a_schema_finding_of_check_too(path: Path) -> None:
    result = CliRunner().invoke(cli, ["check", "--format", "json", str(path)])
    assert result.exit_code == 1
    rules = [f["rule"] for r in json.loads(result.stdout)["results"] for f in r["findings"]]
    assert rules and set(rules) == {"schema"}


def test_misspelt_key_is_named_in_the_validation_error(validator: Draft202012Validator) -> None:
    misspelt = load(DATA / "schema" / "invalid" / "misspelt-memslot-key.yaml")
    errors = list(validator.iter_errors(misspelt))
    assert any("'bsae' was unexpected" in e.message for e in errors)


@pytest.mark.parametrize("path", VALID + INVALID, ids=lambda p: p.name)
def test_draft_07_validators_give_the_same_answers(
    validator: Draft202012Validator, path: Path
) -> None:
    # yaml-language-server implements draft-07; the schema uses no keyword it lacks, and
    # `$defs` is reached by plain JSON pointers.
    draft7 = Draft7Validator(
        {**layout_schema(), "$schema": "http://json-schema.org/draft-07/schema#"}
    )
    assert draft7.is_valid(load(path)) == validator.is_valid(load(path))
