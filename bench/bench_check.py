"""Time `gpa-plan check` against the cost of merely reading its input, in fresh processes.

Run ``python3 bench/bench_check.py`` (``--repeat N``, default 5; best run counts). Measured:

* (a) ``python3 -c "import yaml; yaml.load(open(F), Loader=yaml.CSafeLoader)"`` on a layout at
  KVM's x86 memslot limit (32,764 memslots, 4,096 devices; bench/make_big_layout.py);
* (b) ``python3 -m gpa_plan check F --format json > /dev/null`` on the same file. Target:
  b / a <= 1.25, i.e. checking costs little more than parsing the YAML at all;
* (c) ``python3 -c "import pydantic, yaml"``;
* (d) ``python3 -m gpa_plan check S`` (text) on a small shipped layout, output into a pipe as
  in CI and pre-commit. Target: d / c <= 1.3, i.e. a one-file check costs little more than
  importing its two main libraries;
* (d*) the same with ``FORCE_COLOR=1``: the rich tables a terminal gets (no target);
* (e) (b) and (d) again through the ``gpa-plan`` console script, if it is installed.

Run it with the interpreter of the environment to measure: ``.venv/bin/python
bench/bench_check.py`` after the README's first command measures a clean virtual environment.
The baseline is measured in the same environment, but what a site adds to every start (a .pth
file that imports pathlib, an editable install's finder) dilutes the ratios, so a clean
environment is the strict case.

``--strict`` exits 1 when a target is missed.

gpa-plan's modules are byte-compiled first, as ``pip install`` does: with
PYTHONDONTWRITEBYTECODE set (or a read-only checkout) every run would otherwise compile them
from source while pydantic and PyYAML load their installed bytecode.
"""

from __future__ import annotations

import argparse
import compileall
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMALL_DEFAULT = ROOT / "layouts" / "qemu-virt-arm64.yaml"
BIG_TARGET = 1.25
SMALL_TARGET = 1.3


def best_of(
    command: list[str], repeat: int, *, expect: int = 0, env: dict[str, str] | None = None
) -> float:
    """Fastest wall-clock time of ``command`` over ``repeat`` runs, stdout discarded."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            check=False,
            env=env,
        )
        elapsed = time.perf_counter() - start
        if done.returncode != expect:
            sys.exit(
                f"{' '.join(command)} exited {done.returncode} (expected {expect}):\n"
                + done.stderr.decode(errors="replace")
            )
        best = min(best, elapsed)
    return best


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (best counts)")
    parser.add_argument("--big", type=Path, help="large layout (default: generate one)")
    parser.add_argument("--small", type=Path, default=SMALL_DEFAULT, help="small layout")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    py = sys.executable
    compileall.compile_dir(ROOT / "gpa_plan", quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        big = args.big
        if big is None:
            big = Path(tmp) / "big.yaml"
            subprocess.run(
                [py, str(ROOT / "bench" / "make_big_layout.py"), str(big)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        big_s, small_s = str(big), str(args.small)

        load = f"import yaml; yaml.load(open({big_s!r}), Loader=yaml.CSafeLoader)"
        rows: list[tuple[str, str, float]] = []
        a = best_of([py, "-c", load], args.repeat)
        rows.append(("(a)", "yaml.load(big, CSafeLoader)", a))
        b = best_of([py, "-m", "gpa_plan", "check", big_s, "--format", "json"], args.repeat)
        rows.append(("(b)", "python3 -m gpa_plan check big --format json", b))
        c = best_of([py, "-c", "import pydantic, yaml"], args.repeat)
        rows.append(("(c)", "import pydantic, yaml", c))
        d = best_of([py, "-m", "gpa_plan", "check", small_s], args.repeat)
        rows.append(("(d)", f"python3 -m gpa_plan check {args.small.name}", d))
        forced = {**os.environ, "FORCE_COLOR": "1"}
        d_rich = best_of([py, "-m", "gpa_plan", "check", small_s], args.repeat, env=forced)
        rows.append(("(d*)", f"FORCE_COLOR=1 python3 -m gpa_plan check {args.small.name}", d_rich))
        # The console script beside this interpreter (a virtual environment's own), else PATH's.
        beside = Path(sys.executable).parent / "gpa-plan"
        script = str(beside) if beside.exists() else shutil.which("gpa-plan")
        e_big = e_small = None
        if script:
            e_big = best_of([script, "check", big_s, "--format", "json"], args.repeat)
            rows.append(("(e)", "gpa-plan check big --format json", e_big))
            e_small = best_of([script, "check", small_s], args.repeat)
            rows.append(("(e)", f"gpa-plan check {args.small.name}", e_small))
        big_bytes = big.stat().st_size

    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs ({cpu_model()}), "
        f"Python {platform.python_version()} ({platform.python_implementation()})"
    )
    print(f"big layout: {big_bytes:,} bytes; small layout: {args.small}; best of {args.repeat}")
    print()
    width = max(len(what) for _, what, _ in rows)
    print(f"{'':4} {'command':<{width}}  {'seconds':>8}")
    for tag, what, seconds in rows:
        print(f"{tag:4} {what:<{width}}  {seconds:8.3f}")
    print()
    ratios = [("b / a", b / a, BIG_TARGET), ("d / c", d / c, SMALL_TARGET)]
    if e_big is not None and e_small is not None:
        ratios += [
            ("e(big) / a", e_big / a, BIG_TARGET),
            ("e(small) / c", e_small / c, SMALL_TARGET),
        ]
    missed = False
    for name, ratio, target in ratios:
        ok = ratio <= target
        missed |= not ok
        print(f"{name:<13} {ratio:5.2f}  (target <= {target}: {'met' if ok else 'MISSED'})")
    print(f"{'d* / c':<13} {d_rich / c:5.2f}  (d*: rich tables, as on a terminal; no target)")
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
