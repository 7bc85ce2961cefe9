"""One recording: a command run under the tracer with the recorder as its handler, and the
layout of every VM it created (the library side of `gpa-plan record`).

``record_command(argv)`` runs ``argv`` to its end (or until the user stops the recording)
and returns a ``Recording``; nothing is written. The architecture is the host's: KVM runs
guests of the host's own architecture only.
"""

from __future__ import annotations

import contextlib
import shlex
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gpa_plan.arch import ARCHES, host_abi
from gpa_plan.probe.kvm import KVM_RUN
from gpa_plan.record import tracefs
from gpa_plan.record.calls import TracedCall
from gpa_plan.record.document import (
    document,
    notes,
    opening_comments,
    recording_json,
    recording_yaml,
)
from gpa_plan.record.ptrace import TraceResult, Wanted, trace
from gpa_plan.record.runs import PATH as RUNS_PATH
from gpa_plan.record.runs import RunWatcher
from gpa_plan.record.state import (
    DUP_CALLS,
    HOT_IOCTLS,
    WANTED_IOCTL_TYPES,
    WANTED_IOCTLS,
    RecordedVM,
    Recorder,
)
from gpa_plan.record.traffic import TRAFFIC_PATH, Traffic, Vm, summed


@dataclass(frozen=True)
class RecordedLayout:
    """The layout of one VM the command created, and the comments it opens with."""

    vm: RecordedVM
    document: dict[str, Any]
    comments: tuple[str, ...]

    def text(self, fmt: str = "yaml") -> str:
        """The layout as ``yaml`` (with its opening comments) or ``json``."""
        if fmt == "json":
            return recording_json(self.document)
        return recording_yaml(self.document, self.comments)

    def summary(self) -> str:
        """One line: which VM this is and what it holds."""
        vm, doc = self.vm, self.document
        counts = [f"{len(doc[key])} {key[:-1] if len(doc[key]) == 1 else key}"
                  for key in ("memslots", "devices", "ports") if doc.get(key)]
        held = ", ".join(counts) if counts else "nothing"
        return f"VM {vm.number}: created by process {vm.tgid} as fd {vm.fd}; {held}"


@dataclass(frozen=True)
class Recording:
    command: tuple[str, ...]
    arch: str
    layouts: tuple[RecordedLayout, ...]
    trace: TraceResult
    notes: tuple[str, ...] = ()  # what happened outside any VM (a refused KVM_CREATE_VM)

    def ending(self) -> str | None:
        """How the command ended, when that is worth saying: stopped by the user, killed by
        a signal, or exited with a status other than 0."""
        status = self.trace.status
        if self.trace.interrupted:
            return "the recording was stopped (a second Ctrl-C, or SIGTERM): the command was " \
                   "killed; the layouts hold what it had built by then"
        if status < 0:
            return f"{shlex.join(self.command)} was ended by signal {-status}"
        if status > 0:
            return f"{shlex.join(self.command)} exited with status {status}"
        return None


def host_arch() -> str:
    """The name of the host's architecture, as layouts write it."""
    abi = host_abi()
    return next(spec.name for spec in ARCHES.values() if spec.syscall_abi == abi)


def record_command(argv: Sequence[str], *, traffic: bool = False) -> Recording:
    """Run ``argv`` under the tracer and return the layouts of the VMs it created; with
    ``traffic``, what each guest made its VMM do too (``observed``), from tracefs where it can
    be used, else from each vCPU's kvm_run page at every KVM_RUN (gpa_plan.record.runs).
    Raises gpa_plan.record.ptrace.TraceError when the command cannot be run or traced."""
    arch = host_arch()
    recorder = Recorder()
    traffics: dict[int, Traffic] = {}
    path = how = ""
    if traffic:
        result, traffics, path, how = _traced_with_traffic(argv, recorder)
    else:
        result = trace(argv, recorder, _wanted())
    command = tuple(argv)
    layouts = []
    for vm in recorder.vms:
        doc = document(vm, arch)
        vm_notes = notes(vm, arch, len(recorder.vms))
        if traffic:
            seen = traffics.get(vm.number) or Traffic(path=path)
            doc["observed"] = {**seen.observed_entries(), **doc.get("observed", {})}
            vm_notes += [how, *(note[0].upper() + note[1:] + "." for note in seen.notes())]
        layouts.append(RecordedLayout(
            vm, doc, tuple(opening_comments(command, vm_notes, recorder.notes))))
    return Recording(command, arch, tuple(layouts), result, tuple(recorder.notes))


def _traced_with_traffic(argv: Sequence[str], recorder: Recorder
                         ) -> tuple[TraceResult, dict[int, Traffic], str, str]:
    """The command traced with its traffic: through tracefs where an instance can be made,
    else from the vCPUs' kvm_run pages; the result, each VM's traffic, the path taken and a
    sentence saying which and why."""
    why_not = tracefs.available()
    if why_not is None:
        traced = _traced_by_tracefs(argv, recorder)
        if not isinstance(traced, str):
            return (*traced, TRAFFIC_PATH,
                    "Traffic from KVM's tracepoints (tracefs): the command never stopped for it.")
        why_not = traced  # the instance could not be made: the command has not run
    watcher = RunWatcher(recorder)
    result = trace(argv, watcher, _wanted(ioctls={KVM_RUN}, syscalls={"mmap"}))
    return (result, watcher.traffic, RUNS_PATH,
            "Traffic from each vCPU's kvm_run page, stopping on every KVM_RUN (ptrace): "
            f"tracefs cannot be used here: {why_not}.")


def _wanted(ioctls: Iterable[int] = (), syscalls: Iterable[str] = ()) -> Wanted:
    """The calls the recorder needs, and ``ioctls`` and ``syscalls`` besides; the calls that
    duplicate a file descriptor only where the host has them (arm64 has no dup2)."""
    known = host_abi().numbers
    return Wanted(ioctls=WANTED_IOCTLS | frozenset(ioctls),
                  syscalls=frozenset({*DUP_CALLS, *syscalls} & set(known)),
                  ioctl_types=WANTED_IOCTL_TYPES, hot=HOT_IOCTLS)


class _Timed:
    """The recorder, noting when each VM was created (for tracefs's attribution by time)."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.vms: list[Vm] = []

    def call(self, call: TracedCall) -> None:
        before = len(self.recorder.vms)
        self.recorder.call(call)
        for vm in self.recorder.vms[before:]:
            self.vms.append(Vm(vm.tgid, time.monotonic_ns()))

    def forked(self, parent_tgid: int, child_tgid: int) -> None:
        self.recorder.forked(parent_tgid, child_tgid)


def _traced_by_tracefs(argv: Sequence[str], recorder: Recorder
                       ) -> tuple[TraceResult, dict[int, Traffic]] | str:
    """The command traced with a tracefs instance following it, and each VM's traffic; or,
    when the instance cannot be made (the command has not run then), why."""
    timed = _Timed(recorder)
    with contextlib.ExitStack() as stack:
        try:
            kvm_trace = stack.enter_context(tracefs.KvmTrace())
        except tracefs.TraceError as err:
            return str(err)
        result = trace(argv, timed, _wanted(), started=kvm_trace.follow)
        parsed = kvm_trace.read()
    per_vm = summed(parsed, timed.vms)
    return result, {vm.number: seen for vm, seen in zip(recorder.vms, per_vm, strict=True)}
