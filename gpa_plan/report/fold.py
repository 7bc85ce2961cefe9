"""Fitting text output to a terminal's width without cutting anything.

A region table is drawn as a table when every column fits at full width with room left for the
``names`` column to hold its longest name (up to NAME_ROOM cells): names then wrap inside
their column. Below that width each region becomes a block of lines (the stacked layout)::

    0x0800_0000-0x0800_ffff  64 KiB  device  gicd
      read io-kernel, write io-kernel, fetch guest-fault

An address, a size, a kind and an outcome are never broken or shortened: they only move to a
line of their own; a name, a finding or an ``explain`` line wraps between words, its
continuation indented. Only a single word longer than the whole line is folded (cut into
pieces on consecutive lines, nothing left out); from 24 columns up no address (21 cells at
64 bits, after a 2-cell indent) or outcome is that long. Widths are counted in terminal cells
(``cells``): a CJK character takes two.

Output that is not going to a terminal (a pipe, a file) is not passed through here: it keeps
one region per line at its natural width, for grep and CI logs.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from gpa_plan.report.text import COLUMNS, NAMES, OUTCOME_COLUMNS, OUTCOME_STYLE

Part = tuple[str, str]  # (text, rich style or "")
Token = tuple[Part, ...]  # never broken across lines; trailing blanks are its separator

NAME_ROOM = 24  # a names column narrower than the longest name (up to this) is not drawn
INDENT = 2  # continuation lines and the outcome line of a stacked region

# Rich draws a table as `│`-separated columns padded by one space on each side (no outer edge);
# plain columns are two spaces apart.
RICH_GAPS = (3, -1)  # per column, and once per table
PLAIN_GAPS = (2, -2)


class Fit(NamedTuple):
    """Column widths that fit, and each row's names cell already wrapped to its width."""

    widths: list[int]
    names: list[list[str]]


def table_fit(rows: Sequence[Sequence[str]], width: int, gaps: tuple[int, int]) -> Fit | None:
    """The widths of COLUMNS for a table of ``rows`` that fits in ``width``, or None when the
    stacked layout must be used instead. Every column but ``names`` keeps its full width."""
    header = COLUMNS
    widths = [max([len(header[i]), *(cells(r[i]) for r in rows)]) for i in range(len(header))]
    per_column, once = gaps
    room = width - once - per_column * len(header) - sum(widths) + widths[NAMES]
    longest_word = max((cells(w) for r in rows for w in r[NAMES].split()), default=0)
    needed = min(widths[NAMES], max(len(header[NAMES]), min(longest_word, NAME_ROOM)))
    if room < needed:
        return None
    widths[NAMES] = min(widths[NAMES], room)
    names = [_wrapped_text(r[NAMES], widths[NAMES]) for r in rows]
    return Fit(widths, names)


def _wrapped_text(text: str, width: int) -> list[str]:
    if cells(text) <= width:
        return [text]
    lines = wrap(words(((text, ""),)), width, 0)
    return ["".join(t for t, _ in line) for line in lines]


def stacked(rows: Sequence[Sequence[str]], width: int) -> Iterator[list[Part]]:
    """The lines of the stacked layout: per region, ``start-end  size  kind  names`` (names
    wrapping onto indented lines), then ``read X, write Y, fetch Z`` indented."""
    heads = [(f"{r[0]}-{r[1]}", r[2], r[3]) for r in rows]
    pads = [max((cells(h[i]) for h in heads), default=0) for i in range(3)]
    if sum(pads) + 6 > width:  # aligned fields do not fit: single spaces, wrapping as needed
        pads = [0, 0, 0]
    labels = COLUMNS[-OUTCOME_COLUMNS:]
    for row, head in zip(rows, heads, strict=True):
        # start- and end are two tokens, so that a narrow line breaks between them.
        fields: list[Token] = [
            ((f"{row[0]}-", "bold"),),
            ((row[1], "bold"), (_gap(head[0], pads[0]), "")),
            ((row[2] + _gap(row[2], pads[1]), ""),),
            ((row[3] + _gap(row[3], pads[2]), ""),),
        ]
        names = row[NAMES]
        if sum(map(_length, fields)) + cells(names) <= width:  # most rows: no need to wrap
            line = [part for field in fields for part in field]
            if names:
                line.append((names, ""))
            _trim(line)
            yield line
        else:
            yield from wrap([*fields, *words(((names, ""),))], width, INDENT)
        outcomes: list[Token] = [((" " * INDENT, ""),)]
        for i, (label, outcome) in enumerate(zip(labels, row[-OUTCOME_COLUMNS:], strict=True)):
            sep = ", " if i < OUTCOME_COLUMNS - 1 else ""
            style = OUTCOME_STYLE.get(outcome, "")
            outcomes.append(((f"{label} ", ""), (outcome, style), (sep, "")))
        yield from wrap(outcomes, width, INDENT)


