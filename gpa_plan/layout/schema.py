"""The layout format as JSON Schema (draft 2020-12), generated from the pydantic models.

Editors (yaml-language-server, VS Code) use it for completion and to flag unknown keys and
wrong types as you type. It describes the shape only: duplicate names, YAML 1.1 traps such as
``010`` and everything KVM checks are left to `gpa-plan check`.
"""

from __future__ import annotations

import json
from typing import Any

from gpa_plan.layout.models import Layout

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
TITLE = "gpa-plan layout"
DESCRIPTION = (
    "A KVM guest-physical address layout for gpa-plan: memslots "
    "(KVM_SET_USER_MEMORY_REGION), MMIO devices and reserved ranges. Shape only: "
    "`gpa-plan check` also reports overlaps, misalignment, duplicate names and what each "
    "guest access becomes."
)


def layout_schema() -> dict[str, Any]:
    """The JSON Schema of a layout file, with ``$schema``, title and description first."""
    generated = Layout.model_json_schema()
    head = {"$schema": JSON_SCHEMA_DIALECT}
    if "$id" in generated:
        head["$id"] = generated["$id"]
    head |= {"title": TITLE, "description": DESCRIPTION}
    return head | {key: value for key, value in generated.items() if key not in head}


def schema_json() -> str:
    """The schema as indented JSON text, ending in a newline."""
    return json.dumps(layout_schema(), indent=2) + "\n"
