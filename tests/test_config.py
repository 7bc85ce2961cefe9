"""Rule selection: --select/--ignore/--strict, `.gpa-plan.yaml` and `[tool.gpa-plan]` in
pyproject.toml found by walking up from the working directory, the command line winning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gpa_plan.cli import cli
from gpa_plan.config import Config, ConfigError, find_config, parse_rule_list

FIXTURES = Path(__file__).parent / "data" / "ci" / "layouts"
OVERLAP = (FIXTURES / "overlap.yaml").read_text()  # memslot-overlap + ucall-not-io errors
READONLY_DEVICE = (FIXTURES / "readonly-device.yaml").read_text()  # a device-shadowed warning
MISSPELT = (FIXTURES / "misspelt.yaml").read_text()  # a schema error


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A checkout with one layout of each kind. An empty `.gpa-plan.yaml` just above it ends
    the search there, whatever the machine has further up."""
    root = tmp_path / "repo"
    (root / "layouts").mkdir(parents=True)
    (root / "layouts" / "overlap.yaml").write_text(OVERLAP)
    (root / "layouts" / "ro.yaml").write_text(READONLY_DEVICE)
    (root / "layouts" / "misspelt.yaml").write_text(MISSPELT)
    (tmp_path / ".gpa-plan.yaml").write_text("")
    return root


def check(args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> Result:
    monkeypatch.chdir(cwd)
    return CliRunner().invoke(cli, ["check", "--format", "json", *args])


def rules_reported(result: Result) -> list[str]:
    document = json.loads(result.stdout)
    return [f["rule"] for r in document["results"] for f in r["findings"]]


# -- discovery ---------------------------------------------------------------------------------


def test_no_configuration_means_every_rule_and_not_strict(project: Path) -> None:
    assert find_config(project)._replace(source=None) == Config()


def test_pyproject_table_is_found(project: Path) -> None:
    (project / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.gpa-plan]\nignore = ["ucall-not-io"]\nstrict = true\n'
    )
    config = find_config(project)
    assert (config.select, config.ignore, config.strict) == (
        None,
        frozenset({"ucall-not-io"}),
        True,
    )
    assert config.source == project / "pyproject.toml"


def test_dedicated_file_is_found_walking_up(project: Path) -> None:
    (project / ".gpa-plan.yaml").write_text("select: [memslot-overlap]\n")
    deep = project / "layouts" / "arm64" / "boards"
    deep.mkdir(parents=True)
    config = find_config(deep)
    assert config.select == frozenset({"memslot-overlap"})
    assert config.source == project / ".gpa-plan.yaml"


def test_pyproject_without_our_table_does_not_stop_the_walk(project: Path) -> None:
    (project / ".gpa-plan.yaml").write_text("strict: true\n")
    sub = project / "tools"
    sub.mkdir()
    (sub / "pyproject.toml").write_text("[tool.ruff]\nline-length = 100\n")
    assert find_config(sub).source == project / ".gpa-plan.yaml"


def test_a_pyproject_that_never_mentions_gpa_plan_is_not_parsed(project: Path) -> None:
    # Someone else's broken file is not a gpa-plan configuration error.
    (project / "pyproject.toml").write_text("[tool.ruff\nline-length = = 100\n")
    assert find_config(project).source == project.parent / ".gpa-plan.yaml"


def test_gpa_plan_as_a_value_is_not_our_table(project: Path) -> None:
    (project / "pyproject.toml").write_text(
        '[project]\nname = "gpa-plan"\ndependencies = ["gpa-plan>=0.1"]\n'
        '[project.scripts]\ngpa-plan = "gpa_plan.cli:main"\n[tool.ruff\n'
    )
    assert find_config(project).source == project.parent / ".gpa-plan.yaml"


def test_a_broken_pyproject_that_mentions_gpa_plan_is_an_error(project: Path) -> None:
    (project / "pyproject.toml").write_text("[tool.gpa-plan\nstrict = true\n")
    with pytest.raises(ConfigError, match="cannot read the configuration"):
        find_config(project)


