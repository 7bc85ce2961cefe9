"""tests/data/record/vmm.c: a small x86_64 VMM whose recording is known exactly
(vmm-expected.yaml beside it, written by hand from its calls; vmm-expected-traffic.yaml the
exits its guest makes). Here it is compiled and run on this host's /dev/kvm, and its calls,
handed to the recorder as the tracer would hand them, give the expected layout."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest
import yaml
from kvm_probe import kvm_available
from record_fakes import KVM, Tracee

import gpa_plan
from gpa_plan.record import uapi
from gpa_plan.record.document import document, recording_yaml
from gpa_plan.record.ptrace import Wanted, trace
from gpa_plan.record.state import HOT_IOCTLS, WANTED_IOCTL_TYPES, WANTED_IOCTLS, Recorder

DATA = Path(__file__).resolve().parent / "data" / "record"


@pytest.mark.skipif(not kvm_available(), reason="needs an x86_64 host with /dev/kvm")
def test_the_vmm_runs_its_guest_and_prints_the_exits_it_made(vmm: Path) -> None:
    ran = subprocess.run([str(vmm)], capture_output=True, text=True, timeout=60)
    assert (ran.returncode, ran.stderr) == (0, "")
    assert ran.stdout == (DATA / "vmm-expected.out").read_text()


def test_the_vmms_exits_agree_with_the_expected_traffic() -> None:
    traffic = yaml.safe_load((DATA / "vmm-expected-traffic.yaml").read_text())
    printed = (DATA / "vmm-expected.out").read_text().splitlines()
    counted: dict[str, int] = {}
    for entry in traffic["traffic"]:
        if entry["address"] == 0xF4:  # the write that ends the run: vmm does not count it
            continue
        for access in ("reads", "writes"):
            if entry[access]:
                key = f"exit {entry['space']} {access[:-1]} width {entry['width']}"
                counted[key] = counted.get(key, 0) + entry[access]
    assert sorted(f"{key}: {n}" for key, n in counted.items()) == sorted(
        line for line in printed if line.startswith("exit "))
    # vmm prints the MMIO exits' addresses in the order they came, the guest's order.
    addresses = [hex(e["address"]) for e in traffic["traffic"] if e["space"] == "mmio"
                 for _ in range(e["reads"] + e["writes"])]
    assert f"mmio addresses: {' '.join(addresses)}" in printed


def vmm_calls() -> Tracee:
    """vmm.c's KVM calls, in its order, as the tracer hands them to the recorder."""
    t = Tracee()
    t.create_vm(4)
    t.ioctl(4, uapi.KVM_CREATE_IRQCHIP)
    t.ioctl(4, uapi.KVM_SET_TSS_ADDR, 0xFEFF_D000)
    t.ioctl(4, uapi.KVM_SET_IDENTITY_MAP_ADDR, t.put(uapi.U64.pack(0xFEFF_C000)))
    t.ioctl(4, uapi.KVM_SET_TSS_ADDR, 0xFFFF_F000, ret=-errno.EINVAL)
    t.ioctl(3, uapi.KVM_CREATE_VCPU, 0, ret=-errno.EINVAL, target=KVM)
    t.memslot(4, 0, 0x0, 0x80000)
    t.memslot(4, 3, 0xE0000, 0x10000, uapi.KVM_MEM_READONLY)
    t.memslot(4, 1, 0x200000, 0x10000, uapi.KVM_MEM_LOG_DIRTY_PAGES)
    t.memslot(4, 1, 0x300000, 0x10000, uapi.KVM_MEM_LOG_DIRTY_PAGES)
    t.memslot(4, 2, 0x400000, 0x1000)
    t.memslot(4, 2, 0x400000, 0)
    t.memslot(4, 4, 0x1000, 0x1000, ret=-errno.EEXIST)
    t.ioeventfd(4, 0x90000, 4, datamatch=0x1234, fd=5)
    t.ioeventfd(4, 0x90010, 2, fd=6)
    t.ioeventfd(4, 0x90020, 4, fd=7)
    t.ioeventfd(4, 0x510, 1, pio=True, fd=8)
    t.ioeventfd(4, 0x90020, 4, deassign=True, fd=7)
    t.zone(4, 0xA0000, 0x1000)
    t.zone(4, 0xB0000, 0x1000)
    t.zone(4, 0xB0000, 0x1000, unregister=True)
    t.ioctl(4, uapi.KVM_CREATE_VCPU, 0, ret=9)
    t.ioctl(9, 0x4008AE90, t.put(b"\0" * 8), ret=-errno.E2BIG,  # KVM_SET_CPUID2
            target="anon_inode:kvm-vcpu:0")
    return t


def test_the_vmms_calls_give_the_expected_recording() -> None:
    vm, = vmm_calls().recorder.vms
    expected = yaml.safe_load((DATA / "vmm-expected.yaml").read_text())
    assert document(vm, "x86_64") == expected


def test_the_expected_recording_checks_clean(tmp_path: Path) -> None:
    expected = yaml.safe_load((DATA / "vmm-expected.yaml").read_text())
    known = {k: v for k, v in expected.items() if k not in ("ports", "observed")}
    path = tmp_path / "vmm.yaml"
    path.write_text(recording_yaml(known, []))
    result, = gpa_plan.check_file(path)
    assert (result.valid, result.findings) == (True, ())


@pytest.mark.skipif(not kvm_available(), reason="needs an x86_64 host with /dev/kvm")
def test_traced_for_real_the_refusals_reach_the_vm_and_the_notes(vmm: Path) -> None:
    """vmm.c's refused KVM_SET_CPUID2 is no call the recorder decodes: the filter stops on it
    as a KVM ioctl; its KVM_CREATE_VCPU on /dev/kvm belongs to no VM: a note."""
    binary = vmm
    recorder = Recorder()
    wanted = Wanted(ioctls=WANTED_IOCTLS, ioctl_types=WANTED_IOCTL_TYPES, hot=HOT_IOCTLS)
    result = trace([str(binary)], recorder, wanted)
    assert result.status == 0
    vm, = recorder.vms
    assert vm.refused[("KVM_SET_CPUID2", "E2BIG", "on vcpu 0")] == 1
    assert vm.kvm_private == {"KVM_SET_TSS_ADDR": 0xFEFF_D000,
                              "KVM_SET_IDENTITY_MAP_ADDR": 0xFEFF_C000}
    assert recorder.notes == [f"KVM_CREATE_VCPU on /dev/kvm in process {vm.tgid} refused "
                              "with EINVAL."]
