"""Guest traffic read from the vCPUs' own kvm_run pages, by stopping on every KVM_RUN: the
path `record --traffic` takes where tracefs cannot be used (not root, no tracefs, no KVM
tracepoints).

`RunWatcher` stands in front of the recorder as the tracer's handler. The recorder knows each
vCPU's fd and VM (`Recorder.vcpu_vm`); the watcher learns the address its kvm_run page is
mapped at from the program's mmap() of that fd at offset 0
(kvm_vcpu_mmap(), kvm_vcpu_fault(): page 0 is struct kvm_run). At the end of each KVM_RUN it
reads the exit from that page (include/uapi/linux/kvm.h struct kvm_run: exit_reason, and for
KVM_EXIT_MMIO phys_addr, len, is_write, for KVM_EXIT_IO direction, size, port, count) while
the thread is still stopped, so every exit is known exactly, attributed to its VM by its fd.
A KVM_RUN that returns -1 is a run failure with its errno (-EINTR: KVM_EXIT_INTR, as the
tracefs path counts it). What it costs: two stops of the thread per exit (see the README).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

from gpa_plan.probe.kvm import (
    KVM_CREATE_VCPU,
    KVM_EXIT_INTERNAL_ERROR,
    KVM_EXIT_IO,
    KVM_EXIT_IO_OUT,
    KVM_EXIT_MMIO,
    KVM_RUN,
    RUN_EXIT_REASON_OFFSET,
    RUN_INTERNAL,
    RUN_IO,
    RUN_MMIO,
    RUN_UNION_OFFSET,
)
from gpa_plan.record.calls import TracedCall
from gpa_plan.record.state import Recorder, copy_to_child
from gpa_plan.record.traffic import Access, Exit, Traffic

VCPU_TARGET = "anon_inode:kvm-vcpu:"
RUN_HEAD = RUN_UNION_OFFSET + max(RUN_MMIO.size, RUN_IO.size, RUN_INTERNAL.size)
PATH = "ptrace"


class RunWatcher:
    """The tracer's handler when traffic is read from kvm_run: every call goes on to the
    recorder; KVM_RUN and the vCPUs' mmap() feed ``traffic`` (one Traffic per VM, by the
    VM's number)."""

    def __init__(self, recorder: Recorder, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.recorder = recorder
        self.traffic: dict[int, Traffic] = {}
        self._clock = clock
        self._pages: dict[tuple[int, int], int] = {}  # (tgid, fd) -> kvm_run's address

    def forked(self, parent_tgid: int, child_tgid: int) -> None:
        self.recorder.forked(parent_tgid, child_tgid)
        copy_to_child(self._pages, parent_tgid, child_tgid)  # the same kvm_run mappings

    def call(self, call: TracedCall) -> None:
        if call.name == "mmap":
            self._mapped(call)
            return
        request = call.args[1] & 0xFFFF_FFFF
        fd = call.args[0] & 0xFFFF_FFFF
        if request == KVM_RUN and call.fd_target.startswith(VCPU_TARGET):
            self._ran(call, fd)
            return
        if request == KVM_CREATE_VCPU and call.ret >= 0:
            self._pages.pop((call.tgid, call.ret), None)
        self.recorder.call(call)

    def _mapped(self, call: TracedCall) -> None:
        """mmap(addr, length, prot, flags, fd, offset) of a vCPU at offset 0: kvm_run."""
        fd, offset = call.args[4] & 0xFFFF_FFFF, call.args[5]
        if self.recorder.vcpu_vm(call.tgid, fd) and offset == 0 and call.ret > 0:
            self._pages[(call.tgid, fd)] = call.ret

    def _ran(self, call: TracedCall, fd: int) -> None:
        vm = self.recorder.vcpu_vm(call.tgid, fd)
        if vm is None:
            return
        traffic = self.traffic.setdefault(vm.number, Traffic(path=PATH))
        if call.ret < 0:
            traffic.add(Exit(call.tid, call.tgid, self._clock(), 0, call.ret))
            return
        page = self._pages.get((call.tgid, fd))
        try:
            head = call.memory(page, RUN_HEAD) if page is not None else None
        except OSError:
            head = None
        if head is None:
            traffic.unresolved += 1
            return
        traffic.add(exit_of(call, head, self._clock()))


def exit_of(call: TracedCall, head: bytes, timestamp: int) -> Exit:
    """The Exit a kvm_run page's first bytes (``head``) describe."""
    (reason,) = struct.unpack_from("<I", head, RUN_EXIT_REASON_OFFSET)
    if reason == KVM_EXIT_MMIO:
        address, _, length, is_write = RUN_MMIO.unpack_from(head, RUN_UNION_OFFSET)
        return Exit(call.tid, call.tgid, timestamp, reason, 0, Access("mmio", address, length),
                    bool(is_write))
    if reason == KVM_EXIT_IO:
        direction, size, port, count, _ = RUN_IO.unpack_from(head, RUN_UNION_OFFSET)
        return Exit(call.tid, call.tgid, timestamp, reason, 0, Access("port", port, size),
                    direction == KVM_EXIT_IO_OUT, max(count, 1))
    if reason == KVM_EXIT_INTERNAL_ERROR:
        suberror, _ = RUN_INTERNAL.unpack_from(head, RUN_UNION_OFFSET)
        return Exit(call.tid, call.tgid, timestamp, reason, 0, suberror=suberror)
    return Exit(call.tid, call.tgid, timestamp, reason, 0)

