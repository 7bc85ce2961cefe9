"""Time `allocate(layout)` on 2,000 and 20,000 `base: auto` devices and show it scales.

Run ``python3 bench/bench_plan.py``. The layout is arm64 with a 40-bit IPA space, 16 fixed
1 GiB memslots (one every 4 GiB), a GICv3 distributor and redistributor, a UART, a reserved
hole, and N generic ``mmio`` devices of 4 KiB with ``base: auto`` (default alignment, window
and policy). Each measurement is a fresh Python process (best of ``--repeat``, 5 by default)
that imports gpa-plan, loads the layout from YAML text (``load_text`` + ``validate_layout``)
and calls ``allocate(layout)``, with the garbage collector paused as `gpa-plan allocate`
pauses it (``gpa_plan.collector.paused``).

Three numbers per N, each timed inside the process:

* ``plan``: imports + load + allocate, minus the same for an empty layout (N = 0, measured in
  its own processes): the start-up a user pays whatever the layout;
* ``load``: ``load_text`` + ``validate_layout`` of the N-device layout;
* ``allocate``: ``allocate(layout)`` alone.

The requirement shown: t(20000) at most 15 times t(2000) for each, and 20,000 devices loaded
and planned in seconds. Exits 1 if not.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = (2_000, 20_000)
MAX_RATIO = 15.0
MAX_SECONDS = 5.0


def layout_text(n: int) -> str:
    lines = [
        "layout: 1",
        "name: bench-plan",
        "arch: arm64",
        "pa_bits: 40",
        "memslots:",
    ]
    for i in range(16):
        lines += [f"  - name: ram{i}", f"    base: {hex(i << 32)}", "    size: 1G"]
    lines += [
        "devices:",
        "  - {name: gicd, type: vgic-v3-dist, base: 0x0800_0000}",
        "  - {name: gicr, type: vgic-v3-redist, base: 0x080a_0000, vcpus: 8}",
        "  - {name: uart, type: mmio, base: 0x0900_0000, size: 4K}",
    ]
    lines += [f"  - {{name: dev{i}, type: mmio, base: auto, size: 4K}}" for i in range(n)]
    lines += ["reserved:", "  - {name: hole, base: 0x8000_0000, size: 1G}"]
    return "\n".join(lines) + "\n"


def run_once(n: int) -> dict[str, float]:
    """In this (fresh) process: import, load the layout, allocate; seconds for each step."""
    text = layout_text(n)
    begin = time.perf_counter()
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from gpa_plan.collector import paused
    from gpa_plan.layout.loader import load_text
    from gpa_plan.layout.validate import validate_layout
    from gpa_plan.plan.allocate import allocate

    imported = time.perf_counter()
    with paused():
        layout = validate_layout(load_text(text, "bench.yaml"))
        loaded = time.perf_counter()
        allocation = allocate(layout)
        done = time.perf_counter()

    if len(allocation.placements) != n:
        raise SystemExit(f"placed {len(allocation.placements)} of {n} devices")
    starts = sorted(allocation.placements.values())
    if any(b - a < 4096 for a, b in itertools.pairwise(starts)):
        raise SystemExit("two devices overlap")
    return {"import": imported - begin, "load": loaded - imported, "allocate": done - loaded}


def measure(n: int, repeat: int) -> dict[str, float]:
    """Best of ``repeat`` fresh processes for each step, the whole process (``wall``) and
    ``import`` + ``load`` + ``allocate`` (``total``)."""
    best: dict[str, float] = {}
    for _ in range(repeat):
        begin = time.perf_counter()
        out = subprocess.run(
            [sys.executable, __file__, "--run", str(n)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        steps = json.loads(out)
        steps["wall"] = time.perf_counter() - begin
        steps["total"] = steps["import"] + steps["load"] + steps["allocate"]
        for key, seconds in steps.items():
            best[key] = min(best.get(key, seconds), seconds)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per size (best is kept)")
    parser.add_argument("--run", type=int, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run is not None:
        print(json.dumps(run_once(args.run)))
        return 0

    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.system()}"
    )
    empty = measure(0, args.repeat)
    startup = empty["total"]
    print(
        f"best of {args.repeat} fresh-process runs; start-up (imports + loading an empty "
        f"layout) {startup:.3f}s, subtracted from `plan`; whole empty process "
        f"{empty['wall']:.3f}s"
    )
    header = f"{'N':>7} {'plan':>9} {'load':>9} {'allocate':>9} {'us/device':>10}"
    print(header)
    print("-" * len(header))
    results: dict[int, dict[str, float]] = {}
    for n in SIZES:
        best = measure(n, args.repeat)
        best["plan"] = best["total"] - startup
        results[n] = best
        print(
            f"{n:>7} {best['plan']:>8.3f}s {best['load']:>8.3f}s {best['allocate']:>8.3f}s "
            f"{best['plan'] / n * 1e6:>10.1f}"
        )
    small, large = SIZES
    failed = False
    for column in ("plan", "load", "allocate"):
        ratio = results[large][column] / results[small][column]
        ok = ratio <= MAX_RATIO
        failed |= not ok
        print(
            f"{column:>8}: t({large})/t({small}) = {ratio:5.1f}  "
            f"{'ok' if ok else 'TOO SLOW'} (<= {MAX_RATIO:g}x)"
        )
    seconds = results[large]["plan"]
    in_seconds = seconds <= MAX_SECONDS
    failed |= not in_seconds
    print(
        f"{large} devices loaded and planned in {seconds:.2f}s  "
        f"{'ok' if in_seconds else 'TOO SLOW'} (<= {MAX_SECONDS:g}s)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
