"""The tracer of `record`: a command's calls, threads, children, signals and Ctrl-C.

The decoding of struct ptrace_syscall_info is tested for x86_64 and arm64 from bytes; the
rest runs real commands (small Python scripts) under the tracer, on /dev/kvm where they need
it."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import signal
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kvm_probe import kvm_usable

from gpa_plan.arch import ARCHES
from gpa_plan.probe import kvm
from gpa_plan.record import ptrace, seccomp
from gpa_plan.record.ptrace import (
    PTRACE_SYSCALL_INFO_ENTRY,
    PTRACE_SYSCALL_INFO_EXIT,
    PTRACE_SYSCALL_INFO_SECCOMP,
    TracedCall,
    TraceError,
    TraceResult,
    Wanted,
    decode_syscall_info,
    trace,
)

ROOT = Path(__file__).resolve().parent.parent
needs_kvm = pytest.mark.skipif(not kvm_usable(), reason="needs a usable /dev/kvm")
SET_MEMORY = kvm.KVM_SET_USER_MEMORY_REGION
WANTED = Wanted(frozenset({kvm.KVM_CREATE_VM, SET_MEMORY}))
NO_CALLS = Wanted(frozenset())


# --- struct ptrace_syscall_info ----------------------------------------------------------------


def syscall_info(op: int, arch: int, union: bytes) -> bytes:
    head = struct.pack("<BBHIQQ", op, 0, 0, arch, 0x40_1000, 0x7FFF_F000)
    return (head + union).ljust(ptrace.SYSCALL_INFO_SIZE, b"\0")


@pytest.mark.parametrize(("arch", "ioctl"), [("x86_64", 16), ("arm64", 29)])
def test_a_seccomp_stop_gives_the_call_and_its_six_arguments(arch: str, ioctl: int) -> None:
    abi = ARCHES[arch].syscall_abi
    assert abi is not None
    args = (7, SET_MEMORY, 0xFFFF_8000_0000_1000, 0, 2**64 - 1, 5)
    data = syscall_info(
        PTRACE_SYSCALL_INFO_SECCOMP, abi.audit_arch, struct.pack("<Q6QII", ioctl, *args, 0, 0)
    )
    info = decode_syscall_info(data, abi.byteorder)
    assert (info.op, info.arch, info.nr, info.args) == (
        PTRACE_SYSCALL_INFO_SECCOMP,
        abi.audit_arch,
        ioctl,
        args,
    )
    assert abi.name_of(info.nr) == "ioctl"


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_an_entry_stop_reads_like_a_seccomp_stop(arch: str) -> None:
    abi = ARCHES[arch].syscall_abi
    assert abi is not None
    mmap_nr = abi.numbers["mmap"]
    data = syscall_info(
        PTRACE_SYSCALL_INFO_ENTRY,
        abi.audit_arch,
        struct.pack("<Q6Q", mmap_nr, 0, 4096, 3, 34, 2**64 - 1, 0),
    )
    info = decode_syscall_info(data, abi.byteorder)
    assert (info.nr, info.args) == (mmap_nr, (0, 4096, 3, 34, 2**64 - 1, 0))
    assert abi.name_of(info.nr) == "mmap"


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_an_exit_stop_gives_the_signed_return_value(arch: str) -> None:
    abi = ARCHES[arch].syscall_abi
    assert abi is not None
    failed = syscall_info(PTRACE_SYSCALL_INFO_EXIT, abi.audit_arch, struct.pack("<qB", -22, 1))
    assert decode_syscall_info(failed).rval == -errno.EINVAL
    mapped = syscall_info(
        PTRACE_SYSCALL_INFO_EXIT, abi.audit_arch, struct.pack("<qB", 0x7F12_3456_7000, 0)
    )
    info = decode_syscall_info(mapped)
    assert (info.op, info.arch, info.rval) == (
        PTRACE_SYSCALL_INFO_EXIT,
        abi.audit_arch,
        0x7F12_3456_7000,
    )


# --- reading a tracee's memory --------------------------------------------------------------


@pytest.mark.parametrize("path", ["process_vm_readv", "/proc/PID/mem"])
def test_memory_reads_give_the_bytes_or_oserror(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if path != "process_vm_readv":

        def missing(*args: object) -> int:
            ctypes.set_errno(errno.ENOSYS)
            return -1

        monkeypatch.setattr(ptrace, "_process_vm_readv", missing)
    data = ctypes.create_string_buffer(b"kvm_userspace_memory_region", 32)
    address = ctypes.addressof(data)
    assert ptrace.read_memory(os.getpid(), address + 4, 6) == b"usersp"
    assert ptrace.read_memory(os.getpid(), address, 0) == b""
    with pytest.raises(OSError):
        ptrace.read_memory(os.getpid(), 0, 8)  # nothing is mapped at 0
    with pytest.raises(OSError):
        ptrace.read_memory(os.getpid(), 2**64 - 4, 8)
    with pytest.raises(OSError, match="more than one read takes"):
        ptrace.read_memory(os.getpid(), address, 1 << 30)


# --- running commands --------------------------------------------------------------------------


class Handler:
    """Keeps every call, the kvm_userspace_memory_region behind each memslot call (read while
    the thread is stopped) and every new process."""

    def __init__(self) -> None:
        self.calls: list[TracedCall] = []
        self.regions: list[tuple[int, int, int, int, int]] = []
        self.events: list[tuple[str, int, int]] = []

    def call(self, call: TracedCall) -> None:
        self.calls.append(call)
        self.events.append(("call", call.tid, call.tgid))
        if call.name == "ioctl" and call.args[1] == SET_MEMORY:
            data = call.memory(call.args[2], kvm.MEM_REGION.size)
            self.regions.append(kvm.MEM_REGION.unpack(data))

    def forked(self, parent_tgid: int, child_tgid: int) -> None:
        self.events.append(("forked", parent_tgid, child_tgid))


def script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "tracee.py"
    path.write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n{body}")
    return [sys.executable, str(path)]


def run(
    argv: list[str],
    handler: Handler,
    wanted: Wanted = WANTED,
    tracer: Callable[..., TraceResult] = trace,
) -> tuple[TraceResult, list[int]]:
    """Trace ``argv`` with a watchdog that kills the command after 20 s, so that a tracer
    that hangs fails the test instead of the suite; returns the result and the pid."""
    pids: list[int] = []

    def started(pid: int) -> None:
        pids.append(pid)
        # Started from this thread once trace() has blocked its signals: the watchdog thread
        # inherits the mask and takes none of the tracer's SIGCHLDs.
        watchdog.start()

    def kill() -> None:
        for pid in pids:
            with_pid_gone(pid, signal.SIGKILL)

    watchdog = threading.Timer(20, kill)
    try:
        result = tracer(argv, handler, wanted, started=started)
    finally:
        watchdog.cancel()
        if watchdog.ident is not None:
            watchdog.join()
    return result, pids


def with_pid_gone(pid: int, signo: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signo)


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs: a zombie (dead, its parent yet to reap it) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


KVM_SCRIPT = """
import json, os, threading
from gpa_plan.probe import kvm

