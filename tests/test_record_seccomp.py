"""The seccomp filter of `record`: which calls stop for the tracer, on x86_64 and arm64.

The program is run here by a small classic-BPF interpreter (the instructions the filter uses)
on seccomp_data made for each architecture, and once for real in a forked child."""

from __future__ import annotations

import errno
import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpa_plan.arch import ARCHES, UnsupportedHostError, host_abi
from gpa_plan.arch.base import SyscallAbi
from gpa_plan.probe import kvm
from gpa_plan.record.seccomp import (
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_TRACE,
    CallFilter,
    Installer,
)

X86_64 = ARCHES["x86_64"].syscall_abi
ARM64 = ARCHES["arm64"].syscall_abi
assert X86_64 is not None and ARM64 is not None
AUDIT_ARCH_I386 = 0x4000_0003  # include/uapi/linux/audit.h: EM_386 | __AUDIT_ARCH_LE
I386_IOCTL = 54  # arch/x86/entry/syscalls/syscall_32.tbl

SET_MEMORY = kvm.KVM_SET_USER_MEMORY_REGION
CREATE_VM = kvm.KVM_CREATE_VM
IRQ_LINE = 0x4008AE61  # KVM_IRQ_LINE: _IOW(KVMIO, 0x61, struct kvm_irq_level)


def run_bpf(program: bytes, data: bytes, byteorder: str = "little") -> int:
    """The verdict of a classic BPF program (struct sock_filter array) on ``data``."""
    order = "<" if byteorder == "little" else ">"
    instructions = [struct.unpack_from("=HBBI", program, at) for at in range(0, len(program), 8)]
    accumulator = 0
    pc = 0
    while True:
        code, jt, jf, k = instructions[pc]
        if code == 0x20:  # BPF_LD | BPF_W | BPF_ABS
            accumulator = struct.unpack_from(order + "I", data, k)[0]
            pc += 1
        elif code == 0x54:  # BPF_ALU | BPF_AND | BPF_K
            accumulator &= k
            pc += 1
        elif code == 0x74:  # BPF_ALU | BPF_RSH | BPF_K
            accumulator >>= k
            pc += 1
        elif code == 0x15:  # BPF_JMP | BPF_JEQ | BPF_K
            pc += 1 + (jt if accumulator == k else jf)
        elif code == 0x05:  # BPF_JMP | BPF_JA
            pc += 1 + k
        elif code == 0x06:  # BPF_RET | BPF_K
            return int(k)
        else:
            raise AssertionError(f"instruction {code:#x} is not one the filter should use")


def seccomp_data(arch: int, nr: int, *args: int, byteorder: str = "little") -> bytes:
    """struct seccomp_data: int nr, __u32 arch, __u64 instruction_pointer, __u64 args[6]."""
    padded = (*args, *(0,) * (6 - len(args)))
    order = "<" if byteorder == "little" else ">"
    return struct.pack(order + "iIQ6Q", nr, arch, 0x40_1000, *padded)


def verdict(call_filter: CallFilter, arch: int, nr: int, *args: int) -> int:
    return run_bpf(call_filter.program(), seccomp_data(arch, nr, *args))


@pytest.mark.parametrize(
    ("abi", "ioctl", "mmap"), [(X86_64, 16, 9), (ARM64, 29, 222)], ids=["x86_64", "arm64"]
)
def test_the_filter_traces_the_wanted_ioctls_and_calls_of_its_own_arch_only(
    abi: SyscallAbi, ioctl: int, mmap: int
) -> None:
    call_filter = CallFilter.of(abi, {SET_MEMORY, CREATE_VM}, {"mmap"})
    arch = abi.audit_arch
    assert verdict(call_filter, arch, ioctl, 5, SET_MEMORY, 0x7FFF_0000) == SECCOMP_RET_TRACE
    assert verdict(call_filter, arch, ioctl, 4, CREATE_VM, 0) == SECCOMP_RET_TRACE
    # The kernel's ioctl command is an unsigned int: only the low 32 bits count.
    assert verdict(call_filter, arch, ioctl, 5, SET_MEMORY | 0xFFFF_FFFF << 32) == (
        SECCOMP_RET_TRACE
    )
    assert verdict(call_filter, arch, ioctl, 6, kvm.KVM_RUN) == SECCOMP_RET_ALLOW
    assert verdict(call_filter, arch, ioctl, 3, kvm.KVM_CHECK_EXTENSION, 1) == SECCOMP_RET_ALLOW
    assert verdict(call_filter, arch, mmap, 0, 0x1000, 3, 0x22, 2**64 - 1) == SECCOMP_RET_TRACE
    assert verdict(call_filter, arch, abi.numbers["close"], 5) == SECCOMP_RET_ALLOW
    # The wanted request number as another call's second argument is not an ioctl.
    assert verdict(call_filter, arch, abi.numbers["dup3"], 5, SET_MEMORY) == SECCOMP_RET_ALLOW


