"""Rules about the layout as a whole: the architecture's limits and unplaceable entries."""

from __future__ import annotations

from collections.abc import Iterator

from gpa_plan.check.findings import Finding
from gpa_plan.check.rules import ERROR, RuleContext, rule
from gpa_plan.ranges import human_size


@rule("arch-limits", ERROR, "pa_bits or page_size that the architecture does not support")
def arch_limits(ctx: RuleContext) -> Iterator[Finding]:
    """Each architecture takes the physical-address widths and host page sizes its KVM code
    allows (docs/kernel.md lists them, with the kernel function that enforces each; the
    architecture's module under gpa_plan/arch/ declares them); the message says what KVM does
    with another value. Fix: pick a value the arch supports."""
    layout, arch = ctx.layout, ctx.arch
    choices = arch.pa_bits_choices
    if choices and layout.pa_bits <= arch.max_pa_bits and layout.pa_bits not in choices:
        given = next(c for c in choices if c >= layout.pa_bits)
        yield ctx.finding(
            f"pa_bits {layout.pa_bits} is not a {arch.pa_name} {arch.name} has "
            f"({', '.join(str(c) for c in choices)}): KVM gives a VM that asks for "
            f"{layout.pa_bits} bits {given}; write pa_bits: {given}",
            (),
            "pa_bits",
        )
    elif not arch.min_pa_bits <= layout.pa_bits <= arch.max_pa_bits:
        yield ctx.finding(
            f"pa_bits {layout.pa_bits} is outside what {arch.name} supports "
            f"({arch.min_pa_bits} to {arch.max_pa_bits}-bit {arch.pa_name}); "
            f"{arch.pa_bits_refusal}",
            (),
            "pa_bits",
        )
    if layout.page_size not in arch.page_sizes:
        sizes = ", ".join(human_size(p) for p in arch.page_sizes)
        *most, last = [f"{p // 1024}K" for p in arch.page_sizes]
        written = f"{', '.join(most)} or {last}" if most else last
        yield ctx.finding(
            f"page_size {human_size(layout.page_size)} is not a host page size {arch.name} "
            f"has ({sizes}); memslot alignment follows the host's PAGE_SIZE: write the "
            f"page_size of the {arch.name} host the VM runs on (page_size: {written})",
            (),
            "page_size",
        )


@rule("no-room", ERROR, "an `auto` entry that the planner cannot place")
def no_room(ctx: RuleContext) -> Iterator[Finding]:
    """An entry with `base: auto` for which no free range of its size and alignment exists
    in its window. Fix: widen `within`, lower `align`, or free space in the layout."""
    for message, path in ctx.placement_errors:
        yield ctx.finding(message, path, "base")