out = sys.argv[1]
k = kvm.Kvm()
k.check_extension(0)
vm = kvm.create_vm(k)
mem = kvm.Memory(0x2000)
facts = {"pid": os.getpid(), "hva": mem.addr}
assert kvm.set_memslot(vm, 1, 0, 0x10_0000, 0x1000, mem.addr, False) is None
facts["refused"] = kvm.set_memslot(vm, 2, 0, 0x10_0800, 0x1000, mem.addr, False)
try:
    kvm.ioctl(vm, kvm.KVM_RUN)  # a VM is no vCPU: ENOTTY
except OSError:
    pass

def in_thread():
    facts["thread"] = threading.get_native_id()
    kvm.set_memslot(vm, 3, 0, 0x20_0000, 0x1000, mem.addr + 0x1000, False)

worker = threading.Thread(target=in_thread)
worker.start()
worker.join()
child = os.fork()
if child == 0:
    own = kvm.create_vm(k)
    kvm.set_memslot(own, 4, 0, 0x30_0000, 0x1000, mem.addr, True)
    os._exit(0)
os.waitpid(child, 0)
facts["child"] = child
with open(out, "w") as f:
    json.dump(facts, f)
"""


def kvm_run(
    tmp_path: Path, tracer: Callable[..., TraceResult] = trace
) -> tuple[TraceResult, Handler, dict[str, int]]:
    handler = Handler()
    facts = tmp_path / "facts.json"
    result, _ = run([*script(tmp_path, KVM_SCRIPT), str(facts)], handler, tracer=tracer)
    return result, handler, json.loads(facts.read_text())


def check_kvm_calls(handler: Handler, facts: dict[str, int]) -> None:
    pid, thread, child, hva = facts["pid"], facts["thread"], facts["child"], facts["hva"]
    seen = [(c.tid, c.tgid, c.args[1], c.ret, c.fd_target) for c in handler.calls]
    vm_fd = handler.calls[0].ret
    assert vm_fd >= 0
    assert seen == [
        (pid, pid, kvm.KVM_CREATE_VM, vm_fd, "/dev/kvm"),
        (pid, pid, SET_MEMORY, 0, "anon_inode:kvm-vm"),
        (pid, pid, SET_MEMORY, -errno.EINVAL, "anon_inode:kvm-vm"),
        (thread, pid, SET_MEMORY, 0, "anon_inode:kvm-vm"),
        (child, child, kvm.KVM_CREATE_VM, handler.calls[4].ret, "/dev/kvm"),
        (child, child, SET_MEMORY, 0, "anon_inode:kvm-vm"),
    ]
    assert facts["refused"] == "EINVAL"
    assert all(c.name == "ioctl" and c.args[0] < 1024 for c in handler.calls)
    assert handler.calls[1].args[0] == vm_fd
    # slot, flags, guest_phys_addr, memory_size, userspace_addr, read behind the pointer
    assert handler.regions == [
        (1, 0, 0x10_0000, 0x1000, hva),
        (2, 0, 0x10_0800, 0x1000, hva),
        (3, 0, 0x20_0000, 0x1000, hva + 0x1000),
        (4, kvm.KVM_MEM_READONLY, 0x30_0000, 0x1000, hva),
    ]
    # The new process is announced before any call of its own.
    forked = handler.events.index(("forked", pid, child))
    assert forked < handler.events.index(("call", child, child))


@needs_kvm
def test_kvm_calls_of_the_command_its_thread_and_its_child_are_handed_over(
    tmp_path: Path,
) -> None:
    result, handler, facts = kvm_run(tmp_path)
    assert result == TraceResult(status=0, interrupted=False, filtered=True, stops=6)
    check_kvm_calls(handler, facts)
    forks = [e for e in handler.events if e[0] == "forked"]
    assert forks == [("forked", facts["pid"], facts["child"])]
    assert not alive(facts["child"]) and not alive(facts["pid"])


@needs_kvm
def test_memory_is_read_only_while_the_handler_runs(tmp_path: Path) -> None:
    _, handler, _ = kvm_run(tmp_path)
    call = handler.calls[1]
    with pytest.raises(OSError, match="only while its handler runs"):
        call.memory(call.args[2], 8)


@needs_kvm
def test_without_the_seccomp_filter_every_call_stops_and_the_same_calls_come(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a kernel without seccomp filters answers (the child installs it after the fork).
    monkeypatch.setattr(seccomp.Installer, "install", lambda self: errno.EINVAL)
    result, handler, facts = kvm_run(tmp_path)
    assert result == TraceResult(status=0, interrupted=False, filtered=False, stops=6)
    check_kvm_calls(handler, facts)


@needs_kvm
def test_calls_not_asked_for_never_stop_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stops: list[int] = []
    seccomp_stop = ptrace._Tracer._seccomp_stop

    def counted(self: ptrace._Tracer, tid: int, task: ptrace._Task) -> None:
        stops.append(tid)
        seccomp_stop(self, tid, task)

    monkeypatch.setattr(ptrace._Tracer, "_seccomp_stop", counted)
    argv = script(
        tmp_path,
        """
