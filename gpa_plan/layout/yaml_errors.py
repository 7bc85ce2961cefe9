"""YAML syntax errors a layout author is likely to make, in plain words.

PyYAML's scanner and parser say what they expected ("found character that cannot start any
token", "mapping values are not allowed in this context"), not what is wrong in the file nor
how to fix it. The mistakes people really make are recognised here (a tab used to indent, an
unclosed quote, a key indented wrongly, ``key: value: value``, an unclosed ``[`` or ``{``, a
backslash escape YAML does not know, an alias with no anchor) and said with the fix. Both
loaders are understood: libyaml's wording and the pure-Python one's. Anything else keeps
PyYAML's own words (``None`` here).
"""

from __future__ import annotations

import re
from typing import NamedTuple

import yaml

# Line breaks as the YAML reader counts them.
_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


class SyntaxProblem(NamedTuple):
    message: str
    line: int  # 1-based
    column: int  # 1-based


def plain_syntax(err: yaml.MarkedYAMLError, text: str) -> SyntaxProblem | None:
    """``err`` in plain words, at the place to fix; None when it is not one recognised here."""
    mark = err.problem_mark
    if mark is None:
        return None
    problem = err.problem or ""
    context = err.context or ""
    lines = _BREAK.split(text)
    here = (mark.line + 1, mark.column + 1)
    start = err.context_mark
    opened = (start.line + 1, start.column + 1) if start is not None else None
    char = _char_at(lines, *here)

    if "tab" in problem or (char == "\t" and "cannot start any token" in problem):
        return _tab(lines, *here)
    if "cannot start any token" in problem and char:
        return SyntaxProblem(
            f"{char!r} cannot start a value in YAML (it is reserved); put the value in quotes "
            f"(\"{char}...\"), or remove the {char!r}",
            *here,
        )
    if "end of stream" in problem and "quoted scalar" in context and opened is not None:
        return _unclosed_quote(lines, opened)
    if "unknown escape character" in problem:
        return _unknown_escape(lines, *here)
    if "mapping values are not allowed" in problem:
        return _mapping_value(lines, *here)
    if "block " in context and _line(lines, here[0])[: here[1] - 1].strip(" -"):
        return SyntaxProblem(
            "text after a value that is already complete (a quoted string, or a `[...]` or "
            "`{...}`); quote the whole value, or start a comment with ` #`",
            *here,
        )
    if "block collection" in context and opened is not None:
        return SyntaxProblem(
            f"this line is indented to column {here[1]}, which does not fit the list that "
            f"starts at line {opened[0]}, column {opened[1]}: a key of an item lines up with "
            f"the first key after its `- `, and a new item starts with `- ` at column "
            f"{opened[1]}; indent it to one of those",
            *here,
        )
    if "block mapping" in context and opened is not None:
        return SyntaxProblem(
            f"this line does not fit the mapping that starts at line {opened[0]}, column "
            f"{opened[1]}: its keys start at column {opened[1]}, each followed by `:`; indent "
            "the line like them, or deeper under the key it belongs to",
            *here,
        )
    if "flow node" in context and _only_blanks_from(lines, *here):
        # `key: [` or `[1,` at the end of the file: the parser names the end, not the bracket.
        return SyntaxProblem(
            "the file ends inside a `[...]` list or `{...}` mapping that is not closed: add "
            "its closing `]` or `}` (an empty list is `[]`)",
            *here,
        )
    if "flow sequence" in context and opened is not None:
        return _unclosed_flow("list", "[", "]", opened, here)
    if "flow mapping" in context and opened is not None:
        return _unclosed_flow("mapping", "{", "}", opened, here)
    if "undefined alias" in problem:
        name = re.match(r"\*([^\s,\[\]{}]*)", _line(lines, here[0])[here[1] - 1 :])
        alias = name.group(1) if name else ""
        return SyntaxProblem(
            f"`*{alias}` is an alias, and no anchor `&{alias}` comes before it; define the "
            f"anchor first, or quote the value if the `*` is meant as text",
            *here,
        )
    return None


