"""What the CI formats (github, sarif) share: each finding once per file, and file paths
relative to the checkout.

`check --arch arm64 --arch x86_64` gives one result per (file, arch), so a finding that both
architectures see would otherwise be annotated twice. Here it is reported once, and a finding
that only some of the checked architectures see says which.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gpa_plan.check.findings import NOTE, Finding
from gpa_plan.check.run import CheckResult


@dataclass(frozen=True)
class ReportedFinding:
    """A finding as a CI format shows it: once per file, with the arches it was found under."""

    finding: Finding
    arches: tuple[str, ...]
    only_some_arches: bool

    @property
    def text(self) -> str:
        """The finding's message, plus which arches see it when not all checked ones do."""
        # A note names the arch it is about already.
        if not self.only_some_arches or self.finding.severity == NOTE:
            return self.finding.message
        return f"{self.finding.message} (found under {', '.join(self.arches)} only)"


def unique_findings(results: Sequence[CheckResult]) -> list[ReportedFinding]:
    """Every distinct finding once per checked file, files in the order checked, then by
    position. A finding can name another file (an --elf program): it still counts as its
    layout's, whose checked arches decide whether it was seen under all of them."""
    checked: dict[str, list[str]] = {}
    found: dict[tuple[str, Finding], list[str]] = {}
    for result in results:
        arches = checked.setdefault(result.file, [])
        if result.arch is not None and result.arch not in arches:
            arches.append(result.arch)
        for finding in result.findings:
            seen_under = found.setdefault((result.file, finding), [])
            if result.arch is not None and result.arch not in seen_under:
                seen_under.append(result.arch)
    order = {file: index for index, file in enumerate(checked)}

    def key(item: tuple[str, Finding]) -> tuple[int, tuple[str, int, int, str]]:
        return order[item[0]], item[1].sort_key()

    return [
        ReportedFinding(finding, tuple(arches), set(arches) != set(checked[file]))
        for (file, finding), arches in sorted(found.items(), key=lambda kv: key(kv[0]))
    ]


def relative_posix(path: str, root: Path) -> str | None:
    """``path`` as a POSIX path relative to ``root``, or None when it lies outside ``root``."""
    for resolve in (_lexical, _real):
        try:
            return resolve(Path(path), root).relative_to(resolve(root, root)).as_posix()
        except ValueError:
            continue
    return None


def _lexical(path: Path, root: Path) -> Path:
    # Without following symlinks first: a link inside the checkout stays inside it.
    return Path(os.path.normpath(root / path))


def _real(path: Path, root: Path) -> Path:
    return (root / path).resolve()
