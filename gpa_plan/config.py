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

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import yaml

from gpa_plan.check.findings import Finding
from gpa_plan.check.run import RULES, CheckResult
from gpa_plan.suggest import closest

if TYPE_CHECKING:
    from pathlib import Path

CONFIG_FILE = ".gpa-plan.yaml"
PYPROJECT = "pyproject.toml"
TOOL_TABLE = "gpa-plan"
KEYS = ("select", "ignore", "strict")
ALWAYS_REPORTED = frozenset({"yaml-syntax", "schema"})


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


def find_config(start: str | os.PathLike[str]) -> Config:
    """The configuration that applies in ``start``: the nearest one up the tree, else none."""
    directory = os.path.abspath(start)
    while True:
        found = config_in(directory)
        if found is not None:
            return found
        parent = os.path.dirname(directory)
        if parent == directory:
            return Config()
        directory = parent


def config_in(directory: str | os.PathLike[str]) -> Config | None:
    """The configuration ``directory`` itself holds, if any."""
    dedicated = os.path.join(directory, CONFIG_FILE)
    if os.path.isfile(dedicated):
        return load_yaml_config(_path(dedicated))
    pyproject = os.path.join(directory, PYPROJECT)
    if os.path.isfile(pyproject):
        return load_pyproject_config(pyproject)
    return None


def _path(name: str) -> Path:
    # pathlib only once a configuration file exists: a check without one does not load it.
    from pathlib import Path

    return Path(name)


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


def load_pyproject_config(path: str | os.PathLike[str]) -> Config | None:
    """Settings from ``[tool.gpa-plan]`` of a `pyproject.toml`, or None if it has no table."""
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the configuration: {_reason(err)}") from None
    if not may_hold_our_table(text):
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
    return from_mapping(table, _path(os.fspath(path)), where)


def may_hold_our_table(toml_text: str) -> bool:
    """Whether a line of ``toml_text`` could open or fill ``[tool.gpa-plan]``: the table header
    (also quoted or as a sub-table), ``gpa-plan = ...`` or ``gpa-plan.KEY = ...`` under
    ``[tool]``, or ``tool.gpa-plan.KEY = ...`` before any table. Conservative: a line inside a
    multi-line string may say yes, which only costs a parse. A text without any such line
    cannot hold the table, and is not parsed at all."""
    table: tuple[str, ...] = ()
    for line in toml_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            table = _dotted_key(stripped.lstrip("[").split("]", 1)[0])
            if table[:2] == _OUR_TABLE:
                return True
        elif "=" in stripped and (table + _dotted_key(stripped.split("=", 1)[0]))[:2] == _OUR_TABLE:
            return True
    return False


_OUR_TABLE = ("tool", TOOL_TABLE)


def _dotted_key(key: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in key.split("."))


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
