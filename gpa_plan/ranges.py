"""Half-open address ranges ``[start, end)`` and helpers to print them.

Everything inside gpa-plan works on half-open ranges; inclusive ends appear only in
human-readable output, the way QEMU's ``info mtree`` and ``/proc/iomem`` print them.
"""

from __future__ import annotations

from typing import NamedTuple

# Addresses and sizes are unsigned 64-bit (KVM's guest_phys_addr and memory_size are __u64): a
# size is below this, an end at or below it.
U64_LIMIT = 1 << 64


class Range(NamedTuple):
    """A half-open range of guest-physical addresses, ``start <= addr < end``."""

    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start

    def overlaps(self, other: Range) -> bool:
        return self.start < other.end and other.start < self.end

    def contains(self, addr: int) -> bool:
        return self.start <= addr < self.end

    def covers(self, other: Range) -> bool:
        return self.start <= other.start and other.end <= self.end

    def intersection(self, other: Range) -> Range | None:
        start, end = max(self.start, other.start), min(self.end, other.end)
        return Range(start, end) if start < end else None

    def __str__(self) -> str:
        return f"[{hex_addr(self.start)}, {hex_addr(self.end)})"


def align_up(value: int, align: int) -> int:
    return -(-value // align) * align


def align_down(value: int, align: int) -> int:
    return value // align * align


def hex_addr(value: int) -> str:
    """``0x0800_0000``: hex with an underscore every four digits, at least eight digits."""
    digits = f"{value:x}".rjust(8, "0")
    groups = []
    while digits:
        groups.append(digits[-4:])
        digits = digits[:-4]
    return "0x" + "_".join(reversed(groups))


_UNITS = (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def human_size(value: int) -> str:
    """``64 KiB``, ``1.5 GiB``, ``~63.94 MiB`` or ``24 bytes``: the largest unit that fits,
    with ``~`` when two decimals do not say it exactly."""
    for unit, scale in _UNITS:
        if value >= scale:
            if value % scale == 0:
                return f"{value // scale} {unit}"
            exact = (value * 100) % scale == 0
            text = f"{value / scale:.2f}".rstrip("0").rstrip(".")
            return f"{'' if exact else '~'}{text} {unit}"
    return f"{value} bytes"
