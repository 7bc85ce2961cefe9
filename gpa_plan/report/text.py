"""Human output: a rich table of regions per file and arch, then findings as
``file:line:col: severity[rule] message``. Colour only on a terminal; NO_COLOR is honoured
(rich reads it).

Past ``RICH_TABLE_ROWS`` regions the table is printed as plain aligned columns instead: rich
lays a table out at about 0.35 ms a row, which made a layout at KVM's memslot limit (some
70,000 regions) take half a minute to print after a check of under two seconds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gpa_plan.check.compare import differences
from gpa_plan.check.explain import Answer
from gpa_plan.check.findings import Finding
from gpa_plan.check.run import CheckResult
from gpa_plan.ranges import hex_addr, human_size

RICH_TABLE_ROWS = 2000
_COLUMNS = ("start", "end (incl.)", "size", "kind", "names", "read", "write", "fetch")

_STYLE = {
    "memory": "green",
    "io-exit": "yellow",
    "io-kernel": "cyan",
    "io-coalesced": "cyan",
    "guest-fault": "red",
    "vm-error": "bold red",
}


def console_for(stream: TextIO) -> Console:
    # Off a terminal, a fixed wide width keeps each table row on one line for logs and diffs.
    width = None if stream.isatty() else int(os.environ.get("COLUMNS", "160"))
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


def finding_line(f: Finding) -> str:
    return f"{f.file}:{f.line}:{f.column}: {f.severity}[{f.rule}] {f.message}"


def render_check(results: Sequence[CheckResult], console: Console) -> None:
    for result in results:
        if result.valid:
            if len(result.regions) <= RICH_TABLE_ROWS:
                console.print(_region_table(result))
            else:
                _print_plain_table(result, console)
            _render_programs(result, console)
        for finding in result.findings:
            style = "red" if finding.severity == "error" else "yellow"
            console.print(Text(finding_line(finding), style=style), soft_wrap=True)
        if result.valid or result.findings:
            console.print()
    _render_differences(results, console)
    errors = sum(r.errors for r in results)
    warnings = sum(r.warnings for r in results)
    files = len({r.file for r in results})
    console.print(
        f"{files} file{'s' if files != 1 else ''} checked: "
        f"{errors} error{'s' if errors != 1 else ''}, "
        f"{warnings} warning{'s' if warnings != 1 else ''}"
    )


def _region_table(result: CheckResult) -> Table:
    table = Table(
        title=_title(result),
        title_justify="left",
        show_edge=False,
    )
    for column in _COLUMNS:
        table.add_column(column, no_wrap=column != "names")
    for cells in _rows(result):
        table.add_row(*cells[:5], *(Text(o, style=_STYLE[o]) for o in cells[5:]))
    return table


def _title(result: CheckResult) -> str:
    return f"{result.file} ({result.arch}, {result.pa_bits}-bit)"


def _rows(result: CheckResult) -> list[tuple[str, ...]]:
    return [
        (
            hex_addr(r.start),
            hex_addr(r.end - 1),
            human_size(r.end - r.start),
            r.kind,
            ", ".join(r.names),
            r.read.value,
            r.write.value,
            r.fetch.value,
        )
        for r in result.regions
    ]


def _print_plain_table(result: CheckResult, console: Console) -> None:
    rows = [_COLUMNS, *_rows(result)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = [_title(result)]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    console.file.write("\n".join(lines) + "\n")


def _render_programs(result: CheckResult, console: Console) -> None:
    """Per `--elf` program, one line per segment: ``segment i: FLAGS, [start, end) -> kinds /
    names``; physical mode shows [p_paddr, p_paddr + p_memsz), selftests mode the page-rounded
    p_vaddr range with the memslot backing it and any identity-mapped device it meets."""
    for program in result.programs or ():
        where = "at p_paddr" if program.mode == "physical" else "at p_vaddr, page-rounded"
        console.print(Text(f"{program.file} ({program.machine}, {program.mode}: {where})"))
        for s in program.segments:
            target = ", ".join(s.kinds) or "nothing"
            if s.names:
                target += " / " + ", ".join(s.names)
            console.print(Text(f"  segment {s.index}: {s.flags}, {s.range} -> {target}"))


def _render_differences(results: Sequence[CheckResult], console: Console) -> None:
    by_file: dict[str, list[CheckResult]] = {}
    for r in results:
        if r.valid:
            by_file.setdefault(r.file, []).append(r)
    for file, group in by_file.items():
        for k in range(1, len(group)):
            base, other = group[0], group[k]
            diffs = differences(base.regions, other.regions)
            if not diffs:
                console.print(f"{file}: {base.arch} and {other.arch} agree on every access")
                continue
            console.print(f"{file}: where {base.arch} and {other.arch} differ:")
            for d in diffs:
                console.print(
                    f"  {hex_addr(d.range.start)}-{hex_addr(d.range.end - 1)} "
                    f"{d.access}: {base.arch} {d.a.value}, {other.arch} {d.b.value}"
                )
            console.print()


def render_explain(answers: Sequence[Answer], console: Console) -> None:
    for a in answers:
        names = f" ({', '.join(a.names)})" if a.names else ""
        console.print(
            Text.assemble(
                f"{hex_addr(a.address)} {a.access} on {a.arch}: ",
                (a.outcome, _STYLE.get(a.outcome, "")),
                f" [{a.kind}{names}]",
            )
        )
        console.print(f"  {a.detail}")
