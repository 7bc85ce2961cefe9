"""Helpers for tests that check layout files through the CLI and point at places in them."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from gpa_plan.cli import cli


def position(path: Path, needle: str) -> tuple[int, int]:
    """1-based line and column of the first ``needle`` in the file."""
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if needle in text:
            return number, text.index(needle) + 1
    raise AssertionError(needle)


def at(path: Path, needle: str, offset: int = 0) -> str:
    """``PATH:LINE:COLUMN`` of ``needle`` (``offset`` columns on), as findings start."""
    line, column = position(path, needle)
    return f"{path}:{line}:{column + offset}"


def run(*args: str | Path) -> Result:
    """gpa-plan with ``args``, wide enough that no line is wrapped."""
    return CliRunner(env={"COLUMNS": "400"}).invoke(cli, [str(a) for a in args])


def finding_lines(result: Result) -> list[str]:
    """The error and warning lines of a text report."""
    return [line for line in result.stdout.splitlines() if ": error[" in line
            or ": warning[" in line]
