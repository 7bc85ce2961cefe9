"""Time AddressAllocator placements at two sizes and show that the cost grows ~n log n.

Run ``python3 bench/bench_allocator.py``. Every scenario is timed for N = 2,000 and
N = 20,000 placements, each run in a fresh Python process (best of ``--repeat`` runs, 5 by
default); only the placements are timed, not the setup. The requirement shown: t(20000)
is at most 15 times t(2000), and every run finishes in seconds. Exits 1 if it does not.

Scenarios, all in a 40-bit space with 300 fixed occupied ranges of 4 KiB to 1 MiB:

* ``4k-first``: 4 KiB, 4 KiB-aligned, FIRST; fixed ranges in the low 256 MiB.
* ``4k-last``: the same with LAST; fixed ranges in the top 256 MiB.
* ``mixed``: 4 KiB to 2 MiB sizes, 4 KiB to 2 MiB alignments, FIRST or LAST at random.
* ``scattered``: 4 KiB, FIRST, each inside a random 2 MiB window, so nearly every
  placement splits a gap and the gap tree grows to about N nodes.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("4k-first", "4k-last", "mixed", "scattered")
SIZES = (2_000, 20_000)
MAX_RATIO = 15.0
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
LIMIT = 1 << 40
FIXED = 300


def run_once(scenario: str, n: int) -> float:
    """Build the scenario, time ``n`` placements, check them, return the seconds taken."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from gpa_plan.plan.allocator import AddressAllocator, Policy
    from gpa_plan.ranges import Range

    rng = random.Random(2024)
    alloc = AddressAllocator(LIMIT)
    fixed_base = LIMIT - 256 * MiB if scenario == "4k-last" else 0
    for i in range(FIXED):
        start = fixed_base + rng.randrange(0, 256 * MiB, 4 * KiB)
        alloc.occupy(Range(start, start + rng.randrange(4 * KiB, MiB, 4 * KiB)), f"fixed{i}")

    requests: list[tuple[int, int, Range | None, Policy]] = []
    for _ in range(n):
        if scenario == "4k-first":
            requests.append((4 * KiB, 4 * KiB, None, Policy.FIRST))
        elif scenario == "4k-last":
            requests.append((4 * KiB, 4 * KiB, None, Policy.LAST))
        elif scenario == "mixed":
            size = rng.choice((4 * KiB, 16 * KiB, 64 * KiB, 2 * MiB))
            align = rng.choice((4 * KiB, 64 * KiB, 2 * MiB))
            requests.append((size, align, None, rng.choice((Policy.FIRST, Policy.LAST))))
        else:
            base = rng.randrange(0, LIMIT - 2 * MiB, 4 * KiB)
            requests.append((4 * KiB, 4 * KiB, Range(base, base + 2 * MiB), Policy.FIRST))

    placed: list[Range] = []
    begin = time.perf_counter()
    for i, (size, align, window, policy) in enumerate(requests):
        placed.append(alloc.allocate(size, align, window=window, policy=policy, label=f"a{i}"))
    elapsed = time.perf_counter() - begin

    placed.sort()
    for before, after in itertools.pairwise(placed):
        if before.end > after.start:
            raise SystemExit(f"{scenario}: overlapping placements {before} and {after}")
    return elapsed


def measure(scenario: str, n: int, repeat: int) -> float:
    """Best time of ``repeat`` runs, each in a new interpreter."""
    best = float("inf")
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, __file__, "--run", scenario, str(n)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        best = min(best, float(out))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per cell (best is kept)")
    parser.add_argument("--run", nargs=2, metavar=("SCENARIO", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(f"{run_once(args.run[0], int(args.run[1])):.6f}")
        return 0

    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.system()}"
    )
    print(f"best of {args.repeat} fresh-process runs; {FIXED} fixed occupied ranges each")
    small, large = SIZES
    header = (
        f"{'scenario':<10} {f't({small})':>10} {f't({large})':>10} "
        f"{'ratio':>6} {'us/alloc':>9}  verdict"
    )
    print(header)
    print("-" * len(header))
    failed = False
    for scenario in SCENARIOS:
        t_small = measure(scenario, small, args.repeat)
        t_large = measure(scenario, large, args.repeat)
        ratio = t_large / t_small
        ok = ratio <= MAX_RATIO
        failed |= not ok
        print(
            f"{scenario:<10} {t_small:>9.3f}s {t_large:>9.3f}s {ratio:>6.1f} "
            f"{t_large / large * 1e6:>9.1f}  {'ok' if ok else 'TOO SLOW'} (<= {MAX_RATIO:g}x)"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
