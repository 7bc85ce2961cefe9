"""One recording: a command run under the tracer with the recorder as its handler, and the
layout of every VM it created (the library side of `gpa-plan record`).

``record(argv)`` runs ``argv`` to its end (or until the user stops the recording) and returns
a ``Recording``; nothing is written. The architecture is the host's: KVM runs guests of the
host's own architecture only.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gpa_plan.arch import ARCHES, host_abi
from gpa_plan.record.document import (
    document,
    notes,
    opening_comments,
    recording_json,
    recording_yaml,
)
from gpa_plan.record.ptrace import TraceResult, Wanted, trace
from gpa_plan.record.state import WANTED_IOCTLS, RecordedVM, Recorder


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

    def ending(self) -> str | None:
        """How the command ended, when that is worth saying: stopped by the user, killed by
        a signal, or exited with a status other than 0."""
        status = self.trace.status
        if self.trace.interrupted:
            return "the recording was stopped (Ctrl-C): the command was killed; the layouts " \
                   "hold what it had built by then"
        if status < 0:
            return f"{shlex.join(self.command)} was ended by signal {-status}"
        if status > 0:
            return f"{shlex.join(self.command)} exited with status {status}"
        return None


def host_arch() -> str:
    """The name of the host's architecture, as layouts write it."""
    abi = host_abi()
    return next(spec.name for spec in ARCHES.values() if spec.syscall_abi == abi)


def record(argv: Sequence[str]) -> Recording:
    """Run ``argv`` under the tracer and return the layouts of the VMs it created. Raises
    gpa_plan.record.ptrace.TraceError when the command cannot be run or traced."""
    arch = host_arch()
    recorder = Recorder()
    result = trace(argv, recorder, Wanted(ioctls=WANTED_IOCTLS))
    command = tuple(argv)
    layouts = tuple(
        RecordedLayout(vm, document(vm, arch),
                       tuple(opening_comments(command, notes(vm, arch, len(recorder.vms)),
                                            ())))
        for vm in recorder.vms
    )
    return Recording(command, arch, layouts, result)
