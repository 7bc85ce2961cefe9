"""`gpa-plan check` as a CI step: many files, exit statuses, and the github and sarif formats.

Golden outputs live in tests/data/golden/; set GPA_PLAN_UPDATE_GOLDEN=1 to rewrite them after
a deliberate change, then read the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from jsonschema import Draft7Validator

import gpa_plan
from gpa_plan.check.findings import ERROR, Finding
from gpa_plan.check.run import RULES, CheckResult
from gpa_plan.cli import cli
from gpa_plan.printable import printable
from gpa_plan.report import github, sarif

DATA = Path(__file__).parent / "data"
FIXTURES = DATA / "ci"
GOLDEN = DATA / "golden"
SARIF_SCHEMA = json.loads((DATA / "sarif-schema-2.1.0.json").read_text())
# Deterministic text output: rich's width off a terminal, and no colour.
TEXT_ENV = {"COLUMNS": "160", "NO_COLOR": "1", "FORCE_COLOR": None, "TTY_COMPATIBLE": None}

CLEAN = (FIXTURES / "layouts" / "clean.yaml").read_text()
OVERLAP = (FIXTURES / "layouts" / "overlap.yaml").read_text()
READONLY_DEVICE = (FIXTURES / "layouts" / "readonly-device.yaml").read_text()

# arm64-only vGIC with its distributor in RAM: checked under x86_64 as well, it is left out
# there (one note), so it is shadowed under arm64 only; the UART in RAM is shadowed under both.
ARM64_GIC_IN_RAM = """\
layout: 1
arch: arm64
memslots:
  - name: ram
    base: 0x4000_0000
    size: 1G
devices:
  - name: gicd
    type: vgic-v3-dist
    base: 0x4010_0000
  - name: gicr
    type: vgic-v3-redist
    base: 0x080a_0000
  - name: uart
    type: mmio
    base: 0x4000_0000
    size: 4K
