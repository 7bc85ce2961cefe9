"""Which rules `gpa-plan check` reports, and whether warnings fail: from `.gpa-plan.yaml` or
``[tool.gpa-plan]`` in `pyproject.toml`, merged with the command line.

Discovery walks up from the working directory and stops at the first directory with either
file; a `pyproject.toml` without a ``[tool.gpa-plan]`` table does not count (one that never
mentions gpa-plan is not even parsed, so it cannot be called broken), and when both
files are in one directory `.gpa-plan.yaml` wins. Keys: ``select``, ``ignore`` (lists of rule
slugs) and ``strict`` (boolean). Unknown keys, unknown rule slugs and wrong types are errors.

`yaml-syntax` and `schema` cannot be ignored: a file that does not load has nothing else to
check, so the reason is always reported (and ``select`` keeps them implicitly).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from gpa_plan.check.findings import Finding
from gpa_plan.check.run import RULES, CheckResult
from gpa_plan.suggest import closest

CONFIG_FILE = ".gpa-plan.yaml"
PYPROJECT = "pyproject.toml"
TOOL_TABLE = "gpa-plan"
KEYS = ("select", "ignore", "strict")
ALWAYS_REPORTED = frozenset({"yaml-syntax", "schema"})


# A line that could open or fill [tool.gpa-plan]: `[tool.gpa-plan]`, `[tool."gpa-plan"]`,
# `tool.gpa-plan.strict = ...` at the top level, or `gpa-plan = {...}` / `gpa-plan.x = ...`
# under `[tool]`. A file with none cannot have the table; `name = "gpa-plan"` is not one.
_MAY_HOLD_OUR_TABLE = re.compile(
    r"""^[ \t]*(?:\[[ \t]*)?(?:tool[ \t]*\.[ \t]*)?["']?gpa-plan["']?[ \t]*(?:[.=\]]|$)""",
    re.MULTILINE,
)


class ConfigError(Exception):
    """A configuration or rule-selection problem; the command line exits 2 on it."""


class Config(NamedTuple):
    """Resolved settings. ``select=None`` means every rule."""

    select: frozenset[str] | None = None
    ignore: frozenset[str] = frozenset()
    strict: bool = False
    source: Path | None = None

    def override(
        self,
        select: Sequence[str] = (),
        ignore: Sequence[str] = (),
        strict: bool | None = None,
    ) -> Config:
        """These settings with command-line values on top; empty or None means not given.

        The command line wins: ``--select`` replaces the configured selection and un-ignores
        the rules it names; ``--ignore`` adds to the configured ignores.
        """
        cli_select = _rules(parse_rule_list(select), "--select")
        cli_ignore = _ignorable(_rules(parse_rule_list(ignore), "--ignore"), "--ignore")
        return self._replace(
            select=cli_select or self.select,
            ignore=(self.ignore - cli_select) | cli_ignore,
            strict=self.strict if strict is None else strict,
        )

    def reports(self, rule: str) -> bool:
        """Whether findings of ``rule`` are kept."""
        if rule in ALWAYS_REPORTED:
            return True
        selected = self.select is None or rule in self.select
        return selected and rule not in self.ignore

    def apply(self, findings: Iterable[Finding]) -> tuple[Finding, ...]:
        """The findings of the rules this configuration reports."""
        return tuple(f for f in findings if self.reports(f.rule))

    def apply_to(self, results: Iterable[CheckResult]) -> list[CheckResult]:
        """Each result with only the findings this configuration reports."""
        return [r._replace(findings=self.apply(r.findings)) for r in results]

    def fails(self, results: Iterable[CheckResult]) -> bool:
        """Whether ``results`` mean exit status 1: any error, or with ``strict`` any warning."""
        return any(r.errors or (self.strict and r.warnings) for r in results)


def parse_rule_list(values: Iterable[str]) -> list[str]:
    """Rule slugs from repeated and comma-separated values: ``["a,b", "c"]`` -> a, b, c."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def find_config(start: Path) -> Config:
    """The configuration that applies in ``start``: the nearest one up the tree, else none."""
    directory = start.absolute()
    for candidate in (directory, *directory.parents):
        found = config_in(candidate)
        if found is not None:
            return found
    return Config()


def config_in(directory: Path) -> Config | None:
    """The configuration ``directory`` itself holds, if any."""
    dedicated = directory / CONFIG_FILE
    if dedicated.is_file():
        return load_yaml_config(dedicated)
    pyproject = directory / PYPROJECT
    if pyproject.is_file():
        return load_pyproject_config(pyproject)
    return None


def load_yaml_config(path: Path) -> Config:
    """Settings from a `.gpa-plan.yaml`; an empty file means the defaults."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the configuration: {_reason(err)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping of {_keys()}")
    return from_mapping(data, path, str(path))


def load_pyproject_config(path: Path) -> Config | None:
    """Settings from ``[tool.gpa-plan]`` of a `pyproject.toml`, or None if it has no table."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the configuration: {_reason(err)}") from None
    if not _MAY_HOLD_OUR_TABLE.search(text):
        return None  # most projects' pyproject.toml: not ours to parse (or to call broken)
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: cannot read the configuration: {_reason(err)}") from None
    tool = data.get("tool")
    table = tool.get(TOOL_TABLE) if isinstance(tool, dict) else None
    if table is None:
        return None
    where = f"{path} [tool.{TOOL_TABLE}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table of {_keys()}")
    return from_mapping(table, path, where)


def from_mapping(data: Mapping[str, Any], source: Path | None, where: str) -> Config:
    """Settings from already-parsed data; ``where`` names the place in error messages."""
    unknown = [str(key) for key in data if key not in KEYS]
    if unknown:
        hint = _did_you_mean(unknown[0], KEYS)
        raise ConfigError(f"{where}: unknown key `{unknown[0]}`{hint}; allowed: {_keys()}")
    select = _rules(_rule_list(data, "select", where), f"`select` in {where}")
    ignore = _rules(_rule_list(data, "ignore", where), f"`ignore` in {where}")
    strict = data.get("strict", False)
    if not isinstance(strict, bool):
        raise ConfigError(f"{where}: `strict` must be true or false, not {strict!r}")
    return Config(
        select=select if "select" in data else None,
        ignore=_ignorable(ignore, f"`ignore` in {where}"),
        strict=strict,
        source=source,
    )


def _rule_list(data: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = data.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: `{key}` must be a list of rule slugs, not {value!r}")
    return parse_rule_list(value)


def _rules(slugs: Sequence[str], where: str) -> frozenset[str]:
    for slug in slugs:
        if slug not in RULES:
            hint = _did_you_mean(slug, RULES)
            raise ConfigError(
                f"unknown rule `{slug}` in {where}{hint}; `gpa-plan rules` lists them all"
            )
    return frozenset(slugs)


def _ignorable(slugs: frozenset[str], where: str) -> frozenset[str]:
    blocked = sorted(slugs & ALWAYS_REPORTED)
    if blocked:
        raise ConfigError(
            f"rule `{blocked[0]}` in {where} cannot be ignored: a file that does not load "
            "has nothing else to check, so gpa-plan always says why"
        )
    return slugs


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    guess = closest(word, choices)
    return f" (did you mean `{guess}`?)" if guess else ""


def _keys() -> str:
    return ", ".join(KEYS)


def _reason(err: Exception) -> str:
    if isinstance(err, OSError):
        return err.strerror or str(err)
    return " ".join(str(err).split())
