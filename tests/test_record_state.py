"""The recorder keeps each VM as KVM keeps it, from ioctl calls handed over as the tracer
hands them (tests/record_fakes.py packs the structures behind their pointers)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from record_fakes import ITS, KVM, VGIC_V2, VGIC_V3, VM, Tracee, region_value

from gpa_plan.record import uapi
from gpa_plan.record.memslots import Memslot
from gpa_plan.record.state import WANTED_IOCTLS, Frame, Ioeventfd, Recorder, Zone


def test_the_wanted_ioctls_are_every_request_the_recorder_reads() -> None:
    assert uapi.KVM_SET_USER_MEMORY_REGION2 in WANTED_IOCTLS
    assert uapi.KVM_ARM_SET_DEVICE_ADDR in WANTED_IOCTLS
    assert uapi.KVM_SET_TSS_ADDR in WANTED_IOCTLS
    assert uapi.KVM_SET_IDENTITY_MAP_ADDR in WANTED_IOCTLS
    assert len(WANTED_IOCTLS) == 16
    assert uapi.KVM_SET_USER_MEMORY_REGION2 == 0x40A0AE49  # _IOW(KVMIO, 0x49, 160 bytes)
    assert uapi.KVM_CREATE_PIT2 == 0x4040AE77
    assert uapi.KVM_ARM_SET_DEVICE_ADDR == 0x4010AEAB


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc)")
def test_the_request_numbers_are_those_of_the_hosts_linux_kvm_h(tmp_path: Path) -> None:
    """The host's own <linux/kvm.h> (older ones lack KVM_SET_USER_MEMORY_REGION2)."""
    names = sorted(uapi.REQUEST_NAMES.values())
    lines = ["#include <linux/kvm.h>", "#include <stdio.h>", "int main(void) {"]
    for name in names:
        lines += [f"#ifdef {name}", f'printf("{name} %lu\\n", (unsigned long){name});', "#endif"]
    source = tmp_path / "requests.c"
    source.write_text("\n".join([*lines, "return 0;", "}", ""]))
    subprocess.run(["cc", "-o", str(tmp_path / "requests"), str(source)], check=True,
                   timeout=60)
    printed = subprocess.run([str(tmp_path / "requests")], capture_output=True, text=True,
                             check=True, timeout=60).stdout.split()
    host = dict(zip(printed[::2], map(int, printed[1::2]), strict=True))
    ours = {name: number for number, name in uapi.REQUEST_NAMES.items()}
    assert len(host) >= len(names) - 1
    assert host == {name: ours[name] for name in host}


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc)")
@pytest.mark.skipif(os.uname().machine != "x86_64",
                    reason="the table's generic requests carry x86_64's structure sizes")
def test_the_name_table_agrees_with_the_hosts_linux_kvm_h(tmp_path: Path) -> None:
    """Every name of uapi.KVM_IOCTL_NAMES the host's <linux/kvm.h> has (an older one lacks
    the newest) has the table's number; arm64's own ones need arm64's structures."""
    names = sorted(name for name in uapi.KVM_IOCTL_NAMES.values()
                   if not name.startswith("KVM_ARM_"))
    lines = ["#include <linux/kvm.h>", "#include <stdio.h>", "int main(void) {"]
    for name in names:
        lines += [f"#ifdef {name}", f'printf("{name} %lu\\n", (unsigned long){name});',
                  "#endif"]
    source = tmp_path / "names.c"
    source.write_text("\n".join([*lines, "return 0;", "}", ""]))
    subprocess.run(["cc", "-o", str(tmp_path / "names"), str(source)], check=True, timeout=60)
    printed = subprocess.run([str(tmp_path / "names")], capture_output=True, text=True,
                             check=True, timeout=60).stdout.split()
    host = dict(zip(printed[::2], map(int, printed[1::2]), strict=True))
    ours = {name: number for number, name in uapi.KVM_IOCTL_NAMES.items()}
    assert len(host) >= 80
    assert host == {name: ours[name] for name in host}


