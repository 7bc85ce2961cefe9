"""How `gpa-plan check` and `gpa-plan import` grow with their input, on hostile shapes too.

Run ``python3 bench/bench_scale.py`` (``--sizes 2000,8000,32000`` entries per shape;
``--shape NAME`` repeatable; ``--max-bytes N`` adds, per shape, the largest size whose input
stays within N bytes, e.g. ``--max-bytes 16777216`` for the input limit). Every measurement
is one fresh child process; the table gives, per shape and size, the input's bytes, the wall
time, the child's peak resident memory (``ru_maxrss`` from ``os.wait4``) and the bytes it
printed, so a reader sees whether time, memory and output grow in proportion to the input.

Shapes (every layout is x86_64, 48-bit, 4 KiB pages; each entry one line of flow YAML):

* ``realistic``: KVM's limits — 32,764 memslots in each of the two x86 address spaces
  (KVM_USER_MEM_SLOTS; as_id 1 is SMM), 1,000 in-kernel ``ioeventfd`` devices
  (NR_IOBUS_DEVS) — then user ``mmio`` devices in the gaps to reach the size asked for
  (N counts all entries);
* ``staircase-devices``: N ``mmio`` devices, each one page after the last and N pages long,
  so each overlaps every later one;
* ``staircase-memslots``: the same with memslots;
* ``one-address``: a 1 GiB memslot and N devices on the same page inside it;
* ``mtree-owners``: ``import qemu-mtree`` of a flat view with one range line carrying
  N owner tokens (``info mtree -f -o``) and an ending that is no owner token.
* ``one-identifier``: ``allocate --format c`` of N devices whose names all read as one C
  identifier, so each gets a numbered suffix;
* ``auto-in-place``: ``allocate --in-place`` of N ``auto`` devices, each with a comment;
* ``map-devices-in-ram``: ``map`` (SVG) of one memslot over N devices a page apart, each a
  ``device-shadowed`` finding naming the memslot.
* ``elf-segments-over-devices``: ``check --elf`` (physical mode) of an x86_64 ELF of N
  ``PT_LOAD`` segments, each over all of N unbacked devices a page apart (N counts the
  devices; ``--max-bytes`` bounds the layout).

``check`` runs with ``--format json`` (compact, the cheapest to print) and its output is
counted, not kept.
"""

from __future__ import annotations

import argparse
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_check import cpu_model  # the script's own directory is on sys.path

ROOT = Path(__file__).resolve().parent.parent
PAGE = 0x1000
HEADER = ["layout: 1", "arch: x86_64", "pa_bits: 48", "page_size: 4K"]
KVM_USER_MEM_SLOTS = 32_764  # x86, per address space
NR_IOBUS_DEVS = 1_000


def realistic(n: int) -> str:
    memslots = min(n, 2 * KVM_USER_MEM_SLOTS)
    kernel = min(n - memslots, NR_IOBUS_DEVS)
    user = n - memslots - kernel
    lines = [*HEADER, "memslots:"]
    # One 16-page cell per memslot: the memslot's 8 pages, then pages for devices.
    for i in range(memslots):
        as_id, k = divmod(i, KVM_USER_MEM_SLOTS)
        base = (k * 16 + 1) * PAGE + (1 << 40) * as_id
        lines.append(f"  - {{name: m{i}, as_id: {as_id}, base: {base:#x}, size: 32K}}")
    lines.append("devices:" if kernel + user else "devices: []")
    for i in range(kernel + user):
        # Devices of 64 bytes, 64 to a page, in the pages after the memslots of address
        # space 0 and then above them.
        base = (1 << 36) + i * 64
        handler = "ioeventfd" if i < kernel else "user"
        lines.append(
            f"  - {{name: d{i}, type: mmio, base: {base:#x}, size: 64, handler: {handler}}}"
        )
    return "\n".join(lines) + "\n"


def staircase_devices(n: int) -> str:
    lines = [*HEADER, "devices:"]
    for i in range(n):
        base, size = (i + 1) * PAGE, n * PAGE
        lines.append(f"  - {{name: d{i}, type: mmio, base: {base:#x}, size: {size:#x}}}")
    return "\n".join(lines) + "\n"


def staircase_memslots(n: int) -> str:
    lines = [*HEADER, "memslots:"]
    for i in range(n):
        lines.append(f"  - {{name: m{i}, base: {(i + 1) * PAGE:#x}, size: {n * PAGE:#x}}}")
    return "\n".join(lines) + "\n"


def one_address(n: int) -> str:
    lines = [*HEADER, "memslots:", "  - {name: ram, base: 0x0, size: 1G}", "devices:"]
    for i in range(n):
        lines.append(f"  - {{name: d{i}, type: mmio, base: 0x1000, size: 4K}}")
    return "\n".join(lines) + "\n"


def mtree_owners(n: int) -> str:
    return (
        'FlatView #0\n AS "memory", root: system\n Root memory region: system\n'
        "  0000000040000000-000000007fffffff (prio 0, ram): mach-virt.ram KVM\n"
        "  0000000009000000-0000000009000fff (prio 0, i/o): pl011"
        + " owner:{dev id=uart0}" * n
        + " x\n"
    )


def one_identifier(n: int) -> str:
    """N devices whose names all read as the C identifier ``A`` (``-a.``, ``.a-+`` ...)."""
    symbols = "-./+"
    lines = [*HEADER, "devices:"]
    for i in range(n):
        name, k = "a", i
        while k:
            k, digit = divmod(k - 1, 4)
            name = name + symbols[digit] if len(name) % 2 else symbols[digit] + name
        lines.append(f'  - {{name: "{name}", type: mmio, base: {(i + 1) * PAGE:#x}, size: 4K}}')
    return "\n".join(lines) + "\n"


