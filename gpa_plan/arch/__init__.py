"""Architectures gpa-plan models, by the name layouts use."""

from __future__ import annotations

import os

from gpa_plan.arch.arm64 import ARM64
from gpa_plan.arch.base import (
    ACCESSES,
    ArchSpec,
    Backing,
    Effect,
    Handler,
    Outcome,
    SyscallAbi,
    UnsupportedHostError,
)
from gpa_plan.arch.loongarch64 import LOONGARCH64
from gpa_plan.arch.riscv64 import RISCV64
from gpa_plan.arch.x86_64 import X86_64

ARCHES: dict[str, ArchSpec] = {
    spec.name: spec for spec in (ARM64, X86_64, RISCV64, LOONGARCH64)
}

# `gpa-plan selftests-layout` without --arch.
SELFTESTS_DEFAULT_ARCH = ARM64.name

# Names other tools give the same architectures (GNU triplets and `uname -m`, Debian and Go,
# QEMU's target names). Layouts take one name per architecture, the kernel's (its ARCH=), so
# that files stay comparable; a layout or option that uses another is told which.
OTHER_NAMES = {
    "aarch64": "arm64",
    "armv8": "arm64",
    "amd64": "x86_64",
    "x86-64": "x86_64",
    "x64": "x86_64",
    "riscv": "riscv64",  # the kernel's ARCH=
    "loong64": "loongarch64",  # Debian, Go
    "loongarch": "loongarch64",  # the kernel's ARCH=, QEMU's target directory
}


def name_hint(name: object, written: str = "arch: {}") -> str:
    """A hint naming ours for another tool's name of an architecture, else ``""``; ``written``
    shows how to write ours where the name was given."""
    if not isinstance(name, str):
        return ""
    lower = name.lower()
    ours = OTHER_NAMES.get(lower, lower if lower in ARCHES else None)  # ARM64: case matters
    if ours is None:
        return ""
    return f"; {name} is the architecture layouts call `{ours}`: write `{written.format(ours)}`"


def host_abi(machine: str | None = None) -> SyscallAbi:
    """The system calls of the running machine (or of ``machine``, a `uname -m` name), as a
    tracer reads them; UnsupportedHostError on a machine no architecture module can trace."""
    machine = machine or os.uname().machine
    for spec in ARCHES.values():
        if spec.machine == machine and spec.syscall_abi is not None:
            return spec.syscall_abi
    traced = sorted(s.machine for s in ARCHES.values() if s.syscall_abi is not None)
    raise UnsupportedHostError(
        f"this host is {machine}: gpa-plan traces the system calls of "
        f"{' and '.join(traced)} hosts only; run the command on one of those"
    )


__all__ = [
    "ACCESSES",
    "ARCHES",
    "OTHER_NAMES",
    "SELFTESTS_DEFAULT_ARCH",
    "ArchSpec",
    "Backing",
    "Effect",
    "Handler",
    "Outcome",
    "SyscallAbi",
    "UnsupportedHostError",
    "host_abi",
    "name_hint",
]