def test_memslots_are_added_moved_resized_and_deleted_as_kvm_applies_them() -> None:
    t = Tracee()
    t.create_vm(4)
    t.memslot(4, 0, 0, 0x10_0000)
    t.memslot(4, 1, 0x10_0000, 0x1000)
    t.memslot(4, 2, 0x20_0000, 0x2000, uapi.KVM_MEM_READONLY)
    t.memslot(4, 1, 0x30_0000, 0x1000, uapi.KVM_MEM_LOG_DIRTY_PAGES)  # moved, flags changed
    t.memslot(4, 0, 0, 0)  # deleted
    t.memslot(4, 0, 0x1000, 0x1000, as_id=1)
    vm, = t.recorder.vms
    assert vm.memslots == {
        (0, 1): Memslot(0, 1, 0x30_0000, 0x1000, False, True),
        (0, 2): Memslot(0, 2, 0x20_0000, 0x2000, True, False),
        (1, 0): Memslot(1, 0, 0x1000, 0x1000, False, False),
    }


def test_region2_keeps_the_guest_memfd_flag() -> None:
    t = Tracee()
    t.create_vm(4)
    t.memslot2(4, 3, 0x8000_0000, 0x20_0000, uapi.KVM_MEM_GUEST_MEMFD, guest_memfd=11)
    assert t.recorder.vms[0].memslots == {
        (0, 3): Memslot(0, 3, 0x8000_0000, 0x20_0000, False, False, guest_memfd=True)}


def test_refused_calls_change_nothing_and_are_counted_by_call_errno_and_detail() -> None:
    t = Tracee()
    t.create_vm(4)
    t.memslot(4, 0, 0, 0x10_0000)
    for _ in range(2):
        t.memslot(4, 1, 0x8_0000, 0x1000, ret=-errno.EEXIST)  # over slot 0
    t.memslot(4, 0, 0, 0, ret=-errno.EINVAL)
    t.ioeventfd(4, 0xD000_0000, 3, ret=-errno.EINVAL)
    vm, = t.recorder.vms
    assert vm.memslots == {(0, 0): Memslot(0, 0, 0, 0x10_0000, False, False)}
    assert vm.refused == {
        ("KVM_SET_USER_MEMORY_REGION", "EEXIST", "slot 1 at 0x80000, 0x1000 bytes"): 2,
        ("KVM_SET_USER_MEMORY_REGION", "EINVAL", "slot 0 at 0x0, 0x0 bytes"): 1,
        ("KVM_IOEVENTFD", "EINVAL", "MMIO 0xd0000000, length 3"): 1,
    }
    assert vm.ioeventfds == []


def test_a_structure_that_cannot_be_read_is_said_and_the_call_left_out() -> None:
    t = Tracee()
    t.create_vm(4)
    t.ioctl(4, uapi.KVM_SET_USER_MEMORY_REGION, 0xDEAD_0000)
    vm, = t.recorder.vms
    assert vm.memslots == {}
    assert vm.unread == ["KVM_SET_USER_MEMORY_REGION: the structure at 0xdead0000 could not "
                         "be read (Bad address); the call is left out"]


def test_a_refused_call_whose_structure_cannot_be_read_is_still_counted() -> None:
    t = Tracee()
    t.create_vm(4)
    t.ioctl(4, uapi.KVM_IOEVENTFD, 0, ret=-errno.EFAULT)  # a NULL pointer
    vm, = t.recorder.vms
    assert (vm.refused, vm.unread) == ({("KVM_IOEVENTFD", "EFAULT", ""): 1}, [])


def test_calls_on_a_reused_fd_number_that_is_no_longer_the_vm_are_not_the_vms() -> None:
    t = Tracee()
    t.create_vm(4)
    # The VM's fd was closed and 4 now names something else (a vCPU, an eventfd).
    t.ioctl(4, uapi.KVM_CREATE_IRQCHIP, target="anon_inode:[eventfd]")
    t.memslot(5, 0, 0, 0x1000)  # an fd that was never a VM
    vm, = t.recorder.vms
    assert (vm.irqchip, vm.memslots) == (False, {})


