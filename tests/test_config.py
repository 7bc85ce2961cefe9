"""Rule selection: --select/--ignore/--strict, `.gpa-plan.yaml` and `[tool.gpa-plan]` in
pyproject.toml found by walking up from the working directory, the command line winning."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gpa_plan.cli import cli
from gpa_plan.config import MAX_SHOWN, Config, ConfigError, find_config, parse_rule_list

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


def test_the_yml_spelling_is_a_configuration_too(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / ".gpa-plan.yml").write_text("select: [memslot-overlap]\n")
    assert find_config(project / "layouts").source == project / ".gpa-plan.yml"
    result = check(["layouts"], project, monkeypatch)
    assert set(rules_reported(result)) == {"memslot-overlap", "schema"}


def test_both_spellings_in_one_directory_is_a_usage_error(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / ".gpa-plan.yml").write_text("strict: true\n")
    (project / ".gpa-plan.yaml").write_text("strict: false\n")
    result = check(["layouts"], project, monkeypatch)
    assert result.exit_code == 2
    assert ".gpa-plan.yaml and .gpa-plan.yml" in result.stderr
    assert "keep one of them" in result.stderr


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
        ("- select\n", "the configuration must be a mapping of keys to values, not a list"),
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


# -- configuration files are loaded as carefully as layouts ----------------------------------


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A few hundred bytes that expand to width**levels list items when aliases are followed."""
    lines = ["l0: &l0 [" + ", ".join(["memslot-overlap"] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    lines.append(f"select: *l{levels - 1}")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_at_once_with_a_short_message(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = alias_bomb()
    assert len(bomb) < 700
    (project / ".gpa-plan.yaml").write_text(bomb)
    result = check(["layouts/ro.yaml"], project, monkeypatch)
    assert result.exit_code == 2
    assert "aliases expand this value" in result.stderr
    assert len(result.stderr) < 500
    assert f"{project / '.gpa-plan.yaml'}:" in result.stderr


@pytest.mark.parametrize(
    ("text", "position", "expected"),
    [
        (
            "select: [memslot-overlap]\nstrict: true\nselect: [ucall-not-io]\n",
            "3:1",
            "duplicate key 'select' (first defined on line 1)",
        ),
        ("strict: !!bool true\n", "1:9", "YAML tag 'tag:yaml.org,2002:bool' is not allowed"),
        ("select: !rules [memslot-overlap]\n", "1:9", "YAML tag '!rules' is not allowed"),
        ("<<: {strict: true}\n", "1:1", "merge keys (`<<`) are not supported"),
        ("select: " + "[" * 70 + "]" * 70 + "\n", "1:", "nesting deeper than 64 levels"),
        ("strict: true\n---\nstrict: false\n", "2:1", "expected a single document"),
        ("strict\n", "1:1", "the configuration must be a mapping of keys to values, not a scal"),
        (
            "strict\nselect: [x]\n",
            "2:7",
            "cannot read the configuration: line 1 has no `key:`, so YAML reads it and this",
        ),
        ("a: &a [*a]\n", "1:", "an alias refers to the collection that contains it"),
    ],
)
def test_the_layout_loaders_guards_apply_to_the_configuration(
    project: Path, text: str, position: str, expected: str
) -> None:
    (project / ".gpa-plan.yaml").write_text(text)
    with pytest.raises(ConfigError) as raised:
        find_config(project)
    message = str(raised.value)
    assert message.startswith(f"{project / '.gpa-plan.yaml'}:{position}")
    assert expected in message


def test_bytes_that_are_not_utf8_are_refused_with_their_position(project: Path) -> None:
    (project / ".gpa-plan.yaml").write_bytes(b"# config\nstrict: \xff\n")
    with pytest.raises(ConfigError) as raised:
        find_config(project)
    assert str(raised.value) == (
        f"{project / '.gpa-plan.yaml'}:2:9: cannot read the configuration: byte 0xff is not "
        "UTF-8; the configuration must be UTF-8 text"
    )


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "---\n", "--- # empty\n...\n"])
def test_a_configuration_without_a_value_means_the_defaults(project: Path, text: str) -> None:
    (project / ".gpa-plan.yaml").write_text(text)
    assert find_config(project) == Config(source=project / ".gpa-plan.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("strict: true\nselct: [a]\n", ":2:1: unknown key `selct` (did you mean `select`?)"),
        ("strict: yes please\n", ":1:9: `strict` must be true or false, not 'yes please'"),
        (
            "ignore:\n  - memslot-overlap\n  - ucall-not-ioo\n",
            ":3:5: unknown rule `ucall-not-ioo` in `ignore` (did you mean `ucall-not-io`?)",
        ),
        ("ignore: [memslot-overlap, yaml-syntax]\n", ":1:27: rule `yaml-syntax` in `ignore`"),
        ("select: memslot-overlapp\n", ":1:9: unknown rule `memslot-overlapp` in `select`"),
    ],
)
def test_configuration_errors_name_the_line_and_column(
    project: Path, text: str, expected: str
) -> None:
    (project / ".gpa-plan.yaml").write_text(text)
    with pytest.raises(ConfigError) as raised:
        find_config(project)
    assert str(raised.value).startswith(f"{project / '.gpa-plan.yaml'}{expected}")


