"""The `allocate` job on files: pick the layout, plan it, render it in the chosen format."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources

from gpa_plan import files
from gpa_plan.arch import SELFTESTS_DEFAULT_ARCH
from gpa_plan.check.findings import ERROR, Finding, problem_findings
from gpa_plan.collector import paused
from gpa_plan.formats import ALLOCATE_FORMATS
from gpa_plan.inputs import InputError, read_input
from gpa_plan.layout.errors import LayoutError
from gpa_plan.layout.loader import Document, load_bytes
from gpa_plan.layout.validate import validate_layout
from gpa_plan.plan.allocate import PlanError, allocate
from gpa_plan.plan.inplace import InPlaceError, rewrite, verify

DEFAULT_FILE = "gpa-plan.yaml"
# The rule of a finding that --in-place cannot rewrite the file (it is left as it was).
IN_PLACE = "in-place"


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
    """Allocation failed; ``findings`` say what failed and where, as `check` says it: the
    layout's load problems, `no-room`, the rules the plan would break, or `in-place` (line 0:
    about the whole file) when the file cannot be rewritten."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        super().__init__("\n".join(f.message for f in findings))


def _in_place_failure(path: str, message: str) -> AllocateFailure:
    return AllocateFailure([Finding(IN_PLACE, ERROR, message, path, 0, 0)])


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
    name = arch or SELFTESTS_DEFAULT_ARCH
    return LayoutSource(f"<built-in selftests-{name}>", builtin_layout(name).encode(), True)


def allocate_text(
    source: LayoutSource, ucall: bool, ucall_memslot: bool, fmt: str, in_place: bool
) -> tuple[str, list[str]]:
    """The output text (``fmt``: a name of gpa_plan.formats.ALLOCATE_FORMATS) and notes for
    the user; raises AllocateFailure with located findings."""
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
            raise _in_place_failure(source.path, str(err)) from None
        return text, allocation.notes
    return ALLOCATE_FORMATS.writer(fmt)(allocation, source.path), allocation.notes


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
        raise _in_place_failure(path, err.reason) from None
    except InputError as err:
        raise _in_place_failure(path, f"cannot read it: {err.reason}") from None


def _load(source: LayoutSource) -> Document:
    try:
        return load_bytes(source.raw, source.path)
    except LayoutError as err:
        raise _load_failure(source, err) from None


def _load_failure(source: LayoutSource, err: LayoutError) -> AllocateFailure:
    return AllocateFailure(list(problem_findings(source.path, err.problems)))


def _located(
    doc: Document, file: str, message: str, path: tuple[str, int] | None, rule: str
) -> Finding:
    line, column = doc.position((*path, "base") if path is not None else ())
    return Finding(rule, ERROR, message, file, line, column)