def test_a_later_vm_on_the_same_fd_takes_it_over_and_vms_keep_creation_order() -> None:
    t = Tracee()
    t.create_vm(4)
    t.memslot(4, 0, 0, 0x1000)
    t.create_vm(5)
    t.memslot(5, 0, 0x2000, 0x1000)
    t.create_vm(4)  # the first VM's fd was closed, its number reused
    t.memslot(4, 0, 0x4000, 0x1000)
    first, second, third = t.recorder.vms
    assert [vm.number for vm in t.recorder.vms] == [1, 2, 3]
    assert [m.base for m in first.memslots.values()] == [0]
    assert [m.base for m in second.memslots.values()] == [0x2000]
    assert [m.base for m in third.memslots.values()] == [0x4000]


def test_create_vm_counts_only_on_dev_kvm_and_when_it_returned_a_vm() -> None:
    t = Tracee()
    t.ioctl(3, uapi.KVM_CREATE_VM, 0, ret=-errno.EINVAL, target=KVM)
    t.ioctl(3, uapi.KVM_CREATE_VM, 0, ret=7, target="/dev/null")
    assert t.recorder.vms == []
    assert t.recorder.notes == ["KVM_CREATE_VM (type 0x0) in process 100 refused with EINVAL: "
                                "no VM."]


def test_fork_copies_the_fd_table_so_the_child_reaches_the_parents_vm() -> None:
    t = Tracee(tgid=100)
    t.create_vm(4)
    t.recorder.forked(100, 200)
    t.memslot(4, 0, 0, 0x1000)
    t.tgid = 200
    t.memslot(4, 1, 0x1000, 0x1000)  # the child's call on the inherited fd
    t.create_vm(4)  # the child's own VM on that number: the parent keeps its own
    t.memslot(4, 0, 0x8000, 0x1000)
    t.tgid = 100
    t.memslot(4, 2, 0x2000, 0x1000)
    parent_vm, child_vm = t.recorder.vms
    assert sorted(parent_vm.memslots) == [(0, 0), (0, 1), (0, 2)]
    assert child_vm.tgid == 200 and list(child_vm.memslots) == [(0, 0)]


def test_vcpu_fds_lead_back_to_their_vm_in_the_process_and_its_children() -> None:
    t = Tracee(tgid=100)
    t.create_vm(4)
    t.create_vm(5)
    t.vcpus(5, 2)  # fds 20 and 21
    t.recorder.forked(100, 200)
    second = t.recorder.vms[1]
    assert t.recorder.vcpu_vm(100, 21) is second and t.recorder.vcpu_vm(200, 20) is second
    assert t.recorder.vcpu_vm(100, 4) is None
    t.create_vm(20)  # the vCPU's fd was closed and its number reused
    assert t.recorder.vcpu_vm(100, 20) is None


def test_x86_irqchips_and_pit_are_kept_with_the_speaker_flag() -> None:
    t = Tracee()
    t.create_vm(4)
    t.create_vm(5)
    t.ioctl(4, uapi.KVM_CREATE_IRQCHIP)
    t.pit2(4, uapi.KVM_PIT_SPEAKER_DUMMY)
    t.enable_cap(5, uapi.KVM_CAP_SPLIT_IRQCHIP)
    t.pit2(5, 0, ret=-errno.ENOENT)  # no PIC in the kernel: kvm_arch_vm_ioctl() refuses
    full, split = t.recorder.vms
    assert (full.irqchip, full.split_irqchip, full.pit, full.pit_speaker) == (
        True, False, True, True)
    assert (split.irqchip, split.split_irqchip, split.pit) == (False, True, False)
    assert split.refused == {("KVM_CREATE_PIT2", "ENOENT", ""): 1}