from gpa_plan.probe import kvm
k = kvm.Kvm()
vm = kvm.create_vm(k)
for _ in range(300):
    k.check_extension(0)
    try:
        kvm.ioctl(vm, kvm.KVM_RUN)
    except OSError:
        pass
mem = kvm.Memory(0x1000)
kvm.set_memslot(vm, 0, 0, 0, 0x1000, mem.addr, False)
""",
    )
    handler = Handler()
    result, _ = run(argv, handler, Wanted(frozenset({SET_MEMORY})))
    assert (result.status, result.stops, len(stops)) == (0, 1, 1)
    assert [c.args[1] for c in handler.calls] == [SET_MEMORY]


def test_calls_asked_for_by_name_come_with_their_fd_target(tmp_path: Path) -> None:
    argv = script(
        tmp_path,
        """
import os
fd = os.open(sys.argv[0], os.O_RDONLY)
os.close(fd)
""",
    )
    handler = Handler()
    result, pids = run(argv, handler, Wanted(frozenset(), frozenset({"close"})))
    assert result.status == 0
    closes = [c for c in handler.calls if c.fd_target == argv[1]]
    assert closes and all(c.name == "close" and c.tgid == pids[0] for c in closes)
    assert closes[-1].ret == 0


def test_the_command_keeps_the_descriptors_it_is_given_and_no_others(tmp_path: Path) -> None:
    """As it would run on its own: an inheritable descriptor of the caller (a shell's
    `3</etc/passwd`, QEMU's `-add-fd`) reaches the command; a non-inheritable one does not."""
    argv = script(tmp_path, "import os\nsys.exit(0 if os.path.exists(sys.argv[1]) and not "
                            "os.path.exists(sys.argv[2]) else 7)")
    given, kept = os.pipe()
    os.set_inheritable(given, True)
    try:
        result, _ = run([*argv, f"/proc/self/fd/{given}", f"/proc/self/fd/{kept}"], Handler(),
                        Wanted(frozenset(), frozenset({"close"})))
    finally:
        os.close(given)
        os.close(kept)
    assert result.status == 0


def test_an_exec_keeps_the_command_traced(tmp_path: Path) -> None:
    argv = script(
        tmp_path,
        """
import os
os.execv(sys.executable, [sys.executable, "-c", "import os; os.close(os.open('/dev/null', 0))"])
""",
    )
    handler = Handler()
    result, pids = run(argv, handler, Wanted(frozenset(), frozenset({"close"})))
    assert result.status == 0
    assert any(c.fd_target == "/dev/null" and c.tid == pids[0] for c in handler.calls)


def test_an_exec_from_a_thread_goes_on_under_the_process_id(tmp_path: Path) -> None:
    argv = script(
        tmp_path,
        """
import os, threading, time
command = "import os; os.close(os.open('/dev/null', 0))"
threading.Thread(target=os.execv, args=(sys.executable, [sys.executable, "-c", command])).start()
time.sleep(60)
""",
    )
    handler = Handler()
    result, pids = run(argv, handler, Wanted(frozenset(), frozenset({"close"})))
    assert result.status == 0
    assert [(c.tid, c.tgid) for c in handler.calls if c.fd_target == "/dev/null"] == [
        (pids[0], pids[0])
    ]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("sys.exit(3)", 3),
        ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", -signal.SIGTERM),
        # A signal reaches the command's own handler.
        (
            "import os, signal\n"
            "signal.signal(signal.SIGUSR1, lambda *_: sys.exit(7))\n"
            "os.kill(os.getpid(), signal.SIGUSR1)\n"
            "signal.pause()",
            7,
        ),
        # A group-stop never leaves the command stopped: it runs on.
        ("import os, signal; os.kill(os.getpid(), signal.SIGSTOP); sys.exit(4)", 4),
    ],
    ids=["exit-code", "killed", "signal-handled", "sigstop"],
)
def test_the_status_is_the_commands_as_subprocess_gives_it(
    tmp_path: Path, body: str, status: int
) -> None:
    result, _ = run(script(tmp_path, body), Handler(), NO_CALLS)
    assert result == TraceResult(status=status, interrupted=False, filtered=True, stops=0)


