"""Whether a pyproject.toml may hold [tool.gpa-plan]: every TOML form of the table is seen,
and nothing else is taken for it (a header in a string, a key named gpa-plan elsewhere)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from gpa_plan.config import Config, find_config, may_hold_our_table

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

OUR_FORMS = [
    '[tool.gpa-plan]\nstrict = true\n',
    '[tool."gpa-plan"]\nstrict = true\n',
    "[ tool . 'gpa-plan' ]\nstrict = true\n",
    '[tool]\ngpa-plan = { strict = true }\n',
    '[tool]\n"gpa-plan" = { strict = true }\n',
    '[tool]\ngpa-plan.strict = true\n',
    'tool = { gpa-plan = { strict = true } }\n',
    'tool = { "gpa-plan" = { strict = true }, ruff = { line-length = 100 } }\n',
    'tool = { ruff = { extend = [\n  "a",\n] }, gpa-plan = { strict = true } }\n',
    'tool = { gpa-plan.strict = true }\n',
    'tool.gpa-plan.strict = true\n',
    'tool."gpa-plan".strict = true\n',
    'tool.gpa-plan = { strict = true }\n',
    '[tool."gpa\\u002dplan"]\nstrict = true\n',
    # What the key-per-line reading used to miss: a `[` line inside a nested array, a header
    # inside a multi-line string, both before a key under [tool].
    '[tool]\nmatrix = [\n  ["a", "b"],\n]\ngpa-plan = { strict = true }\n',
    '[tool]\nnote = """\n[project]\n"""\ngpa-plan = { strict = true }\n',
]

NOT_OURS = [
    '[project]\nname = "gpa-plan"\n[project.scripts]\ngpa-plan = "gpa_plan.cli:main"\n',
    '[tool.ruff]\nextend-exclude = ["gpa-plan"]\n',
    'readme = """\n[tool.gpa-plan]\nstrict = true\n"""\n',
    "readme = '''\n[tool.gpa-plan]\n'''\n",
    '# [tool.gpa-plan]\n[tool.ruff]\n',
    '[project]\ntool = { gpa-plan = { strict = true } }\n',
    '[tool.ruff]\ngpa-plan = { strict = true }\n',
    'tool = [{ gpa-plan = { strict = true } }]\n',
    'x = """ends with quotes"""""\n[tool.ruff]\ny = "[tool.gpa-plan]"\n',
]


@pytest.mark.parametrize("text", OUR_FORMS)
def test_every_form_of_the_table_is_seen_and_read(tmp_path: Path, text: str) -> None:
    assert may_hold_our_table(text)
    assert tomllib.loads(text)["tool"]["gpa-plan"] == {"strict": True}
    (tmp_path / "pyproject.toml").write_text(text)
    assert find_config(tmp_path) == Config(strict=True, source=tmp_path / "pyproject.toml")


@pytest.mark.parametrize("text", NOT_OURS)
def test_a_text_without_the_table_is_not_taken_for_it(text: str) -> None:
    assert "gpa-plan" not in tomllib.loads(text).get("tool", {})
    assert not may_hold_our_table(text)


def test_a_broken_file_whose_only_mention_is_in_a_string_is_not_parsed(tmp_path: Path) -> None:
    (tmp_path / ".gpa-plan.yaml").write_text("")
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text('readme = """\n[tool.gpa-plan]\n"""\n[tool.ruff\n')
    assert find_config(project).source == tmp_path / ".gpa-plan.yaml"


def test_nesting_too_deep_to_follow_is_left_to_the_parser(tmp_path: Path) -> None:
    from gpa_plan.config import ConfigError

    text = "tool = " + "[" * 100_000 + "\ngpa-plan = 1\n"
    assert may_hold_our_table(text)
    (tmp_path / "pyproject.toml").write_text(text)
    with pytest.raises(ConfigError, match="arrays or inline tables nest too deeply"):
        find_config(tmp_path)


# -- any document built from TOML's pieces -----------------------------------------------------

NAMES = st.sampled_from(["ruff", "mypy", "project", "gpa_plan", "gpa-plan-x", "x.y", "tool"])
TRAPS = st.sampled_from(["gpa-plan", "[tool.gpa-plan]", "tool.gpa-plan = 1", '"', "#", "\\"])


def basic_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def strings() -> st.SearchStrategy[str]:
    return st.one_of(
        TRAPS.map(basic_string),
        TRAPS.filter(lambda t: "'" not in t).map(lambda t: f"'{t}'"),
        TRAPS.map(lambda t: f'"""\n{t.replace(chr(92), chr(92) * 2)}\n"""'),
        TRAPS.map(lambda t: f"'''\n{t}\n'''"),
    )


def values() -> st.SearchStrategy[str]:
    scalars = st.one_of(
        strings(), st.integers().map(str), st.sampled_from(["true", "1979-05-27 07:32:00"])
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3).map(lambda items: "[\n  " + ",\n  ".join(items) + "\n]"),
            st.lists(st.tuples(st.sampled_from(["gpa-plan", '"gpa-plan"', "a", "b"]), inner),
                     max_size=3, unique_by=lambda kv: kv[0].strip('"')).map(
                lambda pairs: "{ " + ", ".join(f"{k} = {v}" for k, v in pairs) + " }"
            ),
        ),
        max_leaves=6,
    )


def noise(prefix: str) -> st.SearchStrategy[str]:
    """Key-value lines that define no table of their own."""
    return st.lists(values(), max_size=3).map(
        lambda vs: "".join(f"{prefix}{i} = {v} # [tool.gpa-plan]\n" for i, v in enumerate(vs))
    )


@st.composite
def documents(draw: st.DrawFn) -> str:
    parts = [draw(noise("top"))]
    ours = draw(st.sampled_from([None, *OUR_FORMS]))
    if ours is not None and not ours.startswith("["):
        parts.append(ours)  # a top-level form must come before any header
    tables = draw(st.lists(NAMES, max_size=3, unique=True))
    for name in tables:
        header = f'[tool."{name}"]' if draw(st.booleans()) else f'[project."{name}"]'
        parts.append(f"{header}\n" + draw(noise("k")))
    if ours is not None and ours.startswith("["):
        parts.append(ours + draw(noise("k")))
    return "".join(parts)


@given(documents())
def test_the_scan_agrees_with_the_parser(text: str) -> None:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        assume(False)
        raise
    tool = data.get("tool")
    assert may_hold_our_table(text) == (isinstance(tool, dict) and "gpa-plan" in tool)
