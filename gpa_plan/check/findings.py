"""Findings: one shape, rendered by every report format."""

from __future__ import annotations

from typing import NamedTuple

ERROR = "error"
WARNING = "warning"


class Finding(NamedTuple):
    """One problem at a 1-based line and column of a file, tagged with its rule slug."""

    rule: str
    severity: str
    message: str
    file: str
    line: int
    column: int
    objects: tuple[str, ...] = ()

    def with_severity(self, severity: str) -> Finding:
        return self._replace(severity=severity)

    def sort_key(self) -> tuple[str, int, int, str]:
        return self.file, self.line, self.column, self.rule
