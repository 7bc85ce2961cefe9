"""Choosing what to import: the FlatView of the system memory address space "memory", else its
tree view; every other address space is noted as skipped."""

from __future__ import annotations

from gpa_plan.importers import ImportFailure
from gpa_plan.importers.qemu_mtree.text import (
    HOW,
    Block,
    Line,
    Region,
    flat_regions,
    listing,
    split_flat_rest,
)
from gpa_plan.importers.qemu_mtree.tree import tree_region_name, tree_regions


def memory_regions(blocks: list[Block], notes: list[str]) -> tuple[list[Region], int]:
    """The ranges of address space "memory" and the line its block starts at."""
    flat = [b for b in blocks if b.kind == "flat"]
    trees = [b for b in blocks if b.kind == "as"]
    chosen = next((b for b in flat if "memory" in b.names), None)
    if chosen is not None:
        _note_skipped([b for b in flat if b is not chosen], "FlatView", notes)
        if trees:
            notes.append(
                "The tree view (`info mtree`) in the input is ignored: the flat view is exact."
            )
        return flat_regions(chosen, notes), chosen.line
    tree = next((b for b in trees if "memory" in b.names), None)
    if tree is None:
        raise ImportFailure(
            'no FlatView of the address space "memory" (the guest\'s system memory) in the '
            "input; " + HOW,
            max([b.line for b in blocks] + [r.number for b in blocks for r in b.ranges]),
        )
    _note_skipped([b for b in trees if b is not tree], "address space tree", notes)
    return tree_regions(tree, [b for b in blocks if b.kind == "mr"], notes), tree.line


def _note_skipped(blocks: list[Block], what: str, notes: list[str]) -> None:
    if not blocks:
        return
    names = [name for b in blocks for name in b.names] or ["(none)"]
    plural = "s" if len(blocks) > 1 else ""
    smm = (
        " (x86 SMM's KVM-SMRAM, KVM address space 1, is not imported)"
        if "KVM-SMRAM" in names
        else ""
    )
    notes.append(
        f"Skipped {len(blocks)} other {what}{plural} (address spaces {listing(names)}): a "
        f'layout holds the system memory address space "memory" only{smm}.'
    )


def in_kernel_pic(blocks: list[Block]) -> Line | None:
    """The first range of QEMU's in-kernel PIC, "kvm-pic" (hw/i386/kvm/i8259.c
    kvm_pic_realize()), in the I/O address space of a FlatView or tree view, or None."""
    for block in blocks:
        if block.kind == "mr" or "I/O" not in block.names:
            continue
        for line in block.ranges:
            rest = line.match["rest"]
            name = split_flat_rest(rest)[0] if block.kind == "flat" else tree_region_name(rest)
            if name == "kvm-pic":
                return line
    return None