"""


def check(args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> Result:
    monkeypatch.chdir(cwd)
    return CliRunner().invoke(cli, ["check", *args], env=TEXT_ENV)


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("GPA_PLAN_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def sarif_log(result: Result) -> dict[str, Any]:
    log: dict[str, Any] = json.loads(result.stdout)
    Draft7Validator(SARIF_SCHEMA, format_checker=Draft7Validator.FORMAT_CHECKER).validate(log)
    return log


def sarif_results(result: Result) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = sarif_log(result)["runs"][0]["results"]
    return results


# -- many files, directories, exit status ------------------------------------------------------


def test_clean_layout_exits_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "clean.yaml", CLEAN)
    assert check(["clean.yaml"], tmp_path, monkeypatch).exit_code == 0


def test_one_failing_file_among_many_makes_the_exit_status_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "a.yaml", CLEAN)
    write(tmp_path, "b.yaml", OVERLAP)
    write(tmp_path, "c.yaml", CLEAN)
    result = check(["--format", "github", "a.yaml", "b.yaml", "c.yaml"], tmp_path, monkeypatch)
    assert result.exit_code == 1
    assert {line.split(",")[0] for line in result.stdout.splitlines()} == {"::error file=b.yaml"}


def test_directories_are_searched_for_yaml_and_yml_below_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "layouts/clean.yaml", CLEAN)
    write(tmp_path, "layouts/nested/deeper/broken.yml", OVERLAP)
    write(tmp_path, "layouts/notes.txt", "memslots: not a layout")
    result = check(["--format", "json", "layouts"], tmp_path, monkeypatch)
    assert result.exit_code == 1
    files = [r["file"] for r in json.loads(result.stdout)["results"]]
    assert files == ["layouts/clean.yaml", "layouts/nested/deeper/broken.yml"]


def test_warnings_pass_unless_strict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "ro.yaml", READONLY_DEVICE)
    assert check(["ro.yaml"], tmp_path, monkeypatch).exit_code == 0
    assert check(["--strict", "ro.yaml"], tmp_path, monkeypatch).exit_code == 1


def test_a_file_that_does_not_load_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "broken.yaml", "layout: 1\narch: [\n")
    result = check(["--format", "github", "broken.yaml"], tmp_path, monkeypatch)
    assert result.exit_code == 1
    assert result.stdout.startswith("::error file=broken.yaml,line=")
    assert "title=gpa-plan(yaml-syntax)::" in result.stdout


def test_a_missing_file_is_a_tool_execution_notification_in_sarif(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "overlap.yaml", OVERLAP)
    result = check(["--format", "sarif", "nowhere.yaml", "overlap.yaml"], tmp_path, monkeypatch)
    assert result.exit_code == 2
    assert result.stderr == "gpa-plan: cannot read nowhere.yaml: no such file or directory\n"
    run = sarif_log(result)["runs"][0]
    assert {
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in run["results"]
    } == {"overlap.yaml"}
    assert run["invocations"] == [
        {
            "executionSuccessful": False,
            "toolExecutionNotifications": [
                {
                    "level": "error",
                    "message": {"text": "cannot read nowhere.yaml: no such file or directory"},
                    "locations": [
                        {
                            "physicalLocation": {
                                "artifactLocation": {
                                    "uri": "nowhere.yaml",
                                    "uriBaseId": "%SRCROOT%",
                                }
                            }
                        }
                    ],
                }
            ],
        }
    ]


def test_a_run_that_read_every_file_has_no_sarif_invocations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "clean.yaml", CLEAN)
    result = check(["--format", "sarif", "clean.yaml"], tmp_path, monkeypatch)
    assert result.exit_code == 0
    assert "invocations" not in sarif_log(result)["runs"][0]


def test_a_missing_file_is_an_error_annotation_in_github_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "clean.yaml", CLEAN)
    result = check(["--format", "github", "clean.yaml", "no,where.yaml"], tmp_path, monkeypatch)
    assert result.exit_code == 2
    assert result.stdout == (
        "::error file=no%2Cwhere.yaml,title=gpa-plan::"
        "cannot read no,where.yaml: no such file or directory\n"
    )
    assert result.stderr == "gpa-plan: cannot read no,where.yaml: no such file or directory\n"


def test_json_stays_the_document_of_the_files_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "overlap.yaml", OVERLAP)
    result = check(["--format", "json", "overlap.yaml", "gone.yaml"], tmp_path, monkeypatch)
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert [r["file"] for r in document["results"]] == ["overlap.yaml"]
    assert document["summary"]["files"] == 1
    assert result.stderr == "gpa-plan: cannot read gone.yaml: no such file or directory\n"


# -- golden outputs, one per format ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "golden"),
    [
        ("text", "check-layouts.txt"),
        ("json", "check-layouts.json"),
        ("github", "check-layouts.github.txt"),
    ],
)
def test_check_output_matches_golden(
    fmt: str, golden: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = check(["--format", fmt, "layouts"], FIXTURES, monkeypatch)
    assert result.exit_code == 1
    assert_golden(golden, result.stdout)


def test_sarif_output_matches_golden(monkeypatch: pytest.MonkeyPatch) -> None:
    result = check(["--format", "sarif", "layouts"], FIXTURES, monkeypatch)
    assert result.exit_code == 1
    version_line = f'"version": "{gpa_plan.__version__}",'
    assert result.stdout.count(version_line) == 1
    assert_golden(
        "check-layouts.sarif.json",
        result.stdout.replace(version_line, '"version": "<gpa-plan version>",'),
    )


# -- github ------------------------------------------------------------------------------------


def test_github_escapes_data_as_actions_toolkit_does() -> None:
    assert github.escape_data("100% done\r\nnext: a,b") == "100%25 done%0D%0Anext: a,b"


def test_github_escapes_property_values_as_actions_toolkit_does() -> None:
    assert github.escape_property("a%b:c,d\ne\r") == "a%25b%3Ac%2Cd%0Ae%0D"


def test_github_annotation_escapes_percent_colon_comma_and_newline_in_the_file_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "odd%,:dir/new\nline.yaml", OVERLAP)
    result = check(["--format", "github", "odd%,:dir"], tmp_path, monkeypatch)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 2  # one command per finding: the newline did not split one
    assert lines[0].startswith(
        "::error file=odd%25%2C%3Adir/new%0Aline.yaml,line=11,col=11,"
        "title=gpa-plan(memslot-overlap)::memslot 'ram2'"
    )


def test_github_annotation_escapes_percent_and_newlines_in_the_message() -> None:
    finding = Finding("schema", ERROR, "100% wrong:\r\nsee a, b", "l.yaml", 2, 3)
    result = CheckResult("l.yaml", None, None, False, (), (finding,))
    assert github.render([result], Path.cwd()) == (
        "::error file=l.yaml,line=2,col=3,title=gpa-plan(schema)::100%25 wrong:%0D%0Asee a, b\n"
    )


def test_github_prints_nothing_for_clean_layouts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "clean.yaml", CLEAN)
    result = check(["--format", "github", "clean.yaml"], tmp_path, monkeypatch)
    assert (result.exit_code, result.stdout) == (0, "")


def test_github_warning_findings_become_warning_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "ro.yaml", READONLY_DEVICE)
    result = check(["--format", "github", "ro.yaml"], tmp_path, monkeypatch)
    assert result.stdout.startswith(
        "::warning file=ro.yaml,line=16,col=11,title=gpa-plan(device-shadowed)::mmio 'flash-ctrl'"
    )


def test_github_adds_a_notice_when_annotations_exceed_what_github_shows() -> None:
    findings = tuple(
        Finding("memslot-overlap", ERROR, f"overlap {i}", "l.yaml", i + 1, 1) for i in range(11)
    )
    result = CheckResult("l.yaml", "arm64", 40, True, (), findings)
    lines = github.render([result], Path.cwd()).splitlines()
    assert len(lines) == 12
    assert lines[-1].startswith("::notice title=gpa-plan::11 errors and 0 warnings; GitHub")


# -- several architectures ---------------------------------------------------------------------


def test_findings_under_several_arches_are_reported_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "gic.yaml", ARM64_GIC_IN_RAM)
    args = ["--arch", "arm64", "--arch", "x86_64", "gic.yaml"]
    annotations = check(["--format", "github", *args], tmp_path, monkeypatch).stdout
    assert annotations.count("title=gpa-plan(device-shadowed)") == 2
    results = sarif_results(check(["--format", "sarif", *args], tmp_path, monkeypatch))
    assert [r["ruleId"] for r in results] == [
        "device-wrong-arch",
        "device-shadowed",
        "device-shadowed",
    ]
    assert results[2]["properties"]["objects"][0] == "uart"
    assert results[2]["properties"]["arches"] == ["arm64", "x86_64"]


def test_a_finding_under_only_some_arches_says_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "gic.yaml", ARM64_GIC_IN_RAM)
    args = ["--format", "sarif", "--arch", "arm64", "--arch", "x86_64", "gic.yaml"]
    shadowed = sarif_results(check(args, tmp_path, monkeypatch))[1]
    assert shadowed["properties"]["objects"][0] == "gicd"
    assert shadowed["message"]["text"].endswith("(found under arm64 only)")
    assert shadowed["properties"]["arches"] == ["arm64"]


def test_a_device_left_out_under_another_arch_is_a_note_in_every_ci_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "gic.yaml", ARM64_GIC_IN_RAM)
    args = ["--arch", "arm64", "--arch", "x86_64", "gic.yaml"]
    sarif = check(["--format", "sarif", *args], tmp_path, monkeypatch)
    note = sarif_results(sarif)[0]
    # Information, not a problem: no alert level, and the exit status is the errors' alone.
    assert (note["ruleId"], note["kind"], note["level"]) == (
        "device-wrong-arch",
        "informational",
        "none",
    )
    assert note["locations"][0]["physicalLocation"]["region"] == {
        "startLine": 2,
        "startColumn": 7,
    }
    assert note["message"]["text"].startswith(
        "checked as x86_64, this arm64 layout's vgic-v3-dist 'gicd', vgic-v3-redist 'gicr' "
        "are left out"
    )
    github = check(["--format", "github", *args], tmp_path, monkeypatch)
    notices = [a for a in github.stdout.splitlines() if "device-wrong-arch" in a]
    assert [a.split(" ", 1)[0] for a in notices] == ["::notice"]
    assert "file=gic.yaml,line=2,col=7" in notices[0]
    assert github.exit_code == sarif.exit_code == 1  # the two device-shadowed errors


def test_a_broken_file_checked_under_two_arches_is_reported_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "broken.yaml", "layout: 1\narch: arm64\nmemslot: []\n")
    args = ["--format", "github", "--arch", "arm64", "--arch", "x86_64", "broken.yaml"]
    assert len(check(args, tmp_path, monkeypatch).stdout.splitlines()) == 1


# -- sarif -------------------------------------------------------------------------------------


def test_sarif_lists_every_rule_with_its_default_level(monkeypatch: pytest.MonkeyPatch) -> None:
    log = sarif_log(check(["--format", "sarif", "layouts"], FIXTURES, monkeypatch))
    driver = log["runs"][0]["tool"]["driver"]
    assert (driver["name"], driver["version"]) == ("gpa-plan", gpa_plan.__version__)
    assert [r["id"] for r in driver["rules"]] == list(RULES)
    for entry, rule in zip(driver["rules"], RULES.values(), strict=True):
        assert entry["shortDescription"]["text"] == rule.summary
        assert entry["fullDescription"]["text"] == rule.description
        assert entry["help"]["text"].startswith(rule.description)
        assert entry["defaultConfiguration"]["level"] == rule.severity


def test_sarif_results_point_at_their_rule_by_id_and_index(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = sarif_log(check(["--format", "sarif", "layouts"], FIXTURES, monkeypatch))
    run = log["runs"][0]
    assert run["columnKind"] == "unicodeCodePoints"
    rules = run["tool"]["driver"]["rules"]
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]


def test_sarif_of_clean_layouts_has_an_empty_result_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "clean.yaml", CLEAN)
    result = check(["--format", "sarif", "clean.yaml"], tmp_path, monkeypatch)
    assert result.exit_code == 0
    assert sarif_results(result) == []


def test_sarif_uri_is_relative_to_the_working_directory_and_percent_encoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "my layouts/ä #1.yaml", OVERLAP)
    result = check(["--format", "sarif", str(tmp_path / "my layouts")], tmp_path, monkeypatch)
    location = sarif_results(result)[0]["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {
        "uri": "my%20layouts/%C3%A4%20%231.yaml",
        "uriBaseId": "%SRCROOT%",
    }
    assert location["region"] == {"startLine": 11, "startColumn": 11}


def test_sarif_uri_outside_the_working_directory_is_an_absolute_file_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = write(tmp_path, "elsewhere/ov.yaml", OVERLAP)
    (tmp_path / "checkout").mkdir()
    result = check(["--format", "sarif", str(layout)], tmp_path / "checkout", monkeypatch)
    artifact = sarif_results(result)[0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert artifact == {"uri": layout.resolve().as_uri()}


def test_sarif_fingerprints_survive_lines_added_above(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "ov.yaml", OVERLAP)
    before = sarif_results(check(["--format", "sarif", "ov.yaml"], tmp_path, monkeypatch))
    write(tmp_path, "ov.yaml", "# a comment\n# and another\n" + OVERLAP)
    after = sarif_results(check(["--format", "sarif", "ov.yaml"], tmp_path, monkeypatch))
    assert [r["partialFingerprints"] for r in after] == [r["partialFingerprints"] for r in before]
    lines = [r["locations"][0]["physicalLocation"]["region"]["startLine"] for r in after]
    assert lines == [13, 19]


def test_sarif_fingerprints_are_unique_within_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    findings = tuple(
        Finding("schema", ERROR, "unknown key `x`", "l.yaml", line, 1) for line in (3, 7)
    )
    result = CheckResult("l.yaml", None, None, False, (), findings)
    document = sarif.sarif_document([result], Path.cwd(), "0")
    prints = [
        r["partialFingerprints"][sarif.FINGERPRINT_KEY] for r in document["runs"][0]["results"]
    ]
    assert len(set(prints)) == 2


def test_a_program_finding_is_reported_once_for_its_layout_without_an_arch_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "clean.yaml", CLEAN)
    write(tmp_path, "guest.elf", "not an ELF file")
    args = ["--format", "github", "--arch", "arm64", "--arch", "x86_64", "--elf", "guest.elf"]
    lines = check([*args, "clean.yaml"], tmp_path, monkeypatch).stdout.splitlines()
    unreadable = [line for line in lines if "title=gpa-plan(elf-unreadable)" in line]
    assert len(unreadable) == 1
    assert unreadable[0].startswith("::error file=guest.elf,line=1,col=1,")
    assert "only" not in unreadable[0]


@pytest.mark.parametrize("fmt", ["sarif", "json"])
def test_sarif_and_json_print_no_bidi_override_or_c1_control_raw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    # SARIF is written with ensure_ascii=False, which left these characters raw.
    name = "r\u202eam\x85x\x7fy\u2028z\u2066"
    write(
        tmp_path,
        "vm.yaml",
        "layout: 1\narch: arm64\nmemslots:\n"
        f"  - {{name: {json.dumps(name)}, base: 0, size: 4K}}\n"
        f"  - {{name: other, base: 0, size: 4K}}\n",
    )
    result = check(["--format", fmt, "vm.yaml"], tmp_path, monkeypatch)
    assert result.exit_code == 1
    assert printable(result.stdout.replace("\n", "")) == result.stdout.replace("\n", "")
    # The same document: the name, raw, in the objects a finding names.
    assert f'"{name}"' in json.dumps(json.loads(result.stdout), ensure_ascii=False)


def test_github_annotation_prints_no_control_or_bidi_character_raw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The toolkit's escaping covers only %, CR and LF: ESC (colours in GitHub's log), NEL, DEL
    # and U+202E in a path were printed raw.
    write(tmp_path, "d\x1b[31m\u202e\x85\x7f/vm.yaml", OVERLAP)
    result = check(["--format", "github", "."], tmp_path, monkeypatch)
    assert result.exit_code == 1
    assert printable(result.stdout.replace("\n", "")) == result.stdout.replace("\n", "")
    assert result.stdout.startswith(
        "::error file=d\\x1b[31m\\u202e\\x85\\x7f/vm.yaml,line=11,col=11,"
        "title=gpa-plan(memslot-overlap)::memslot 'ram2'"
    )
