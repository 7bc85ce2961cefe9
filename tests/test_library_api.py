"""`import gpa_plan` gives the same answers as the command line."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import gpa_plan
from gpa_plan.cli import cli
from gpa_plan.report.json_report import check_document, explain_document

LAYOUTS = Path(__file__).resolve().parent.parent / "layouts"


def test_every_exported_name_resolves() -> None:
    for name in gpa_plan.__all__:
        assert getattr(gpa_plan, name) is not None


def test_check_file_matches_check_json() -> None:
    path = str(LAYOUTS / "broken" / "ucall-clobbered-by-memslot.yaml")
    results = gpa_plan.check_file(path, ["arm64", "x86_64"])
    cli_json = CliRunner().invoke(
        cli, ["check", "--format", "json", "--arch", "arm64", "--arch", "x86_64", path]
    )
    assert cli_json.exit_code == 1
    assert json.loads(cli_json.stdout) == check_document(results)


def test_explain_layout_matches_explain_json() -> None:
    path = str(LAYOUTS / "selftests-arm64.yaml")
    answers = gpa_plan.explain_layout(gpa_plan.load_layout(path), [0x29_1000, 0x0], ["write"])
    assert [a.outcome for a in answers] == ["io-exit", "memory"]
    cli_json = CliRunner().invoke(
        cli, ["explain", "--format", "json", "--access", "write", path, "0x29_1000", "0x0"]
    )
    assert json.loads(cli_json.stdout) == explain_document(answers)


def test_allocate_places_the_selftests_ucall_page_past_slot_0() -> None:
    loaded = gpa_plan.load_layout(LAYOUTS / "selftests-arm64.yaml")
    allocation = gpa_plan.allocate(loaded.layout, ucall=True)
    assert allocation.placements == {"ucall": 0x29_1000}