def auto_devices(n: int) -> str:
    lines = [*HEADER, "devices:"]
    for i in range(n):
        lines.append(f"  - {{name: d{i}, type: mmio, base: auto, size: 4K}}  # d{i}")
    return "\n".join(lines) + "\n"


def devices_in_ram(n: int) -> str:
    """One memslot over N devices, a page apart: every region names the memslot."""
    lines = [*HEADER, "memslots:", "  - {name: ram, base: 0x0, size: 1T}", "devices:"]
    for i in range(n):
        lines.append(f"  - {{name: d{i}, type: mmio, base: {2 * i * PAGE:#x}, size: 4K}}")
    return "\n".join(lines) + "\n"


def devices_in_a_row(n: int) -> str:
    """N devices a page apart, no memory: what elf-segments-over-devices' segments cover."""
    lines = [*HEADER, "devices:"]
    for i in range(n):
        lines.append(f"  - {{name: d{i}, type: mmio, base: {(i + 1) * PAGE:#x}, size: 4K}}")
    return "\n".join(lines) + "\n"


def segments_elf(n: int) -> bytes:
    """An x86_64 ELF executable of n PT_LOAD segments, each over [0, (n + 2) pages)."""
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0, 64, 0, 0, 64, 56, n, 64, 0, 0)
    load = struct.pack("<IIQQQQQQ", 1, 6, 0, 0, 0, 0, (n + 2) * PAGE, PAGE)
    return header + load * n


# A shape's arguments may name the ELF written beside its input.
ELF = "{elf}"
ELF_SHAPES = {"elf-segments-over-devices"}

SHAPES: dict[str, tuple[Callable[[int], str], list[str]]] = {
    "realistic": (realistic, ["check", "--format", "json"]),
    "staircase-devices": (staircase_devices, ["check", "--format", "json"]),
    "staircase-memslots": (staircase_memslots, ["check", "--format", "json"]),
    "one-address": (one_address, ["check", "--format", "json"]),
    "mtree-owners": (mtree_owners, ["import", "--arch", "arm64", "qemu-mtree"]),
    "one-identifier": (one_identifier, ["allocate", "--format", "c"]),
    "auto-in-place": (auto_devices, ["allocate", "--in-place"]),
    "map-devices-in-ram": (devices_in_ram, ["map"]),
    "elf-segments-over-devices": (
        devices_in_a_row,
        ["check", "--format", "json", "--elf", ELF],
    ),
}


def largest_within(make: Callable[[int], str], limit: int) -> int:
    """The largest N whose input stays within ``limit`` bytes (sizes grow with N)."""
    low, high = 1, 2
    while len(make(high).encode()) <= limit:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        if len(make(middle).encode()) <= limit:
            low = middle
        else:
            high = middle
    return low


def measure(command: list[str]) -> tuple[float, int, int, int]:
    """Wall seconds, peak RSS in bytes, bytes printed and exit status of one child."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    assert child.stdout is not None
    printed = 0
    while chunk := child.stdout.read(1 << 20):
        printed += len(chunk)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - start
    # ru_maxrss is in KiB on Linux.
    return elapsed, usage.ru_maxrss * 1024, printed, child.returncode


def write_input(shape: str, n: int, max_bytes: int, path: Path) -> int:
    """Write the input of ``shape`` with ``n`` entries (or the most within ``max_bytes``)."""
    make = SHAPES[shape][0]
    if max_bytes:
        n = largest_within(make, max_bytes)
    path.write_text(make(n))
    if shape in ELF_SHAPES:
        Path(f"{path}.elf").write_bytes(segments_elf(n))
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2000,8000,32000", help="entries per shape")
    parser.add_argument("--shape", action="append", choices=sorted(SHAPES), help="repeatable")
    parser.add_argument("--max-bytes", type=int, help="also the largest input within this")
    parser.add_argument("--write", nargs=4, metavar=("SHAPE", "N", "MAX_BYTES", "PATH"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.write:
        shape, n, max_bytes, path = args.write
        print(write_input(shape, int(n), int(max_bytes), Path(path)))
        return 0
    shapes = args.shape or list(SHAPES)
    sizes = [int(s) for s in args.sizes.split(",") if s]

    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs ({cpu_model()}), "
        f"Python {platform.python_version()} ({platform.python_implementation()})"
    )
    print(f"{'shape':<19} {'N':>8} {'input':>12} {'seconds':>8} {'peak RSS':>10} {'output':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for shape in shapes:
            arguments = SHAPES[shape][1]
            runs = [(n, 0) for n in sizes] + ([(0, args.max_bytes)] if args.max_bytes else [])
            for n, max_bytes in runs:
                path = Path(tmp) / f"{shape}.txt"
                # Inputs are made in a child: a child's peak RSS counts its parent's memory
                # at the fork (Linux keeps the larger of the two), so this process stays small.
                made = subprocess.run(
                    [sys.executable, __file__, "--write", shape, str(n), str(max_bytes), str(path)],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                n = int(made.stdout)
                elf = Path(f"{path}.elf")
                named = [str(elf) if a == ELF else a for a in arguments]
                command = [sys.executable, "-m", "gpa_plan", *named, str(path)]
                seconds, rss, printed, code = measure(command)
                status = "" if code in (0, 1) else f"  (exit {code})"
                print(
                    f"{shape:<19} {n:>8,} {path.stat().st_size:>12,} {seconds:>8.2f} "
                    f"{rss / 2**20:>7.0f} MiB {printed:>12,}{status}",
                    flush=True,
                )
                path.unlink()
                elf.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
