"""`allocate --in-place`: write the plan into the source text, touching only `auto` values.

Each `base: auto` and `slot: auto` scalar is replaced where it stands (its span comes from the
YAML node marks), so comments, order and formatting stay. Entries that `--ucall` or
`--ucall-memslot` add are appended to the end of their block list, indented like its entries.
"""

from __future__ import annotations

import re
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gpa_plan.layout.errors import LayoutError
from gpa_plan.layout.loader import Document, load_bytes
from gpa_plan.layout.validate import validate_layout
from gpa_plan.plan.allocate import Allocation, PlanError, allocate
from gpa_plan.plan.emit import yaml_entry_lines
from gpa_plan.ranges import hex_addr

# What YAML 1.1 (libyaml) ends a line with: CRLF, CR, LF, NEL, LINE and PARAGRAPH SEPARATOR.
_BREAKS = "\r\n\x85\u2028\u2029"
_BREAK = re.compile(f"\r\n|[{_BREAKS}]")
_DOCUMENT_END = re.compile(f"(?:^|(?<=[{_BREAKS}]))\\.\\.\\.(?=[ \t{_BREAKS}]|\\Z)")


class InPlaceError(Exception):
    """The source text cannot take the plan without reformatting it."""


def rewrite(text: str, doc: Document, allocation: Allocation) -> str:
    document = allocation.document()
    edits: list[tuple[int, int, str]] = []
    for section in ("memslots", "devices"):
        seq = _value(doc.root, section)
        if not isinstance(seq, SequenceNode):
            continue
        for item, resolved in zip(seq.value, document.get(section, []), strict=False):
            for key, render in (("base", hex_addr), ("slot", str)):
                node = _value(item, key)
                if isinstance(node, ScalarNode) and node.value == "auto":
                    edits.append(
                        (node.start_mark.index, node.end_mark.index, render(resolved[key]))
                    )
    newline = _newline(text)
    if allocation.added and not text.endswith(tuple(_BREAKS)):
        # Lines are added, perhaps at the end: end the last line first, as a text file's
        # lines end. The offsets of the parse before it stay as they are.
        edits.extend(_strip_last_block_scalar(text, doc.root))
        text += newline
    added: dict[str, list[dict[str, Any]]] = {}
    for section, name in allocation.added:
        added.setdefault(section, []).append(
            next(e for e in document[section] if e["name"] == name)
        )
    for section, entries in added.items():
        start, end, new = _append(text, doc.root, section, entries)
        edits.append((start, end, new.replace("\n", newline)))
    # Pieces joined once: splicing each edit into the whole text copied it once per `auto`.
    # Where entries added to the last list and a new section go at one place (the end of the
    # text), the entries come first (_placed_after).
    pieces: list[str] = []
    done = 0
    for start, end, new in sorted(edits, key=_placed_after):
        pieces += (text[done:start], new)
        done = end
    pieces.append(text[done:])
    return "".join(pieces)


def verify(text: str, name: str, allocation: Allocation) -> None:
    """Refuse (InPlaceError) a rewritten ``text`` that `check` would not load, that still has
    an `auto`, or that resolves to other addresses than ``allocation``: the last guard before
    the file is replaced, for source shapes the rewriter does not know."""
    try:
        doc = load_bytes(text.encode("utf-8"), name)
        again = allocate(validate_layout(doc))
    except LayoutError as err:
        p = err.problems[0]
        raise _unsafe(f"it would not load: line {p.line}, column {p.column}: {p.message}") from None
    except PlanError:
        raise _unsafe("it would not resolve to the same plan") from None
    left = [
        f"{section[:-1]} {entry.get('name')!r}"
        for section in ("memslots", "devices")
        for entry in doc.data.get(section) or ()
        if isinstance(entry, dict) and "auto" in (entry.get("base"), entry.get("slot"))
    ]
    if left:
        raise _unsafe(f"`auto` would be left in {', '.join(left)}")
    if again.document() != allocation.document():
        raise _unsafe("it would not resolve to the same plan")


def _placed_after(edit: tuple[int, int, str]) -> tuple[int, bool]:
    """Sort key: position, then whether the edit is a new section (``key:`` before any
    entry), which goes after entries added to a list at the same position."""
    start, _, new = edit
    return start, not new.lstrip(_BREAKS + " \t").startswith("-")


def _unsafe(why: str) -> InPlaceError:
    return InPlaceError(
        f"cannot fill in the `auto` values of this file in place ({why}); the file is left "
        "as it was: fill them in by hand, or write the resolved layout to another file with -o"
    )


def _value(node: Node, key: str) -> Node | None:
    if isinstance(node, MappingNode):
        for k, v in node.value:
            if isinstance(k, ScalarNode) and k.value == key:
                found: Node = v
                return found
    return None


def _content_end(node: Node) -> int:
    """Where the last value inside ``node`` ends. A block collection's own end mark lies past
    the blank lines and comments after it, which belong to whatever follows."""
    end: int = _last_value(node).end_mark.index
    return end


def _last_value(node: Node) -> Node:
    while isinstance(node, (MappingNode, SequenceNode)) and not node.flow_style and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(node, MappingNode) else last
    return node


