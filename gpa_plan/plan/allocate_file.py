"""The `allocate` job on files: pick the layout, plan it, render it in the chosen format."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources

from gpa_plan import files
from gpa_plan.collector import paused
from gpa_plan.inputs import InputError, read_input
from gpa_plan.layout.errors import LayoutError
from gpa_plan.layout.loader import Document, load_bytes
from gpa_plan.layout.validate import validate_layout
from gpa_plan.plan import emit
from gpa_plan.plan.allocate import Allocation, PlanError, allocate
from gpa_plan.plan.inplace import InPlaceError, rewrite, verify

DEFAULT_FILE = "gpa-plan.yaml"


@dataclass(frozen=True)
class LayoutSource:
    """Where the layout comes from: a file, or a built-in KVM selftests default."""

    path: str
    raw: bytes
    builtin: bool

    @property
    def text(self) -> str:
        # Bytes decoded as they are: line endings and a BOM stay, so that --in-place edits at
        # the parser's offsets and writes the rest back unchanged. Bytes that are not UTF-8
        # never get this far: loading the same bytes reports them first.
        return self.raw.decode("utf-8", errors="replace")


class AllocateFailure(Exception):
    """Allocation failed; ``lines`` are the messages to print, each naming what failed."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("\n".join(lines))


def builtin_layout(arch: str) -> str:
    """The KVM selftests default layout for ``arch`` that ships with gpa-plan."""
    return (resources.files("gpa_plan") / "data" / f"selftests-{arch}.yaml").read_text("utf-8")


def pick_source(file: str | None, arch: str | None) -> LayoutSource:
    """FILE if given, else ./gpa-plan.yaml if present, else the built-in layout for ``arch``
    (arm64 by default).

    Raises InputError when FILE cannot be read, and when ./gpa-plan.yaml exists but cannot be
    read (unreadable, a directory, a FIFO, a dangling link): it is never silently passed over
    for the built-in layout.
    """
    if file is not None:
        return LayoutSource(file, read_input(file), False)
    if os.path.lexists(DEFAULT_FILE):
        try:
            return LayoutSource(DEFAULT_FILE, read_input(DEFAULT_FILE), False)
        except InputError as err:
            raise InputError(
                f"./{DEFAULT_FILE}",
                f"{err.reason}; it is the layout allocate reads when no FILE is given: pass "
                f"FILE, or remove or rename ./{DEFAULT_FILE} to start from the built-in layout",
            ) from None
    name = arch or "arm64"
    return LayoutSource(f"<built-in selftests-{name}>", builtin_layout(name).encode(), True)


def allocate_text(
    source: LayoutSource, ucall: bool, ucall_memslot: bool, fmt: str, in_place: bool
) -> tuple[str, list[str]]:
    """The output text and notes for the user; raises AllocateFailure with located messages."""
    with paused():
        return _allocate_text(source, ucall, ucall_memslot, fmt, in_place)


def _allocate_text(
    source: LayoutSource, ucall: bool, ucall_memslot: bool, fmt: str, in_place: bool
) -> tuple[str, list[str]]:
    doc = _load(source)
    try:
        layout = validate_layout(doc)
        allocation = allocate(layout, ucall=ucall, ucall_memslot=ucall_memslot)
    except LayoutError as err:
        raise _load_failure(source, err) from None
    except PlanError as err:
        raise AllocateFailure(
            [
                _located(doc, source.path, message, path, rule)
                for (message, path), rule in zip(err.problems, err.rules, strict=True)
            ]
        ) from None
    if in_place:
        # The parser's offsets count from after a BOM (the loader decodes with utf-8-sig).
        bom = "\ufeff" if source.text.startswith("\ufeff") else ""
        try:
            text = bom + rewrite(source.text[len(bom) :], doc, allocation)
            verify(text, source.path, allocation)
        except InPlaceError as err:
            raise AllocateFailure([f"{source.path}: error: {err}"]) from None
        return text, allocation.notes
    return _render(allocation, fmt, source.path), allocation.notes


def allocate_in_place(path: str, ucall: bool, ucall_memslot: bool) -> list[str]:
    """Fill in the `auto` values of the layout at ``path`` in its own text, and return the
    notes for the user.

    The file is read and replaced under an exclusive lock, so gpa-plan runs on one file take
    turns and each plans on the previous one's result. The new text must load and resolve to
    the same plan (checked before anything is written), and the file must not have changed
    since it was read. Raises AllocateFailure (the file left as it was) for a layout that
    cannot be planned or rewritten and for a file that changed meanwhile, OutputError when
    the file cannot be written.
    """
    try:
        with files.locked_update(path) as locked:
            source = LayoutSource(path, locked.raw, False)
            text, notes = allocate_text(source, ucall, ucall_memslot, "yaml", True)
            return notes + locked.replace(text)
    except files.FileChangedError as err:
        raise AllocateFailure([f"{path}: error: {err.reason}"]) from None
    except InputError as err:
        raise AllocateFailure([f"{path}: error: cannot read it: {err.reason}"]) from None


def _load(source: LayoutSource) -> Document:
    try:
        return load_bytes(source.raw, source.path)
    except LayoutError as err:
        raise _load_failure(source, err) from None


def _load_failure(source: LayoutSource, err: LayoutError) -> AllocateFailure:
    return AllocateFailure(
        [f"{source.path}:{p.line}:{p.column}: error[{p.rule}] {p.message}" for p in err.problems]
    )


def _located(
    doc: Document, file: str, message: str, path: tuple[str, int] | None, rule: str
) -> str:
    line, column = doc.position((*path, "base") if path is not None else ())
    return f"{file}:{line}:{column}: error[{rule}] {message}"


def _render(allocation: Allocation, fmt: str, source: str) -> str:
    document = allocation.document()
    if fmt == "json":
        return emit.to_json(document)
    if fmt == "c":
        return emit.to_c(allocation.regions(), allocation.layout.name, allocation.notes, source)
    if fmt == "env":
        return emit.to_env(allocation.regions(), allocation.notes, source)
    return emit.to_yaml(document, allocation.notes, source)
