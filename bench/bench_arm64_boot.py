"""Time the arm64 test machine: each kernel and KVM mode booted under QEMU, one at a time.

Run ``python3 bench/bench_arm64_boot.py`` after ``python3 tests/arm64/fetch.py`` (root,
Debian 12, qemu-system-arm installed). Each machine of tests/test_arm64_vm.py boots once with
its plans, alone on the host, and the table shows, per machine: the host's wall-clock seconds
from QEMU's start to its exit, and the guest's clock (seconds since its kernel started) when
the kernel ran /init, when the init started (Python up, its imports done) and when the plans
were done; then the initramfs's size and the number of probes. Exits 2 when the machine cannot
be booted here.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from arm64 import fetch, initramfs, machine  # noqa: E402
from test_arm64_vm import MACHINES, gicv2_plans, gicv3_plans  # noqa: E402


def guest_clock(lines: list[str], needle: str) -> float | None:
    for line in lines:
        if needle in line:
            found = re.search(r"\[\s*([0-9.]+)\]", line)
            return float(found.group(1)) if found else None
    return None


def main() -> int:
    reason = machine.unavailable()
    if reason:
        print(reason)
        return 2
    data = json.loads((fetch.cache_dir() / fetch.MANIFEST).read_text(encoding="utf-8"))
    root = Path(data["root"])
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, QEMU TCG, one machine at a time")
    header = ("machine", "wall s", "/init", "python", "plans", "MB", "probes")
    print("{:<18} {:>7} {:>6} {:>7} {:>6} {:>5} {:>6}".format(*header))
    for m in MACHINES:
        plans = gicv3_plans() if m.gic == 3 else gicv2_plans()
        size = len(initramfs.build(root, plans))
        boot = machine.run_plans(plans, kernel=m.kernel, vhe=m.vhe, gic=m.gic)
        log = [str(line) for line in boot.machine["kvm_log"]]  # type: ignore[attr-defined]
        run_init = guest_clock(log, "Run /init")
        probes = sum(len(p["probes"]) for p in plans)
        print(
            f"{m.name:<18} {boot.seconds:7.1f} {run_init or 0:6.1f} "
            f"{boot.machine['init_started']:7.1f} {boot.machine['plans_done']:6.1f} "
            f"{size / 1e6:5.1f} {probes:6d}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
