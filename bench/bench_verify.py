"""Time `gpa-plan verify` of a q35-sized layout on this host's /dev/kvm, and the cost per probe.

Run ``python3 bench/bench_verify.py`` on an x86_64 host with /dev/kvm. Each measurement is a
fresh process (best of ``--repeat``, 5 by default):

* ``verify``: ``gpa-plan verify layouts/qemu-q35-x86_64.yaml --format json``, whole, as a user
  runs it (start-up, loading and checking the layout, planning, the probe, the report);
* ``probe``: the probe alone, ``run_plan(plan)`` timed in this process on the plan verify
  makes (best of ``--repeat``): the VM, its memslots and devices, the guest and every access.

The per-probe cost is probe / probes. The requirement shown: verify of the layout (about 20
regions) in at most 2 s. Exits 1 if not.
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

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = ROOT / "layouts" / "qemu-q35-x86_64.yaml"
MAX_SECONDS = 2.0


def timed(args: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1):
        sys.exit(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("no usable /dev/kvm here: nothing to measure")
        return 2
    command = [sys.executable, "-m", "gpa_plan", "verify", str(LAYOUT), "--format", "json"]
    verify_times, output = [], ""
    for _ in range(repeat):
        elapsed, output = timed(command)
        verify_times.append(elapsed)
    (verdict,) = json.loads(output)["verdicts"]
    probes = verdict["summary"]["probes"]
    sys.path.insert(0, str(ROOT))
    from gpa_plan.probe.run import run_plan
    from gpa_plan.verify.driver import plan_layout

    vp = plan_layout(str(LAYOUT), None)
    probe_times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run_plan(vp.plan)
        probe_times.append(time.perf_counter() - start)
    best, probe = min(verify_times), min(probe_times)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
          f"Python {platform.python_version()}")
    print(f"verify {LAYOUT.name}: {best:.3f} s ({probes} probes, "
          f"{verdict['summary']['steps']} set-up steps; "
          f"{verdict['summary']['probes_agree']} probes agree)")
    print(f"the probe alone: {probe * 1000:.1f} ms, {probe / probes * 1e6:.0f} µs per probe")
    ok = best <= MAX_SECONDS
    print(f"target: verify in at most {MAX_SECONDS:.0f} s: {'met' if ok else 'NOT MET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
