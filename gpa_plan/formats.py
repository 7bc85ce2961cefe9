"""The output formats of each command: a name, a line of help, and where its writers live.

A writer is named as ``"module:attribute"`` and imported on first use, so the command line
builds its ``--format`` choices from these tables without loading any report module: a check
into a pipe loads the text writer only. Adding a format is one entry here plus the module
that holds its writer. Every writer of one table has the same signature:

* `check` (``CHECK_FORMATS``): ``write(report: CheckReport, stream: TextIO) -> None``;
* `explain` (``EXPLAIN_FORMATS``): ``write(answers: Sequence[Answer], stream: TextIO, *,
  host: HostProfile | None = None) -> None`` (``host``: the profile given with --host);
* `verify` (``VERIFY_FORMATS``): ``write(verdicts: Sequence[Verdict], stream: TextIO) -> None``;
* `allocate` (``ALLOCATE_FORMATS``): ``write(allocation: Allocation, source: str) -> str``, the
  text to print or write (``source`` names the layout in the text's opening comment).

A command that fails before it has anything to report (a file that does not load, a refused
import, an allocation that cannot be met) gives its findings to the format's failure writer,
``write_failure(findings: Sequence[Finding], stdout: TextIO, stderr: TextIO) -> None``: the text
forms print them as finding lines on stderr (stdout carries data a user may redirect), JSON
prints one document of them on stdout. `check` has none: a file that does not load is one of
its results.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TextIO, TypeVar, cast

if TYPE_CHECKING:
    from gpa_plan.check.explain import Answer
    from gpa_plan.check.findings import Finding
    from gpa_plan.check.run import CheckResult
    from gpa_plan.host_profile import HostProfile
    from gpa_plan.inputs import InputError
    from gpa_plan.plan.allocate import Allocation
    from gpa_plan.verify.compare import Verdict


class CheckReport(NamedTuple):
    """What every `check` format reports: the results, the paths that could not be read, and
    whether a quiet report was asked for (text only). The CI formats make paths relative to
    the working directory."""

    results: Sequence[CheckResult]
    unreadable: Sequence[InputError]
    quiet: bool = False
    # the host profile given with --host (the JSON document names it)
    host: HostProfile | None = None


CheckWriter = Callable[["CheckReport", TextIO], None]
class ExplainWriter(Protocol):
    def __call__(
        self, answers: Sequence[Answer], stream: TextIO, *, host: HostProfile | None = None
    ) -> None: ...


AllocateWriter = Callable[["Allocation", str], str]
VerifyWriter = Callable[["Sequence[Verdict]", TextIO], None]
FailureWriter = Callable[["Sequence[Finding]", TextIO, TextIO], None]

TEXT_FAILURE = "gpa_plan.report.text:write_failure"
JSON_FAILURE = "gpa_plan.report.json_report:write_failure"

W = TypeVar("W")


class Format(NamedTuple):
    name: str
    writer: str  # "module:attribute"
    help: str = ""
    failure: str | None = None  # "module:attribute" of the failure writer


def resolve(target: str) -> Any:
    """The object ``"module:attribute"`` names, importing the module."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


class Formats(Generic[W]):
    """One command's formats, in the order its ``--format`` choices list them."""

    def __init__(self, *formats: Format) -> None:
        self._formats = {f.name: f for f in formats}

    @property
    def names(self) -> list[str]:
        return list(self._formats)

    def help(self, tail: str = "") -> str:
        """The ``--format`` help: each format that has a help line, then ``tail``."""
        said = [f"{f.name} ({f.help})" for f in self._formats.values() if f.help]
        listed = f"Output format: {', '.join(said)}." if said else "Output format."
        return f"{listed} {tail}" if tail else listed

    def writer(self, name: str) -> W:
        return cast(W, resolve(self._formats[name].writer))

    def failure_writer(self, name: str) -> FailureWriter:
        target = self._formats[name].failure
        if target is None:
            raise KeyError(f"format {name!r} has no failure writer")
        return cast(FailureWriter, resolve(target))


CHECK_FORMATS: Formats[CheckWriter] = Formats(
    Format("text", "gpa_plan.report.text:write_check"),
    Format("json", "gpa_plan.report.json_report:write_check"),
    Format("github", "gpa_plan.report.github:write_check", "workflow-command annotations"),
    Format("sarif", "gpa_plan.report.sarif:write_check", "a SARIF 2.1.0 log"),
)

EXPLAIN_FORMATS: Formats[ExplainWriter] = Formats(
    Format("text", "gpa_plan.report.text:render_explain", failure=TEXT_FAILURE),
    Format("json", "gpa_plan.report.json_report:write_explain", failure=JSON_FAILURE),
)

VERIFY_FORMATS: Formats[VerifyWriter] = Formats(
    Format("text", "gpa_plan.report.verify:write_text", failure=TEXT_FAILURE),
    Format("json", "gpa_plan.report.verify:write_json", failure=JSON_FAILURE),
)

ALLOCATE_FORMATS: Formats[AllocateWriter] = Formats(
    Format("yaml", "gpa_plan.plan.emit:allocation_yaml", "a layout file", TEXT_FAILURE),
    Format("json", "gpa_plan.plan.emit:allocation_json", "the same document as JSON",
           JSON_FAILURE),
    Format("c", "gpa_plan.plan.emit:allocation_c", "a C header of #defines", TEXT_FAILURE),
    Format("env", "gpa_plan.plan.emit:allocation_env", "shell assignments", TEXT_FAILURE),
)
