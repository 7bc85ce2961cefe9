"""Which rules `gpa-plan check` reports, and whether warnings fail: from `.gpa-plan.yaml` or
``[tool.gpa-plan]`` in `pyproject.toml`, merged with the command line.

Discovery walks up from the working directory and stops at the first directory with either
file (`.gpa-plan.yml` is read like `.gpa-plan.yaml`; a directory with both is an error); a
`pyproject.toml` without a ``[tool.gpa-plan]`` table does not count (one whose keys cannot
define it is not even parsed, so it cannot be called broken), and when both files are in one
directory `.gpa-plan.yaml` wins. Keys: ``select``, ``ignore`` (lists of rule
slugs) and ``strict`` (boolean). Unknown keys, unknown rule slugs and wrong types are errors.

`yaml-syntax` and `schema` cannot be ignored: a file that does not load has nothing else to
check, so the reason is always reported (and ``select`` keeps them implicitly).

Both files are read like a layout (``gpa_plan.inputs``: a FIFO, device or directory of that
name is refused, not waited on) and `.gpa-plan.yaml` is loaded with every guard of the layout
loader (no aliases that expand out of proportion, no duplicate keys, tags or deep nesting).
Values and slugs echoed in messages are escaped and cut to ``MAX_SHOWN`` characters.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from gpa_plan.check.findings import Finding
from gpa_plan.check.run import RULES, CheckResult
from gpa_plan.inputs import InputError, read_input, utf8_error_position
from gpa_plan.layout.errors import SCHEMA, YAML_SYNTAX
from gpa_plan.printable import printable
from gpa_plan.suggest import closest

if TYPE_CHECKING:
    from pathlib import Path

    from gpa_plan.layout.loader import Document

CONFIG_FILE = ".gpa-plan.yaml"
# Both spellings are accepted, as YAML tools do; one directory holding both is ambiguous.
CONFIG_FILES = (CONFIG_FILE, ".gpa-plan.yml")
PYPROJECT = "pyproject.toml"
TOOL_TABLE = "gpa-plan"
KEYS = ("select", "ignore", "strict")
ALWAYS_REPORTED = frozenset({YAML_SYNTAX, SCHEMA})
# A value, key or slug echoed in a message is cut to this many characters (then "...").
MAX_SHOWN = 60
_MAX_LOADER_MESSAGE = 400


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
        cli_select = _option_rules(select, "--select")
        cli_ignore = _option_rules(ignore, "--ignore")
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
    """The configuration ``directory`` itself holds, if any.

    Anything named like a configuration file counts, so one that is not a regular file (a
    FIFO, a directory, a dangling link) is an error rather than silently passed over."""
    named = (os.path.join(directory, name) for name in CONFIG_FILES)
    dedicated = [path for path in named if os.path.lexists(path)]
    if len(dedicated) > 1:
        raise ConfigError(
            f"{printable(os.fspath(directory))}: both {' and '.join(CONFIG_FILES)} are here; "
            "gpa-plan would not know which one applies: keep one of them"
        )
    if dedicated:
        return load_yaml_config(_path(dedicated[0]))
    pyproject = os.path.join(directory, PYPROJECT)
    if os.path.lexists(pyproject):
        return load_pyproject_config(pyproject)
    return None


def _path(name: str) -> Path:
    # pathlib only once a configuration file exists: a check without one does not load it.
    from pathlib import Path

    return Path(name)


def load_yaml_config(path: Path) -> Config:
    """Settings from a `.gpa-plan.yaml` (or `.yml`); an empty file means the defaults."""
    from gpa_plan.layout.errors import LayoutError
    from gpa_plan.layout.loader import load_mapping

    name = printable(str(path))
    try:
        document = load_mapping(_read(path), name, "the configuration")
    except LayoutError as err:
        problem = err.problems[0]
        what = "cannot read the configuration: " if problem.rule == YAML_SYNTAX else ""
        # The loader quotes keys and tags in full; an explicit YAML key may be megabytes long.
        message = _text(problem.message, limit=_MAX_LOADER_MESSAGE)
        raise ConfigError(f"{name}:{problem.line}:{problem.column}: {what}{message}") from None
    if document is None:
        return Config(source=path)
    return from_mapping(document.data, path, name, document)


def load_pyproject_config(path: str | os.PathLike[str]) -> Config | None:
    """Settings from ``[tool.gpa-plan]`` of a `pyproject.toml`, or None if it has no table.

    The table may be written in any form TOML allows: a ``[tool.gpa-plan]`` header, an inline
    table (``tool = {gpa-plan = {...}}``, ``gpa-plan = {...}`` under ``[tool]``) or dotted keys
    (``tool.gpa-plan.select = [...]``)."""
    raw = _read(path)
    name = printable(os.fspath(path))
    # A byte order mark is not TOML, but would hide a table the file was meant to hold.
    if not may_hold_our_table(raw.decode("utf-8", "replace").removeprefix("\ufeff")):
        return None  # most projects' pyproject.toml: not ours to parse (or to call broken)
    text = _utf8(raw, name)
    if text.startswith("\ufeff"):
        raise ConfigError(
            f"{name}:1:1: cannot read the configuration: the file starts with a byte order "
            "mark (U+FEFF), which TOML does not allow; save it as UTF-8 without one"
        )
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(_toml_error(name, err)) from None
    except RecursionError:
        raise ConfigError(
            f"{name}: cannot read the configuration: arrays or inline tables nest too deeply"
        ) from None
    tool = data.get("tool")
    table = tool.get(TOOL_TABLE) if isinstance(tool, dict) else None
    if table is None:
        return None
    where = f"{name} [tool.{TOOL_TABLE}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table of {_keys()}, not {_shown(table)}")
    return from_mapping(table, _path(os.fspath(path)), where)


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        return read_input(os.fspath(path))
    except InputError as err:
        raise ConfigError(
            f"{printable(err.path)}: cannot read the configuration: {err.reason}"
        ) from None


def _utf8(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line, column = utf8_error_position(raw, err)
        raise ConfigError(
            f"{name}:{line}:{column}: cannot read the configuration: byte "
            f"0x{raw[err.start]:02x} is not UTF-8; pyproject.toml must be UTF-8 text"
        ) from None


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def _toml_error(name: str, err: ValueError) -> str:
    message = " ".join(str(err).split())
    found = _TOML_POSITION.search(message)
    where = f"{name}:{found[1]}:{found[2]}" if found else name
    reason = message[: found.start()] if found else message
    return f"{where}: cannot read the configuration: {printable(reason)}"


def may_hold_our_table(toml_text: str) -> bool:
    """Whether ``toml_text`` may define ``[tool.gpa-plan]`` in any form TOML allows; a text
    that cannot is not parsed at all (see gpa_plan.toml_keys)."""
    from gpa_plan.toml_keys import may_define

    return may_define(toml_text, ("tool", TOOL_TABLE))


class _Place(NamedTuple):
    """Where settings come from, for messages: the file, and its node graph when YAML."""

    name: str
    document: Document | None = None

    def at(self, *path: str | int, key: bool = False) -> str:
        if self.document is None:
            return self.name
        line, column = self.document.position(path, key=key)
        return f"{self.name}:{line}:{column}"


def from_mapping(
    data: Mapping[Any, Any], source: Path | None, where: str, document: Document | None = None
) -> Config:
    """Settings from already-parsed data; ``where`` names the place in error messages, and
    ``document`` (the loaded YAML) adds the line and column of each value."""
    place = _Place(where, document)
    unknown = [key for key in data if key not in KEYS]
    if unknown:
        hint = _did_you_mean(str(unknown[0]), KEYS)
        raise ConfigError(
            f"{place.at(unknown[0], key=True)}: unknown key `{_text(str(unknown[0]))}`{hint}; "
            f"allowed: {_keys()}"
        )
    select = _config_rules(data, "select", place)
    ignore = _config_rules(data, "ignore", place)
    strict = data.get("strict", False)
    if not isinstance(strict, bool):
        raise ConfigError(
            f"{place.at('strict')}: `strict` must be true or false, not {_shown(strict)}"
        )
    return Config(
        select=select if "select" in data else None,
        ignore=ignore,
        strict=strict,
        source=source,
    )


def _config_rules(data: Mapping[Any, Any], key: str, place: _Place) -> frozenset[str]:
    value = data.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(
            f"{place.at(key)}: `{key}` must be a list of rule slugs, not {_shown(value)}"
        )
    slugs: set[str] = set()
    for index, item in enumerate(value):
        for slug in parse_rule_list([item]):
            problem = _rule_problem(slug, f"`{key}`", ignoring=key == "ignore")
            if problem:
                at = place.at(key, index) if isinstance(data[key], list) else place.at(key)
                raise ConfigError(f"{at}: {problem}")
            slugs.add(slug)
    return frozenset(slugs)


def _option_rules(values: Sequence[str], option: str) -> frozenset[str]:
    slugs = parse_rule_list(values)
    for slug in slugs:
        problem = _rule_problem(slug, option, ignoring=option == "--ignore")
        if problem:
            raise ConfigError(problem)
    return frozenset(slugs)


def _rule_problem(slug: str, context: str, *, ignoring: bool) -> str | None:
    if slug not in RULES:
        hint = _did_you_mean(slug, RULES)
        return f"unknown rule `{_text(slug)}` in {context}{hint}; `gpa-plan rules` lists them all"
    if ignoring and slug in ALWAYS_REPORTED:
        return (
            f"rule `{slug}` in {context} cannot be ignored: a file that does not load has "
            "nothing else to check, so gpa-plan always says why"
        )
    return None


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    if len(word) > MAX_SHOWN:
        return ""  # nothing that long is a misspelt slug or key, and matching it costs time
    guess = closest(word, choices)
    return f" (did you mean `{guess}`?)" if guess else ""


def _text(text: str, limit: int = MAX_SHOWN) -> str:
    """``text`` safe to print in a message: escaped, and cut to ``limit`` characters."""
    shown = printable(text)
    return shown if len(shown) <= limit else shown[:limit] + "..."


def _shown(value: object) -> str:
    return _text(repr(value))


def _keys() -> str:
    return ", ".join(KEYS)
