"""Errors that carry the place in the layout file they are about."""

from __future__ import annotations

from typing import NamedTuple

# The rules a file that does not load is reported under (registered in gpa_plan.check.rules):
# YAML that does not parse, and a document that breaks the layout format.
YAML_SYNTAX = "yaml-syntax"
SCHEMA = "schema"


class Problem(NamedTuple):
    """One thing wrong with a layout file, at a 1-based line and column; ``rule`` is
    YAML_SYNTAX or SCHEMA."""

    rule: str
    message: str
    line: int
    column: int


class LayoutError(Exception):
    """A layout file that cannot be loaded or does not follow the format.

    ``problems`` lists every problem found (at least one), each with its position.
    """

    def __init__(self, path: str, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        first = problems[0]
        super().__init__(f"{path}:{first.line}:{first.column}: {first.message}")
