"""Text output on a terminal: rich tables with coloured outcomes (NO_COLOR is honoured; rich
reads it).

Every title, cell and line goes to rich as a ``Text`` made from ``printable`` text: rich parses
plain strings as markup, so a name such as ``[red]x`` would be styled and one such as ``[/]``
would stop the output with a MarkupError.

Everything is fitted to the terminal's width without cutting anything (gpa_plan.report.fold):
a table when its columns fit, else one block of lines per region; lines wrap between words.

Past ``RICH_TABLE_ROWS`` regions a table is printed as plain aligned columns (or blocks, on a
narrower terminal) even here: rich lays a table out at about 0.35 ms a row, which made a
layout at KVM's memslot limit (some 70,000 regions) take half a minute to print after a check
of under two seconds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TextIO

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from gpa_plan.printable import printable
from gpa_plan.report import fold
from gpa_plan.report.text import (
    COLUMNS,
    NAMES,
    OUTCOME_COLUMNS,
    OUTCOME_STYLE,
    Block,
    Table,
    plain_table,
)

RICH_TABLE_ROWS = 2000
PIPE_WIDTH = 160
MIN_WIDTH = 20


def console_for(stream: TextIO) -> Console:
    environ = dict(os.environ)
    for name in ("COLUMNS", "LINES"):
        if name in environ and _dimension(environ[name]) is None:
            del environ[name]
    # When forced onto a pipe, a fixed wide width keeps each table row on one line.
    width = None if stream.isatty() else _dimension(environ.get("COLUMNS")) or PIPE_WIDTH
    return Console(
        file=stream, width=width, highlight=False, soft_wrap=False, _environ=environ
    )


def _dimension(text: str | None) -> int | None:
    """``COLUMNS`` or ``LINES`` when it is a whole number from MIN_WIDTH to 9999, else None
    (the terminal's size, or PIPE_WIDTH, is used instead). rich reads these itself: it prints
    nothing at a width of 0 or less, and ends the run on a value int() refuses (``²``, or
    5,000 digits)."""
    if not text or not (text.isascii() and text.isdigit() and len(text) <= 4):
        return None
    return int(text) if int(text) >= MIN_WIDTH else None


def write_rich(blocks: Iterable[Block], stream: TextIO) -> None:
    """``blocks`` drawn for a terminal of the console's width: tables as gpa_plan.report.fold
    fits them (a table with names wrapping, or one block of lines per region), and lines
    wrapped between words with their continuation indented; nothing is cut."""
    console = console_for(stream)
    width = console.width
    # Forced onto a pipe with no COLUMNS (colour in a CI log), the width is PIPE_WIDTH, a
    # guess: lines stay whole there, one finding a line, for grep and problem matchers.
    wrap_lines = _width_known(stream)
    for block in blocks:
        if not isinstance(block, Table):
            parts = tuple((printable(text), style) for text, style in block.parts)
            _print_lines(console, [list(parts)] if not wrap_lines or _fits(parts, width) else
                         fold.wrap(fold.words(parts), width, fold.INDENT))
        elif len(block.rows) > RICH_TABLE_ROWS:
            console.file.write(plain_table(block, width))
        else:
            rows = [tuple(map(printable, row)) for row in block.rows]
            fit = fold.table_fit(rows, width, fold.RICH_GAPS)
            if fit is not None:
                console.print(_rich_table(block.title, rows, fit))
            else:
                title = ((printable(block.title), "italic"),)
                _print_lines(console, [*fold.wrap(fold.words(title), width, fold.INDENT),
                                       *fold.stacked(rows, width)])


def _width_known(stream: TextIO) -> bool:
    """Whether the width is the reader's: a terminal's, or a valid ``COLUMNS``."""
    return stream.isatty() or _dimension(os.environ.get("COLUMNS")) is not None


def _fits(parts: tuple[tuple[str, str], ...], width: int) -> bool:
    return sum(fold.cells(text) for text, _ in parts) <= width


def _print_lines(console: Console, lines: Iterable[list[tuple[str, str]]]) -> None:
    """Lines already fitted to the width, printed as one text (one print per line costs
    rich's whole render path each time)."""
    text = Text()
    for parts in lines:
        for part, style in parts:
            text.append(part, style)
        text.append("\n")
    console.print(text, soft_wrap=True, end="")


def _rich_table(title: str, rows: list[tuple[str, ...]], fit: fold.Fit) -> RichTable:
    table = RichTable(title=Text(printable(title)), title_justify="left", show_edge=False)
    for column, width in zip(COLUMNS, fit.widths, strict=True):
        # Widths fit every cell, so nothing is folded; were one off, fold beats an ellipsis.
        table.add_column(column, width=width, no_wrap=True, overflow="fold")
    first_outcome = len(COLUMNS) - OUTCOME_COLUMNS
    for cells, names in zip(rows, fit.names, strict=True):
        outcomes = (Text(o, OUTCOME_STYLE.get(o, "")) for o in cells[first_outcome:])
        shown = (*cells[:NAMES], "\n".join(names), *cells[NAMES + 1:first_outcome])
        table.add_row(*map(Text, shown), *outcomes)
    return table