def test_ioeventfds_are_added_and_deassign_removes_the_one_that_matches() -> None:
    t = Tracee()
    t.create_vm(4)
    t.ioeventfd(4, 0xD000_0000, 4, datamatch=0)
    t.ioeventfd(4, 0xD000_0000, 4, datamatch=1)
    t.ioeventfd(4, 0xD000_1000, 0)
    t.ioeventfd(4, 0x510, 2, pio=True)
    t.ioeventfd(4, 0xD000_0000, 4, datamatch=0, deassign=True)
    t.ioeventfd(4, 0x510, 2, deassign=True)  # MMIO: not the port one, KVM finds none
    assert t.recorder.vms[0].ioeventfds == [
        Ioeventfd(1, 0xD000_0000, 4, 1, False),
        Ioeventfd(2, 0xD000_1000, 0, None, False),
        Ioeventfd(3, 0x510, 2, None, True),
    ]


def test_coalesced_unregister_removes_the_zones_that_hold_the_range_given() -> None:
    t = Tracee()
    t.create_vm(4)
    t.zone(4, 0xA_0000, 0x2_0000)
    t.zone(4, 0xC_0000, 0x1000)
    t.zone(4, 0x3F8, 8, pio=True)
    t.zone(4, 0xA_1000, 0x10, unregister=True)  # inside the first zone
    t.zone(4, 0xC_0000, 0x10, pio=True, unregister=True)  # port space: not the MMIO zone
    assert t.recorder.vms[0].zones == [Zone(1, 0xC_0000, 0x1000, False),
                                       Zone(2, 0x3F8, 8, True)]


def test_vgic_v3_frames_come_from_the_value_behind_the_attribute_pointer() -> None:
    t = Tracee()
    t.create_vm(4, vm_type=44)
    t.vcpus(4, 3)
    t.create_device(4, uapi.KVM_DEV_TYPE_ARM_VGIC_V3, fd=6)
    t.set_addr(6, uapi.KVM_VGIC_V3_ADDR_TYPE_DIST, 0x800_0000, VGIC_V3)
    t.set_addr(6, uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION,
               region_value(0x80A_0000, 2, 0), VGIC_V3)
    t.set_addr(6, uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION,
               region_value(0x1000_0000, 1, 1), VGIC_V3)
    t.set_addr(6, uapi.KVM_VGIC_V3_ADDR_TYPE_DIST, 0x900_0000, VGIC_V3, ret=-errno.EEXIST)
    t.set_addr(6, 0, 0, VGIC_V3, group=4)  # KVM_DEV_ARM_VGIC_GRP_CTRL: no address
    t.create_device(4, uapi.KVM_DEV_TYPE_ARM_VGIC_ITS, fd=7)
    t.set_addr(7, uapi.KVM_VGIC_ITS_ADDR_TYPE, 0x808_0000, ITS)
    vm, = t.recorder.vms
    assert (vm.vm_type, vm.vcpus) == (44, 3)
    assert list(vm.frames.values()) == [
        Frame("vgic-v3-dist", 0x800_0000, 0),
        Frame("vgic-v3-redist", 0x80A_0000, 0, 0, 2),
        Frame("vgic-v3-redist", 0x1000_0000, 0, 1, 1),
        Frame("vgic-its", 0x808_0000, 1),
    ]
    assert vm.refused == {("KVM_SET_DEVICE_ATTR", "EEXIST",
                           "device type 7, group 0, attribute 2"): 1}


def test_legacy_redistributor_and_a_test_only_device() -> None:
    t = Tracee()
    t.create_vm(4)
    t.create_device(4, uapi.KVM_DEV_TYPE_ARM_VGIC_V3, fd=6, flags=uapi.KVM_CREATE_DEVICE_TEST)
    t.set_addr(6, uapi.KVM_VGIC_V3_ADDR_TYPE_DIST, 0x800_0000, VGIC_V3)  # fd 6 is no device
    t.create_device(4, uapi.KVM_DEV_TYPE_ARM_VGIC_V3, fd=6)
    t.set_addr(6, uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST, 0x80A_0000, VGIC_V3)
    assert list(t.recorder.vms[0].frames.values()) == [
        Frame("vgic-v3-redist", 0x80A_0000, 0, 0, None)]


