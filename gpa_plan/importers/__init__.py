"""Layouts from what VMMs already describe: QEMU's memory tree (`info mtree`) and device trees.

Each importer turns its input into an `Imported`: a layout document (plain data in the layout
format, keys in the format's order, ready for ``gpa_plan.plan.emit``) and notes for the reader
(what was skipped or guessed, and why), which `gpa-plan import` writes as YAML comments. An
input that cannot be read raises `ImportFailure` with the line and column (both 1-based; line
0 when the input has no lines, such as a DTB) where reading stopped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from gpa_plan.check.findings import Finding


class Imported(NamedTuple):
    document: dict[str, Any]
    notes: list[str]


class ImportFailure(Exception):
    """The input is not what the importer reads; ``line`` is 1-based, 0 for binary input, and
    ``column`` the 1-based character of that line the problem starts at (1: the whole line)."""

    def __init__(self, message: str, line: int = 0, column: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column

    def finding(self, file: str) -> Finding:
        """This failure as the finding `gpa-plan import` reports for ``file`` (rule `import`;
        line 0 names the file alone)."""
        from gpa_plan.check.findings import ERROR, IMPORT, Finding

        return Finding(IMPORT, ERROR, self.message, file, self.line, self.column)


GUEST_PAGE = 4096  # catalog sizes that follow the guest page (the ucall page) use this


def catalog_size(device_type: str, vcpus: int | None = None) -> int:
    """The size KVM gives a catalog device (a vGIC frame, a LAPIC page ...) of an import."""
    from gpa_plan.arch.devices import CATALOG

    return CATALOG[device_type].size_for(vcpus=vcpus, guest_page_size=GUEST_PAGE, size=None)


def entry_end(entry: dict[str, Any]) -> int:
    """One past the last byte of a memslot or device entry of an imported document."""
    size = entry.get("size")
    if size is None:
        size = catalog_size(entry["type"], entry.get("vcpus"))
    end: int = entry["base"] + size
    return end


def pa_bits_needed(arch: str, entries: list[dict[str, Any]]) -> int | None:
    """The ``pa_bits`` a document must state for its entries to fit, or None when the
    architecture's default already holds them: the smallest width the architecture takes
    (``ArchSpec.pa_bits_for``; on riscv64 a G-stage width)."""
    from gpa_plan.arch import ARCHES

    spec = ARCHES[arch]
    bits = spec.pa_bits_for(max((entry_end(e) for e in entries), default=0))
    return None if bits == spec.default_pa_bits else bits
