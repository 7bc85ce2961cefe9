"""KVM's tracepoints, read through a private tracefs instance (``record --traffic`` as root).

`KvmTrace` makes its own instance, ``instances/gpa-plan-NS-PID`` under the tracefs mount, so
nothing of the host's own tracing changes (the top level's ``tracing_on``, ``set_event``,
``trace_clock``, buffer and options, and every other instance, are left as they are). In it:

* the events ``kvm:kvm_mmio`` and ``kvm:kvm_userspace_exit`` (include/trace/events/kvm.h, every
  architecture), ``kvm:kvm_pio`` where the kernel has it (x86, arch/x86/kvm/trace.h) and
  ``kvm:kvm_entry`` where the kernel has it (x86 VMX and SVM, arm64): a guest entry separates
  what the guest did from what KVM did on re-entry (`gpa_plan.record.traffic` says why);
* ``set_event_pid`` with ``options/event-fork``: only the followed processes' threads are
  traced, and so are the threads and processes they create from then on;
* ``trace_clock`` ``mono``, the clock of ``time.monotonic_ns()``, so that events can be set
  beside the times the recorder saw each ``KVM_CREATE_VM``;
* ``options/record-tgid``: each event says its process, which outlives the thread;
* a ring buffer of `DEFAULT_BUFFER_KB` in all (``buffer_size_kb`` is per CPU), which a thread
  empties into an unnamed temporary file every `DRAIN_SECONDS` while the command runs
  (``trace_pipe``), so a long recording is bounded by the disk, not by the buffer; what is
  left is read when the command ends. If the buffer fills all the same (more than it holds in
  `DRAIN_SECONDS`), the kernel overwrites the oldest events (the ``overwrite`` option, on by
  default) and counts them in ``per_cpu/cpuN/stats`` as ``overrun``; `KvmTrace.lost` sums
  those (and ``dropped events``), and the recording then says that its traffic is
  incomplete.

Tracing starts at the first `KvmTrace.follow` (before it, the instance is off: an empty
``set_event_pid`` would trace every process). The instance is removed when the ``with`` block
ends, whatever ends it; one left by a ``record`` that was killed (its pid no longer runs) is
removed by the next.

tracefs is not mounted here: when neither ``/sys/kernel/tracing`` nor
``/sys/kernel/debug/tracing`` holds it, `available` says so and how to mount it. A mount would
outlive the recording and change the host for every user, so that is the administrator's
choice.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import IO, NamedTuple

MOUNT_POINTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
REQUIRED_EVENTS = ("kvm_mmio", "kvm_userspace_exit")
OPTIONAL_EVENTS = ("kvm_pio", "kvm_entry")
DEFAULT_BUFFER_KB = 128 * 1024
"""The ring buffer for all CPUs together: about three million events, one or two per exit."""
MIN_BUFFER_KB = 16
INSTANCE_PREFIX = "gpa-plan-"
DRAIN_SECONDS = 0.05
"""How often the drain empties the ring buffer into its file while the command runs."""


class Event(NamedTuple):
    """One traced KVM event of one thread.

    ``kind`` is ``mmio-write``, ``mmio-read``, ``mmio-unsatisfied-read`` (kvm_mmio),
    ``pio-write``, ``pio-read`` (kvm_pio), ``exit`` (kvm_userspace_exit: KVM_RUN returns) or
    ``entry`` (kvm_entry). ``address``/``width``/``elements`` are the access's (a GPA or a port);
    ``value`` the value written or read (kvm_pio); ``reason`` and ``errno`` the exit's
    (``errno`` negative when KVM_RUN failed).
    """

    tid: int
    tgid: int  # -1: not known
    timestamp: int  # ns, trace clock mono (the text gives microseconds)
    kind: str
    address: int = 0
    width: int = 0
    elements: int = 1  # a string I/O instruction's count
    value: int = 0
    reason: int = 0
    errno: int = 0


class TraceError(Exception):
    """The tracefs instance could not be made or set up; the message says why."""


# --- reading the instance's `trace` ------------------------------------------------------------

# "  qemu-system-x86-1234  (  1230) [001] d..1. 36770.633079: kvm_mmio: mmio write len 1 ..."
# The command name may hold spaces and dashes: the thread id is the last "-N" before the
# (optional) tgid and the CPU.
_LINE = re.compile(
    r"^\s*.*?-(?P<tid>\d+)\s+(?:\(\s*(?P<tgid>\d+|-+)\)\s+)?\[\d+\]\s+(?:\S+\s+)?"
    r"(?P<secs>\d+)\.(?P<frac>\d+):\s+(?P<event>\w+):\s?(?P<body>.*)$"
)
_LOST = re.compile(r"^CPU:\d+ \[LOST (?P<n>\d+) EVENTS\]")
# include/trace/events/kvm.h kvm_mmio: "mmio %s len %u gpa 0x%llx val 0x%llx"
_MMIO = re.compile(
    r"mmio (?P<op>unsatisfied-read|read|write) len (?P<len>\d+) gpa 0x(?P<gpa>[0-9a-f]+)"
)
# arch/x86/kvm/trace.h kvm_pio: "pio_%s at 0x%x size %d count %d val 0x%x %s"
_PIO = re.compile(
    r"pio_(?P<dir>read|write) at 0x(?P<port>[0-9a-f]+) size (?P<size>\d+) count (?P<count>\d+)"
    r" val 0x(?P<val>[0-9a-f]+)"
)
# include/trace/events/kvm.h kvm_userspace_exit: "reason %s (%d)": the exit reason's name and
# number, or "restart"/"error" and -errno when KVM_RUN failed.
_EXIT = re.compile(r"reason (?P<name>\S+) \((?P<number>-?\d+)\)")


def _timestamp(secs: str, frac: str) -> int:
    return int(secs) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])


def _event(tid: int, tgid: int, ts: int, name: str, body: str) -> Event | None:
    if name == "kvm_mmio":
        m = _MMIO.match(body)
        if m is None:
            return None
        return Event(tid, tgid, ts, f"mmio-{m['op']}", int(m["gpa"], 16), int(m["len"]))
    if name == "kvm_pio":
        m = _PIO.match(body)
        if m is None:
            return None
        return Event(
            tid,
            tgid,
            ts,
            f"pio-{m['dir']}",
            int(m["port"], 16),
            int(m["size"]),
            int(m["count"]),
            int(m["val"], 16),
        )
    if name == "kvm_userspace_exit":
        m = _EXIT.match(body)
        if m is None:
            return None
        number = int(m["number"])
        if m["name"] in ("restart", "error"):
            return Event(tid, tgid, ts, "exit", errno=-number)
        return Event(tid, tgid, ts, "exit", reason=number)
    if name == "kvm_entry":
        return Event(tid, tgid, ts, "entry")
    return None


class Parsed(NamedTuple):
    events: list[Event]
    lost: int  # events the text itself says were lost ("CPU:N [LOST M EVENTS]")
    unread: int  # lines of a traced event that did not parse


def parse_trace(lines: Iterable[str]) -> Parsed:
    """The events of a tracefs ``trace`` text, in its order (the kernel merges the CPUs'
    buffers by time, so each thread's events come in the order they happened)."""
    events: list[Event] = []
    lost = unread = 0
    for line in lines:
        if line.startswith("#") or not line.strip():
            continue
        m = _LINE.match(line)
        if m is None:
            gone = _LOST.match(line.strip())
            if gone is not None:
                lost += int(gone["n"])
            else:
                unread += 1
            continue
        tgid = m["tgid"]
        event = _event(
            int(m["tid"]),
            int(tgid) if tgid and tgid.isdigit() else -1,
            _timestamp(m["secs"], m["frac"]),
            m["event"],
            m["body"],
        )
        if event is None:
            unread += 1
        else:
            events.append(event)
    return Parsed(events, lost, unread)


# --- the instance ------------------------------------------------------------------------------


def tracefs_root() -> str | None:
    """Where tracefs is mounted (the first of `MOUNT_POINTS` with ``instances``), or None."""
    for root in MOUNT_POINTS:
        if os.path.isdir(os.path.join(root, "instances")):
            return root
    return None


def available() -> str | None:
    """None when `KvmTrace` can run here, else why not (a sentence that says how to fix it)."""
    if os.geteuid() != 0:
        return "tracing KVM's exits through tracefs needs root: run `gpa-plan record` as root"
    root = tracefs_root()
    if root is None:
        return (
            "tracefs is not mounted (neither /sys/kernel/tracing nor /sys/kernel/debug/tracing "
            "has it): mount it with `mount -t tracefs nodev /sys/kernel/tracing`"
        )
    for name in REQUIRED_EVENTS:
        if not os.path.isdir(os.path.join(root, "events", "kvm", name)):
            return (
                f"the kernel has no kvm:{name} tracepoint under {root}/events: load the KVM "
                "module (modprobe kvm) on a kernel built with CONFIG_TRACEPOINTS"
            )
    return None


def _write(path: str, text: str, *, append: bool = False) -> None:
    flags = os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


class KvmTrace:
    """A private tracefs instance tracing KVM's exits of the processes it follows.

    Use as a context manager, reading before the block ends::

        with KvmTrace() as trace:
            result = ptrace.trace(argv, recorder, wanted, started=trace.follow)
            parsed = trace.read()
        traffic = summed(parsed, [Vm(vm.tgid, vm.created) for vm in recorder.vms])

    ``buffer_kb`` is the ring buffer for all CPUs together.
    """

    def __init__(
        self, *, buffer_kb: int = DEFAULT_BUFFER_KB, root: str | None = None, drain: bool = True
    ) -> None:
        self.buffer_kb = buffer_kb
        self.root = root
        self.path = ""
        self.events_enabled: tuple[str, ...] = ()
        self._following = False
        self._drain = _Drain() if drain else None

    # --- set-up ------------------------------------------------------------------------------

    def __enter__(self) -> KvmTrace:
        reason = available() if self.root is None else None
        root = self.root or tracefs_root()
        if reason is not None or root is None:
            raise TraceError(reason or "tracefs is not mounted")
        remove_stale_instances(root)
        self.path = self._make_instance(root)
        try:
            self._set_up()
        except BaseException:
            self._remove()
            raise
        return self

    def _make_instance(self, root: str) -> str:
        base = os.path.join(root, "instances", instance_name(os.getpid()))
        for n in range(1, 1000):
            path = base if n == 1 else f"{base}-{n}"
            try:
                os.mkdir(path)
            except FileExistsError:
                continue
            except OSError as exc:
                raise TraceError(
                    f"cannot make the tracefs instance {path}: {exc.strerror}"
                ) from exc
            return path
        raise TraceError(f"cannot make a tracefs instance: {base}-1..999 all exist")

    def _set_up(self) -> None:
        p = self.path
        try:
            _write(f"{p}/tracing_on", "0")
            _write(f"{p}/trace_clock", "mono")
            _write(f"{p}/options/record-tgid", "1")
            _write(f"{p}/options/event-fork", "1")
            self._size_buffer()
            enabled = []
            for name in REQUIRED_EVENTS + OPTIONAL_EVENTS:
                enable = f"{p}/events/kvm/{name}/enable"
                if name in OPTIONAL_EVENTS and not os.path.exists(enable):
                    continue
                _write(enable, "1")
                enabled.append(name)
        except OSError as exc:
            raise TraceError(
                f"cannot set up the tracefs instance {p}: {exc.filename}: {exc.strerror}"
            ) from exc
        self.events_enabled = tuple(enabled)

    def _size_buffer(self) -> None:
        """``buffer_size_kb`` per CPU; halved until the kernel finds the memory."""
        cpus = max(1, len(os.listdir(f"{self.path}/per_cpu")))
        per_cpu = max(MIN_BUFFER_KB, self.buffer_kb // cpus)
        while True:
            try:
                _write(f"{self.path}/buffer_size_kb", str(per_cpu))
                return
            except OSError as exc:
                if exc.errno != errno.ENOMEM or per_cpu <= MIN_BUFFER_KB:
                    raise
                per_cpu //= 2

    def follow(self, pid: int) -> None:
        """Trace ``pid`` and, from now on, every thread and process it creates; the first
        call starts tracing."""
        try:
            _write(f"{self.path}/set_event_pid", f"{pid}\n", append=True)
            if not self._following:
                if self._drain is not None:
                    self._drain.start(f"{self.path}/trace_pipe")
                _write(f"{self.path}/tracing_on", "1")
                self._following = True
        except OSError as exc:
            raise TraceError(f"cannot trace pid {pid}: {exc.strerror}") from exc

    # --- results -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop tracing (what is in the buffer stays to be read)."""
        with contextlib.suppress(OSError):
            _write(f"{self.path}/tracing_on", "0")

    def lines(self) -> Iterator[str]:
        """What was traced, line by line: what the drain took from ``trace_pipe``, then what
        the buffer still holds (its ``trace`` text)."""
        if self._drain is not None:
            self._drain.stop()
            yield from self._drain.lines()
        with open(f"{self.path}/trace", encoding="utf-8", errors="replace") as text:
            yield from text

    def read(self) -> Parsed:
        """Stop tracing and parse what the buffer holds, with the events lost to a full
        buffer (`lost`) added to those the text reports."""
        self.stop()
        parsed = parse_trace(self.lines())
        return parsed._replace(lost=max(parsed.lost, self.lost()))

    def lost(self) -> int:
        """Events the kernel lost: ``overrun`` and ``dropped events`` of every CPU."""
        total = 0
        per_cpu = f"{self.path}/per_cpu"
        for cpu in sorted(os.listdir(per_cpu)):
            try:
                with open(f"{per_cpu}/{cpu}/stats", encoding="ascii") as stats:
                    total += _lost_in_stats(stats.read().splitlines())
            except OSError:
                continue
        return total

    # --- tear-down ---------------------------------------------------------------------------

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._remove()

    def _remove(self) -> None:
        """Turn the instance off and remove it (rmdir frees its buffers and events)."""
        if not self.path:
            return
        self.stop()
        if self._drain is not None:
            self._drain.close()
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise TraceError(
                f"cannot remove the tracefs instance {self.path}: {exc.strerror}; remove it "
                f"with `rmdir {self.path}`"
            ) from exc
        finally:
            self.path = ""


class _Drain:
    """A thread that empties the ring buffer (``trace_pipe``, read without blocking) into an
    unnamed temporary file while the command runs, so that a long recording is not bounded by
    the buffer: the buffer only has to hold what comes in `DRAIN_SECONDS`."""

    def __init__(self) -> None:
        self._file: IO[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._fd = -1
        self.error: OSError | None = None

    def start(self, pipe: str) -> None:
        self._fd = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
        # kept open until close(): the thread writes it, lines() reads it back
        self._file = tempfile.TemporaryFile(prefix="gpa-plan-trace-")  # noqa: SIM115
        self._thread = threading.Thread(target=self._run, name="gpa-plan-trace", daemon=True)
        self._thread.start()

    def _empty(self) -> None:
        assert self._file is not None
        while True:
            try:
                chunk = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                return
            if not chunk:
                return
            self._file.write(chunk)

    def _run(self) -> None:
        try:
            while not self._stopping.wait(DRAIN_SECONDS):
                self._empty()
            self._empty()
        except OSError as exc:
            self.error = exc

    def stop(self) -> None:
        """Empty the buffer a last time (tracing has stopped) and end the thread."""
        if self._thread is not None:
            self._stopping.set()
            self._thread.join()
            self._thread = None
        if self.error is not None:
            raise TraceError(f"cannot read the trace: {self.error.strerror}")

    def lines(self) -> Iterator[str]:
        if self._file is None:
            return
        self._file.seek(0)
        for line in self._file:
            yield line.decode("utf-8", errors="replace")

    def close(self) -> None:
        if self._thread is not None:
            self._stopping.set()
            self._thread.join()
            self._thread = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._file is not None:
            self._file.close()
            self._file = None


def _pid_namespace() -> str:
    """This process's PID namespace (the inode of /proc/self/ns/pid), "0" when unknown."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"


def instance_name(pid: int) -> str:
    """``gpa-plan-NS-PID``: the PID namespace too, since tracefs is one for every container
    of the host and a pid means something in its own namespace only."""
    return f"{INSTANCE_PREFIX}{_pid_namespace()}-{pid}"


def _owner(name: str) -> int | None:
    """The pid in an instance name ``gpa-plan-NS-PID`` or ``gpa-plan-NS-PID-N`` of this
    process's PID namespace; None for others (another namespace's, whose pids this process
    cannot check)."""
    prefix = f"{INSTANCE_PREFIX}{_pid_namespace()}-"
    if not name.startswith(prefix):
        return None
    pid = name[len(prefix) :].split("-")[0]
    return int(pid) if pid.isdigit() else None


def remove_stale_instances(root: str) -> list[str]:
    """Remove the instances of `record` processes that no longer run (killed before they could
    remove theirs); the names removed. An instance another program still reads stays."""
    removed = []
    instances = os.path.join(root, "instances")
    for name in sorted(os.listdir(instances)):
        pid = _owner(name)
        if pid is None or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # its record still runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(instances, name))
            removed.append(name)
    return removed


def _lost_in_stats(lines: Sequence[str]) -> int:
    lost = 0
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() in ("overrun", "dropped events"):
            with contextlib.suppress(ValueError):
                lost += int(value.strip())
    return lost
