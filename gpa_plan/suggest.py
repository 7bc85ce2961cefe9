"""Spelling suggestions for unknown keys, device types and rule slugs."""

from __future__ import annotations

from collections.abc import Iterable


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice ``word`` most likely misspells, if one is close enough."""
    import difflib  # only a mistake needs it, and a clean run should not pay for the import

    close = difflib.get_close_matches(word, list(choices), n=1)
    return close[0] if close else None
