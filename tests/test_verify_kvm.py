"""`gpa-plan verify` on this machine's /dev/kvm: every shipped x86_64 layout agrees with the
kernel, and where the kernel differs from the table, verify says what the kernel did."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from gpa_plan.cli import cli

ROOT = Path(__file__).parent.parent
LAYOUTS = ROOT / "layouts"
PLAIN_ENV = {"COLUMNS": "200", "NO_COLOR": None, "FORCE_COLOR": None, "TTY_COMPATIBLE": None}


def _kvm_reason() -> str | None:
    if os.uname().machine != "x86_64":
        return f"these layouts are x86_64 and this host is {os.uname().machine}"
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as err:
        return f"/dev/kvm cannot be opened here ({err.strerror})"
    return None


pytestmark = pytest.mark.skipif(_kvm_reason() is not None, reason=str(_kvm_reason()))

SHIPPED_X86 = sorted(p.name for p in LAYOUTS.glob("*.yaml") if "arch: x86_64" in p.read_text())


def run(*args: str) -> Result:
    return CliRunner(env=PLAIN_ENV).invoke(cli, list(args))


def verdict(*args: str) -> tuple[int, dict[str, Any]]:
    result = run("verify", "--format", "json", *args)
    assert result.exit_code in (0, 1), result.output
    (found,) = json.loads(result.stdout)["verdicts"]
    return result.exit_code, found


def disagreements(found: dict[str, Any]) -> list[str]:
    rows = [*found["steps"], *found["probes"]]
    return [f"{r['id']}: expected {r['expected']}, observed {r['observed']}" for r in rows
            if not r["agrees"]]


@pytest.mark.parametrize("name", SHIPPED_X86)
def test_every_shipped_x86_64_layout_agrees_with_the_kernel(name: str) -> None:
    status, found = verdict(str(LAYOUTS / name))
    assert disagreements(found) == []
    assert status == 0
    assert found["summary"]["probes"] == found["summary"]["probes_agree"] > 0


def test_the_seed_bug_ucall_write_lands_in_memory_as_check_predicts() -> None:
    layout = LAYOUTS / "broken" / "ucall-clobbered-x86_64.yaml"
    checked = run("check", "--format", "json", str(layout))
    (result,) = json.loads(checked.stdout)["results"]
    (finding,) = [f for f in result["findings"] if f["rule"] == "ucall-not-io"]
    status, found = verdict(str(layout))
    assert status == 0, disagreements(found)
    (ucall_write,) = [
        p for p in found["probes"] if p["address"] == 0x29_1000 and p["access"] == "write"
        and p["width"] == 8
    ]
    assert ucall_write["observed"] == "memory"
    assert "memory holds" in ucall_write["detail"]
    assert "test-data" in finding["message"]


def test_verify_reports_what_the_kernel_did_where_it_differs_from_the_table(
    tmp_path: Path,
) -> None:
    """This host has one address space (no SMM). Predicted for this host (its own facts, the
    default), the as_id 1 memslot is refused with EINVAL and verify agrees; predicted for a
    host profile with SMM, as the table has it, verify shows KVM refusing what was predicted
    accepted."""
    layout = tmp_path / "smm.yaml"
    layout.write_text(
        "layout: 1\narch: x86_64\npa_bits: 40\npage_size: 4K\nmemslots:\n"
        "  - {name: ram, base: 0, size: 1M}\n"
        "  - {name: smram, base: 0xa0000, size: 128K, as_id: 1}\n"
    )
    from gpa_plan.probe.host import host_facts

    facts = host_facts()
    if facts["facts"]["address_spaces"] != 1:
        pytest.skip("this host has an SMM address space: KVM accepts the as_id 1 memslot")
    status, found = verdict(str(layout))
    (smram,) = [s for s in found["steps"] if s["id"] == "memslot:smram"]
    assert (status, smram["expected"], smram["observed"]) == (0, ["EINVAL"], "EINVAL")

    with_smm = tmp_path / "smm-host.json"
    facts["facts"]["address_spaces"] = 2
    with_smm.write_text(json.dumps(facts))
    status, found = verdict(str(layout), "--host", str(with_smm))
    (smram,) = [s for s in found["steps"] if s["id"] == "memslot:smram"]
    assert status == 1
    assert (smram["expected"], smram["observed"], smram["agrees"]) == (["ok"], "EINVAL", False)
    text = run("verify", str(layout), "--host", str(with_smm))
    assert "memslot:smram: KVM_SET_USER_MEMORY_REGION was predicted ok, KVM answered EINVAL" in (
        text.stdout
    )


def test_text_report_has_the_table_the_host_and_the_summary() -> None:
    result = run("verify", str(LAYOUTS / "selftests-x86_64.yaml"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"verify {LAYOUTS / 'selftests-x86_64.yaml'} (x86_64)"
    assert lines[1] == f"host: Linux {os.uname().release} {os.uname().machine}"
    assert lines[2].startswith("KVM: NR_MEMSLOTS=")
    row = next(line for line in lines if "0xfec0_0000" in line and "read/1" in line)
    assert row.split()[:2] == ["ok", "0xfec0_0000"]
    assert "kernel" in row.split() and "vcpu_mmio_read()" in row
    assert lines[-1].endswith("4 set-up steps, 4 agree")  # KVM_CREATE_VM and the plan's 3


APIC_PAGE = range(0xFEE0_0000, 0xFEE0_1000)
MEMSLOT_OVER_APIC_PAGE = [
    "layouts/broken/apic-access-page.yaml",
    "tests/data/verify/x86_64-table-rows.yaml",
]


@pytest.mark.parametrize(
    "name",
    ["layouts/broken/overlapping-memslots.yaml", "layouts/broken/ucall-clobbered-x86_64.yaml",
     *MEMSLOT_OVER_APIC_PAGE],
)
def test_broken_x86_layouts_and_every_table_row_agree_but_where_the_host_emulates(
    name: str,
) -> None:
    """The broken layouts whose point is an access outcome, and a layout holding every row
    of the x86_64 table. One host-dependent case stays: a memslot over the APIC page. With
    TDP the page is mapped like any other; without it (shadow paging, as this machine's
    kvm_pvm backend), KVM emulates some accesses there, and the emulator hands every access
    to the APIC base page to the LAPIC, memslot or not (vcpu_is_mmio_gpa(),
    arch/x86/kvm/x86.c). verify reports what the kernel did."""
    from gpa_plan.probe.host import host_facts

    status, found = verdict(str(ROOT / name))
    wrong_steps = [s["id"] for s in found["steps"] if not s["agrees"]]
    wrong = [(p["address"], p["observed"]) for p in found["probes"] if not p["agrees"]]
    assert wrong_steps == []
    if host_facts()["facts"]["tdp"] or name not in MEMSLOT_OVER_APIC_PAGE:
        assert (status, wrong) == (0, [])
    else:
        assert status == 1 and wrong
        assert all(address in APIC_PAGE and observed == "kernel" for address, observed in wrong)


def test_an_exported_probe_runs_on_its_own_and_its_results_compare(tmp_path: Path) -> None:
    """--export, then the probe as a machine without gpa-plan runs it (the exported
    directory alone, `python3 -m probe plan.json`, PYTHONPATH ignored), then
    --results: the same verdict as a native run."""
    import subprocess
    import sys

    layout = str(LAYOUTS / "qemu-pc-x86_64.yaml")
    out = tmp_path / "export"
    assert run("verify", layout, "--export", str(out)).exit_code == 0
    done = subprocess.run(
        [sys.executable, "-E", "-s", "-m", "probe", "plan.json"],
        cwd=out, capture_output=True, text=True, check=False, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (out / "results.json").write_text(done.stdout)
    status, found = verdict(layout, "--results", str(out / "results.json"))
    native_status, native = verdict(layout)
    assert status == native_status == 0
    assert found["summary"] == native["summary"]
    assert found["host"]["kernel"]["release"] == os.uname().release


@pytest.mark.parametrize("high_memslot", [False, True])
def test_a_guest_maxphyaddr_below_the_hosts_is_predicted_as_this_host_enforces_it(
    tmp_path: Path, high_memslot: bool
) -> None:
    """pa_bits 40 below this host's MAXPHYADDR: at 2**40 the guest faults where KVM enforces
    a smaller guest MAXPHYADDR (this machine's shadow paging does), else it reaches the
    address as the layout holds it there. A memslot at 2**40 is accepted either way
    (memslot-out-of-range says so with this host's facts)."""
    from gpa_plan.probe.host import host_facts

    facts = host_facts()["facts"]
    if facts["maxphyaddr"] <= 40:
        pytest.skip(f"this host's MAXPHYADDR is {facts['maxphyaddr']}, not above 40")
    layout = tmp_path / "maxphyaddr.yaml"
    layout.write_text(
        "layout: 1\narch: x86_64\npa_bits: 40\nmemslots:\n  - {name: ram, base: 0, size: 1M}\n"
        + ("  - {name: high, base: 0x100_0000_0000, size: 4K}\n" if high_memslot else "")
    )
    status, found = verdict(str(layout))
    assert (status, disagreements(found)) == (0, [])
    assert all(s["observed"] == "ok" for s in found["steps"])
    top = {p["access"]: p for p in found["probes"] if p["address"] == 1 << 40}
    reached = facts["tdp"] and not facts["smaller_maxphyaddr"]
    if not reached:
        expected = dict.fromkeys(("read", "write", "fetch"), "guest-exception")
        assert "this host's KVM enforces the guest's MAXPHYADDR" in top["read"]["path"]
    elif high_memslot:
        expected = dict.fromkeys(("read", "write", "fetch"), "memory")
    else:
        expected = {"read": "mmio-exit", "write": "mmio-exit", "fetch": "guest-exception"}
    assert {access: p["observed"] for access, p in top.items()} == expected