def _after_entry(text: str, node: Node) -> int:
    """Where a line after the block entry ``node`` can go: after the line its last value
    ends on. A block scalar (``|``, ``>``) ends at the start of a line, past its line break
    and any blank lines after it; those blank lines stay after the new line, unless the
    scalar keeps them (``|+``)."""
    last = _last_value(node)
    end: int = last.end_mark.index
    if not _at_line_start(text, end):
        return _line_after(text, end)
    header = text[last.start_mark.index : _line_after(text, last.start_mark.index)]
    if isinstance(last, ScalarNode) and last.style in ("|", ">") and "+" not in header:
        while end > last.start_mark.index:
            start = _line_start(text, end - 1)
            if text[start:end].strip(" \t" + _BREAKS):
                break
            end = start
    return end


_BLOCK_HEADER = re.compile(r"[|>]([1-9+-]{0,2})")


def _strip_last_block_scalar(text: str, root: Node) -> list[tuple[int, int, str]]:
    """The edit that keeps the value of a block scalar that ends the text with no line break
    after it, once a line break is added: its value has no trailing line break, which stays
    so only under strip chomping (``|-``); ``|`` or ``|+`` would take in the new break."""
    last = _last_value(root)
    if not (
        isinstance(last, ScalarNode)
        and last.style in ("|", ">")
        and last.end_mark.index == len(text)
        and not text.endswith(tuple(_BREAKS))
    ):
        return []
    header = _BLOCK_HEADER.match(text, last.start_mark.index)
    if header is None:
        return []
    indicators = header[1]
    stripped = indicators.replace("+", "").replace("-", "") + "-"
    return [(header.start(1), header.end(1), stripped)]


def _newline(text: str) -> str:
    """The text's own line break (the first it uses), so added lines match the rest."""
    found = _BREAK.search(text)
    return found.group() if found else "\n"


def _line_after(text: str, index: int) -> int:
    """The index just past the line break that ends the line holding ``index``."""
    found = _BREAK.search(text, index)
    return found.end() if found else len(text)


def _line_start(text: str, index: int) -> int:
    return max(text.rfind(c, 0, index) for c in _BREAKS) + 1


def _at_line_start(text: str, index: int) -> bool:
    return index == 0 or text[index - 1] in _BREAKS


def _document_end(text: str, root: MappingNode) -> int:
    """Where the root mapping's document ends: at a ``...`` marker, else the end of text."""
    found = _DOCUMENT_END.search(text, _content_end(root))
    return found.start() if found else len(text)


def _append(
    text: str, root: MappingNode, section: str, entries: list[dict[str, Any]]
) -> tuple[int, int, str]:
    """One edit that adds ``entries`` at the end of the block list ``section``; its lines
    end in ``\n``, which the caller turns into the text's own line break."""
    names = ", ".join(repr(e["name"]) for e in entries)
    if root.flow_style:
        raise InPlaceError(
            f"the layout is one flow-style mapping ({{...}}); add {names} by hand or write "
            "it block-style, then run again"
        )
    # The root's keys may all be indented (a document indented as a whole).
    indent = " " * root.start_mark.column
    seq = _value(root, section)
    if seq is None:
        lines = [
            f"{indent}{section}:",
            *(ln for e in entries for ln in yaml_entry_lines(e, indent + "  ")),
        ]
        at = _document_end(text, root)
        prefix = "" if at == 0 or _at_line_start(text, at) else "\n"
        return at, at, prefix + "\n".join(lines) + "\n"
    if not isinstance(seq, SequenceNode):
        raise InPlaceError(f"`{section}` is not a list; cannot add {names} in place")
    if seq.flow_style or not seq.value:
        if seq.value:
            raise InPlaceError(
                f"`{section}` is a flow-style list; add {names} by hand or make the "
                "list block-style, then run again"
            )
        # `section: []`: drop the `[]`, keep what follows it on the line (a comment), and
        # put a block list on the lines below.
        start, end = seq.start_mark.index, seq.end_mark.index
        stop = _line_after(text, end)
        rest = text[end:stop].rstrip(_BREAKS)
        if not rest.strip():
            rest = ""
            while start > 0 and text[start - 1] in " \t":
                start -= 1
        lines = [ln for e in entries for ln in yaml_entry_lines(e, indent + "  ")]
        ending = "\n" if stop > end and text[stop - 1] in _BREAKS else ""
        return start, stop, rest + "\n" + "\n".join(lines) + ending
    first = seq.value[0]
    # The dash of the first entry sets the indentation (`- name:` or `-   name:`).
    line_start = _line_start(text, first.start_mark.index)
    dash = text.rfind("-", line_start, first.start_mark.index)
    indent = " " * (dash - line_start if dash != -1 else max(first.start_mark.column - 2, 0))
    insert_at = _after_entry(text, seq.value[-1])
    block = "\n".join(ln for e in entries for ln in yaml_entry_lines(e, indent)) + "\n"
    if insert_at == len(text) and not _at_line_start(text, insert_at):
        block = "\n" + block
    return insert_at, insert_at, block
