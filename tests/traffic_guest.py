"""A tiny x86_64 VMM whose guest makes known MMIO and port accesses, for the traffic tests.

The guest runs flat 32-bit protected mode with paging off (as tests/kvm_probe.py's does) from a
one-page code memslot at `CODE_BASE`. Its program is a list of `Access`: each is made ``count``
times in a loop (``mov ecx, count; L: access; dec ecx; jnz L``), then the guest writes
`DONE_PORT` and the VMM stops. The VMM answers MMIO reads and port reads with 0 and counts
every exit it sees in `Run`, by (space, address, width, write): the ground truth the tracefs
summary must match.

Run as a script (``python tests/traffic_guest.py SPEC [--wait]``) it is the traced command:
SPEC is JSON, ``{"accesses": [[space, address, width, write, count], ...], "ioeventfds":
[[space, address, length], ...], "coalesced": [[address, size]], "irqchip": bool, "vms": int,
"threads": bool, "fork": bool, "failures": ["eintr" | "einval" | "internal", ...]}``; it
prints its `Run` as JSON (one per VM), ``created`` times (time.monotonic_ns() at each
KVM_CREATE_VM), ``elapsed_ns`` and ``cpu_ns``, the time and the CPU time its VMs took from
creation to their last exit. With
``--wait`` it reads a line from stdin first, so that a tracer can follow it before it runs.
"""

from __future__ import annotations

import json
import mmap
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gpa_plan.probe import kvm

CODE_BASE = 0x1_0000
DONE_PORT = 0x1234
KVM_CREATE_IRQCHIP = kvm.io(0x60)
KVM_SET_TSS_ADDR = kvm.io(0x47)
TSS_ADDR = 0xFFFB_D000

# struct kvm_segment, kvm_dtable, kvm_sregs, kvm_regs (arch/x86/include/uapi/asm/kvm.h)
_SEGMENT = struct.Struct("<QIH10B")
_DTABLE = struct.Struct("<QH3H")
_SREGS_SIZE = 8 * _SEGMENT.size + 2 * _DTABLE.size + 7 * 8 + 4 * 8
_SREGS_IDT = 8 * _SEGMENT.size + _DTABLE.size
_SREGS_CR0 = 8 * _SEGMENT.size + 2 * _DTABLE.size
_REGS = struct.Struct("<18Q")
KVM_GET_SREGS = kvm.ior(0x83, _SREGS_SIZE)
KVM_SET_SREGS = kvm.iow(0x84, _SREGS_SIZE)
KVM_SET_REGS = kvm.iow(0x82, _REGS.size)
# struct kvm_run: the 256-byte exit union at 32, then kvm_valid_regs (include/uapi/linux/kvm.h)
_RUN_VALID_REGS = kvm.RUN_UNION_OFFSET + 256

# Each access's instruction in 32-bit code: moffs32 loads and stores, dx-addressed port I/O.
_MMIO = {
    (1, True): b"\xa2",  # mov [moffs32], al
    (2, True): b"\x66\xa3",  # mov [moffs32], ax
    (4, True): b"\xa3",  # mov [moffs32], eax
    (1, False): b"\xa0",  # mov al, [moffs32]
    (2, False): b"\x66\xa1",  # mov ax, [moffs32]
    (4, False): b"\xa1",  # mov eax, [moffs32]
}
_PORT = {
    (1, True): b"\xee",  # out dx, al
    (2, True): b"\x66\xef",  # out dx, ax
    (4, True): b"\xef",  # out dx, eax
    (1, False): b"\xec",  # in al, dx
    (2, False): b"\x66\xed",  # in ax, dx
    (4, False): b"\xed",  # in eax, dx
}


@dataclass(frozen=True)
class Access:
    space: str  # "mmio" or "port"
    address: int
    width: int
    write: bool
    count: int


@dataclass
class Run:
    """What the VMM saw: its exits, by (space, address, width, write) and by reason."""

    traffic: Counter[tuple[str, int, int, bool]] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        return {
            "traffic": [[*key, n] for key, n in sorted(self.traffic.items())],
            "reasons": dict(self.reasons),
        }


def program(accesses: Sequence[Access]) -> bytes:
    code = bytearray(b"\xb8\x5a\x5a\x5a\x5a")  # mov eax, 0x5a5a5a5a: the value written
    for a in accesses:
        code += b"\xb9" + struct.pack("<I", a.count)  # mov ecx, count
        if a.space == "port":
            code += b"\x66\xba" + struct.pack("<H", a.address)  # mov dx, port
            body = _PORT[(a.width, a.write)]
        else:
            body = _MMIO[(a.width, a.write)] + struct.pack("<I", a.address)
        body += b"\x49"  # dec ecx
        code += body + b"\x75" + struct.pack("<b", -(len(body) + 2))  # jnz back
    code += b"\x66\xba" + struct.pack("<H", DONE_PORT) + b"\xee"  # mov dx, DONE; out dx, al
    code += b"\xf4\x0f\x0b"  # hlt; ud2
    return bytes(code)


