"""GitHub Actions workflow commands: one ``::error`` or ``::warning`` annotation per finding, and
a ``::notice`` for a note (which fails nothing).

    ::error file=layouts/q.yaml,line=8,col=11,title=gpa-plan(memslot-overlap)::memslot ...

Values are escaped as actions/toolkit's ``command.ts`` does, so a ``%``, ``,``, ``:`` or a
newline in a path or message cannot end a property or the command early; other control and
bidi characters, which that escaping leaves raw, are shown as ``printable`` shows them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from gpa_plan.check.findings import ERROR, NOTE, WARNING
from gpa_plan.check.run import CheckResult
from gpa_plan.inputs import InputError
from gpa_plan.printable import printable
from gpa_plan.report.ci import ReportedFinding, relative_posix, unique_findings

if TYPE_CHECKING:
    from gpa_plan.formats import CheckReport

# GitHub shows at most this many error and this many warning annotations per step; the rest
# only reach the log.
ANNOTATION_LIMIT = 10


def escape_data(value: str) -> str:
    """A command's message: ``%``, CR and LF percent-encoded, then the other control and bidi
    characters escaped as ``printable`` does (``\\x1b``, ``\\u202e``). Workflow commands have
    no encoding for these, and GitHub's log reads ESC sequences as colours: a path holding one
    is printed escaped, so the annotation shows in the run's summary but names no file of the
    repository."""
    return printable(value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A"))


def escape_property(value: str) -> str:
    """A property value: as a message, plus ``:`` and ``,``, which delimit properties."""
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


def annotation(item: ReportedFinding, root: Path) -> str:
    """One workflow command for one finding."""
    f = item.finding
    command = {ERROR: "error", NOTE: "notice"}.get(f.severity, "warning")
    properties = {
        "file": relative_posix(f.file, root) or f.file,
        "line": str(f.line),
        "col": str(f.column),
        "title": f"gpa-plan({f.rule})",
    }
    joined = ",".join(f"{name}={escape_property(value)}" for name, value in properties.items())
    return f"::{command} {joined}::{escape_data(item.text)}"


def render(results: Sequence[CheckResult], root: Path) -> str:
    """Every annotation, one per line; a notice when GitHub will not show them all."""
    items = unique_findings(results)
    lines = [annotation(item, root) for item in items]
    overflow = _overflow_notice(items)
    if overflow:
        lines.append(overflow)
    return "".join(f"{line}\n" for line in lines)


def _overflow_notice(items: Sequence[ReportedFinding]) -> str | None:
    errors = sum(1 for i in items if i.finding.severity == ERROR)
    warnings = sum(1 for i in items if i.finding.severity == WARNING)
    if errors <= ANNOTATION_LIMIT and warnings <= ANNOTATION_LIMIT:
        return None
    message = (
        f"{errors} errors and {warnings} warnings; GitHub annotates at most "
        f"{ANNOTATION_LIMIT} of each per step: every one is in this log, or upload "
        "`gpa-plan check --format sarif` to code scanning"
    )
    return f"::notice title={escape_property('gpa-plan')}::{escape_data(message)}"


def render_unreadable(unreadable: Sequence[InputError], root: Path) -> str:
    """One ``::error`` annotation per path that could not be read, so that a run that checked
    less than it was given shows in the workflow summary, not only in the log."""
    return "".join(
        f"::error file={escape_property(relative_posix(err.path, root) or err.path)},"
        f"title={escape_property('gpa-plan')}::{escape_data(str(err))}\n"
        for err in unreadable
    )


def write_check(report: CheckReport, stream: TextIO) -> None:
    """Every annotation, then one per path that could not be read; paths relative to the
    working directory."""
    root = Path.cwd()
    stream.write(render(report.results, root))
    stream.write(render_unreadable(report.unreadable, root))
