"""`gpa-plan import`: run an importer on a file's bytes and render the layout as YAML."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpa_plan.importers import Imported
from gpa_plan.importers.registry import IMPORTERS


def import_layout(kind: str, data: bytes, options: Mapping[str, Any] | None = None) -> Imported:
    """The layout ``data`` describes, read by the importer named ``kind``
    (gpa_plan.importers.registry), with its ``options`` (the others are left out). Raises
    ImportFailure, and KeyError for an unknown ``kind``."""
    return IMPORTERS[kind].read(data, options or {})


def import_yaml(
    kind: str, data: bytes, source: str, options: Mapping[str, Any] | None = None
) -> str:
    """The imported layout as YAML: a comment naming the source, the importer's notes, then
    the layout. The text is loaded and validated here as `check` would load it, so a wrong
    importer or emitter fails loudly (LayoutError) instead of writing a file `check` refuses."""
    from gpa_plan.collector import paused
    from gpa_plan.layout.loader import load_text
    from gpa_plan.layout.validate import validate_layout
    from gpa_plan.plan.emit import to_yaml

    with paused():  # many long-lived, acyclic objects: see gpa_plan.collector
        imported = import_layout(kind, data, options)
        text = to_yaml(
            imported.document,
            imported.notes,
            source,
            made_by=f"Imported by gpa-plan import {kind}",
        )
        validate_layout(load_text(text, source))
    return text
