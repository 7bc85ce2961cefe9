"""gpa_plan.verify.compare on hand-made predictions and results: what a results file that is
JSON but wrong inside gets, and that pairing results with a plan does no quadratic work."""

from __future__ import annotations

from typing import Any

from gpa_plan.arch.base import Outcome
from gpa_plan.verify.build import ProbePrediction, StepPrediction, VerifyPlan
from gpa_plan.verify.compare import compare


class CountedId(str):
    """A probe id that counts how often it is hashed: each set or dict look-up is one."""

    hashes = 0

    def __hash__(self) -> int:
        CountedId.hashes += 1
        return str.__hash__(self)


def plan_of(ids: list[str]) -> VerifyPlan:
    probes = tuple(
        ProbePrediction(i, 0x1000 * k, "read", 1, 0xA5, "ram", Outcome.MEMORY, ("memory",),
                        "memory")
        for k, i in enumerate(ids)
    )
    steps = (StepPrediction("memslot:ram", "KVM_SET_USER_MEMORY_REGION", ("ok",), ""),)
    return VerifyPlan({}, steps, probes, "layout.yaml", "x86_64", 4096)


def results_of(vp: VerifyPlan, **probe: Any) -> dict[str, Any]:
    return {
        "format": 1,
        "host": {},
        "steps": [{"id": s.id, "errno": None} for s in vp.steps],
        "probes": [{"id": p.id, "observed": "memory", "detail": "", **probe} for p in vp.probes],
    }


def test_pairing_results_with_the_plan_looks_each_id_up_a_few_times() -> None:
    n = 500
    vp = plan_of([CountedId(f"read@{k:#x}/1") for k in range(n)])
    results = results_of(vp)
    CountedId.hashes = 0
    verdict = compare(vp, results)
    assert verdict.agrees and len(verdict.probes) == n
    # A look-up per id and per use; a set of every id built once per id would be n * n.
    assert CountedId.hashes <= 10 * n
