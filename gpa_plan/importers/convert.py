"""`gpa-plan import`: run an importer on a file's bytes and render the layout as YAML."""

from __future__ import annotations

import codecs

from gpa_plan.importers import Imported, ImportFailure

KINDS = ("qemu-mtree", "dtb")


def import_layout(
    kind: str, data: bytes, arch: str | None = None, page_size: int | None = None
) -> Imported:
    """The layout ``data`` describes, read as ``kind``; ``arch`` and ``page_size`` (the host
    page) are for qemu-mtree. Raises ImportFailure."""
    if kind == "qemu-mtree":
        from gpa_plan.importers.qemu_mtree import import_qemu_mtree
        from gpa_plan.importers.qemu_mtree.text import LINE_END

        bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
        try:
            text = data[bom:].decode("utf-8")  # a dump saved by an editor may start with a BOM
        except UnicodeDecodeError as err:
            # Offsets count from the start of the file, BOM included, as an editor's do; the
            # column counts the characters before the byte on its line.
            where = bom + err.start
            lines = LINE_END.split(data[bom:where].decode("utf-8"))
            raise ImportFailure(
                f"not UTF-8 text (byte 0x{data[where]:02x} at offset {where}): expected the "
                "output of the QEMU monitor command `info mtree -f`",
                len(lines),
                len(lines[-1]) + 1,
            ) from None
        return import_qemu_mtree(text, arch, page_size)
    if kind == "dtb":
        from gpa_plan.importers.dtb import import_dtb

        return import_dtb(data)
    raise ValueError(f"unknown import kind {kind!r}; expected one of {KINDS}")


def import_yaml(
    kind: str,
    data: bytes,
    source: str,
    arch: str | None = None,
    page_size: int | None = None,
) -> str:
    """The imported layout as YAML: a comment naming the source, the importer's notes, then
    the layout. The text is loaded and validated here as `check` would load it, so a wrong
    importer or emitter fails loudly (LayoutError) instead of writing a file `check` refuses."""
    from gpa_plan.collector import paused
    from gpa_plan.layout.loader import load_text
    from gpa_plan.layout.validate import validate_layout
    from gpa_plan.plan.emit import to_yaml

    with paused():  # many long-lived, acyclic objects: see gpa_plan.collector
        imported = import_layout(kind, data, arch, page_size)
        text = to_yaml(
            imported.document,
            imported.notes,
            source,
            made_by=f"Imported by gpa-plan import {kind}",
        )
        validate_layout(load_text(text, source))
    return text
