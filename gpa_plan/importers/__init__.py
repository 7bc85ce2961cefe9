"""Layouts from what VMMs already describe: QEMU's memory tree (`info mtree`) and device trees.

Each importer turns its input into an `Imported`: a layout document (plain data in the layout
format, keys in the format's order, ready for ``gpa_plan.plan.emit``) and notes for the reader
(what was skipped or guessed, and why), which `gpa-plan import` writes as YAML comments. An
input that cannot be read raises `ImportFailure` with the line (1-based; 0 when the input has
no lines, such as a DTB) where reading stopped.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Imported(NamedTuple):
    document: dict[str, Any]
    notes: list[str]


class ImportFailure(Exception):
    """The input is not what the importer reads; ``line`` is 1-based, 0 for binary input."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
