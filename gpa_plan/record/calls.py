"""One system call of a traced program, as the tracer hands it to a handler."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class TracedCall:
    """One system call a traced thread made, handed over at its exit (gpa_plan.record.ptrace)."""

    tid: int  # the thread that made the call
    tgid: int  # its process (thread group)
    name: str  # "ioctl", "mmap", ... (from the host's SyscallAbi)
    args: tuple[int, ...]  # the six raw arguments, unsigned 64-bit
    ret: int  # the return value, signed: negative is -errno
    # readlink /proc/TID/fd/ARGS[0] at entry, for calls whose first argument is a file
    # descriptor (ptrace.FD_CALLS); "" otherwise, or where it names no open file:
    # "/dev/kvm", "anon_inode:kvm-vm", "anon_inode:kvm-vcpu:0", "anon_inode:kvm-arm-vgic-v3"
    fd_target: str
    # read (address, size) of the tracee's memory, valid only during the handler call;
    # raises OSError
    memory: Callable[[int, int], bytes]