def test_the_nearest_configuration_wins(project: Path) -> None:
    (project / ".gpa-plan.yaml").write_text("strict: true\n")
    sub = project / "vmm"
    sub.mkdir()
    (sub / "pyproject.toml").write_text('[tool.gpa-plan]\nignore = ["memslot-overlap"]\n')
    config = find_config(sub)
    assert (config.strict, config.source) == (False, sub / "pyproject.toml")


def test_dedicated_file_wins_over_pyproject_in_the_same_directory(project: Path) -> None:
    (project / "pyproject.toml").write_text("[tool.gpa-plan]\nstrict = true\n")
    (project / ".gpa-plan.yaml").write_text("strict: false\n")
    assert find_config(project).source == project / ".gpa-plan.yaml"


def test_empty_dedicated_file_means_defaults(project: Path) -> None:
    (project / ".gpa-plan.yaml").write_text("# nothing yet\n")
    assert find_config(project) == Config(source=project / ".gpa-plan.yaml")


# -- bad configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("selct: [memslot-overlap]\n", "unknown key `selct` (did you mean `select`?)"),
        ("ignore: [memslot-overlapp]\n", "unknown rule `memslot-overlapp` in `ignore`"),
        ("strict: maybe\n", "`strict` must be true or false, not 'maybe'"),
        ("select: {memslot-overlap: true}\n", "`select` must be a list of rule slugs"),
        ("ignore: [schema]\n", "rule `schema` in `ignore`"),
        ("- select\n", "must be a mapping of select, ignore, strict"),
        ("select: [\n", "cannot read the configuration"),
    ],
)
def test_bad_dedicated_file_is_a_config_error(project: Path, text: str, expected: str) -> None:
    (project / ".gpa-plan.yaml").write_text(text)
    with pytest.raises(ConfigError) as raised:
        find_config(project)
    assert expected in str(raised.value)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('[tool.gpa-plan]\nexclude = ["x"]\n', "unknown key `exclude`"),
        ('[tool.gpa-plan]\nselect = ["no-such-rule"]\n', "unknown rule `no-such-rule`"),
        ("[tool]\ngpa-plan = 1\n", "must be a table of select, ignore, strict"),
        ("[tool.gpa-plan\n", "cannot read the configuration"),
    ],
)
def test_bad_pyproject_table_is_a_config_error(project: Path, table: str, expected: str) -> None:
    (project / "pyproject.toml").write_text(table)
    with pytest.raises(ConfigError) as raised:
        find_config(project)
    assert expected in str(raised.value)


def test_unknown_config_key_exits_2_with_a_clear_message(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "pyproject.toml").write_text('[tool.gpa-plan]\nignored = ["ucall-not-io"]\n')
    result = check(["layouts"], project, monkeypatch)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "unknown key `ignored` (did you mean `ignore`?)" in result.stderr
    assert str(project / "pyproject.toml") in result.stderr


def test_unknown_rule_in_config_exits_2(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / ".gpa-plan.yaml").write_text("select: [ucall-not-ioo]\n")
    result = check(["layouts"], project, monkeypatch)
    assert result.exit_code == 2
    assert "unknown rule `ucall-not-ioo`" in result.stderr
    assert "did you mean `ucall-not-io`?" in result.stderr


@pytest.mark.parametrize("option", ["--select", "--ignore"])
def test_unknown_rule_on_the_command_line_exits_2(
    project: Path, monkeypatch: pytest.MonkeyPatch, option: str
) -> None:
    result = check([option, "memslot-overlap,memslot-overlapp", "layouts"], project, monkeypatch)
    assert result.exit_code == 2
    assert f"unknown rule `memslot-overlapp` in {option}" in result.stderr
    assert "`gpa-plan rules` lists them all" in result.stderr