def _line(lines: list[str], line: int) -> str:
    return lines[line - 1] if 0 < line <= len(lines) else ""


def _only_blanks_from(lines: list[str], line: int, column: int) -> bool:
    """Whether nothing but white space follows (line, column): the file ends there."""
    rest = [_line(lines, line)[column - 1 :], *lines[line:]]
    return not "".join(rest).strip()


def _char_at(lines: list[str], line: int, column: int) -> str:
    text = _line(lines, line)
    return text[column - 1] if 0 < column <= len(text) else ""


def _tab(lines: list[str], line: int, column: int) -> SyntaxProblem:
    text = _line(lines, line)
    # libyaml marks the tab itself; find it on the line if the mark is elsewhere.
    if _char_at(lines, line, column) != "\t" and "\t" in text:
        column = text.index("\t") + 1
    if text[: column - 1].strip(" \t"):
        return SyntaxProblem(
            f"a tab is not allowed here in YAML (line {line}, column {column}); use spaces",
            line,
            column,
        )
    return SyntaxProblem(
        f"a tab is not allowed for indentation in YAML (line {line}, column {column}); "
        "indent with spaces",
        line,
        column,
    )


def _unclosed_quote(lines: list[str], opened: tuple[int, int]) -> SyntaxProblem:
    quote = _char_at(lines, *opened) or '"'
    kind = "double" if quote == '"' else "single"
    return SyntaxProblem(
        f"the {kind}-quoted string that starts here is never closed (the file ends inside "
        f"it); add the closing {quote} where the value ends",
        *opened,
    )


def _unknown_escape(lines: list[str], line: int, column: int) -> SyntaxProblem:
    text = _line(lines, line)
    # libyaml marks the backslash, the pure-Python scanner the character after it.
    at = text.rfind("\\", 0, column)
    if at >= 0:
        column = at + 1
    escape = text[column - 1 : column + 1] if text[column - 1 : column] == "\\" else "\\"
    return SyntaxProblem(
        f"`{escape}` is not an escape YAML knows in a double-quoted string; write `\\\\` for "
        "a backslash, or use single quotes, where a backslash is just a backslash",
        line,
        column,
    )


def _mapping_value(lines: list[str], line: int, column: int) -> SyntaxProblem:
    text = _line(lines, line)
    before = text[: column - 1]
    if re.search(r"\S:[ \t]", before):
        return SyntaxProblem(
            "a second `: ` on this line: YAML does not allow `key: value: value`; quote a "
            'value that holds ": " (name: "a: b"), or put each key on a line of its own',
            line,
            column,
        )
    above = next(
        (n for n in range(line - 1, 0, -1) if _line(lines, n).strip(" \t")[:1] not in ("", "#")),
        None,
    )
    indent = _indent(before)
    if above is not None and indent <= _indent(_line(lines, above)):
        return SyntaxProblem(
            f"line {above} has no `key:`, so YAML reads it and this line as one value, where "
            f"a `key:` is not allowed; give line {above} its `:` (`name: value`), or remove it",
            line,
            column,
        )
    where = f" than line {above}" if above is not None else ""
    return SyntaxProblem(
        f"this key is indented more{where}, so YAML reads it as part of a value, where a "
        "`key:` is not allowed; line it up with the other keys of its mapping",
        line,
        indent + 1,
    )


def _indent(text: str) -> int:
    """How far ``text`` is indented, a list item's ``- `` counting as indentation."""
    return len(text) - len(text.lstrip(" -"))


def _unclosed_flow(
    what: str, open_: str, close: str, opened: tuple[int, int], here: tuple[int, int]
) -> SyntaxProblem:
    return SyntaxProblem(
        f"the {what} opened with `{open_}` at line {opened[0]}, column {opened[1]} is not "
        f"closed: add the closing `{close}`, and separate its items with `,`",
        *here,
    )
