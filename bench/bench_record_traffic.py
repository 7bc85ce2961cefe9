"""The cost per exit of `record --traffic`'s tracefs path, on this host's /dev/kvm.

Run ``python3 bench/bench_record_traffic.py`` as root on an x86_64 host with /dev/kvm and
tracefs. The workload is tests/traffic_guest.py: a guest making ``--exits`` (10,000) 4-byte MMIO
writes, each a KVM_EXIT_MMIO its small VMM answers, in a fresh process each time (best of
``--repeat``, 5 by default):

* ``untraced``: the guest alone;
* ``traced``: the same guest followed by a private tracefs instance (`KvmTrace`), as
  ``record --traffic`` follows a command;
* ``summing``: reading the instance's trace text and summing it per VM (`attribute`), which
  ``record`` does once the command ends.

Times are the guest's own (from its first KVM_CREATE_VM to its last exit), so start-up does not
hide the difference: its time and its CPU time (user and system, where the kernel writes the
trace events; the drain thread of the tracing process is not in it). The per-exit costs
printed: untraced, traced, their difference, and summing. Exits 1 if the traced counts are not
exact.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import traffic_guest  # noqa: E402

from gpa_plan.record import tracefs  # noqa: E402
from gpa_plan.record.traffic import Vm, attribute  # noqa: E402

MMIO = 0xD000_0000


def untraced(spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, traffic_guest.__file__, json.dumps(spec)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def traced(spec: dict[str, Any], exits: int, drain: bool) -> tuple[dict[str, Any], float]:
    with tracefs.KvmTrace(drain=drain) as trace:
        result = traffic_guest.traced(spec, trace)
        start = time.perf_counter()
        parsed = trace.read()
        vms = [Vm(result["pid"], created) for created in result["created"]]
        (traffic,) = attribute(parsed.events, vms, lost=parsed.lost)
        summing = time.perf_counter() - start
    rows = traffic.observed_entries().get("traffic", [])
    if rows[:1] != [{"space": "mmio", "address": MMIO, "width": 4, "reads": 0, "writes": exits}]:
        sys.exit(f"the traced counts are not exact: {rows}")
    return result, summing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--exits", type=int, default=10_000)
    parser.add_argument(
        "--no-drain", action="store_true", help="read the buffer only at the end, as before"
    )
    args = parser.parse_args()
    reason = tracefs.available()
    if reason is not None or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print(f"nothing to measure here: {reason or 'no usable /dev/kvm'}")
        return 2
    spec = {"accesses": [["mmio", MMIO, 4, 1, args.exits]]}
    plain, followed, summing = [], [], []
    plain_cpu, followed_cpu = [], []
    for _ in range(args.repeat):
        alone = untraced(spec)
        plain.append(alone["elapsed_ns"] / 1e9)
        plain_cpu.append(alone["cpu_ns"] / 1e9)
        result, summed = traced(spec, args.exits, not args.no_drain)
        followed.append(result["elapsed_ns"] / 1e9)
        followed_cpu.append(result["cpu_ns"] / 1e9)
        summing.append(summed)
    n = args.exits + 1  # and the guest's last port write
    best_plain, best_traced, best_sum = min(plain), min(followed), min(summing)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )
    print(f"{args.exits} MMIO exits, best of {args.repeat}:")
    print(f"  untraced: {best_plain:.3f} s, {best_plain / n * 1e6:.1f} µs an exit")
    print(
        f"  traced:   {best_traced:.3f} s, {best_traced / n * 1e6:.1f} µs an exit "
        f"({best_traced / best_plain:.2f}x; +{(best_traced - best_plain) / n * 1e6:.1f} µs)"
    )
    cpu_plain, cpu_traced = min(plain_cpu), min(followed_cpu)
    print(
        f"  CPU time: {cpu_plain / n * 1e6:.1f} µs an exit untraced, "
        f"{cpu_traced / n * 1e6:.1f} µs traced ({cpu_traced / cpu_plain:.2f}x; "
        f"+{(cpu_traced - cpu_plain) / n * 1e6:.1f} µs)"
    )
    print(f"  summing the trace afterwards: {best_sum:.3f} s, {best_sum / n * 1e6:.1f} µs an exit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
