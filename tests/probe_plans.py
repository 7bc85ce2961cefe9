"""Hand-built plans (plan.py's format) for the probe's tests, and their skip without KVM."""

from __future__ import annotations

import os
from typing import Any

import pytest

from gpa_plan.probe import kvm
from gpa_plan.probe.run import run_plan

MiB = 1 << 20
GiB = 1 << 30
MARKER = 0x1122_3344_5566_7788
AREA = {"base": 0x1000_0000, "size": 0x10000}


def _kvm_reason() -> str | None:
    if os.uname().machine != "x86_64":
        return f"the x86_64 probe needs an x86_64 host, this is {os.uname().machine}"
    try:
        kvm.Kvm().close()
    except kvm.KvmError as exc:
        return str(exc)
    return None


KVM_REASON = _kvm_reason()
needs_kvm = pytest.mark.skipif(KVM_REASON is not None, reason=f"needs /dev/kvm: {KVM_REASON}")


def memslot(
    slot: int, base: int, size: int = MiB, *, readonly: bool = False, as_id: int = 0
) -> dict[str, Any]:
    return {
        "id": f"memslot-{as_id}-{slot}-{base:#x}",
        "op": "memslot",
        "slot": slot,
        "as_id": as_id,
        "base": base,
        "size": size,
        "readonly": readonly,
    }


def step(op: str, **fields: Any) -> dict[str, Any]:
    return {"id": f"{op}-{len(fields)}-{sorted(fields.items())}", "op": op, **fields}


def probe(address: int, access: str, width: int = 4, value: int = MARKER) -> dict[str, Any]:
    return {
        "id": f"{access}{width}@{address:#x}",
        "address": address,
        "access": access,
        "width": width,
        "value": value,
    }


def make_plan(
    steps: list[dict[str, Any]], probes: list[dict[str, Any]], *, pa_bits: int = 40
) -> dict[str, Any]:
    # Probe ids must be unique in a plan: number repeated ones.
    seen: dict[str, int] = {}
    numbered = []
    for p in probes:
        count = seen.get(p["id"], 0)
        seen[p["id"]] = count + 1
        numbered.append({**p, "id": f"{p['id']}#{count}"} if count else p)
    return {
        "format": 1,
        "arch": "x86_64",
        "vm": {"pa_bits": pa_bits, "vcpus": 1},
        "steps": steps,
        "probe_area": dict(AREA),
        "probes": numbered,
    }


def observe(
    steps: list[dict[str, Any]], *probes: dict[str, Any], pa_bits: int = 40
) -> list[tuple[str, str]]:
    """(observed, detail) of each probe, in order."""
    results = run_plan(make_plan(steps, list(probes), pa_bits=pa_bits))
    assert results["error"] is None, results["error"]
    return [(r["observed"], r["detail"]) for r in results["probes"]]


def observed(steps: list[dict[str, Any]], *probes: dict[str, Any], pa_bits: int = 40) -> list[str]:
    return [o for o, _ in observe(steps, *probes, pa_bits=pa_bits)]