def test_the_audit_arch_and_numbers_are_the_kernels() -> None:
    assert X86_64.audit_arch == 0xC000_003E
    assert ARM64.audit_arch == 0xC000_00B7
    assert (X86_64.numbers["ioctl"], X86_64.numbers["mmap"]) == (16, 9)
    assert (ARM64.numbers["ioctl"], ARM64.numbers["mmap"]) == (29, 222)
    assert "dup2" not in ARM64.numbers  # the generic table has only dup3
    assert ARM64.name_of(29) == "ioctl" and X86_64.name_of(29) is None


@pytest.mark.parametrize(
    ("abi", "other"), [(X86_64, ARM64), (ARM64, X86_64)], ids=["x86_64", "arm64"]
)
def test_calls_of_another_abi_run_untraced(abi: SyscallAbi, other: SyscallAbi) -> None:
    call_filter = CallFilter.of(abi, {SET_MEMORY}, {"mmap"})
    for nr in (abi.numbers["ioctl"], other.numbers["ioctl"]):
        assert verdict(call_filter, other.audit_arch, nr, 5, SET_MEMORY) == SECCOMP_RET_ALLOW
    # A 32-bit program on an x86_64 host: its ioctl is call 54 of AUDIT_ARCH_I386.
    assert verdict(call_filter, AUDIT_ARCH_I386, I386_IOCTL, 5, SET_MEMORY) == SECCOMP_RET_ALLOW
    # x32 calls carry AUDIT_ARCH_X86_64 with __X32_SYSCALL_BIT set in the number.
    x32_ioctl = 0x4000_0000 | 514
    assert verdict(call_filter, abi.audit_arch, x32_ioctl, 5, SET_MEMORY) == SECCOMP_RET_ALLOW


def test_ioctl_asked_for_by_name_traces_every_request() -> None:
    call_filter = CallFilter.of(X86_64, {SET_MEMORY}, {"ioctl"})
    assert verdict(call_filter, X86_64.audit_arch, 16, 3, kvm.KVM_RUN) == SECCOMP_RET_TRACE
    assert verdict(call_filter, X86_64.audit_arch, 16, 3, SET_MEMORY) == SECCOMP_RET_TRACE


def test_nothing_wanted_traces_nothing() -> None:
    call_filter = CallFilter.of(ARM64, (), ())
    for nr in (29, 222, 57, 0):
        assert verdict(call_filter, ARM64.audit_arch, nr, 3, SET_MEMORY) == SECCOMP_RET_ALLOW


def test_names_the_host_does_not_have_are_left_out() -> None:
    assert CallFilter.of(ARM64, (), {"dup2", "dup3"}).numbers == {24}


def test_a_big_endian_abi_compares_the_low_half_of_the_request() -> None:
    abi = ARM64._replace(byteorder="big")
    program = CallFilter.of(abi, {SET_MEMORY}, ()).program()
    data = seccomp_data(abi.audit_arch, 29, 5, 0xABCD << 32 | SET_MEMORY, byteorder="big")
    assert run_bpf(program, data, "big") == SECCOMP_RET_TRACE


def test_a_program_too_long_for_the_kernel_is_refused() -> None:
    CallFilter.of(X86_64, range(2000), ()).program()
    with pytest.raises(ValueError, match="at most 4096 instructions"):
        CallFilter.of(X86_64, range(2100), ()).program()


abis = st.sampled_from([X86_64, ARM64, ARM64._replace(byteorder="big")])
requests = st.frozensets(st.integers(0, 2**32 - 1), max_size=8)
names = st.frozensets(st.sampled_from(sorted(X86_64.numbers)), max_size=4)
calls = st.tuples(
    st.sampled_from([X86_64.audit_arch, ARM64.audit_arch, AUDIT_ARCH_I386]),
    st.one_of(st.sampled_from([9, 16, 29, 222, 54]), st.integers(0, 2**31 - 1)),
    st.lists(st.integers(0, 2**64 - 1), min_size=6, max_size=6),
)


