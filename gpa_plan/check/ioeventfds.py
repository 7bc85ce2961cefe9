"""Rules for ioeventfds: what KVM_IOEVENTFD refuses, and a doorbell no write can ring.

Two ioeventfds at the same address are the `device-overlap` rule's (gpa_plan.arch.device_pairs,
`ioeventfd-same-range`): that is an overlap of two devices."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from gpa_plan.check.findings import Finding
from gpa_plan.check.rules import ERROR, RuleContext, rule
from gpa_plan.layout.resolved import DOORBELL_WIDTHS, Doorbell, EntryPath
from gpa_plan.ranges import hex_addr


class _Bell(NamedTuple):
    """An ioeventfd of the layout, on the MMIO bus (a device) or the PIO bus (a port range)."""

    name: str
    path: EntryPath
    bell: Doorbell
    at: str  # "ioeventfd 'x' at 0x...", "port ioeventfd 'x' at port 0x..."
    widest: int = 8  # the widest write the guest makes there


# `out` moves 1, 2 or 4 bytes (arch/x86/kvm/x86.c emulator_pio_in_out(), KVM_EXIT_IO's size).
_WIDEST_OUT = 4


def _bells(ctx: RuleContext) -> Iterator[_Bell]:
    for d in ctx.layout.devices:
        if d.doorbell is not None:
            at = f"ioeventfd {d.name!r} at {hex_addr(d.doorbell.base)}"
            yield _Bell(d.name, d.path, d.doorbell, at)
    # KVM_IOEVENTFD_FLAG_PIO: kvm_assign_ioeventfd() checks these the same way.
    for p in ctx.layout.ports:
        if p.doorbell is not None:
            at = f"port ioeventfd {p.name!r} at port {p.doorbell.base:#x}"
            yield _Bell(p.name, p.path, p.doorbell, at, _WIDEST_OUT)


@rule(
    "ioeventfd-invalid",
    ERROR,
    "an ioeventfd KVM_IOEVENTFD refuses (its length, a datamatch with length 0), or one no "
    "write can signal",
)
def ioeventfd_invalid(ctx: RuleContext) -> Iterator[Finding]:
    """virt/kvm/eventfd.c kvm_assign_ioeventfd() (Linux 7.2.13) refuses with EINVAL a length
    other than 0, 1, 2, 4 or 8 ("must be natural-word sized, or 0 to ignore length") and
    KVM_IOEVENTFD_FLAG_DATAMATCH with length 0; the VMM then has no ioeventfd there, and every
    write exits to it. ioeventfd_in_range() compares a write's value, read as an unsigned
    integer of the write's width, with the 64-bit datamatch: a datamatch that does not fit in
    `length` bytes matches no write, so KVM accepts the ioeventfd but never signals it. Fix:
    give a length of 1, 2, 4 or 8 (or 0 without datamatch), and a datamatch below
    2**(8 * length). A port ioeventfd (KVM_IOEVENTFD_FLAG_PIO, a `ports:` entry) is checked
    the same way, and one of length 8 is never signalled either: `out` moves at most 4 bytes
    (arch/x86/kvm/x86.c emulator_pio_in_out())."""
    for d in _bells(ctx):
        bell, at = d.bell, d.at
        if bell.length != 0 and bell.length not in DOORBELL_WIDTHS:
            yield ctx.finding(
                f"{at} has length {bell.length}: KVM_IOEVENTFD fails with EINVAL (the length "
                "must be 1, 2, 4 or 8 bytes, or 0 for any), so there is no ioeventfd and every "
                "write here exits to the VMM; give the width of the guest's doorbell write",
                d.path,
                "length",
                (d.name,),
            )
        elif bell.length == 0 and bell.datamatch is not None:
            yield ctx.finding(
                f"{at} has a datamatch with length 0: KVM_IOEVENTFD fails with EINVAL (a "
                "datamatch needs a length), so there is no ioeventfd and every write here "
                "exits to the VMM; give the write's `length` (1, 2, 4 or 8) or drop "
                "`datamatch`",
                d.path,
                "datamatch",
                (d.name,),
            )
        elif bell.length > d.widest:
            yield ctx.finding(
                f"{at} has length {bell.length}, but `out` writes at most {d.widest} bytes: "
                "KVM accepts it, but ioeventfd_in_range() never matches, so the eventfd is "
                "never signalled and every `out` here exits to the VMM; give the width of the "
                "guest's `out` (1, 2 or 4)",
                d.path,
                "length",
                (d.name,),
            )
        elif bell.datamatch is not None and bell.datamatch >= 1 << (8 * bell.length):
            yield ctx.finding(
                f"{at} has datamatch {bell.datamatch:#x}, which no {bell.length}-byte write "
                "carries: KVM accepts it, but ioeventfd_in_range() never matches, so the "
                "eventfd is never signalled and every write exits to the VMM; use a value "
                f"below {hex_addr(1 << (8 * bell.length))} or a longer `length`",
                d.path,
                "datamatch",
                (d.name,),
            )

