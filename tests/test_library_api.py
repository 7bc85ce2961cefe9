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
    # The built-in layout leaves the ucall page `auto`; the planner puts it where selftests do.
    builtin = Path(gpa_plan.__file__).parent / "data" / "selftests-arm64.yaml"
    loaded = gpa_plan.load_layout(builtin)
    allocation = gpa_plan.allocate(loaded.layout, ucall=True)
    assert allocation.placements == {"ucall": 0x29_1000}
    assert gpa_plan.selftests_vm("arm64").ucall_gpa == 0x29_1000


def test_the_shipped_selftests_layout_states_the_ucall_address_itself() -> None:
    loaded = gpa_plan.load_layout(LAYOUTS / "selftests-arm64.yaml")
    assert gpa_plan.allocate(loaded.layout, ucall=True).placements == {}
    (ucall,) = [d for d in loaded.resolved.devices if d.name == "ucall"]
    assert ucall.range.start == 0x29_1000


def test_a_layout_built_in_code_allocates_like_one_loaded_from_a_file() -> None:
    from gpa_plan.layout.models import Device, Layout, Memslot

    layout = Layout(
        layout=1,
        arch="arm64",
        memslots=(Memslot(name="code", base=0, size=0x20_0000),),
        devices=(Device(name="uart", type="mmio", base="auto", size=0x1000),),
    )
    allocation = gpa_plan.allocate(layout, ucall=True)
    # The ucall page follows the selftests convention (first page past slot 0), then uart.
    assert allocation.placements == {"ucall": 0x20_0000, "uart": 0x20_1000}
    assert allocation.document()["devices"][0] == {
        "name": "uart",
        "type": "mmio",
        "base": 0x20_1000,
        "size": 0x1000,
    }


def test_allocate_writes_back_the_keys_the_file_gave_and_no_defaults_it_left_out() -> None:
    from gpa_plan.layout.models import parse_layout

    source = {
        "layout": 1,
        "arch": "arm64",
        "page_size": 4096,
        "memslots": [
            {"name": "a", "base": "auto", "size": 0x1000, "readonly": False},
            {"name": "b", "base": 0x10_0000, "size": 0x1000},
        ],
    }
    document = gpa_plan.allocate(parse_layout(source)).document()
    assert document == {
        "layout": 1,
        "arch": "arm64",
        "page_size": 4096,
        "memslots": [
            {"name": "a", "slot": 0, "base": 0, "size": 0x1000, "readonly": False},
            {"name": "b", "slot": 1, "base": 0x10_0000, "size": 0x1000},
        ],
    }


def test_verify_results_matches_verify_json(tmp_path: Path) -> None:
    from gpa_plan.report.verify import verdict_dict

    path = str(LAYOUTS / "qemu-q35-x86_64.yaml")
    assert CliRunner().invoke(cli, ["verify", path, "--export", str(tmp_path)]).exit_code == 0
    plan = json.loads((tmp_path / "plan.json").read_text())
    results = {
        "format": 1,
        "host": {"page_size": 4096},
        "steps": [{"id": s["id"], "errno": None} for s in plan["steps"]],
        "probes": [{"id": p["id"], "observed": "memory", "detail": ""} for p in plan["probes"]],
    }
    (tmp_path / "results.json").write_text(json.dumps(results))
    verdict = gpa_plan.verify_results(path, None, str(tmp_path / "results.json"), None)
    assert isinstance(verdict, gpa_plan.Verdict)
    cli_json = CliRunner().invoke(
        cli, ["verify", "--format", "json", path, "--results", str(tmp_path / "results.json")]
    )
    assert cli_json.exit_code == 1 and not verdict.agrees  # not every probe is memory
    assert json.loads(cli_json.stdout)["verdicts"] == [verdict_dict(verdict)]