@pytest.mark.parametrize("rule", ["schema", "yaml-syntax"])
def test_load_errors_cannot_be_ignored(
    project: Path, monkeypatch: pytest.MonkeyPatch, rule: str
) -> None:
    result = check(["--ignore", rule, "layouts/misspelt.yaml"], project, monkeypatch)
    assert result.exit_code == 2
    assert f"rule `{rule}` in --ignore cannot be ignored" in result.stderr


# -- selection changes what is reported and the exit status ------------------------------------


def test_ignore_drops_findings_before_the_exit_status(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert check(["layouts/overlap.yaml"], project, monkeypatch).exit_code == 1
    result = check(
        ["--ignore", "memslot-overlap", "--ignore", "ucall-not-io", "layouts/overlap.yaml"],
        project,
        monkeypatch,
    )
    assert (result.exit_code, rules_reported(result)) == (0, [])
    assert json.loads(result.stdout)["summary"]["errors"] == 0


def test_select_reports_only_the_named_rules(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = check(["--select", "ucall-not-io", "layouts/overlap.yaml"], project, monkeypatch)
    assert (result.exit_code, rules_reported(result)) == (1, ["ucall-not-io"])
    result = check(["--select", "device-overlap", "layouts/overlap.yaml"], project, monkeypatch)
    assert (result.exit_code, rules_reported(result)) == (0, [])


def test_select_always_keeps_load_errors(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = check(["--select", "memslot-overlap", "layouts/misspelt.yaml"], project, monkeypatch)
    assert (result.exit_code, rules_reported(result)) == (1, ["schema"])


def test_config_ignore_applies_to_the_exit_status(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "pyproject.toml").write_text(
        '[tool.gpa-plan]\nignore = ["memslot-overlap", "ucall-not-io"]\n'
    )
    assert check(["layouts/overlap.yaml"], project, monkeypatch).exit_code == 0


def test_command_line_select_wins_over_config_ignore(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / ".gpa-plan.yaml").write_text("ignore: [memslot-overlap, ucall-not-io]\n")
    result = check(["--select", "memslot-overlap", "layouts/overlap.yaml"], project, monkeypatch)
    assert (result.exit_code, rules_reported(result)) == (1, ["memslot-overlap"])


def test_command_line_select_replaces_config_select(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / ".gpa-plan.yaml").write_text("select: [memslot-overlap]\n")
    result = check(["--select", "ucall-not-io", "layouts/overlap.yaml"], project, monkeypatch)
    assert rules_reported(result) == ["ucall-not-io"]


def test_command_line_ignore_wins_over_config_select(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / ".gpa-plan.yaml").write_text("select: [memslot-overlap]\n")
    result = check(["--ignore", "memslot-overlap", "layouts/overlap.yaml"], project, monkeypatch)
    assert (result.exit_code, rules_reported(result)) == (0, [])


def test_config_strict_fails_on_warnings_and_no_strict_wins(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert check(["layouts/ro.yaml"], project, monkeypatch).exit_code == 0
    (project / ".gpa-plan.yaml").write_text("strict: true\n")
    assert check(["layouts/ro.yaml"], project, monkeypatch).exit_code == 1
    assert check(["--no-strict", "layouts/ro.yaml"], project, monkeypatch).exit_code == 0


def test_ignoring_the_warning_rule_passes_strict(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--strict", "--ignore", "device-shadowed", "layouts/ro.yaml"]
    assert check(args, project, monkeypatch).exit_code == 0


def test_configuration_is_found_from_a_subdirectory(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "pyproject.toml").write_text('[tool.gpa-plan]\nignore = ["ucall-not-io"]\n')
    result = check(["overlap.yaml"], project / "layouts", monkeypatch)
    assert rules_reported(result) == ["memslot-overlap"]


def test_rule_lists_may_be_repeated_and_comma_separated() -> None:
    assert parse_rule_list(["a,b", " c ", "", "d,,"]) == ["a", "b", "c", "d"]


def test_override_keeps_config_values_the_command_line_does_not_give() -> None:
    base = Config(select=frozenset({"memslot-overlap"}), strict=True)
    assert base.override() == base
    assert base.override(strict=False).strict is False
