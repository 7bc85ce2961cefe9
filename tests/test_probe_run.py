"""The probe's plan executor: set-up steps as KVM answers them, VM reuse and rebuild, the
``python -m gpa_plan.probe`` command, and the package's standard-library-only imports."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from probe_plans import KVM_REASON, MARKER, MiB, make_plan, memslot, needs_kvm, probe, step

from gpa_plan.probe import kvm, run, x86_64
from gpa_plan.probe.run import run_plan

PROBE_PACKAGE = Path(__file__).parent.parent / "gpa_plan" / "probe"
RAM = memslot(0, 0, 16 * MiB)


def errnos(results: dict[str, Any]) -> list[str | None]:
    return [s["errno"] for s in results["steps"]]


# --- steps ---------------------------------------------------------------------------------


@needs_kvm
def test_a_refused_memslot_is_recorded_and_the_run_goes_on() -> None:
    first = memslot(0, 0, MiB)
    overlapping = memslot(1, 0x8_0000, MiB, readonly=True)
    after = memslot(2, 0x0100_0000, MiB)
    results = run_plan(
        make_plan(
            [first, overlapping, after],
            # Were the read-only overlapping slot there, the write would exit to the VMM.
            [probe(0x8_0010, "write"), probe(0x0100_0010, "read")],
        )
    )
    assert errnos(results) == [None, "EEXIST", None]
    assert [p["observed"] for p in results["probes"]] == ["memory", "memory"]


@needs_kvm
def test_a_memslot_deleted_by_a_later_step_leaves_no_memory_behind() -> None:
    deleted = {**memslot(1, 0x0100_0000, 0), "id": "delete"}
    results = run_plan(
        make_plan([RAM, memslot(1, 0x0100_0000), deleted], [probe(0x0100_0010, "read")])
    )
    assert errnos(results) == [None, None, None]
    assert results["probes"][0]["observed"] == "mmio-exit"


@needs_kvm
def test_the_probes_memslot_takes_the_lowest_free_id_and_memory_stays_in_memslots() -> None:
    handle = kvm.Kvm()
    state = run.VmState(handle, 0)
    try:
        for slot in (0, 1, 3):
            assert state.set_memslot(slot, 0, slot * 0x0100_0000, MiB, False) is None
        assert state.free_slot() == 2
        own = state.add_own_memslot(0x1000_0000, 0x10000)
        assert (own.slot, state.free_slot()) == (2, 4)
        state.poke(0x0100_0FFE, b"abcd")
        assert state.peek(0x0100_0FFC, 8) == b"\0\0abcd\0\0"
        # Across the end of memslot 0 into the gap: the bytes outside go nowhere, read as 0.
        state.poke(MiB - 2, b"efgh")
        assert state.peek(MiB - 4, 8) == b"\0\0ef\0\0\0\0"
    finally:
        state.close()
        handle.close()


@needs_kvm
def test_a_memslot_in_address_space_1_gets_what_kvm_says_of_its_address_spaces() -> None:
    handle = kvm.Kvm()
    try:
        spaces = max(1, handle.check_extension(kvm.CAPS["KVM_CAP_MULTI_ADDRESS_SPACE"]))
    finally:
        handle.close()
    # kvm_set_memory_region() (virt/kvm/kvm_main.c): as_id >= kvm_arch_nr_memslot_as_ids()
    # is EINVAL.
    expected = None if spaces > 1 else "EINVAL"
    results = run_plan(make_plan([RAM, memslot(0, 0, MiB, as_id=1)], []))
    assert errnos(results) == [None, expected]


@needs_kvm
def test_x86_steps_are_made_in_order_and_an_irqchip_after_the_vcpus_is_refused() -> None:
    steps = [
        RAM,
        step("tss", addr=0xFFFB_D000),
        step("identity_map", addr=0xFFFB_C000),
        step("vcpus"),
        # KVM_CREATE_IRQCHIP once vCPUs exist: kvm_arch_vm_ioctl() (arch/x86/kvm/x86.c) says
        # EINVAL.
        step("irqchip"),
        step("tss", addr=0xFFFF_F000),
    ]
    results = run_plan(make_plan(steps, [probe(0xFEC0_0000, "read")]))
    assert [s["id"] for s in results["steps"]] == [s["id"] for s in steps]
    assert errnos(results)[:5] == [None, None, None, None, "EINVAL"]
    # The refused irqchip leaves no IOAPIC: the read exits to the VMM.
    assert results["probes"][0]["observed"] == "mmio-exit"
    # kvm_vm_ioctl_set_tss_addr(): an address whose three pages pass 4 GiB is EINVAL.
    assert errnos(results)[5] == "EINVAL"


@needs_kvm
def test_the_vcpus_step_makes_the_vcpu_the_guest_uses() -> None:
    # Were the guest to create vCPU 0 again, KVM would refuse it (EEXIST): no probe would run.
    plan = make_plan([RAM, step("vcpus")], [probe(0x2000, "read")])
    plan["vm"]["vcpus"] = 2
    results = run_plan(plan)
    assert errnos(results) == [None, None]
    assert results["probes"][0]["observed"] == "memory"


@needs_kvm
def test_an_unknown_step_is_the_results_error() -> None:
    results = run_plan(make_plan([RAM, step("teleport")], [probe(0x2000, "read")]))
    assert results["error"] == "step 'teleport-0-[]': unknown op 'teleport'"
    assert results["probes"] == []


def test_an_unknown_arch_is_the_results_error() -> None:
    results = run_plan({**make_plan([RAM], []), "arch": "pdp11"})
    assert results["error"] == "no probe for architecture 'pdp11'; known: x86_64, arm64"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"format": 2}, "plan format 2; this probe reads format 1"),
        ({"probes": {}}, "probes: a JSON array is needed"),
        ({"probe_area": {"base": -1, "size": 1}}, "probe_area.base: an integer from 0 to"),
        ({"steps": [{**RAM, "size": "1M"}]}, "steps[0].size: an integer from 0 to"),
        ({"steps": [RAM, RAM]}, f"steps[1]: id {RAM['id']!r} is used twice"),
        ({"probes": [{**probe(0, "read"), "width": 3}]}, "probes[0].width: 1, 2, 4 or 8"),
        ({"probes": [{**probe(0, "read"), "access": "x"}]}, "probes[0].access: one of read,"),
        ({"probes": [{**probe(0, "read"), "value": 1 << 64}]}, "probes[0].value: an integer"),
    ],
)
def test_a_plan_the_probe_cannot_use_is_the_results_error(
    change: dict[str, Any], reason: str
) -> None:
    results = run_plan({**make_plan([RAM], [probe(0x2000, "read")]), **change})
    assert results["error"].startswith(reason)
    assert (results["steps"], results["probes"]) == ([], [])


@needs_kvm
def test_a_probe_area_over_a_memslot_leaves_every_probe_not_run() -> None:
    plan = make_plan([memslot(0, 0x1000_0000, MiB)], [probe(0x2000, "read"), probe(0, "write")])
    results = run_plan(plan)
    reason = (
        "the probe's memslot at 0x10000000 (+0x10000) was refused with EEXIST: "
        "give the plan a probe_area clear of every memslot"
    )
    assert results["error"] == reason
    assert [(p["observed"], p["detail"]) for p in results["probes"]] == [("not-run", reason)] * 2


@needs_kvm
def test_a_probe_area_smaller_than_the_guest_needs_is_refused() -> None:
    plan = make_plan([RAM], [probe(0x2000, "read")])
    plan["probe_area"]["size"] = x86_64.AREA_SIZE - 0x1000
    results = run_plan(plan)
    assert results["probes"][0]["observed"] == "not-run"
    assert f"at least {x86_64.AREA_SIZE:#x} bytes" in results["error"]


# --- reuse and rebuild -----------------------------------------------------------------------


class _CountVms:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = run.VmState.__init__

        def counting(state: run.VmState, kvm_: kvm.Kvm, vm_type: int) -> None:
            self.count += 1
            real(state, kvm_, vm_type)

        monkeypatch.setattr(run.VmState, "__init__", counting)


@needs_kvm
def test_probes_share_one_vm_while_the_vcpu_stays_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    vms = _CountVms(monkeypatch)
    probes = [probe(0x3000_0000, "fetch", 1), probe(0x2000, "write"), probe(1 << 40, "read")]
    results = run_plan(make_plan([RAM], probes * 3))
    assert [p["observed"] for p in results["probes"]] == [
        "internal-error",
        "memory",
        "guest-exception",
    ] * 3
    assert vms.count == 1


@needs_kvm
def test_a_probe_after_one_that_broke_the_vcpu_runs_on_a_fresh_vm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The breaking probe runs with an empty IDT: its page fault becomes a triple fault."""
    vms = _CountVms(monkeypatch)
    real_run = x86_64.Guest.run

    def run_breaking(guest: x86_64.Guest, p: dict[str, Any]) -> Any:
        if p["id"].startswith("break"):
            sregs = bytearray(guest.sregs)
            x86_64._DTABLE.pack_into(sregs, x86_64._SREGS_IDT, 0, 0, 0, 0, 0)
            kvm.ioctl(guest.vcpu_fd, x86_64.KVM_SET_SREGS, bytes(sregs))
        return real_run(guest, p)

    monkeypatch.setattr(x86_64.Guest, "run", run_breaking)
    beyond = probe(1 << 40, "read")
    plan = make_plan([RAM], [{**beyond, "id": "break"}, beyond, probe(0x2000, "read", 8), beyond])
    results = run_plan(plan)
    assert [(p["observed"], p["detail"]) for p in results["probes"]][:1] == [
        ("other", "KVM_EXIT_SHUTDOWN")
    ]
    # Had the broken vCPU been reused, its empty IDT would shut it down again.
    assert [p["observed"] for p in results["probes"][1:]] == [
        "guest-exception",
        "memory",
        "guest-exception",
    ]
    assert results["probes"][2]["detail"] == f"read the marker {MARKER:#x}"
    assert vms.count == 2


