"""The output formats and importers are registries: the command line's choices and options
come from them, their writers and readers load only when used, and an option given to an
importer that does not take it is refused naming the one that does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from gpa_plan.cli import cli, main
from gpa_plan.formats import (
    ALLOCATE_FORMATS,
    CHECK_FORMATS,
    EXPLAIN_FORMATS,
    Format,
    Formats,
    resolve,
)
from gpa_plan.importers.registry import IMPORTERS

ROOT = Path(__file__).resolve().parent.parent
DTB = ROOT / "tests" / "data" / "import" / "dtb" / "qemu-virt-gicv3.dtb"
CLEAN = ROOT / "layouts" / "qemu-virt-arm64.yaml"
BROKEN = ROOT / "layouts" / "broken" / "overlapping-memslots.yaml"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def choices(command: str, name: str) -> list[str]:
    param = next(p for p in cli.commands[command].params if p.name == name)
    assert isinstance(param.type, click.Choice)
    return list(param.type.choices)


@pytest.mark.parametrize(
    ("command", "formats"),
    [("check", CHECK_FORMATS), ("explain", EXPLAIN_FORMATS), ("allocate", ALLOCATE_FORMATS)],
)
def test_each_commands_format_choices_are_its_registry(
    command: str, formats: Formats[object]
) -> None:
    assert choices(command, "fmt") == formats.names


def test_the_import_kinds_and_options_are_the_importers_registry() -> None:
    assert choices("import", "kind") == IMPORTERS.names
    flags = {opt for p in cli.commands["import"].params for opt in p.opts}
    declared = {o.flag for i in IMPORTERS.names for o in IMPORTERS[i].options}
    assert declared == {"--arch", "--page-size", "--vm"}
    assert declared <= flags


def test_every_registered_writer_and_reader_resolves_to_a_function() -> None:
    for formats in (CHECK_FORMATS, EXPLAIN_FORMATS, ALLOCATE_FORMATS):
        for name in formats.names:
            assert callable(formats.writer(name))
    for formats in (EXPLAIN_FORMATS, ALLOCATE_FORMATS):
        for name in formats.names:
            assert callable(formats.failure_writer(name))
    for name in IMPORTERS.names:
        assert callable(resolve(IMPORTERS[name].reader))


def test_a_new_format_is_one_entry_naming_its_writer() -> None:
    formats: Formats[object] = Formats(Format("upper", "builtins:str.upper", "shouting"))
    assert formats.names == ["upper"]
    assert formats.help() == "Output format: upper (shouting)."
    with pytest.raises(KeyError, match="no failure writer"):
        formats.failure_writer("upper")


def test_loading_the_command_line_loads_no_writer_and_no_importer() -> None:
    probe = (
        "import sys; import gpa_plan.cli; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('gpa_plan'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        check=True,
    )
    loaded = set(done.stdout.split())
    assert {"gpa_plan.formats", "gpa_plan.importers.registry"} <= loaded
    never = {
        "gpa_plan.report.text",
        "gpa_plan.report.json_report",
        "gpa_plan.report.github",
        "gpa_plan.report.sarif",
        "gpa_plan.plan.emit",
        "gpa_plan.importers.qemu_mtree",
        "gpa_plan.importers.dtb",
        "gpa_plan.importers.strace",
    }
    assert sorted(loaded & never) == []


# -- importer options ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "takers"),
    [("--arch", "arm64", "qemu-mtree and strace"), ("--page-size", "64K", "qemu-mtree"),
     ("--vm", "2", "strace")],
)
def test_an_option_of_another_importer_given_to_dtb_names_the_importers_that_take_it(
    option: str, value: str, takers: str
) -> None:
    result = invoke("import", "dtb", str(DTB), option, value)
    assert result.exit_code == 2
    assert f"Error: {option} is for {takers}; `import dtb` takes no {option}" in result.stderr
    assert result.stdout == ""


def test_every_importer_refuses_the_options_only_others_declare() -> None:
    for name in IMPORTERS.names:
        mine = {o.flag for o in IMPORTERS[name].options}
        for option in IMPORTERS.options():
            if option.flag in mine:
                continue
            takers = " and ".join(IMPORTERS.takers(option.flag))
            assert IMPORTERS.refusal(name, {option.key: "x"}) == (
                f"{option.flag} is for {takers}; `import {name}` takes no {option.flag}: "
                "leave it out"
            )
        given = {o.key: "x" for o in IMPORTERS[name].options}
        assert IMPORTERS.refusal(name, {**given, "unrelated": None}) is None


# -- a failure in each format that carries findings ---------------------------------------


def test_explain_json_of_a_file_that_does_not_load_is_a_document_of_its_findings(
    tmp_path: Path,
) -> None:
    layout = tmp_path / "bad.yaml"
    layout.write_text("layout: 1\narch: arm64\nmemslots: [\n")
    result = invoke("explain", str(layout), "0x0", "--format", "json")
    assert result.exit_code == 1
    assert result.stderr == ""
    document = json.loads(result.stdout)
    assert document["format"] == 1 and set(document) == {"format", "findings"}
    (finding,) = document["findings"]
    assert (finding["rule"], finding["file"], finding["line"]) == ("yaml-syntax", str(layout), 4)
    # The text form says the same finding, as `check` words it.
    text = invoke("explain", str(layout), "0x0")
    assert text.exit_code == 1 and text.stdout == ""
    assert text.stderr.startswith(f"{layout}:4:{finding['column']}: error[yaml-syntax] ")


def test_explain_json_of_an_unreadable_file_is_a_document_too(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    result = invoke("explain", str(missing), "0x0", "--format", "json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["findings"] == [
        {
            "rule": "unreadable",
            "severity": "error",
            "message": f"cannot read {missing}: no such file or directory",
            "file": str(missing),
            "line": 1,
            "column": 1,
            "objects": [],
        }
    ]


def test_allocate_json_of_an_invalid_layout_is_a_document_of_its_findings(
    tmp_path: Path,
) -> None:
    layout = tmp_path / "bad.yaml"
    layout.write_text("layout: 1\narch: arm64\nmemslots:\n  - {name: ram, base: auto}\n")
    result = invoke("allocate", str(layout), "--format", "json")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert set(document) == {"format", "findings"}
    assert [f["rule"] for f in document["findings"]] == ["schema"]
    assert result.stderr == ""


def test_allocate_text_and_json_say_the_same_findings_through_one_wording(
    tmp_path: Path,
) -> None:
    from gpa_plan.check.findings import Finding
    from gpa_plan.report.text import finding_line

    layout = tmp_path / "full.yaml"
    layout.write_text(
        "layout: 1\narch: arm64\ndevices:\n"
        "  - {name: gicd, type: vgic-v3-dist, base: 0x0800_0000}\n"
        "  - {name: its, type: vgic-its, base: auto, within: [0x0800_0000, 0x0802_0000]}\n"
    )
    as_json = invoke("allocate", str(layout), "--format", "json", "-o", str(tmp_path / "o"))
    as_text = invoke("allocate", str(layout))
    assert as_json.exit_code == as_text.exit_code == 1
    assert not (tmp_path / "o").exists()
    findings = [
        Finding(**{**f, "objects": tuple(f["objects"])})
        for f in json.loads(as_json.stdout)["findings"]
    ]
    assert [f.rule for f in findings] == ["no-room"]
    assert as_text.stderr == "".join(finding_line(f) + "\n" for f in findings)
    assert as_text.stdout == ""


def test_allocate_json_of_a_missing_file_is_a_document_and_exit_2(tmp_path: Path) -> None:
    result = invoke("allocate", str(tmp_path / "nope.yaml"), "--format", "json")
    assert result.exit_code == 2
    assert [f["rule"] for f in json.loads(result.stdout)["findings"]] == ["unreadable"]


def test_a_refused_import_is_a_finding_line() -> None:
    result = invoke("import", "dtb", str(CLEAN))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{CLEAN}: error[import] ")


# -- main(argv) returns the status ---------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "status"),
    [
        (["check", str(CLEAN)], 0),
        (["check", str(BROKEN)], 1),
        (["check", "--no-such-option", str(CLEAN)], 2),
        (["explain", str(CLEAN), "not-a-number"], 2),
        (["rules"], 0),
        (["--version"], 0),
    ],
)
def test_main_returns_the_exit_status(
    argv: list[str], status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == status
    capsys.readouterr()
