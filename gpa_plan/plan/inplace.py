"""`allocate --in-place`: write the plan into the source text, touching only `auto` values.

Each `base: auto` and `slot: auto` scalar is replaced where it stands (its span comes from the
YAML node marks), so comments, order and formatting stay. Entries that `--ucall` or
`--ucall-memslot` add are appended to the end of their block list, indented like its entries.
"""

from __future__ import annotations

from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gpa_plan.layout.loader import Document
from gpa_plan.plan.allocate import Allocation
from gpa_plan.plan.emit import yaml_entry_lines
from gpa_plan.ranges import hex_addr


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
    newline = "\r\n" if "\r\n" in text else "\n"
    added: dict[str, list[dict[str, Any]]] = {}
    for section, name in allocation.added:
        added.setdefault(section, []).append(
            next(e for e in document[section] if e["name"] == name)
        )
    for section, entries in added.items():
        start, end, new = _append(text, doc.root, section, entries)
        edits.append((start, end, new.replace("\n", newline)))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


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
    while isinstance(node, (MappingNode, SequenceNode)) and not node.flow_style and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(node, MappingNode) else last
    end: int = node.end_mark.index
    return end


def _append(
    text: str, root: MappingNode, section: str, entries: list[dict[str, Any]]
) -> tuple[int, int, str]:
    """One edit that adds ``entries`` at the end of the block list ``section``."""
    names = ", ".join(repr(e["name"]) for e in entries)
    seq = _value(root, section)
    if seq is None:
        lines = [f"{section}:", *(ln for e in entries for ln in yaml_entry_lines(e, "  "))]
        prefix = "" if text.endswith("\n") or not text else "\n"
        return len(text), len(text), prefix + "\n".join(lines) + "\n"
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
        line_end = text.find("\n", end)
        stop = len(text) if line_end == -1 else line_end + 1
        rest = text[end:stop].rstrip("\r\n")
        if not rest.strip():
            rest = ""
            while start > 0 and text[start - 1] in " \t":
                start -= 1
        lines = [ln for e in entries for ln in yaml_entry_lines(e, "  ")]
        return start, stop, rest + "\n" + "\n".join(lines) + ("\n" if line_end != -1 else "")
    first = seq.value[0]
    # The dash of the first entry sets the indentation (`- name:` or `-   name:`).
    line_start = text.rfind("\n", 0, first.start_mark.index) + 1
    dash = text.rfind("-", line_start, first.start_mark.index)
    indent = " " * (dash - line_start if dash != -1 else max(first.start_mark.column - 2, 0))
    line_end = text.find("\n", _content_end(seq.value[-1]))
    insert_at = len(text) if line_end == -1 else line_end + 1
    block = "\n".join(ln for e in entries for ln in yaml_entry_lines(e, indent)) + "\n"
    if insert_at == len(text) and not text.endswith("\n"):
        block = "\n" + block
    return insert_at, insert_at, block