def test_the_callers_signal_handlers_come_back(tmp_path: Path) -> None:
    def mine(signo: int, frame: object) -> None:
        raise AssertionError("not during the trace")

    before = signal.signal(signal.SIGINT, mine)
    threads = threading.active_count()
    try:
        run(script(tmp_path, "pass"), Handler(), NO_CALLS)
        assert threading.active_count() == threads  # the signal listener is gone
        assert signal.getsignal(signal.SIGINT) is mine
        assert signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL
        assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    finally:
        signal.signal(signal.SIGINT, before)


# --- Ctrl-C ------------------------------------------------------------------------------------

IGNORES_ONE_SIGINT = """
import os, signal, time
from gpa_plan.probe import kvm
got = []
signal.signal(signal.SIGINT, lambda *_: got.append(1))
k = kvm.Kvm()
vm = kvm.create_vm(k)
child = os.fork()
if child == 0:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    time.sleep(60)
    os._exit(0)
with open(sys.argv[1], "w") as f:
    f.write(str(child))
os.kill(os.getppid(), signal.SIGINT)  # the recording's first interruption: forwarded here
while not got:
    time.sleep(0.01)
os.kill(os.getppid(), signal.SIGINT)  # the second one ends the recording
time.sleep(60)
"""


@pytest.fixture(params=["alone", "beside-a-thread"])
def bystander(request: pytest.FixtureRequest) -> Iterator[None]:
    """Nothing, or a thread of this process that does not block SIGINT, which the kernel may
    hand the process's SIGINT to instead of the tracer's listener."""
    if request.param == "alone":
        yield
        return
    done = threading.Event()
    thread = threading.Thread(target=done.wait)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@needs_kvm