def _gap(text: str, pad: int) -> str:
    """The blanks after a field: up to ``pad`` cells, then two."""
    return " " * (max(pad - cells(text), 0) + 2)


_WORD = re.compile(r"\S+\s*|\s+")


def words(parts: Sequence[Part]) -> list[Token]:
    """``parts`` as tokens that may be wrapped between: each word with the blanks after it,
    a word that runs across parts (``io-exit`` styled inside a sentence) kept whole, and the
    blanks a line starts with as a token of their own."""
    tokens: list[list[Part]] = []
    open_word = False
    for text, style in parts:
        for match in _WORD.finditer(text):
            piece = match.group()
            if open_word and not piece[0].isspace():
                tokens[-1].append((piece, style))
            else:
                tokens.append([(piece, style)])
            open_word = not piece[-1].isspace()
    return [tuple(t) for t in tokens]


def wrap(tokens: Sequence[Token], width: int, indent: int) -> list[list[Part]]:
    """Lines of at most ``width`` cells (trailing blanks aside) holding ``tokens`` in order,
    each continuation line starting with ``indent`` more blanks than the first (which keeps
    its own leading blanks). A token longer than a whole line is folded (from 4 cells up, a
    wide character always fits on a line)."""
    if sum(map(_length, tokens)) <= width:  # the common case: it all fits on one line
        line = [part for token in tokens for part in token]
        _trim(line)
        return [line]
    lead = _length(tokens[0]) if tokens and not _text(tokens[0]).strip() else 0
    indent = min(lead + indent, max(width // 2, 0))
    lines: list[list[Part]] = [[]]
    used = 0
    for token in tokens:
        size = cells(_text(token).rstrip())
        if used and used + size > width:
            _trim(lines[-1])
            lines.append([(" " * indent, "")])
            used = indent
        if used + size > width:
            pieces = _fold(token, width - used, width - indent)
            for piece in pieces[:-1]:
                lines[-1].extend(piece)
                lines.append([(" " * indent, "")])
            token, used = pieces[-1], indent
        lines[-1].extend(token)
        used += _length(token)
    _trim(lines[-1])
    return lines


def _fold(token: Token, first: int, rest: int) -> list[Token]:
    """``token`` cut into pieces of ``first``, then ``rest``, cells (at least one character
    each)."""
    pieces: list[list[Part]] = [[]]
    room = max(first, 1)
    for text, style in token:
        while text:
            if room == 0:
                pieces.append([])
                room = max(rest, 1)
            chunk = _prefix(text, room)
            if not chunk:  # a double-width character and one cell left: start a new piece
                room = 0
                if pieces[-1]:
                    continue
                chunk = text[0]
            text = text[len(chunk):]
            pieces[-1].append((chunk, style))
            room = max(room - cells(chunk), 0)
    if len(pieces) > 1 and not "".join(text for text, _ in pieces[-1]).strip():
        pieces[-2].extend(pieces.pop())  # the blanks after a word stay its separator
    return [tuple(p) for p in pieces]


def _trim(line: list[Part]) -> None:
    while line and not line[-1][0].rstrip():
        line.pop()
    if line:
        text, style = line[-1]
        line[-1] = (text.rstrip(), style)


def _text(token: Token) -> str:
    return "".join(text for text, _ in token)


def _length(token: Token) -> int:
    return sum(cells(text) for text, _ in token)


def cells(text: str) -> int:
    """How many terminal cells ``text`` takes: two for a wide (East Asian) character, none
    for a combining one, else one, as terminals (and rich) count them."""
    if text.isascii():
        return len(text)
    return sum(_cell(c) for c in text)


def _cell(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _prefix(text: str, room: int) -> str:
    """The longest start of ``text`` that takes at most ``room`` cells."""
    if text.isascii():
        return text[:room]
    used = 0
    for i, char in enumerate(text):
        used += _cell(char)
        if used > room:
            return text[:i]
    return text
