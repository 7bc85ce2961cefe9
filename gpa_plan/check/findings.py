"""Findings: one shape, rendered by every report format."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from gpa_plan.inputs import InputError
    from gpa_plan.layout.errors import Problem

ERROR = "error"
WARNING = "warning"
# Said once, never counted: no error or warning, no effect on the exit status.
NOTE = "note"

# Findings of one rule that name one object, shown before the rest are counted instead.
MAX_FINDINGS_PER_OBJECT = 10

# What a command that reads one input reports when it cannot read it at all (exit 2), in the
# formats that carry findings; no rule of `gpa-plan rules`, as `import` for a refused import.
UNREADABLE = "unreadable"
IMPORT = "import"
# What `verify` reports when it cannot run here or cannot use the results it is given.
VERIFY = "verify"
# A `--host FILE` that is not a host profile gpa-plan can use (gpa_plan.host_profile).
HOST_PROFILE = "host-profile"


class Finding(NamedTuple):
    """One problem at a 1-based line and column of a file, tagged with its rule slug. Line 0
    is no place in the file (a binary input, a file that cannot be rewritten as a whole); only
    the commands whose formats need no position (text) make such findings."""

    rule: str
    severity: str
    message: str
    file: str
    line: int
    column: int
    objects: tuple[str, ...] = ()

    def with_severity(self, severity: str) -> Finding:
        return self._replace(severity=severity)

    def sort_key(self) -> tuple[str, int, int, str]:
        return self.file, self.line, self.column, self.rule


def problem_findings(file: str, problems: Iterable[Problem]) -> tuple[Finding, ...]:
    """The findings of a layout file that did not load, one per problem, at error severity."""
    return tuple(Finding(p.rule, ERROR, p.message, file, p.line, p.column) for p in problems)


def unreadable_finding(err: InputError) -> Finding:
    """The finding of an input that could not be read at all, for the whole file (1, 1)."""
    return Finding(UNREADABLE, ERROR, str(err), err.path, 1, 1)


def cap_per_object(
    findings: Iterable[Finding], *, capped_as_made: Collection[str] = ()
) -> list[Finding]:
    """``findings`` (sorted) with at most MAX_FINDINGS_PER_OBJECT of one rule naming any one
    object; for each object and rule that had more, one finding at the first one left out
    says how many were, at the most severe level among them. Findings of the rules in
    ``capped_as_made`` pass as they are: those rules apply the same cap as they make them.

    Thousands of devices at one address would otherwise give thousands of findings naming
    the memslot or the device they all overlap; the first ones say what is wrong.
    """
    shown: dict[tuple[str, str], int] = {}
    hidden: dict[tuple[str, str], list[Finding]] = {}
    kept: list[Finding] = []
    for finding in findings:
        if finding.rule in capped_as_made:
            kept.append(finding)
            continue
        full = next(
            (
                (finding.rule, name)
                for name in finding.objects
                if shown.get((finding.rule, name), 0) >= MAX_FINDINGS_PER_OBJECT
            ),
            None,
        )
        if full is None:
            kept.append(finding)
            for name in dict.fromkeys(finding.objects):
                shown[(finding.rule, name)] = shown.get((finding.rule, name), 0) + 1
        else:
            hidden.setdefault(full, []).append(finding)
    if not hidden:
        return kept
    for (rule, name), left_out in hidden.items():
        kept.append(_left_out(rule, name, left_out))
    kept.sort(key=Finding.sort_key)
    return kept


def _left_out(rule: str, name: str, left_out: list[Finding]) -> Finding:
    first = left_out[0]
    severity = ERROR if any(f.severity == ERROR for f in left_out) else first.severity
    return left_out_finding(rule, name, len(left_out), severity, first)


def left_out_finding(rule: str, name: str, count: int, severity: str, first: Finding) -> Finding:
    """The finding that stands for ``count`` findings of ``rule`` naming ``name`` left out,
    placed where the first of them, ``first``, would be."""
    return Finding(
        rule,
        severity,
        f"{count} more {rule} finding{'s' if count != 1 else ''} naming {name!r}, the "
        f"first of them here, {'are' if count != 1 else 'is'} not shown (at most "
        f"{MAX_FINDINGS_PER_OBJECT} per object and rule): fix the ones shown and run "
        "gpa-plan check again to see the rest",
        first.file,
        first.line,
        first.column,
        (name,),
    )
