"""Human output: a table of regions per file and arch, then findings as
``file:line:col: severity[rule] message``, then where architectures differ and a summary.

What is said is decided here, as blocks (tables and lines with a style per part); how it looks
is up to the writer:

* on a terminal (or with ``FORCE_COLOR`` / ``TTY_COMPATIBLE`` set, rich's own switches), rich
  draws the tables, with colour unless ``NO_COLOR`` is set (``gpa_plan.report.terminal``),
  fitted to the terminal's width without cutting anything (``gpa_plan.report.fold``);
* into a pipe or a file (CI logs, ``grep``, pre-commit), tables print as plain aligned columns
  and lines as plain text. Such output never wraps at a guessed width, and the check does not
  pay for importing and laying out rich, which was most of a one-file check's run time.

Names, paths and messages come from files anyone may have written. Both writers pass every
title, cell and line part through ``gpa_plan.printable.printable``, so a control character,
a newline (a name could start a line of its own, such as a GitHub Actions ``::error``
command) or a bidirectional override is printed as an escape (``\\x1b``, ``\\n``,
``\\u202e``); rich gets them as ``Text``, never as markup, so ``[red]`` in a name is just text.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple, TextIO

from gpa_plan.check.findings import UNREADABLE
from gpa_plan.printable import printable
from gpa_plan.ranges import hex_addr, human_size

if TYPE_CHECKING:
    from gpa_plan.check.explain import Answer
    from gpa_plan.check.findings import Finding
    from gpa_plan.check.run import CheckResult
    from gpa_plan.formats import CheckReport
    from gpa_plan.host_profile import HostProfile
    from gpa_plan.report import fold

COLUMNS = ("start", "end (incl.)", "size", "kind", "names", "read", "write", "fetch")
OUTCOME_COLUMNS = 3  # the last three: read, write, fetch
NAMES = COLUMNS.index("names")

OUTCOME_STYLE = {
    "memory": "green",
    "io-exit": "yellow",
    "io-kernel": "cyan",
    "io-coalesced": "cyan",
    "guest-fault": "red",
    "vm-error": "bold red",
}


class Table(NamedTuple):
    title: str
    rows: list[tuple[str, ...]]  # cells in COLUMNS order


class Line(NamedTuple):
    parts: tuple[tuple[str, str], ...]  # (text, rich style or "")


Block = Table | Line


def line(text: str = "", style: str = "") -> Line:
    return Line(((text, style),))


def finding_line(f: Finding) -> str:
    """``file:line:col: severity[rule] message``, one line, safe to print: the one wording of
    a finding in text, whatever command met it. A finding at line 0 has no place in its file
    (a binary input) and names the file alone; an input that could not be read at all is said
    as every command says it, ``gpa-plan: cannot read PATH: reason``."""
    if f.rule == UNREADABLE:
        return printable(f"gpa-plan: {f.message}")
    where = f"{f.file}:{f.line}:{f.column}" if f.line else f.file
    return printable(f"{where}: {finding_text(f)}")


def finding_text(f: Finding) -> str:
    """``severity[rule] message``: a finding without its place, where the place is shown
    otherwise (the map's tooltip of a region)."""
    return f"{f.severity}[{f.rule}] {f.message}"


def write_failure(findings: Sequence[Finding], stdout: TextIO, stderr: TextIO) -> None:
    """A failed command's findings, one finding line each on ``stderr``: its standard output
    is left to the data it would have printed."""
    stderr.write("".join(finding_line(f) + "\n" for f in findings))


def write_check(report: CheckReport, stream: TextIO) -> None:
    render_check(report.results, stream, len(report.unreadable), quiet=report.quiet)
    if report.host is not None:
        host = report.host
        said = f"host profile {host.file}: an {host.arch} host, kernel {host.kernel_release}"
        stream.write(printable(said) + "\n")


def render_check(
    results: Sequence[CheckResult], stream: TextIO, unreadable: int = 0, *, quiet: bool = False
) -> None:
    write_blocks(check_blocks(results, unreadable, quiet=quiet), stream)


def render_explain(
    answers: Sequence[Answer], stream: TextIO, *, host: HostProfile | None = None
) -> None:
    """The answers' blocks; a host profile shows in the answers' details, not apart."""
    write_blocks(explain_blocks(answers), stream)


def wants_rich(stream: TextIO) -> bool:
    """Whether ``stream`` gets rich tables: a terminal, or rich's switches to force one."""
    forced = os.environ.get("FORCE_COLOR") or os.environ.get("TTY_COMPATIBLE") == "1"
    return bool(forced) or stream.isatty()


def write_blocks(blocks: Iterable[Block], stream: TextIO) -> None:
    if wants_rich(stream):
        from gpa_plan.report.terminal import write_rich

        write_rich(blocks, stream)
    else:
        write_plain(blocks, stream)


def write_plain(blocks: Iterable[Block], stream: TextIO) -> None:
    for block in blocks:
        if isinstance(block, Table):
            stream.write(plain_table(block))
        else:
            stream.write("".join(printable(text) for text, _ in block.parts) + "\n")


def plain_table(table: Table, width: int | None = None) -> str:
    """The title, then the header and rows as columns two spaces apart. With a ``width``
    (a terminal's) names wrap inside their column, or below the width the table needs each
    region is a block of lines, as gpa_plan.report.fold says; without one (a pipe, a file)
    every row is one line, however long."""
    rows = [tuple(map(printable, row)) for row in table.rows]
    title = printable(table.title)
    if width is None:
        return _plain_columns(title, rows, None)
    from gpa_plan.report import fold

    fit = fold.table_fit(rows, width, fold.PLAIN_GAPS)
    if fit is not None:
        title_lines = fold.wrap(fold.words(((title, ""),)), width, fold.INDENT)
        title = "\n".join("".join(text for text, _ in parts) for parts in title_lines)
        return _plain_columns(title, rows, fit, fold.cells)
    lines = [*fold.wrap(fold.words(((title, ""),)), width, fold.INDENT),
             *fold.stacked(rows, width)]
    return "".join("".join(text for text, _ in parts) + "\n" for parts in lines)


def _plain_columns(
    title: str,
    rows: list[tuple[str, ...]],
    fit: fold.Fit | None,
    measure: Callable[[str], int] = len,
) -> str:
    """``measure``: the width of a cell's text (on a terminal, wide characters take two)."""
    names = fit.names if fit else [[row[NAMES]] for row in rows]
    widths = fit.widths if fit else [
        max(len(row[i]) for row in [COLUMNS, *rows]) for i in range(len(COLUMNS))
    ]
    lines = [title, _plain_row(COLUMNS, widths, measure)]
    for row, row_names in zip(rows, names, strict=True):
        cells = (*row[:NAMES], row_names[0], *row[NAMES + 1:])
        lines.append(_plain_row(cells, widths, measure))
        blank = ("",) * NAMES
        lines.extend(_plain_row((*blank, more), widths, measure) for more in row_names[1:])
    return "\n".join(lines) + "\n"


def _plain_row(
    cells: Sequence[str], widths: Sequence[int], measure: Callable[[str], int]
) -> str:
    padded = (c + " " * (w - measure(c)) for c, w in zip(cells, widths, strict=False))
    return "  ".join(padded).rstrip()


# --- what `check` says -------------------------------------------------------------------


def check_blocks(
    results: Sequence[CheckResult], unreadable: int = 0, *, quiet: bool = False
) -> Iterator[Block]:
    """The report; ``unreadable`` paths (said on stderr) are counted in the summary line, so a
    run that exits 2 never ends on a summary that looks clean. ``quiet``: the findings and the
    summary only, as linters print them (no region tables, segment lines or arch differences).

    A file that does not load fails the same way under every ``--arch`` (loading never depends
    on the architecture checked under): its findings are printed and counted once."""
    results = _once_per_load_failure(results)
    if quiet:
        for result in results:
            yield from (_finding_block(f) for f in result.findings)
        yield _summary(results, unreadable)
        return
    for result in results:
        if result.valid:
            yield Table(result_title(result), region_rows(result))
            if result.ports:
                yield Table(f"{result.file} ports ({result.arch})", port_rows(result))
            yield from _program_lines(result)
            yield from _traffic_lines(result)
        yield from (_finding_block(f) for f in result.findings)
        if result.valid or result.findings:
            yield line()
    yield from _difference_lines(results)
    yield _summary(results, unreadable)


def _once_per_load_failure(results: Sequence[CheckResult]) -> list[CheckResult]:
    failed: set[str] = set()
    kept = []
    for result in results:
        if not result.valid:
            if result.file in failed:
                continue
            failed.add(result.file)
        kept.append(result)
    return kept


SEVERITY_STYLE = {"error": "red", "warning": "yellow", "note": "cyan"}


def _finding_block(finding: Finding) -> Line:
    return line(finding_line(finding), SEVERITY_STYLE.get(finding.severity, ""))


def _summary(results: Sequence[CheckResult], unreadable: int) -> Line:
    errors = sum(r.errors for r in results)
    warnings = sum(r.warnings for r in results)
    files = len({r.file for r in results})
    not_read = f", {unreadable} could not be read" if unreadable else ""
    return line(
        f"{files} file{'s' if files != 1 else ''} checked{not_read}: "
        f"{errors} error{'s' if errors != 1 else ''}, "
        f"{warnings} warning{'s' if warnings != 1 else ''}"
    )


def result_title(result: CheckResult) -> str:
    return f"{result.file} ({result.arch}, {result.pa_bits}-bit)"


def region_rows(result: CheckResult) -> list[tuple[str, ...]]:
    """One row of COLUMNS per region, as people read them (inclusive ends, sizes in units)."""
    return [
        (
            hex_addr(r.start),
            hex_addr(r.end - 1),
            human_size(r.end - r.start),
            r.kind,
            ", ".join(r.names) + (f" and {r.more_names} more" if r.more_names else ""),
            r.read.value,
            r.write.value,
            r.fetch.value,
        )
        for r in result.regions
    ]


def port_rows(result: CheckResult) -> list[tuple[str, ...]]:
    """One row of COLUMNS per port range: the handler as its kind, `in` as the read, `out` as
    the write; no instruction is fetched from a port."""
    return [
        (
            f"{p.start:#06x}",
            f"{p.end - 1:#06x}",
            str(p.end - p.start),
            p.handler,
            p.name,
            p.read,
            p.write,
            "-",
        )
        for p in result.ports
    ]


def _traffic_lines(result: CheckResult) -> Iterator[Line]:
    """A recording's traffic in a few lines: per space, the accesses, addresses and widths,
    and the busiest addresses; then the exits by reason."""
    summary = result.traffic
    if summary is None:
        return
    how = f" ({summary.path})" if summary.path else ""
    if not summary.spaces:
        yield line(f"traffic{how}: none recorded")
    for s in summary.spaces:
        where = ("address", "addresses") if s.space == "mmio" else ("port", "ports")
        widths = "width" + ("s " if len(s.widths) > 1 else " ") + "/".join(map(str, s.widths))
        busiest = ", ".join(
            f"{hex_addr(a) if s.space == 'mmio' else f'{a:#x}'} {n}" for a, n in s.busiest
        )
        yield line(
            f"{s.space} traffic{how}: {s.reads + s.writes} accesses ({s.reads} reads, "
            f"{s.writes} writes) at {s.addresses} {where[s.addresses != 1]}, {widths}; "
            f"busiest: {busiest}"
        )
    if summary.exits:
        yield line("exits: " + ", ".join(f"{reason} {n}" for reason, n in summary.exits))


def _program_lines(result: CheckResult) -> Iterator[Line]:
    """Per `--elf` program, one line per segment: ``segment i: FLAGS, [start, end) -> kinds /
    names``; physical mode shows [p_paddr, p_paddr + p_memsz), selftests mode the page-rounded
    p_vaddr range with the memslot backing it and any identity-mapped device it meets."""
    for program in result.programs or ():
        where = "at p_paddr" if program.mode == "physical" else "at p_vaddr, page-rounded"
        yield line(f"{program.file} ({program.machine}, {program.mode}: {where})")
        for s in program.segments:
            target = ", ".join(s.kinds) or "nothing"
            if s.names:
                target += " / " + ", ".join(s.names)
                target += f" and {s.more_names} more" if s.more_names else ""
            yield line(f"  segment {s.index}: {s.flags}, {s.range} -> {target}")


def _difference_lines(results: Sequence[CheckResult]) -> Iterator[Line]:
    by_file: dict[str, list[CheckResult]] = {}
    for r in results:
        if r.valid:
            by_file.setdefault(r.file, []).append(r)
    groups = [group for group in by_file.values() if len(group) > 1]
    if not groups:
        return
    from gpa_plan.check.compare import differences

    for group in groups:
        file = group[0].file
        for other in group[1:]:
            base = group[0]
            diffs = differences(base.regions, other.regions)
            if not diffs:
                yield line(f"{file}: {base.arch} and {other.arch} agree on every access")
                continue
            yield line(f"{file}: where {base.arch} and {other.arch} differ:")
            for d in diffs:
                yield line(
                    f"  {hex_addr(d.range.start)}-{hex_addr(d.range.end - 1)} "
                    f"{d.access}: {base.arch} {d.a.value}, {other.arch} {d.b.value}"
                )
            yield line()


# --- what `explain` says -----------------------------------------------------------------


def explain_blocks(answers: Sequence[Answer]) -> Iterator[Line]:
    yield from _answer_lines(answers)
    arches = list(dict.fromkeys(a.arch for a in answers))
    if len(arches) > 1:
        yield from _arch_difference_lines(answers, arches)


def _arch_difference_lines(answers: Sequence[Answer], arches: list[str]) -> Iterator[Line]:
    """The questions whose outcome depends on the architecture, each outcome with the
    architectures that give it; or that they all agree."""
    from gpa_plan.check.explain import differences

    found = differences(answers)
    if not found:
        yield line(f"{', '.join(arches)}: the same outcome for every address and access asked")
        return
    yield line(f"Where {', '.join(arches)} differ:")
    for d in found:
        by_outcome: dict[str, list[str]] = {}
        for arch, outcome in d.outcomes:
            by_outcome.setdefault(outcome, []).append(arch)
        said = "; ".join(f"{o} on {' and '.join(a)}" for o, a in by_outcome.items())
        yield line(f"  {hex_addr(d.address)} {d.access}: {said}")


def _answer_lines(answers: Sequence[Answer]) -> Iterator[Line]:
    for a in answers:
        names = f" ({', '.join(a.names)})" if a.names else ""
        yield Line(
            (
                (f"{hex_addr(a.address)} {a.access} on {a.arch}: ", ""),
                (a.outcome, OUTCOME_STYLE.get(a.outcome, "")),
                (f" [{a.kind}{names}]", ""),
            )
        )
        yield line(f"  {a.detail}")
        for note in a.notes:
            yield line(f"  note: {note}")
