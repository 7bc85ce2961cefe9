"""`gpa-plan import strace`: the layout a traced program built, from `strace -f -e trace=ioctl`.

The logs in tests/data/import/strace/ are strace 6.1's (Debian 12):

    gpa-plan-probe-x86_64.log   `strace -f -e trace=ioctl -o LOG` of gpa-plan's own probe on
                                x86_64: two VMs (the first's memslots all deleted again)
    small-vmm-x86_64.log        the same of small-vmm.c (beside it): memslots added, moved,
                                deleted, read-only, refused; an ioeventfd, a coalesced zone, a
                                refused KVM_CREATE_DEVICE; a second VM
    delete.log, move.log, readonly.log, failed.log, two-vms.log
                                lines of small-vmm-x86_64.log, each with a comment saying which
    unfinished-resumed.log, arm64-vgic-v3.log
                                written by hand in strace 6.1's format (its comment says what)

The probe's import is kept as a golden file (gpa-plan-probe-x86_64-vm2.yaml);
GPA_PLAN_UPDATE_GOLDEN=1 rewrites it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from gpa_plan.check.run import check_file
from gpa_plan.cli import cli
from gpa_plan.importers import ImportFailure
from gpa_plan.importers.strace import import_strace

DATA = Path(__file__).resolve().parent / "data" / "import" / "strace"
PROBE = "gpa-plan-probe-x86_64.log"


@pytest.fixture(autouse=True)
def in_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(DATA)  # the header names the log as given: keep it relative


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["import", "strace", *args])


def imported(name: str, **options: Any) -> tuple[dict[str, Any], list[str]]:
    result = import_strace((DATA / name).read_text(), **options)
    return result.document, result.notes


def slots(document: dict[str, Any]) -> list[tuple[int, int, int, bool]]:
    return [(m["slot"], m["base"], m["size"], m.get("readonly", False))
            for m in document["memslots"]]


def test_the_probes_second_vm_equals_the_golden_file(tmp_path: Path) -> None:
    out = tmp_path / "out.yaml"
    result = invoke(PROBE, "--vm", "2", "-o", str(out))
    assert (result.exit_code, result.output) == (0, "")
    golden = DATA / "gpa-plan-probe-x86_64-vm2.yaml"
    if os.environ.get("GPA_PLAN_UPDATE_GOLDEN"):
        golden.write_text(out.read_text())
    assert out.read_text() == golden.read_text()


@pytest.mark.parametrize("vm", ["1", "2"])
def test_each_vm_of_the_probe_log_checks_clean(vm: str, tmp_path: Path) -> None:
    out = tmp_path / "out.yaml"
    assert invoke(PROBE, "--vm", vm, "-o", str(out)).exit_code == 0
    [result] = check_file(out)
    assert [f for f in result.findings if f.severity == "error"] == []
    check = CliRunner().invoke(cli, ["check", str(out)])
    assert check.exit_code == 0, check.output


def test_the_probes_first_vm_deleted_every_memslot_it_added() -> None:
    document, notes = imported(PROBE, vm=1)
    assert document["memslots"] == []
    assert [d["type"] for d in document["devices"]] == ["ioapic", "lapic"]
    assert ("VM 1 of 2: KVM_CREATE_VM at line 244 returned fd 4; the state when the log "
            "ends.") in notes


def test_several_vms_without_vm_are_listed_and_refused() -> None:
    result = invoke(PROBE)
    assert result.exit_code == 1
    assert result.stderr == (
        f"{PROBE}:266:1: error[import] the log creates 2 VMs (1: fd 4, created at line 244, "
        "0 memslots; 2: fd 4, created at line 266, 2 memslots); pick one with --vm N\n"
    )


def test_a_vm_number_past_the_last_is_refused() -> None:
    result = invoke("two-vms.log", "--arch", "x86_64", "--vm", "3")
    assert result.exit_code == 1
    assert "--vm 3: the log creates 2 VMs (1: fd 4" in result.stderr


def test_vm_0_is_a_usage_error() -> None:
    assert invoke("two-vms.log", "--vm", "0").exit_code == 2


def test_two_vms_each_keep_their_own_memslots() -> None:
    first, _ = imported("two-vms.log", arch="x86_64", vm=1)
    second, _ = imported("two-vms.log", arch="x86_64", vm=2)
    assert slots(first) == [(0, 0, 0x10_0000, False)]
    assert slots(second) == [(0, 0x10_0000, 0x10_0000, False)]


def test_a_size_of_0_deletes_the_slot() -> None:
    document, _ = imported("delete.log", arch="x86_64")
    assert document["memslots"] == []


def test_a_call_on_an_existing_slot_moves_it() -> None:
    document, _ = imported("move.log", arch="x86_64")
    assert slots(document) == [(1, 0x30_0000, 0x1_0000, False)]


def test_kvm_mem_readonly_makes_a_readonly_memslot() -> None:
    document, _ = imported("readonly.log", arch="x86_64")
    assert slots(document) == [(2, 0xFFF0_0000, 0x10_0000, True)]


def test_refused_calls_are_not_applied_and_named_with_their_errno() -> None:
    document, notes = imported("failed.log", arch="x86_64")
    assert slots(document) == [(0, 0, 0x10_0000, False)]
    assert notes[-2:] == [
        "line 4: KVM_SET_USER_MEMORY_REGION slot 3 (as_id 0) at 0x80000, 0x1000 bytes, "
        "refused with EEXIST: not applied.",
        "line 5: KVM_SET_USER_MEMORY_REGION slot 4 (as_id 1) at 0x80000, 0x1000 bytes, "
        "refused with EINVAL: not applied.",
    ]


def test_flags_names_and_numbers_and_the_address_space_in_the_slot_are_read() -> None:
    region = "ioctl(4, KVM_SET_USER_MEMORY_REGION, {{slot={}, flags={}, guest_phys_addr={}, " \
        "memory_size=4096, userspace_addr=0x7f6e49e5e000}}) = 0\n"
    text = ("ioctl(3, KVM_CREATE_VM, 0) = 4\n"
            + region.format(0, "KVM_MEM_LOG_DIRTY_PAGES|KVM_MEM_READONLY", "0x1000")
            + region.format(65537, "0", "0xa0000")
            + region.format(2, "KVM_MEM_LOG_DIRTY_PAGES|0x8 /* KVM_MEM_??? */", "0x2000")
            + region.format(3, "KVM_MEM_GUEST_MEMFD", "0x3000"))
    result = import_strace(text, arch="x86_64")
    assert result.document["memslots"] == [
        {"name": "slot0", "slot": 0, "base": 0x1000, "size": 4096, "readonly": True,
         "dirty_log": True},
        {"name": "slot2", "slot": 2, "base": 0x2000, "size": 4096, "dirty_log": True},
        {"name": "slot3", "slot": 3, "base": 0x3000, "size": 4096, "guest_memfd": True},
        {"name": "as1-slot1", "slot": 1, "as_id": 1, "base": 0xA0000, "size": 4096},
    ]
    assert ("line 4: flags 0x8 besides KVM_MEM_READONLY, KVM_MEM_LOG_DIRTY_PAGES and "
            "KVM_MEM_GUEST_MEMFD: not kept.") in result.notes


def test_unfinished_and_resumed_halves_are_joined_per_process() -> None:
    document, notes = imported("unfinished-resumed.log")
    assert document["arch"] == "x86_64"
    assert slots(document) == [(0, 0x10_0000, 0x20_0000, False)]
    assert "line 10: KVM_SET_USER_MEMORY_REGION slot 1 (as_id 0) at 0x400000, 0x10000 bytes, " \
        "refused with EEXIST: not applied." in notes


def test_a_resumed_half_without_its_first_half_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "bad.log"
    log.write_text("4300  ioctl(3, KVM_CREATE_VM, 0) = 4\n4301  <... ioctl resumed>) = 0\n")
    result = CliRunner().invoke(cli, ["import", "strace", str(log), "--arch", "x86_64"])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{log}:2:7: error[import] <... ioctl resumed> with no "
                                    "`<unfinished ...>` call of process 4301 before it")


def test_the_small_vmm_log_counts_what_strace_shows_only_as_pointers() -> None:
    document, notes = imported("small-vmm-x86_64.log", vm=1)
    assert slots(document) == [(1, 0x30_0000, 0x1_0000, False), (2, 0xFFF0_0000, 0x10_0000, True)]
    assert [d["name"] for d in document["devices"]] == ["ioapic", "lapic"]
    pointer = ("call: strace 6.1 prints the structure as a bare pointer, so the addresses are "
               "not in the log and nothing of them is imported.")
    assert f"1 KVM_IOEVENTFD {pointer}" in notes
    assert f"1 KVM_REGISTER_COALESCED_MMIO {pointer}" in notes
    assert "line 11: KVM_CREATE_DEVICE refused with ENODEV: no device." in notes


def test_the_notes_open_the_yaml_as_comments() -> None:
    result = invoke("small-vmm-x86_64.log", "--vm", "1")
    assert result.exit_code == 0
    comments = [line for line in result.stdout.splitlines() if line.startswith("#")]
    assert "# 1 KVM_IOEVENTFD call: strace 6.1 prints the structure as a bare pointer, so the " \
        "addresses are not in the log and nothing of them is imported." in comments


def test_an_arm64_vgic_device_is_a_comment_not_an_invented_address() -> None:
    document, notes = imported("arm64-vgic-v3.log")
    assert (document["arch"], document["pa_bits"]) == ("arm64", 44)
    assert document["devices"] == []
    assert slots(document) == [(1, 0, 0x400_0000, True), (0, 0x4000_0000, 0x1000_0000, False)]
    assert ("KVM_CREATE_DEVICE at line 11 made a device whose type strace prints only as a "
            "pointer: its addresses are set through KVM_SET_DEVICE_ATTR, behind a pointer "
            "strace does not show; add its devices by hand.") in notes
    assert any(n.startswith("3 KVM_SET_DEVICE_ATTR calls:") for n in notes)


def test_a_decoded_vgic_device_type_is_named_and_tells_arm64() -> None:
    text = (
        "ioctl(3, KVM_CREATE_VM, 0) = 4\n"
        "ioctl(4, KVM_CREATE_DEVICE, {type=KVM_DEV_TYPE_ARM_VGIC_V3, fd=0, flags=0}) = 0\n"
    )
    result = import_strace(text)
    assert result.document["arch"] == "arm64"
    assert "pa_bits" not in result.document  # type 0: the default 40 bits
    assert any(n.startswith("KVM_CREATE_DEVICE at line 2 made KVM_DEV_TYPE_ARM_VGIC_V3:")
               for n in result.notes)


def test_without_an_architecture_only_request_arch_is_asked_for() -> None:
    result = invoke("delete.log")
    assert result.exit_code == 1
    assert "cannot tell the architecture" in result.stderr
    assert "say which with --arch: arm64, x86_64" in result.stderr


def test_requests_of_two_architectures_are_refused_at_the_second() -> None:
    text = ("ioctl(3, KVM_CREATE_VM, 0) = 4\nioctl(4, KVM_SET_TSS_ADDR, 0xfffbd000) = 0\n"
            "[pid  7] ioctl(5, KVM_ARM_VCPU_INIT, 0xffff0000) = 0\n")
    with pytest.raises(ImportFailure) as failure:
        import_strace(text)
    assert (failure.value.line, failure.value.column) == (3, 10)
    assert "requests of two architectures" in failure.value.message


@pytest.mark.parametrize(
    ("line", "column", "message"),
    [
        ("hello world", 1, "not a line strace prints: 'hello world'"),
        ("12  ioctl(4, KVM_CREATE_VM", 5, "not an ioctl call as strace prints it"),
        ("12  ioctl(4, KVM_SET_USER_MEMORY_REGION, 0x7ffd0000) = 0", 42,
         "KVM_SET_USER_MEMORY_REGION with '0x7ffd0000': expected the structure"),
        ("ioctl(4, KVM_SET_USER_MEMORY_REGION, {slot=0, flags=0, guest_phys_addr=zz, "
         "memory_size=4096}) = 0", 72,
         "KVM_SET_USER_MEMORY_REGION: guest_phys_addr='zz' is not a number"),
        ("ioctl(4, KVM_SET_USER_MEMORY_REGION, {slot=0, flags=0}) = 0", 38,
         "KVM_SET_USER_MEMORY_REGION without guest_phys_addr="),
    ],
)
def test_a_line_that_is_not_strace_output_is_refused_at_its_place(
    line: str, column: int, message: str, tmp_path: Path
) -> None:
    log = tmp_path / "bad.log"
    log.write_text(f"ioctl(3, KVM_CREATE_VM, 0) = 4\n{line}\n")
    result = CliRunner().invoke(cli, ["import", "strace", str(log), "--arch", "x86_64"])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{log}:2:{column}: error[import] {message}")


def test_a_flags_field_of_many_comment_openings_is_refused_in_linear_time() -> None:
    # 20,000 unclosed "/*": a lazy match from each would take some 2 * 10**8 steps.
    text = ("ioctl(3, KVM_CREATE_VM, 0) = 4\nioctl(4, KVM_SET_USER_MEMORY_REGION, {slot=0, "
            f"flags={'/*' * 20_000}, guest_phys_addr=0, memory_size=4096}}) = 0\n")
    with pytest.raises(ImportFailure) as failure:
        import_strace(text, arch="x86_64")
    assert (failure.value.line, failure.value.column) == (2, 53)
    assert failure.value.message == (
        f"KVM_SET_USER_MEMORY_REGION: flags={'/*' * 20!r} is not a number as strace prints it")


def test_a_log_without_a_vm_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "none.log"
    log.write_text("ioctl(0, TCGETS, 0x7ffd) = -1 ENOTTY (Inappropriate ioctl for device)\n")
    result = CliRunner().invoke(cli, ["import", "strace", str(log)])
    assert result.exit_code == 1
    assert "no KVM_CREATE_VM call that returned a VM" in result.stderr


def test_memory_region2_that_strace_61_cannot_name_is_counted_as_missing() -> None:
    text = ("ioctl(3, KVM_CREATE_VM, 0) = 4\n"
            "ioctl(4, _IOC(_IOC_WRITE, 0xae, 0x49, 0xa0), 0x7ffd5a1e3c40) = 0\n")
    result = import_strace(text, arch="x86_64")
    assert result.document["memslots"] == []
    assert ("1 KVM_SET_USER_MEMORY_REGION2 call, which strace 6.1 prints as _IOC(_IOC_WRITE, "
            "0xae, 0x49, 0xa0) with a bare pointer: those memslots are not in the log and "
            "missing here.") in result.notes


def test_the_time_strace_t_adds_after_the_return_value_is_read() -> None:
    text = ("ioctl(3, KVM_CREATE_VM, 0) = 4 <0.000311>\n"
            "ioctl(4, KVM_SET_USER_MEMORY_REGION, {slot=0, flags=0, guest_phys_addr=0, "
            "memory_size=4096, userspace_addr=0x7f6e49e5e000}) = -1 EEXIST (File exists) "
            "<0.000004>\n")
    result = import_strace(text, arch="x86_64")
    assert result.document["memslots"] == []
    assert result.notes[-1].endswith("refused with EEXIST: not applied.")


def test_other_system_calls_are_skipped_with_a_note() -> None:
    text = ('openat(AT_FDCWD, "/dev/kvm", O_RDWR|O_CLOEXEC) = 3\n'
            "ioctl(3, KVM_CREATE_VM, 0) = 4\n")
    result = import_strace(text, arch="x86_64")
    assert "1 calls of other system calls skipped." in result.notes


@pytest.mark.skipif(shutil.which("strace") is None or shutil.which("cc") is None
                    or not os.access("/dev/kvm", os.R_OK | os.W_OK),
                    reason="needs strace, a C compiler and /dev/kvm")
def test_a_live_strace_of_the_small_vmm_imports_as_the_recorded_log(tmp_path: Path) -> None:
    binary, log = tmp_path / "small-vmm", tmp_path / "live.log"
    subprocess.run(["cc", "-o", str(binary), str(DATA / "small-vmm.c")], check=True, timeout=60)
    subprocess.run(["strace", "-f", "-e", "trace=ioctl", "-o", str(log), str(binary)],
                   check=True, timeout=60)
    live, _ = imported(str(log), vm=1)
    recorded, _ = imported("small-vmm-x86_64.log", vm=1)
    assert live == recorded
    assert yaml.safe_load(invoke(str(log), "--vm", "2").stdout)["memslots"] == [
        {"name": "slot0", "slot": 0, "base": 0x10_0000, "size": 0x10_0000}]
