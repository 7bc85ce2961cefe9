"""The rule registry, and what every rule function gets to look at.

A rule is one small function registered with ``@rule(slug, severity, summary)``; its docstring
is the long description that ``gpa-plan rules`` prints. Rules only read: the resolved layout,
the architecture, the partition and the document's positions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, NamedTuple

from gpa_plan.arch.base import ArchSpec
from gpa_plan.check.findings import ERROR, NOTE, WARNING, Finding
from gpa_plan.check.partition import Region
from gpa_plan.elf import PHYSICAL
from gpa_plan.layout.loader import Document
from gpa_plan.layout.resolved import DeviceEntry, EntryPath, ResolvedLayout

if TYPE_CHECKING:
    from gpa_plan.elf.program import Program, ProgramError


class RuleContext(NamedTuple):
    file: str
    doc: Document
    layout: ResolvedLayout
    arch: ArchSpec
    regions: list[Region]
    # (message, entry path) for each `auto` entry the planner could not place
    placement_errors: tuple[tuple[str, EntryPath], ...] = ()
    # guest programs given with `check --elf`, loaded as `elf_mode` says (gpa_plan.elf)
    programs: tuple[Program, ...] = ()
    program_errors: tuple[ProgramError, ...] = ()
    elf_mode: str = PHYSICAL
    # devices of the layout's own arch that `arch` does not have: not created, left out of
    # `layout` (gpa_plan.layout.resolved.created_on)
    left_out: tuple[DeviceEntry, ...] = ()

    def finding(
        self,
        rule: str,
        message: str,
        path: tuple[str | int, ...],
        field: str | None = None,
        objects: Iterable[str] = (),
        severity: str | None = None,
    ) -> Finding:
        full: tuple[str | int, ...] = (*path, field) if field is not None else path
        line, column = self.doc.position(full)
        return Finding(
            rule,
            severity or RULES[rule].severity,
            message,
            self.file,
            line,
            column,
            tuple(objects),
        )


RuleCheck = Callable[[RuleContext], Iterator[Finding]]


class Rule(NamedTuple):
    slug: str
    severity: str
    summary: str
    description: str
    check: RuleCheck | None
    # Other severities some of its findings take, each with when: ((WARNING, "when ..."),).
    also: tuple[tuple[str, str], ...] = ()

    @property
    def severities(self) -> tuple[str, ...]:
        return (self.severity, *(severity for severity, _ in self.also))

    @property
    def severity_text(self) -> str:
        """``error``, or ``error; warning when ...`` for a rule with several severities."""
        return "; ".join([self.severity, *(f"{s} {when}" for s, when in self.also)])


RULES: dict[str, Rule] = {}


def _register(
    slug: str,
    severity: str,
    summary: str,
    description: str,
    check: RuleCheck | None,
    also: tuple[tuple[str, str], ...] = (),
) -> None:
    if slug in RULES:
        raise ValueError(f"rule {slug} registered twice")
    RULES[slug] = Rule(slug, severity, summary, " ".join(description.split()), check, also)


def rule(
    slug: str, severity: str, summary: str, *, also: tuple[tuple[str, str], ...] = ()
) -> Callable[[RuleCheck], RuleCheck]:
    """Register ``check`` as rule ``slug``; ``also`` lists the other severities its findings
    may take, with when (what `gpa-plan rules` and SARIF's rule list say)."""

    def register(check: RuleCheck) -> RuleCheck:
        _register(slug, severity, summary, check.__doc__ or summary, check, also)
        return check

    return register


_register(
    "yaml-syntax",
    ERROR,
    "the file is not well-formed YAML (or not UTF-8)",
    """The file could not be read as one YAML document of UTF-8 text: a syntax error, bytes
    that are not UTF-8, several documents, an explicit YAML tag, a merge key, aliases that
    expand out of proportion, or nesting too deep. Nothing else is checked until it loads (an
    empty file or one that is not a mapping is a `schema` error).""",
    None,
)
_register(
    "schema",
    ERROR,
    "a value or key breaks the layout format (type, unknown or duplicate key, bad number, "
    "duplicate name)",
    """A key the format does not know, a duplicate key or name, a value of the wrong type, a
    number that is signed (-0, +8K), beyond 64 bits, a fraction that is not whole bytes (0.3K,
    1.5), in decimal units (4MB: write 4M or 4MiB) or a YAML 1.1 trap (010, 1:30), or a field
    that does not fit its device type. docs/numbers.md has the number grammar; `gpa-plan
    schema` prints the format as JSON Schema.""",
    None,
)

__all__ = ["ERROR", "NOTE", "RULES", "WARNING", "Rule", "RuleContext", "rule"]