def _protected_mode(vcpu_fd: int) -> None:
    sregs = bytearray(_SREGS_SIZE)
    kvm.ioctl(vcpu_fd, KVM_GET_SREGS, sregs)
    code_seg = (0, 0xFFFF_FFFF, 0x08, 0x0B, 1, 0, 1, 1, 0, 1, 0, 0, 0)
    data_seg = (0, 0xFFFF_FFFF, 0x10, 0x03, 1, 0, 1, 1, 0, 1, 0, 0, 0)
    _SEGMENT.pack_into(sregs, 0, *code_seg)
    for seg in range(1, 6):
        _SEGMENT.pack_into(sregs, seg * _SEGMENT.size, *data_seg)
    _DTABLE.pack_into(sregs, _SREGS_IDT, 0, 0, 0, 0, 0)
    (cr0,) = struct.unpack_from("<Q", sregs, _SREGS_CR0)
    struct.pack_into("<Q", sregs, _SREGS_CR0, (cr0 | 1) & ~((1 << 29) | (1 << 30)))
    kvm.ioctl(vcpu_fd, KVM_SET_SREGS, bytes(sregs))
    regs = [0] * 18
    regs[16], regs[17] = CODE_BASE, 1 << 1  # rip, rflags
    kvm.ioctl(vcpu_fd, KVM_SET_REGS, _REGS.pack(*regs))


def run_vm(
    accesses: Sequence[Access],
    *,
    ioeventfds: Sequence[tuple[str, int, int]] = (),
    coalesced: Sequence[tuple[int, int]] = (),
    irqchip: bool = False,
    created: list[int] | None = None,
) -> Run:
    """Build one VM, run its guest to `DONE_PORT` and return the exits its VMM saw."""
    handle = kvm.Kvm()
    if created is not None:
        created.append(time.monotonic_ns())
    vm_fd = kvm.create_vm(handle)
    code = kvm.Memory(kvm.PAGE_SIZE)
    fds: list[int] = []
    try:
        code.write(0, program(accesses))
        refused = kvm.set_memslot(vm_fd, 0, 0, CODE_BASE, kvm.PAGE_SIZE, code.addr, False)
        assert refused is None, refused
        kvm.try_ioctl(vm_fd, KVM_SET_TSS_ADDR, TSS_ADDR)
        if irqchip:
            kvm.ioctl(vm_fd, KVM_CREATE_IRQCHIP)
        for space, address, length in ioeventfds:
            efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            fds.append(efd)
            flags = kvm.KVM_IOEVENTFD_FLAG_PIO if space == "port" else 0
            kvm.ioctl(vm_fd, kvm.KVM_IOEVENTFD, kvm.IOEVENTFD.pack(0, address, length, efd, flags))
        for address, size in coalesced:
            assert kvm.add_coalesced_zone(vm_fd, address, size) is None
        vcpu_fd = kvm.ioctl(vm_fd, kvm.KVM_CREATE_VCPU, 0)
        fds.append(vcpu_fd)
        _protected_mode(vcpu_fd)
        run_map = mmap.mmap(vcpu_fd, handle.vcpu_mmap_size)
        try:
            return _run(vcpu_fd, run_map)
        finally:
            run_map.close()
    finally:
        for fd in fds:
            os.close(fd)
        os.close(vm_fd)
        code.close()
        handle.close()


def _run(vcpu_fd: int, run_map: mmap.mmap) -> Run:
    seen = Run()
    while True:
        try:
            kvm.ioctl(vcpu_fd, kvm.KVM_RUN)
        except InterruptedError:
            seen.reasons["EINTR"] += 1
            continue
        reason = kvm.exit_reason(run_map)
        seen.reasons[kvm.KVM_EXIT_NAMES.get(reason, str(reason))] += 1
        if reason == kvm.KVM_EXIT_MMIO:
            phys, _, length, is_write = kvm.RUN_MMIO.unpack_from(run_map, kvm.RUN_UNION_OFFSET)
            seen.traffic["mmio", phys, length, bool(is_write)] += 1
            if not is_write:
                struct.pack_into("<Q", run_map, kvm.RUN_UNION_OFFSET + 8, 0)
            continue
        if reason == kvm.KVM_EXIT_IO:
            direction, size, port, count, _ = kvm.RUN_IO.unpack_from(run_map, kvm.RUN_UNION_OFFSET)
            seen.traffic["port", port, size, direction == 1] += count
            if port == DONE_PORT:
                return seen
            continue
        raise RuntimeError(f"unexpected exit {kvm.KVM_EXIT_NAMES.get(reason, reason)}")


