"""`python3 -m probe PLAN.json` interrupted (Ctrl-C) while it runs: exit 130 and one line,
never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpa_plan.cli import cli
from gpa_plan.probe import __main__ as probe_main

LAYOUT = Path(__file__).parent.parent / "layouts" / "selftests-x86_64.yaml"


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the plan is x86_64's")
def test_ctrl_c_during_a_run_exits_130_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    exported = CliRunner().invoke(cli, ["verify", str(LAYOUT), "--export", str(tmp_path)])
    assert exported.exit_code == 0

    def interrupted(plan: object) -> dict[str, object]:
        raise KeyboardInterrupt

    monkeypatch.setattr(probe_main, "run_plan", interrupted)
    monkeypatch.setattr(probe_main, "host_arch", lambda: "x86_64")
    assert probe_main.main([str(tmp_path / "plan.json")]) == 130
    out, err = capsys.readouterr()
    assert (out, err) == ("", "probe: interrupted; no results were printed\n")


@pytest.mark.parametrize(
    ("text", "kind"),
    [("[1]", "an array"), ('"x"', "a string"), ("null", "null"), ("3", "a number")],
)
def test_a_plan_that_is_not_an_object_is_named_in_json_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, kind: str
) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(text)
    assert probe_main.main([str(plan)]) == 2
    assert capsys.readouterr().err == f"probe: {plan}: the plan is a JSON object, not {kind}\n"
