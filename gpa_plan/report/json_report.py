"""JSON documents, every field as docs/outputs.md describes it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from gpa_plan.check.explain import Answer
    from gpa_plan.check.findings import Finding
    from gpa_plan.check.partition import Region
    from gpa_plan.check.run import CheckResult
    from gpa_plan.elf.placement import ProgramPlacement
    from gpa_plan.formats import CheckReport
    from gpa_plan.host_profile import HostProfile

FORMAT_VERSION = 1


def region_dict(r: Region) -> dict[str, Any]:
    return {
        "start": r.start,
        "end": r.end,
        "kind": r.kind,
        "names": list(r.names),
        "read": r.read.value,
        "write": r.write.value,
        "fetch": r.fetch.value,
        "io": r.io,
        # Only where more objects claim the region than `names` lists (MAX_REGION_NAMES).
        **({"more_names": r.more_names} if r.more_names else {}),
    }


def finding_dict(f: Finding) -> dict[str, Any]:
    return {
        "rule": f.rule,
        "severity": f.severity,
        "message": f.message,
        "file": f.file,
        "line": f.line,
        "column": f.column,
        "objects": list(f.objects),
    }


def program_dict(p: ProgramPlacement) -> dict[str, Any]:
    """A guest program's segments: ``start``/``end`` (exclusive) are p_paddr-based in
    physical mode and the page-rounded p_vaddr range in selftests mode."""
    return {
        "file": p.file,
        "machine": p.machine,
        "mode": p.mode,
        "segments": [
            {
                "index": s.index,
                "flags": s.flags,
                "start": s.range.start,
                "end": s.range.end,
                "kinds": list(s.kinds),
                "regions": list(s.names),
                # Only where the regions under it name more than `regions` lists.
                **({"more_names": s.more_names} if s.more_names else {}),
            }
            for s in p.segments
        ],
    }


def _programs_key(r: CheckResult) -> dict[str, Any]:
    # Only with `check --elf`: without it a result has no `programs` key (docs/outputs.md).
    if r.programs is None:
        return {}
    return {"programs": [program_dict(p) for p in r.programs]}


def _ports_key(r: CheckResult) -> dict[str, Any]:
    # Only for a layout with `ports:`: each port range, `end` exclusive.
    if not r.ports:
        return {}
    return {
        "ports": [
            {"start": p.start, "end": p.end, "handler": p.handler, "name": p.name,
             "read": p.read, "write": p.write}
            for p in r.ports
        ]
    }


def _traffic_key(r: CheckResult) -> dict[str, Any]:
    # Only for a recording with `observed:`: its traffic summed per space, and its exits.
    summary = r.traffic
    if summary is None:
        return {}
    return {
        "traffic": {
            "path": summary.path,
            "spaces": [
                {
                    "space": s.space,
                    "addresses": s.addresses,
                    "reads": s.reads,
                    "writes": s.writes,
                    "widths": list(s.widths),
                    "busiest": [{"address": a, "accesses": n} for a, n in s.busiest],
                }
                for s in summary.spaces
            ],
            "exits": [{"reason": reason, "count": n} for reason, n in summary.exits],
        }
    }


def _host_key(host: HostProfile | None) -> dict[str, Any]:
    # Only with --host: the profile the host-dependent findings were made exact with.
    return {} if host is None else {"host": host.describe()}


def check_document(
    results: Sequence[CheckResult], host: HostProfile | None = None
) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        **_host_key(host),
        "results": [
            {
                "file": r.file,
                "arch": r.arch,
                "pa_bits": r.pa_bits,
                "valid": r.valid,
                "regions": [region_dict(x) for x in r.regions],
                "findings": [finding_dict(f) for f in r.findings],
                **_programs_key(r),
                **_ports_key(r),
                **_traffic_key(r),
            }
            for r in results
        ],
        "summary": {
            "files": len({r.file for r in results}),
            "errors": sum(r.errors for r in results),
            "warnings": sum(r.warnings for r in results),
        },
    }


def explain_document(
    answers: Sequence[Answer], host: HostProfile | None = None
) -> dict[str, Any]:
    from gpa_plan.check.explain import differences

    return {
        "format": FORMAT_VERSION,
        **_host_key(host),
        "answers": [
            {
                "address": a.address,
                "arch": a.arch,
                "access": a.access,
                "outcome": a.outcome,
                "kind": a.kind,
                "names": list(a.names),
                "detail": a.detail,
                "notes": list(a.notes),
            }
            for a in answers
        ],
        "differences": [
            {
                "address": d.address,
                "access": d.access,
                "outcomes": [{"arch": arch, "outcome": outcome} for arch, outcome in d.outcomes],
            }
            for d in differences(answers)
        ],
    }


def dumps(document: dict[str, Any]) -> str:
    # Compact on purpose: json's C encoder only runs without `indent`, and a layout at KVM's
    # memslot limit has some 70,000 regions. Pipe through `python -m json.tool` to read it.
    return json.dumps(document) + "\n"


def failure_document(findings: Sequence[Finding]) -> dict[str, Any]:
    """What a command's JSON is when it fails before it has an answer (a file that does not
    load, an allocation that cannot be met): its findings, as `check` gives them."""
    return {"format": FORMAT_VERSION, "findings": [finding_dict(f) for f in findings]}


def write_check(report: CheckReport, stream: TextIO) -> None:
    stream.write(dumps(check_document(report.results, report.host)))


def write_explain(
    answers: Sequence[Answer], stream: TextIO, *, host: HostProfile | None = None
) -> None:
    stream.write(dumps(explain_document(answers, host)))


def write_failure(findings: Sequence[Finding], stdout: TextIO, stderr: TextIO) -> None:
    stdout.write(dumps(failure_document(findings)))
