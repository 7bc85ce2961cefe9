"""QEMU's x86 machines on this host's /dev/kvm, for the tests of `record`.

``machine_command(machine)`` is the command line of a QEMU (Debian's qemu-system-x86 7.2) that
builds ``machine`` with ``-accel kvm``, stays stopped before the first instruction (``-S``), runs
``info mtree -f`` in its monitor (read from standard input) and quits: the memslots and
coalesced zones it registered are all there, and nothing of the guest ran.
``flat_memory(output)`` is the memory tree QEMU printed, for `import qemu-mtree`.
"""

from __future__ import annotations

import shutil
import subprocess

from tests.kvm_probe import kvm_usable

QEMU = "qemu-system-x86_64"
MONITOR_INPUT = "info mtree -f\nquit\n"


def qemu_missing() -> str | None:
    """Why QEMU x86 cannot run here with KVM, or None."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed (Debian: apt-get install qemu-system-x86)"
    if not kvm_usable():
        return "/dev/kvm does not open here"
    return None


def machine_command(machine: str, memory: str = "256") -> list[str]:
    return [QEMU, "-M", machine, "-accel", "kvm", "-S", "-display", "none", "-monitor",
            "stdio", "-m", memory]


def run_machine(command: list[str]) -> str:
    """Standard output of ``command`` (QEMU, or `gpa-plan record -- QEMU ...`) fed the monitor
    input."""
    done = subprocess.run(command, input=MONITOR_INPUT, capture_output=True, text=True,
                          timeout=60, check=True)
    return done.stdout


def flat_memory(output: str) -> str:
    """The `info mtree -f` text in what the monitor printed: from the first FlatView to the
    monitor's next prompt (its echo of the input, with terminal escapes, is left out)."""
    start = output.index("FlatView #")
    end = output.find("(qemu)", start)
    return output[start:end if end >= 0 else len(output)]