def test_vgic_v2_frames_through_kvm_arm_set_device_addr_or_the_device() -> None:
    t = Tracee()
    t.create_vm(4)
    t.ioctl(4, uapi.KVM_CREATE_IRQCHIP)
    t.arm_device_addr(4, uapi.KVM_VGIC_V2_ADDR_TYPE_DIST, 0x800_0000)
    t.arm_device_addr(4, uapi.KVM_VGIC_V2_ADDR_TYPE_CPU, 0x801_0000)
    t.create_vm(5)
    t.create_device(5, uapi.KVM_DEV_TYPE_ARM_VGIC_V2, fd=8)
    t.set_addr(8, uapi.KVM_VGIC_V2_ADDR_TYPE_CPU, 0x2C00_0000, VGIC_V2)
    legacy, device = t.recorder.vms
    assert list(legacy.frames.values()) == [Frame("vgic-v2-dist", 0x800_0000, -1),
                                            Frame("vgic-v2-cpu", 0x801_0000, -1)]
    assert list(device.frames.values()) == [Frame("vgic-v2-cpu", 0x2C00_0000, 0)]


def test_device_calls_need_the_device_file_and_follow_a_fork() -> None:
    t = Tracee()
    t.create_vm(4)
    t.create_device(4, uapi.KVM_DEV_TYPE_ARM_VGIC_V3, fd=6)
    t.set_addr(6, uapi.KVM_VGIC_V3_ADDR_TYPE_DIST, 0x800_0000, VM)  # 6 is not that file
    t.recorder.forked(100, 300)
    t.tgid = 300
    t.set_addr(6, uapi.KVM_VGIC_V3_ADDR_TYPE_DIST, 0x900_0000, VGIC_V3)
    assert list(t.recorder.vms[0].frames.values()) == [Frame("vgic-v3-dist", 0x900_0000, 0)]


def test_other_system_calls_and_requests_are_ignored() -> None:
    recorder = Recorder()
    t = Tracee(recorder)
    t.create_vm(4)
    t.ioctl(4, 0xAE80)  # KVM_RUN
    t.ioctl(4, uapi.KVM_SET_USER_MEMORY_REGION | 0xFFFF_FFFF_0000_0000, t.put(
        uapi.MEM_REGION.pack(0, 0, 0, 0x1000, 0)))  # upper bits of the request ignored
    assert list(recorder.vms[0].memslots) == [(0, 0)]


SET_GSI_ROUTING = 0x4008AE6A  # _IOW(KVMIO, 0x6a, struct kvm_irq_routing)
SET_SREGS = 0x4138AE84  # x86 _IOW(KVMIO, 0x84, struct kvm_sregs)
IRQFD = 0x4020AE76


def test_every_kvm_ioctl_refused_on_a_vm_vcpu_or_device_fd_is_counted_by_name() -> None:
    t = Tracee()
    t.create_vm(4)
    t.vcpus(4, 1)  # fd 20
    t.create_device(4, uapi.KVM_DEV_TYPE_ARM_VGIC_V3, 6)
    t.ioctl(4, SET_GSI_ROUTING, 0x1000, ret=-errno.EINVAL)
    t.ioctl(4, SET_GSI_ROUTING, 0x1000, ret=-errno.EINVAL)
    t.ioctl(20, SET_SREGS, 0x1000, ret=-errno.EINVAL, target="anon_inode:kvm-vcpu:0")
    # One number, two names: KVM_GET_ONE_REG on a vCPU, KVM_ARM_SET_DEVICE_ADDR on a VM.
    t.ioctl(20, uapi.KVM_ARM_SET_DEVICE_ADDR, 0x1000, ret=-errno.ENOENT,
            target="anon_inode:kvm-vcpu:0")
    t.ioctl(6, 0x4018AEE2, 0x1000, ret=-errno.ENXIO, target=VGIC_V3)  # KVM_GET_DEVICE_ATTR
    t.ioctl(4, 0xAEFF, ret=-errno.ENOTTY)  # a request no header has
    t.ioctl(4, IRQFD, 0x1000, ret=0)  # accepted: not kept
    t.ioctl(4, 0xAE80, ret=-errno.EINTR)  # interrupted by a signal: no refusal
    t.ioctl(4, 0xC008AE05, ret=-errno.E2BIG, target=KVM)  # a size query
    assert t.recorder.vms[0].refused == {
        ("KVM_SET_GSI_ROUTING", "EINVAL", ""): 2,
        ("KVM_SET_SREGS", "EINVAL", "on vcpu 0"): 1,
        ("KVM_GET_ONE_REG", "ENOENT", "on vcpu 0"): 1,
        ("KVM_GET_DEVICE_ATTR", "ENXIO", "on device kvm-arm-vgic-v3"): 1,
        ("ioctl 0xaeff", "ENOTTY", ""): 1,
    }
    assert t.recorder.notes == []


