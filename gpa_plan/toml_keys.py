"""Whether a TOML text may define a table, found by scanning its keys without parsing it.

`pyproject.toml` belongs to its project: gpa-plan parses one only when it may hold
``[tool.gpa-plan]``, so a file that never defines that table is not read further, and cannot
be called broken. The scan follows TOML's structure (table headers, dotted keys, inline tables,
arrays, the four kinds of string, comments), so every form of the table is seen, a header
inside a multi-line string or a nested array is not taken for one, and a key's own text, not a
value that happens to read ``gpa-plan``, decides. It never fails: text that is not TOML is
scanned as far as it goes, and tomllib gives the error if it may hold the table. Conservative
where cheap: a quoted key with a backslash escape matches any name.
"""

from __future__ import annotations

import re

_ANY = None  # a key segment that may spell any name (a quoted key with escapes)
Segment = str | None

_BLANK = re.compile(r"(?:[ \t\r\n]|#[^\n]*)*")
_SPACES = re.compile(r"[ \t]*")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_BASIC = re.compile(r'"((?:[^"\\\n]|\\.)*)"?')
_LITERAL = re.compile(r"'([^'\n]*)'?")
_BARE_VALUE = re.compile(r"[^ \t\r\n,\]}#]*")
_QUOTE_RUN = {'"""': re.compile('"*'), "'''": re.compile("'*")}
# Deeper nesting of arrays and inline tables is left to tomllib, which reports it.
MAX_DEPTH = 64


def may_define(text: str, table: tuple[str, str]) -> bool:
    """Whether ``text`` may define the table ``table`` (two key segments, such as
    ``("tool", "gpa-plan")``) in any form: its header or a sub-table's, dotted keys, or an
    inline table."""
    if table[1] not in text and "\\" not in text:
        return False  # no key can spell the name: most files stop here
    return _Scan(text, table).statements()


def _end(pattern: re.Pattern[str], text: str, pos: int) -> int:
    """Where ``pattern`` (one that also matches the empty string) ends when matched at pos."""
    found = pattern.match(text, pos)
    assert found is not None
    return found.end()


class _Scan:
    def __init__(self, text: str, table: tuple[str, str]) -> None:
        self.text = text
        self.table = table
        self.pos = 0
        self.depth = 0

    def matches(self, path: tuple[Segment, ...]) -> bool:
        return len(path) >= 2 and all(
            seg is _ANY or seg == want for seg, want in zip(path[:2], self.table, strict=True)
        )

    def statements(self) -> bool:
        text = self.text
        current: tuple[Segment, ...] = ()
        while True:
            self.pos = _end(_BLANK, text, self.pos)
            if self.pos >= len(text):
                return False
            if text[self.pos] == "[":
                self.pos += 2 if text.startswith("[[", self.pos) else 1
                current = self.key()
                if self.matches(current):
                    return True
            else:
                key = self.key()
                if key and self.equals() and (
                    self.matches(current + key) or self.value(current + key)
                ):
                    return True
            self.skip_line()

    def key(self) -> tuple[Segment, ...]:
        """A dotted key from here (empty when there is none)."""
        text = self.text
        segments: list[Segment] = []
        while True:
            self.pos = _end(_SPACES, text, self.pos)
            char = text[self.pos : self.pos + 1]
            if char == '"':
                found = _BASIC.match(text, self.pos)
                assert found is not None
                segments.append(_ANY if "\\" in found[1] else found[1])
            elif char == "'":
                found = _LITERAL.match(text, self.pos)
                assert found is not None
                segments.append(found[1])
            else:
                found = _BARE_KEY.match(text, self.pos)
                if found is None:
                    return tuple(segments)
                segments.append(found[0])
            self.pos = _end(_SPACES, text, found.end())
            if not text.startswith(".", self.pos):
                return tuple(segments)
            self.pos += 1

    def equals(self) -> bool:
        if self.text.startswith("=", self.pos):
            self.pos += 1
            return True
        return False

    def value(self, path: tuple[Segment, ...]) -> bool:
        """Skip the value from here; whether an inline table in it defines the table."""
        text = self.text
        self.pos = _end(_SPACES, text, self.pos)
        char = text[self.pos : self.pos + 1]
        if char in ("{", "["):
            if self.depth >= MAX_DEPTH:
                return True  # too deep to follow here: let the parser decide
            self.depth += 1
            # Tables inside an array are array elements, never the table itself.
            found = self.inline_table(path) if char == "{" else self.sequence((*path, ""))
            self.depth -= 1
            return found
        if text.startswith(('"""', "'''"), self.pos):
            self.multiline_string()
        elif char == '"':
            self.pos = _end(_BASIC, text, self.pos)
        elif char == "'":
            self.pos = _end(_LITERAL, text, self.pos)
        else:
            self.pos = _end(_BARE_VALUE, text, self.pos)
        return False

    def inline_table(self, path: tuple[Segment, ...]) -> bool:
        text = self.text
        self.pos += 1
        while True:
            self.pos = _end(_BLANK, text, self.pos)
            char = text[self.pos : self.pos + 1]
            if char in ("}", ""):
                self.pos += 1
                return False
            if char == ",":
                self.pos += 1
                continue
            key = self.key()
            if not key:
                self.pos += 1  # not TOML: step over it
            elif self.equals() and (self.matches(path + key) or self.value(path + key)):
                return True

    def sequence(self, path: tuple[Segment, ...]) -> bool:
        text = self.text
        self.pos += 1
        while True:
            self.pos = _end(_BLANK, text, self.pos)
            char = text[self.pos : self.pos + 1]
            if char in ("]", ""):
                self.pos += 1
                return False
            start = self.pos
            if char in ",}=":
                self.pos += 1
            elif self.value(path):
                return True
            if self.pos == start:
                self.pos += 1

    def multiline_string(self) -> None:
        text = self.text
        quotes = text[self.pos : self.pos + 3]
        search = self.pos + 3
        while True:
            end = text.find(quotes, search)
            if end < 0:
                self.pos = len(text)
                return
            backslash = end
            while quotes == '"""' and text[backslash - 1] == "\\":
                backslash -= 1
            if (end - backslash) % 2:
                search = end + 1  # an escaped quote
                continue
            # One or two more quotes right before the closing three belong to the string.
            run = _end(_QUOTE_RUN[quotes], text, end) - end
            self.pos = end + min(run, 5)
            return

    def skip_line(self) -> None:
        newline = self.text.find("\n", self.pos)
        self.pos = len(self.text) if newline < 0 else newline + 1
