"""`gpa-plan host` in text: the facts of the host's KVM, where each was read, and the
capabilities (the JSON form is the document gpa_plan.probe.host gives, as it is)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gpa_plan.printable import printable


def host_text(facts: dict[str, Any]) -> str:
    """A table of ``facts`` (gpa_plan.probe.host.host_facts()): one line per fact with its
    value and source (or why it is unknown), the vendor module's parameters read, then every
    capability."""
    kernel = facts.get("kernel", {})
    lines = [
        f"kernel   {kernel.get('release')} ({kernel.get('machine')})",
        f"arch     {facts.get('arch') or 'not one gpa-plan reads host facts of'}",
        "",
    ]
    values: dict[str, Any] = facts.get("facts", {})
    sources: dict[str, str] = facts.get("sources", {})
    unknown: dict[str, str] = facts.get("unknown", {})
    rows = [("fact", "value", "read from")]
    for name, value in values.items():
        if value is None:
            rows.append((name, "unknown", unknown.get(name, "")))
        else:
            rows.append((name, json.dumps(value), sources.get(name, "")))
    parameters: dict[str, str] = facts.get("parameters", {})
    if parameters:
        rows.append(("", "", ""))
        rows.append(("parameter", "value", ""))
        rows.extend((name, value, "") for name, value in parameters.items())
    rows.append(("", "", ""))
    rows.append(("capability", "value", ""))
    rows.extend((name, str(value), "") for name, value in facts.get("capabilities", {}).items())
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    for name, value, source in rows:
        line = f"{name:<{width[0]}}  {value:<{width[1]}}  {source}" if name else ""
        lines.append(printable(line.rstrip()))
    return "\n".join(lines) + "\n"


def host_json(facts: dict[str, Any]) -> str:
    """The document as it is, indented: the host profile `--host` reads."""
    return json.dumps(facts, indent=2) + "\n"


HOST_FORMATS: dict[str, Callable[[dict[str, Any]], str]] = {"text": host_text, "json": host_json}
