"""Pair the probe's results with gpa-plan's predictions: one row per step and per probe."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from gpa_plan.probe.plan import OBSERVED
from gpa_plan.verify.build import OK, VerifyPlan

_ERRNO_NAME = re.compile(r"E[A-Z0-9]+")


class ResultsError(Exception):
    """Results that do not answer this plan (another layout, a damaged file)."""


class StepRow(NamedTuple):
    id: str
    call: str
    expected: tuple[str, ...]
    observed: str
    why: str

    @property
    def agrees(self) -> bool:
        return self.observed in self.expected


class ProbeRow(NamedTuple):
    id: str
    address: int
    access: str
    width: int
    where: str
    predicted: str  # the table's outcome
    expected: tuple[str, ...]
    observed: str
    detail: str
    path: str

    @property
    def agrees(self) -> bool:
        return self.observed in self.expected


class Verdict(NamedTuple):
    file: str
    arch: str
    host: Mapping[str, Any]
    steps: tuple[StepRow, ...]
    probes: tuple[ProbeRow, ...]

    @property
    def rows(self) -> list[StepRow | ProbeRow]:
        return [*self.steps, *self.probes]

    @property
    def disagreements(self) -> int:
        return sum(1 for r in self.rows if not r.agrees)

    @property
    def agrees(self) -> bool:
        return self.disagreements == 0


def compare(vp: VerifyPlan, results: Mapping[str, Any]) -> Verdict:
    """Every step and probe of ``vp`` with what ``results`` observed; raises ResultsError when
    the results lack one of them or name ones the plan does not have."""
    host = results.get("host")
    host = host if isinstance(host, dict) else {}
    refused = results.get("vm_errno")
    if refused is not None:
        # KVM_CREATE_VM failed: no VM, so no step and no probe to hold to anything.
        if not isinstance(refused, str):
            raise ResultsError(f"vm_errno {_shown(refused)} is not an errno name")
        vm = vp.vm
        row = StepRow(vm.id, vm.call, vm.expected, refused, vm.why)
        return Verdict(vp.file, vp.arch, host, (row,), ())
    steps = _by_id(results.get("steps"), "steps")
    probes = _by_id(results.get("probes"), "probes")
    _same_ids(steps, [s.id for s in vp.steps], "step")
    _same_ids(probes, [p.id for p in vp.probes], "probe")
    vm = vp.vm
    step_rows = (
        StepRow(vm.id, vm.call, vm.expected, OK, vm.why),
        *(StepRow(s.id, s.call, s.expected, _errno(steps[s.id]), s.why) for s in vp.steps),
    )
    probe_rows = tuple(
        ProbeRow(
            p.id,
            p.address,
            p.access,
            p.width,
            p.where,
            p.outcome.value,
            p.expected,
            _observed(probes[p.id]),
            _detail(probes[p.id]),
            p.path,
        )
        for p in vp.probes
    )
    return Verdict(vp.file, vp.arch, host, step_rows, probe_rows)


def _by_id(entries: Any, key: str) -> dict[str, Mapping[str, Any]]:
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("id"), str) for e in entries
    ):
        raise ResultsError(f"`{key}` must be a list of objects, each with a string `id`")
    found: dict[str, Mapping[str, Any]] = {}
    for entry in entries:
        if entry["id"] in found:
            raise ResultsError(
                f"{key} id {_shown(entry['id'])} is given twice: {_GIVE_THE_PROBES}"
            )
        found[entry["id"]] = entry
    return found


_GIVE_THE_PROBES = "give the results file the probe printed, unedited"


def _shown(value: Any) -> str:
    """A value of the results file as JSON, cut short: never a Python repr."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:59] + "~"


def _errno(entry: Mapping[str, Any]) -> str:
    value = entry.get("errno")
    if value is None:
        return OK
    if not isinstance(value, str) or not _ERRNO_NAME.fullmatch(value):
        raise ResultsError(
            f"step {_shown(entry['id'])}: errno is {_shown(value)}, where null (accepted) or "
            f"an errno name such as EEXIST is needed: {_GIVE_THE_PROBES}"
        )
    return value


def _observed(entry: Mapping[str, Any]) -> str:
    value = entry.get("observed")
    if value not in OBSERVED:
        raise ResultsError(
            f"probe {_shown(entry['id'])}: observed is {_shown(value)}, where one of "
            f"{', '.join(OBSERVED)} is needed: {_GIVE_THE_PROBES}"
        )
    return str(value)


def _detail(entry: Mapping[str, Any]) -> str:
    value = entry.get("detail", "")
    if not isinstance(value, str):
        raise ResultsError(
            f"probe {_shown(entry['id'])}: detail is {_shown(value)}, where a string is "
            f"needed: {_GIVE_THE_PROBES}"
        )
    return value


def _same_ids(found: Mapping[str, Any], wanted: Sequence[str], what: str) -> None:
    known = set(wanted)
    missing = [i for i in wanted if i not in found]
    extra = [i for i in found if i not in known]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no result for {len(missing)} {what}(s) of the plan, first {missing[0]}")
        if extra:
            parts.append(f"{len(extra)} {what}(s) the plan does not have, first {extra[0]}")
        raise ResultsError(
            "; ".join(parts) + ": the results are not this layout's plan; export the plan "
            "again (`gpa-plan verify LAYOUT --export DIR`) and run that probe"
        )
