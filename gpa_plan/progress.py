"""How long work tells its caller how far it has got.

The core reports progress and never prints it: `check_paths`, `check_file`, `load_layout`,
`check_loaded` and `map`'s drawing take a ``progress`` callable and call it as each step
starts and, in long loops, every few thousand items. What to do with it is the caller's
choice; the command line draws a bar on a terminal (gpa_plan.report.progress_bar).
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """``step``: what is being done, for a person (``partitioning big.yaml``); ``done`` of
    ``total`` items so far, ``total`` None when the step cannot be counted (parsing)."""

    def __call__(self, step: str, done: int = 0, total: int | None = None) -> None: ...


def unwatched(step: str, done: int = 0, total: int | None = None) -> None:
    """The progress of work nobody watches: nothing is done with it."""


EVERY = 4096  # items between two reports of a long loop
