"""The seccomp filter `record` installs in the command before its exec.

A classic BPF program (include/uapi/linux/filter.h) that the kernel runs on every system call
of the command and of everything it starts (kernel/seccomp.c __seccomp_filter(), Linux 7.2.13).
It answers SECCOMP_RET_TRACE, a stop for the tracer (PTRACE_EVENT_SECCOMP), only for the calls
a recording needs: the ioctls whose request is asked for, every ioctl whose request's type byte
is one asked for (every KVM ioctl: type KVMIO, 0xAE) but the hot ones left out of it, and the
other calls asked for by name; SECCOMP_RET_ALLOW for everything else, and for every call of
another ABI than the host's native one (32-bit compat, x32), so those run untraced. The command
then runs at full speed between the calls that matter; without the filter the tracer would stop
it twice on every system call.

A call that returns SECCOMP_RET_TRACE while no tracer with PTRACE_O_TRACESECCOMP is attached
fails with ENOSYS instead of running (__seccomp_filter()): the command cannot go on without its
tracer, so a recording that stops early kills it.
"""

from __future__ import annotations

import ctypes
import errno
import struct
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from gpa_plan.arch.base import SyscallAbi

# include/uapi/linux/bpf_common.h: the instruction classes and modes the program uses.
BPF_LD_W_ABS = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS: A = the u32 at offset k
BPF_JMP_JEQ_K = 0x05 | 0x10 | 0x00  # BPF_JMP | BPF_JEQ | BPF_K: skip jt if A == k, else jf
BPF_RET_K = 0x06 | 0x00  # BPF_RET | BPF_K: the verdict k
# BPF_ALU | BPF_AND | BPF_K: A &= k (one of the instructions seccomp_check_filter(),
# kernel/seccomp.c, lets a filter use)
BPF_ALU_AND_K = 0x04 | 0x50 | 0x00
IOCTL_TYPE_MASK = 0xFF00  # include/uapi/asm-generic/ioctl.h: _IOC_TYPEMASK << _IOC_TYPESHIFT
IOCTL_TYPE_SHIFT = 8
BPF_MAXINSNS = 4096

# include/uapi/linux/seccomp.h
SECCOMP_RET_ALLOW = 0x7FFF_0000
SECCOMP_RET_TRACE = 0x7FF0_0000
SECCOMP_MODE_FILTER = 2
# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6].
SECCOMP_DATA_NR = 0
SECCOMP_DATA_ARCH = 4
SECCOMP_DATA_ARGS = 16

# include/uapi/linux/prctl.h
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38

# struct sock_filter: __u16 code; __u8 jt; __u8 jf; __u32 k (native byte order).
SOCK_FILTER = struct.Struct("=HBBI")
U32 = 0xFFFF_FFFF


class Instruction(NamedTuple):
    code: int
    jt: int
    jf: int
    k: int


def ioctl_type(request: int) -> int:
    """The type byte of an ioctl request (_IOC_TYPE(), include/uapi/asm-generic/ioctl.h)."""
    return (request & IOCTL_TYPE_MASK) >> IOCTL_TYPE_SHIFT


