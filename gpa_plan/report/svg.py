"""`gpa-plan map`: one architecture's address map as an SVG drawing, or an HTML page with the
drawing, the region table and the findings.

The drawing lists the regions from address 0 down to ``2**pa_bits``, one row each: the start
address, a bar coloured by kind (RAM, ROM, device, unbacked) carrying the names and the size,
then one cell per access kind coloured by its outcome. Sizes run from a page to terabytes, so a
row's height grows with log2 of the size instead of the size itself: the picture shows order
and adjacency, not scale. A region named by a finding gets a red outline, and its tooltip
(``<title>``) lists the findings; the HTML page prints them in full.

Plain text and stdlib escaping only: the files open in any browser, and nothing is fetched.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from html import escape as _escape_markup
from typing import TYPE_CHECKING

from gpa_plan.printable import printable
from gpa_plan.progress import EVERY, Progress, unwatched
from gpa_plan.ranges import hex_addr, human_size
from gpa_plan.report.text import COLUMNS, finding_line, finding_text, region_rows, result_title

if TYPE_CHECKING:
    from gpa_plan.check.findings import Finding
    from gpa_plan.check.partition import Region
    from gpa_plan.check.run import CheckResult

ACCESSES = ("read", "write", "fetch")
# Findings a row's tooltip gives in full. A memslot over thousands of devices is in thousands
# of rows, and each would repeat every finding that names it.
TOOLTIP_FINDINGS = 3

# Characters XML 1.0 does not allow at all, even escaped (the XML 1.0 specification, section
# 2.2), beyond the controls printable() already escapes.
_NOT_XML = re.compile("[\ud800-\udfff\ufffe\uffff]")


def escape(text: str) -> str:
    """``text`` for XML and HTML: markup escaped; control characters, line breaks, bidi
    overrides (``printable``) and characters XML forbids shown as ``\\x01``."""
    return _escape_markup(_NOT_XML.sub(lambda m: ascii(m.group())[1:-1], printable(text)))

OUTCOME_FILL = {
    "memory": "#66bb6a",
    "io-exit": "#ffca28",
    "io-kernel": "#4dd0e1",
    "io-coalesced": "#80cbc4",
    "guest-fault": "#ef5350",
    "vm-error": "#b71c1c",
}
KIND_FILL = {"ram": "#c8e6c9", "rom": "#e6ee9c", "device": "#ffe0b2", "unbacked": "#eeeeee"}
FINDING_STROKE = "#d32f2f"

ROW_MIN = 22  # room for one line of text
ROW_PER_DOUBLING = 3
ROW_MAX = 90
ADDRESS_X, BAR_X, BAR_W = 8, 132, 330
CELL_X, CELL_W, CELL_GAP = BAR_X + BAR_W + 10, 84, 4
WIDTH = CELL_X + 3 * (CELL_W + CELL_GAP) + 8
TOP = 58  # title and column heads
FONT = "font-family='ui-monospace, Menlo, Consolas, monospace' font-size='12'"


def row_height(size: int) -> int:
    """Rows grow by ROW_PER_DOUBLING pixels per doubling above 4 KiB, within bounds."""
    doublings = max(0, size.bit_length() - 13)
    return min(ROW_MAX, ROW_MIN + ROW_PER_DOUBLING * doublings)


def drawing(result: CheckResult, progress: Progress = unwatched) -> str:
    """The SVG document for a result of a layout that loaded."""
    findings = _findings_by_name(result.findings)
    rows: list[str] = []
    y = TOP
    total = len(result.regions)
    for done, region in enumerate(result.regions):
        if done % EVERY == 0:
            progress("drawing the regions", done, total)
        height = row_height(region.end - region.start)
        rows.append(_row(region, y, height, _findings_of(region, findings)))
        y += height
    height = y + _legend_height()
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height}' "
        f"viewBox='0 0 {WIDTH} {height}' {FONT}>",
        f"<title>{escape(result_title(result))}</title>",
        f"<rect width='{WIDTH}' height='{height}' fill='#ffffff'/>",
        *_heading(result),
        *rows,
        _text(ADDRESS_X, y + 14, hex_addr(1 << result.pa_bits) if result.pa_bits else ""),
        *_legend(y + 24),
        "</svg>",
    ]
    return "\n".join(parts) + "\n"


def page(result: CheckResult, progress: Progress = unwatched) -> str:
    """A standalone HTML page: the drawing, the region table and every finding."""
    picture = drawing(result, progress)
    head = "".join(f"<th>{escape(c)}</th>" for c in COLUMNS)
    rows = region_rows(result)
    table: list[str] = []
    for done, row in enumerate(rows):
        if done % EVERY == 0:
            progress("writing the region table", done, len(rows))
        table.append("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>")
    body = "\n".join(table)
    findings = "\n".join(
        f"<li class='{f.severity}'>{escape(finding_line(f))}</li>" for f in result.findings
    )
    return (
        "\n".join(
            [
                "<!DOCTYPE html>",
                "<html lang='en'>",
                "<head>",
                "<meta charset='utf-8'>",
                f"<title>{escape(result_title(result))}: gpa-plan map</title>",
                "<style>",
                "body { font-family: system-ui, sans-serif; margin: 1.5em; }",
                "table { border-collapse: collapse; font-family: ui-monospace, monospace; }",
                "td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: left; }",
                ".error { color: #b71c1c; } .warning { color: #8d6e00; }",
                "</style>",
                "</head>",
                "<body>",
                f"<h1>{escape(result_title(result))}</h1>",
                f"<h2>Findings ({result.errors} errors, {result.warnings} warnings)</h2>",
                f"<ul>\n{findings}\n</ul>" if findings else "<p>None.</p>",
                "<h2>Address map</h2>",
                picture,
                "<h2>Regions</h2>",
                f"<table>\n<tr>{head}</tr>\n{body}\n</table>",
                "</body>",
                "</html>",
            ]
        )
        + "\n"
    )


def _heading(result: CheckResult) -> Iterator[str]:
    yield _text(ADDRESS_X, 20, result_title(result), weight="bold")
    yield _text(ADDRESS_X, TOP - 8, "start")
    yield _text(BAR_X + 6, TOP - 8, "kind, names, size")
    for i, access in enumerate(ACCESSES):
        yield _text(_cell_x(i) + 6, TOP - 8, access)


def _row(region: Region, y: int, height: int, findings: Sequence[Finding]) -> str:
    kind_fill = KIND_FILL.get(region.kind, "#eeeeee")
    stroke = f" stroke='{FINDING_STROKE}' stroke-width='2'" if findings else " stroke='#9e9e9e'"
    label = f"{region.kind}{': ' + ', '.join(region.names) if region.names else ''}"
    size = human_size(region.end - region.start)
    cells = [
        f"<rect x='{_cell_x(i)}' y='{y}' width='{CELL_W}' height='{height}' "
        f"fill='{OUTCOME_FILL[value]}' stroke='#ffffff'/>" + _text(_cell_x(i) + 6, y + 15, value)
        for i, value in enumerate(region.outcome(a).value for a in ACCESSES)
    ]
    return "\n".join(
        [
            "<g>",
            f"<title>{_tooltip(region, findings)}</title>",
            _text(ADDRESS_X, y + 15, hex_addr(region.start)),
            f"<rect x='{BAR_X}' y='{y}' width='{BAR_W}' height='{height}' "
            f"fill='{kind_fill}'{stroke}/>",
            _text(BAR_X + 6, y + 15, _fit(label, BAR_W - 90)),
            _text(BAR_X + BAR_W - 6, y + 15, size, anchor="end"),
            *cells,
            "</g>",
        ]
    )


def _tooltip(region: Region, findings: Sequence[Finding]) -> str:
    lines = [
        f"[{hex_addr(region.start)}, {hex_addr(region.end)}) "
        f"{human_size(region.end - region.start)} {region.kind}"
        + (f" ({', '.join(region.names)})" if region.names else ""),
        ", ".join(f"{a} {region.outcome(a).value}" for a in ACCESSES),
    ]
    lines += [finding_text(f) for f in findings[:TOOLTIP_FINDINGS]]
    if len(findings) > TOOLTIP_FINDINGS:
        more = len(findings) - TOOLTIP_FINDINGS
        lines.append(
            f"and {more} more finding{'s' if more != 1 else ''} naming this region's objects "
            "(gpa-plan check, or map --html, lists them all)"
        )
    return "\n".join(map(escape, lines))


LEGEND_PER_LINE, LEGEND_LINE = 3, 22


def _legend_lines() -> int:
    return -(-len(OUTCOME_FILL) // LEGEND_PER_LINE)


def _legend_height() -> int:
    """The end address, the colour lines and the note under the last row."""
    return 24 + LEGEND_LINE * _legend_lines() + 30


def _legend(y: int) -> Iterator[str]:
    for i, (outcome, fill) in enumerate(OUTCOME_FILL.items()):
        x = ADDRESS_X + (i % LEGEND_PER_LINE) * 170
        line_y = y + (i // LEGEND_PER_LINE) * LEGEND_LINE
        yield f"<rect x='{x}' y='{line_y}' width='14' height='14' fill='{fill}'/>"
        yield _text(x + 20, line_y + 12, outcome)
    yield _text(
        ADDRESS_X,
        y + LEGEND_LINE * _legend_lines() + 14,
        "Row heights grow with log2 of the size: order and adjacency, not scale.",
    )


def _findings_by_name(findings: Sequence[Finding]) -> dict[str, list[Finding]]:
    by_name: dict[str, list[Finding]] = {}
    for f in findings:
        for name in f.objects:
            by_name.setdefault(name, []).append(f)
    return by_name


def _findings_of(region: Region, by_name: dict[str, list[Finding]]) -> list[Finding]:
    found = [f for name in region.names for f in by_name.get(name, ())]
    return list(dict.fromkeys(found))


def _cell_x(index: int) -> int:
    return CELL_X + index * (CELL_W + CELL_GAP)


def _fit(label: str, width: int) -> str:
    """``label`` cut to what fits in ``width`` pixels of 12 px monospace text."""
    room = max(4, width // 7)
    return label if len(label) <= room else label[: room - 1] + "…"


def _text(x: int, y: int, text: str, *, anchor: str = "start", weight: str = "normal") -> str:
    extra = f" text-anchor='{anchor}'" if anchor != "start" else ""
    extra += f" font-weight='{weight}'" if weight != "normal" else ""
    return f"<text x='{x}' y='{y}'{extra}>{escape(text)}</text>"
