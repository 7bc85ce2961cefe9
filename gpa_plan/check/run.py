"""Check a layout: load, validate, place `auto` entries, partition, run every rule."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from gpa_plan.arch import ARCHES
from gpa_plan.check import declared as declared_rules  # noqa: F401  (registers rules)
from gpa_plan.check import (  # noqa: F401  (registers rules)
    devices,
    host_rules,
    ioeventfds,
    layout_rules,
    memslots,
    observed,
    ports,
    program_rules,
    vgic,
)
from gpa_plan.check.findings import ERROR, WARNING, Finding, cap_per_object, problem_findings
from gpa_plan.check.observed import TrafficSummary, traffic_summary
from gpa_plan.check.partition import Region, partition
from gpa_plan.check.ports import PortRow, port_rows
from gpa_plan.check.program_rules import CAPPED_AS_MADE
from gpa_plan.check.rules import RULES, RuleContext
from gpa_plan.collector import paused
from gpa_plan.elf import PHYSICAL
from gpa_plan.layout.errors import LayoutError
from gpa_plan.layout.loader import Document, load_file
from gpa_plan.layout.models import Layout
from gpa_plan.layout.resolved import ResolvedLayout, created_on, resolve
from gpa_plan.layout.validate import validate_layout
from gpa_plan.progress import Progress, unwatched

if TYPE_CHECKING:
    from gpa_plan.check.declared import Declared
    from gpa_plan.elf.placement import ProgramPlacement
    from gpa_plan.elf.program import Program, ProgramError
    from gpa_plan.host_profile import HostProfile


class CheckResult(NamedTuple):
    """What `gpa-plan check` reports for one file under one architecture."""

    file: str
    arch: str | None
    pa_bits: int | None
    valid: bool
    regions: tuple[Region, ...]
    findings: tuple[Finding, ...]
    # where each `--elf` program's segments land; None when no program was given
    programs: tuple[ProgramPlacement, ...] | None = None
    # the layout's port ranges (`ports:`), with what in and out become there
    ports: tuple[PortRow, ...] = ()
    # what the recording's `observed:` section says of its traffic; None without one
    traffic: TrafficSummary | None = None

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.severity == ERROR)

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.severity == WARNING)


class LoadedLayout(NamedTuple):
    doc: Document
    layout: Layout
    resolved: ResolvedLayout
    placement_errors: tuple[tuple[str, tuple[str, int]], ...]


def load_layout(
    path: str | os.PathLike[str], *, allow_stdin: bool = False, progress: Progress = unwatched
) -> LoadedLayout:
    """Load, validate and place a layout file; raises LayoutError with positions, and
    InputError (gpa_plan.inputs) when the file cannot be read at all. With ``allow_stdin``,
    ``-`` is standard input."""
    with paused():
        progress(f"reading {os.fspath(path)}")
        doc = load_file(path, allow_stdin=allow_stdin)
        progress(f"validating {doc.path}")
        layout = validate_layout(doc)
        placements, errors = _plan(layout, lambda: progress(f"placing `auto` in {doc.path}"))
        return LoadedLayout(doc, layout, resolve(layout, placements), errors)


def _plan(
    layout: Layout, starting: Callable[[], None]
) -> tuple[dict[str, int], tuple[tuple[str, tuple[str, int]], ...]]:
    """Addresses for the `auto` entries, and the entries that found no room (``starting`` is
    called first when there are any)."""
    has_auto = any(m.base == "auto" for m in layout.memslots) or any(
        d.base == "auto" for d in layout.devices
    )
    if not has_auto:
        return {}, ()  # most layouts: no need to load the planner
    starting()
    from gpa_plan.plan.place import plan_layout

    plan = plan_layout(layout)
    return plan.placements, tuple(plan.errors)


def check_file(
    path: str | os.PathLike[str],
    arches: Sequence[str] = (),
    *,
    programs: Sequence[Program | ProgramError] = (),
    elf_mode: str = PHYSICAL,
    allow_stdin: bool = False,
    progress: Progress = unwatched,
    host: HostProfile | None = None,
    declared: LoadedLayout | None = None,
) -> list[CheckResult]:
    """One result per requested architecture (default: the layout's own; one asked for twice
    is checked once). With ``declared`` (`--layout`), the file is a recording checked against
    that layout under its own architecture (gpa_plan.check.declared.against_declared; raises
    ArchMismatch when they differ), and ``arches`` must be empty. ``programs``
    (from gpa_plan.elf.load_programs) are checked against the layout as ``elf_mode`` loads them.

    Under another architecture than the layout's own, the devices that exist only on its own
    (the vGIC of an arm64 layout under x86_64) are not created: they are left out of the
    regions and the rules, and one finding of severity ``note`` (rule device-wrong-arch, at
    the layout's `arch`) says so; a note is no error nor warning.

    With a ``host`` profile (gpa_plan.host_profile), the results of its architecture take the
    host's facts: host-dependent findings become exact (docs/host.md).

    A layout that does not load gives invalid results with its problems as findings; a file
    that cannot be read at all (missing, unreadable, not a regular file, too large) raises
    InputError instead, for the caller to report as it reports a bad argument.
    """
    with paused():
        try:
            loaded = load_layout(path, allow_stdin=allow_stdin, progress=progress)
        except LayoutError as err:
            return [
                _invalid(err.path, arch, err, bool(programs))
                for arch in dict.fromkeys(arches or (None,))
            ]
        if declared is not None:
            from gpa_plan.check.declared import against_declared

            return [against_declared(loaded, declared, progress=progress, host=host)]
        results = [
            check_loaded(
                loaded, arch, programs=programs, elf_mode=elf_mode, progress=progress, host=host
            )
            for arch in dict.fromkeys(arches or (loaded.layout.arch,))
        ]
        # Free the node graph and models before the collector resumes, or its first pass
        # would scan them all once more.
        del loaded
    return results


def check_loaded(
    loaded: LoadedLayout,
    arch_name: str,
    *,
    programs: Sequence[Program | ProgramError] = (),
    elf_mode: str = PHYSICAL,
    progress: Progress = unwatched,
    host: HostProfile | None = None,
    declared: Declared | None = None,
) -> CheckResult:
    """The result of one loaded layout under ``arch_name``; ``host`` applies when it is a
    profile of that architecture; ``declared``: the layout is a recording with a declared
    layout merged in (gpa_plan.check.declared)."""
    arch = ARCHES[arch_name]
    where = f"{loaded.doc.path} ({arch.name})"
    progress(f"partitioning {where}")
    layout, left_out = created_on(loaded.resolved, arch.name)
    regions = partition(layout, arch)
    readable: tuple[Program, ...] = ()
    unreadable: tuple[ProgramError, ...] = ()
    if programs:
        from gpa_plan.elf.program import split_programs

        readable, unreadable = split_programs(programs)
    ctx = RuleContext(
        loaded.doc.path,
        loaded.doc,
        layout,
        arch,
        regions,
        loaded.placement_errors,
        programs=readable,
        program_errors=unreadable,
        elf_mode=elf_mode,
        left_out=left_out,
        host=host if host is not None and host.arch == arch.name else None,
        declared=declared,
    )
    findings = run_rules(ctx, progress, where)
    findings.sort(key=Finding.sort_key)
    seen = loaded.layout.observed
    return CheckResult(
        loaded.doc.path,
        arch.name,
        loaded.resolved.pa_bits,
        True,
        tuple(regions),
        tuple(cap_per_object(findings, capped_as_made=CAPPED_AS_MADE)),
        _program_placements(readable, layout, regions, elf_mode) if programs else None,
        port_rows(layout, arch),
        None if seen is None or not (seen.traffic_path or seen.traffic or seen.exits)
        else traffic_summary(seen),
    )


def run_rules(ctx: RuleContext, progress: Progress = unwatched, where: str = "") -> list[Finding]:
    """Every rule's findings on ``ctx``, in rule order, telling ``progress`` of each rule."""
    findings: list[Finding] = []
    checks = [(rule.slug, rule.check) for rule in RULES.values() if rule.check is not None]
    for done, (slug, check) in enumerate(checks):
        progress(f"checking {where}: {slug}", done, len(checks))
        findings.extend(check(ctx))
    return findings


def _program_placements(
    programs: tuple[Program, ...], layout: ResolvedLayout, regions: list[Region], mode: str
) -> tuple[ProgramPlacement, ...]:
    from gpa_plan.elf.placement import program_placements

    return program_placements(programs, layout, regions, mode)


__all__ = ["RULES", "CheckResult", "LoadedLayout", "check_file", "check_loaded", "load_layout"]


def _invalid(name: str, arch: str | None, err: LayoutError, with_programs: bool) -> CheckResult:
    findings = problem_findings(name, err.problems)
    return CheckResult(name, arch, None, False, (), findings, () if with_programs else None)