def _vcpu(code_bytes: bytes) -> tuple[int, mmap.mmap, list[Any]]:
    """A VM whose vCPU runs ``code_bytes``; (the vCPU fd, its kvm_run, what to close)."""
    handle = kvm.Kvm()
    vm_fd = kvm.create_vm(handle)
    code = kvm.Memory(kvm.PAGE_SIZE)
    code.write(0, code_bytes)
    assert kvm.set_memslot(vm_fd, 0, 0, CODE_BASE, kvm.PAGE_SIZE, code.addr, False) is None
    kvm.try_ioctl(vm_fd, KVM_SET_TSS_ADDR, TSS_ADDR)
    vcpu_fd = kvm.ioctl(vm_fd, kvm.KVM_CREATE_VCPU, 0)
    _protected_mode(vcpu_fd)
    run_map = mmap.mmap(vcpu_fd, handle.vcpu_mmap_size)
    return vcpu_fd, run_map, [run_map, vcpu_fd, vm_fd, code, handle]


def _close(things: list[Any]) -> None:
    for thing in things:
        if isinstance(thing, int):
            os.close(thing)
        else:
            thing.close()


def failure(kind: str) -> str:
    """One KVM_RUN that does not exit normally: ``eintr`` (a signal stops a guest spinning:
    -EINTR, KVM_EXIT_INTR), ``einval`` (kvm_run->kvm_valid_regs with an unknown bit: x86
    kvm_arch_vcpu_ioctl_run() fails with -EINVAL) or ``internal`` (a jump to an address no
    memslot holds: KVM_EXIT_INTERNAL_ERROR where KVM emulates the fetch, else an MMIO exit).
    Returns what the VMM saw: an errno name or an exit reason's name."""
    code = {
        "eintr": b"\xeb\xfe",  # jmp $
        "einval": b"\xeb\xfe",
        "internal": b"\xb8\x00\x00\x00\x20\xff\xe0",  # mov eax, 0x20000000; jmp eax
    }[kind]
    vcpu_fd, run_map, things = _vcpu(code)
    try:
        if kind == "einval":
            struct.pack_into("<Q", run_map, _RUN_VALID_REGS, 1 << 63)
        if kind == "eintr":
            signal.signal(signal.SIGALRM, lambda *_: None)
            signal.setitimer(signal.ITIMER_REAL, 0.05)
        try:
            kvm.ioctl(vcpu_fd, kvm.KVM_RUN)
        except OSError as exc:
            return kvm.errno_name(exc.errno)
        return kvm.KVM_EXIT_NAMES.get(kvm.exit_reason(run_map), "?")
    finally:
        _close(things)


def traced(spec: dict[str, Any], trace: Any) -> dict[str, Any]:
    """Run this script with ``spec`` as a child that ``trace`` (a started KvmTrace) follows
    before it begins; its JSON output."""
    child = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), json.dumps(spec), "--wait"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    trace.follow(child.pid)
    out, _ = child.communicate("go\n", timeout=60)
    if child.returncode:
        raise RuntimeError(f"the traffic guest failed ({child.returncode})")
    result: dict[str, Any] = json.loads(out)
    return result


def main(argv: Sequence[str]) -> int:
    spec = json.loads(argv[0])
    if "--wait" in argv[1:]:
        sys.stdin.readline()  # the tracer follows this process first
    accesses = [Access(s, a, w, bool(wr), n) for s, a, w, wr, n in spec["accesses"]]
    created: list[int] = []

    def one() -> dict[str, Any]:
        return run_vm(
            accesses,
            ioeventfds=[tuple(x) for x in spec.get("ioeventfds", [])],
            coalesced=[tuple(x) for x in spec.get("coalesced", [])],
            irqchip=bool(spec.get("irqchip", False)),
            created=created,
        ).as_json()

    runs: list[dict[str, Any]] = []
    start, cpu = time.perf_counter_ns(), time.process_time_ns()
    for _ in range(int(spec.get("vms", 1))):
        if spec.get("threads"):  # each VM made and run by a thread of its own, one at a time
            worker = threading.Thread(target=lambda: runs.append(one()))
            worker.start()
            worker.join()
        else:
            runs.append(one())
    elapsed, cpu = time.perf_counter_ns() - start, time.process_time_ns() - cpu
    failures = [failure(kind) for kind in spec.get("failures", [])]
    result = {
        "runs": runs,
        "created": created,
        "pid": os.getpid(),
        "failures": failures,
        "elapsed_ns": elapsed,
        "cpu_ns": cpu,
    }
    print(json.dumps(result), flush=True)
    return 0


def forked(argv: Sequence[str]) -> int:
    """`main` in a child process (``"fork": true`` in the spec); its output is the child's."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = main(argv)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    if json.loads(sys.argv[1]).get("fork"):
        if "--wait" in sys.argv[2:]:
            sys.stdin.readline()
        sys.exit(forked([sys.argv[1]]))
    sys.exit(main(sys.argv[1:]))
