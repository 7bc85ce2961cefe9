"""A guest MAXPHYADDR below the host's, on x86_64: whether the guest reaches the addresses
between the two is the host's (KVM_CAP_SMALLER_MAXPHYADDR and TDP), and a host profile makes
`explain` and `verify` exact about it. No /dev/kvm needed: the profiles and results are
written here (tests/test_verify_kvm.py runs the same layout on this machine's KVM)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from gpa_plan.cli import cli
from gpa_plan.probe import kvm

PLAIN_ENV = {"COLUMNS": "400", "NO_COLOR": None, "FORCE_COLOR": None, "TTY_COMPATIBLE": None}
TOP = 1 << 40
LAYOUT = """\
layout: 1
arch: x86_64
pa_bits: 40
memslots:
  - {name: ram, base: 0, size: 1M}
"""
HIGH_MEMSLOT = "  - {name: high, base: 0x100_0000_0000, size: 4K}\n"


def run(*args: str) -> Result:
    return CliRunner(env=PLAIN_ENV).invoke(cli, list(args))


def this_host() -> dict[str, Any]:
    """This host's facts where /dev/kvm opens, else those of a host without TDP, as
    `gpa-plan host --format json` prints them."""
    try:
        from gpa_plan.probe.host import host_facts

        return host_facts()
    except kvm.KvmError:
        facts = {"cpu_vendor": "GenuineIntel", "maxphyaddr": 48, "tdp": False,
                 "memslot_pa_bits": 52, "smaller_maxphyaddr": True, "address_spaces": 1,
                 "smm": False, "vendor_module": "kvm_intel", "real_mode_tss": False,
                 "ept_identity_map": False, "apic_access_page": True}
        return {"format": 1, "kernel": {"release": "7.2.13-test", "machine": "x86_64"},
                "page_size": 4096, "arch": "x86_64", "capabilities": {}, "facts": facts,
                "sources": {}, "unknown": {}, "parameters": {}}


def profile(tmp_path: Path, name: str, **changed: Any) -> Path:
    """This host's profile with ``changed`` facts."""
    document = this_host()
    document["facts"].update(changed)
    path = tmp_path / name
    path.write_text(json.dumps(document, indent=2))
    return path


def unenforcing(tmp_path: Path) -> Path:
    """A host with EPT/NPT that leaves a smaller guest MAXPHYADDR unenforced (AMD with NPT,
    Intel with EPT by default)."""
    return profile(tmp_path, "tdp.json", tdp=True, smaller_maxphyaddr=False, maxphyaddr=48,
                   memslot_pa_bits=48)


def enforcing(tmp_path: Path) -> Path:
    """A host with shadow paging, where KVM's walker checks the guest's MAXPHYADDR."""
    return profile(tmp_path, "shadow.json", tdp=False, smaller_maxphyaddr=True, maxphyaddr=48,
                   memslot_pa_bits=52)


