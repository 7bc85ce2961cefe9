"""A progress bar on the terminal for long work, drawn by rich on standard error.

It is shown only when all of these hold, so that logs, pipes and small runs stay as they were:

* standard error is a terminal (never a pipe or a file, whatever ``FORCE_COLOR`` says), and
  rich finds it interactive: ``TERM=dumb`` (or ``unknown``) and ``TTY_INTERACTIVE=0`` turn the
  bar off, and ``NO_COLOR`` draws it without colour, as rich does;
* the output is one a person reads (`check` in text format without ``-q``, `map`), never
  JSON, SARIF or GitHub annotations;
* the input holds at least MIN_BYTES (1 MiB, some 13,000 memslots): a layout at KVM's memslot
  limit (2.4 MB) takes over a second to check and about 10 s to draw with `map --html`, while
  an ordinary layout of a few kilobytes is done before a bar could be seen, and a bar that
  flashes for an instant would only be noise.

The bar is transient: it is erased when the work is done, before the report is printed, so
standard output is byte for byte what it would be without it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from gpa_plan.printable import printable
from gpa_plan.progress import Progress, unwatched

MIN_BYTES = 1 << 20  # 1 MiB of layout text


@contextmanager
def watched(
    input_bytes: Callable[[], int] | None, stream: TextIO | None = None
) -> Iterator[Progress]:
    """A Progress that draws a bar on ``stream`` (standard error) while the block runs, when
    the work is long (``input_bytes()``, asked only for a terminal, is MIN_BYTES or more) and
    the terminal interactive; else one that shows nothing. ``input_bytes`` None: output that
    never gets a bar (machine formats, ``-q``)."""
    stream = stream or sys.stderr
    if input_bytes is None or not _is_terminal(stream) or input_bytes() < MIN_BYTES:
        yield unwatched
        return
    from rich.progress import (
        BarColumn,
        SpinnerColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.progress import Progress as Bar

    from gpa_plan.report.terminal import console_for

    console = console_for(stream)
    if not console.is_interactive:
        yield unwatched
        return
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    # No redirection: standard output is never touched while the bar is up.
    with Bar(*columns, console=console, transient=True, redirect_stdout=False,
             redirect_stderr=False) as bar:
        task = bar.add_task("starting", total=None)

        def report(step: str, done: int = 0, total: int | None = None) -> None:
            bar.update(task, description=printable(step), completed=done, total=total)

        yield report


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (ValueError, OSError):  # closed or detached
        return False
