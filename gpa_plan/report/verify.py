"""`gpa-plan verify` reports: a table of steps and probes, the disagreements, a summary."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TextIO

from gpa_plan.arch import ARCHES
from gpa_plan.printable import printable
from gpa_plan.ranges import hex_addr
from gpa_plan.verify.compare import ProbeRow, StepRow, Verdict

FORMAT_VERSION = 1
_MARK = {True: "ok", False: "NO"}


def host_lines(host: dict[str, Any] | Any, arch: str) -> list[str]:
    """The kernel and the capabilities that matter to ``arch`` (ArchSpec.verify_caps), in one
    or two lines."""
    if not isinstance(host, dict) or not host:
        return ["host: not reported by the probe"]
    kernel = _mapping(host.get("kernel"))
    release = kernel.get("release") or "unknown kernel"
    machine = kernel.get("machine", "")
    caps = _mapping(host.get("capabilities"))
    shown = " ".join(
        f"{name.removeprefix('KVM_CAP_')}={caps[name]}"
        for name in ARCHES[arch].verify_caps
        if name in caps
    )
    line = f"host: Linux {release} {machine}".rstrip()
    return [line, f"KVM: {shown}"] if shown else [line]


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


_STEP_HEAD = f"      {'step':<34} {'call':<28} {'predicted':<14} observed"
_PROBE_HEAD = (
    f"      {'address':<22} {'access':<8} {'region':<20} {'predicted':<16} {'observed':<16} "
    "kernel path of the prediction"
)


def _step_line(row: StepRow) -> str:
    expected = " or ".join(row.expected)
    return f"  {_MARK[row.agrees]:<3} {row.id:<34} {row.call:<28} {expected:<14} {row.observed}"


def _probe_line(row: ProbeRow) -> str:
    where = row.where if len(row.where) <= 20 else row.where[:19] + "~"
    expected = "/".join(row.expected)
    access = f"{row.access}/{row.width}"
    return (
        f"  {_MARK[row.agrees]:<3} {hex_addr(row.address):<22} {access:<8} {where:<20} "
        f"{expected:<16} {row.observed:<16} {row.path}"
    )


def _disagreement(row: StepRow | ProbeRow) -> str:
    if isinstance(row, StepRow):
        said = f" ({row.why})" if row.why else ""
        return (
            f"  {row.id}: {row.call} was predicted {' or '.join(row.expected)}{said}, "
            f"KVM answered {row.observed}"
        )
    detail = f" ({row.detail})" if row.detail else ""
    return (
        f"  {row.access} of {row.width} byte(s) at {hex_addr(row.address)} ({row.where}): "
        f"predicted {row.predicted} [{row.path}], observed {row.observed}{detail}"
    )


def write_text(verdicts: Sequence[Verdict], stream: TextIO) -> None:
    for k, verdict in enumerate(verdicts):
        if k:
            stream.write("\n")
        stream.write(_text(verdict))


def _text(v: Verdict) -> str:
    lines = [f"verify {v.file} ({v.arch})", *host_lines(dict(v.host), v.arch), "", "set-up"]
    lines += [_STEP_HEAD] + [_step_line(r) for r in v.steps]
    lines += ["", "probes"]
    lines += [_PROBE_HEAD] + [_probe_line(r) for r in v.probes]
    wrong = [r for r in v.rows if not r.agrees]
    if wrong:
        lines += ["", "disagreements (what KVM did is what the model must say):"]
        lines += [_disagreement(r) for r in wrong]
    lines += ["", summary(v)]
    # Each line escaped whole: a line break in a name or a probe's detail stays in its line.
    return "".join(printable(line) + "\n" for line in lines)


def summary(v: Verdict) -> str:
    probes_ok = sum(1 for r in v.probes if r.agrees)
    steps_ok = sum(1 for r in v.steps if r.agrees)
    return (
        f"{len(v.probes)} probes, {probes_ok} agree; {len(v.steps)} set-up steps, "
        f"{steps_ok} agree"
    )


def verdict_dict(v: Verdict) -> dict[str, Any]:
    return {
        "file": v.file,
        "arch": v.arch,
        "host": dict(v.host),
        "steps": [
            {"id": r.id, "call": r.call, "expected": list(r.expected), "observed": r.observed,
             "agrees": r.agrees, "why": r.why}
            for r in v.steps
        ],
        "probes": [
            {"id": r.id, "address": r.address, "access": r.access, "width": r.width,
             "where": r.where, "predicted": r.predicted, "expected": list(r.expected),
             "observed": r.observed, "detail": r.detail, "path": r.path, "agrees": r.agrees}
            for r in v.probes
        ],
        "summary": {
            "probes": len(v.probes),
            "probes_agree": sum(1 for r in v.probes if r.agrees),
            "steps": len(v.steps),
            "steps_agree": sum(1 for r in v.steps if r.agrees),
            "agrees": v.agrees,
        },
    }


def write_json(verdicts: Sequence[Verdict], stream: TextIO) -> None:
    document = {"format": FORMAT_VERSION, "verdicts": [verdict_dict(v) for v in verdicts]}
    stream.write(json.dumps(document, indent=2) + "\n")