@pytest.mark.usefixtures("bystander")
def test_a_second_sigint_kills_the_command_and_keeps_what_was_recorded(tmp_path: Path) -> None:
    handler = Handler()
    child_file = tmp_path / "child"
    result, pids = run([*script(tmp_path, IGNORES_ONE_SIGINT), str(child_file)], handler)
    assert result == TraceResult(status=-signal.SIGKILL, interrupted=True, filtered=True, stops=1)
    assert [c.args[1] for c in handler.calls] == [kvm.KVM_CREATE_VM]
    assert not alive(pids[0]) and not alive(int(child_file.read_text()))


@pytest.mark.usefixtures("bystander")
def test_a_command_ended_by_the_forwarded_sigint_is_not_interrupted(tmp_path: Path) -> None:
    argv = script(
        tmp_path, "import os, signal\nos.kill(os.getppid(), signal.SIGINT)\nsignal.pause()"
    )
    result, _ = run(argv, Handler(), NO_CALLS)
    assert result == TraceResult(status=-signal.SIGINT, interrupted=False, filtered=True, stops=0)


def test_sigterm_ends_the_recording_at_once(tmp_path: Path) -> None:
    argv = script(
        tmp_path, "import os, signal, time\nos.kill(os.getppid(), signal.SIGTERM)\ntime.sleep(60)"
    )
    result, pids = run(argv, Handler(), NO_CALLS)
    assert (result.status, result.interrupted) == (-signal.SIGKILL, True)
    assert not alive(pids[0])


def test_a_handler_that_fails_kills_the_command(tmp_path: Path) -> None:
    class Failing(Handler):
        def call(self, call: TracedCall) -> None:
            raise RuntimeError("handler failed")

    argv = script(tmp_path, "import os, time\nos.close(os.open('/dev/null', 0))\ntime.sleep(60)")
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="handler failed"):
        trace(
            argv,
            Failing(),
            Wanted(frozenset(), frozenset({"close"})),
            started=pids.append,
        )
    assert not alive(pids[0])


# --- what cannot be traced ---------------------------------------------------------------------


def test_a_command_not_found_is_a_trace_error() -> None:
    with pytest.raises(TraceError, match="no-such-vmm: no such command on PATH; check its name"):
        trace(["no-such-vmm", "-x"], Handler(), NO_CALLS)
    with pytest.raises(TraceError, match="/nonexistent/vmm: no such file"):
        trace(["/nonexistent/vmm"], Handler(), NO_CALLS)


def test_a_file_that_is_not_executable_is_a_trace_error(tmp_path: Path) -> None:
    plain = tmp_path / "vmm"
    plain.write_text("#!/bin/sh\n")
    with pytest.raises(TraceError, match="it is not an executable file"):
        trace([str(plain)], Handler(), NO_CALLS)
    with pytest.raises(TraceError, match="not an executable file"):
        trace([str(tmp_path)], Handler(), NO_CALLS)


def test_ptrace_refused_is_a_trace_error_that_says_what_to_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ptrace, "_traceme", lambda: errno.EPERM)
    with pytest.raises(TraceError, match=r"ptrace is not permitted here .*ptrace_scope"):
        trace([sys.executable, "-c", "pass"], Handler(), NO_CALLS)


def test_ptrace_options_refused_is_a_trace_error_and_leaves_no_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = ptrace._ptrace
    pids: list[int] = []

    def refusing(request: int, pid: int, addr: int = 0, data: int = 0) -> int:
        if request == ptrace.PTRACE_SETOPTIONS:
            pids.append(pid)
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return real(request, pid, addr, data)

    monkeypatch.setattr(ptrace, "_ptrace", refusing)
    with pytest.raises(TraceError, match="refuses the ptrace options record needs"):
        trace([sys.executable, "-c", "import time; time.sleep(60)"], Handler(), NO_CALLS)
    assert pids and not alive(pids[0])


def test_no_command_is_a_trace_error() -> None:
    with pytest.raises(TraceError, match="no command to record"):
        trace([], Handler(), NO_CALLS)
    with pytest.raises(TraceError, match="cannot run true: embedded null byte"):
        trace(["true", "a\0b"], Handler(), NO_CALLS)


