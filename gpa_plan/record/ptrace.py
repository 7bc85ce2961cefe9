"""Run a command under ptrace and hand the system calls a recording needs to a handler.

The command starts traced (PTRACE_TRACEME) with a seccomp filter (gpa_plan.record.seccomp)
that stops it only on the calls asked for; its threads and child processes are traced too
(PTRACE_O_TRACECLONE, TRACEFORK, TRACEVFORK). At each such call the tracer reads the call
(PTRACE_GET_SYSCALL_INFO), lets it run to its exit stop, and calls the handler while the thread
is still stopped there, so the handler can read the memory behind the call's pointers. Where
the filter cannot be installed, the tracer stops on every call instead (PTRACE_SYSCALL) and
picks the same ones. docs/record.md ("How record traces") says what a user sees.

Every ptrace fact here is read in kernel/ptrace.c and include/uapi/linux/ptrace.h, Linux
7.2.13, and the ptrace(2) manual page (group-stops, new tasks' first SIGSTOP, exec).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import signal
import stat
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any, NamedTuple, Protocol

from gpa_plan.arch import ARCHES, UnsupportedHostError, host_abi
from gpa_plan.arch.base import SyscallAbi
from gpa_plan.printable import printable
from gpa_plan.record.calls import TracedCall
from gpa_plan.record.seccomp import CallFilter, Installer

__all__ = [
    "CallHandler",
    "SyscallInfo",
    "TraceError",
    "TraceResult",
    "TracedCall",
    "Wanted",
    "decode_syscall_info",
    "trace",
]


class CallHandler(Protocol):
    def call(self, call: TracedCall) -> None: ...

    def forked(self, parent_tgid: int, child_tgid: int) -> None: ...  # a new process


@dataclass(frozen=True)
class Wanted:
    """The calls to stop on."""

    ioctls: frozenset[int]  # ioctl request numbers (low 32 bits compared)
    syscalls: frozenset[str] = frozenset()  # other calls by name, e.g. {"mmap"}
    # every ioctl whose request's type byte is one of these (KVMIO, 0xAE: every KVM ioctl) ...
    ioctl_types: frozenset[int] = frozenset()
    # ... but these requests (unless in ``ioctls`` too): calls a running VM makes all the time
    hot: frozenset[int] = frozenset()


@dataclass(frozen=True)
class TraceResult:
    status: int  # the command's exit: its code, or -SIGNAL as subprocess gives it
    interrupted: bool  # the user stopped the recording (Ctrl-C twice / SIGTERM)
    filtered: bool  # True: seccomp filter used; False: stopped on every system call
    stops: int  # calls handed to the handler


class TraceError(Exception):
    """The command could not be traced: the message says why and what to do."""


# Calls the filter cannot stop (see _checked_syscalls).
UNTRACEABLE = frozenset({"execve", "execveat"})
# Calls whose first argument is a file descriptor: their fd_target is read.
FD_CALLS = frozenset({"ioctl", "close", "dup", "dup2", "dup3", "fcntl"})

# include/uapi/linux/ptrace.h (Linux 7.2.13)
PTRACE_TRACEME = 0
PTRACE_CONT = 7
PTRACE_SYSCALL = 24
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETEVENTMSG = 0x4201
PTRACE_GETSIGINFO = 0x4202
PTRACE_GET_SYSCALL_INFO = 0x420E
PTRACE_SYSCALL_INFO_NONE = 0
PTRACE_SYSCALL_INFO_ENTRY = 1
PTRACE_SYSCALL_INFO_EXIT = 2
PTRACE_SYSCALL_INFO_SECCOMP = 3
PTRACE_EVENT_FORK = 1
PTRACE_EVENT_VFORK = 2
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_EXEC = 4
PTRACE_EVENT_SECCOMP = 7
PTRACE_O_TRACESYSGOOD = 1
PTRACE_O_TRACEFORK = 1 << PTRACE_EVENT_FORK
PTRACE_O_TRACEVFORK = 1 << PTRACE_EVENT_VFORK
PTRACE_O_TRACECLONE = 1 << PTRACE_EVENT_CLONE
PTRACE_O_TRACEEXEC = 1 << PTRACE_EVENT_EXEC
PTRACE_O_TRACESECCOMP = 1 << PTRACE_EVENT_SECCOMP
PTRACE_O_EXITKILL = 1 << 20
OPTIONS = (
    PTRACE_O_TRACESYSGOOD
    | PTRACE_O_TRACEFORK
    | PTRACE_O_TRACEVFORK
    | PTRACE_O_TRACECLONE
    | PTRACE_O_TRACEEXEC
    | PTRACE_O_EXITKILL
)
# A syscall-stop's status with PTRACE_O_TRACESYSGOOD (kernel/ptrace.c ptrace_report_syscall()).
SYSCALL_STOP = signal.SIGTRAP | 0x80
WALL = 0x4000_0000  # include/uapi/linux/wait.h __WALL: threads and clone children too
SI_KERNEL = 0x80  # include/uapi/asm-generic/siginfo.h: sent by the kernel (a terminal's ^C)
# include/linux/errno.h: what an interrupted call returns at its exit stop before the kernel
# restarts it (or turns it into EINTR); user space never sees these.
RESTART_CODES = frozenset({512, 513, 514, 516})

# struct ptrace_syscall_info: op, reserved, flags, arch, instruction_pointer, stack_pointer,
# then a union of entry {nr, args[6]}, exit {rval, is_error} and seccomp {nr, args[6],
# ret_data, reserved2}. The layout is the same on every architecture.
_INFO_HEAD = "BBHIQQ"
_INFO_CALL = "Q6Q"
_INFO_EXIT = "qB"
SYSCALL_INFO_SIZE = 88
SIGINFO_SIZE = 128  # include/uapi/asm-generic/siginfo.h SI_MAX_SIZE


class SyscallInfo(NamedTuple):
    """What PTRACE_GET_SYSCALL_INFO says of a stopped thread."""

    op: int  # PTRACE_SYSCALL_INFO_*
    arch: int  # the audit architecture of the call
    nr: int  # entry and seccomp stops
    args: tuple[int, ...]  # entry and seccomp stops
    rval: int  # exit stops: the return value, negative for -errno


def decode_syscall_info(data: bytes, byteorder: str = sys.byteorder) -> SyscallInfo:
    """Decode a struct ptrace_syscall_info (kernel/ptrace.c ptrace_get_syscall_info(), which
    fills only the union member its op names)."""
    order = "<" if byteorder == "little" else ">"
    head = struct.Struct(order + _INFO_HEAD)
    op, _, _, arch, _, _ = head.unpack_from(data)
    if op in (PTRACE_SYSCALL_INFO_ENTRY, PTRACE_SYSCALL_INFO_SECCOMP):
        nr, *args = struct.unpack_from(order + _INFO_CALL, data, head.size)
        return SyscallInfo(op, arch, nr, tuple(args), 0)
    if op == PTRACE_SYSCALL_INFO_EXIT:
        rval, _ = struct.unpack_from(order + _INFO_EXIT, data, head.size)
        return SyscallInfo(op, arch, -1, (), rval)
    return SyscallInfo(op, arch, -1, (), 0)


# --- libc ------------------------------------------------------------------------------------


class _IoVec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


_libc = ctypes.CDLL(None, use_errno=True)
_ptrace_call = _libc.ptrace
_ptrace_call.restype = ctypes.c_long
_ptrace_call.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_process_vm_readv = _libc.process_vm_readv
_process_vm_readv.restype = ctypes.c_ssize_t
_process_vm_readv.argtypes = (
    ctypes.c_int,
    ctypes.POINTER(_IoVec),
    ctypes.c_ulong,
    ctypes.POINTER(_IoVec),
    ctypes.c_ulong,
    ctypes.c_ulong,
)


def _ptrace(request: int, pid: int, addr: int = 0, data: int = 0) -> int:
    result: int = _ptrace_call(request, pid, addr or None, data or None)
    if result == -1:
        code = ctypes.get_errno()
        if code:
            raise OSError(code, os.strerror(code))
    return result


def _traceme() -> int:
    """PTRACE_TRACEME in the child: 0, else the errno."""
    if _ptrace_call(PTRACE_TRACEME, 0, None, None) == 0:
        return 0
    return ctypes.get_errno()


# The most one read of the tracee's memory returns: KVM's structures are far smaller.
MAX_READ = 1 << 24


def read_memory(tid: int, address: int, size: int) -> bytes:
    """``size`` bytes at ``address`` in the memory of thread ``tid``: process_vm_readv(2),
    else /proc/TID/mem where the call is missing or refused. OSError when not all of it is
    mapped."""
    if size < 0 or address < 0 or address + size > 1 << 64:
        raise OSError(errno.EFAULT, f"no memory at {address:#x} + {size:#x}")
    if size > MAX_READ:
        raise OSError(errno.EINVAL, f"{size:#x} bytes is more than one read takes ({MAX_READ:#x})")
    if size == 0:
        return b""
    buffer = ctypes.create_string_buffer(size)
    local = _IoVec(ctypes.addressof(buffer), size)
    remote = _IoVec(address, size)
    done = _process_vm_readv(tid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if done == size:
        return buffer.raw
    code = ctypes.get_errno() if done < 0 else errno.EFAULT
    if code not in (errno.ENOSYS, errno.EPERM):
        raise OSError(code, f"cannot read {size:#x} bytes at {address:#x}: {os.strerror(code)}")
    if address + size > 1 << 63:  # beyond what a file offset reaches
        raise OSError(errno.EFAULT, f"cannot read {size:#x} bytes at {address:#x}")
    fd = os.open(f"/proc/{tid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.pread(fd, size, address)
    finally:
        os.close(fd)
    if len(data) != size:
        raise OSError(errno.EFAULT, f"cannot read {size:#x} bytes at {address:#x}")
    return data


class _CallMemory:
    """The memory of a thread stopped at a call's exit, readable until the handler returns."""

    def __init__(self, tid: int) -> None:
        self.tid = tid
        self.live = True

    def __call__(self, address: int, size: int) -> bytes:
        if not self.live:
            raise OSError(errno.ESRCH, "a call's memory is read only while its handler runs")
        return read_memory(self.tid, address, size)