class CallFilter(NamedTuple):
    """The calls that stop for the tracer on a host of ``abi``: an ioctl whose request's low
    32 bits are in ``requests`` (the kernel's ioctl takes an unsigned int command,
    fs/ioctl.c), or whose request's type byte is in ``types`` and whose request is not in
    ``hot`` (a request both asked for and hot stops: asking for it wins), and any call whose
    number is in ``numbers``."""

    abi: SyscallAbi
    requests: frozenset[int]
    numbers: frozenset[int]
    types: frozenset[int] = frozenset()
    hot: frozenset[int] = frozenset()

    @classmethod
    def of(
        cls,
        abi: SyscallAbi,
        ioctls: Iterable[int],
        syscalls: Iterable[str],
        *,
        types: Iterable[int] = (),
        hot: Iterable[int] = (),
    ) -> CallFilter:
        """The filter for ioctl requests ``ioctls``, every request of a type byte in ``types``
        but those in ``hot``, and the calls named ``syscalls`` (names ``abi`` does not have are
        left out: the host has no such call)."""
        numbers = frozenset(abi.numbers[name] for name in syscalls if name in abi.numbers)
        return cls(
            abi,
            frozenset(request & U32 for request in ioctls),
            numbers,
            frozenset(kind & 0xFF for kind in types),
            frozenset(request & U32 for request in hot),
        )

    @property
    def ioctl(self) -> int:
        return self.abi.numbers["ioctl"]

    def stops(self, arch: int, nr: int, args: Sequence[int]) -> bool:
        """Whether a call (seccomp_data's arch, nr and args) stops for the tracer: what the
        program answers, for the path that sees every call (PTRACE_SYSCALL)."""
        if arch != self.abi.audit_arch:
            return False
        if nr in self.numbers:
            return True
        if nr != self.ioctl:
            return False
        request = args[1] & U32
        if request in self.requests:
            return True
        return ioctl_type(request) in self.types and request not in self.hot

    def instructions(self) -> list[Instruction]:
        """The program: the architecture first (another ABI's numbers mean other calls), then
        the calls traced whatever their arguments, then the ioctl requests asked for (those
        a type asked for does not cover already), the hot requests of those types, and the
        types. Every test jumps over at most one instruction, so the program needs no long
        jumps."""
        allow = Instruction(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW)
        trace = Instruction(BPF_RET_K, 0, 0, SECCOMP_RET_TRACE)
        program = [
            Instruction(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH),
            Instruction(BPF_JMP_JEQ_K, 1, 0, self.abi.audit_arch),
            allow,
            Instruction(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_NR),
        ]
        for nr in sorted(self.numbers):
            program += [Instruction(BPF_JMP_JEQ_K, 0, 1, nr), trace]
        if (self.requests or self.types) and self.ioctl not in self.numbers:
            program += [
                Instruction(BPF_JMP_JEQ_K, 1, 0, self.ioctl),
                allow,
                Instruction(BPF_LD_W_ABS, 0, 0, self.low_half_of_arg(1)),
            ]
            for request in sorted(self.requests):
                if ioctl_type(request) not in self.types or request in self.hot:
                    program += [Instruction(BPF_JMP_JEQ_K, 0, 1, request), trace]
            for request in sorted(self.hot - self.requests):
                if ioctl_type(request) in self.types:
                    program += [Instruction(BPF_JMP_JEQ_K, 0, 1, request), allow]
            if self.types:
                program.append(Instruction(BPF_ALU_AND_K, 0, 0, IOCTL_TYPE_MASK))
            for kind in sorted(self.types):
                program += [Instruction(BPF_JMP_JEQ_K, 0, 1, kind << IOCTL_TYPE_SHIFT), trace]
        program.append(allow)
        if len(program) > BPF_MAXINSNS:
            raise ValueError(
                f"a seccomp program holds at most {BPF_MAXINSNS} instructions; "
                f"{len(self.requests)} ioctl requests, {len(self.hot)} hot ones, "
                f"{len(self.types)} ioctl types and {len(self.numbers)} calls need "
                f"{len(program)}"
            )
        return program

    def low_half_of_arg(self, index: int) -> int:
        """The offset in seccomp_data of the low 32 bits of ``args[index]``."""
        offset = SECCOMP_DATA_ARGS + 8 * index
        return offset if self.abi.byteorder == "little" else offset + 4

    def program(self) -> bytes:
        """The program as struct sock_filter array, ready for PR_SET_SECCOMP."""
        return b"".join(SOCK_FILTER.pack(*i) for i in self.instructions())


class _SockFprog(ctypes.Structure):
    # struct sock_fprog: unsigned short len; struct sock_filter *filter.
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.restype = ctypes.c_int
_prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)


class Installer:
    """A program made ready in the tracer, to be installed in the child between fork and exec.

    Everything is allocated before the fork: installing calls prctl and nothing else, since
    once the filter is in place a call it traces fails with ENOSYS until the tracer has set
    PTRACE_O_TRACESECCOMP (after the exec).
    """

    def __init__(self, program: bytes) -> None:
        self._buffer = ctypes.create_string_buffer(program, len(program))
        self._fprog = _SockFprog(len(program) // SOCK_FILTER.size, ctypes.addressof(self._buffer))
        self._address = ctypes.addressof(self._fprog)

    def install(self) -> int:
        """Install the filter in the calling process: 0, else the errno of the refusal.

        A process without CAP_SYS_ADMIN may install a filter only with no_new_privs set
        (kernel/seccomp.c seccomp_prepare_filter(): EACCES otherwise); it is then set, and
        the command's set-user-ID and file-capability programs run without their privileges.
        EINVAL: the kernel has no seccomp filters (CONFIG_SECCOMP_FILTER)."""
        if _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, self._address, 0, 0) == 0:
            return 0
        refused = ctypes.get_errno()
        if refused != errno.EACCES:
            return refused
        if _prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return ctypes.get_errno()
        if _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, self._address, 0, 0) == 0:
            return 0
        return ctypes.get_errno()