types = st.frozensets(st.sampled_from([0xAE, 0xAF, 0x00, 0xFF]), max_size=2)


@given(abis, requests, names, calls, types, st.data())
def test_the_program_answers_what_the_filter_says(
    abi: SyscallAbi,
    wanted: frozenset[int],
    syscalls: frozenset[str],
    call: tuple[int, int, list[int]],
    kinds: frozenset[int],
    data: st.DataObject,
) -> None:
    arch, nr, args = call
    # Hot requests: some of the wanted ones, some of the types' own.
    hot = data.draw(st.frozensets(st.one_of(
        st.sampled_from(sorted(wanted)) if wanted else st.nothing(),
        st.builds(lambda kind, low, high: high << 16 | kind << 8 | low,
                  st.sampled_from([0xAE, 0xAF]), st.integers(0, 0xFF), st.integers(0, 0xFFFF)),
    ), max_size=4))
    pool = sorted(wanted | hot)
    if pool and data.draw(st.booleans()):  # a wanted or hot request, with any high half
        args[1] = (args[1] & ~0xFFFF_FFFF) | data.draw(st.sampled_from(pool))
    elif kinds and data.draw(st.booleans()):  # a request of a wanted type
        kind = data.draw(st.sampled_from(sorted(kinds)))
        args[1] = (args[1] & ~0xFF00) | kind << 8
    call_filter = CallFilter.of(abi, wanted, syscalls, types=kinds, hot=hot)
    answer = run_bpf(
        call_filter.program(),
        seccomp_data(arch, nr, *args, byteorder=abi.byteorder),
        abi.byteorder,
    )
    expected = SECCOMP_RET_TRACE if call_filter.stops(arch, nr, args) else SECCOMP_RET_ALLOW
    assert answer == expected


@pytest.mark.parametrize("abi", [X86_64, ARM64], ids=["x86_64", "arm64"])
def test_every_kvm_ioctl_stops_but_the_hot_ones_unless_asked_for(abi: SyscallAbi) -> None:
    ioctl, arch = abi.numbers["ioctl"], abi.audit_arch
    call_filter = CallFilter.of(abi, {CREATE_VM}, (), types={0xAE},
                                hot={kvm.KVM_RUN, IRQ_LINE})
    set_tss_addr, set_cpuid2 = 0xAE47, 0x4008AE90
    for request in (CREATE_VM, SET_MEMORY, set_tss_addr, set_cpuid2, 0xC0DEAEFF):
        assert verdict(call_filter, arch, ioctl, 5, request) == SECCOMP_RET_TRACE
    for request in (kvm.KVM_RUN, IRQ_LINE, 0x4008AF00, 0x5401):  # vhost, TCGETS
        assert verdict(call_filter, arch, ioctl, 5, request) == SECCOMP_RET_ALLOW
    # Another call with a KVM request as its second argument is no ioctl.
    assert verdict(call_filter, arch, abi.numbers["dup3"], 5, SET_MEMORY) == SECCOMP_RET_ALLOW
    # The ptrace traffic path asks for KVM_RUN: asked for wins over hot.
    asked = CallFilter.of(abi, {kvm.KVM_RUN}, (), types={0xAE}, hot={kvm.KVM_RUN})
    assert verdict(asked, arch, ioctl, 5, kvm.KVM_RUN) == SECCOMP_RET_TRACE
    assert verdict(asked, arch, ioctl, 5, kvm.KVM_RUN | 0x1234 << 32) == SECCOMP_RET_TRACE


def test_the_installed_filter_makes_a_traced_call_fail_without_a_tracer() -> None:
    """kernel/seccomp.c __seccomp_filter(): SECCOMP_RET_TRACE with no tracer -> ENOSYS; the
    other calls run."""
    abi = host_abi()
    installer = Installer(CallFilter.of(abi, (), {"fcntl"}).program())
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            if installer.install() == 0:
                fd = os.dup2(0, 100)  # dup2 (dup3 on arm64) is not filtered
                os.close(fd)
                try:
                    os.dup(0)  # fcntl(F_DUPFD_CLOEXEC)
                except OSError as exc:
                    code = 0 if exc.errno == errno.ENOSYS else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_host_abi_is_the_machines() -> None:
    assert host_abi("aarch64") is ARM64
    assert host_abi("x86_64") is X86_64
    assert host_abi() is host_abi(os.uname().machine)
    with pytest.raises(UnsupportedHostError, match=r"this host is riscv64: .*aarch64 and x86_64"):
        host_abi("riscv64")