def test_an_unknown_call_name_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="no system call named mmapp"):
        trace(["true"], Handler(), Wanted(frozenset(), frozenset({"mmapp"})))
    with pytest.raises(ValueError, match="execve cannot be stopped on"):
        trace(["true"], Handler(), Wanted(frozenset(), frozenset({"execve"})))


@pytest.fixture(autouse=True)
def no_tracee_left() -> Iterator[None]:
    """Every test leaves no child of this process behind."""
    yield
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


# --- the order of reports, with the kernel's side played here ------------------------------------

LEADER, CHILD = 1000, 1001


def stopped(sig: int, event: int = 0) -> int:
    """A wait status of a stopped task (WIFSTOPPED, WSTOPSIG, the event above them)."""
    return (event << 16) | (sig << 8) | 0x7F


class Played:
    """A tracer whose ptrace requests and kills are recorded instead of made."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log: list[tuple[str, int, int]] = []
        self.handler = Handler()
        original_forked = self.handler.forked

        def forked(parent: int, child: int) -> None:
            self.log.append(("forked", parent, child))
            original_forked(parent, child)

        self.handler.forked = forked  # type: ignore[method-assign]
        monkeypatch.setattr(
            ptrace,
            "_resume_quietly",
            lambda request, tid, sig: self.log.append(("resume", tid, sig)),
        )
        monkeypatch.setattr(ptrace, "_kill", lambda pid, sig: self.log.append(("kill", pid, sig)))
        monkeypatch.setattr(ptrace, "_tgid", lambda tid: tid)  # every new task a process
        monkeypatch.setattr(ptrace._Tracer, "_event_message", lambda self, tid: CHILD)
        abi = ARCHES["x86_64"].syscall_abi
        assert abi is not None
        call_filter = seccomp.CallFilter.of(abi, (), ())
        self.tracer = ptrace._Tracer(self.handler, call_filter, True, ptrace._Signals(), LEADER)


FORK_EVENT = stopped(signal.SIGTRAP, ptrace.PTRACE_EVENT_FORK)
FIRST_STOP = stopped(signal.SIGSTOP)


def test_a_new_process_reported_by_its_parent_first_has_its_first_sigstop_swallowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    played = Played(monkeypatch)
    played.tracer._dispatch(LEADER, FORK_EVENT)
    played.tracer._dispatch(CHILD, FIRST_STOP)
    assert played.log == [
        ("forked", LEADER, CHILD),
        ("resume", LEADER, 0),
        ("resume", CHILD, 0),  # without the SIGSTOP
    ]
    # A later SIGSTOP is the command's own: delivered.
    monkeypatch.setattr(ptrace, "_ptrace", lambda *args: 0)  # a signal-delivery-stop's siginfo
    played.tracer._dispatch(CHILD, FIRST_STOP)
    assert played.log[-1] == ("resume", CHILD, signal.SIGSTOP)


def test_a_new_process_that_stops_before_its_parents_event_waits_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    played = Played(monkeypatch)
    played.tracer._dispatch(CHILD, FIRST_STOP)
    assert played.log == []  # held stopped: none of its calls before forked()
    played.tracer._dispatch(LEADER, FORK_EVENT)
    assert played.log == [
        ("forked", LEADER, CHILD),
        ("resume", CHILD, 0),
        ("resume", LEADER, 0),
    ]
    assert not played.tracer.held and set(played.tracer.tasks) == {LEADER, CHILD}


def test_the_loop_ends_with_the_last_task_and_keeps_the_first_ones_status(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    played = Played(monkeypatch)
    played.tracer._dispatch(LEADER, FORK_EVENT)
    played.tracer._dispatch(LEADER, 3 << 8)  # exited with 3
    assert set(played.tracer.tasks) == {CHILD} and played.tracer.status == 3
    played.tracer._dispatch(CHILD, signal.SIGKILL)  # killed
    assert not played.tracer.tasks and played.tracer.status == 3


def test_a_terminals_ctrl_c_is_not_sent_to_the_command_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    played = Played(monkeypatch)
    played.tracer._on_signal(signal.SIGINT, ptrace.SI_KERNEL)
    assert played.log == [] and not played.tracer.interrupted
    played.tracer._on_signal(signal.SIGINT, ptrace.SI_KERNEL)
    assert played.log == [("kill", LEADER, signal.SIGKILL)] and played.tracer.interrupted


def test_a_sigint_sent_to_record_alone_is_forwarded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    played = Played(monkeypatch)
    si_user = 0
    played.tracer._on_signal(signal.SIGINT, si_user)
    assert played.log == [("kill", LEADER, signal.SIGINT)] and not played.tracer.interrupted
