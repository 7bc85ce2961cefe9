"""Text output on a terminal: rich tables with coloured outcomes (NO_COLOR is honoured; rich
reads it).

Every title, cell and line goes to rich as a ``Text`` made from ``printable`` text: rich parses
plain strings as markup, so a name such as ``[red]x`` would be styled and one such as ``[/]``
would stop the output with a MarkupError.

Past ``RICH_TABLE_ROWS`` regions a table is printed as plain aligned columns even here: rich
lays a table out at about 0.35 ms a row, which made a layout at KVM's memslot limit (some
70,000 regions) take half a minute to print after a check of under two seconds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TextIO

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from gpa_plan.printable import printable
from gpa_plan.report.text import (
    COLUMNS,
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
    console = console_for(stream)
    for block in blocks:
        if isinstance(block, Table):
            if len(block.rows) <= RICH_TABLE_ROWS:
                console.print(_rich_table(block))
            else:
                console.file.write(plain_table(block))
        else:
            parts = ((printable(text), style) for text, style in block.parts)
            console.print(Text.assemble(*parts), soft_wrap=True)


def _rich_table(block: Table) -> RichTable:
    table = RichTable(title=_text(block.title), title_justify="left", show_edge=False)
    for column in COLUMNS:
        table.add_column(column, no_wrap=column != "names")
    first_outcome = len(COLUMNS) - OUTCOME_COLUMNS
    for cells in block.rows:
        outcomes = (_text(o, OUTCOME_STYLE.get(o, "")) for o in cells[first_outcome:])
        table.add_row(*map(_text, cells[:first_outcome]), *outcomes)
    return table


def _text(cell: str, style: str = "") -> Text:
    return Text(printable(cell), style=style)