def test_refusals_on_dev_kvm_and_fds_of_no_vm_seen_are_notes_once_each() -> None:
    t = Tracee()
    for _ in range(3):
        t.ioctl(3, uapi.KVM_CREATE_VCPU, 0, ret=-errno.EINVAL, target=KVM)
    t.ioctl(9, SET_GSI_ROUTING, 0x1000, ret=-errno.EINVAL)  # a VM made before the recording
    t.ioctl(5, 0x4008AF00, ret=-errno.EINVAL, target="/dev/vhost-net")  # not KVM's
    assert t.recorder.notes == [
        "KVM_CREATE_VCPU on /dev/kvm in process 100 refused with EINVAL (3 times).",
        "KVM_SET_GSI_ROUTING on anon_inode:kvm-vm (fd 9 of process 100, of no VM this "
        "recording saw created) refused with EINVAL.",
    ]
    assert t.recorder.vms == []


def test_the_tss_and_identity_map_addresses_are_kept_and_their_refusals_counted() -> None:
    t = Tracee()
    t.create_vm(4)
    t.ioctl(4, uapi.KVM_SET_TSS_ADDR, 0xFEFF_D000)
    t.ioctl(4, uapi.KVM_SET_TSS_ADDR, 0xFFFF_F000, ret=-errno.EINVAL)
    t.ioctl(4, uapi.KVM_SET_IDENTITY_MAP_ADDR, t.put(uapi.U64.pack(0xFEFF_C000)))
    vm = t.recorder.vms[0]
    assert vm.kvm_private == {"KVM_SET_TSS_ADDR": 0xFEFF_D000,
                              "KVM_SET_IDENTITY_MAP_ADDR": 0xFEFF_C000}
    assert vm.refused == {("KVM_SET_TSS_ADDR", "EINVAL", "address 0xfffff000"): 1}


def test_the_name_table_holds_every_kvm_ioctl_once_and_the_hot_ones() -> None:
    names = uapi.KVM_IOCTL_NAMES
    assert len(set(names.values())) == len(names)
    assert all(uapi.ioctl_type(number) == uapi.KVMIO for number in names)
    assert all(names[number] == name for number, name in uapi.REQUEST_NAMES.items())
    assert uapi.ioctl_name(0x4008AE90) == "KVM_SET_CPUID2"
    assert uapi.ioctl_name(0xC0DEAE12) == "ioctl 0xc0deae12"
    assert uapi.ioctl_name(uapi.KVM_ARM_SET_DEVICE_ADDR, vcpu=True) == "KVM_GET_ONE_REG"
    assert {names[number] for number in uapi.HOT_IOCTLS} >= {
        "KVM_RUN", "KVM_IRQ_LINE", "KVM_IRQ_LINE_STATUS", "KVM_SIGNAL_MSI",
        "KVM_GET_DIRTY_LOG", "KVM_CLEAR_DIRTY_LOG", "KVM_RESET_DIRTY_RINGS",
        "KVM_KVMCLOCK_CTRL"}
    assert not uapi.HOT_IOCTLS & set(uapi.REQUEST_NAMES)
