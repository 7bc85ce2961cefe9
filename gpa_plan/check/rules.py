"""The rule registry, and what every rule function gets to look at.

A rule is one small function registered with ``@rule(slug, severity, summary)``; its docstring
is the long description that ``gpa-plan rules`` prints. Rules only read: the resolved layout,
the architecture, the partition and the document's positions.

The slug is written once, in the registration. The decorator gives back the registered
``Rule``, and its ``check`` runs the function with ``ctx.rule`` set to that rule, so
``ctx.finding(message, path, ...)`` takes the slug and severity from it. Code outside a rule
that names one uses the ``Rule`` (``memslot_overlap.slug``), never a copy of its slug.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import wraps
from typing import TYPE_CHECKING, NamedTuple

from gpa_plan.arch.base import ArchSpec
from gpa_plan.check.findings import ERROR, NOTE, WARNING, Finding
from gpa_plan.check.partition import Region
from gpa_plan.elf import PHYSICAL
from gpa_plan.layout.errors import SCHEMA, YAML_SYNTAX
from gpa_plan.layout.loader import Document
from gpa_plan.layout.resolved import DeviceEntry, EntryPath, ResolvedLayout

if TYPE_CHECKING:
    from gpa_plan.check.declared import Declared
    from gpa_plan.elf.program import Program, ProgramError
    from gpa_plan.host_profile import HostProfile


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
    # the rule whose check runs (set by Rule.check): its findings carry its slug
    rule: Rule | None = None
    # the host the layout runs on (`--host FILE`), when it is of ``arch``: its facts make
    # host-dependent findings exact
    host: HostProfile | None = None
    # `check --layout DECLARED`: the declared layout merged into this one (a recording), and
    # where the merged entries come from (gpa_plan.check.declared)
    declared: Declared | None = None

    def host_fact(self, name: str | None) -> object:
        """The host profile's value of fact ``name``; None without a profile, or when the
        profile does not know it."""
        if self.host is None or name is None:
            return None
        value: object = self.host.fact(name)
        return value

    @property
    def running(self) -> Rule:
        """The rule whose check runs; a rule function called other than through its
        ``Rule.check`` has none, and making a finding there is a mistake in the code."""
        if self.rule is None:
            raise RuntimeError("a finding made outside a rule: call the rule's Rule.check")
        return self.rule

    def finding(
        self,
        message: str,
        path: tuple[str | int, ...],
        field: str | None = None,
        objects: Iterable[str] = (),
        severity: str | None = None,
    ) -> Finding:
        """A finding of the running rule at ``path`` (and ``field``) of the layout; at the
        rule's severity unless ``severity`` says otherwise."""
        full: tuple[str | int, ...] = (*path, field) if field is not None else path
        placed = self.declared.place(full) if self.declared is not None else None
        file, line, column = placed or (self.file, *self.doc.position(full))
        return self.running.finding_at(file, line, column, message, objects, severity)


RuleCheck = Callable[[RuleContext], Iterator[Finding]]


class Rule(NamedTuple):
    slug: str
    severity: str
    summary: str
    description: str
    # The rule's function, run with ctx.rule set to this rule; None for the rules of a file
    # that does not load, which gpa_plan.layout reports.
    check: RuleCheck | None
    # Other severities some of its findings take, each with when: ((WARNING, "when ..."),).
    also: tuple[tuple[str, str], ...] = ()

    def finding_at(
        self,
        file: str,
        line: int,
        column: int,
        message: str,
        objects: Iterable[str] = (),
        severity: str | None = None,
    ) -> Finding:
        """A finding of this rule at ``line`` and ``column`` of ``file``."""
        return Finding(
            self.slug, severity or self.severity, message, file, line, column, tuple(objects)
        )

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
) -> Rule:
    if slug in RULES:
        raise ValueError(f"rule {slug} registered twice")
    bound = _running_as(slug, check) if check is not None else None
    entry = Rule(slug, severity, summary, " ".join(description.split()), bound, also)
    RULES[slug] = entry
    return entry


def _running_as(slug: str, check: RuleCheck) -> RuleCheck:
    """``check`` run with ``ctx.rule`` set to rule ``slug``."""

    @wraps(check)
    def run(ctx: RuleContext) -> Iterator[Finding]:
        return check(ctx._replace(rule=RULES[slug]))

    return run


def rule(
    slug: str, severity: str, summary: str, *, also: tuple[tuple[str, str], ...] = ()
) -> Callable[[RuleCheck], Rule]:
    """Register ``check`` as rule ``slug`` and give back the ``Rule``; ``also`` lists the
    other severities its findings may take, with when (what `gpa-plan rules` and SARIF's rule
    list say)."""

    def register(check: RuleCheck) -> Rule:
        return _register(slug, severity, summary, check.__doc__ or summary, check, also)

    return register


# The two rules of a file that does not load: gpa_plan.layout reports them, by these slugs.
_register(
    YAML_SYNTAX,
    ERROR,
    "the file is not well-formed YAML (or not UTF-8)",
    """The file could not be read as one YAML document of UTF-8 text: a syntax error, bytes
    that are not UTF-8, several documents, an explicit YAML tag, a merge key, aliases that
    expand out of proportion, or nesting too deep. Nothing else is checked until it loads (an
    empty file or one that is not a mapping is a `schema` error).""",
    None,
)
_register(
    SCHEMA,
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