def _tgid(tid: int) -> int | None:
    """The thread group of ``tid`` (/proc/TID/status), None once it is gone."""
    try:
        with open(f"/proc/{tid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


# /dev/kvm's device number (Documentation/admin-guide/devices.txt: misc 10, KVM_MINOR 232).
KVM_DEVICE = "/dev/kvm"
_KVM_RDEV = os.makedev(10, 232)


def _fd_target(tid: int, fd: int) -> str:
    """What ``fd`` of ``tid`` names: KVM_DEVICE for the KVM device wherever its node is (a
    chroot's or a jail's own /dev/kvm reads as another path), else the link's text."""
    if fd >= 1 << 31:  # the kernel's fd is an int: a negative one names no file
        return ""
    path = f"/proc/{tid}/fd/{fd}"
    try:
        target = os.readlink(path)
        if not target.startswith("anon_inode:"):
            st = os.stat(path)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == _KVM_RDEV:
                return KVM_DEVICE
        return target
    except OSError:
        return ""


def _exit_status(status: int) -> int:
    """What subprocess gives as returncode for a wait status."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


# --- signals ---------------------------------------------------------------------------------

_STOPPING = frozenset({signal.SIGINT, signal.SIGTERM})
# How often the listener looks for a signal another thread of this process took, and so the
# most a recording's end waits for it (it is not woken: a signal sent to a thread that has
# just ended is undefined behaviour). 10 ms: a hundred short wake-ups a second.
_LISTEN_SECONDS = 0.01


class _Signals:
    """SIGINT and SIGTERM while a command is traced.

    They are blocked in the tracer's thread, which waits for its tracees in waitpid(), and
    taken by a listening thread with sigtimedwait(), which tells a terminal's Ctrl-C (si_code
    SI_KERNEL: n_tty.c __isig() -> kill_pgrp(), which the command gets too) from a signal sent
    to this process alone. The listener only sends signals (forwards a SIGINT, kills the
    command), which wakes the tracer; every ptrace request stays in the tracer's thread.
    Another thread of this process that does not block them may take them instead: the
    handlers installed here do nothing, but Python's wakeup fd carries the signal's number to
    the listener (without its origin: such a SIGINT is forwarded). Everything is restored on
    exit, and pending SIGINT and SIGTERM are taken first so that none reaches the caller."""

    def __init__(self) -> None:
        self._handlers: dict[int, Any] = {}
        self.mask: set[int] = set()
        self._listener: threading.Thread | None = None
        self._closing = False
        self._wakeup = (-1, -1)
        self._former_wakeup = -1

    def __enter__(self) -> _Signals:
        for signo in (*_STOPPING, signal.SIGCHLD):
            self._handlers[signo] = signal.getsignal(signo)
        # SIGCHLD ignored would reap the command's processes before the tracer sees them exit.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, _no_action)
        signal.signal(signal.SIGTERM, _no_action)
        self._wakeup = os.pipe()
        for fd in self._wakeup:
            os.set_blocking(fd, False)
        self._former_wakeup = signal.set_wakeup_fd(self._wakeup[1], warn_on_full_buffer=False)
        self.mask = set(signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING))
        return self

    def listen(self, act: Callable[[int, int | None], None]) -> None:
        """Call ``act(signal, si_code)`` from a thread for every SIGINT and SIGTERM. Started
        once the command runs: the thread, made here, inherits the blocked mask."""

        def listening() -> None:
            while not self._closing:
                info = signal.sigtimedwait(_STOPPING, _LISTEN_SECONDS)
                if self._closing:
                    return
                if info is not None:
                    act(info.si_signo, info.si_code)
                try:
                    taken_elsewhere = os.read(self._wakeup[0], 64)
                except BlockingIOError:
                    continue
                for signo in taken_elsewhere:
                    if signo in _STOPPING:
                        act(signo, None)

        self._listener = threading.Thread(target=listening, name="record-signals", daemon=True)
        self._listener.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._closing = True
        if self._listener is not None:
            self._listener.join()
        while signal.sigtimedwait(_STOPPING, 0) is not None:
            pass
        signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)
        signal.set_wakeup_fd(self._former_wakeup)
        for fd in self._wakeup:
            os.close(fd)
        for signo, handler in self._handlers.items():
            signal.signal(signo, handler if handler is not None else signal.SIG_DFL)


def _no_action(signo: int, frame: FrameType | None) -> None:
    """SIGINT or SIGTERM taken by another thread: the listener acts on it."""


# --- the child -------------------------------------------------------------------------------

_REPORT = struct.Struct("=ii")  # the child's PTRACE_TRACEME errno, its filter's outcome
_NOT_TRIED = -1


class _Child:
    """What the child does between fork and exec (Popen's preexec_fn), and what it reports
    back through a shared page: whether PTRACE_TRACEME and the seccomp filter worked."""

    def __init__(self, installer: Installer | None, mask: Iterable[int]) -> None:
        self.installer = installer
        # The caller's mask, with SIGTRAP open: the stop at exec is a SIGTRAP.
        self.mask = {signo for signo in mask if signo != signal.SIGTRAP}
        self.report = mmap.mmap(-1, mmap.PAGESIZE)
        _REPORT.pack_into(self.report, 0, _NOT_TRIED, _NOT_TRIED)

    def setup(self) -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)
        refused = _traceme()
        _REPORT.pack_into(self.report, 0, refused, _NOT_TRIED)
        if refused:
            raise OSError(refused, "PTRACE_TRACEME")
        # Last: once the filter is in, a call it stops fails with ENOSYS until the tracer has
        # set PTRACE_O_TRACESECCOMP, after the exec (hence no close_fds by Popen after this).
        outcome = self.installer.install() if self.installer is not None else _NOT_TRIED
        _REPORT.pack_into(self.report, 0, 0, outcome)

    @property
    def traceme_errno(self) -> int:
        return int(_REPORT.unpack_from(self.report)[0])

    @property
    def filtered(self) -> bool:
        return int(_REPORT.unpack_from(self.report)[1]) == 0


def _tracer_of_this_process() -> int:
    """The pid tracing this process (strace, gdb), 0 when none."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("TracerPid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _ptrace_refused(code: int) -> TraceError:
    tracer = _tracer_of_this_process()
    if code == errno.EPERM and tracer:
        return TraceError(
            f"the command is already traced: gpa-plan itself runs under a tracer (process "
            f"{tracer}: strace, gdb or another record), and a process has one tracer; run "
            "record on its own"
        )
    if code == errno.EPERM:
        return TraceError(
            "ptrace is not permitted here (PTRACE_TRACEME: operation not permitted): the Yama "
            "security module refuses it (kernel.yama.ptrace_scope 3 for everyone, 2 without "
            "CAP_SYS_PTRACE), or a container's seccomp profile does; run record with "
            "CAP_SYS_PTRACE or as root, set `sysctl kernel.yama.ptrace_scope=1`, or start the "
            "container with `--cap-add SYS_PTRACE`"
        )
    return TraceError(f"ptrace refused to trace the command: {os.strerror(code)}")


def _start(argv: Sequence[str], child: _Child) -> subprocess.Popen[bytes]:
    command = printable(argv[0])
    try:
        return subprocess.Popen(list(argv), preexec_fn=child.setup, close_fds=False)
    except FileNotFoundError:
        where = "no such file" if "/" in command else "no such command on PATH"
        raise TraceError(
            f"cannot run {command}: {where}; check its name, or give its path"
        ) from None
    except PermissionError:
        raise TraceError(
            f"cannot run {command}: it is not an executable file (a directory, or without "
            "execute permission); give the program itself, or `chmod +x` it"
        ) from None
    except subprocess.SubprocessError:
        if child.traceme_errno > 0:
            raise _ptrace_refused(child.traceme_errno) from None
        raise TraceError(
            f"cannot prepare {command} for tracing: /proc/self/fd is not readable; "
            "record needs /proc mounted"
        ) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in an argument
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TraceError(f"cannot run {command}: {reason}") from None


def _checked_syscalls(names: Iterable[str]) -> list[str]:
    """``names``, all of which some architecture's SyscallAbi must know (ValueError if not)."""
    known: set[str] = set()
    for spec in ARCHES.values():
        if spec.syscall_abi is not None:
            known.update(spec.syscall_abi.numbers)
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"no system call named {', '.join(unknown)} in gpa_plan.arch")
    # The command's own exec would fail with ENOSYS: the filter is in before the tracer can
    # take its stops. Execs are followed anyway (PTRACE_EVENT_EXEC).
    execs = sorted(set(names) & UNTRACEABLE)
    if execs:
        raise ValueError(f"{', '.join(execs)} cannot be stopped on: the command's exec needs it")
    return sorted(names)