def layout(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "layout.yaml"
    path.write_text(LAYOUT + extra)
    return path


def explain(path: Path, *args: str) -> dict[str, tuple[str, str, str]]:
    """(outcome, kind, detail) by access at 2**40."""
    result = run("explain", "--format", "json", str(path), hex(TOP), *args)
    assert result.exit_code == 0, result.output
    return {a["access"]: (a["outcome"], a["kind"], a["detail"])
            for a in json.loads(result.stdout)["answers"]}


def test_beyond_pa_bits_without_a_profile_says_on_which_condition_the_guest_faults(
    tmp_path: Path,
) -> None:
    found = explain(layout(tmp_path))
    assert {access: found[access][:2] for access in found} == {
        "read": ("guest-fault", "beyond"),
        "write": ("guest-fault", "beyond"),
        "fetch": ("guest-fault", "beyond"),
    }
    detail = found["read"][2]
    assert "#PF with RSVD" in detail
    assert "below the host's MAXPHYADDR only where KVM enforces a smaller guest MAXPHYADDR " \
        "(KVM_CAP_SMALLER_MAXPHYADDR" in detail
    assert "a host profile (--host) says which" in detail


def test_a_tdp_host_that_leaves_maxphyaddr_unenforced_turns_the_fault_into_an_mmio_exit(
    tmp_path: Path,
) -> None:
    path, tdp = layout(tmp_path), unenforcing(tmp_path)
    found = explain(path, "--host", str(tdp))
    assert {access: found[access][:2] for access in found} == {
        "read": ("io-exit", "unbacked"),
        "write": ("io-exit", "unbacked"),
        # The emulator fetches the instruction through its own walk, with the guest's
        # reserved bits (kvm_fetch_guest_virt()): that still faults.
        "fetch": ("guest-fault", "unbacked"),
    }
    assert f"(tdp true, smaller_maxphyaddr false in host profile {tdp})" in found["read"][2]
    assert found["read"][2].endswith("vcpu_mmio_read(): no kernel device -> KVM_EXIT_MMIO")
    assert "kvm_fetch_guest_virt()" in found["fetch"][2]
    # Past the host's own MAXPHYADDR the CPU faults whatever KVM enforces.
    result = run("explain", "--format", "json", str(path), hex(1 << 48), "--host", str(tdp))
    (read, *_) = json.loads(result.stdout)["answers"]
    assert (read["outcome"], read["kind"]) == ("guest-fault", "beyond")
    assert f"at or beyond this host's own MAXPHYADDR (maxphyaddr 48 in host profile {tdp})" \
        in read["detail"]


def test_a_memslot_beyond_pa_bits_is_memory_only_where_the_host_leaves_it_reachable(
    tmp_path: Path,
) -> None:
    path = layout(tmp_path, HIGH_MEMSLOT)
    found = explain(path, "--host", str(unenforcing(tmp_path)))
    assert {access: found[access][:2] for access in found} == {
        access: ("memory", "ram") for access in ("read", "write", "fetch")
    }
    shadow = enforcing(tmp_path)
    found = explain(path, "--host", str(shadow))
    assert {access: found[access][:2] for access in found} == {
        access: ("guest-fault", "beyond") for access in ("read", "write", "fetch")
    }
    assert "this host's KVM enforces the guest's MAXPHYADDR (tdp false, smaller_maxphyaddr " \
        f"true in host profile {shadow})" in found["read"][2]
    # memslot-out-of-range says the same of the memslot: KVM takes it on both hosts.
    checked = run("check", "-q", str(path), "--host", str(shadow))
    assert "the guest cannot reach what lies above it (this host's KVM enforces" in checked.stdout
    checked = run("check", "-q", str(path), "--host", str(unenforcing(tmp_path)))
    assert "and the guest reaches it all the same" in checked.stdout


def test_a_profile_that_does_not_know_the_capability_keeps_the_condition(
    tmp_path: Path,
) -> None:
    unknown = profile(tmp_path, "unknown.json", tdp=True, smaller_maxphyaddr=None)
    found = explain(layout(tmp_path), "--host", str(unknown))
    assert found["read"][:2] == ("guest-fault", "beyond")
    assert "a host profile (--host) says which" in found["read"][2]


# --- verify --results ---------------------------------------------------------------------


def verdict(path: Path, results: Path, *args: str) -> tuple[int, dict[str, Any]]:
    report = run("verify", str(path), "--results", str(results), "--format", "json", *args)
    assert report.exit_code in (0, 1), report.output
    (found,) = json.loads(report.stdout)["verdicts"]
    return report.exit_code, found


def observed_on_a_tdp_host(path: Path, tmp_path: Path) -> Path:
    """Results as a probe on an unenforcing TDP host reports them: every probe below 2**40
    as predicted (whatever the host), at 2**40 an MMIO exit for the read and the write and a
    #PF for the fetch, with that host's facts."""
    exported = run("verify", str(path), "--export", str(tmp_path / "out"))
    assert exported.exit_code == 0, exported.output
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    blank = tmp_path / "blank.json"
    blank.write_text(json.dumps({
        "format": 1, "host": {},
        "steps": [{"id": s["id"], "errno": None} for s in plan["steps"]],
        "probes": [{"id": p["id"], "observed": "other"} for p in plan["probes"]],
    }))
    _, found = verdict(path, blank)
    at_top = {"read": "mmio-exit", "write": "mmio-exit", "fetch": "guest-exception"}
    host = json.loads(unenforcing(tmp_path).read_text())
    results = tmp_path / "results.json"
    results.write_text(json.dumps({
        "format": 1, "host": host,
        "steps": [{"id": s["id"], "errno": None} for s in plan["steps"]],
        "probes": [
            {"id": p["id"],
             "observed": at_top[p["access"]] if p["address"] == TOP else p["expected"][0]}
            for p in found["probes"]
        ],
    }))
    return results


def test_verify_results_of_a_tdp_host_agree_with_its_own_facts(tmp_path: Path) -> None:
    path = layout(tmp_path)
    results = observed_on_a_tdp_host(path, tmp_path)
    status, found = verdict(path, results)
    assert status == 0, [p["id"] for p in found["probes"] if not p["agrees"]]
    top = {p["access"]: p for p in found["probes"] if p["address"] == TOP}
    assert {a: (p["predicted"], p["expected"]) for a, p in top.items()} == {
        "read": ("io-exit", ["mmio-exit"]),
        "write": ("io-exit", ["mmio-exit"]),
        "fetch": ("guest-fault", ["guest-exception"]),
    }
    status, found = verdict(path, results, "--host", str(unenforcing(tmp_path)))
    assert status == 0


def test_verify_results_predicted_for_an_enforcing_host_name_the_two_that_differ(
    tmp_path: Path,
) -> None:
    path = layout(tmp_path)
    results = observed_on_a_tdp_host(path, tmp_path)
    status, found = verdict(path, results, "--host", str(enforcing(tmp_path)))
    wrong = sorted((p["access"], p["expected"], p["observed"]) for p in found["probes"]
                   if not p["agrees"])
    assert (status, wrong) == (1, [
        ("read", ["guest-exception"], "mmio-exit"),
        ("write", ["guest-exception"], "mmio-exit"),
    ])
