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
    for section, name in allocation.added:
        entry = next(e for e in document[section] if e["name"] == name)
        edits.append(_append(text, doc.root, section, entry))
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


def _append(
    text: str, root: MappingNode, section: str, entry: dict[str, Any]
) -> tuple[int, int, str]:
    seq = _value(root, section)
    if seq is None:
        block = "\n".join([f"{section}:", *yaml_entry_lines(entry, "  ")]) + "\n"
        prefix = "" if text.endswith("\n") or not text else "\n"
        return len(text), len(text), prefix + block
    if not isinstance(seq, SequenceNode):
        raise InPlaceError(f"`{section}` is not a list; cannot add {entry['name']!r} in place")
    if seq.flow_style or not seq.value:
        if seq.value:
            raise InPlaceError(
                f"`{section}` is a flow-style list; add {entry['name']!r} by hand or make the "
                "list block-style, then run again"
            )
        # `section: []`: replace the empty list with a block list.
        block = "\n" + "\n".join(yaml_entry_lines(entry, "  "))
        return seq.start_mark.index, seq.end_mark.index, block
    indent = " " * max(seq.value[0].start_mark.column - 2, 0)
    last_end = seq.value[-1].end_mark.index
    line_end = text.find("\n", last_end - 1 if last_end else 0)
    insert_at = len(text) if line_end == -1 else line_end + 1
    block = "\n".join(yaml_entry_lines(entry, indent)) + "\n"
    if insert_at == len(text) and not text.endswith("\n"):
        block = "\n" + block
    return insert_at, insert_at, block