# --- the tracer ------------------------------------------------------------------------------


class _Entry(NamedTuple):
    """A wanted call seen at its entry, waiting for its exit stop."""

    name: str
    args: tuple[int, ...]
    fd_target: str


@dataclass
class _Task:
    tgid: int
    pending: _Entry | None = None
    # A new task reported by its parent's event whose first SIGSTOP is still to come.
    awaiting_stop: bool = False


class _Tracer:
    def __init__(
        self,
        handler: CallHandler,
        call_filter: CallFilter,
        filtered: bool,
        signals: _Signals,
        leader: int,
    ) -> None:
        self.handler = handler
        self.filter = call_filter
        self.abi: SyscallAbi = call_filter.abi
        self.filtered = filtered
        self.signals = signals
        self.leader = leader
        self.tasks: dict[int, _Task] = {leader: _Task(leader)}
        # New tasks whose first stop came before their parent's event: held stopped until it
        # comes, so that forked() is called before any call of the new process.
        self.held: set[int] = set()
        self.status: int | None = None
        self.stops = 0
        self.sigints = 0
        self.interrupted = False
        self.killing = False
        self._info_buffer = ctypes.create_string_buffer(SYSCALL_INFO_SIZE)
        self._siginfo = ctypes.create_string_buffer(SIGINFO_SIZE)
        self._long = ctypes.c_ulong()

    # The loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._loop()
        except BaseException:
            self.kill_all()
            self._loop()
            raise

    def _loop(self) -> None:
        while self.tasks or self.held:
            if not self.tasks:
                self._adopt_held()
            reported = self._next()
            if reported is None:
                return
            self._dispatch(*reported)

    def _next(self) -> tuple[int, int] | None:
        """The next (tid, wait status) of a traced task; None when no child is left at all."""
        try:
            return os.waitpid(-1, WALL)
        except ChildProcessError:
            self.tasks.clear()
            self.held.clear()
            return None

    def _on_signal(self, signo: int, code: int | None) -> None:
        """The Ctrl-C and SIGTERM policy (docs/record.md): the first SIGINT is the command's
        (forwarded to it unless a terminal sent it to both), a second one or a SIGTERM ends
        the recording and kills the command. Called from the signal listener's thread: it
        reads copies of the tracer's tables and only sends signals."""
        if self.killing:
            return
        if signo == signal.SIGTERM or self.sigints >= 1:
            self.interrupted = True
            self.kill_all()
            return
        self.sigints += 1
        if code != SI_KERNEL:
            tasks = list(self.tasks.values())  # a copy: the tracer's thread changes them
            alive = self.leader in {task.tgid for task in tasks}
            for tgid in [self.leader] if alive else sorted({task.tgid for task in tasks}):
                _kill(tgid, signal.SIGINT)

    def kill_all(self) -> None:
        """SIGKILL every traced process (a task in a ptrace stop dies too); the loop then
        reaps them. They cannot be left to run untraced: their filtered calls would fail."""
        self.killing = True
        for tid in {task.tgid for task in list(self.tasks.values())} | set(self.held):
            _kill(tid, signal.SIGKILL)

    def _adopt_held(self) -> None:
        """New tasks whose parent is gone without reporting them: traced as they are."""
        for tid in sorted(self.held):
            task = _Task(_tgid(tid) or tid)
            self.tasks[tid] = task
            if self.killing:
                _kill(tid, signal.SIGKILL)
            self._resume(tid, task)
        self.held.clear()

    # One report -------------------------------------------------------------------------------

    def _dispatch(self, tid: int, status: int) -> None:
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            self.tasks.pop(tid, None)
            self.held.discard(tid)
            if tid == self.leader:
                self.status = _exit_status(status)
            return
        if not os.WIFSTOPPED(status):
            return
        sig = os.WSTOPSIG(status)
        event = status >> 16
        task = self.tasks.get(tid)
        if task is None:
            self._stray_stop(tid, sig, event)
        elif task.awaiting_stop and sig == signal.SIGSTOP and not event:
            task.awaiting_stop = False
            self._resume(tid, task)
        elif sig == SYSCALL_STOP:
            self._syscall_stop(tid, task)
        elif event == PTRACE_EVENT_SECCOMP:
            self._seccomp_stop(tid, task)
        elif event in (PTRACE_EVENT_FORK, PTRACE_EVENT_VFORK, PTRACE_EVENT_CLONE):
            self._new_task(tid, task, event)
        elif event == PTRACE_EVENT_EXEC:
            self._exec(tid, task)
        elif event:
            self._resume(tid, task)
        else:
            self._signal_stop(tid, task, sig)

    def _stray_stop(self, tid: int, sig: int, event: int) -> None:
        if sig == signal.SIGSTOP and not event:
            # A new task whose parent's event has not been read yet: held until it is.
            self.held.add(tid)
            if self.killing:
                _kill(tid, signal.SIGKILL)
            return
        _resume_quietly(PTRACE_CONT, tid, 0)

    def _seccomp_stop(self, tid: int, task: _Task) -> None:
        info = self._syscall_info(tid)
        # The command's own seccomp filters may stop calls for a tracer too: only ours count.
        if info.op == PTRACE_SYSCALL_INFO_SECCOMP and self.filter.stops(
            info.arch, info.nr, info.args
        ):
            task.pending = self._entry(tid, info)
        self._resume(tid, task)

    def _syscall_stop(self, tid: int, task: _Task) -> None:
        info = self._syscall_info(tid)
        if info.op == PTRACE_SYSCALL_INFO_ENTRY:
            task.pending = None
            if self.filter.stops(info.arch, info.nr, info.args):
                task.pending = self._entry(tid, info)
        elif info.op == PTRACE_SYSCALL_INFO_EXIT and task.pending is not None:
            entry, task.pending = task.pending, None
            self._hand_over(tid, task, entry, info.rval)
        self._resume(tid, task)

    def _entry(self, tid: int, info: SyscallInfo) -> _Entry:
        name = self.abi.name_of(info.nr) or str(info.nr)
        target = _fd_target(tid, info.args[0] & 0xFFFF_FFFF) if name in FD_CALLS else ""
        return _Entry(name, info.args, target)

    def _hand_over(self, tid: int, task: _Task, entry: _Entry, ret: int) -> None:
        # A call a signal interrupted is restarted by the kernel (and seen again) or fails
        # with EINTR; either way it did nothing.
        if self.killing or -ret in RESTART_CODES:
            return
        memory = _CallMemory(tid)
        call = TracedCall(tid, task.tgid, entry.name, entry.args, ret, entry.fd_target, memory)
        self.stops += 1
        try:
            self.handler.call(call)
        finally:
            memory.live = False

    def _new_task(self, tid: int, task: _Task, event: int) -> None:
        new = self._event_message(tid)
        if new is not None:
            tgid = _tgid(new)
            if tgid is None:  # gone already: what the event says is enough
                tgid = task.tgid if event == PTRACE_EVENT_CLONE else new
            if tgid == new and not self.killing:
                self.handler.forked(task.tgid, new)
            if new in self.held:
                self.held.discard(new)
                self.tasks[new] = child = _Task(tgid)
                if self.killing:
                    _kill(new, signal.SIGKILL)
                self._resume(new, child)
            else:
                self.tasks[new] = _Task(tgid, awaiting_stop=True)
                if self.killing:
                    _kill(new, signal.SIGKILL)
        self._resume(tid, task)

    def _exec(self, tid: int, task: _Task) -> None:
        # A thread other than the leader that execs takes the leader's tid; the leader
        # vanishes without an exit report (ptrace(2), "execve(2) under ptrace").
        former = self._event_message(tid)
        if former is not None and former != tid and former in self.tasks:
            task = self.tasks.pop(former)
            self.tasks[tid] = task
        self._resume(tid, task)

    def _signal_stop(self, tid: int, task: _Task, sig: int) -> None:
        # A group-stop (SIGSTOP, SIGTSTP, ...) has no siginfo: PTRACE_GETSIGINFO fails with
        # EINVAL. A tracee traced with PTRACE_TRACEME cannot be left in it and still be
        # restarted later (that takes PTRACE_SEIZE and PTRACE_LISTEN): it runs on.
        try:
            _ptrace(PTRACE_GETSIGINFO, tid, 0, ctypes.addressof(self._siginfo))
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                sig = 0
        self._resume(tid, task, sig)

    # ptrace requests --------------------------------------------------------------------------

    def _resume(self, tid: int, task: _Task, sig: int = 0) -> None:
        stop_at_calls = not self.filtered or task.pending is not None
        _resume_quietly(PTRACE_SYSCALL if stop_at_calls else PTRACE_CONT, tid, sig)

    def _syscall_info(self, tid: int) -> SyscallInfo:
        buffer = self._info_buffer
        try:
            _ptrace(PTRACE_GET_SYSCALL_INFO, tid, SYSCALL_INFO_SIZE, ctypes.addressof(buffer))
        except ProcessLookupError:  # killed meanwhile: its exit comes next
            return SyscallInfo(PTRACE_SYSCALL_INFO_NONE, 0, -1, (), 0)
        except OSError as exc:
            if exc.errno == errno.EIO:
                raise TraceError(
                    "this kernel cannot tell a tracer which system call stopped "
                    "(PTRACE_GET_SYSCALL_INFO came with Linux 5.3): record needs Linux 5.3 "
                    "or later"
                ) from None
            raise
        return decode_syscall_info(buffer.raw, self.abi.byteorder)

    def _event_message(self, tid: int) -> int | None:
        try:
            _ptrace(PTRACE_GETEVENTMSG, tid, 0, ctypes.addressof(self._long))
        except ProcessLookupError:
            return None
        return int(self._long.value)