@needs_kvm
def test_a_guest_that_never_finishes_is_stopped_and_the_next_probe_gets_a_fresh_vm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fetch that lands on ``jmp $`` spins until the bound on KVM_RUN interrupts it."""
    vms = _CountVms(monkeypatch)
    monkeypatch.setattr(x86_64, "FETCH_SEED", b"\xeb\xfe")
    monkeypatch.setattr(x86_64, "_RUN_SECONDS", 0.05)
    results = run_plan(make_plan([RAM], [probe(0x5000, "fetch", 1), probe(0x2000, "read")]))
    assert [(p["observed"], p["detail"]) for p in results["probes"]] == [
        ("other", "the guest ran 0.05 s without finishing"),
        ("memory", f"read the marker {MARKER & 0xFFFF_FFFF:#x}"),
    ]
    assert vms.count == 2


# --- the command -----------------------------------------------------------------------------


def _probe_command(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpa_plan.probe", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,
    )


@needs_kvm
def test_the_command_prints_the_results_of_a_plan_file(tmp_path: Path) -> None:
    plan = make_plan([RAM], [probe(0x2000, "read"), probe(0x3000_0000, "write", 2)])
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    done = _probe_command(str(path))
    assert (done.returncode, done.stderr) == (0, "")
    results = json.loads(done.stdout)
    assert results["steps"] == [{"id": RAM["id"], "errno": None}]
    assert [p["observed"] for p in results["probes"]] == ["memory", "mmio-exit"]


@needs_kvm
def test_the_command_reads_the_plan_from_standard_input() -> None:
    plan = make_plan([RAM], [probe(0x2000, "fetch", 1)])
    done = _probe_command("-", input=json.dumps(plan))
    assert done.returncode == 0
    assert json.loads(done.stdout)["probes"][0]["observed"] == "memory"


def test_the_command_refuses_a_plan_for_another_architecture(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    other = "arm64" if os.uname().machine == "x86_64" else "x86_64"
    path.write_text(json.dumps({**make_plan([RAM], []), "arch": other}))
    done = _probe_command(str(path))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        f"probe: {path}: the plan is for {other}, this host is {os.uname().machine}: "
        "run it on a host of that architecture with /dev/kvm\n"
    )


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{", "not a JSON plan: Expecting property name enclosed in double quotes"),
        ("[]", "the plan is a JSON object, not an array"),
    ],
)
def test_the_command_refuses_a_plan_it_cannot_read(
    tmp_path: Path, content: str, reason: str
) -> None:
    path = tmp_path / "plan.json"
    path.write_text(content)
    done = _probe_command(str(path))
    assert done.returncode == 2
    assert done.stderr.startswith(f"probe: {path}: {reason}")
    assert done.stderr.count("\n") == 1


def test_the_command_refuses_a_plan_with_a_field_it_cannot_use(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    plan = make_plan([RAM], [{**probe(0, "read"), "width": 16}])
    path.write_text(json.dumps({**plan, "arch": run.host_arch() or "x86_64"}))
    done = _probe_command(str(path))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"probe: {path}: probes[0].width: 1, 2, 4 or 8 is needed\n"


def test_the_command_refuses_a_directory(tmp_path: Path) -> None:
    done = _probe_command(str(tmp_path))
    assert (done.returncode, done.stderr) == (
        2,
        f"probe: {tmp_path}: not a regular file; give the plan's JSON file\n",
    )


@pytest.mark.skipif(
    KVM_REASON is not None or os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root, setpriv and /dev/kvm to show a user who may not open /dev/kvm",
)
def test_the_command_says_when_dev_kvm_cannot_be_opened() -> None:
    if os.stat(kvm.KVM_DEVICE).st_mode & 0o006:
        pytest.skip("every user may open /dev/kvm here")
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    done = subprocess.run(
        [*nobody, sys.executable, "-m", "gpa_plan.probe", "-"],
        input=json.dumps(make_plan([RAM], [probe(0x2000, "read")])),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(PROBE_PACKAGE.parent.parent)},
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "probe: cannot open /dev/kvm: Permission denied; "
        "run it where /dev/kvm exists and this user may open it\n"
    )


# --- the package's imports -----------------------------------------------------------------


def _imports(path: Path) -> list[tuple[str, int]]:
    """(module, level) of every import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


def test_the_probe_imports_only_the_standard_library_and_itself() -> None:
    stdlib = sys.stdlib_module_names
    outside = {
        f"{path.name}: {module}"
        for path in sorted(PROBE_PACKAGE.glob("*.py"))
        for module, level in _imports(path)
        if level == 0 and module.split(".")[0] not in stdlib
    }
    assert not outside, f"the probe must stay standard-library only: {sorted(outside)}"


def test_the_import_scan_sees_absolute_third_party_and_own_package_imports(
    tmp_path: Path,
) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import click\nfrom gpa_plan.arch import ARCHES\nfrom . import kvm\nimport os\n"
    )
    assert _imports(sample) == [("click", 0), ("gpa_plan.arch", 0), ("", 1), ("os", 0)]
