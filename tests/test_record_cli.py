"""`gpa-plan record -- COMMAND` on this host's /dev/kvm: the layouts written, where they go,
and what the command is told."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from kvm_probe import kvm_available

from gpa_plan.cli import cli

DATA = Path(__file__).resolve().parent / "data" / "record"
needs_kvm = pytest.mark.skipif(not kvm_available(), reason="needs an x86_64 host with /dev/kvm")

# A program that makes VMs with the probe's KVM layer: VM n gets memslot 0 at n MiB.
VMS = """\
import os, sys
from gpa_plan.probe import kvm
count = int(sys.argv[1])
k = kvm.Kvm()
memory = kvm.Memory(0x1000)
for n in range(1, count + 1):
    vm = kvm.create_vm(k)
    assert kvm.set_memslot(vm, 0, 0, n << 20, 0x1000, memory.addr, False) is None
"""


def vms_command(tmp_path: Path, count: int) -> list[str]:
    script = tmp_path / "vms.py"
    script.write_text(VMS)
    return [sys.executable, str(script), str(count)]


def record(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["record", *args])
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr



@needs_kvm
def test_the_small_vmm_is_recorded_exactly(vmm: Path, tmp_path: Path) -> None:
    out = tmp_path / "vmm.yaml"
    status, _, stderr = record("-o", str(out), "--", str(vmm))
    assert status == 0, stderr
    text = out.read_text()
    assert text.startswith(f"# Recorded by gpa-plan record from: {vmm}\n# Host kernel: Linux ")
    assert yaml.safe_load(text) == yaml.safe_load((DATA / "vmm-expected.yaml").read_text())


@needs_kvm
def test_json_is_the_same_layout(vmm: Path, tmp_path: Path) -> None:
    out = tmp_path / "vmm.json"
    status, _, stderr = record("--format", "json", "-o", str(out), "--", str(vmm))
    assert status == 0, stderr
    import json

    assert json.loads(out.read_text()) == yaml.safe_load(
        (DATA / "vmm-expected.yaml").read_text())


@needs_kvm
def test_several_vms_go_to_a_directory_in_creation_order(tmp_path: Path) -> None:
    out = tmp_path / "rec"
    status, _, stderr = record("-o", str(out), "--", *vms_command(tmp_path, 3))
    assert status == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["vm1.yaml", "vm2.yaml", "vm3.yaml"]
    for n in (1, 2, 3):
        layout = yaml.safe_load((out / f"vm{n}.yaml").read_text())
        assert [(m["base"], m["size"]) for m in layout["memslots"]] == [(n << 20, 0x1000)]
        assert f"{out / f'vm{n}.yaml'}: VM {n}: created by process " in stderr
    assert "; 1 memslot\n" in stderr


@needs_kvm
def test_one_vm_into_an_existing_directory(tmp_path: Path) -> None:
    status, _, stderr = record("-o", str(tmp_path), "--", *vms_command(tmp_path, 1))
    assert status == 0, stderr
    assert yaml.safe_load((tmp_path / "vm1.yaml").read_text())["memslots"][0]["base"] == 1 << 20


@needs_kvm
def test_several_vms_never_clobber_a_file_named_by_o(tmp_path: Path) -> None:
    out = tmp_path / "rec.yaml"
    out.write_text("mine\n")
    status, _, stderr = record("-o", str(out), "--", *vms_command(tmp_path, 2))
    assert status == 0, stderr
    assert out.read_text() == "mine\n"
    assert sorted(p.name for p in (tmp_path / "rec.yaml.d").iterdir()) == ["vm1.yaml",
                                                                           "vm2.yaml"]
    assert f"the layouts are in {out}.d" in stderr


@needs_kvm
def test_several_vms_on_stdout_are_yaml_documents(tmp_path: Path) -> None:
    status, stdout, stderr = record("--", *vms_command(tmp_path, 2))
    assert status == 0, stderr
    docs = list(yaml.safe_load_all(stdout))
    assert [d["memslots"][0]["base"] for d in docs] == [1 << 20, 2 << 20]


def test_a_command_without_vms_records_nothing(tmp_path: Path) -> None:
    out = tmp_path / "rec.yaml"
    status, stdout, stderr = record("-o", str(out), "--", "true")
    assert (status, stdout) == (1, "")
    assert "true created no KVM VM" in stderr
    assert not out.exists()


def test_a_command_that_does_not_exist_is_a_usage_error(tmp_path: Path) -> None:
    status, _, stderr = record("--", str(tmp_path / "nothing-here"))
    assert status == 2
    assert "gpa-plan: record: " in stderr and "nothing-here" in stderr


def test_the_commands_failure_is_said(tmp_path: Path) -> None:
    status, _, stderr = record("--", "false")
    assert status == 1
    assert "note: false exited with status 1" in stderr


def test_a_command_is_required() -> None:
    assert record()[0] == 2


# A program that builds a VM, says so, and waits: for Ctrl-C.
WAITS = """\
import signal, sys, time
from gpa_plan.probe import kvm
if sys.argv[1] == "ignore":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
k = kvm.Kvm()
memory = kvm.Memory(0x1000)
vm = kvm.create_vm(k)
assert kvm.set_memslot(vm, 3, 0, 0x8000_0000, 0x1000, memory.addr, True) is None
print("ready", flush=True)
time.sleep(60)
"""


def interrupted(tmp_path: Path, mode: str, times: int) -> tuple[int, str, Path]:
    """`gpa-plan record` of WAITS in its own session, sent SIGINT ``times`` the way a
    terminal sends it: to the whole foreground process group."""
    import os
    import signal

    script = tmp_path / "waits.py"
    script.write_text(WAITS)
    out = tmp_path / "rec.yaml"
    process = subprocess.Popen(
        [sys.executable, "-m", "gpa_plan", "record", "-o", str(out), "--", sys.executable,
         str(script), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    for _ in range(times):
        os.killpg(process.pid, signal.SIGINT)
        if times > 1:
            import time

            time.sleep(0.3)
    _, stderr = process.communicate(timeout=30)
    return process.returncode, stderr, out


@needs_kvm
def test_ctrl_c_reaches_the_command_and_the_recording_is_written(tmp_path: Path) -> None:
    status, stderr, out = interrupted(tmp_path, "default", 1)
    assert status == 0, stderr
    assert "was ended by signal 2" in stderr
    layout = yaml.safe_load(out.read_text())
    assert layout["memslots"] == [{"name": "slot3", "slot": 3, "base": 0x8000_0000,
                                   "size": 0x1000, "readonly": True}]


@needs_kvm
def test_a_second_ctrl_c_stops_a_command_that_ignores_it(tmp_path: Path) -> None:
    status, stderr, out = interrupted(tmp_path, "ignore", 2)
    assert status == 0, stderr
    assert "the recording was stopped (a second Ctrl-C, or SIGTERM)" in stderr
    assert yaml.safe_load(out.read_text())["memslots"][0]["base"] == 0x8000_0000


@needs_kvm
def test_the_library_gives_what_the_command_writes(tmp_path: Path) -> None:
    import gpa_plan

    command = vms_command(tmp_path, 2)
    recording = gpa_plan.record_command(command)
    out = tmp_path / "rec"
    status, _, _ = record("-o", str(out), "--", *command)
    assert status == 0
    for number, layout in enumerate(recording.layouts, 1):
        written = yaml.safe_load((out / f"vm{number}.yaml").read_text())
        assert layout.document == written


REGION2 = """\
import struct
from gpa_plan.probe import kvm
k = kvm.Kvm()
memory = kvm.Memory(0x2000)
vm = kvm.create_vm(k)
# struct kvm_userspace_memory_region2: slot, flags, guest_phys_addr, memory_size,
# userspace_addr, guest_memfd_offset, guest_memfd, pad1, pad2[14]
def region2(slot, flags, base, size):
    arg = struct.pack("<IIQQQQII14Q", slot, flags, base, size, memory.addr, 0, 0, 0, *[0] * 14)
    return kvm.try_ioctl(vm, kvm.iow(0x49, len(arg)), arg)