def _resume_quietly(request: int, tid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # killed meanwhile: its exit comes next
        _ptrace(request, tid, 0, sig)


def _kill(pid: int, signo: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signo)


def trace(
    argv: Sequence[str],
    handler: CallHandler,
    wanted: Wanted,
    *,
    started: Callable[[int], None] | None = None,
) -> TraceResult:
    """Run ``argv`` traced until its last process is gone, handing ``handler`` every call
    ``wanted`` names (at its exit, the thread still stopped) and every new process.

    ``started(pid)`` is called once the command is stopped at its exec, before it runs.
    Call from the main thread of a process with no other children to wait for: the tracer
    waits for any child. TraceError when the command cannot be run or traced; an exception
    from the handler or ``started`` kills the command's processes and is raised again.
    """
    return _trace(argv, handler, wanted, started=started, use_filter=True)


def _trace(
    argv: Sequence[str],
    handler: CallHandler,
    wanted: Wanted,
    *,
    started: Callable[[int], None] | None,
    use_filter: bool,
) -> TraceResult:
    if not argv:
        raise TraceError("no command to record: give one after `--`")
    try:
        abi = host_abi()
    except UnsupportedHostError as exc:
        raise TraceError(str(exc)) from None
    call_filter = CallFilter.of(abi, wanted.ioctls, _checked_syscalls(wanted.syscalls),
                                types=wanted.ioctl_types, hot=wanted.hot)
    installer = Installer(call_filter.program()) if use_filter else None
    with _Signals() as signals:
        child = _Child(installer, signals.mask)
        process = _start(argv, child)
        tracer = _Tracer(handler, call_filter, child.filtered, signals, process.pid)
        try:
            _first_stop(tracer, process.pid)
            signals.listen(tracer._on_signal)
            if started is not None and tracer.tasks:
                started(process.pid)
            if tracer.tasks:
                tracer._resume(process.pid, tracer.tasks[process.pid])
        except BaseException:
            tracer.kill_all()
            tracer._loop()
            process.returncode = tracer.status
            raise
        tracer.run()
        status = tracer.status if tracer.status is not None else 255
        process.returncode = status  # reaped here: Popen must not wait for it again
    return TraceResult(status, tracer.interrupted, tracer.filtered, tracer.stops)


def _first_stop(tracer: _Tracer, pid: int) -> None:
    """Wait for the command's stop at its exec (a SIGTRAP: PTRACE_TRACEME without options,
    kernel/ptrace.c ptrace_event()), then set the options every traced task inherits."""
    while True:
        _, status = os.waitpid(pid, WALL)
        if not os.WIFSTOPPED(status):
            tracer._dispatch(pid, status)
            return
        if os.WSTOPSIG(status) == signal.SIGTRAP:
            break
        _resume_quietly(PTRACE_CONT, pid, os.WSTOPSIG(status))
    # Without PTRACE_O_TRACESECCOMP a filter already in place cannot be worked around: the
    # calls it stops would fail with ENOSYS (both came with Linux 3.5, so a kernel that took
    # the filter has the option). Without the filter, it is not asked for.
    options = OPTIONS | (PTRACE_O_TRACESECCOMP if tracer.filtered else 0)
    try:
        _ptrace(PTRACE_SETOPTIONS, pid, 0, options)
    except OSError as exc:
        raise TraceError(
            f"this kernel refuses the ptrace options record needs ({exc.strerror}): "
            "record needs Linux 5.3 or later"
        ) from None
