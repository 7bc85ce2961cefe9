"""Render a resolved layout: YAML (valid input for `check`), JSON, a C header, shell variables.

Numbers are hex with `_` every four digits in YAML (PyYAML reads them as integers), plain hex
in C and shell, integers in JSON. In the C header and the shell file each region (memslot,
device, reserved range) gets BASE, SIZE and END, where END is one past the last byte
(BASE + SIZE), as in the half-open ranges the rest of gpa-plan uses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from gpa_plan.printable import printable
from gpa_plan.ranges import hex_addr

if TYPE_CHECKING:
    from gpa_plan.plan.allocate import Allocation

_NUMBER_KEYS = {"base", "size", "page_size", "guest_page_size", "address"}
_SECTIONS = ("memslots", "devices", "reserved", "ports")
_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]*")
# YAML 1.1 reads these as booleans or null when plain.
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def to_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"


# What a one-line YAML comment may not hold beyond what printable() escapes: surrogates, the
# byte-order mark (PyYAML refuses it inside a document) and the two non-characters U+FFFE and
# U+FFFF, none of them YAML printable (the YAML specification, section 5.1).
_UNFIT_FOR_COMMENT = re.compile("[\ud800-\udfff\ufeff\ufffe\uffff]")


def _comment_safe(text: str) -> str:
    """``text`` fit for a one-line comment in YAML, C and shell: what ``printable`` escapes for
    a terminal (line breaks, controls, bidi overrides) and what YAML refuses show as escapes
    (``\\n``, ``\\x7f``), and ``*/`` cannot close a C comment."""
    text = _UNFIT_FOR_COMMENT.sub(lambda m: ascii(m.group())[1:-1], printable(text))
    return text.replace("*/", "*_/")


def to_yaml(
    document: dict[str, Any],
    notes: list[str],
    source: str,
    *,
    made_by: str = "Resolved by gpa-plan allocate",
) -> str:
    """The layout as YAML, after comments: ``{made_by} from {source}.``, then each note."""
    lines = [f"# {_comment_safe(made_by)} from {_comment_safe(source)}."]
    lines += [f"# {_comment_safe(note)}" for note in notes]
    for key, value in document.items():
        if key in _SECTIONS:
            lines.append(f"{key}:" if value else f"{key}: []")
            for entry in value:
                lines.extend(yaml_entry_lines(entry, "  "))
        elif key == "observed":  # lists of entries, and scalars
            lines.append(f"{key}:" if value else f"{key}: {{}}")
            for name, inner in value.items():
                if isinstance(inner, list):
                    lines.append(f"  {name}:" if inner else f"  {name}: []")
                    for entry in inner:
                        lines.extend(yaml_entry_lines(entry, "    "))
                else:
                    lines.append(f"  {name}: {_yaml_scalar(name, inner)}")
        elif isinstance(value, dict):  # kvm_private: addresses by key
            lines.append(f"{key}:" if value else f"{key}: {{}}")
            lines.extend(f"  {k}: {hex_addr(v)}" for k, v in value.items())
        else:
            lines.append(f"{key}: {_yaml_scalar(key, value)}")
    return "\n".join(lines) + "\n"


def yaml_entry_lines(entry: dict[str, Any], indent: str) -> list[str]:
    """One block-list entry, its dash at ``indent``."""
    return [
        f"{indent}{'- ' if i == 0 else '  '}{key}: {_yaml_scalar(key, value)}"
        for i, (key, value) in enumerate(entry.items())
    ]


def _yaml_scalar(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and key in _NUMBER_KEYS:
        return hex_addr(value) if key in ("base", "address") or value >= 0x10000 else str(value)
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)  # a JSON string is a valid YAML double-quoted scalar


NamedRange = tuple[str, int, int]  # name, base, size


def _identifiers(regions: list[NamedRange], prefix: str) -> Iterator[NamedRange]:
    seen: set[str] = set()
    # The last suffix tried per identifier: thousands of names that read as one identifier
    # (`a.`, `a-`, `-a` ...) would otherwise each try every suffix taken before.
    tried: dict[str, int] = {}
    for name, base, size in regions:
        ident = prefix + re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").upper()
        n = tried.get(ident, 1)
        candidate = ident if n == 1 else f"{ident}_{n}"
        while candidate in seen:
            n += 1
            candidate = f"{ident}_{n}"
        tried[ident] = n
        seen.add(candidate)
        yield candidate, base, size


def _guard(layout_name: str | None) -> str:
    name = layout_name or "layout"
    return "GPA_PLAN_" + re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").upper() + "_H"


def to_c(regions: list[NamedRange], layout_name: str | None, notes: list[str], source: str) -> str:
    guard = _guard(layout_name)
    source = _comment_safe(source)
    lines = [f"/* Generated by gpa-plan allocate from {source}. END is BASE + SIZE. */"]
    lines += [f"/* {_comment_safe(note)} */" for note in notes]
    lines += [f"#ifndef {guard}", f"#define {guard}", ""]
    for ident, base, size in _identifiers(regions, "GPA_"):
        lines.append(f"#define {ident}_BASE 0x{base:x}ULL")
        lines.append(f"#define {ident}_SIZE 0x{size:x}ULL")
        lines.append(f"#define {ident}_END 0x{base + size:x}ULL")
    lines += ["", f"#endif /* {guard} */"]
    return "\n".join(lines) + "\n"


def to_env(regions: list[NamedRange], notes: list[str], source: str) -> str:
    source = _comment_safe(source)
    lines = [f"# Generated by gpa-plan allocate from {source}. END is BASE + SIZE."]
    lines += [f"# {_comment_safe(note)}" for note in notes]
    for ident, base, size in _identifiers(regions, "GPA_"):
        lines.append(f"{ident}_BASE=0x{base:x}")
        lines.append(f"{ident}_SIZE=0x{size:x}")
        lines.append(f"{ident}_END=0x{base + size:x}")
    return "\n".join(lines) + "\n"


# The `allocate --format` writers (gpa_plan.formats.ALLOCATE_FORMATS): an allocation and the
# name of its source in, the text out.


def allocation_yaml(allocation: Allocation, source: str) -> str:
    return to_yaml(allocation.document(), allocation.notes, source)


def allocation_json(allocation: Allocation, source: str) -> str:
    return to_json(allocation.document())


def allocation_c(allocation: Allocation, source: str) -> str:
    return to_c(allocation.regions(), allocation.layout.name, allocation.notes, source)


def allocation_env(allocation: Allocation, source: str) -> str:
    return to_env(allocation.regions(), allocation.notes, source)