assert region2(1, kvm.KVM_MEM_READONLY, 0x10_0000, 0x2000) is None
assert region2(2, 0, 0x20_0000, 0x1000) is None
assert region2(2, 0, 0x30_0000, 0x1000) is None   # moved
assert region2(1, 0, 0x10_0000, 0) is None        # deleted
"""


@needs_kvm
def test_memslots_of_set_user_memory_region2_on_the_real_kernel(tmp_path: Path) -> None:
    from gpa_plan.probe import kvm

    with_kvm = kvm.Kvm()
    supported = with_kvm.check_extension(231)  # KVM_CAP_USER_MEMORY2 (Linux 6.8)
    with_kvm.close()
    if not supported:
        pytest.skip("this kernel has no KVM_SET_USER_MEMORY_REGION2 (KVM_CAP_USER_MEMORY2)")
    script = tmp_path / "region2.py"
    script.write_text(REGION2)
    status, stdout, stderr = record("--", sys.executable, str(script))
    assert status == 0, stderr
    assert yaml.safe_load(stdout)["memslots"] == [
        {"name": "slot2", "slot": 2, "base": 0x30_0000, "size": 0x1000}]


FDS = """\
import fcntl, os, sys
from gpa_plan.probe import kvm
kvm_path = sys.argv[1]
fd = os.open(kvm_path, os.O_RDWR | os.O_CLOEXEC)
memory = kvm.Memory(0x1000)
vm1 = kvm.ioctl(fd, kvm.KVM_CREATE_VM, 0)
vm2 = kvm.ioctl(fd, kvm.KVM_CREATE_VM, 0)
dup = os.dup(vm1)
dupfd = fcntl.fcntl(vm1, fcntl.F_DUPFD_CLOEXEC, 100)
assert kvm.set_memslot(dup, 1, 0, 0x10_0000, 0x1000, memory.addr, False) is None
assert kvm.set_memslot(dupfd, 2, 0, 0x20_0000, 0x1000, memory.addr, False) is None
os.dup2(vm2, dup)   # dup now names VM 2
assert kvm.set_memslot(dup, 7, 0, 0x70_0000, 0x1000, memory.addr, False) is None
"""


def fds_recording(tmp_path: Path, kvm_path: str) -> list[dict]:
    script = tmp_path / "fds.py"
    script.write_text(FDS)
    status, stdout, stderr = record("--", sys.executable, str(script), kvm_path)
    assert status == 0, stderr
    return list(yaml.safe_load_all(stdout))


@needs_kvm
def test_calls_through_duplicated_vm_fds_go_to_their_vm(tmp_path: Path) -> None:
    first, second = fds_recording(tmp_path, "/dev/kvm")
    assert [m["slot"] for m in first["memslots"]] == [1, 2]
    assert [m["slot"] for m in second["memslots"]] == [7]


@needs_kvm
def test_a_kvm_device_node_of_another_path_is_kvm(tmp_path: Path) -> None:
    """A chroot's or a jail's own /dev/kvm (Firecracker's jailer makes one) reads as another
    path from outside: the device number says it is KVM."""
    import os

    node = tmp_path / "kvm"
    try:
        os.mknod(node, 0o600 | 0o020000, os.makedev(10, 232))
    except OSError as err:
        pytest.skip(f"cannot make a device node here: {err.strerror}")
    first, second = fds_recording(tmp_path, str(node))
    assert [m["slot"] for m in first["memslots"]] == [1, 2]
    assert [m["slot"] for m in second["memslots"]] == [7]


@needs_kvm
def test_a_refused_create_vm_is_said(tmp_path: Path) -> None:
    script = tmp_path / "badvm.py"
    script.write_text("from gpa_plan.probe import kvm\nk = kvm.Kvm()\n"
                      "print(kvm.try_ioctl(k.fd, kvm.KVM_CREATE_VM, 0x77))\n")
    status, _, stderr = record("--", sys.executable, str(script))
    assert status == 1
    assert "note: KVM_CREATE_VM (type 0x77) in process " in stderr
    assert "refused with EINVAL: no VM." in stderr


def test_an_output_directory_that_does_not_exist_stops_before_the_command(
        tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    status, _, stderr = record("-o", str(tmp_path / "nowhere" / "x.yaml"), "--", "touch",
                               str(marker))
    assert status == 2
    assert f"the directory {tmp_path / 'nowhere'} does not exist" in stderr
    assert not marker.exists()


@needs_kvm
def test_o_dash_is_stdout_even_for_several_vms(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    status, stdout, stderr = record("-o", "-", "--", *vms_command(tmp_path, 2))
    assert status == 0, stderr
    assert len(list(yaml.safe_load_all(stdout))) == 2
    assert not (tmp_path / "-").exists()


@needs_kvm
def test_files_of_an_earlier_larger_recording_are_named(tmp_path: Path) -> None:
    out = tmp_path / "rec"
    assert record("-o", str(out), "--", *vms_command(tmp_path, 3))[0] == 0
    status, _, stderr = record("-o", f"{out}/", "--", *vms_command(tmp_path, 1))
    assert status == 0
    assert f"note: {out / 'vm2.yaml'} is from an earlier recording: this one created 1 VM" \
        in stderr
    assert f"note: {out / 'vm3.yaml'} is from an earlier recording" in stderr


@needs_kvm
def test_json_says_on_stderr_what_the_yaml_comments_say(tmp_path: Path) -> None:
    status, stdout, stderr = record("--format", "json", "--", *vms_command(tmp_path, 1))
    assert status == 0
    assert "note: VM 1 of 1: KVM_CREATE_VM in process " in stderr
    assert json.loads(stdout)["memslots"][0]["base"] == 1 << 20


def test_record_under_a_tracer_says_so(tmp_path: Path) -> None:
    """A process has one tracer: record run under record (or strace, gdb) cannot trace."""
    done = subprocess.run([sys.executable, "-m", "gpa_plan", "record", "--", sys.executable,
                           "-m", "gpa_plan", "record", "--", "true"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1  # the outer record: the inner one created no VM
    assert "gpa-plan: record: the command is already traced: gpa-plan itself runs under a " \
        "tracer (process " in done.stderr
    assert "exited with status 2" in done.stderr  # the inner one could not run its command