def test_a_huge_value_is_cut_short_in_the_message(project: Path) -> None:
    (project / ".gpa-plan.yaml").write_text("strict: [" + ", ".join(["1"] * 50_000) + "]\n")
    with pytest.raises(ConfigError) as raised:
        find_config(project)
    shown = str(raised.value).split("not ", 1)[1]
    assert shown == ("[" + ", ".join(["1"] * 50_000))[:MAX_SHOWN] + "..."


def test_a_huge_unknown_key_is_cut_short_and_not_matched(project: Path) -> None:
    (project / ".gpa-plan.yaml").write_text(f"'{'s' * 1000}': 1\n")  # YAML's longest key
    with pytest.raises(ConfigError) as raised:
        find_config(project)
    assert f"unknown key `{'s' * MAX_SHOWN}...`; allowed" in str(raised.value)


@pytest.mark.parametrize("where", ["config", "--select", "--ignore"])
def test_control_characters_in_a_rule_slug_are_escaped(
    project: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    slug = "evil\x1b[2J\n::error::x\u202e"
    if where == "config":
        (project / ".gpa-plan.yaml").write_text(f"select: [{json.dumps(slug)}]\n")
        args = ["layouts/ro.yaml"]
    else:
        args = [where, slug, "layouts/ro.yaml"]
    result = check(args, project, monkeypatch)
    assert result.exit_code == 2
    assert "unknown rule `evil\\x1b[2J\\n::error::x\\u202e`" in result.stderr
    assert not any(c in result.stderr for c in "\x1b\u202e")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("name", [".gpa-plan.yaml", "pyproject.toml"])
def test_a_fifo_named_like_a_configuration_is_refused_not_waited_on(
    project: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    os.mkfifo(project / name)
    result = check(["layouts/ro.yaml"], project, monkeypatch)
    assert result.exit_code == 2
    assert f"{project / name}: cannot read the configuration: it is a FIFO" in result.stderr


@pytest.mark.parametrize("name", [".gpa-plan.yaml", "pyproject.toml"])
def test_a_directory_named_like_a_configuration_is_refused(project: Path, name: str) -> None:
    (project / name).mkdir()
    with pytest.raises(ConfigError, match="cannot read the configuration: it is a directory"):
        find_config(project)


def test_a_pyproject_error_names_its_line_and_column(project: Path) -> None:
    (project / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.gpa-plan\n')
    with pytest.raises(ConfigError) as raised:
        find_config(project)
    assert str(raised.value).startswith(
        f"{project / 'pyproject.toml'}:3:15: cannot read the configuration: "
    )


def test_a_pyproject_starting_with_a_byte_order_mark_is_not_passed_over(project: Path) -> None:
    # TOML allows no BOM, so the file is broken for every tool: say so rather than drop the
    # table, which would quietly drop `strict = true`.
    (project / "pyproject.toml").write_bytes(b"\xef\xbb\xbf[tool.gpa-plan]\nstrict = true\n")
    with pytest.raises(ConfigError) as raised:
        find_config(project)
    assert str(raised.value) == (
        f"{project / 'pyproject.toml'}:1:1: cannot read the configuration: the file starts "
        "with a byte order mark (U+FEFF), which TOML does not allow; save it as UTF-8 without one"
    )


def test_bytes_that_are_not_utf8_matter_only_in_a_pyproject_that_may_hold_our_table(
    project: Path,
) -> None:
    (project / "pyproject.toml").write_bytes(b'[tool.ruff]\nx = "\xff"\n')
    assert find_config(project).source == project.parent / ".gpa-plan.yaml"
    (project / "pyproject.toml").write_bytes(b'[tool.gpa-plan]\nselect = ["\xff"]\n')
    with pytest.raises(ConfigError) as raised:
        find_config(project)
    assert str(raised.value) == (
        f"{project / 'pyproject.toml'}:2:12: cannot read the configuration: byte 0xff is not "
        "UTF-8; pyproject.toml must be UTF-8 text"
    )


def test_a_huge_pyproject_value_is_cut_short_and_escaped(project: Path) -> None:
    (project / "pyproject.toml").write_text(
        '[tool.gpa-plan]\nstrict = "\\u001b[2J' + "x" * 100_000 + '"\n'
    )
    with pytest.raises(ConfigError) as raised:
        find_config(project)
    assert str(raised.value) == (
        f"{project / 'pyproject.toml'} [tool.gpa-plan]: `strict` must be true or false, not "
        + ("'\\x1b[2J" + "x" * MAX_SHOWN)[:MAX_SHOWN]
        + "..."
    )


def test_a_huge_duplicate_key_does_not_make_a_huge_message(project: Path) -> None:
    key = "k" * 100_000
    (project / ".gpa-plan.yaml").write_text(f"? {key}\n: 1\n? {key}\n: 2\n")
    with pytest.raises(ConfigError) as raised:
        find_config(project)
    message = str(raised.value)
    assert ":3:3: duplicate key 'kkk" in message
    assert len(message) < len(str(project)) + 500 and message.endswith("k...")


def test_a_byte_that_is_not_utf8_is_said_at_its_place_after_a_byte_order_mark(
    project: Path,
) -> None:
    (project / ".gpa-plan.yaml").write_bytes(b"\xef\xbb\xbf# config\nstrict: \xff\n")
    with pytest.raises(ConfigError) as raised:
        find_config(project)
    assert str(raised.value) == (
        f"{project / '.gpa-plan.yaml'}:2:9: cannot read the configuration: byte 0xff is not "
        "UTF-8; the configuration must be UTF-8 text"
    )
